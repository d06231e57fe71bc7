//! `serve` as a daemon: the worker pool, wildcard app discovery, skipped ticks, the
//! per-reconcile timeout, `/metrics` (promtool and a real Prometheus), and shutdown on
//! SIGTERM/SIGINT.

use std::time::{Duration, Instant};

use flysim::harness::{
    self, Daemon, PromStub, Prometheus, autoscaler_env, promtool_check_metrics, with,
};
use flysim::{Fault, FaultRule, MachineSpec, Simulator};

use crate::support::{self, lists, serve};

#[test]
fn scales_up_and_down_as_the_metric_moves() {
    let sim = Simulator::start();
    sim.add_app("my-org", "my-app");
    for _ in 0..4 {
        sim.add_machine("my-app", MachineSpec::new("stopped"));
    }
    let metric = PromStub::start(0.0);
    let s = serve(&sim, &metric, "my-app", &[]);
    let sim = &sim;
    let started = |n: usize| move || sim.count("my-app", "started") == n;
    metric.set(3.0);
    s.wait_for("3 started", started(3), Duration::from_secs(10));
    metric.set(10.0);
    s.wait_for("all 4 started", started(4), Duration::from_secs(10));
    metric.set(1.0);
    s.wait_for("1 started", started(1), Duration::from_secs(10));
    // The counters are final once a later pass has seen the result.
    let current = || s.sample("fas_machines{app=\"my-app\",state=\"started\"}") == Some(1.0);
    s.wait_for(
        "the next pass to see 1 started",
        current,
        Duration::from_secs(5),
    );
    assert!(s.sample("fas_reconcile_count{status=\"start\"}").unwrap() >= 2.0);
    assert!(s.sample("fas_reconcile_count{status=\"stop\"}").unwrap() >= 1.0);
    assert_eq!(
        s.sample("fas_machine_start_count{status=\"ok\"}"),
        Some(4.0)
    );
    assert_eq!(s.sample("fas_machine_stop_count{status=\"ok\"}"), Some(3.0));
    assert_eq!(
        s.sample("fas_metric_value{app=\"my-app\",metric=\"q\"}"),
        Some(1.0)
    );
    assert_eq!(
        s.sample("fas_target_machines{app=\"my-app\",state=\"started\",bound=\"min\"}"),
        Some(1.0)
    );
    assert_eq!(s.sample("fas_managed_apps"), Some(1.0));
}

#[test]
fn concurrency_is_respected_across_wildcard_apps() {
    let sim = Simulator::start();
    for i in 0..6 {
        let app = format!("my-app-{i}");
        sim.add_app("my-org", &app);
        sim.add_machine(&app, MachineSpec::new("started"));
    }
    sim.add_app("my-org", "not-mine");
    sim.set_latency(Duration::from_millis(150));
    let metric = PromStub::start(1.0);
    let s = serve(
        &sim,
        &metric,
        "my-app-*",
        &[("FAS_ORG", "my-org"), ("FAS_CONCURRENCY", "3")],
    );
    s.wait_for(
        "every app reconciled twice",
        || (0..6).all(|i| lists(&sim, &format!("my-app-{i}")).len() >= 2),
        Duration::from_secs(20),
    );
    assert_eq!(
        sim.max_in_flight(),
        3,
        "at most `concurrency` reconciles at once, and all of them used"
    );
    assert!(lists(&sim, "not-mine").is_empty());
    assert_eq!(s.sample("fas_managed_apps"), Some(6.0));
}

#[test]
fn apps_appear_and_disappear_between_refreshes() {
    let sim = Simulator::start();
    sim.add_app("my-org", "my-app-a");
    sim.add_machine("my-app-a", MachineSpec::new("started"));
    let metric = PromStub::start(1.0);
    let s = serve(
        &sim,
        &metric,
        "my-app-*",
        &[
            ("FAS_ORG", "my-org"),
            ("FAS_APP_LIST_REFRESH_INTERVAL", "300ms"),
            ("FAS_CONCURRENCY", "2"),
        ],
    );
    s.wait_for(
        "my-app-a reconciled",
        || !lists(&sim, "my-app-a").is_empty(),
        Duration::from_secs(10),
    );
    sim.add_app("my-org", "my-app-b");
    sim.add_machine("my-app-b", MachineSpec::new("stopped"));
    s.wait_for(
        "my-app-b started",
        || sim.machines("my-app-b")[0].state == "started",
        Duration::from_secs(10),
    );
    assert!(s.daemon.stderr().contains("managing app app=my-app-b"));

    sim.remove_app("my-app-a");
    s.wait_for(
        "my-app-a dropped",
        || {
            s.daemon
                .stderr()
                .contains("app no longer matches, stopped managing it app=my-app-a")
        },
        Duration::from_secs(10),
    );
    let seen = lists(&sim, "my-app-a").len();
    let passes = lists(&sim, "my-app-b").len();
    s.wait_for(
        "three more passes over my-app-b",
        || lists(&sim, "my-app-b").len() >= passes + 3,
        Duration::from_secs(10),
    );
    assert_eq!(
        lists(&sim, "my-app-a").len(),
        seen,
        "a removed app is no longer reconciled"
    );
    assert!(
        !s.scrape().contains("app=\"my-app-a\""),
        "its series are gone from /metrics"
    );

    // A failed refresh keeps the last list.
    sim.inject(FaultRule::new(
        Some("GET"),
        Some("org_slug"),
        1000,
        Fault::status(500, r#"{"error":"boom"}"#),
    ));
    s.wait_for(
        "refresh failure logged",
        || s.daemon.stderr().contains("app list update failed err="),
        Duration::from_secs(10),
    );
    let before = lists(&sim, "my-app-b").len();
    s.wait_for(
        "my-app-b still reconciled",
        || lists(&sim, "my-app-b").len() > before + 2,
        Duration::from_secs(10),
    );
}

#[test]
fn a_slow_app_skips_its_ticks_without_delaying_others() {
    let sim = Simulator::start();
    for app in ["my-app-fast", "my-app-slow"] {
        sim.add_app("my-org", app);
        sim.add_machine(app, MachineSpec::new("started"));
    }
    sim.inject(FaultRule::new(
        Some("GET"),
        Some("/my-app-slow/machines"),
        1,
        Fault::Hang(Duration::from_secs(3)),
    ));
    let metric = PromStub::start(1.0);
    let s = serve(
        &sim,
        &metric,
        "my-app-*",
        &[("FAS_ORG", "my-org"), ("FAS_CONCURRENCY", "2")],
    );
    let skipped = || s.sample("fas_skipped_ticks_total{app=\"my-app-slow\",reason=\"busy\"}");
    s.wait_for(
        "6 passes over the fast app and 5 skipped ticks of the slow one",
        || lists(&sim, "my-app-fast").len() >= 6 && skipped().unwrap_or(0.0) >= 5.0,
        Duration::from_secs(10),
    );
    let fast = lists(&sim, "my-app-fast");
    let took = fast[5] - fast[0];
    assert!(
        took < Duration::from_secs(2),
        "the fast app kept its 200ms rhythm: 6 lists in {took:?}"
    );
    assert_eq!(lists(&sim, "my-app-slow").len(), 1, "still hanging");
    let skipped = skipped().unwrap_or(0.0);
    assert!(skipped >= 5.0, "skipped {skipped}");
    assert!(
        s.sample("fas_skipped_ticks_total{app=\"my-app-fast\",reason=\"busy\"}")
            .is_none()
    );
    assert!(
        s.daemon
            .stderr()
            .contains("previous reconcile still running, skipping this tick app=my-app-slow")
    );
    // Skipped ticks are dropped, not queued: once the hang ends it is reconciled again on
    // the normal rhythm, not in a burst.
    s.wait_for(
        "slow app back",
        || lists(&sim, "my-app-slow").len() >= 2,
        Duration::from_secs(5),
    );
}

#[test]
fn the_reconcile_timeout_bounds_a_hung_api() {
    let sim = Simulator::start();
    sim.add_app("my-org", "my-app");
    sim.add_machine("my-app", MachineSpec::new("stopped"));
    sim.inject(FaultRule::new(
        Some("GET"),
        Some("/my-app/machines"),
        1,
        Fault::Hang(Duration::from_secs(60)),
    ));
    let metric = PromStub::start(1.0);
    let started = Instant::now();
    let s = serve(&sim, &metric, "my-app", &[("FAS_TIMEOUT", "1s")]);
    s.wait_for(
        "machine started after the hung call timed out",
        || sim.machines("my-app")[0].state == "started",
        Duration::from_secs(10),
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        s.sample("fas_reconcile_errors_total{app=\"my-app\",kind=\"timeout\"}"),
        Some(1.0)
    );
}

#[test]
fn metrics_pass_promtool_and_are_scraped_by_prometheus() {
    let sim = Simulator::start();
    sim.add_app("my-org", "my-app");
    sim.add_machine("my-app", MachineSpec::new("stopped"));
    sim.add_machine("my-app", MachineSpec::new("stopped"));
    let metric = PromStub::start(2.0);
    let s = serve(&sim, &metric, "my-app", &[]);
    s.wait_for(
        "started",
        || s.sample("fas_machine_start_count{status=\"ok\"}") == Some(2.0),
        Duration::from_secs(10),
    );
    s.wait_for(
        "a no_scale pass",
        || {
            s.sample("fas_reconcile_count{status=\"no_scale\"}")
                .unwrap_or(0.0)
                >= 1.0
        },
        Duration::from_secs(10),
    );

    let (status, body) = harness::http_get(&s.metrics, &[], Duration::from_secs(5)).unwrap();
    assert_eq!(status, 200);
    promtool_check_metrics(&body).unwrap();
    let health = s.metrics.replace("/metrics", "/healthz");
    assert_eq!(
        harness::http_get(&health, &[], Duration::from_secs(5))
            .unwrap()
            .0,
        200
    );
    assert_eq!(
        harness::http_get(
            &s.metrics.replace("/metrics", "/debug/pprof/"),
            &[],
            Duration::from_secs(5)
        )
        .unwrap()
        .0,
        404
    );

    let target = s
        .metrics
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_string();
    let prom = Prometheus::start(&[&target]);
    let started = prom.wait_for(
        "fas_machine_start_count{status=\"ok\"}",
        |v| v == 2.0,
        Duration::from_secs(30),
    );
    assert_eq!(started, 2.0);
    let ok = prom.wait_for(
        "sum(fas_machine_actions_total{app=\"my-app\",op=\"start\",status=\"ok\"})",
        |v| v == 2.0,
        Duration::from_secs(30),
    );
    assert_eq!(ok, 2.0);
    assert_eq!(prom.scrape_health(&target).as_deref(), Some("up"));
}

fn shutdown_on(signal: &str) {
    let sim = Simulator::start();
    sim.add_app("my-org", "my-app");
    for _ in 0..3 {
        sim.add_machine("my-app", MachineSpec::new("stopped"));
    }
    sim.set_latency(Duration::from_millis(400));
    let metric = PromStub::start(3.0);
    let mut s = serve(&sim, &metric, "my-app", &[("FAS_ACTION_CONCURRENCY", "1")]);
    s.wait_for(
        "a reconcile in flight",
        || sim.in_flight() > 0,
        Duration::from_secs(10),
    );
    let sent = Instant::now();
    s.daemon.signal(signal);
    let code = s.daemon.wait_exit(Duration::from_secs(8));
    assert_eq!(
        code,
        Some(0),
        "exit after SIG{signal}:\n{}",
        s.daemon.stderr()
    );
    assert!(sent.elapsed() < Duration::from_secs(8));
    let log = s.daemon.stderr();
    assert!(
        log.contains(&format!(
            "signal received, shutting down signal=SIG{signal}"
        )),
        "{log}"
    );
    assert!(log.contains("shutdown complete"), "{log}");
}

#[test]
fn sigterm_exits_zero_while_reconciling() {
    shutdown_on("TERM");
}

#[test]
fn sigint_exits_zero_while_reconciling() {
    shutdown_on("INT");
}

/// As PID 1 (a container's init), the kernel drops signals that have no handler; the
/// autoscaler installs handlers, so SIGTERM still shuts it down cleanly.
#[test]
fn sigterm_works_as_pid_1() {
    let sim = Simulator::start();
    sim.add_app("my-org", "my-app");
    sim.add_machine("my-app", MachineSpec::new("started"));
    let metric = PromStub::start(1.0);
    let base = autoscaler_env(&sim, &metric, "my-app");
    let env = with(
        &base,
        &[
            ("FAS_STARTED_MACHINE_COUNT", "q"),
            ("FAS_INTERVAL", "200ms"),
            ("FAS_METRICS_ADDR", "off"),
        ],
    );
    let mut args = vec!["--pid", "--fork", "--kill-child"];
    if !harness::is_root() {
        args.extend(["--user", "--map-root-user"]);
    }
    args.extend([support::FAS, "serve"]);
    let mut outer = Daemon::spawn("unshare", &args, &env);
    assert!(
        outer
            .wait_for_line("reconciled", Duration::from_secs(10))
            .is_some(),
        "{}",
        outer.stderr()
    );
    assert!(
        outer.stderr().contains(" pid=1\n"),
        "runs as PID 1: {}",
        outer.stderr()
    );
    // The autoscaler is PID 1 inside; from here it is the child of `unshare`.
    let children = std::process::Command::new("pgrep")
        .args(["-P", &outer.pid().to_string()])
        .output()
        .unwrap();
    let child = String::from_utf8_lossy(&children.stdout).trim().to_string();
    assert!(!child.is_empty(), "no child of unshare");
    assert!(harness::send_signal(child.parse().unwrap(), "TERM"));
    assert_eq!(
        outer.wait_exit(Duration::from_secs(8)),
        Some(0),
        "{}",
        outer.stderr()
    );
    assert!(outer.stderr().contains("shutdown complete"));
}

/// More machines wanted and none left to start: the Go program counts a bulk start
/// (`fas_reconcile_count{status="start"}`), not `no_scale`, and starts nothing.
#[test]
fn a_start_shortfall_counts_as_start() {
    let sim = Simulator::start();
    sim.add_app("my-org", "my-app");
    sim.add_machine("my-app", MachineSpec::new("started"));
    sim.add_machine("my-app", MachineSpec::new("started"));
    let metric = PromStub::start(3.0);
    let s = serve(&sim, &metric, "my-app", &[]);
    s.wait_for(
        "a reconcile",
        || s.daemon.stderr().contains(" reconciled app=my-app"),
        Duration::from_secs(10),
    );
    // One scrape, so the counters are read at one moment.
    let text = s.scrape();
    let value = |series: &str| {
        support::sample_in(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    let starts = value("fas_reconcile_count{status=\"start\"}");
    assert!(starts >= 1.0, "{text}");
    assert_eq!(value("fas_reconcile_count{status=\"no_scale\"}"), 0.0);
    assert!(value("fas_reconciles_total{app=\"my-app\",action=\"start\"}") >= 1.0);
    assert_eq!(value("fas_machine_start_count{status=\"ok\"}"), 0.0);
    assert_eq!(value("fas_machine_start_count{status=\"failed\"}"), 0.0);
    assert!(
        s.daemon
            .stderr()
            .contains("plan=\"no scale: 1 short, nothing left to start\""),
        "{}",
        s.daemon.stderr()
    );
    assert_eq!(sim.count("my-app", "started"), 2);
}
