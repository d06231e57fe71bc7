//! The Temporal collector against a real Temporal dev server (HTTP API, `http://` addresses;
//! gRPC is in `temporal_grpc.rs`), through `eval`:
//! counts by workflow type, counts falling after termination, errors from the server, mTLS and
//! API keys through a TLS front, and error paths against a scripted server.

use std::time::{Duration, Instant};

use flysim::harness::{self, MetricsEndpoint, Prometheus, RUNNING_BILLING, TempDir, Temporal};
use flysim::{FakeServer, Reply};

use crate::support;
use crate::support::tls::{Pki, TlsProxy};
use crate::support::{eval_env, started_of};

#[test]
fn counts_running_workflows_by_type_and_follows_terminations() {
    let t = Temporal::start(&["jobs"]);
    for i in 0..3 {
        t.start_workflow("jobs", "billing", &format!("billing-{i}"), "q");
    }
    t.start_workflow("jobs", "reports", "reports-0", "q");
    t.wait_for_count("jobs", RUNNING_BILLING, 3, Duration::from_secs(10));

    let http = t.http_url();
    let out = eval_env(
        &http,
        "WorkflowType=\"$APP_NAME\"",
        &[("FAS_TEMPORAL_NAMESPACE", "jobs")],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        started_of(&out.stdout),
        3,
        "only running workflows of the type"
    );

    // With no query, every running workflow counts. (A bare host:port is gRPC:
    // tests/temporal_grpc.rs.)
    let out = eval_env(&http, "", &[("FAS_TEMPORAL_NAMESPACE", "jobs")]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(started_of(&out.stdout), 4);

    t.terminate_workflow("jobs", "billing-0");
    t.terminate_workflow("jobs", "billing-1");
    t.wait_for_count("jobs", RUNNING_BILLING, 1, Duration::from_secs(10));
    let out = eval_env(
        &http,
        "WorkflowType=\"billing\"",
        &[("FAS_TEMPORAL_NAMESPACE", "jobs")],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        started_of(&out.stdout),
        1,
        "the count falls after terminations"
    );

    // A zero count (`{}` on the wire) is a real zero.
    let out = eval_env(
        &http,
        "WorkflowType=\"nothing\"",
        &[("FAS_TEMPORAL_NAMESPACE", "jobs")],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(started_of(&out.stdout), 0);

    // The default namespace is `default`, which has no workflows here.
    let out = eval_env(&http, "", &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(started_of(&out.stdout), 0);
}

#[test]
fn server_errors_are_one_clear_line() {
    let t = Temporal::start(&[]);
    let http = t.http_url();
    let out = eval_env(&http, "", &[("FAS_TEMPORAL_NAMESPACE", "no-such-ns")]);
    assert_eq!(out.code, Some(1));
    assert_eq!(
        out.stderr,
        format!(
            "ERROR: metrics collection failed: collect metric (\"workflows\"): temporal {http} namespace \"no-such-ns\": Namespace no-such-ns is not found. (HTTP 404)\n"
        )
    );
    let out = eval_env(&http, "WorkflowType = = \"x\"", &[]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("invalid query: malformed SQL query"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.ends_with("(HTTP 400)\n"), "{}", out.stderr);
    let out = eval_env(&http, "executionstatus=\"Running\"", &[]);
    assert!(
        out.stderr
            .contains("invalid query: invalid search attribute: executionstatus"),
        "{}",
        out.stderr
    );

    let pid = t.pid();
    drop(t);
    assert!(!harness::is_alive(pid), "temporal {pid} stopped and reaped");
}

#[test]
fn alongside_prometheus_in_one_config_file() {
    let t = Temporal::start(&[]);
    for i in 0..2 {
        t.start_workflow("default", "etl", &format!("etl-{i}"), "q");
    }
    let endpoint = MetricsEndpoint::start();
    endpoint.set("queue_depth", 25.0);
    let prom = Prometheus::start(&[&endpoint.addr()]);
    prom.wait_for("queue_depth", |v| v == 25.0, Duration::from_secs(30));
    t.wait_for_count(
        "default",
        "ExecutionStatus=\"Running\" AND (WorkflowType=\"etl\")",
        2,
        Duration::from_secs(10),
    );

    let dir = TempDir::new("temporal-config");
    let config = dir.write(
        "fas.yml",
        r#"app-name: etl
started-machine-count: "ceil(queue_depth / 10) + workflows"
metric-collectors:
  - type: prometheus
    metric-name: queue_depth
    address: "${PROM}"
    query: "sum(queue_depth)"
  - type: temporal
    metric-name: workflows
    address: "${TEMPORAL}"
    namespace: default
    query: 'WorkflowType="$APP_NAME"'
"#,
    );
    let out = support::run(
        &["eval", "-config", config.to_str().unwrap()],
        &[("PROM", &prom.url()), ("TEMPORAL", &t.http_url())],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(started_of(&out.stdout), 5, "ceil(25 / 10) + 2");
}

#[test]
fn mutual_tls_and_api_keys_through_a_tls_front() {
    let t = Temporal::start(&[]);
    t.start_workflow("default", "billing", "billing-tls", "q");
    t.wait_for_count("default", RUNNING_BILLING, 1, Duration::from_secs(10));
    let upstream = t.http_url().trim_start_matches("http://").to_string();
    let pki = Pki::new();
    let mtls = TlsProxy::start(&pki, &upstream, true);
    let (cert, key, ca) = (
        pki.pem("client.pem"),
        pki.pem("client.key"),
        pki.pem("ca.pem"),
    );

    // Client certificate from the Go program's env var names, CA from ca-data.
    let out = eval_env(
        &mtls.url(),
        "WorkflowType=\"billing\"",
        &[
            ("TEMPORAL_TLS_CERT_DATA", &cert),
            ("TEMPORAL_TLS_KEY_DATA", &key),
            ("FAS_TEMPORAL_CA_DATA", &ca),
        ],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(started_of(&out.stdout), 1);
    assert_eq!(mtls.request_heads().len(), 1);

    // No client certificate: the server refuses the handshake.
    let out = eval_env(&mtls.url(), "", &[("FAS_TEMPORAL_CA_DATA", &ca)]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains(&format!(
            "temporal {} namespace \"default\": cannot connect: TLS handshake failed",
            mtls.url()
        )),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1);

    // A certificate from another CA is refused too.
    let out = eval_env(
        &mtls.url(),
        "",
        &[
            ("FAS_TEMPORAL_CERT_DATA", &pki.pem("other_client.pem")),
            ("FAS_TEMPORAL_KEY_DATA", &pki.pem("other_client.key")),
            ("FAS_TEMPORAL_CA_DATA", &ca),
        ],
    );
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert_eq!(mtls.request_heads().len(), 1, "no request got through");

    // Server certificates are always verified: without the CA the test server is untrusted.
    let out = eval_env(
        &mtls.url(),
        "",
        &[
            ("TEMPORAL_TLS_CERT_DATA", &cert),
            ("TEMPORAL_TLS_KEY_DATA", &key),
        ],
    );
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains(
            "cannot connect: TLS handshake failed: invalid peer certificate: UnknownIssuer"
        ),
        "{}",
        out.stderr
    );

    // API key (Temporal Cloud style): Bearer header.
    let tls = TlsProxy::start(&pki, &upstream, false);
    let out = eval_env(
        &tls.url(),
        "WorkflowType=\"billing\"",
        &[
            ("FAS_TEMPORAL_API_KEY", "tkey-secret"),
            ("FAS_TEMPORAL_CA_DATA", &ca),
        ],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(started_of(&out.stdout), 1);
    let head = tls.request_heads().pop().unwrap().to_ascii_lowercase();
    assert!(head.contains("authorization: bearer tkey-secret"), "{head}");
    assert!(
        head.contains("grpc-metadata-temporal-namespace: default"),
        "{head}"
    );
    for secret in ["tkey-secret", "PRIVATE KEY"] {
        assert!(!out.stderr.contains(secret));
    }
}

#[test]
fn html_and_hangs_from_a_scripted_server() {
    let html = FakeServer::start(|_| {
        Reply::text(
            502,
            "text/html",
            "<html><title>502 Bad Gateway</title></html>",
        )
    });
    let out = eval_env(&html.url(), "", &[]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.ends_with("\"502 Bad Gateway\" (HTTP 502)\n"),
        "{}",
        out.stderr
    );

    let ok_html = FakeServer::start(|_| {
        Reply::text(200, "text/html", "<html><title>Temporal UI</title></html>")
    });
    let out = eval_env(&ok_html.url(), "", &[]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr
            .contains("HTTP 200 with a body that is not a workflow count: \"Temporal UI\""),
        "{}",
        out.stderr
    );

    let hang = FakeServer::start(|_| {
        Reply::json(200, r#"{"count":"1"}"#).delayed(Duration::from_secs(30))
    });
    let started = Instant::now();
    let out = eval_env(&hang.url(), "", &[("FAS_TIMEOUT", "1s")]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("request timed out after 1.0s"),
        "{}",
        out.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    // An http:// URL on gRPC's default port says what to write for either API.
    let out = eval_env("http://127.0.0.1:7233", "", &[("FAS_TIMEOUT", "2s")]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("(7233 is Temporal's gRPC port: for gRPC, as the Go program takes it, set the address to 127.0.0.1:7233 without http://; for the HTTP API keep http:// and use its port, 7243 by default)"),
        "{}",
        out.stderr
    );
}
