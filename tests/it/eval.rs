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

/// Go (expr-lang) expressions as a Go config has them — every operator, precedence,
/// associativity, nesting, comments — evaluated by `eval` with variables from a real
/// Prometheus, against values computed here. Each expression is `started.min`, and
/// `(expr) * 1000 + 100000` is `started.max`, so the sign and three decimals show through the
/// result rules (rounding half away from zero, negative → 0).
#[test]
fn go_expressions_with_variables_from_a_real_prometheus() {
    let (q, z, h, n) = (35.0_f64, 0.0_f64, 0.5_f64, -3.0_f64);
    let endpoint = MetricsEndpoint::start();
    for (series, value) in [("queue_depth", q), ("idle", z), ("half", h), ("drift", n)] {
        endpoint.set(series, value);
    }
    let prom = Prometheus::start(&[&endpoint.addr()]);
    prom.wait_for(
        "count({__name__=~\"queue_depth|idle|half|drift\"})",
        |v| v == 4.0,
        Duration::from_secs(30),
    );
    let dir = TempDir::new("go-expressions");
    let collector = |name: &str, series: &str| {
        format!(
            "  - type: prometheus\n    metric-name: {name}\n    address: \"{}\"\n    query: \"sum({series})\"\n",
            prom.url()
        )
    };
    let config = dir.write(
        "fas.yml",
        &format!(
            "app-name: my-app\nmetric-collectors:\n{}{}{}{}",
            collector("q", "queue_depth"),
            collector("z", "idle"),
            collector("h", "half"),
            collector("n", "drift")
        ),
    );
    let pick = |cond: bool, a: f64, b: f64| if cond { a } else { b };
    let not = |cond: bool| !cond;
    let cases: &[(&str, f64)] = &[
        // Arithmetic: precedence and left associativity.
        ("q + z * 2", q + z * 2.0),
        ("(q + 1) * 2", (q + 1.0) * 2.0),
        ("q - 10 - 5", q - 10.0 - 5.0),
        ("q / 7 / 2", q / 7.0 / 2.0),
        ("q * h / 4", q * h / 4.0),
        (
            "int(q) % 10 + int(n) % 2",
            (q as i64 % 10 + n as i64 % 2) as f64,
        ),
        // Power: right-associative, above unary minus; `^` is `**`.
        ("2 ** 3 ** 2", 2f64.powf(3f64.powf(2.0))),
        ("(2 ** 3) ** 2", 2f64.powf(3.0).powf(2.0)),
        ("2 ^ h", 2f64.powf(h)),
        ("-q ** h", -q.powf(h)),
        ("-n ** 2", -n.powf(2.0)),
        ("(-n) ** 2", (-n).powf(2.0)),
        ("q - -n", q - -n),
        ("+q - - z", q + z),
        (
            "-(n - 2) ** 3 - q / (+4 - 3) + -2",
            -(n - 2.0).powf(3.0) - q / (4.0 - 3.0) - 2.0,
        ),
        // Comparisons, below arithmetic.
        ("q > 10 ? 5 : 1", pick(q > 10.0, 5.0, 1.0)),
        ("q >= 35 ? 1 : 0", pick(q >= 35.0, 1.0, 0.0)),
        ("q < 35 ? 1 : 0", pick(q < 35.0, 1.0, 0.0)),
        ("q <= 34 ? 1 : 0", pick(q <= 34.0, 1.0, 0.0)),
        ("q == 35 ? h : n", pick(q == 35.0, h, n)),
        ("q != 35 ? h : n", pick(q != 35.0, h, n)),
        ("h * 2 == 1 ? 1 : 0", pick(h * 2.0 == 1.0, 1.0, 0.0)),
        (
            "q + 1 > q * 2 - 40 ? 1 : 0",
            pick(q + 1.0 > q * 2.0 - 40.0, 1.0, 0.0),
        ),
        // Logic: `&&` above `||`, both below comparisons; words and symbols alike.
        ("q > 0 && z > 0 ? 1 : 2", pick(q > 0.0 && z > 0.0, 1.0, 2.0)),
        ("q > 0 || z > 0 ? 1 : 2", pick(q > 0.0 || z > 0.0, 1.0, 2.0)),
        (
            "q > 0 and z == 0 ? 1 : 2",
            pick(q > 0.0 && z == 0.0, 1.0, 2.0),
        ),
        ("z > 0 or q < 0 ? 1 : 2", pick(z > 0.0 || q < 0.0, 1.0, 2.0)),
        (
            "q > 0 || z > 0 && h > 1 ? 1 : 2",
            pick(q > 0.0 || (z > 0.0 && h > 1.0), 1.0, 2.0),
        ),
        (
            "(q > 0 || z > 0) && h > 1 ? 1 : 2",
            pick((q > 0.0 || z > 0.0) && h > 1.0, 1.0, 2.0),
        ),
        (
            "z > 0 && h > 1 || q > 0 ? 1 : 2",
            pick((z > 0.0 && h > 1.0) || q > 0.0, 1.0, 2.0),
        ),
        ("!(q > 0) ? 1 : 2", pick(not(q > 0.0), 1.0, 2.0)),
        ("not (z > 0) ? 1 : 2", pick(not(z > 0.0), 1.0, 2.0)),
        (
            "q > 0 && !(z > 0) ? 1 : 2",
            pick(q > 0.0 && not(z > 0.0), 1.0, 2.0),
        ),
        ("true && !false ? q : z", q),
        // Ternaries: lowest, right-associative, nested anywhere.
        (
            "q > 100 ? 3 : q > 10 ? 2 : 1",
            pick(q > 100.0, 3.0, pick(q > 10.0, 2.0, 1.0)),
        ),
        (
            "z > 100 ? 3 : z > 10 ? 2 : 1",
            pick(z > 100.0, 3.0, pick(z > 10.0, 2.0, 1.0)),
        ),
        (
            "q > 10 ? z > 0 ? 1 : 2 : 3",
            pick(q > 10.0, pick(z > 0.0, 1.0, 2.0), 3.0),
        ),
        ("(q > 0 ? 1 : 2) + 10", pick(q > 0.0, 1.0, 2.0) + 10.0),
        ("1 + q > 0 ? 7 : 8", pick(1.0 + q > 0.0, 7.0, 8.0)),
        ("z > 0 ? q / z : 0", pick(z > 0.0, q / z, 0.0)),
        (
            "q > 0 ? max(2, ceil(q / 10)) : 0",
            pick(q > 0.0, (q / 10.0).ceil().max(2.0), 0.0),
        ),
        (
            "max(q > 10 ? (z > 0 ? 1 : 3) : 0, min(h * 4, 1 + 1))",
            pick(q > 10.0, pick(z > 0.0, 1.0, 3.0), 0.0).max((h * 4.0).min(2.0)),
        ),
        // Functions, and deep nesting.
        ("ceil(q / 10)", (q / 10.0).ceil()),
        (
            "floor(q / 10) + round(h) + abs(n)",
            (q / 10.0).floor() + h.round() + n.abs(),
        ),
        ("int(q / 10) * 10", (q / 10.0).trunc() * 10.0),
        ("max(1, min(q, 10 * 2), -n)", 1f64.max(q.min(20.0)).max(-n)),
        ("min(q, h, n)", q.min(h).min(n)),
        (
            "((((q + 1) * 2) - 3) / (h + h)) ** (z + 1)",
            ((((q + 1.0) * 2.0) - 3.0) / (h + h)).powf(z + 1.0),
        ),
        // Comments and white space, as expr-lang's lexer skips them.
        ("q /* depth */ + 1 // one more", q + 1.0),
        ("q >\n 10\t? 1 : 0", pick(q > 10.0, 1.0, 0.0)),
    ];
    let result = |v: f64| v.round().max(0.0);
    for &(expr, value) in cases {
        // A newline ends a `//` comment before the scaling.
        let scaled = format!("({expr}\n) * 1000 + 100000");
        let out = support::run(
            &["eval", "-config", config.to_str().unwrap()],
            &[
                ("FAS_MIN_STARTED_MACHINE_COUNT", expr),
                ("FAS_MAX_STARTED_MACHINE_COUNT", &scaled),
            ],
        );
        assert_eq!(out.code, Some(0), "{expr}: {}", out.stderr);
        let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let got = (
            json["started"]["min"].as_f64(),
            json["started"]["max"].as_f64(),
        );
        let want = (Some(result(value)), Some(result(value * 1000.0 + 100000.0)));
        assert_eq!(got, want, "{expr:?} = {value}");
    }
}
