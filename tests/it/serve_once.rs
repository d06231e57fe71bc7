//! `serve --once` against the Machines API simulator: the exact requests made, the resulting
//! machine states, and fault handling that never causes an unintended action.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use flysim::harness::{PromStub, TOKEN, TOKEN_HEADER, autoscaler_env, with};
use flysim::{Fault, FaultRule, MachineSpec, RecordedRequest, Simulator};
use serde_json::json;

use crate::support::{self, APP, calls, once, seed};

fn states(sim: &Simulator) -> Vec<(String, String)> {
    sim.machines(APP)
        .into_iter()
        .map(|m| (m.id, m.state))
        .collect()
}

#[test]
fn starts_the_lowest_stopped_machines() {
    let sim = Simulator::start();
    let ids = seed(&sim, APP, &["stopped", "stopped", "stopped", "started"]);
    let metric = PromStub::start(3.0);
    let run = once(&sim, &metric, &[("FAS_STARTED_MACHINE_COUNT", "q")]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let list = format!("GET /v1/apps/{APP}/machines");
    let mut got = calls(&run);
    got[1..].sort();
    assert_eq!(
        got,
        [
            list,
            format!("POST /v1/apps/{APP}/machines/{}/start", ids[0]),
            format!("POST /v1/apps/{APP}/machines/{}/start", ids[1]),
        ]
    );
    for r in run.requests.iter().filter(|r| r.path.starts_with("/v1/")) {
        assert_eq!(r.header("authorization"), Some(TOKEN_HEADER));
        assert_eq!(r.body, "", "list and start send no body");
        assert_eq!(r.header("content-type"), None);
    }
    let graphql = run
        .requests
        .iter()
        .find(|r| r.path == "/graphql")
        .expect("release check");
    assert_eq!(graphql.json().unwrap()["variables"]["appName"], APP);
    assert_eq!(
        states(&sim)
            .iter()
            .map(|(_, s)| s.as_str())
            .collect::<Vec<_>>(),
        ["started", "started", "stopped", "started"]
    );
    assert!(run.stderr.contains("reconciled"), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "plan=\"start 2 of [{}, {}, {}]\"",
            ids[0], ids[1], ids[2]
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn stops_the_lowest_started_machines_with_fly_go_body() {
    let sim = Simulator::start();
    let ids = seed(&sim, APP, &["started", "started", "started", "stopped"]);
    let metric = PromStub::start(1.0);
    let run = once(&sim, &metric, &[("FAS_STARTED_MACHINE_COUNT", "q")]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let stops: Vec<&RecordedRequest> = run
        .requests
        .iter()
        .filter(|r| r.path.ends_with("/stop"))
        .collect();
    assert_eq!(stops.len(), 2);
    for (r, id) in stops.iter().zip(&ids) {
        let _ = r;
        assert!(
            stops
                .iter()
                .any(|s| s.path == format!("/v1/apps/{APP}/machines/{id}/stop"))
        );
    }
    for r in &stops {
        let body = r.json().unwrap();
        assert_eq!(body["timeout"], "0s");
        assert!(r.path.contains(body["id"].as_str().unwrap()));
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    assert_eq!(
        states(&sim)
            .iter()
            .map(|(_, s)| s.as_str())
            .collect::<Vec<_>>(),
        ["stopped", "stopped", "started", "stopped"]
    );
}

#[test]
fn creates_clones_with_pinned_image_regions_and_untouched_config() {
    let sim = Simulator::start();
    sim.add_app("my-org", APP);
    let config = json!({
        "image": "registry.fly.io/my-app:deployment-1",
        "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256},
        "metadata": {"fly_process_group": "app"},
        "services": [{"protocol": "tcp", "internal_port": 8080, "autostop": "suspend", "brand_new_field": {"x": [1, 2]}}],
        "mounts": null
    });
    let source = sim.add_machine(
        APP,
        MachineSpec::new("started")
            .region("ams")
            .image("registry.fly.io/my-app:deployment-1@sha256:abc123")
            .config(config.clone()),
    );
    let metric = PromStub::start(3.0);
    let run = once(
        &sim,
        &metric,
        &[
            ("FAS_CREATED_MACHINE_COUNT", "q"),
            ("FAS_REGIONS", "ord, sjc"),
        ],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let creates: Vec<&RecordedRequest> = run
        .requests
        .iter()
        .filter(|r| r.method == "POST" && r.path == format!("/v1/apps/{APP}/machines"))
        .collect();
    assert_eq!(creates.len(), 2);
    let mut regions: Vec<String> = creates
        .iter()
        .map(|r| r.json().unwrap()["region"].as_str().unwrap().to_string())
        .collect();
    regions.sort();
    assert_eq!(regions, ["ord", "sjc"]);
    for r in &creates {
        let body = r.json().unwrap();
        let mut expected = config.clone();
        expected["image"] = json!("registry.fly.io/my-app:deployment-1@sha256:abc123");
        assert_eq!(body["config"], expected, "only the image changes");
        assert!(body.get("skip_launch").is_none());
        assert!(body.get("name").is_none());
    }
    let machines = sim.machines(APP);
    assert_eq!(machines.len(), 3);
    assert!(
        machines
            .iter()
            .all(|m| m.process_group.as_deref() == Some("app"))
    );
    assert_eq!(machines[0].id, source);

    // initial-machine-state: stopped creates without booting.
    let run = once(
        &sim,
        &metric,
        &[
            ("FAS_CREATED_MACHINE_COUNT", "4"),
            ("FAS_INITIAL_MACHINE_STATE", "stopped"),
        ],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let create = run
        .requests
        .iter()
        .find(|r| r.method == "POST" && r.path.starts_with("/v1/"))
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(create["skip_launch"], true);
    assert_eq!(
        create["region"], "ams",
        "no regions configured: the source's region"
    );
    assert_eq!(sim.machines(APP).last().unwrap().state, "stopped");
}

#[test]
fn destroys_stopped_then_suspended_with_kill() {
    let sim = Simulator::start();
    let ids = seed(
        &sim,
        APP,
        &["started", "suspended", "stopped", "started", "stopped"],
    );
    let metric = PromStub::start(2.0);
    let run = once(&sim, &metric, &[("FAS_CREATED_MACHINE_COUNT", "q")]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let mut deletes: Vec<String> = calls(&run)
        .into_iter()
        .filter(|c| c.starts_with("DELETE"))
        .collect();
    deletes.sort();
    let mut expected: Vec<String> = [&ids[1], &ids[2], &ids[4]]
        .iter()
        .map(|id| format!("DELETE /v1/apps/{APP}/machines/{id}?kill=true"))
        .collect();
    expected.sort();
    assert_eq!(deletes, expected);
    assert_eq!(
        states(&sim),
        [
            (ids[0].clone(), "started".to_string()),
            (ids[3].clone(), "started".to_string())
        ]
    );
}

#[test]
fn other_groups_and_unreachable_hosts_are_left_alone() {
    let sim = Simulator::start();
    sim.add_app("my-org", APP);
    let worker = sim.add_machine(APP, MachineSpec::new("stopped").group(Some("worker")));
    let unreachable = sim.add_machine(
        APP,
        MachineSpec::new("stopped").host_status(Some("unreachable")),
    );
    let unknown = sim.add_machine(APP, MachineSpec::new("stopped").host_status(None));
    let app = sim.add_machine(APP, MachineSpec::new("stopped"));
    let metric = PromStub::start(5.0);
    let run = once(&sim, &metric, &[("FAS_STARTED_MACHINE_COUNT", "q")]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        calls(&run)[1..],
        [format!("POST /v1/apps/{APP}/machines/{app}/start")]
    );
    assert!(
        run.stderr.contains("not enough stopped machines available"),
        "{}",
        run.stderr
    );
    for id in [worker, unreachable, unknown] {
        assert_eq!(sim.machine_json(APP, &id).unwrap()["state"], "stopped");
    }
}

#[test]
fn empty_app_cannot_scale_up() {
    let sim = Simulator::start();
    sim.add_app("my-org", APP);
    let metric = PromStub::start(2.0);
    let run = once(&sim, &metric, &[("FAS_CREATED_MACHINE_COUNT", "q")]);
    assert_eq!(run.code, Some(1));
    assert_eq!(calls(&run), [format!("GET /v1/apps/{APP}/machines")]);
    assert!(
        run.stderr
            .contains("no machine available to clone for scale up"),
        "{}",
        run.stderr
    );
}

#[test]
fn server_error_then_success_is_retried_for_idempotent_calls() {
    let sim = Simulator::start();
    let ids = seed(&sim, APP, &["stopped"]);
    sim.inject(FaultRule::new(
        Some("POST"),
        Some("/start"),
        1,
        Fault::status(500, r#"{"error":"internal error"}"#),
    ));
    sim.inject(FaultRule::new(
        Some("GET"),
        Some("/machines"),
        1,
        Fault::Drop,
    ));
    let metric = PromStub::start(1.0);
    let run = once(&sim, &metric, &[("FAS_STARTED_MACHINE_COUNT", "q")]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let start = format!("POST /v1/apps/{APP}/machines/{}/start", ids[0]);
    assert_eq!(calls(&run).iter().filter(|c| **c == start).count(), 2);
    assert_eq!(sim.machines(APP)[0].state, "started");
    assert!(
        run.stderr.contains("retrying op=\"start machine"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("HTTP 500: internal error"),
        "{}",
        run.stderr
    );
}

#[test]
fn rate_limit_is_honoured_with_retry_after() {
    let sim = Simulator::start();
    seed(&sim, APP, &["stopped", "stopped"]);
    sim.inject(FaultRule::new(
        Some("GET"),
        Some("/machines"),
        1,
        Fault::rate_limited("1"),
    ));
    let metric = PromStub::start(2.0);
    let run = once(&sim, &metric, &[("FAS_STARTED_MACHINE_COUNT", "q")]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let lists: Vec<&RecordedRequest> = run
        .requests
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/v1/"))
        .collect();
    assert_eq!(lists.len(), 2);
    let waited = lists[1].at.duration_since(lists[0].at);
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
    assert!(sim.machines(APP).iter().all(|m| m.state == "started"));
}

#[test]
fn a_hang_past_the_timeout_ends_the_pass_without_action() {
    let sim = Simulator::start();
    seed(&sim, APP, &["stopped"]);
    sim.inject(FaultRule::new(
        Some("GET"),
        Some("/machines"),
        1,
        Fault::Hang(Duration::from_secs(30)),
    ));
    let metric = PromStub::start(1.0);
    let run = once(
        &sim,
        &metric,
        &[
            ("FAS_STARTED_MACHINE_COUNT", "q"),
            ("FAS_TIMEOUT", "1500ms"),
        ],
    );
    assert_eq!(run.code, Some(1));
    assert!(run.took < Duration::from_secs(8), "took {:?}", run.took);
    assert!(
        !calls(&run).iter().any(|c| c.contains("/start")),
        "{:?}",
        calls(&run)
    );
    assert!(
        run.stderr.contains("list machines of my-app: timed out"),
        "{}",
        run.stderr
    );
    assert_eq!(sim.machines(APP)[0].state, "stopped");
}

#[test]
fn malformed_json_is_an_error_not_an_empty_app() {
    let sim = Simulator::start();
    seed(&sim, APP, &["started", "started"]);
    sim.inject(FaultRule::new(
        Some("GET"),
        Some("/machines"),
        5,
        Fault::MalformedJson,
    ));
    let metric = PromStub::start(0.0);
    let run = once(
        &sim,
        &metric,
        &[
            ("FAS_STARTED_MACHINE_COUNT", "q"),
            ("FAS_CREATED_MACHINE_COUNT", "5"),
        ],
    );
    assert_eq!(run.code, Some(1));
    assert_eq!(
        calls(&run),
        [format!("GET /v1/apps/{APP}/machines")],
        "no retry, no action"
    );
    assert!(
        run.stderr.contains(
            "list machines of my-app: HTTP 200 with a body that is not the expected JSON"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn a_create_with_unknown_outcome_is_never_repeated() {
    for fault in [
        Fault::status(
            503,
            include_str!("../../testdata/fixtures/error-response-insufficient-capacity.json"),
        ),
        Fault::Drop,
    ] {
        let sim = Simulator::start();
        seed(&sim, APP, &["started"]);
        sim.inject(FaultRule::new(
            Some("POST"),
            Some(&format!("/v1/apps/{APP}/machines")),
            10,
            fault,
        ));
        let metric = PromStub::start(3.0);
        let run = once(
            &sim,
            &metric,
            &[
                ("FAS_CREATED_MACHINE_COUNT", "q"),
                ("FAS_ACTION_CONCURRENCY", "1"),
            ],
        );
        assert_eq!(run.code, Some(1));
        let creates = calls(&run).iter().filter(|c| c.starts_with("POST")).count();
        assert_eq!(
            creates, 1,
            "one failed create stops the bulk create and is not retried"
        );
        assert!(
            run.stderr.contains("cannot create machine, skipping"),
            "{}",
            run.stderr
        );
        assert_eq!(sim.machines(APP).len(), 1);
    }
}

#[test]
fn one_failed_start_does_not_stop_the_others() {
    let sim = Simulator::start();
    let ids = seed(&sim, APP, &["stopped", "stopped", "stopped", "stopped"]);
    sim.inject(FaultRule::new(
        Some("POST"),
        Some(&format!("{}/start", ids[1])),
        10,
        Fault::status(412, r#"{"error":"failed_precondition: machine is leased"}"#),
    ));
    let metric = PromStub::start(2.0);
    let run = once(
        &sim,
        &metric,
        &[
            ("FAS_STARTED_MACHINE_COUNT", "q"),
            ("FAS_ACTION_CONCURRENCY", "1"),
        ],
    );
    assert_eq!(
        run.code,
        Some(1),
        "a failed machine operation fails the pass"
    );
    let started: Vec<String> = sim
        .machines(APP)
        .into_iter()
        .filter(|m| m.state == "started")
        .map(|m| m.id)
        .collect();
    assert_eq!(
        started,
        [ids[0].clone(), ids[2].clone()],
        "the failure was replaced by the next candidate"
    );
    // The 412 leaves the outcome open, so the machine is read back: still stopped.
    assert!(run.stderr.contains(&format!("cannot start machine, skipping app={APP} id={} err=\"start machine {}: HTTP 412: failed_precondition: machine is leased\" state=stopped", ids[1], ids[1])), "{}", run.stderr);
}

#[test]
fn deploy_in_progress_skips_the_app() {
    let sim = Simulator::start();
    seed(&sim, APP, &["stopped"]);
    sim.set_release_status(APP, Some("running"));
    let metric = PromStub::start(1.0);
    let run = once(&sim, &metric, &[("FAS_STARTED_MACHINE_COUNT", "q")]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(calls(&run).is_empty(), "{:?}", calls(&run));
    assert_eq!(metric.requests(), 0, "not even metrics are collected");
    assert!(
        run.stderr
            .contains("release in progress, skipping reconciliation"),
        "{}",
        run.stderr
    );

    // The guard can be turned off, and an app that was never deployed (null release) scales.
    let run = once(
        &sim,
        &metric,
        &[
            ("FAS_STARTED_MACHINE_COUNT", "q"),
            ("FAS_DEPLOY_GUARD", "false"),
        ],
    );
    assert_eq!(run.code, Some(0));
    assert!(!run.requests.iter().any(|r| r.path == "/graphql"));
    sim.set_machine_state(APP, &sim.machines(APP)[0].id, "stopped");
    sim.set_release_status(APP, None);
    let run = once(&sim, &metric, &[("FAS_STARTED_MACHINE_COUNT", "q")]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(sim.machines(APP)[0].state, "started");
}

#[test]
fn failing_release_check_blocks_until_the_fail_open_period() {
    let sim = Simulator::start();
    seed(&sim, APP, &["stopped"]);
    sim.inject(FaultRule::new(
        Some("POST"),
        Some("/graphql"),
        100,
        Fault::status(502, "bad gateway"),
    ));
    let metric = PromStub::start(1.0);
    let run = once(&sim, &metric, &[("FAS_STARTED_MACHINE_COUNT", "q")]);
    assert_eq!(run.code, Some(1));
    assert!(calls(&run).is_empty());
    assert!(
        run.stderr.contains("get current release failed"),
        "{}",
        run.stderr
    );
}

#[test]
fn metrics_failure_touches_no_machine() {
    let sim = Simulator::start();
    seed(&sim, APP, &["started", "started"]);
    let metric = PromStub::start(f64::NAN);
    let run = once(
        &sim,
        &metric,
        &[
            ("FAS_STARTED_MACHINE_COUNT", "q"),
            ("FAS_CREATED_MACHINE_COUNT", "1"),
        ],
    );
    assert_eq!(run.code, Some(1));
    assert!(calls(&run).is_empty(), "{:?}", calls(&run));
    assert!(
        run.stderr
            .contains("cannot calculate min started machine count: expression returned NaN"),
        "{}",
        run.stderr
    );
    assert_eq!(sim.machines(APP).len(), 2);
}

#[test]
fn wildcard_reconciles_every_matching_app() {
    let sim = Simulator::start();
    for app in ["my-app-1", "my-app-2", "other"] {
        sim.add_app("my-org", app);
        sim.add_machine(app, MachineSpec::new("stopped"));
    }
    let metric = PromStub::start(1.0);
    let base = autoscaler_env(&sim, &metric, "my-app-*");
    let env = with(
        &base,
        &[
            ("FAS_STARTED_MACHINE_COUNT", "q"),
            ("FAS_ORG", "my-org"),
            ("FAS_CONCURRENCY", "2"),
        ],
    );
    let out = support::run(&["serve", "--once"], &env);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let list_apps = sim
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/apps")
        .unwrap();
    assert_eq!(list_apps.query, "org_slug=my-org");
    assert_eq!(sim.machines("my-app-1")[0].state, "started");
    assert_eq!(sim.machines("my-app-2")[0].state, "started");
    assert_eq!(sim.machines("other")[0].state, "stopped");
}

#[test]
fn dry_run_changes_nothing() {
    let sim = Simulator::start();
    seed(&sim, APP, &["stopped", "stopped"]);
    let metric = PromStub::start(2.0);
    let base = autoscaler_env(&sim, &metric, APP);
    let env = with(&base, &[("FAS_STARTED_MACHINE_COUNT", "q")]);
    let out = support::run(&["serve", "--once", "--dry-run"], &env);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        sim.requests()
            .iter()
            .all(|r| r.method == "GET" || r.path == "/graphql")
    );
    assert!(
        out.stderr.contains("plan=\"start 2 of") && out.stderr.contains("dry_run=true"),
        "{}",
        out.stderr
    );
    assert!(sim.machines(APP).iter().all(|m| m.state == "stopped"));
}

#[test]
fn bulk_start_runs_in_parallel() {
    let sim = Simulator::start();
    seed(&sim, APP, &["stopped"; 12]);
    sim.set_latency(Duration::from_millis(50));
    let metric = PromStub::start(12.0);
    let run = once(
        &sim,
        &metric,
        &[
            ("FAS_STARTED_MACHINE_COUNT", "q"),
            ("FAS_ACTION_CONCURRENCY", "4"),
        ],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(sim.max_in_flight(), 4);
    assert!(sim.machines(APP).iter().all(|m| m.state == "started"));
}

#[test]
fn token_never_appears_in_output() {
    let sim = Simulator::start();
    seed(&sim, APP, &["stopped"]);
    sim.inject(FaultRule::new(
        Some("POST"),
        Some("/start"),
        10,
        Fault::status(401, r#"{"error":"unauthorized"}"#),
    ));
    let metric = PromStub::start(1.0);
    for log in [("RUST_LOG", "trace"), ("FAS_LOG_FORMAT", "json")] {
        let run = once(&sim, &metric, &[("FAS_STARTED_MACHINE_COUNT", "q"), log]);
        assert_eq!(run.code, Some(1));
        assert!(
            !run.stderr.contains("testsecret"),
            "token leaked:\n{}",
            run.stderr
        );
    }
}

/// A pass over many apps, one at a time, takes longer than one timeout: `--once` waits for
/// every app (each is bounded by the timeout) and exits 0.
#[test]
fn a_long_pass_waits_for_every_app() {
    let sim = Simulator::start();
    for i in 0..16 {
        let app = format!("my-app-{i:02}");
        sim.add_app("my-org", &app);
        sim.add_machine(&app, MachineSpec::new("stopped"));
    }
    // Release check and machine list: 0.5 s per app, 8 s in all, against a 1 s timeout.
    sim.set_latency(Duration::from_millis(250));
    let metric = PromStub::start(1.0);
    let base = autoscaler_env(&sim, &metric, "my-app-*");
    let env = with(
        &base,
        &[
            ("FAS_STARTED_MACHINE_COUNT", "0"),
            ("FAS_ORG", "my-org"),
            ("FAS_TIMEOUT", "1s"),
        ],
    );
    let out = support::run(&["serve", "--once"], &env);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        out.stderr.matches(" reconciled app=").count(),
        16,
        "{}",
        out.stderr
    );
}

struct RawApi {
    addr: SocketAddr,
    captured: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RawApi {
    fn start(list: &'static str) -> RawApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        let captured = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (kept, stopped) = (Arc::clone(&captured), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let request = String::from_utf8_lossy(&read_request(&mut conn)).into_owned();
                let body = if request.starts_with("GET ") {
                    list
                } else {
                    "{}"
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                kept.lock().unwrap().push(request);
            }
        });
        RawApi {
            addr,
            captured,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.captured.lock().unwrap())
    }
}

impl Drop for RawApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One request's bytes: the head, then the body its headers announce (`Content-Length`
/// bytes, or chunks up to the last one); whatever arrived if the client stops sending.
fn read_request(conn: &mut TcpStream) -> Vec<u8> {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            let complete = match length {
                Some(n) => bytes.len() >= end + 4 + n,
                None if head.contains("transfer-encoding: chunked") => {
                    bytes.ends_with(b"0\r\n\r\n")
                }
                None => true,
            };
            if complete {
                return bytes;
            }
        }
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return bytes,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
}

/// Empty-bodied POSTs (start, suspend) go out as Go's net/http sends them, with
/// `Content-Length: 0`, not as an empty chunked body (which some proxies refuse): the exact
/// bytes of each request, captured on a raw socket.
#[test]
fn empty_posts_send_content_length_zero() {
    let api = RawApi::start(
        r#"[{"id":"m1","state":"stopped","region":"iad","host_status":"ok","config":{"metadata":{"fly_process_group":"app"}}},
            {"id":"m2","state":"started","region":"iad","host_status":"ok","config":{"metadata":{"fly_process_group":"app"}}}]"#,
    );
    let metric = PromStub::start(0.0);
    let url = api.url();
    let prometheus = metric.url();
    let base = [
        ("FAS_APP_NAME", APP),
        ("FAS_API_TOKEN", TOKEN),
        ("FLY_FLAPS_BASE_URL", url.as_str()),
        ("FAS_DEPLOY_GUARD", "false"),
        ("FAS_PROMETHEUS_ADDRESS", prometheus.as_str()),
        ("FAS_PROMETHEUS_METRIC_NAME", "q"),
        ("FAS_PROMETHEUS_QUERY", "q"),
        ("FAS_LOG_FORMAT", "text"),
    ];
    let cases: [(&[(&str, &str)], &str); 2] = [
        (&[("FAS_STARTED_MACHINE_COUNT", "2")], "m1/start"),
        (
            &[
                ("FAS_STARTED_MACHINE_COUNT", "0"),
                ("FAS_SCALE_DOWN_METHOD", "suspend"),
            ],
            "m2/suspend",
        ),
    ];
    for (extra, call) in cases {
        let out = support::run(&["serve", "--once"], &[&base[..], extra].concat());
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let line = format!("POST /v1/apps/{APP}/machines/{call} HTTP/1.1\r\n");
        let requests = api.take();
        let request = requests
            .iter()
            .find(|r| r.starts_with(&line))
            .unwrap_or_else(|| panic!("no {line:?} in {requests:#?}"));
        let (head, body) = request.split_once("\r\n\r\n").expect("a complete head");
        let headers: Vec<String> = head.lines().skip(1).map(str::to_ascii_lowercase).collect();
        assert_eq!(
            headers
                .iter()
                .filter(|h| h.starts_with("content-length:"))
                .collect::<Vec<_>>(),
            ["content-length: 0"],
            "{request:?}"
        );
        assert!(
            !headers.iter().any(|h| h.starts_with("transfer-encoding:")),
            "{request:?}"
        );
        assert!(
            !headers.iter().any(|h| h.starts_with("content-type:")),
            "no body, no type: {request:?}"
        );
        assert_eq!(body, "", "nothing after the head: {request:?}");
    }
}
