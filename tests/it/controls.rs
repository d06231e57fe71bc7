//! The scale controls end to end (issue 12): `serve` against a real Prometheus scraping a
//! test-served metric, and the Machines API simulator. Stabilization (live, and prefilled
//! from history in `-once` runs), step limits, cooldown, fallback while Prometheus is down,
//! suspend with refusals, the stop priority query, time variables in `eval`, and what
//! `/metrics`, the `reconciled` line and `-dry-run` show.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flysim::harness::{self, Daemon, History, MetricsEndpoint, Output, Prometheus, log_field};
use flysim::{Fault, FaultRule, RecordedRequest, Simulator};

use crate::support::{self, Live, SETTLE, Serve, pairs, seed};

const QUERY: &str = r#"sum(q{app="$APP_NAME"})"#;

/// The autoscaler's environment for `app`: `started-machine-count: q` from `live`, then
/// `extra`.
fn env(
    sim: &Simulator,
    prom: &Prometheus,
    app: &str,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let defaults = [
        ("FAS_PROMETHEUS_QUERY", QUERY),
        ("FAS_STARTED_MACHINE_COUNT", "q"),
        ("FAS_INTERVAL", "300ms"),
        ("FAS_METRICS_ADDR", "127.0.0.1:0"),
    ];
    support::env_for(sim, prom, app, &[&defaults[..], extra].concat())
}

fn serve(sim: &Simulator, prom: &Prometheus, app: &str, extra: &[(&str, &str)]) -> Serve {
    Serve::start(&[], &pairs(&env(sim, prom, app, extra)))
}

fn once(
    sim: &Simulator,
    prom: &Prometheus,
    app: &str,
    args: &[&str],
    extra: &[(&str, &str)],
) -> Output {
    let env = env(sim, prom, app, extra);
    support::run(&[&["serve", "-once"][..], args].concat(), &pairs(&env))
}

/// `POST …/machines/{id}/{verb}` requests for `app`, as the ids they address.
fn posted(requests: &[RecordedRequest], app: &str, verb: &str) -> Vec<String> {
    let prefix = format!("/v1/apps/{app}/machines/");
    requests
        .iter()
        .filter(|r| r.method == "POST")
        .filter_map(|r| {
            r.path
                .strip_prefix(&prefix)?
                .strip_suffix(&format!("/{verb}"))
        })
        .map(str::to_string)
        .collect()
}

/// The first `reconciled` line after the first `after` ones that satisfies `pred`.
fn wait_reconciled(s: &Serve, after: usize, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let mut found = None;
    s.wait_for(
        what,
        || {
            found = s.reconciled().into_iter().skip(after).find(|l| pred(l));
            found.is_some()
        },
        SETTLE,
    );
    found.unwrap()
}

/// Asserts a `reconciled` line's `key` (`None`: absent).
fn assert_field(line: &str, key: &str, want: Option<&str>) {
    assert_eq!(log_field(line, key).as_deref(), want, "{key} of {line}");
}

/// A number field of a `reconciled` line.
fn number(line: &str, key: &str) -> usize {
    let value = log_field(line, key).unwrap_or_else(|| panic!("no {key} in {line}"));
    value.parse().unwrap_or_else(|_| panic!("{key} of {line}"))
}

#[test]
fn a_flapping_metric_stops_machines_without_a_window_and_none_with_one() {
    let sim = Simulator::start();
    seed(&sim, "flap-go", &["started"; 3]);
    seed(&sim, "flap-held", &["started"; 3]);
    let live = Live::start(&[("q", "flap-go", 3.0), ("q", "flap-held", 3.0)]);
    let go = serve(&sim, &live.prom, "flap-go", &[]);
    let held = serve(
        &sim,
        &live.prom,
        "flap-held",
        &[("FAS_SCALE_DOWN_STABILIZATION", "2m")],
    );
    // The metric flips every cycle: each value is seen by a reconcile of both before the
    // next flip, and the one without a window has carried its action out.
    let flips = [1.0, 3.0, 1.0, 3.0, 1.0, 3.0, 1.0];
    for value in flips {
        let seen = (go.reconciled().len(), held.reconciled().len());
        live.set("q", "flap-go", value);
        live.set("q", "flap-held", value);
        let target = format!("target_started={value}");
        for (s, after) in [(&go, seen.0), (&held, seen.1)] {
            wait_reconciled(s, after, &target, |l| l.contains(&target));
        }
        go.wait_for(
            "flap-go to follow",
            || sim.count("flap-go", "started") == value as usize,
            SETTLE,
        );
    }
    let requests = sim.requests();
    assert_eq!(
        posted(&requests, "flap-go", "stop").len(),
        4 * 2,
        "every fall stops 2"
    );
    assert_eq!(posted(&requests, "flap-go", "start").len(), 3 * 2);
    assert!(posted(&requests, "flap-held", "stop").is_empty());
    assert!(posted(&requests, "flap-held", "start").is_empty());
    assert_eq!(sim.count("flap-held", "started"), 3);

    // The control that held the stop, in the log and in /metrics.
    let line = wait_reconciled(&held, 0, "a held low", |l| l.contains("target_started=1"));
    assert_field(&line, "held", Some("scale-down-stabilization"));
    assert_field(&line, "effective_started", Some("1..3"));
    assert_field(&line, "started", Some("3"));
    assert!(line.contains("plan=\"no scale\""), "{line}");
    let series = |family: &str| {
        held.sample(&format!(
            "{family}{{app=\"flap-held\",state=\"started\",bound=\"max\"}}"
        ))
    };
    assert_eq!(series("fas_target_machines"), Some(1.0));
    assert_eq!(series("fas_effective_target_machines"), Some(3.0));
    let go_line = go
        .reconciled()
        .into_iter()
        .find(|l| l.contains("plan=\"stop 2 of"));
    let go_line = go_line.unwrap_or_else(|| panic!("{}", go.daemon.stderr()));
    assert_field(&go_line, "held", None);
    assert_field(&go_line, "effective_started", None);
}

#[test]
fn a_step_limit_starts_at_most_two_machines_per_cycle() {
    let sim = Simulator::start();
    seed(&sim, "step", &["stopped"; 10]);
    let live = Live::start(&[("q", "step", 0.0)]);
    let s = serve(&sim, &live.prom, "step", &[("FAS_MAX_SCALE_UP", "2")]);
    for value in [3.0, 7.0, 10.0] {
        live.set("q", "step", value);
    }
    s.wait_for("10 started", || sim.count("step", "started") == 10, SETTLE);
    assert_eq!(posted(&sim.requests(), "step", "start").len(), 10);
    let lines = s.reconciled();
    let mut starts = Vec::new();
    for line in &lines {
        if let Some(plan) = line.split("plan=\"start ").nth(1) {
            let n: usize = plan.split(' ').next().unwrap().parse().unwrap();
            assert!(n <= 2, "{line}");
            starts.push(n);
            if number(line, "target_started") > number(line, "started") + 2 {
                assert_field(line, "held", Some("max-scale-up"));
            }
        }
    }
    assert_eq!(starts.iter().sum::<usize>(), 10);
    assert!(
        starts.len() >= 5,
        "at least five cycles for ten machines: {starts:?}"
    );
    let counts: Vec<usize> = lines.iter().map(|l| number(l, "started")).collect();
    for pair in counts.windows(2) {
        assert!(
            pair[1] <= pair[0] + 2,
            "started went {} -> {}",
            pair[0],
            pair[1]
        );
    }
}

#[test]
fn fallback_after_two_failed_collections_and_back_when_prometheus_returns() {
    let sim = Simulator::start();
    seed(&sim, "fb", &["stopped"; 4]);
    let mut live = Live::start(&[("q", "fb", 1.0)]);
    let s = serve(
        &sim,
        &live.prom,
        "fb",
        &[
            ("FAS_FALLBACK_AFTER", "2"),
            ("FAS_FALLBACK_STARTED_MACHINE_COUNT", "3"),
        ],
    );
    s.wait_for("1 started", || sim.count("fb", "started") == 1, SETTLE);
    assert_eq!(s.sample("fas_fallback_active{app=\"fb\"}"), Some(0.0));

    live.prom.stop();
    s.wait_for(
        "the fallback count",
        || sim.count("fb", "started") == 3,
        SETTLE,
    );
    let log = s.daemon.stderr();
    let entered = log
        .find("scaling to the fallback counts")
        .unwrap_or_else(|| panic!("{log}"));
    let last_ok = log[..entered]
        .rfind("target_started=1 ")
        .unwrap_or_else(|| panic!("{log}"));
    let failing = &log[last_ok..entered];
    assert_eq!(
        failing.matches("WARN  metrics collection failed").count(),
        2,
        "fallback from the second failed collection:\n{failing}"
    );
    assert!(failing.contains("connection refused") || failing.contains("Connection refused"));
    s.wait_for(
        "fas_fallback_active 1",
        || s.sample("fas_fallback_active{app=\"fb\"}") == Some(1.0),
        SETTLE,
    );
    let line = wait_reconciled(&s, 0, "a fallback pass", |l| l.contains("target_started=3"));
    assert!(line.contains("plan=\"start 2 of"), "{line}");

    // Prometheus back, with a new value: the expression rules again.
    live.endpoint.set_labeled("q", &[("app", "fb")], 2.0);
    live.prom.restart();
    s.wait_for(
        "the expression's count",
        || sim.count("fb", "started") == 2 && s.daemon.stderr().contains("target_started=2 "),
        SETTLE,
    );
    assert!(s.daemon.stderr().contains("metrics back, leaving fallback"));
    s.wait_for(
        "fas_fallback_active 0",
        || s.sample("fas_fallback_active{app=\"fb\"}") == Some(0.0),
        SETTLE,
    );
}

#[test]
fn cooldown_holds_the_opposite_direction_only() {
    const COOLDOWN: Duration = Duration::from_secs(15);
    let sim = Simulator::start();
    seed(&sim, "cool", &["stopped"; 5]);
    let live = Live::start(&[("q", "cool", 0.0)]);
    let s = serve(&sim, &live.prom, "cool", &[("FAS_COOLDOWN", "15s")]);
    live.set("q", "cool", 2.0);
    s.wait_for("2 started", || sim.count("cool", "started") == 2, SETTLE);
    // The same direction goes on within the cooldown.
    let seen = s.reconciled().len();
    live.set("q", "cool", 4.0);
    s.wait_for("4 started", || sim.count("cool", "started") == 4, SETTLE);
    let up = wait_reconciled(&s, seen, "the second start", |l| {
        l.contains("plan=\"start 2")
    });
    assert_field(&up, "held", None);

    let seen = s.reconciled().len();
    live.set("q", "cool", 1.0);
    let line = wait_reconciled(&s, seen, "a held stop", |l| l.contains("target_started=1"));
    assert_field(&line, "held", Some("cooldown"));
    assert_field(&line, "started", Some("4"));
    s.wait_for(
        "1 started",
        || sim.count("cool", "started") == 1,
        SETTLE + COOLDOWN,
    );
    let requests = sim.requests();
    let at = |verb: &str| {
        requests
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with(verb))
            .map(|r| r.at)
            .collect::<Vec<Instant>>()
    };
    let last_start = *at("/start").iter().max().unwrap();
    let first_stop = *at("/stop").iter().min().unwrap();
    // The cooldown counts from the start of the reconcile that acted, which its start
    // requests reach the simulator a little after (collection and list come first).
    let slack = Duration::from_secs(1);
    assert!(
        first_stop.duration_since(last_start) >= COOLDOWN - slack,
        "stopped {:?} after the last start",
        first_stop.duration_since(last_start)
    );
}

#[test]
fn suspend_and_a_refused_suspend() {
    let sim = Simulator::start();
    let ids = seed(&sim, "sus", &["started"; 5]);
    let live = Live::start(&[("q", "sus", 1.0)]);
    // ids[0] and ids[3]: refused (4xx) while still started, so stopped instead. ids[1]: the
    // platform suspends it on its own (autostop) while our request waits, then refuses ours:
    // it must not be stopped, which would throw its snapshot away.
    for i in [0, 3] {
        sim.inject(FaultRule::new(
            Some("POST"),
            Some(&format!("{}/suspend", ids[i])),
            1,
            Fault::status(
                400,
                r#"{"error":"machine cannot be suspended: too much memory"}"#,
            ),
        ));
    }
    sim.inject(FaultRule::new(
        Some("POST"),
        Some(&format!("{}/suspend", ids[1])),
        1,
        Fault::Hang(Duration::from_secs(1)),
    ));
    let env = env(
        &sim,
        &live.prom,
        "sus",
        &[("FAS_SCALE_DOWN_METHOD", "suspend")],
    );
    let mut run = Daemon::spawn(support::FAS, &["serve", "-once"], &pairs(&env));
    let target = format!("{}/suspend", ids[1]);
    assert!(
        harness::wait_until(SETTLE, || sim
            .requests()
            .iter()
            .any(|r| r.path.ends_with(&target))),
        "{}",
        run.stderr()
    );
    assert!(sim.set_machine_state("sus", &ids[1], "suspended"));
    assert_eq!(run.wait_exit(SETTLE), Some(0), "{}", run.stderr());
    let requests = sim.take_requests();
    let mut suspended = posted(&requests, "sus", "suspend");
    suspended.sort();
    assert_eq!(suspended, ids[..4]);
    let mut stopped = posted(&requests, "sus", "stop");
    stopped.sort();
    assert_eq!(stopped, [ids[0].clone(), ids[3].clone()]);
    for i in [0, 1, 3] {
        let path = format!("/v1/apps/sus/machines/{}", ids[i]);
        assert!(
            requests.iter().any(|r| r.method == "GET" && r.path == path),
            "read back after the refusal: {}",
            ids[i]
        );
    }
    let states: Vec<String> = sim.machines("sus").into_iter().map(|m| m.state).collect();
    assert_eq!(
        states,
        ["stopped", "suspended", "suspended", "stopped", "started"]
    );
    let log = run.stderr();
    assert_eq!(
        log.matches("suspend refused, stopping instead").count(),
        1,
        "{log}"
    );
    assert!(log.contains("plan=\"suspend 4 of ["), "{log}");

    // Suspended machines count as not started and are resumed before stopped ones.
    live.set("q", "sus", 3.0);
    let out = once(
        &sim,
        &live.prom,
        "sus",
        &[],
        &[("FAS_SCALE_DOWN_METHOD", "suspend")],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let mut resumed = posted(&sim.take_requests(), "sus", "start");
    resumed.sort();
    assert_eq!(resumed, [ids[1].clone(), ids[2].clone()]);
}

/// A platform that refuses every suspend is warned about once per app, not every cycle.
#[test]
fn a_refused_suspend_is_warned_about_once_per_app() {
    let sim = Simulator::start();
    seed(&sim, "refuse", &["started"; 3]);
    sim.inject(FaultRule::new(
        Some("POST"),
        Some("/suspend"),
        100,
        Fault::status(400, r#"{"error":"machine cannot be suspended"}"#),
    ));
    let live = Live::start(&[("q", "refuse", 3.0)]);
    let s = serve(
        &sim,
        &live.prom,
        "refuse",
        &[("FAS_SCALE_DOWN_METHOD", "suspend")],
    );
    for (value, cycle) in [(2.0, 1), (1.0, 2)] {
        live.set("q", "refuse", value);
        s.wait_for(
            &format!("stop {cycle}"),
            || sim.count("refuse", "stopped") == cycle,
            SETTLE,
        );
    }
    let requests = sim.requests();
    assert_eq!(posted(&requests, "refuse", "suspend").len(), 2);
    assert_eq!(posted(&requests, "refuse", "stop").len(), 2);
    let log = s.daemon.stderr();
    assert_eq!(
        log.matches("suspend refused, stopping instead").count(),
        1,
        "{log}"
    );
}

#[test]
fn stop_priority_query_stops_the_least_loaded_first() {
    let sim = Simulator::start();
    let ids = seed(&sim, "prio", &["started"; 4]);
    let live = Live::start(&[("q", "prio", 1.0)]);
    // Per-machine load; ids[0] has no sample.
    for (id, load) in ids[1..].iter().zip([50.0, 5.0, 20.0]) {
        live.endpoint.set_labeled("load", &[("machine", id)], load);
    }
    // Scraped series carry the target's `instance`; the query relabels them by machine, with
    // PromQL's `$1` written `$$1` in YAML (the file text is `$`-expanded).
    let query = r#"max by (instance) (label_replace(load, "instance", "$1", "machine", "(.+)"))"#;
    live.prom
        .wait_for(&format!("count({query})"), |v| v == 3.0, SETTLE);
    let dir = harness::TempDir::new("prio");
    let config = |query: &str| {
        let yaml = format!("stop-priority-query: '{}'\n", query.replace('$', "$$"));
        dir.write("fas.yml", &yaml).display().to_string()
    };
    let out = once(&sim, &live.prom, "prio", &["-config", &config(query)], &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "plan=\"stop 3 of [{}, {}, {}, {}]\"",
            ids[2], ids[3], ids[1], ids[0]
        )),
        "lowest value first, no sample last: {}",
        out.stderr
    );
    let mut stopped = posted(&sim.take_requests(), "prio", "stop");
    stopped.sort();
    assert_eq!(stopped, ids[1..]);
    assert_eq!(sim.machines("prio")[0].state, "started");

    // A failing query: stop-order applies, with a warning.
    for id in &ids[1..] {
        sim.set_machine_state("prio", id, "started");
    }
    let out = once(
        &sim,
        &live.prom,
        "prio",
        &["-config", &config("sum(load")],
        &[],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("stop-priority-query failed, stopping in stop-order"),
        "{}",
        out.stderr
    );
    let mut stopped = posted(&sim.take_requests(), "prio", "stop");
    stopped.sort();
    assert_eq!(stopped, ids[..3], "stop-order id");
}

/// Unix seconds now.
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn once_prefills_the_window_from_history_so_a_short_dip_stops_nothing() {
    // Half an hour of history: 4 until two minutes ago, then a dip to 1, still going on.
    let now = now();
    let mut history = History::new();
    history.gauge(
        "q",
        &[("app", "dip")],
        (0..=120).map(|k| {
            let t = now - 1800 + 15 * k;
            (t as f64, Some(if now - t < 120 { 1.0 } else { 4.0 }))
        }),
    );
    let prom = Prometheus::start_with_history(&[], &history);
    let sim = Simulator::start();
    seed(&sim, "dip", &["started"; 4]);
    let window = |w: &str| {
        vec![
            ("FAS_SCALE_DOWN_STABILIZATION", w.to_string()),
            ("FAS_INTERVAL", "15s".to_string()),
        ]
    };
    let run = |args: &[&str], w: &str| {
        let settings = window(w);
        let extra: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = once(&sim, &prom, "dip", args, &extra);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let lines = support::reconciled(&out.stderr);
        assert_eq!(lines.len(), 1, "{}", out.stderr);
        (lines[0].clone(), sim.take_requests())
    };

    // -dry-run shows what a real run would hold back, and changes nothing.
    for args in [&["-dry-run"][..], &[]] {
        let (line, requests) = run(args, "10m");
        assert_field(&line, "target_started", Some("1"));
        assert_field(&line, "effective_started", Some("1..4"));
        assert_field(&line, "held", Some("scale-down-stabilization"));
        let dry_run = if args.is_empty() { "false" } else { "true" };
        assert_field(&line, "dry_run", Some(dry_run));
        assert!(posted(&requests, "dip", "stop").is_empty(), "{line}");
        assert_eq!(sim.count("dip", "started"), 4);
    }
    // A window shorter than the dip: the dip is all it sees.
    let (line, requests) = run(&["-dry-run"], "1m");
    assert_field(&line, "held", None);
    assert!(line.contains("plan=\"stop 3 of ["), "{line}");
    assert!(posted(&requests, "dip", "stop").is_empty(), "dry run");
    let (_, requests) = run(&[], "1m");
    assert_eq!(posted(&requests, "dip", "stop").len(), 3);
    assert_eq!(sim.count("dip", "started"), 1);
}

/// A source without history (Temporal): the window starts empty, said once per process.
#[test]
fn without_history_the_window_fills_as_it_runs_said_once() {
    let sim = Simulator::start();
    for app in ["fill-a", "fill-b"] {
        seed(&sim, app, &["started"]);
    }
    // Never answers: the cycle fails, the window is still set up first.
    let temporal = format!("127.0.0.1:{}", harness::free_port());
    let env = [
        ("FAS_APP_NAME", "fill-*"),
        ("FAS_ORG", "my-org"),
        ("FAS_API_TOKEN", "fm2_x"),
        ("FLY_FLAPS_BASE_URL", &sim.url()),
        ("FLY_API_BASE_URL", &sim.url()),
        ("FAS_TEMPORAL_ADDRESS", &temporal),
        ("FAS_TEMPORAL_METRIC_NAME", "workflows"),
        ("FAS_TEMPORAL_QUERY", "WorkflowType='billing'"),
        ("FAS_STARTED_MACHINE_COUNT", "workflows"),
        ("FAS_SCALE_DOWN_STABILIZATION", "5m"),
        ("FAS_TIMEOUT", "2s"),
        ("FAS_CONCURRENCY", "2"),
        ("FAS_LOG_FORMAT", "text"),
    ];
    let out = support::run(&["serve", "-once"], &env);
    assert_eq!(out.code, Some(1), "the collection fails: {}", out.stderr);
    let said =
        "a metric source keeps no history: stabilization windows fill as the autoscaler runs";
    assert_eq!(out.stderr.matches(said).count(), 1, "{}", out.stderr);
    assert_eq!(
        out.stderr.matches("metrics collection failed").count(),
        2,
        "{}",
        out.stderr
    );
}

/// `date -u` of `t` as a number.
fn date(t: i64, format: &str) -> i64 {
    support::date(t, format).parse().unwrap()
}

#[test]
fn eval_sees_the_time_in_utc_or_the_offset() {
    let exprs = [
        ("FAS_APP_NAME", "my-app"),
        ("FAS_CREATED_MACHINE_COUNT", "month * 100 + day"),
        (
            "FAS_STARTED_MACHINE_COUNT",
            "weekday * 10000 + hour * 100 + minute",
        ),
    ];
    for (offset, shift) in [
        (None, 0),
        (Some("-05:00"), -5 * 3600),
        (Some("+05:30"), 19_800),
    ] {
        // Retried when a minute boundary falls between the two reads of the clock.
        let (out, before, after) = loop {
            let before = now() + shift;
            let mut env = exprs.to_vec();
            env.extend(offset.map(|o| ("FAS_TIME_OFFSET", o)));
            let out = support::run(&["eval"], &env);
            let after = now() + shift;
            if before / 60 == after / 60 {
                break (out, before, after);
            }
        };
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(
            v["created"]["min"],
            date(before, "%m") * 100 + date(before, "%d"),
            "{offset:?}"
        );
        assert_eq!(
            v["started"]["min"],
            date(after, "%w") * 10000 + date(after, "%H") * 100 + date(after, "%M"),
            "{offset:?}"
        );
    }
}

#[test]
fn a_metric_named_like_a_time_variable_wins_with_a_warning() {
    let endpoint = MetricsEndpoint::start();
    endpoint.set("hour", 42.0);
    let prom = Prometheus::start(&[&endpoint.addr()]);
    prom.wait_for("hour", |v| v == 42.0, SETTLE);
    let url = prom.url();
    let env = [
        ("FAS_APP_NAME", "my-app"),
        ("FAS_STARTED_MACHINE_COUNT", "hour"),
        ("FAS_PROMETHEUS_ADDRESS", url.as_str()),
        ("FAS_PROMETHEUS_METRIC_NAME", "hour"),
        ("FAS_PROMETHEUS_QUERY", "sum(hour)"),
    ];
    let out = support::run(&["eval"], &env);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(support::started_of(&out.stdout), 42);
    assert_eq!(
        out.stderr,
        "WARNING: metric-name \"hour\" is also a time variable: expressions see the metric's value, not the time; rename the metric to use the time\n"
    );
}
