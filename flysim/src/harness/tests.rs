//! The harness against the real tools it drives: Prometheus, promtool, child processes.

use std::time::Duration;

use super::*;

#[test]
fn prometheus_scrapes_the_endpoint_and_follows_it() {
    let endpoint = MetricsEndpoint::start();
    endpoint.set("harness_queue_depth", 35.0);
    endpoint.set_labeled("harness_ratio", &[("case", "nan")], f64::NAN);
    endpoint.set_labeled("harness_ratio", &[("case", "pinf")], f64::INFINITY);
    endpoint.set_labeled(
        "harness_note",
        &[("text", "quote \" backslash \\ newline \n end")],
        1.0,
    );
    let (status, body) = http_get(&endpoint.url(), &[], Duration::from_secs(5)).unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains("# TYPE harness_queue_depth gauge\nharness_queue_depth 35\n"),
        "{body}"
    );
    assert!(
        body.contains("harness_ratio{case=\"pinf\"} +Inf\n"),
        "{body}"
    );
    assert!(
        body.contains(r#"harness_note{text="quote \" backslash \\ newline \n end"} 1"#),
        "{body}"
    );
    promtool_check_metrics(&body).expect("the endpoint's exposition passes promtool");

    let prom = Prometheus::start(&[&endpoint.addr()]);
    assert_eq!(
        prom.wait_for(
            "harness_queue_depth",
            |v| v == 35.0,
            Duration::from_secs(30)
        ),
        35.0
    );
    assert_eq!(prom.scrape_health(&endpoint.addr()).as_deref(), Some("up"));
    assert!(prom.query("harness_ratio{case=\"nan\"}").unwrap().is_nan());
    assert_eq!(prom.query("scalar(harness_queue_depth) * 2"), Some(70.0));
    assert_eq!(prom.query("harness_does_not_exist"), None);
    assert_eq!(
        prom.query("sum(harness_queue_depth"),
        None,
        "a syntax error is None"
    );
    endpoint.set("harness_queue_depth", 7.5);
    assert_eq!(
        prom.wait_for("harness_queue_depth", |v| v == 7.5, Duration::from_secs(10)),
        7.5
    );

    let pid = prom.pid();
    assert!(is_alive(pid));
    drop(prom);
    assert!(!is_alive(pid), "prometheus {pid} stopped and reaped");
}

#[test]
fn promtool_accepts_good_and_rejects_bad_exposition() {
    let good = "# HELP jobs_total Jobs.\n# TYPE jobs_total counter\njobs_total{app=\"a\"} 7\n";
    promtool_check_metrics(good).expect("accepted");
    let bad = "# HELP jobs Jobs.\n# TYPE jobs counter\njobs 7\n";
    let err = promtool_check_metrics(bad).expect_err("a counter without _total");
    assert!(err.contains("should have \"_total\" suffix"), "{err}");
    assert!(
        promtool_check_metrics("# TYPE g gauge\ng{a=\"x} 1\n").is_err(),
        "unparsable"
    );
}

#[test]
fn run_is_hermetic_and_reports_how_the_child_ended() {
    let out = run(
        "/bin/sh",
        &[
            "-c",
            "env | sort; echo err >&2; read line; echo \"got $line\"; exit 7",
        ],
        &[("FAS_TEST_VAR", "x y")],
        Duration::from_secs(10),
    );
    assert_eq!((out.code, out.stderr.as_str()), (Some(7), "err\n"));
    assert!(
        out.stdout.contains("FAS_TEST_VAR=x y\n") && out.stdout.ends_with("got \n"),
        "stdin is null: {}",
        out.stdout
    );
    for line in out.stdout.lines().filter(|l| l.contains('=')) {
        let key = line.split('=').next().unwrap();
        let shell = ["PWD", "SHLVL", "_", "OLDPWD"];
        assert!(
            ["FAS_TEST_VAR", "HOME", "PATH", "TMPDIR"].contains(&key) || shell.contains(&key),
            "leaked {key}"
        );
    }
    assert!(out.wall < Duration::from_secs(5));
}

#[test]
#[should_panic(expected = "still running after 200ms; killed")]
fn run_kills_a_child_past_its_timeout() {
    run(
        "/bin/sh",
        &["-c", "exec sleep 30"],
        &[],
        Duration::from_millis(200),
    );
}

#[test]
fn daemon_signals_waits_and_captures() {
    let script = "trap 'echo got-term >&2; exit 3' TERM; echo hello; echo started x=1 >&2; \
                  while :; do sleep 0.05; done";
    let mut d = Daemon::spawn("/bin/sh", &["-c", script], &[]);
    let line = d
        .wait_for_line("started", Duration::from_secs(10))
        .expect("started");
    assert_eq!(log_field(&line, "x").as_deref(), Some("1"));
    assert_eq!(
        d.wait_exit(Duration::from_millis(100)),
        None,
        "still running"
    );
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(3));
    assert!(d.stderr().contains("got-term") && d.stdout() == "hello\n");
    assert_eq!(d.wait_exit(Duration::ZERO), Some(3), "asked again");
    d.signal("TERM"); // a no-op once reaped

    let mut d = Daemon::spawn("/bin/sh", &["-c", "exec sleep 30"], &[]);
    d.signal("KILL");
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(128 + 9));

    let d = Daemon::spawn("/bin/sh", &["-c", "exec sleep 30"], &[]);
    let pid = d.pid();
    drop(d);
    assert!(!is_alive(pid), "dropped daemon {pid} killed and reaped");
}

#[test]
fn log_fields_tails_and_temp_dirs() {
    let text = "2024-01-01T00:00:00Z INFO  serving metrics addr=127.0.0.1:9090";
    assert_eq!(log_field(text, "addr").as_deref(), Some("127.0.0.1:9090"));
    let json = r#"{"level":"INFO","msg":"reconciled","took_ms":12,"app":"a"}"#;
    assert_eq!(log_field(json, "took_ms").as_deref(), Some("12"));
    assert_eq!(log_field(json, "app").as_deref(), Some("a"));
    assert_eq!(log_field(json, "nope"), None);
    assert_eq!(tail("a\nb\nc\n", 2), "b\nc");

    let dir = TempDir::new("selftest");
    let path = dir.path().to_path_buf();
    let file = dir.write("sub/a.txt", "hi");
    assert_eq!(std::fs::read_to_string(file).unwrap(), "hi");
    assert_ne!(TempDir::new("selftest").path(), path);
    drop(dir);
    assert!(!path.exists());
}

#[test]
fn prometheus_starts_on_backfilled_history_and_restarts_on_its_port() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    // Two days back, beyond the default retention of a fresh TSDB's first blocks, with a gap.
    let mut history = History::new();
    history.gauge(
        "harness_hist",
        &[("app", "a")],
        (0..=48).map(|h| {
            (
                now - f64::from(48 - h) * 3600.0,
                (h != 24).then_some(f64::from(h)),
            )
        }),
    );
    let text = history.render();
    assert!(
        text.starts_with(
            "# HELP harness_hist Test gauge harness_hist.\n# TYPE harness_hist gauge\n"
        )
    );
    assert!(
        text.ends_with("# EOF\n") && !text.contains(" 24 "),
        "{text}"
    );

    let mut prom = Prometheus::start_with_history(&[], &history);
    let at = |hours_ago: f64| {
        prom.query(&format!(
            "harness_hist{{app=\"a\"}} @ {}",
            now - hours_ago * 3600.0
        ))
    };
    assert_eq!(at(48.0), Some(0.0));
    assert_eq!(at(1.0), Some(47.0));
    assert_eq!(at(24.0), None, "the gap: no sample within the 5 m lookback");
    let url = prom.url();
    let pid = prom.pid();
    prom.stop();
    assert!(!is_alive(pid) && prom.pid() == 0);
    assert!(http_get(&format!("{url}/-/ready"), &[], Duration::from_secs(2)).is_err());
    prom.restart();
    assert_eq!(prom.url(), url, "same port");
    assert_eq!(
        prom.query(&format!("harness_hist @ {}", now - 3600.0)),
        Some(47.0),
        "same data"
    );
}
