//! The Go program's log lines, which people alert on: with `log-format` unset on a pipe (a
//! container) every line is a JSON object, and each event the Go program logs comes with its
//! message, level and keys. Driven against the Machines API simulator and a Prometheus
//! stand-in; `text` and `json` force the format, and a terminal gets text by default.

use std::time::Duration;

use flysim::harness::{self, Daemon, PromStub, autoscaler_env, with};
use flysim::{Fault, FaultRule, MachineSpec, Simulator};
use serde_json::{Value, json};

use crate::support::{self, seed};

const APP: &str = "my-app";

/// [`autoscaler_env`] without its `FAS_LOG_FORMAT=text`: the binary picks the format.
fn default_format_env(sim: &Simulator, metric: &PromStub) -> Vec<(String, String)> {
    let mut env = autoscaler_env(sim, metric, APP);
    env.retain(|(k, _)| k != "FAS_LOG_FORMAT");
    env
}

/// `serve --once` with `log-format` unset (stderr is a pipe); its exit code and log records.
fn once(sim: &Simulator, metric: &PromStub, extra: &[(&str, &str)]) -> (Option<i32>, Vec<Value>) {
    let base = default_format_env(sim, metric);
    let out = support::run(&["serve", "--once"], &with(&base, extra));
    (out.code, records(&out.stderr))
}

/// Every line parsed as one JSON object shaped like slog's: `level` first, then `msg`.
fn records(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\n{stderr}"));
            assert!(
                line.starts_with("{\"level\":\"") && v["msg"].is_string(),
                "level, then msg, as in Go: {line}"
            );
            v
        })
        .collect()
}

/// The position of the first record with message `msg`; panics listing the messages seen.
fn position(records: &[Value], msg: &str) -> usize {
    records
        .iter()
        .position(|r| r["msg"] == msg)
        .unwrap_or_else(|| {
            let seen: Vec<&Value> = records.iter().map(|r| &r["msg"]).collect();
            panic!("no {msg:?} record; messages: {seen:?}")
        })
}

/// The first record with message `msg`, checked to have `level` and every key of `keys` with
/// its value (more keys are allowed, as the Go lines get extra ones here).
fn expect<'a>(records: &'a [Value], msg: &str, level: &str, keys: Value) -> &'a Value {
    let r = &records[position(records, msg)];
    assert_eq!(r["level"], level, "{r}");
    for (key, want) in keys.as_object().expect("keys as an object") {
        assert_eq!(&r[key], want, "{key} of {r}");
    }
    r
}

/// The `err` of a record: Go's key for what went wrong, a non-empty string.
fn err_of(r: &Value) -> &str {
    r["err"]
        .as_str()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| panic!("no err in {r}"))
}

/// A bulk start with a refused start and fewer stopped machines than wanted: every line the Go
/// program logs for it, in its order.
#[test]
fn start_with_a_failure_and_a_shortfall() {
    let sim = Simulator::start();
    sim.add_app("my-org", APP);
    sim.add_machine(APP, MachineSpec::new("started"));
    let mut stopped = [
        sim.add_machine(APP, MachineSpec::new("stopped")),
        sim.add_machine(APP, MachineSpec::new("stopped")),
    ];
    stopped.sort();
    // Started in id order: the first one is refused, the second starts.
    sim.inject(FaultRule::new(
        Some("POST"),
        Some(&format!("{}/start", stopped[0])),
        10,
        Fault::status(422, r#"{"error":"machine is not startable"}"#),
    ));
    let metric = PromStub::start(4.0);
    let (code, records) = once(&sim, &metric, &[("FAS_STARTED_MACHINE_COUNT", "q")]);
    assert_eq!(code, Some(1), "a failed start fails the pass: {records:?}");

    expect(&records, "connected to fly", "INFO", json!({}));
    expect(
        &records,
        "metrics collectors initialized",
        "INFO",
        json!({"n": 1}),
    );
    expect(
        &records,
        "reconciling",
        "INFO",
        json!({
            "app": APP,
            "current": {"started": 1, "stopped": 2},
            "target": {"created": {"min": 0, "max": 0}, "started": {"min": 4, "max": 4}},
        }),
    );
    expect(&records, "begin bulk start", "INFO", json!({"app": APP}));
    expect(
        &records,
        "not enough stopped machines available to reach target, please create more machines",
        "WARN",
        json!({"app": APP}),
    );
    let refused = expect(
        &records,
        "cannot start machine, skipping",
        "ERROR",
        json!({"app": APP, "id": stopped[0]}),
    );
    assert!(err_of(refused).contains("HTTP 422"), "{refused}");
    expect(
        &records,
        "machine started",
        "INFO",
        json!({"app": APP, "id": stopped[1]}),
    );
    expect(
        &records,
        "bulk start completed",
        "INFO",
        json!({"app": APP, "n": 1}),
    );
    let order: Vec<usize> = [
        "connected to fly",
        "metrics collectors initialized",
        "reconciling",
        "begin bulk start",
        "not enough stopped machines available to reach target, please create more machines",
        "bulk start completed",
    ]
    .iter()
    .map(|m| position(&records, m))
    .collect();
    assert!(order.is_sorted(), "Go's order: {records:?}");
    // The summary line of this implementation comes last.
    expect(&records, "reconciled", "INFO", json!({"app": APP, "ok": 1}));
}

/// Stop, create and destroy: `begin bulk …`, one `machine …` line per machine with its `id`
/// (and `region` where Go logs one), `bulk … completed` with `n`.
#[test]
fn stop_create_and_destroy() {
    struct Case {
        states: &'static [&'static str],
        env: (&'static str, &'static str),
        kind: &'static str,
        past: &'static str,
        /// The ids acted on, from the ids before and after.
        acted_on: fn(&[String], &[String]) -> Vec<String>,
    }
    let cases = [
        Case {
            states: &["started", "started", "started"],
            env: ("FAS_STARTED_MACHINE_COUNT", "1"),
            kind: "stop",
            past: "stopped",
            acted_on: |before, _| {
                let mut lowest = before.to_vec();
                lowest.sort();
                lowest[..2].to_vec()
            },
        },
        Case {
            states: &["started"],
            env: ("FAS_CREATED_MACHINE_COUNT", "3"),
            kind: "create",
            past: "created",
            acted_on: |before, after| {
                after
                    .iter()
                    .filter(|id| !before.contains(id))
                    .cloned()
                    .collect()
            },
        },
        Case {
            states: &["stopped", "stopped", "started"],
            env: ("FAS_CREATED_MACHINE_COUNT", "1"),
            kind: "destroy",
            past: "destroyed",
            acted_on: |before, _| before[..2].to_vec(), // the stopped ones
        },
    ];
    for case in cases {
        let sim = Simulator::start();
        let before = seed(&sim, APP, case.states);
        let metric = PromStub::start(0.0);
        let (code, records) = once(
            &sim,
            &metric,
            &[
                case.env,
                ("FAS_REGIONS", "ord"),
                ("FAS_ACTION_CONCURRENCY", "1"),
            ],
        );
        assert_eq!(code, Some(0), "{records:?}");
        expect(
            &records,
            &format!("begin bulk {}", case.kind),
            "INFO",
            json!({"app": APP}),
        );
        expect(
            &records,
            &format!("bulk {} completed", case.kind),
            "INFO",
            json!({"app": APP, "n": 2}),
        );
        let mut ids: Vec<String> = records
            .iter()
            .filter(|r| r["msg"] == format!("machine {}", case.past))
            .map(|r| {
                assert_eq!((&r["level"], &r["app"]), (&json!("INFO"), &json!(APP)));
                match case.kind {
                    "create" => assert_eq!(r["region"], "ord", "{r}"),
                    "destroy" => assert_eq!(r["region"], "iad", "{r}"),
                    _ => {}
                }
                r["id"].as_str().expect("id").to_string()
            })
            .collect();
        ids.sort();
        let after: Vec<String> = sim.machines(APP).into_iter().map(|m| m.id).collect();
        let mut expected = (case.acted_on)(&before, &after);
        expected.sort();
        assert_eq!(ids, expected, "{}: {records:?}", case.kind);
    }
}

/// Each way a cycle is skipped or fails, with the Go program's message, level and `err`.
#[test]
fn skipped_and_failed_cycles() {
    // A release in progress.
    let sim = Simulator::start();
    seed(&sim, APP, &["stopped"]);
    sim.set_release_status(APP, Some("running"));
    let metric = PromStub::start(1.0);
    let started = [("FAS_STARTED_MACHINE_COUNT", "q")];
    let (code, records) = once(&sim, &metric, &started);
    assert_eq!(code, Some(0));
    expect(
        &records,
        "release in progress, skipping reconciliation",
        "WARN",
        json!({"app": APP}),
    );

    // The release check fails.
    sim.set_release_status(APP, None);
    sim.inject(FaultRule::new(
        Some("POST"),
        Some("/graphql"),
        100,
        Fault::status(400, r#"{"errors":[{"message":"bad query"}]}"#),
    ));
    failed_cycle(&sim, &metric, &started, "get current release failed", "400");

    // Metrics cannot be collected.
    let sim = Simulator::start();
    seed(&sim, APP, &["stopped"]);
    let refused = format!("http://127.0.0.1:{}", harness::free_port());
    let extra = [started[0], ("FAS_PROMETHEUS_ADDRESS", &refused)];
    failed_cycle(
        &sim,
        &metric,
        &extra,
        "metrics collection failed",
        "cannot connect",
    );

    // The reconcile fails: more machines wanted and none to clone.
    let sim = Simulator::start();
    sim.add_app("my-org", APP);
    failed_cycle(
        &sim,
        &metric,
        &[("FAS_CREATED_MACHINE_COUNT", "2")],
        "reconciliation failed",
        "no machine available to clone for scale up",
    );
}

/// `serve --once` whose cycle fails: exit 1, and an ERROR `msg` for the app whose `err` holds
/// `err`.
fn failed_cycle(sim: &Simulator, metric: &PromStub, extra: &[(&str, &str)], msg: &str, err: &str) {
    let (code, records) = once(sim, metric, extra);
    assert_eq!(code, Some(1), "{records:?}");
    let r = expect(&records, msg, "ERROR", json!({"app": APP}));
    assert!(err_of(r).contains(err), "{r}");
}

/// The long-running `serve` on a pipe: JSON from the first line to `signal received, shutting
/// down`, with this implementation's `reconciled` summary in between.
#[test]
fn serve_logs_json_until_the_signal() {
    let sim = Simulator::start();
    seed(&sim, APP, &["stopped"]);
    let metric = PromStub::start(1.0);
    let base = default_format_env(&sim, &metric);
    let env = with(
        &base,
        &[
            ("FAS_STARTED_MACHINE_COUNT", "q"),
            ("FAS_INTERVAL", "200ms"),
            ("FAS_METRICS_ADDR", "127.0.0.1:0"),
        ],
    );
    let mut daemon = Daemon::spawn(support::FAS, &["serve"], &env);
    assert!(
        harness::metrics_url(&daemon, Duration::from_secs(10)).is_some(),
        "serving metrics, read from its JSON line: {}",
        daemon.stderr()
    );
    assert!(
        daemon
            .wait_for_line("\"msg\":\"reconciled\"", Duration::from_secs(10))
            .is_some(),
        "{}",
        daemon.stderr()
    );
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(8)),
        Some(0),
        "{}",
        daemon.stderr()
    );
    let records = records(&daemon.stderr());
    expect(&records, "machine started", "INFO", json!({"app": APP}));
    let reconciled = expect(
        &records,
        "reconciled",
        "INFO",
        json!({"app": APP, "started": 0, "target_started": "1", "ok": 1}),
    );
    assert!(reconciled["took_ms"].is_u64(), "{reconciled}");
    expect(
        &records,
        "signal received, shutting down",
        "INFO",
        json!({"signal": "SIGTERM"}),
    );
    assert!(
        position(&records, "signal received, shutting down") > position(&records, "reconciled")
    );
}

/// `log-format` unset: JSON on a pipe, text on a terminal; `text` and `json` force either.
#[test]
fn log_format_default_and_forced() {
    let sim = Simulator::start();
    seed(&sim, APP, &["started"]);
    let metric = PromStub::start(1.0);
    let base = default_format_env(&sim, &metric);
    let first_line = |format: Option<&str>, terminal: bool| -> String {
        let mut extra = vec![("FAS_STARTED_MACHINE_COUNT", "q")];
        extra.extend(format.map(|f| ("FAS_LOG_FORMAT", f)));
        let env = with(&base, &extra);
        let out = if terminal {
            // script(1) runs the command on a pseudo-terminal and copies what it prints.
            let command = format!("{} serve --once", support::FAS);
            harness::run(
                "script",
                &["--quiet", "--return", "--command", &command, "/dev/null"],
                &env,
                Duration::from_secs(60),
            )
        } else {
            support::run(&["serve", "--once"], &env)
        };
        assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
        let log = if terminal { out.stdout } else { out.stderr };
        log.lines().next().unwrap_or_default().to_string()
    };
    let is_json = |line: &str| {
        serde_json::from_str::<Value>(line).is_ok_and(|v| v["msg"] == "fly-autoscaler")
    };
    let is_text =
        |line: &str| line.contains(" INFO  fly-autoscaler version=") && !line.starts_with('{');
    let pipe = first_line(None, false);
    assert!(is_json(&pipe), "unset, on a pipe: {pipe}");
    let forced = first_line(Some("text"), false);
    assert!(is_text(&forced), "text on a pipe: {forced}");
    let terminal = first_line(None, true);
    assert!(is_text(&terminal), "unset, on a terminal: {terminal}");
    let forced = first_line(Some("json"), true);
    assert!(is_json(forced.trim_end()), "json on a terminal: {forced}");
}
