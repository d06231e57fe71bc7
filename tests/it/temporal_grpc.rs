//! The Temporal collector over gRPC (a bare `host:port` address, as in the Go program) against
//! a real Temporal dev server's gRPC port: counts by workflow type, counts falling after
//! terminations, zero, server errors as one line, a black-hole address hitting the timeout,
//! and mTLS and API keys through a TLS front that offers ALPN `h2` — plus the same count
//! through the HTTP API in one config file.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use flysim::harness::{RUNNING_BILLING, TOKEN, TOKEN_HEADER, TempDir, Temporal};
use flysim::{MachineSpec, Simulator};

use crate::support;
use crate::support::tls::{Options, Pki, TlsProxy};
use crate::support::{eval_env, started_of};

fn count(address: &str, query: &str, namespace: &str) -> serde_json::Value {
    let out = eval_env(address, query, &[("FAS_TEMPORAL_NAMESPACE", namespace)]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stderr, "");
    started_of(&out.stdout)
}

#[test]
fn counts_over_grpc_by_type_after_terminations_and_zero() {
    let t = Temporal::start(&["jobs"]);
    for i in 0..3 {
        t.start_workflow("jobs", "billing", &format!("billing-{i}"), "q");
    }
    t.start_workflow("jobs", "reports", "reports-0", "q");
    t.wait_for_count("jobs", RUNNING_BILLING, 3, Duration::from_secs(10));
    let grpc = t.grpc_address();

    assert_eq!(count(&grpc, "WorkflowType=\"$APP_NAME\"", "jobs"), 3);
    assert_eq!(
        count(&grpc, "", "jobs"),
        4,
        "no filter: every running workflow"
    );
    assert_eq!(
        count(&format!("dns:///{grpc}"), "", "jobs"),
        4,
        "gRPC's dns:/// target form"
    );

    t.terminate_workflow("jobs", "billing-0");
    t.terminate_workflow("jobs", "billing-1");
    t.wait_for_count("jobs", RUNNING_BILLING, 1, Duration::from_secs(10));
    assert_eq!(count(&grpc, "WorkflowType=\"billing\"", "jobs"), 1);

    // Zero (proto3 leaves the field out) and the default namespace, which has nothing.
    assert_eq!(count(&grpc, "WorkflowType=\"nothing\"", "jobs"), 0);
    let out = eval_env(&grpc, "", &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(started_of(&out.stdout), 0);

    // Both APIs in one config file, against the same server: the same count.
    let dir = TempDir::new("temporal-grpc-config");
    let config = dir.write(
        "fas.yml",
        r#"app-name: billing
started-machine-count: "over_grpc * 10 + over_http"
metric-collectors:
  - type: temporal
    metric-name: over_grpc
    address: "${GRPC}"
    namespace: jobs
    query: 'WorkflowType="$APP_NAME"'
  - type: temporal
    metric-name: over_http
    address: "${HTTP}"
    namespace: jobs
    query: 'WorkflowType="$APP_NAME"'
"#,
    );
    let out = support::run(
        &["eval", "-config", config.to_str().unwrap()],
        &[("GRPC", &grpc), ("HTTP", &t.http_url())],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(started_of(&out.stdout), 11, "1 over gRPC, 1 over HTTP");
}

#[test]
fn server_errors_are_one_line_naming_namespace_and_status() {
    let t = Temporal::start(&[]);
    let grpc = t.grpc_address();
    let out = eval_env(&grpc, "", &[("FAS_TEMPORAL_NAMESPACE", "no-such-ns")]);
    assert_eq!(out.code, Some(1));
    assert_eq!(
        out.stderr,
        format!(
            "ERROR: metrics collection failed: collect metric (\"workflows\"): temporal gRPC {grpc} namespace \"no-such-ns\": NOT_FOUND: Namespace no-such-ns is not found. (namespace (FAS_TEMPORAL_NAMESPACE) must exist on this server; a Temporal Cloud namespace is <name>.<account>)\n"
        )
    );
    for (query, text) in [
        (
            "WorkflowType = = \"x\"",
            "INVALID_ARGUMENT: invalid query: malformed SQL query",
        ),
        (
            "executionstatus=\"Running\"",
            "INVALID_ARGUMENT: invalid query: invalid search attribute: executionstatus",
        ),
    ] {
        let out = eval_env(&grpc, query, &[]);
        assert_eq!(out.code, Some(1));
        assert!(
            out.stderr.contains(&format!(
                "temporal gRPC {grpc} namespace \"default\": {text}"
            )),
            "{}",
            out.stderr
        );
        assert!(
            out.stderr.contains("(check query (FAS_TEMPORAL_QUERY)"),
            "{}",
            out.stderr
        );
        assert_eq!(out.stderr.lines().count(), 1);
    }

    // The HTTP API's port given as a bare address: gRPC finds HTTP/1.1 there and says so.
    let http_port = t.http_url().trim_start_matches("http://").to_string();
    let out = eval_env(&http_port, "", &[]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("UNAVAILABLE") && out.stderr.contains("answered in HTTP/1.x"),
        "{}",
        out.stderr
    );
    // A URL on the gRPC port: the HTTP collector's hint points the other way.
    let out = eval_env(&format!("http://{grpc}"), "", &[("FAS_TIMEOUT", "5s")]);
    assert_eq!(out.code, Some(1));
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);

    // Addresses that are neither host:port nor a URL stop at validation.
    let out = eval_env("temporal", "", &[]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains(
            "invalid temporal address \"temporal\": a port is missing, e.g. temporal:7233"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn a_black_hole_address_fails_within_the_timeout() {
    // Connections are accepted by the kernel's backlog, then nothing is ever read or written.
    let hole = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = hole.local_addr().unwrap().to_string();
    for extra in [vec![], vec![("FAS_TEMPORAL_API_KEY", "k")]] {
        let mut env = vec![("FAS_TIMEOUT", "1s")];
        env.extend(extra.iter().copied());
        let started = Instant::now();
        let out = eval_env(&address, "", &env);
        let took = started.elapsed();
        assert_eq!(out.code, Some(1));
        assert!(out.stderr.contains("DEADLINE_EXCEEDED"), "{}", out.stderr);
        assert!(
            out.stderr.contains("within 1.0s") || out.stderr.contains("within 1.1s"),
            "{}",
            out.stderr
        );
        assert!(took < Duration::from_secs(5), "took {took:?}");
        assert_eq!(out.stderr.lines().count(), 1);
    }
}

#[test]
fn mutual_tls_and_api_keys_through_an_h2_tls_front() {
    let t = Temporal::start(&[]);
    t.start_workflow("default", "billing", "billing-tls", "q");
    t.wait_for_count("default", RUNNING_BILLING, 1, Duration::from_secs(10));
    let pki = Pki::new();
    let mtls = TlsProxy::start_with(
        &pki,
        &t.grpc_address(),
        Options {
            require_client_cert: true,
            alpn_h2: true,
        },
    );
    let (cert, key, ca) = (
        pki.pem("client.pem"),
        pki.pem("client.key"),
        pki.pem("ca.pem"),
    );

    // Client certificate (the Go program's variable names), private CA from ca-data, server
    // name from the address (the certificate is for 127.0.0.1).
    let out = eval_env(
        &mtls.addr(),
        "WorkflowType=\"billing\"",
        &[
            ("TEMPORAL_TLS_CERT_DATA", &cert),
            ("TEMPORAL_TLS_KEY_DATA", &key),
            ("FAS_TEMPORAL_CA_DATA", &ca),
        ],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(started_of(&out.stdout), 1);
    assert_eq!(mtls.handshakes(), 1);

    // No client certificate: refused, in one line.
    let out = eval_env(&mtls.addr(), "", &[("FAS_TEMPORAL_CA_DATA", &ca)]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains(&format!(
            "temporal gRPC+TLS {} namespace \"default\": UNAVAILABLE",
            mtls.addr()
        )),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("TLS"), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1);

    // A certificate from another CA is refused too.
    let out = eval_env(
        &mtls.addr(),
        "",
        &[
            ("FAS_TEMPORAL_CERT_DATA", &pki.pem("other_client.pem")),
            ("FAS_TEMPORAL_KEY_DATA", &pki.pem("other_client.key")),
            ("FAS_TEMPORAL_CA_DATA", &ca),
        ],
    );
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert_eq!(mtls.handshakes(), 1, "no connection got through");

    // Server certificates are always verified: without the CA the test server is untrusted.
    let out = eval_env(
        &mtls.addr(),
        "",
        &[
            ("TEMPORAL_TLS_CERT_DATA", &cert),
            ("TEMPORAL_TLS_KEY_DATA", &key),
        ],
    );
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr
            .contains("invalid peer certificate: UnknownIssuer"),
        "{}",
        out.stderr
    );

    // API key (Temporal Cloud style): TLS for the bare address, Bearer and namespace headers.
    let tls = TlsProxy::start_with(
        &pki,
        &t.grpc_address(),
        Options {
            require_client_cert: false,
            alpn_h2: true,
        },
    );
    let out = eval_env(
        &tls.addr(),
        "WorkflowType=\"billing\"",
        &[
            ("TEMPORAL_API_KEY", "tkey-secret"),
            ("FAS_TEMPORAL_CA_DATA", &ca),
        ],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(started_of(&out.stdout), 1);
    let requests = tls.h2_request_headers();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let header = |name: &str| {
        requests[0]
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        header("authorization").as_deref(),
        Some("Bearer tkey-secret")
    );
    assert_eq!(header("temporal-namespace").as_deref(), Some("default"));
    assert_eq!(
        header(":path").as_deref(),
        Some("/temporal.api.workflowservice.v1.WorkflowService/CountWorkflowExecutions")
    );
    assert_eq!(header(":scheme").as_deref(), Some("https"));
    assert_eq!(header("content-type").as_deref(), Some("application/grpc"));
    assert!(header("grpc-timeout").is_some());

    // A TLS front that does not offer h2 (the HTTP/1 mode) is refused by ALPN.
    let http1 = TlsProxy::start(&pki, &t.grpc_address(), false);
    let bare = http1.url().trim_start_matches("https://").to_string();
    let out = eval_env(
        &bare,
        "",
        &[
            ("TEMPORAL_API_KEY", "tkey-secret"),
            ("FAS_TEMPORAL_CA_DATA", &ca),
        ],
    );
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("did not agree to HTTP/2 (ALPN h2)"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("tkey-secret"));
}

/// `serve --once` with every log level on: the collector works through the TLS front and
/// neither the API key nor the private key reaches the output.
#[test]
fn nothing_secret_is_logged_at_any_level() {
    let t = Temporal::start(&[]);
    t.start_workflow("default", "billing", "billing-log", "q");
    t.wait_for_count("default", RUNNING_BILLING, 1, Duration::from_secs(10));
    let pki = Pki::new();
    let front = TlsProxy::start_with(
        &pki,
        &t.grpc_address(),
        Options {
            require_client_cert: true,
            alpn_h2: true,
        },
    );
    let sim = Simulator::start();
    sim.set_token(Some(TOKEN_HEADER));
    sim.add_app("my-org", "billing");
    sim.add_machine("billing", MachineSpec::new("started"));
    let (cert, key, ca) = (
        pki.pem("client.pem"),
        pki.pem("client.key"),
        pki.pem("ca.pem"),
    );
    let sim_url = sim.url();
    let address = front.addr();
    let out = support::run(
        &["serve", "--once"],
        &[
            ("FAS_APP_NAME", "billing"),
            ("FAS_API_TOKEN", TOKEN),
            ("FLY_FLAPS_BASE_URL", &sim_url),
            ("FLY_API_BASE_URL", &sim_url),
            ("FAS_STARTED_MACHINE_COUNT", "workflows"),
            ("FAS_TEMPORAL_ADDRESS", &address),
            ("FAS_TEMPORAL_METRIC_NAME", "workflows"),
            ("FAS_TEMPORAL_QUERY", "WorkflowType=\"$APP_NAME\""),
            ("TEMPORAL_API_KEY", "tkey-secret"),
            ("TEMPORAL_TLS_CERT_DATA", &cert),
            ("TEMPORAL_TLS_KEY_DATA", &key),
            ("FAS_TEMPORAL_CA_DATA", &ca),
            ("FAS_VERBOSE", "true"),
            ("RUST_LOG", "trace"),
            ("FAS_TIMEOUT", "10s"),
        ],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("count 1"),
        "the debug line of the count:\n{}",
        out.stderr
    );
    let key_body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    for secret in ["tkey-secret", "PRIVATE KEY", key_body.as_str()] {
        assert!(
            !out.stderr.contains(secret),
            "{secret:?} in:\n{}",
            out.stderr
        );
        assert!(!out.stdout.contains(secret));
    }
    assert_eq!(
        front.h2_request_headers().len(),
        1,
        "one CountWorkflowExecutions call"
    );
}
