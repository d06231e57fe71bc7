//! `type: http`: a real NATS server's JetStream monitoring (`/jsz`) counted through a JSON
//! pointer with wildcards, and scripted servers for every error path, for redirects and for
//! header values that must never be shown or sent to another host.

use std::time::Duration;

use flysim::harness::{Nats, Output, TempDir};
use flysim::{FakeServer, Reply};

use crate::support;

/// `eval` of app `my-app` with `started-machine-count: pending` and one http collector
/// whose keys are `collector` (YAML lines at the collector's indentation), plus `env`.
fn eval_http(collector: &str, env: &[(&str, &str)]) -> Output {
    let dir = TempDir::new("http-collector");
    let config = dir.write(
        "fly-autoscaler.yml",
        &format!(
            "app-name: my-app\nstarted-machine-count: pending\nmetric-collectors:\n  - type: http\n    metric-name: pending\n{collector}"
        ),
    );
    let config = config.to_str().unwrap();
    let env = [env, &[("FAS_LOG_FORMAT", "text")]].concat();
    support::run(&["eval", "-config", config], &env)
}

/// The started count `eval` printed, or its error line.
fn started(out: &Output) -> Result<serde_json::Value, String> {
    if out.code == Some(0) {
        Ok(support::started_of(&out.stdout))
    } else {
        Err(out.stderr.trim().to_string())
    }
}

const JSZ: &str = "    url: $NATS/jsz?consumers=true\n    json-pointer: /account_details/*/stream_detail/*/consumer_detail/*/num_pending\n";

#[test]
fn nats_jetstream_pending_messages() {
    let nats = Nats::start();
    let mut client = nats.connect();
    client.create_stream("ORDERS", &["orders.>"]);
    client.create_consumer("ORDERS", "workers");
    client.create_stream("EMPTY", &["empty.>"]);
    client.publish("orders.new", 7);
    let url = nats.monitor_url();
    let env = [("NATS", url.as_str())];
    assert_eq!(started(&eval_http(JSZ, &env)), Ok(7.into()));

    client.consume("ORDERS", "workers", 5);
    assert_eq!(
        started(&eval_http(JSZ, &env)),
        Ok(2.into()),
        "falls as messages are consumed"
    );

    // Every consumer's pending count; `count` counts the consumers.
    let count = format!("{JSZ}    aggregate: count\n");
    assert_eq!(started(&eval_http(&count, &env)), Ok(1.into()));
}

#[test]
fn errors_are_one_line_each() {
    let server = FakeServer::start(|rq| match rq.path.as_str() {
        "/html" => Reply::text(
            200,
            "text/html",
            "<html><title>Login\nrequired</title></html>",
        ),
        "/500" => Reply::text(500, "text/plain", "database is down\nretry later"),
        "/slow" => Reply::json(200, r#"{"n": 1}"#).delayed(Duration::from_secs(20)),
        "/words" => Reply::json(200, r#"{"n": ["one", "two"]}"#),
        _ => Reply::json(200, r#"{"jobs": {"scheduled": 3, "running": 1}}"#),
    });
    let env = [("SRV", server.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let err = |path: &str, pointer: &str, extra: &[(&str, &str)]| {
        let collector = format!("    url: $SRV{path}\n    json-pointer: {pointer}\n");
        let out = eval_http(&collector, &[&env[..], extra].concat());
        assert_eq!(out.code, Some(1), "{}", out.stderr);
        let line = out.stderr.trim().to_string();
        assert_eq!(line.lines().count(), 1, "{line}");
        line
    };
    assert_eq!(
        started(&eval_http(
            "    url: $SRV/v3/metrics\n    json-pointer: /jobs/scheduled\n",
            &env
        )),
        Ok(3.into())
    );
    let line = err("/v3/metrics", "/jobs/queued", &[]);
    assert!(
        line.contains("json-pointer /jobs/queued matched nothing: no key \"queued\" at /jobs; keys there: running, scheduled"),
        "{line}"
    );
    let line = err("/html", "/n", &[]);
    assert!(
        line.contains("HTTP 200 with a body that is not JSON (text/html): \"Login required\""),
        "{line}"
    );
    let line = err("/500", "/n", &[]);
    assert!(
        line.contains("HTTP 500: \"database is down retry later\""),
        "{line}"
    );
    let line = err("/words", "/n/*", &[]);
    assert!(
        line.contains("matched the string \"one\" at /n/0, not a number"),
        "{line}"
    );
    let line = err("/slow", "/n", &[("FAS_TIMEOUT", "1s")]);
    assert!(line.contains("request timed out after 1."), "{line}");
    assert!(
        line.contains(&format!("http GET {}/slow", server.url())),
        "{line}"
    );
}

#[test]
fn header_values_stay_secret_and_stay_home() {
    const SECRET: &str = "tok-77Zq-very-secret";
    let elsewhere = FakeServer::start(|_| Reply::json(200, r#"{"total_count": 4}"#));
    let target = format!("{}/runs", elsewhere.url());
    let home = FakeServer::start(move |rq| match rq.path.as_str() {
        // Same origin first (headers kept), then another host (headers dropped).
        "/start" => redirect("/hop"),
        "/hop" => redirect(&target),
        _ => Reply::text(500, "text/plain", "boom"),
    });
    let collector = "    url: $SRV/start?token=query-secret\n    headers: {Authorization: \"Bearer ${CI_TOKEN}\", X-Api-Key: \"${CI_TOKEN}\"}\n    json-pointer: /total_count\n";
    let srv = home.url();
    let env = [
        ("SRV", srv.as_str()),
        ("CI_TOKEN", SECRET),
        ("RUST_LOG", "trace"),
    ];
    let out = eval_http(collector, &env);
    assert_eq!(started(&out), Ok(4.into()), "{}", out.stderr);
    let sent = home.requests();
    assert_eq!(sent.len(), 2);
    for rq in &sent {
        assert_eq!(
            rq.header("authorization"),
            Some(format!("Bearer {SECRET}").as_str())
        );
        assert_eq!(rq.header("x-api-key"), Some(SECRET));
    }
    let away = &elsewhere.requests()[0];
    assert_eq!(
        (away.header("authorization"), away.header("x-api-key")),
        (None, None)
    );
    assert!(!format!("{}{}", out.stdout, out.stderr).contains(SECRET));

    // An error at trace level shows neither the header values nor the query string.
    let out = eval_http(&collector.replace("/start", "/fail"), &env);
    assert_eq!(out.code, Some(1));
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("HTTP 500: \"boom\""), "{all}");
    assert!(
        !all.contains(SECRET) && !all.contains("query-secret"),
        "{all}"
    );
}

fn redirect(location: &str) -> Reply {
    Reply {
        status: 302,
        headers: vec![("Location".to_string(), location.to_string())],
        body: String::new(),
        delay: None,
    }
}
