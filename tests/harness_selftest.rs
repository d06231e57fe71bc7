//! Proves the integration-test harness in tests/support works: real Prometheus scraping a
//! test endpoint, promtool, a real Temporal dev server, and the process runners.

mod support;

use std::time::{Duration, Instant};
use support::bin::{self, Daemon, TempDir};
use support::prometheus::{self, MetricsEndpoint, Prometheus};
use support::temporal::{self, Temporal};

#[test]
fn prometheus_scrapes_endpoint_and_sees_changes() {
    let t0 = Instant::now();
    let endpoint = MetricsEndpoint::start();
    endpoint.set("harness_queue_depth", 35.0);
    endpoint.set_labeled("harness_ratio", &[("case", "nan")], f64::NAN);
    endpoint.set_labeled("harness_ratio", &[("case", "pinf")], f64::INFINITY);
    endpoint.set_labeled(
        "harness_note",
        &[("text", "quote \" backslash \\ newline \n end")],
        1.0,
    );

    let body = endpoint.render();
    assert!(
        body.contains("# TYPE harness_queue_depth gauge\nharness_queue_depth 35\n"),
        "{body}"
    );
    assert!(body.contains("harness_ratio{case=\"nan\"} NaN\n"), "{body}");
    assert!(
        body.contains("harness_ratio{case=\"pinf\"} +Inf\n"),
        "{body}"
    );
    prometheus::promtool_check_metrics(&body).expect("endpoint output passes promtool");

    let prom = Prometheus::start(&[&endpoint.addr()]);
    let ready = t0.elapsed();
    assert!(prom.url().starts_with("http://127.0.0.1:"));

    let v = prom.wait_for(
        "harness_queue_depth",
        |v| v == 35.0,
        Duration::from_secs(30),
    );
    assert_eq!(v, 35.0);
    let first_sample = t0.elapsed();
    assert_eq!(prom.scrape_health(&endpoint.addr()).as_deref(), Some("up"));
    assert!(endpoint.scrapes() >= 1);
    assert!(prom.query("harness_ratio{case=\"nan\"}").unwrap().is_nan());
    assert_eq!(
        prom.query("harness_ratio{case=\"pinf\"}"),
        Some(f64::INFINITY)
    );
    assert_eq!(prom.query("scalar(harness_queue_depth) * 2"), Some(70.0));
    assert_eq!(prom.query("harness_does_not_exist"), None);
    assert_eq!(
        prom.query("sum(harness_queue_depth"),
        None,
        "a syntax error is None"
    );
    assert_eq!(prom.scrape_health("127.0.0.1:1"), None);

    endpoint.set("harness_queue_depth", 7.5);
    let v = prom.wait_for("harness_queue_depth", |v| v == 7.5, Duration::from_secs(10));
    assert_eq!(v, 7.5);
    let changed = t0.elapsed();

    // A removed series goes stale on the next scrape.
    endpoint.remove("harness_queue_depth");
    let v = prom.wait_for(
        "count(harness_queue_depth) or vector(0)",
        |v| v == 0.0,
        Duration::from_secs(10),
    );
    assert_eq!(v, 0.0);
    eprintln!(
        "prometheus: ready {ready:?}, first sample {first_sample:?}, change seen {changed:?}"
    );

    let dir = prom.dir().to_path_buf();
    let pid = prom.pid();
    drop(prom);
    assert!(!dir.exists(), "temp dir {} removed", dir.display());
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "prometheus {pid} reaped"
    );
}

#[test]
fn prometheus_reports_down_target() {
    let port = bin::free_port();
    let target = format!("127.0.0.1:{port}");
    let prom = Prometheus::start(&[&target]);
    prom.wait_for_health(&target, "down", Duration::from_secs(30));
    assert!(
        prom.scrape_error(&target)
            .unwrap()
            .contains("connection refused")
    );
}

#[test]
fn promtool_accepts_good_and_rejects_bad_exposition() {
    let good = "# HELP autoscaler_queue_depth Jobs waiting.\n# TYPE autoscaler_queue_depth gauge\nautoscaler_queue_depth{app=\"my-app\"} 35\n# HELP autoscaler_scale_events_total Scale events.\n# TYPE autoscaler_scale_events_total counter\nautoscaler_scale_events_total 7\n";
    prometheus::promtool_check_metrics(good).expect("good exposition accepted");

    let bad = "# HELP autoscaler_scale_events Scale events.\n# TYPE autoscaler_scale_events counter\nautoscaler_scale_events 7\n";
    let err = prometheus::promtool_check_metrics(bad).expect_err("counter without _total rejected");
    assert!(err.contains("should have \"_total\" suffix"), "{err}");
    let (code, _, _) = prometheus::promtool_check_metrics_output(bad);
    assert_eq!(code, Some(3));

    let broken = "# TYPE g gauge\ng{a=\"x} 1\n";
    let (code, _, stderr) = prometheus::promtool_check_metrics_output(broken);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(prometheus::promtool().is_file());
}

#[test]
fn temporal_counts_started_and_terminated_workflows() {
    let t0 = Instant::now();
    let server = Temporal::start(&["harness-ns"]);
    let ready = t0.elapsed();
    assert!(server.http_url().starts_with("http://127.0.0.1:"));
    assert!(server.grpc_address().starts_with("127.0.0.1:"));

    let running = "ExecutionStatus=\"Running\" AND WorkflowType=\"harness_type\"";
    assert_eq!(server.count("default", running), 0, "{{}} means 0");

    server.start_workflow("default", "harness_type", "wf-1", "harness-q");
    server.start_workflow("default", "harness_type", "wf-2", "harness-q");
    server.start_workflow("default", "other_type", "wf-3", "harness-q");
    server.start_workflow("harness-ns", "harness_type", "wf-ns", "harness-q");
    server.wait_for_count("default", running, 2, Duration::from_secs(10));
    assert_eq!(server.count("harness-ns", running), 1);

    server.terminate_workflow("default", "wf-1");
    server.wait_for_count("default", running, 1, Duration::from_secs(10));
    assert_eq!(
        server.count(
            "default",
            "ExecutionStatus=\"Terminated\" AND WorkflowType=\"harness_type\""
        ),
        1
    );
    let (status, body) = server
        .count_raw("default", "ExecutionStatus=\"running\"")
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(temporal::parse_count("{}"), Some(0));
    assert_eq!(temporal::parse_count("{\"count\":\"42\"}"), Some(42));
    let done = t0.elapsed();

    let pid = server.pid();
    let t1 = Instant::now();
    drop(server);
    let stopped = t1.elapsed();
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "temporal {pid} reaped"
    );
    eprintln!("temporal: ready {ready:?}, checks done {done:?}, stop took {stopped:?}");
}

#[test]
fn run_executes_the_binary_with_a_clean_environment() {
    assert!(bin::binary().is_file());
    let out = bin::run(&["--version"], &[]);
    assert!(out.code.is_some(), "{out:?}");

    // The environment is cleared except PATH/HOME/TMPDIR plus what the test passes.
    let out = bin::run_command("/bin/sh", &["-c", "env | sort"], &[("FAS_TEST_VAR", "x y")]);
    assert_eq!(out.code, Some(0));
    let mut keys: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.split('=').next())
        .filter(|k| !k.is_empty() && *k != "PWD" && *k != "SHLVL" && *k != "_" && *k != "OLDPWD")
        .collect();
    keys.sort();
    for k in &keys {
        assert!(
            ["FAS_TEST_VAR", "HOME", "PATH", "TMPDIR"].contains(k),
            "unexpected var {k} in {keys:?}"
        );
    }
    assert!(out.stdout.contains("FAS_TEST_VAR=x y\n"));

    let out = bin::run_command("/bin/sh", &["-c", "echo out; echo err >&2; exit 7"], &[]);
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (Some(7), "out\n", "err\n")
    );
    let out = bin::run_command("/bin/sh", &["-c", "read line; echo \"got $line\""], &[]);
    assert_eq!(out.stdout, "got \n", "stdin is null");
}

#[test]
fn daemon_signal_wait_and_capture() {
    let script = "trap 'echo got-term >&2; exit 3' TERM; echo started >&2; echo hello; \
                  while :; do sleep 0.05; done";
    let mut d = Daemon::spawn_command("/bin/sh", &["-c", script], &[("X", "1")]);
    assert!(d.pid() > 0);
    assert!(
        d.wait_for_stderr("started", Duration::from_secs(10)),
        "stderr: {}",
        d.stderr()
    );
    assert!(d.wait_for_stdout("hello", Duration::from_secs(10)));
    assert_eq!(
        d.wait_exit(Duration::from_millis(100)),
        None,
        "still running"
    );
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(3));
    assert!(d.stderr().contains("got-term"), "stderr: {}", d.stderr());
    assert_eq!(d.wait_exit(Duration::ZERO), Some(3), "repeatable");
    d.signal("TERM"); // no-op after exit

    // Killed by a signal with no handler: 128 + 9.
    let mut d = Daemon::spawn_command("/bin/sh", &["-c", "exec sleep 30"], &[]);
    d.signal("KILL");
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(137));

    // Drop kills a running daemon.
    let d = Daemon::spawn_command("/bin/sh", &["-c", "exec sleep 30"], &[]);
    let pid = d.pid();
    drop(d);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "daemon {pid} reaped"
    );
}

#[test]
fn tempdir_and_ports() {
    let path;
    {
        let dir = TempDir::new("selftest");
        path = dir.path().to_path_buf();
        assert!(path.starts_with(std::env::temp_dir()));
        let f = dir.write("sub/a.txt", "hi");
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "hi");
        assert_ne!(TempDir::new("selftest").path(), dir.path());
    }
    assert!(!path.exists());
    let ports = bin::free_ports(3);
    assert!(ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2]);
    assert!(bin::free_port() > 0);
}
