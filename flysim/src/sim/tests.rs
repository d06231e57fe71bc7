//! The simulator over real HTTP: the wire format of each endpoint, and each fault.

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Fault, FaultRule, MachineSpec, Simulator};
use crate::harness::wait_until;
use crate::test_client::{Answer, call, send};

const MACHINES: &str = "/v1/apps/my-app/machines";
const RELEASE_QUERY: &str = "query ($appName: String!) { app(name: $appName) { currentRelease: currentReleaseUnprocessed { id version description reason status imageRef stable user { id email name } createdAt } } }";

/// A simulator with app `my-app` in org `my-org`.
fn sim() -> Simulator {
    let sim = Simulator::start();
    sim.add_app("my-org", "my-app");
    sim
}

fn post(sim: &Simulator, target: &str, body: &str) -> Answer {
    call(&sim.url(), "POST", target, Some(body))
}

fn get(sim: &Simulator, target: &str) -> Answer {
    call(&sim.url(), "GET", target, None)
}

fn delete(sim: &Simulator, target: &str) -> Answer {
    call(&sim.url(), "DELETE", target, None)
}

/// `POST /v1/apps/my-app/machines/{id}/{action}` without a body.
fn act(sim: &Simulator, id: &str, action: &str) -> Answer {
    post(sim, &format!("{MACHINES}/{id}/{action}"), "")
}

/// The current-release query (for `app`, if any) or another `query`.
fn graphql(sim: &Simulator, query: &str, app: Option<&str>) -> Value {
    let body = json!({"query": query, "variables": {"appName": app}});
    post(sim, "/graphql", &body.to_string()).json()
}

/// [`send`] with a 5 s timeout: `Err` when no answer comes.
fn try_send(
    sim: &Simulator,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<Answer> {
    send(
        &sim.url(),
        method,
        target,
        headers,
        body,
        Duration::from_secs(5),
    )
}

fn state(sim: &Simulator, id: &str) -> String {
    get(sim, &format!("{MACHINES}/{id}")).json()["state"]
        .as_str()
        .unwrap_or("(gone)")
        .to_string()
}

fn create_body(extra: Value) -> String {
    let mut body = json!({
        "config": {
            "image": "registry.fly.io/my-app:deployment-1@sha256:abc123",
            "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256, "max_memory_mb": 1024},
            "metadata": {"fly_process_group": "app"},
            "x_future_field": {"nested": [1, 2.5, null, "s"]},
            "init": {}
        },
        "region": "ord"
    });
    for (k, v) in extra.as_object().expect("an object") {
        body[k] = v.clone();
    }
    body.to_string()
}

#[test]
fn list_and_get_are_shaped_like_the_fixtures() {
    let sim = sim();
    let a = sim.add_machine("my-app", MachineSpec::new("started"));
    let b = sim.add_machine(
        "my-app",
        MachineSpec::new("stopped")
            .region("ord")
            .group(Some("worker")),
    );
    let c = sim.add_machine(
        "my-app",
        MachineSpec::new("created").group(None).host_status(None),
    );
    let d = sim.add_machine(
        "my-app",
        MachineSpec::new("stopped").host_status(Some("unreachable")),
    );
    assert!(a < b && b < c && c < d, "ids sort in insertion order");
    assert!(
        a.len() == 14
            && a.bytes()
                .all(|ch| ch.is_ascii_digit() || (b'a'..=b'f').contains(&ch))
    );

    let r = get(&sim, MACHINES);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.header("fly-request-id").is_some());
    let list = r.json();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [&a, &b, &c, &d]);
    let first = &list[0];
    assert_eq!(
        (first["state"].as_str(), first["region"].as_str()),
        (Some("started"), Some("iad"))
    );
    assert_eq!(first["host_status"], "ok");
    assert_eq!(first["config"]["metadata"]["fly_process_group"], "app");
    assert_eq!(first["image_ref"]["registry"], "registry.fly.io");
    assert_eq!(first["image_ref"]["repository"], "my-app");
    assert_eq!(
        first["image_ref"]["tag"],
        "deployment-01J8ZK0A7Q5X2N4W6R8T0Y1M3P"
    );
    assert!(
        first["image_ref"]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:6a0e2dbc")
    );
    assert!(first["image_ref"]["labels"].is_object());
    assert_eq!(first["instance_id"].as_str().unwrap().len(), 26);
    assert!(first["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(first["events"][0]["timestamp"].is_u64());
    assert_eq!(first["checks"][0]["status"], "passing");
    assert_eq!(list[1]["config"]["metadata"]["fly_process_group"], "worker");
    assert_eq!(list[1]["checks"][0]["status"], "warning");
    assert!(
        list[2]["config"]["metadata"]
            .get("fly_process_group")
            .is_none()
    );
    assert!(
        list[2].get("host_status").is_none(),
        "no host status: the field is absent"
    );
    // An unreachable host: only a partial config and no events (reference §4.7).
    assert!(list[3].get("config").is_none() && list[3].get("events").is_none());
    assert_eq!(
        list[3]["incomplete_config"]["metadata"]["fly_process_group"],
        "app"
    );
    assert_eq!(list[3]["host_status"], "unreachable");

    let got = get(&sim, &format!("{MACHINES}/{b}"));
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), list[1]);
    assert_eq!(sim.machine_json("my-app", &b), Some(list[1].clone()));
    assert_eq!(
        (sim.count("my-app", "stopped"), sim.count("nope", "stopped")),
        (2, 0)
    );
    let snap = sim.machines("my-app");
    assert_eq!(snap[1].process_group.as_deref(), Some("worker"));
    assert_eq!(snap[2].process_group, None);
    assert_eq!(
        snap[3].process_group.as_deref(),
        Some("app"),
        "read from incomplete_config"
    );
}

#[test]
fn create_answers_200_created_and_keeps_the_config_verbatim() {
    let sim = sim();
    let body = create_body(json!({"name": "my-clone"}));
    let sent: Value = serde_json::from_str(&body).unwrap();
    let r = post(&sim, MACHINES, &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let created = r.json();
    assert_eq!(created["state"], "created", "G6: 200 and `created`");
    assert_eq!(
        (created["region"].as_str(), created["name"].as_str()),
        (Some("ord"), Some("my-clone"))
    );
    assert_eq!(created["config"], sent["config"]);
    assert_eq!(created["image_ref"]["tag"], "deployment-1");
    assert_eq!(created["image_ref"]["digest"], "sha256:abc123");
    let id = created["id"].as_str().unwrap();
    assert_eq!(
        state(&sim, id),
        "started",
        "booting is immediate by default"
    );
    assert_eq!(
        sim.machines("my-app")[0].config["x_future_field"],
        json!({"nested": [1, 2.5, null, "s"]})
    );

    let r = post(
        &sim,
        MACHINES,
        &json!({"config": {"image": "nginx:1.27"}, "skip_launch": true}).to_string(),
    );
    let created = r.json();
    assert_eq!(created["state"], "created");
    assert_eq!(created["region"], "iad", "the default region");
    assert_eq!(created["image_ref"]["registry"], "registry-1.docker.io");
    assert_eq!(created["image_ref"]["repository"], "library/nginx");
    assert!(
        created["image_ref"]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(
        state(&sim, created["id"].as_str().unwrap()),
        "stopped",
        "skip_launch (G7)"
    );

    for bad in [
        "{not json",
        "[]",
        r#"{"region": "ord"}"#,
        r#"{"config": {"guest": {}}}"#,
        r#"{"config": {"image": 7}}"#,
        r#"{"config": {"image": "x"}, "skip_launch": "yes"}"#,
        r#"{"config": {"image": "x"}, "region": 5}"#,
    ] {
        let r = post(&sim, MACHINES, bad);
        assert_eq!(r.status, 400, "{bad}");
        assert!(
            r.error().starts_with("invalid_argument: "),
            "{bad}: {}",
            r.body
        );
    }
    let r = post(&sim, "/v1/apps/nope/machines", &create_body(json!({})));
    assert_eq!((r.status, r.error().as_str()), (404, "app not found"));
    assert_eq!(
        sim.machines("my-app").len(),
        2,
        "no invalid request created a machine"
    );
}

#[test]
fn start_stop_suspend_destroy_and_their_preconditions() {
    let sim = sim();
    let id = sim.add_machine("my-app", MachineSpec::new("started"));
    let one = format!("{MACHINES}/{id}");

    // Stop with fly-go's body: the id and a Go duration string (G4).
    let r = post(
        &sim,
        &format!("{one}/stop"),
        &json!({"id": id, "timeout": "0s"}).to_string(),
    );
    assert_eq!((r.status, r.json()), (200, json!({"ok": true})));
    assert_eq!(state(&sim, &id), "stopped");
    let r = act(&sim, &id, "stop");
    assert_eq!(r.status, 412);
    assert_eq!(
        r.error(),
        "failed_precondition: unable to stop machine from current state: 'stopped'"
    );
    for bad in [r#"{"timeout": "forever"}"#, r#"{"signal": 9}"#, "[1]"] {
        assert_eq!(post(&sim, &format!("{one}/stop"), bad).status, 400, "{bad}");
    }

    let r = act(&sim, &id, "start");
    assert_eq!(
        r.json(),
        json!({"previous_state": "stopped", "migrated": false, "new_host": ""})
    );
    let r = act(&sim, &id, "start");
    assert_eq!(
        (r.status, r.error().as_str()),
        (
            412,
            "failed_precondition: machine still active, refusing to start"
        )
    );
    let r = act(&sim, &id, "suspend");
    assert_eq!((r.status, r.json()), (200, json!({"ok": true})));
    assert_eq!(state(&sim, &id), "suspended");
    assert_eq!(act(&sim, &id, "suspend").status, 412);
    assert_eq!(
        act(&sim, &id, "start").json()["previous_state"],
        "suspended"
    );
    let r = post(
        &sim,
        &format!("{one}/stop"),
        r#"{"signal": "SIGTERM", "timeout": 5}"#,
    );
    assert_eq!(r.status, 200, "a number is a valid timeout too");
    act(&sim, &id, "start");

    // Destroying a running machine takes kill (what fly-go sends) or force (what the docs say).
    let r = delete(&sim, &one);
    assert_eq!(
        (r.status, r.error().as_str()),
        (
            412,
            "failed_precondition: unable to destroy machine, not currently stopped"
        )
    );
    assert_eq!(delete(&sim, &format!("{one}?kill=maybe")).status, 400);
    let r = delete(&sim, &format!("{one}?kill=true"));
    assert_eq!((r.status, r.json()), (200, json!({"ok": true})));
    let r = get(&sim, &one);
    assert_eq!((r.status, r.error().as_str()), (404, "machine not found"));
    assert_eq!(act(&sim, &id, "start").status, 404);
    assert!(sim.machines("my-app").is_empty() && sim.machine_json("my-app", &id).is_none());

    let started = sim.add_machine("my-app", MachineSpec::new("started"));
    let stopped = sim.add_machine("my-app", MachineSpec::new("stopped"));
    let suspended = sim.add_machine("my-app", MachineSpec::new("suspended"));
    for target in [
        format!("{started}?force=true"),
        format!("{stopped}?kill=false"),
        suspended,
    ] {
        assert_eq!(
            delete(&sim, &format!("{MACHINES}/{target}")).status,
            200,
            "{target}"
        );
    }
    assert!(sim.machines("my-app").is_empty());
}

#[test]
fn transitions_last_the_configured_time() {
    let sim = sim();
    let t = Duration::from_millis(300);
    sim.set_transition_time(t);
    let id = sim.add_machine("my-app", MachineSpec::new("stopped"));
    let one = format!("{MACHINES}/{id}");
    let settles = |from: &str, to: &str| {
        let began = Instant::now();
        assert_eq!(state(&sim, &id), from);
        assert!(
            wait_until(Duration::from_secs(5), || state(&sim, &id) == to),
            "{from} never became {to}"
        );
        assert!(
            began.elapsed() >= t - Duration::from_millis(50),
            "{from} → {to} took {:?}",
            began.elapsed()
        );
    };
    act(&sim, &id, "start");
    settles("starting", "started");
    act(&sim, &id, "suspend");
    settles("suspending", "suspended");
    act(&sim, &id, "stop");
    settles("stopping", "stopped");
    assert_eq!(act(&sim, &id, "start").status, 200);
    assert_eq!(
        act(&sim, &id, "start").error(),
        "failed_precondition: unable to start machine from current state: 'starting'"
    );
    settles("starting", "started");
    delete(&sim, &format!("{one}?kill=true"));
    settles("destroying", "(gone)");

    for (skip_launch, transient, end) in
        [(false, "starting", "started"), (true, "created", "stopped")]
    {
        let r = post(
            &sim,
            MACHINES,
            &create_body(json!({"skip_launch": skip_launch})),
        );
        assert_eq!(r.json()["state"], "created");
        let created = r.json()["id"].as_str().unwrap().to_string();
        assert_eq!(state(&sim, &created), transient);
        assert!(wait_until(Duration::from_secs(5), || state(&sim, &created) == end));
    }

    // An out-of-band change ends a transition: a later one completes, the cancelled one not.
    let [running, stopped] = [0, 1].map(|i| sim.machines("my-app")[i].id.clone());
    act(&sim, &running, "stop");
    assert!(sim.set_machine_state("my-app", &running, "failed"));
    act(&sim, &stopped, "start");
    assert!(wait_until(Duration::from_secs(5), || state(&sim, &stopped)
        == "started"));
    assert_eq!(state(&sim, &running), "failed");
}

#[test]
fn raw_machines_are_listed_verbatim() {
    let sim = sim();
    let raw = [
        json!({"id": "a1", "state": "failed", "host_status": "ok"}),
        json!({"id": "a1", "state": "stopped", "config": {"metadata": {"process_group": "app"}}}),
        json!({"id": null, "state": "replacing"}),
        json!({"id": "", "state": "launch_failed", "events": null}),
        json!({"state": "destroying"}),
        json!("not even an object"),
    ];
    for m in &raw {
        sim.add_raw_machine("my-app", m.clone());
    }
    assert_eq!(get(&sim, MACHINES).json(), Value::Array(raw.to_vec()));
    let snap = sim.machines("my-app");
    assert_eq!(
        (snap[2].id.as_str(), snap[2].state.as_str()),
        ("", "replacing")
    );
    assert_eq!(
        snap[1].process_group.as_deref(),
        Some("app"),
        "the legacy key"
    );

    // Actions find the first machine with the id, and change only its state.
    let r = act(&sim, "a1", "start");
    assert_eq!(r.json()["previous_state"], "failed");
    let list = get(&sim, MACHINES).json();
    assert_eq!(
        list[0],
        json!({"id": "a1", "state": "started", "host_status": "ok"})
    );
    assert_eq!(list[1], raw[1]);
}

#[test]
fn routes_parameters_org_apps_and_token() {
    let sim = sim();
    sim.add_app("my-org", "my-app-staging");
    sim.add_app("other-org", "elsewhere");
    let id = sim.add_machine("my-app", MachineSpec::new("started"));
    sim.add_machine("my-app", MachineSpec::new("stopped"));
    let cases = [
        ("GET", "/v1/nothing-here".to_string(), 404),
        ("GET", format!("{MACHINES}/{id}/start"), 405),
        ("POST", format!("{MACHINES}/{id}/restart"), 404),
        ("PUT", MACHINES.to_string(), 405),
        ("GET", "/graphql".to_string(), 405),
        ("GET", "/v1/apps/nope/machines".to_string(), 404),
        ("GET", format!("{MACHINES}/ffffffffffffff"), 404),
        ("GET", format!("{MACHINES}?summary=true"), 400),
        ("POST", format!("{MACHINES}/{id}/stop?timeout=1"), 400),
        ("GET", "/v1/apps".to_string(), 400),
        ("GET", "/v1/apps?org_slug=unknown-org".to_string(), 404),
    ];
    for (method, target, status) in cases {
        let r = call(&sim.url(), method, &target, None);
        assert_eq!(r.status, status, "{method} {target}: {}", r.body);
        assert!(!r.error().is_empty());
    }
    assert_eq!(get(&sim, "/v1/x").error(), "not found");
    assert_eq!(
        call(&sim.url(), "PUT", MACHINES, None).header("allow"),
        Some("GET, POST")
    );

    let v = get(&sim, "/v1/apps?org_slug=my-org").json();
    assert_eq!(v["total_apps"], 2);
    assert_eq!(v["apps"][0]["name"], "my-app");
    assert_eq!(v["apps"][0]["machine_count"], 2);
    assert_eq!(
        (
            v["apps"][0]["volume_count"].as_u64(),
            v["apps"][0]["network"].as_str()
        ),
        (Some(0), Some("default"))
    );
    assert!(v["apps"][0]["id"].is_string());
    assert_eq!(v["apps"][1]["name"], "my-app-staging");
    sim.remove_app("my-app-staging");
    assert_eq!(
        get(&sim, "/v1/apps?org_slug=my-org").json()["total_apps"],
        1
    );
    assert_eq!(get(&sim, "/v1/apps/my-app-staging/machines").status, 404);

    sim.set_token(Some("FlyV1 fm2_secret"));
    let with =
        |auth: &str| try_send(&sim, "GET", MACHINES, &[("Authorization", auth)], None).unwrap();
    assert_eq!(
        (
            get(&sim, MACHINES).status,
            get(&sim, MACHINES).error().as_str()
        ),
        (401, "unauthorized")
    );
    assert_eq!(with("Bearer fm2_secret").status, 401);
    assert_eq!(with("FlyV1 fm2_secret").status, 200);
    let v = graphql(&sim, RELEASE_QUERY, Some("my-app"));
    assert_eq!(v["errors"][0]["extensions"]["code"], "UNAUTHORIZED");
}

#[test]
fn graphql_answers_the_current_release_query_only() {
    let sim = sim();
    let release = |app| graphql(&sim, RELEASE_QUERY, Some(app));
    let v = release("my-app");
    let current = &v["data"]["app"]["currentRelease"];
    assert_eq!(current["status"], "complete");
    assert!(
        current["version"].is_u64()
            && current["createdAt"].is_string()
            && current["user"]["email"].is_string()
    );
    assert!(v.get("errors").is_none());
    sim.set_release_status("my-app", Some("running"));
    assert_eq!(
        release("my-app")["data"]["app"]["currentRelease"]["status"],
        "running"
    );
    sim.set_release_status("my-app", None);
    let v = release("my-app");
    assert!(
        v["data"]["app"].is_object() && v["data"]["app"]["currentRelease"].is_null(),
        "{v}"
    );

    let v = release("ghost");
    assert!(v["data"]["app"].is_null());
    assert_eq!(v["errors"][0]["message"], "Could not find App");
    assert_eq!(v["errors"][0]["extensions"]["code"], "NOT_FOUND");

    // Whitespace is compacted as fly-go does; any other query is refused.
    let spaced = RELEASE_QUERY.replace(' ', "\n  ");
    let v = graphql(&sim, &spaced, Some("my-app"));
    assert!(v.get("errors").is_none(), "{v}");
    let v = graphql(&sim, "query { viewer { id } }", None);
    assert_eq!(v["errors"][0]["extensions"]["code"], "INVALID");
    assert_eq!(post(&sim, "/graphql", "{not json").status, 400);
}

#[test]
fn status_fault_answers_the_given_times_and_changes_nothing() {
    let sim = sim();
    let capacity = r#"{"error": "could not reserve resource for machine: insufficient memory available to fulfill request", "status": "insufficient_capacity"}"#;
    sim.inject(FaultRule::new(
        Some("post"),
        Some("/machines"),
        1,
        Fault::status(503, capacity),
    ));
    sim.inject(FaultRule::new(
        Some("GET"),
        Some("/machines"),
        2,
        Fault::rate_limited("1"),
    ));
    let r = post(&sim, MACHINES, &create_body(json!({})));
    assert_eq!(
        (r.status, &r.json()["status"]),
        (503, &json!("insufficient_capacity"))
    );
    assert!(
        sim.machines("my-app").is_empty(),
        "a faulted create creates nothing"
    );
    assert_eq!(
        post(&sim, MACHINES, &create_body(json!({}))).status,
        200,
        "the rule applied once"
    );
    for _ in 0..2 {
        let r = get(&sim, MACHINES);
        assert_eq!(
            (r.status, r.header("retry-after"), r.error().as_str()),
            (429, Some("1"), "rate limit exceeded")
        );
    }
    assert_eq!(get(&sim, MACHINES).status, 200);
    assert_eq!(
        sim.take_requests().len(),
        5,
        "faulted requests are recorded too"
    );
    assert!(sim.requests().is_empty());

    sim.inject(FaultRule::new(
        None,
        None,
        1,
        Fault::status(500, "<html>oops</html>"),
    ));
    let r = get(&sim, MACHINES);
    assert_eq!(
        (r.status, r.header("content-type")),
        (500, Some("text/plain; charset=utf-8"))
    );
}

#[test]
fn malformed_json_redirect_and_huge_list_faults() {
    let sim = sim();
    let id = sim.add_machine("my-app", MachineSpec::new("stopped"));
    let start = format!("{MACHINES}/{id}/start");
    sim.inject(FaultRule::new(
        None,
        Some("/start"),
        1,
        Fault::MalformedJson,
    ));
    let r = post(&sim, &start, "");
    assert_eq!(r.status, 200);
    assert!(
        serde_json::from_str::<Value>(&r.body).is_err(),
        "{}",
        r.body
    );
    assert_eq!(
        sim.machines("my-app")[0].state,
        "stopped",
        "nothing carried out"
    );

    let location = "http://127.0.0.1:9/elsewhere";
    let redirect = Fault::Redirect {
        code: 307,
        location: location.into(),
    };
    sim.inject(FaultRule::new(None, Some("/start"), 1, redirect));
    let r = post(&sim, &start, "");
    assert_eq!(
        (r.status, r.header("location"), r.body.as_str()),
        (307, Some(location), "")
    );
    assert_eq!(
        sim.machines("my-app")[0].state,
        "stopped",
        "nothing carried out"
    );

    sim.inject(FaultRule::new(Some("GET"), None, 1, Fault::HugeList(1000)));
    let r = get(&sim, MACHINES);
    assert!(r.body.len() > 1_000_000, "{} bytes", r.body.len());
    let list = r.json();
    let machines = list.as_array().unwrap();
    let ids: BTreeSet<&str> = machines.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!((machines.len(), ids.len()), (1000, 1000), "distinct ids");
    assert!(
        machines
            .iter()
            .all(|m| m["state"] == "started"
                && m["config"]["metadata"]["fly_process_group"] == "app")
    );
    assert_eq!(sim.machines("my-app").len(), 1, "the store is untouched");
}

#[test]
fn drop_changes_nothing_and_drop_after_carries_the_request_out() {
    let sim = sim();
    let id = sim.add_machine("my-app", MachineSpec::new("started"));
    let destroy = format!("{MACHINES}/{id}?kill=true");
    sim.inject(FaultRule::new(Some("DELETE"), None, 1, Fault::Drop));
    let t0 = Instant::now();
    assert!(try_send(&sim, "DELETE", &destroy, &[], None).is_err());
    assert!(t0.elapsed() < Duration::from_secs(2), "a drop is immediate");
    assert_eq!(sim.machines("my-app").len(), 1);

    sim.inject(FaultRule::new(
        Some("POST"),
        Some("/stop"),
        1,
        Fault::DropAfter,
    ));
    assert!(try_send(&sim, "POST", &format!("{MACHINES}/{id}/stop"), &[], None).is_err());
    assert_eq!(
        sim.machines("my-app")[0].state,
        "stopped",
        "carried out, though unanswered"
    );
    assert_eq!(
        delete(&sim, &destroy).status,
        200,
        "the next request is answered"
    );
}

#[test]
fn hang_fault_outlasts_the_client_then_carries_the_request_out() {
    let sim = sim();
    let id = sim.add_machine("my-app", MachineSpec::new("stopped"));
    sim.inject(FaultRule::new(
        Some("POST"),
        Some("/start"),
        1,
        Fault::Hang(Duration::from_millis(600)),
    ));
    let t0 = Instant::now();
    let r = send(
        &sim.url(),
        "POST",
        &format!("{MACHINES}/{id}/start"),
        &[],
        None,
        Duration::from_millis(200),
    );
    assert!(
        r.is_err() && t0.elapsed() < Duration::from_millis(550),
        "the client times out"
    );
    assert_eq!(sim.machines("my-app")[0].state, "stopped");
    assert!(wait_until(Duration::from_secs(3), || sim
        .machines("my-app")[0]
        .state
        == "started"));
}

#[test]
fn latency_and_in_flight_counters_with_concurrent_requests() {
    let sim = Arc::new(sim());
    sim.set_latency(Duration::from_millis(400));
    let n = 8;
    let barrier = Arc::new(Barrier::new(n));
    let t0 = Instant::now();
    let clients: Vec<_> = (0..n)
        .map(|_| {
            let (url, barrier) = (sim.url(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                call(&url, "GET", MACHINES, None).status
            })
        })
        .collect();
    assert!(wait_until(Duration::from_secs(2), || sim.in_flight() > 0));
    for c in clients {
        assert_eq!(c.join().unwrap(), 200);
    }
    let elapsed = t0.elapsed();
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_millis(1600),
        "served one at a time: {elapsed:?}"
    );
    assert_eq!((sim.max_in_flight(), sim.in_flight()), (n, 0));
    sim.reset_max_in_flight();
    assert_eq!(sim.max_in_flight(), 0);
}

#[test]
fn requests_are_recorded_with_headers_and_decoded_parameters() {
    let sim = sim();
    let headers = [
        ("User-Agent", "fly-autoscaler-rs/test"),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    try_send(
        &sim,
        "POST",
        "/v1/apps?org_slug=my%20org",
        &headers,
        Some("query=sum(q%7Bapp%3D%22a%22%7D)&time=1"),
    )
    .unwrap();
    let rq = sim.take_requests().pop().unwrap();
    assert_eq!(
        (rq.method.as_str(), rq.path.as_str(), rq.query.as_str()),
        ("POST", "/v1/apps", "org_slug=my%20org")
    );
    assert_eq!(rq.header("user-agent"), Some("fly-autoscaler-rs/test"));
    assert_eq!(rq.param("org_slug").as_deref(), Some("my org"));
    assert_eq!(
        rq.param("query").as_deref(),
        Some("sum(q{app=\"a\"})"),
        "from the form body"
    );
    assert_eq!(rq.param("nope"), None);
    assert!(rq.json().is_none());

    // ureq sends a body-less POST as an empty chunked body.
    let chunked = [("Transfer-Encoding", "chunked")];
    let id = sim.add_machine("my-app", MachineSpec::new("stopped"));
    let start = format!("{MACHINES}/{id}/start");
    let r = try_send(&sim, "POST", &start, &chunked, Some("0\r\n\r\n")).unwrap();
    assert_eq!((r.status, sim.take_requests()[0].body.as_str()), (200, ""));
    let stop = format!("{MACHINES}/{id}/stop");
    let body = "5\r\n{\"id\"\r\n6;ext=1\r\n: \"x\"}\r\n0\r\nTrailer: t\r\n\r\n";
    let r = try_send(&sim, "POST", &stop, &chunked, Some(body)).unwrap();
    assert_eq!(
        (r.status, sim.take_requests()[0].json()),
        (200, Some(json!({"id": "x"})))
    );
}

#[test]
fn dropping_the_simulator_is_prompt_even_with_a_hung_request() {
    let sim = sim();
    sim.inject(FaultRule::new(
        None,
        None,
        1,
        Fault::Hang(Duration::from_secs(30)),
    ));
    let url = sim.url();
    let client = std::thread::spawn(move || {
        send(&url, "GET", MACHINES, &[], None, Duration::from_secs(5)).is_err()
    });
    assert!(wait_until(Duration::from_secs(2), || sim.in_flight() == 1));
    let t0 = Instant::now();
    drop(sim);
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(client.join().unwrap(), "the hung client gets no answer");
}
