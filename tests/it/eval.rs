//! `fly-autoscaler eval` end to end: against a real Prometheus scraping a test-served metric,
//! and against a scripted server for every error path.

use std::time::{Duration, Instant};

use flysim::harness::{self, MetricsEndpoint, Output, Prometheus, TempDir};
use flysim::{FakeServer, Reply};

use crate::support;

fn eval(env: &[(&str, &str)]) -> Output {
    support::run(&["eval"], env)
}

fn counts(created: Option<u32>, started: Option<u32>) -> String {
    let v = |n: Option<u32>| n.map_or("null".to_string(), |n| n.to_string());
    format!(
        "{{\n  \"created\": {{\n    \"min\": {c},\n    \"max\": {c}\n  }},\n  \"started\": {{\n    \"min\": {s},\n    \"max\": {s}\n  }}\n}}\n",
        c = v(created),
        s = v(started)
    )
}

#[test]
fn eval_follows_a_real_prometheus() {
    let endpoint = MetricsEndpoint::start();
    endpoint.set_labeled("queue_depth", &[("app", "my-app")], 35.0);
    endpoint.set_labeled("queue_depth", &[("app", "other-app")], 500.0);
    let prom = Prometheus::start(&[&endpoint.addr()]);
    prom.wait_for("sum(queue_depth)", |v| v == 535.0, Duration::from_secs(30));
    let url = prom.url();
    let env = [
        ("FAS_APP_NAME", "my-app"),
        ("FAS_STARTED_MACHINE_COUNT", "ceil(queue_depth / 10)"),
        ("FAS_PROMETHEUS_ADDRESS", url.as_str()),
        ("FAS_PROMETHEUS_METRIC_NAME", "queue_depth"),
        (
            "FAS_PROMETHEUS_QUERY",
            "sum(queue_depth{app=\"$APP_NAME\"})",
        ),
    ];
    let out = eval(&env);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, counts(None, Some(4)));

    endpoint.set_labeled("queue_depth", &[("app", "my-app")], 72.0);
    prom.wait_for(
        "sum(queue_depth{app=\"my-app\"})",
        |v| v == 72.0,
        Duration::from_secs(30),
    );
    let out = eval(&env);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        out.stdout,
        counts(None, Some(8)),
        "the result follows the served metric"
    );

    // The same through a config file, with created bounds and a second collector.
    let dir = TempDir::new("eval-config");
    let config = dir.write(
        "fas.yml",
        &format!(
            r#"app-name: my-app
min-created-machine-count: "0"
max-created-machine-count: "ceil(queue_depth / 10) + extra"
started-machine-count: "if(gt(queue_depth, 50), 3, 1)"
metric-collectors:
  - type: prometheus
    metric-name: queue_depth
    address: "{url}"
    query: 'sum(queue_depth{{app="$APP_NAME"}})'
  - type: prometheus
    metric-name: extra
    address: "${{PROM_URL}}"
    query: "scalar(sum(queue_depth{{app=\"other-app\"}})) / 100"
"#
        ),
    );
    let out = support::run(
        &["eval", "-config", config.to_str().unwrap()],
        &[("PROM_URL", &url)],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["created"]["min"], 1, "created counts are raised to 1");
    assert_eq!(json["created"]["max"], 13);
    assert_eq!(json["started"]["min"], 3);
}

/// Runs eval against a scripted Prometheus and returns (exit code, stderr).
fn eval_against(
    reply: impl Fn() -> Reply + Send + Sync + 'static,
    extra: &[(&str, &str)],
) -> (Option<i32>, String, FakeServer) {
    let server = FakeServer::start(move |_| reply());
    let url = server.url();
    let mut env = vec![
        ("FAS_APP_NAME", "my-app"),
        ("FAS_STARTED_MACHINE_COUNT", "q"),
        ("FAS_PROMETHEUS_ADDRESS", url.as_str()),
        ("FAS_PROMETHEUS_METRIC_NAME", "q"),
        ("FAS_PROMETHEUS_QUERY", "sum(q)"),
    ];
    env.extend_from_slice(extra);
    let out = eval(&env);
    assert_eq!(out.stdout, "", "nothing on stdout when eval fails");
    (out.code, out.stderr, server)
}

fn assert_one_line_error(code: Option<i32>, stderr: &str, expected: &str) {
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with(
            "ERROR: metrics collection failed: collect metric (\"q\"): prometheus http://127.0.0.1:"
        ),
        "{stderr}"
    );
    assert!(stderr.contains(expected), "want {expected:?} in {stderr}");
}

#[test]
fn empty_result() {
    let (code, err, _s) = eval_against(
        || {
            Reply::json(
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
            )
        },
        &[],
    );
    assert_one_line_error(
        code,
        &err,
        "empty prometheus result: the query matched no series; append \"or vector(0)\"",
    );
}

#[test]
fn matrix_result() {
    let (code, err, _s) = eval_against(
        || {
            Reply::json(
                200,
                r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"]]}]}}"#,
            )
        },
        &[],
    );
    assert_one_line_error(code, &err, "unexpected prometheus result type \"matrix\"");
}

#[test]
fn prometheus_error_body_is_surfaced() {
    let (code, err, _s) = eval_against(
        || {
            Reply::json(
                400,
                r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:6: parse error: unclosed left parenthesis"}"#,
            )
        },
        &[],
    );
    assert_one_line_error(
        code,
        &err,
        "bad_data: invalid parameter \"query\": 1:6: parse error: unclosed left parenthesis (HTTP 400)",
    );
}

#[test]
fn html_502_from_a_proxy() {
    let (code, err, _s) = eval_against(
        || {
            Reply::text(
                502,
                "text/html",
                "<html>\n<head><title>502 Bad Gateway</title></head>\n<body><center><h1>502 Bad Gateway</h1></center></body></html>",
            )
        },
        &[],
    );
    assert_one_line_error(
        code,
        &err,
        "HTTP 502 with a non-JSON body (text/html): \"502 Bad Gateway\"",
    );
}

#[test]
fn connection_refused() {
    let port = harness::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let out = eval(&[
        ("FAS_APP_NAME", "my-app"),
        ("FAS_STARTED_MACHINE_COUNT", "q"),
        ("FAS_PROMETHEUS_ADDRESS", &url),
        ("FAS_PROMETHEUS_METRIC_NAME", "q"),
        ("FAS_PROMETHEUS_QUERY", "sum(q)"),
    ]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr
            .contains(&format!("prometheus {url}: cannot connect")),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1);
}

#[test]
fn slow_server_hits_the_timeout() {
    let started = Instant::now();
    let (code, err, _s) = eval_against(
        || {
            Reply::json(
                200,
                r#"{"status":"success","data":{"resultType":"scalar","result":[1,"1"]}}"#,
            )
            .delayed(Duration::from_secs(20))
        },
        &[("FAS_TIMEOUT", "1s")],
    );
    assert_one_line_error(code, &err, "request timed out after 1.0s");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn nan_sample_fails_the_expression() {
    let (code, err, _s) = eval_against(
        || {
            Reply::json(
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#,
            )
        },
        &[],
    );
    assert_eq!(code, Some(1));
    assert_eq!(
        err,
        "ERROR: cannot calculate min started machine count: expression returned NaN\n"
    );
}

#[test]
fn scalar_result_and_get_fallback_and_token_rules() {
    // Answers 405 to POST, like a server that only allows GET; the collector retries as GET.
    let server = FakeServer::start(|req| {
        if req.method == "POST" {
            Reply::text(405, "text/plain", "Method Not Allowed")
        } else {
            Reply::json(
                200,
                r#"{"status":"success","data":{"resultType":"scalar","result":[1,"2.5"]}}"#,
            )
        }
    });
    let url = server.url();
    for (token, header) in [
        ("FlyV1 fm2_secretmacaroon", "FlyV1 fm2_secretmacaroon"),
        ("plainsecret", "Bearer plainsecret"),
    ] {
        let out = eval(&[
            ("FAS_APP_NAME", "my-app"),
            ("FAS_STARTED_MACHINE_COUNT", "q"),
            ("FAS_PROMETHEUS_ADDRESS", &url),
            ("FAS_PROMETHEUS_METRIC_NAME", "q"),
            ("FAS_PROMETHEUS_QUERY", "sum(q{app=\"$APP_NAME\"})"),
            ("FAS_PROMETHEUS_TOKEN", token),
            ("RUST_LOG", "trace"),
        ]);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert_eq!(out.stdout, counts(None, Some(3)));
        let secret = token.split_whitespace().last().unwrap();
        assert!(
            !out.stdout.contains(secret) && !out.stderr.contains(secret),
            "token leaked"
        );
        let get = server
            .requests()
            .into_iter()
            .rev()
            .find(|r| r.method == "GET")
            .unwrap();
        assert_eq!(get.path, "/api/v1/query");
        assert_eq!(
            get.param("query").as_deref(),
            Some("sum(q{app=\"my-app\"})"),
            "{}",
            get.query
        );
        assert_eq!(get.header("authorization"), Some(header));
    }
    let post = server
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert_eq!(
        post.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert!(
        post.body.contains("query=") && post.body.contains("&time="),
        "{}",
        post.body
    );
}
