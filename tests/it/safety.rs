//! Issue 9, "Safety under bad input and faults": one test per defect of its list (`d01` …
//! `d13`), each against the real binary with the simulator fault it needs, asserting the
//! machine calls sent, the exit status, the one-line error and that nothing panicked. The
//! fault matrix is `fault_matrix.rs`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use flysim::harness::{self, PromStub, TempDir, is_alive, proc_status, wait_until};
use flysim::{FakeServer, Fault, FaultRule, MachineSpec, RecordedRequest, Reply, Simulator};
use serde_json::{Value, json};

use crate::support::{
    self, APP, Serve, actions, assert_logged, assert_records, assert_run, assert_sane, error_lines,
    lists, once, seed, serve, serve_with_fd_limit,
};

/// A machine as the list shows it, with any `id` (`null`, `""`, a duplicate…) and `state`.
fn raw(id: Value, state: &str) -> Value {
    json!({
        "id": id,
        "name": "raw",
        "state": state,
        "region": "iad",
        "host_status": "ok",
        "image_ref": {"registry": "registry.fly.io", "repository": "my-app", "tag": "v1", "digest": "sha256:0"},
        "config": {"image": "registry.fly.io/my-app:v1", "metadata": {"fly_process_group": "app"}},
        "created_at": "2024-09-30T10:00:00Z",
    })
}

/// `(id, state)` of every machine of the app, in list order.
fn states(sim: &Simulator) -> Vec<(String, String)> {
    sim.machines(APP)
        .into_iter()
        .map(|m| (m.id, m.state))
        .collect()
}

fn pairs(ids: &[String], states: &[&str]) -> Vec<(String, String)> {
    ids.iter()
        .zip(states)
        .map(|(id, s)| (id.clone(), s.to_string()))
        .collect()
}

/// Runs `serve` with `extra` until `settled` holds and then for five more passes, which see
/// (and must not undo) what the first ones did. The daemon, still running, and the changes it
/// made in [`actions`]' words (lists and read-backs left out); every log line is whole.
fn serve_until_settled(
    sim: &Simulator,
    metric: &PromStub,
    ids: &[String],
    extra: &[(&str, &str)],
    settled: impl Fn() -> bool,
) -> (Serve, Vec<String>) {
    let s = serve(sim, metric, APP, extra);
    s.wait_for("the app to settle", settled, Duration::from_secs(20));
    let seen = lists(sim, APP).len();
    s.wait_for(
        "five more passes",
        || lists(sim, APP).len() >= seen + 5,
        Duration::from_secs(20),
    );
    assert_records(&s.daemon.stderr());
    (s, changes(sim, ids))
}

/// The machine changes the simulator was asked for so far, in [`actions`]' words (lists and
/// read-backs left out).
fn changes(sim: &Simulator, ids: &[String]) -> Vec<String> {
    let mut changes = actions(&sim.requests(), APP, ids);
    changes.retain(|a| a != "list" && !a.starts_with("get "));
    changes
}

// Defect 1: a machine in a state the autoscaler does not manage (`failed`, `destroying`, …)
// is not counted, so the last live machine is not destroyed for it; `replacing` counts as
// started but is never acted on, so the live one is kept too.
#[test]
fn d01_the_last_live_machine_is_never_destroyed_for_unmanaged_states() {
    for other in [
        "failed",
        "destroying",
        "replacing",
        "launch_failed",
        "no-such-state",
    ] {
        let sim = Simulator::start();
        let ids = seed(&sim, APP, &["started", other]);
        let metric = PromStub::start(1.0);
        let run = once(&sim, &metric, &[("FAS_CREATED_MACHINE_COUNT", "q")]);
        assert_run(&run, &ids, 0, "list", None);
        assert_eq!(states(&sim), pairs(&ids, &["started", other]), "{other}");
    }
}

// Defect 1, in `serve`: scaling 3 → 1 while destroys take seconds destroys two machines, and
// the survivor stays however many cycles see the other two `destroying`.
#[test]
fn d01_slow_destroys_do_not_cascade_to_the_last_machine() {
    let sim = Simulator::start();
    let ids = seed(&sim, APP, &["started"; 3]);
    sim.set_transition_time(Duration::from_secs(2));
    let metric = PromStub::start(1.0);
    let (_serve, changes) = serve_until_settled(
        &sim,
        &metric,
        &ids,
        &[
            ("FAS_CREATED_MACHINE_COUNT", "q"),
            ("FAS_STARTED_MACHINE_COUNT", ""),
        ],
        || sim.machines(APP).len() == 1,
    );
    assert_eq!(changes, ["destroy a", "destroy b"]);
    assert_eq!(states(&sim), pairs(&ids[2..], &["started"]));
}

// Defect 2: an id listed twice is one machine: not destroyed for a created count of 1, not
// started twice for a started count of 2.
#[test]
fn d02_a_duplicated_id_is_one_machine() {
    let ids = vec!["m1".to_string()];
    for (state, target, value, expected) in [
        ("started", "FAS_CREATED_MACHINE_COUNT", 1.0, "list"),
        ("stopped", "FAS_STARTED_MACHINE_COUNT", 2.0, "list, start a"),
    ] {
        let sim = Simulator::start();
        sim.add_app("my-org", APP);
        for _ in 0..2 {
            sim.add_raw_machine(APP, raw(json!("m1"), state));
        }
        let metric = PromStub::start(value);
        let run = once(&sim, &metric, &[(target, "q"), ("FAS_VERBOSE", "true")]);
        assert_run(&run, &ids, 0, expected, None);
        assert_logged(&run.stderr, "duplicate_id=1");
    }
}

// Defect 3: a target of 1e308 (or 1e6, 1e5) is clamped to max-machines with a warning:
// nothing is allocated for it and no more machines are created or started than that.
#[test]
fn d03_huge_targets_are_clamped_to_max_machines() {
    for value in [1e308, 1e6, 1e5] {
        let metric = PromStub::start(value);
        for (count, max, expected) in [
            ("FAS_CREATED_MACHINE_COUNT", "6", "list, create*2"),
            ("FAS_STARTED_MACHINE_COUNT", "3", "list, start b, start c"),
        ] {
            let sim = Simulator::start();
            let ids = seed(&sim, APP, &["started", "stopped", "stopped", "stopped"]);
            let run = once(&sim, &metric, &[(count, "q"), ("FAS_MAX_MACHINES", max)]);
            assert_run(&run, &ids, 0, expected, None);
            assert_logged(&run.stderr, "target above max-machines, clamped");
        }
    }
    // The default bound, 1000: 999 clones of the one machine, not 1e308.
    let sim = Simulator::start();
    let ids = seed(&sim, APP, &["started"]);
    let metric = PromStub::start(1e308);
    let run = once(
        &sim,
        &metric,
        &[
            ("FAS_CREATED_MACHINE_COUNT", "q"),
            ("FAS_ACTION_CONCURRENCY", "64"),
        ],
    );
    assert_run(&run, &ids, 0, "list, create*999", None);
    assert_eq!(sim.machines(APP).len(), 1000);
}

// Defect 3, in `serve`: the daemon lives on, and stops creating at max-machines.
#[test]
fn d03_serve_lives_on_with_a_huge_target() {
    let sim = Simulator::start();
    let ids = seed(&sim, APP, &["started"]);
    let metric = PromStub::start(1e308);
    let (s, changes) = serve_until_settled(
        &sim,
        &metric,
        &ids,
        &[
            ("FAS_CREATED_MACHINE_COUNT", "q"),
            ("FAS_STARTED_MACHINE_COUNT", ""),
            ("FAS_MAX_MACHINES", "5"),
        ],
        || sim.machines(APP).len() == 5,
    );
    assert_eq!(changes, vec!["create"; 4]);
    assert!(is_alive(s.daemon.pid()), "{}", s.daemon.stderr());
}

/// Three stopped machines; the first start of `a` is carried out and its answer lost (the
/// connection drops).
fn lost_start_answer() -> (Simulator, Vec<String>) {
    let sim = Simulator::start();
    let ids = seed(&sim, APP, &["stopped"; 3]);
    sim.inject(FaultRule::new(
        Some("POST"),
        Some(&format!("{}/start", ids[0])),
        1,
        Fault::DropAfter,
    ));
    (sim, ids)
}

// Defect 4: a start that was carried out but whose answer was lost is retried, gets 412
// (already started), is read back and counted as started: no other machine is started.
#[test]
fn d04_a_start_whose_answer_was_lost_is_read_back() {
    let (sim, ids) = lost_start_answer();
    let metric = PromStub::start(2.0);
    let run = once(
        &sim,
        &metric,
        &[
            ("FAS_STARTED_MACHINE_COUNT", "q"),
            ("FAS_ACTION_CONCURRENCY", "1"),
        ],
    );
    assert_run(&run, &ids, 0, "list, start a*2, get a, start b", None);
    assert_eq!(
        states(&sim),
        pairs(&ids, &["started", "started", "stopped"])
    );
    assert_logged(
        &run.stderr,
        "machine read back in the wanted state after an unclear answer",
    );
}

// Defect 4, in `serve`: after the lost answer nothing flaps: two started, no stop, ever.
#[test]
fn d04_serve_does_not_flap_after_a_lost_answer() {
    let (sim, ids) = lost_start_answer();
    let metric = PromStub::start(2.0);
    let (_serve, changes) = serve_until_settled(
        &sim,
        &metric,
        &ids,
        &[("FAS_ACTION_CONCURRENCY", "1")],
        || sim.count(APP, "started") == 2,
    );
    assert_eq!(changes, ["start a", "start a", "start b"]);
    assert_eq!(
        states(&sim),
        pairs(&ids, &["started", "started", "stopped"])
    );
}

// Defect 4: a machine whose state stays unknown (the read-back fails too) is counted as
// unknown and never replaced by another one.
#[test]
fn d04_a_machine_in_an_unknown_state_is_never_replaced() {
    let (sim, ids) = lost_start_answer();
    sim.inject(FaultRule::new(
        Some("GET"),
        Some(&format!("machines/{}", ids[0])),
        100,
        Fault::status(503, r#"{"error":"unavailable"}"#),
    ));
    let metric = PromStub::start(1.0);
    let run = once(
        &sim,
        &metric,
        &[
            ("FAS_STARTED_MACHINE_COUNT", "q"),
            ("FAS_ACTION_CONCURRENCY", "1"),
        ],
    );
    assert_run(
        &run,
        &ids,
        1,
        "list, start a*2, get a*5",
        Some("machine state unknown after failed start, not replacing it"),
    );
    assert_eq!(
        states(&sim),
        pairs(&ids, &["started", "stopped", "stopped"])
    );
}

// Defect 5: an app the organization's list names twice is reconciled once.
#[test]
fn d05_an_app_listed_twice_is_reconciled_once() {
    let sim = Simulator::start();
    let ids = seed(&sim, APP, &["stopped", "stopped"]);
    sim.inject(FaultRule::new(
        Some("GET"),
        Some("/v1/apps?org_slug"),
        1,
        Fault::status(
            200,
            r#"{"total_apps":2,"apps":[{"name":"my-app"},{"name":"my-app"}]}"#,
        ),
    ));
    let metric = PromStub::start(1.0);
    let run = once(
        &sim,
        &metric,
        &[
            ("FAS_STARTED_MACHINE_COUNT", "q"),
            ("FAS_APP_NAME", "my-*"),
            ("FAS_ORG", "my-org"),
            ("FAS_CONCURRENCY", "4"),
        ],
    );
    assert_run(&run, &ids, 0, "list, start a", None);
}

// Defect 6: machines with `"id": null`, `""` or no id are skipped and counted, never
// addressed (`POST …/machines//start`).
#[test]
fn d06_machines_without_an_id_are_skipped() {
    let sim = Simulator::start();
    sim.add_app("my-org", APP);
    let mut no_id = raw(Value::Null, "stopped");
    no_id.as_object_mut().unwrap().remove("id");
    for m in [
        raw(Value::Null, "stopped"),
        raw(json!(""), "stopped"),
        no_id,
    ] {
        sim.add_raw_machine(APP, m);
    }
    let ids = vec![sim.add_machine(APP, MachineSpec::new("stopped"))];
    let metric = PromStub::start(4.0);
    let run = once(
        &sim,
        &metric,
        &[("FAS_STARTED_MACHINE_COUNT", "q"), ("FAS_VERBOSE", "true")],
    );
    assert_run(&run, &ids, 0, "list, start a", None);
    assert!(!run.requests.iter().any(|r| r.path.contains("//")));
    assert_logged(&run.stderr, "no_id=3");
}

/// A log line a forger would like to slip in.
const FORGED: &str = "2024-01-01T00:00:00.000Z INFO  machine started app=my-app id=forged";

// Defect 7: an API error, a Prometheus error and a machine id carrying a newline (and an
// escape sequence) stay inside their record, in text and in JSON.
#[test]
fn d07_outside_text_cannot_forge_a_log_line() {
    let sim = Simulator::start();
    let ids = seed(&sim, APP, &["stopped"]);
    let body = json!({ "error": format!("bad request\n{FORGED}\u{1b}[2J") }).to_string();
    sim.inject(FaultRule::new(
        Some("GET"),
        Some("/machines?"),
        2,
        Fault::status(400, &body),
    ));
    let metric = PromStub::start(1.0);
    let run = once(&sim, &metric, &[("FAS_STARTED_MACHINE_COUNT", "q")]);
    assert_run(
        &run,
        &ids,
        1,
        "list",
        Some(
            r#"err="list machines of my-app: HTTP 400: bad request\n2024-01-01T00:00:00.000Z INFO  machine started app=my-app id=forged\u{1b}[2J""#,
        ),
    );
    let json_run = once(
        &sim,
        &metric,
        &[
            ("FAS_STARTED_MACHINE_COUNT", "q"),
            ("FAS_LOG_FORMAT", "json"),
        ],
    );
    assert_eq!(json_run.code, Some(1));
    for line in json_run.stderr.lines() {
        let record: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON record ({e}): {line:?}"));
        if record["level"] == "ERROR" {
            assert!(record["err"].as_str().unwrap().contains(FORGED), "{line}");
        }
    }

    // Prometheus' error text.
    let prometheus = FakeServer::start(|_| {
        let error = format!("parse error\n{FORGED}");
        Reply::json(
            400,
            &json!({"status": "error", "errorType": "bad_data", "error": error}).to_string(),
        )
    });
    let env = harness::autoscaler_env(&sim, &metric, APP);
    let address = prometheus.url();
    let env = harness::with(
        &env,
        &[
            ("FAS_PROMETHEUS_ADDRESS", address.as_str()),
            ("FAS_STARTED_MACHINE_COUNT", "q"),
        ],
    );
    sim.take_requests();
    let out = support::run(&["serve", "--once"], &env);
    assert_sane(out.code, &out.stderr);
    assert_eq!(out.code, Some(1));
    assert_logged(
        &error_lines(&out.stderr).join("\n"),
        r"parse error\n2024-01-01",
    );
    assert_eq!(
        actions(&sim.take_requests(), APP, &ids),
        Vec::<String>::new()
    );

    // A machine id: the log names it escaped, and the request carries it percent-encoded
    // as one path segment, so `/../` cannot address another machine.
    let sim = Simulator::start();
    sim.add_app("my-org", APP);
    let odd = format!("m1/../m2\n{FORGED}");
    sim.add_raw_machine(APP, raw(json!(odd), "stopped"));
    sim.add_raw_machine(APP, raw(json!("m2"), "stopped"));
    let run = once(&sim, &metric, &[("FAS_STARTED_MACHINE_COUNT", "q")]);
    let starts: Vec<&str> = run
        .requests
        .iter()
        .filter(|r| r.path.ends_with("/start"))
        .map(|r| r.path.as_str())
        .collect();
    assert_eq!(
        starts,
        [
            "/v1/apps/my-app/machines/m1%2F..%2Fm2%0A2024-01-01T00%3A00%3A00.000Z%20INFO%20%20machine%20started%20app%3Dmy-app%20id%3Dforged/start",
            "/v1/apps/my-app/machines/m2/start",
        ]
    );
    let encoded = starts[0]
        .strip_prefix("/v1/apps/my-app/machines/")
        .and_then(|p| p.strip_suffix("/start"))
        .unwrap();
    assert_run(
        &run,
        &["m2".to_string()],
        1,
        &format!("list, start a, start {encoded}"),
        Some(r#"id="m1/../m2\n2024-01-01T00:00:00.000Z INFO  machine started"#),
    );
}

/// One request on its own connection; the whole answer, or what arrived before an error.
fn raw_request(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to /metrics");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn metrics_addr(s: &Serve) -> SocketAddr {
    let host = s
        .metrics
        .strip_prefix("http://")
        .and_then(|r| r.strip_suffix("/metrics"))
        .expect("http://ADDR/metrics");
    host.parse().expect("a socket address")
}

/// Waits until both `/metrics` and `/healthz` answer 200.
fn assert_endpoints_answer(s: &Serve, timeout: Duration) {
    let addr = metrics_addr(s);
    let ok = |path: &str| {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        raw_request(addr, request.as_bytes()).starts_with("HTTP/1.1 200")
    };
    s.wait_for(
        "/metrics and /healthz to answer",
        || ok("/metrics") && ok("/healthz"),
        timeout,
    );
}

// Defect 8: with 64 file descriptors, idle connections exhaust them and accept fails with
// EMFILE; the server holds a fixed number of threads meanwhile, and once the connections
// close, `/metrics` and `/healthz` answer again.
#[test]
fn d08_the_metrics_endpoint_survives_fd_exhaustion() {
    let sim = Simulator::start();
    seed(&sim, APP, &["started"]);
    let metric = PromStub::start(1.0);
    let s = serve_with_fd_limit(64, &sim, &metric, APP, &[("FAS_INTERVAL", "1s")]);
    assert_endpoints_answer(&s, Duration::from_secs(10));
    let addr = metrics_addr(&s);
    let mut idle = Vec::new();
    let emfile = wait_until(Duration::from_secs(30), || {
        if let Ok(c) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            idle.push(c);
        }
        s.daemon.stderr().contains("Too many open files")
    });
    assert!(
        emfile,
        "accept never failed with {} idle connections\n{}",
        idle.len(),
        s.daemon.stderr()
    );
    let threads = proc_status(s.daemon.pid(), "Threads:").expect("Threads of serve");
    assert!(
        threads <= 16,
        "{threads} threads with {} idle connections",
        idle.len()
    );
    drop(idle);
    assert_endpoints_answer(&s, Duration::from_secs(30));
    assert_eq!(changes(&sim, &[]), Vec::<String>::new());
    assert_logged(
        &s.daemon.stderr(),
        "metrics endpoint cannot accept connections, retrying",
    );
    assert_records(&s.daemon.stderr());
}

// Defect 9: a 256 MB header line gets 431 after 16 KiB, and the process's peak RSS stays
// small (it was 267 MB). The bound is generous: a correctness bound, not a measurement.
#[test]
fn d09_a_huge_header_line_gets_431_without_memory() {
    const LINE: usize = 256 * 1024 * 1024;
    let sim = Simulator::start();
    seed(&sim, APP, &["started"]);
    let metric = PromStub::start(1.0);
    let s = serve(&sim, &metric, APP, &[("FAS_INTERVAL", "1s")]);
    let addr = metrics_addr(&s);
    let mut conn = TcpStream::connect(addr).expect("connect to /metrics");
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut writer = conn.try_clone().unwrap();
    let sender = thread::spawn(move || {
        let chunk = vec![b'a'; 1024 * 1024];
        let mut sent = 0;
        if writer
            .write_all(b"GET /metrics HTTP/1.1\r\nX-Big: ")
            .is_ok()
        {
            while sent < LINE && writer.write_all(&chunk).is_ok() {
                sent += chunk.len();
            }
        }
        sent
    });
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    let sent = sender.join().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{answer:?} after {sent} bytes"
    );
    assert!(sent < LINE, "the server read all {sent} bytes");
    let peak_kb = proc_status(s.daemon.pid(), "VmHWM:").expect("VmHWM of serve");
    assert!(peak_kb < 64 * 1024, "peak RSS {peak_kb} kB");
    assert_endpoints_answer(&s, Duration::from_secs(10));
    assert_eq!(changes(&sim, &[]), Vec::<String>::new());
    assert_records(&s.daemon.stderr());
}

// Defect 10: pools and periods are bounded at start-up with one line naming the setting,
// and never a panic spawning 100,000 threads.
#[test]
fn d10_start_up_limits_are_one_line_errors() {
    let sim = Simulator::start();
    seed(&sim, APP, &["started"]);
    let metric = PromStub::start(1.0);
    for (key, value, message) in [
        (
            "FAS_CONCURRENCY",
            "100000",
            "concurrency 100000 is too large: set concurrency (FAS_CONCURRENCY) to at most 1024",
        ),
        (
            "FAS_ACTION_CONCURRENCY",
            "65",
            "action-concurrency 65 is too large: set action-concurrency (FAS_ACTION_CONCURRENCY) to at most 64",
        ),
        (
            "FAS_MAX_MACHINES",
            "20001",
            "max-machines 20001 is too large: set max-machines (FAS_MAX_MACHINES) to at most 20000",
        ),
        (
            "FAS_INTERVAL",
            "1ns",
            "interval 1ns is too short: set interval (FAS_INTERVAL) to at least 100ms",
        ),
        (
            "FAS_TIMEOUT",
            "99ms",
            "timeout 99ms is too short: set timeout (FAS_TIMEOUT) to at least 100ms",
        ),
    ] {
        let run = once(
            &sim,
            &metric,
            &[("FAS_STARTED_MACHINE_COUNT", "q"), (key, value)],
        );
        assert_run(&run, &[], 1, "", Some(message));
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    }
}

// Defect 10: a busy app's skipped ticks are counted every tick and logged once a minute.
#[test]
fn d10_skipped_ticks_are_logged_once_a_minute() {
    let sim = Simulator::start();
    seed(&sim, APP, &["started"]);
    sim.inject(FaultRule::new(
        Some("GET"),
        Some("/my-app/machines"),
        1,
        Fault::Hang(Duration::from_secs(4)),
    ));
    let metric = PromStub::start(1.0);
    let s = serve(&sim, &metric, APP, &[("FAS_INTERVAL", "100ms")]);
    let skipped = || {
        s.sample("fas_skipped_ticks_total{app=\"my-app\",reason=\"busy\"}")
            .unwrap_or(0.0)
    };
    s.wait_for(
        "10 skipped ticks",
        || skipped() >= 10.0,
        Duration::from_secs(20),
    );
    let stderr = s.daemon.stderr();
    let logged = stderr
        .lines()
        .filter(|l| l.contains("skipping this tick"))
        .count();
    assert_eq!(logged, 1, "{stderr}");
    assert_records(&stderr);
    assert_eq!(changes(&sim, &[]), Vec::<String>::new());
}

// Defect 11: a redirect from the Machines API is an error naming its Location, never
// followed: the other host sees nothing, and a 301/302/303 on a start is not a start.
#[test]
fn d11_machines_api_redirects_are_not_followed() {
    let elsewhere = Simulator::start();
    seed(&elsewhere, APP, &["stopped"; 3]);
    let metric = PromStub::start(1.0);
    let list = format!("{}/v1/apps/{APP}/machines", elsewhere.url());

    let sim = Simulator::start();
    let ids = seed(&sim, APP, &["stopped", "stopped"]);
    sim.inject(FaultRule::new(
        Some("GET"),
        Some("/machines?"),
        1,
        Fault::Redirect {
            code: 302,
            location: list.clone(),
        },
    ));
    let run = once(&sim, &metric, &[("FAS_STARTED_MACHINE_COUNT", "q")]);
    let error = format!(
        "list machines of my-app: HTTP 302 redirect to \\\"{list}\\\" not followed: the Machines API does not redirect"
    );
    assert_run(&run, &ids, 1, "list", Some(&error));

    for code in [301, 302, 303, 307, 308] {
        let sim = Simulator::start();
        let ids = seed(&sim, APP, &["stopped", "stopped"]);
        let start = format!("{list}/{}/start", ids[0]);
        sim.inject(FaultRule::new(
            Some("POST"),
            Some(&format!("{}/start", ids[0])),
            1,
            Fault::Redirect {
                code,
                location: start.clone(),
            },
        ));
        let run = once(&sim, &metric, &[("FAS_STARTED_MACHINE_COUNT", "q")]);
        let error = format!(
            "start machine {}: HTTP {code} redirect to \\\"{start}\\\"",
            ids[0]
        );
        assert_run(&run, &ids, 1, "list, start a, start b", Some(&error));
        assert_eq!(states(&sim), pairs(&ids, &["stopped", "started"]));
        assert!(
            !run.stderr
                .contains(&format!("machine started app=my-app id={}", ids[0])),
            "{}",
            run.stderr
        );
    }
    assert!(elsewhere.requests().is_empty(), "the other host was asked");
}

// Defect 11: the deploy guard's GraphQL query does not follow redirects either.
#[test]
fn d11_graphql_redirects_are_not_followed() {
    let elsewhere = Simulator::start();
    let sim = Simulator::start();
    let ids = seed(&sim, APP, &["stopped"]);
    let location = format!("{}/graphql", elsewhere.url());
    sim.inject(FaultRule::new(
        Some("POST"),
        Some("/graphql"),
        1,
        Fault::Redirect {
            code: 307,
            location: location.clone(),
        },
    ));
    let metric = PromStub::start(1.0);
    let run = once(&sim, &metric, &[("FAS_STARTED_MACHINE_COUNT", "q")]);
    assert_run(
        &run,
        &ids,
        1,
        "",
        Some(&format!(
            "HTTP 307 redirect to \\\"{location}\\\" not followed"
        )),
    );
    assert!(elsewhere.requests().is_empty());
}

/// A Prometheus answer: the scalar `value`.
fn scalar(value: f64) -> Reply {
    Reply::json(
        200,
        &format!(
            r#"{{"status":"success","data":{{"resultType":"scalar","result":[1,"{value}"]}}}}"#
        ),
    )
}

// Defect 11: a metric source may follow a GET redirect, but the token stays behind.
#[test]
fn d11_collectors_follow_redirects_without_the_token() {
    let target = FakeServer::start(|_| scalar(3.0));
    let to = target.url();
    let front = FakeServer::start(move |rq: &RecordedRequest| {
        if rq.method == "POST" {
            return Reply::text(405, "text/plain", "method not allowed");
        }
        Reply {
            status: 302,
            headers: vec![(
                "Location".to_string(),
                format!("{to}{}?{}", rq.path, rq.query),
            )],
            body: String::new(),
            delay: None,
        }
    });
    let address = front.url();
    let out = support::run(
        &["eval"],
        &[
            ("FAS_APP_NAME", APP),
            ("FAS_PROMETHEUS_ADDRESS", &address),
            ("FAS_PROMETHEUS_METRIC_NAME", "q"),
            ("FAS_PROMETHEUS_QUERY", "sum(q)"),
            ("FAS_PROMETHEUS_TOKEN", "prom-secret"),
            ("FAS_STARTED_MACHINE_COUNT", "q"),
            ("FAS_LOG_FORMAT", "text"),
        ],
    );
    assert_sane(out.code, &out.stderr);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(support::started_of(&out.stdout), 3);
    let first = front.requests();
    assert!(
        first
            .iter()
            .all(|r| r.header("authorization") == Some("Bearer prom-secret"))
    );
    let followed = target.requests();
    assert_eq!(followed.len(), 1);
    assert_eq!(
        followed[0].header("authorization"),
        None,
        "token carried along"
    );
    assert_eq!(followed[0].param("query").as_deref(), Some("sum(q)"));
}

/// `serve --once -config PATH` with a file holding `text`.
fn with_config_file(text: &str) -> harness::Output {
    let dir = TempDir::new("safety-config");
    let path = dir.write("fly-autoscaler.yml", text);
    let path = path.to_string_lossy().into_owned();
    support::run(
        &["serve", "--once", "-config", &path],
        &[("FAS_API_TOKEN", "x"), ("FAS_LOG_FORMAT", "text")],
    )
}

// Defect 12: a 100,000-deep YAML flow sequence (200 KB) is refused before parsing, with the
// nesting message; so are deep block nesting and files over 1 MiB.
#[test]
fn d12_deep_or_huge_config_files_are_refused_before_parsing() {
    let deep_flow = format!(
        "app-name: my-app\nstarted-machine-count: \"1\"\nx: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let deep_block: String = (0..100)
        .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
        .collect();
    let huge = format!(
        "app-name: my-app\nstarted-machine-count: \"1\"\n#{}\n",
        "x".repeat(1024 * 1024)
    );
    for (text, message) in [
        (
            deep_flow.as_str(),
            "nesting deeper than 64 levels at line 3; a config nests 3 levels",
        ),
        (
            deep_block.as_str(),
            "nesting deeper than 64 levels at line 65; a config nests 3 levels",
        ),
        (
            huge.as_str(),
            "the file is larger than 1024 KiB, which no config is; check the path",
        ),
    ] {
        let out = with_config_file(text);
        assert_sane(out.code, &out.stderr);
        assert_eq!(out.code, Some(1), "{}", out.stderr);
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{}", out.stderr);
        assert!(lines[0].starts_with("ERROR: "), "{}", lines[0]);
        assert!(lines[0].contains(message), "{}", lines[0]);
    }
}

// Defect 13: a 50,000-machine list is refused with one clear line and nothing done; a
// 10,000-machine list reconciles (no action: the target matches).
#[test]
fn d13_machine_lists_are_bounded_by_count() {
    let metric = PromStub::start(10_000.0);
    for (machines, code, error) in [
        (
            50_000,
            1,
            Some("list machines of my-app: the app has more than 20000 machines"),
        ),
        (10_000, 0, None),
    ] {
        let sim = Simulator::start();
        seed(&sim, APP, &[]);
        sim.inject(FaultRule::new(
            Some("GET"),
            Some("/machines?"),
            1,
            Fault::HugeList(machines),
        ));
        // The simulator takes a while to build 50,000 machines on a loaded machine.
        let run = once(
            &sim,
            &metric,
            &[("FAS_STARTED_MACHINE_COUNT", "q"), ("FAS_TIMEOUT", "50s")],
        );
        assert_run(&run, &[], code, "list", error);
    }
}
