//! Proves the Fly Machines API simulator (tests/support/simulator.rs) and the scripted HTTP
//! server (tests/support/fake_http.rs) behave as documented, by driving them over real HTTP
//! with ureq.

mod support;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::fake_http::{FakeServer, Reply};
use support::simulator::{Fault, FaultRule, MachineSpec, Simulator};

struct Resp {
    status: u16,
    body: String,
    retry_after: Option<String>,
    content_type: Option<String>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field: {}", self.body))
            .to_string()
    }
}

fn agent_with_timeout(timeout: Duration) -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build(),
    )
}

fn agent() -> ureq::Agent {
    agent_with_timeout(Duration::from_secs(10))
}

fn try_call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    body: Option<&str>,
    auth: Option<&str>,
) -> Result<Resp, ureq::Error> {
    let mut resp = match (method, body) {
        ("GET", _) => {
            let mut r = agent.get(url);
            if let Some(a) = auth {
                r = r.header("Authorization", a);
            }
            r.call()?
        }
        ("DELETE", _) => agent.delete(url).call()?,
        ("PUT", Some(b)) => agent
            .put(url)
            .header("Content-Type", "application/json")
            .send(b)?,
        ("POST", Some(b)) => {
            let mut r = agent.post(url).header("Content-Type", "application/json");
            if let Some(a) = auth {
                r = r.header("Authorization", a);
            }
            r.send(b)?
        }
        ("POST", None) => agent.post(url).send_empty()?,
        other => panic!("unsupported {other:?}"),
    };
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let retry_after = header("retry-after");
    let content_type = header("content-type");
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string()?;
    Ok(Resp {
        status,
        body,
        retry_after,
        content_type,
    })
}

fn call(agent: &ureq::Agent, method: &str, url: &str, body: Option<&str>) -> Resp {
    try_call(agent, method, url, body, None)
        .unwrap_or_else(|e| panic!("{method} {url} failed: {e}"))
}

/// Simulator with app `my-app` in org `my-org`.
fn sim() -> Simulator {
    let sim = Simulator::start();
    sim.add_app("my-org", "my-app");
    sim
}

fn machines_url(sim: &Simulator, app: &str) -> String {
    format!("{}/v1/apps/{app}/machines", sim.url())
}

fn create_body(extra: Value) -> String {
    let mut body = json!({
        "config": {
            "image": "registry.fly.io/my-app:deployment-1@sha256:abc123",
            "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256, "max_memory_mb": 1024},
            "metadata": {"fly_process_group": "app"},
            "volumes": [{"name": "data"}],
            "x_future_field": {"nested": [1, 2.5, null, "s"]},
            "init": {}
        },
        "region": "ord"
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    body.to_string()
}

#[test]
fn list_and_get_return_fixture_shaped_machines_in_insertion_order() {
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
        MachineSpec::new("created")
            .group(None)
            .host_status(Some("unknown")),
    );
    assert!(a < b && b < c, "ids sort in insertion order: {a} {b} {c}");
    for id in [&a, &b, &c] {
        assert_eq!(id.len(), 14);
        assert!(
            id.chars()
                .all(|ch| ch.is_ascii_hexdigit() && !ch.is_ascii_uppercase())
        );
    }

    let agent = agent();
    let r = call(&agent, "GET", &machines_url(&sim, "my-app"), None);
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    let list = r.json();
    let list = list.as_array().expect("array");
    let ids: Vec<&str> = list.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [a.as_str(), b.as_str(), c.as_str()]);

    let first = &list[0];
    assert_eq!(first["state"], "started");
    assert_eq!(first["region"], "iad");
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
    assert_eq!(list[1]["region"], "ord");
    assert!(
        list[2]["config"]["metadata"]
            .get("fly_process_group")
            .is_none()
    );
    assert_eq!(list[2]["host_status"], "unknown");

    let snap = sim.machines("my-app");
    assert_eq!(snap.len(), 3);
    assert_eq!(snap[1].process_group.as_deref(), Some("worker"));
    assert_eq!(snap[2].process_group, None);

    let got = call(
        &agent,
        "GET",
        &format!("{}/{b}", machines_url(&sim, "my-app")),
        None,
    );
    assert_eq!(got.status, 200);
    assert_eq!(Some(got.json()), sim.machine_json("my-app", &b));
    assert_eq!(got.json(), list[1]);
}

#[test]
fn unreachable_host_gets_incomplete_config_and_no_host_status_is_omitted() {
    let sim = sim();
    let u = sim.add_machine(
        "my-app",
        MachineSpec::new("stopped").host_status(Some("unreachable")),
    );
    let n = sim.add_machine("my-app", MachineSpec::new("started").host_status(None));
    let m = sim.machine_json("my-app", &u).unwrap();
    assert!(m.get("config").is_none());
    assert_eq!(
        m["incomplete_config"]["metadata"]["fly_process_group"],
        "app"
    );
    assert_eq!(m["host_status"], "unreachable");
    let m = sim.machine_json("my-app", &n).unwrap();
    assert!(m.get("host_status").is_none());
    assert!(m["config"].is_object());
}

#[test]
fn create_returns_200_created_and_stores_config_verbatim() {
    let sim = sim();
    let agent = agent();
    let body = create_body(json!({"name": "my-clone"}));
    let sent: Value = serde_json::from_str(&body).unwrap();
    let r = call(&agent, "POST", &machines_url(&sim, "my-app"), Some(&body));
    assert_eq!(r.status, 200, "{}", r.body);
    let created = r.json();
    assert_eq!(created["state"], "created");
    assert_eq!(created["region"], "ord");
    assert_eq!(created["name"], "my-clone");
    assert_eq!(created["host_status"], "ok");
    assert_eq!(created["config"], sent["config"]);
    assert_eq!(created["image_ref"]["registry"], "registry.fly.io");
    assert_eq!(created["image_ref"]["repository"], "my-app");
    assert_eq!(created["image_ref"]["tag"], "deployment-1");
    assert_eq!(created["image_ref"]["digest"], "sha256:abc123");
    let id = created["id"].as_str().unwrap().to_string();

    // Booting is immediate in the simulator: the next read shows `started`.
    let got = call(
        &agent,
        "GET",
        &format!("{}/{id}", machines_url(&sim, "my-app")),
        None,
    );
    assert_eq!(got.json()["state"], "started");
    assert_eq!(got.json()["config"], sent["config"]);
    let snap = sim.machines("my-app");
    assert_eq!(snap.len(), 1);
    assert_eq!(snap[0].state, "started");
    assert!(!snap[0].skip_launch);
    assert_eq!(
        snap[0].config["x_future_field"],
        json!({"nested": [1, 2.5, null, "s"]})
    );
    assert_eq!(snap[0].config["guest"]["max_memory_mb"], 1024);

    // Default region, lease nonce.
    let body = json!({"config": {"image": "nginx:1.27"}, "lease_ttl": 30}).to_string();
    let r = call(&agent, "POST", &machines_url(&sim, "my-app"), Some(&body));
    assert_eq!(r.status, 200);
    let created = r.json();
    assert_eq!(created["region"], "iad");
    assert!(created["nonce"].is_string());
    assert_eq!(created["image_ref"]["registry"], "registry-1.docker.io");
    assert_eq!(created["image_ref"]["repository"], "library/nginx");
    assert_eq!(created["image_ref"]["tag"], "1.27");
    assert!(
        created["image_ref"]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
}

#[test]
fn skip_launch_end_state_is_configurable() {
    let sim = sim();
    let agent = agent();
    let url = machines_url(&sim, "my-app");
    let r = call(
        &agent,
        "POST",
        &url,
        Some(&create_body(json!({"skip_launch": true}))),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["state"], "created");
    let snap = sim.machines("my-app");
    assert_eq!(snap[0].state, "stopped");
    assert!(snap[0].skip_launch);

    sim.set_skip_launch_state("created");
    let r = call(
        &agent,
        "POST",
        &url,
        Some(&create_body(json!({"skip_launch": true}))),
    );
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(sim.machine_json("my-app", &id).unwrap()["state"], "created");

    // skip_launch: false boots as usual.
    let r = call(
        &agent,
        "POST",
        &url,
        Some(&create_body(json!({"skip_launch": false}))),
    );
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(sim.machine_json("my-app", &id).unwrap()["state"], "started");
}

#[test]
fn start_stop_suspend_destroy_round_trips() {
    let sim = sim();
    let agent = agent();
    let id = sim.add_machine("my-app", MachineSpec::new("started"));
    let base = format!("{}/{id}", machines_url(&sim, "my-app"));

    // Stop with FAS's body (id + Go duration string).
    let stop_body = json!({"id": id, "timeout": "0s"}).to_string();
    let r = call(&agent, "POST", &format!("{base}/stop"), Some(&stop_body));
    assert_eq!((r.status, r.json()), (200, json!({"ok": true})));
    assert_eq!(sim.machines("my-app")[0].state, "stopped");
    let last = sim.requests().pop().unwrap();
    assert_eq!(last.path, format!("/v1/apps/my-app/machines/{id}/stop"));
    assert_eq!(last.json().unwrap()["timeout"], "0s");
    assert_eq!(last.header("content-type"), Some("application/json"));

    // Stopping again is a precondition failure.
    let r = call(&agent, "POST", &format!("{base}/stop"), None);
    assert_eq!(r.status, 412);
    assert!(r.error().starts_with("failed_precondition:"));

    let r = call(&agent, "POST", &format!("{base}/start"), None);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"previous_state": "stopped", "migrated": false, "new_host": ""})
    );
    assert_eq!(sim.machines("my-app")[0].state, "started");

    let r = call(&agent, "POST", &format!("{base}/start"), None);
    assert_eq!(r.status, 412);
    assert_eq!(
        r.error(),
        "failed_precondition: machine still active, refusing to start"
    );

    let r = call(&agent, "POST", &format!("{base}/suspend"), None);
    assert_eq!((r.status, r.json()), (200, json!({"ok": true})));
    assert_eq!(sim.machines("my-app")[0].state, "suspended");
    let r = call(&agent, "POST", &format!("{base}/start"), None);
    assert_eq!(r.json()["previous_state"], "suspended");

    // Stop with an integer timeout is accepted; a bogus duration is a 400.
    let r = call(
        &agent,
        "POST",
        &format!("{base}/stop"),
        Some(r#"{"timeout": "forever"}"#),
    );
    assert_eq!(r.status, 400);
    assert!(!r.error().is_empty());
    assert_eq!(sim.machines("my-app")[0].state, "started");
    let r = call(
        &agent,
        "POST",
        &format!("{base}/stop"),
        Some(r#"{"signal": "SIGTERM", "timeout": 5}"#),
    );
    assert_eq!(r.status, 200);
    let r = call(&agent, "POST", &format!("{base}/start"), None);
    assert_eq!(r.status, 200);

    // Destroying a started machine needs kill/force.
    let r = call(&agent, "DELETE", &base, None);
    assert_eq!(r.status, 412);
    assert_eq!(
        r.error(),
        "failed_precondition: unable to destroy machine, not currently stopped"
    );
    assert_eq!(sim.machines("my-app").len(), 1);
    let r = call(&agent, "DELETE", &format!("{base}?kill=true"), None);
    assert_eq!((r.status, r.json()), (200, json!({"ok": true})));
    assert!(sim.machines("my-app").is_empty());
    assert!(sim.machine_json("my-app", &id).is_none());

    let list = call(&agent, "GET", &machines_url(&sim, "my-app"), None).json();
    assert_eq!(list, json!([]));
    let all = call(
        &agent,
        "GET",
        &format!("{}?include_deleted=true", machines_url(&sim, "my-app")),
        None,
    )
    .json();
    assert_eq!(all[0]["id"], id.as_str());
    assert_eq!(all[0]["state"], "destroyed");

    let r = call(&agent, "GET", &base, None);
    assert_eq!(r.status, 404);
    assert_eq!(r.error(), "machine not found");
    let r = call(&agent, "POST", &format!("{base}/start"), None);
    assert_eq!(r.status, 404);
}

#[test]
fn destroy_accepts_force_and_kill_false_on_stopped_machines() {
    let sim = sim();
    let agent = agent();
    let started = sim.add_machine("my-app", MachineSpec::new("started"));
    let stopped = sim.add_machine("my-app", MachineSpec::new("stopped"));
    let suspended = sim.add_machine("my-app", MachineSpec::new("suspended"));
    let url = machines_url(&sim, "my-app");

    let r = call(
        &agent,
        "DELETE",
        &format!("{url}/{started}?force=true"),
        None,
    );
    assert_eq!(r.status, 200);
    let r = call(
        &agent,
        "DELETE",
        &format!("{url}/{stopped}?kill=false"),
        None,
    );
    assert_eq!(r.status, 200);
    let r = call(&agent, "DELETE", &format!("{url}/{suspended}"), None);
    assert_eq!(r.status, 200);
    assert!(sim.machines("my-app").is_empty());

    let other = sim.add_machine("my-app", MachineSpec::new("started"));
    let r = call(&agent, "DELETE", &format!("{url}/{other}?kill=maybe"), None);
    assert_eq!(r.status, 400);
    assert!(!r.error().is_empty());
    assert_eq!(sim.machines("my-app").len(), 1);
}

#[test]
fn errors_are_json_with_an_error_field() {
    let sim = sim();
    let agent = agent();
    let id = sim.add_machine("my-app", MachineSpec::new("started"));
    let url = machines_url(&sim, "my-app");
    let valid = create_body(json!({}));

    let cases: Vec<(&str, String, Option<&str>, u16)> = vec![
        ("GET", machines_url(&sim, "nope"), None, 404),
        ("GET", format!("{url}/ffffffffffffff"), None, 404),
        ("POST", url.clone(), Some("{not json"), 400),
        ("POST", url.clone(), Some("[]"), 400),
        ("POST", url.clone(), Some(r#"{"region": "ord"}"#), 400),
        (
            "POST",
            url.clone(),
            Some(r#"{"config": {"guest": {}}}"#),
            400,
        ),
        (
            "POST",
            url.clone(),
            Some(r#"{"config": {"image": 7}}"#),
            400,
        ),
        (
            "POST",
            url.clone(),
            Some(r#"{"config": {"image": "x"}, "skip_launch": "yes"}"#),
            400,
        ),
        (
            "POST",
            machines_url(&sim, "nope"),
            Some(valid.as_str()),
            404,
        ),
        ("POST", format!("{url}/{id}/stop"), Some("[1]"), 400),
        ("GET", format!("{}/v1/nothing-here", sim.url()), None, 404),
        ("GET", format!("{}/v1/apps", sim.url()), None, 400),
        (
            "GET",
            format!("{}/v1/apps?org_slug=unknown-org", sim.url()),
            None,
            404,
        ),
        ("PUT", url.clone(), Some("{}"), 405),
        ("GET", format!("{url}/{id}/start"), None, 405),
        ("GET", format!("{}/graphql", sim.url()), None, 405),
    ];
    for (method, u, body, status) in cases {
        let r = call(&agent, method, &u, body);
        assert_eq!(r.status, status, "{method} {u} {body:?}: {}", r.body);
        assert!(!r.error().is_empty(), "{method} {u}");
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
    }
    assert_eq!(
        call(&agent, "GET", &format!("{}/v1/x", sim.url()), None).error(),
        "not found"
    );
    // Nothing was created by the invalid requests.
    assert_eq!(sim.machines("my-app").len(), 1);
}

#[test]
fn list_filters_and_summary() {
    let sim = sim();
    let agent = agent();
    let a = sim.add_machine("my-app", MachineSpec::new("started"));
    let b = sim.add_machine("my-app", MachineSpec::new("stopped").region("ord"));
    let c = sim.add_machine(
        "my-app",
        MachineSpec::new("suspended").group(Some("worker")),
    );
    let url = machines_url(&sim, "my-app");
    let ids = |q: &str| -> Vec<String> {
        call(&agent, "GET", &format!("{url}?{q}"), None)
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids("region=ord"), [b.as_str()]);
    assert_eq!(ids("state=started,suspended"), [a.as_str(), c.as_str()]);
    assert_eq!(ids("metadata.fly_process_group=worker"), [c.as_str()]);
    assert_eq!(
        ids("metadata.fly_process_group=app&region=iad"),
        [a.as_str()]
    );
    // fly-go's `List(ctx, "started")` sends a valueless key: no filter at all.
    assert_eq!(ids("started"), [a.as_str(), b.as_str(), c.as_str()]);

    let summary = call(&agent, "GET", &format!("{url}?summary=true"), None).json();
    let first = &summary[0];
    assert_eq!(first["id"], a.as_str());
    for key in ["config", "checks", "events", "host_status"] {
        assert!(first.get(key).is_none(), "summary must omit {key}");
    }
    assert_eq!(first["state"], "started");
}

#[test]
fn org_app_list_and_get_app() {
    let sim = sim();
    sim.add_app("my-org", "my-app-staging");
    sim.add_app("other-org", "elsewhere");
    sim.add_machine("my-app", MachineSpec::new("started"));
    sim.add_machine("my-app", MachineSpec::new("stopped"));
    let agent = agent();
    let r = call(
        &agent,
        "GET",
        &format!("{}/v1/apps?org_slug=my-org", sim.url()),
        None,
    );
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["total_apps"], 2);
    assert_eq!(v["apps"][0]["name"], "my-app");
    assert_eq!(v["apps"][0]["machine_count"], 2);
    assert_eq!(v["apps"][0]["volume_count"], 0);
    assert_eq!(v["apps"][0]["network"], "default");
    assert!(v["apps"][0]["id"].is_string());
    assert_eq!(v["apps"][1]["name"], "my-app-staging");
    assert_eq!(v["apps"][1]["machine_count"], 0);

    let app = call(
        &agent,
        "GET",
        &format!("{}/v1/apps/my-app", sim.url()),
        None,
    )
    .json();
    assert_eq!(app["organization"]["slug"], "my-org");

    sim.remove_app("my-app-staging");
    let v = call(
        &agent,
        "GET",
        &format!("{}/v1/apps?org_slug=my-org", sim.url()),
        None,
    )
    .json();
    assert_eq!(v["total_apps"], 1);
    let r = call(&agent, "GET", &machines_url(&sim, "my-app-staging"), None);
    assert_eq!(r.status, 404);
}

const RELEASE_QUERY: &str = "query ($appName: String!) { app(name: $appName) { currentRelease: currentReleaseUnprocessed { id version description reason status imageRef stable user { id email name } createdAt } } }";

fn graphql(agent: &ureq::Agent, sim: &Simulator, query: &str, vars: Value) -> Resp {
    let body = json!({"query": query, "variables": vars}).to_string();
    call(
        agent,
        "POST",
        &format!("{}/graphql", sim.url()),
        Some(&body),
    )
}

#[test]
fn graphql_current_release_status_including_null_and_unknown_app() {
    let sim = sim();
    let agent = agent();
    let r = graphql(&agent, &sim, RELEASE_QUERY, json!({"appName": "my-app"}));
    assert_eq!(r.status, 200);
    let v = r.json();
    let rel = &v["data"]["app"]["currentRelease"];
    assert_eq!(rel["status"], "complete");
    assert!(rel["version"].is_u64());
    assert!(rel["createdAt"].is_string());
    assert!(v.get("errors").is_none());

    sim.set_release_status("my-app", Some("running"));
    let v = graphql(&agent, &sim, RELEASE_QUERY, json!({"appName": "my-app"})).json();
    assert_eq!(v["data"]["app"]["currentRelease"]["status"], "running");

    sim.set_release_status("my-app", None);
    let v = graphql(&agent, &sim, RELEASE_QUERY, json!({"appName": "my-app"})).json();
    assert!(v["data"]["app"].is_object());
    assert!(v["data"]["app"]["currentRelease"].is_null());

    let r = graphql(&agent, &sim, RELEASE_QUERY, json!({"appName": "ghost"}));
    assert_eq!(r.status, 200);
    let v = r.json();
    assert!(v["data"]["app"].is_null());
    assert_eq!(v["errors"][0]["message"], "Could not find App");
    assert_eq!(v["errors"][0]["extensions"]["code"], "NOT_FOUND");

    // Without the alias the key is the field name.
    let q =
        "query($appName: String!) { app(name: $appName) { currentReleaseUnprocessed { status } } }";
    sim.set_release_status("my-app", Some("failed"));
    let v = graphql(&agent, &sim, q, json!({"appName": "my-app"})).json();
    assert_eq!(
        v["data"]["app"]["currentReleaseUnprocessed"]["status"],
        "failed"
    );

    let reqs = sim.requests();
    assert_eq!(reqs[0].path, "/graphql");
    assert_eq!(reqs[0].json().unwrap()["variables"]["appName"], "my-app");
}

#[test]
fn graphql_organization_and_paginated_apps() {
    let sim = sim();
    for name in ["b-app", "c-app", "d-app"] {
        sim.add_app("my-org", name);
    }
    sim.add_app("other-org", "x-app");
    sim.set_release_status("c-app", None);
    let agent = agent();

    let q = "query($slug: String!) { organization(slug: $slug) { id internalNumericId slug rawSlug name type billable } }";
    let v = graphql(&agent, &sim, q, json!({"slug": "my-org"})).json();
    let org = &v["data"]["organization"];
    assert_eq!(org["slug"], "my-org");
    assert!(org["internalNumericId"].is_string(), "BigInt is a string");
    let org_id = org["id"].as_str().unwrap().to_string();
    let v = graphql(&agent, &sim, q, json!({"slug": "nope"})).json();
    assert!(v["data"]["organization"].is_null());
    assert_eq!(v["errors"][0]["extensions"]["code"], "NOT_FOUND");

    let apps_q = "query($org: ID, $role: String, $after: String) { apps(type: \"container\", first: 200, after: $after, organizationId: $org, role: $role) { pageInfo { hasNextPage endCursor } nodes { id name deployed hostname platformVersion organization { slug name } currentRelease { createdAt status } status } } }";
    let v = graphql(&agent, &sim, apps_q, json!({"org": org_id, "after": ""})).json();
    let names: Vec<&str> = v["data"]["apps"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["my-app", "b-app", "c-app", "d-app"]);
    assert_eq!(v["data"]["apps"]["pageInfo"]["hasNextPage"], false);
    assert!(v["data"]["apps"]["nodes"][2]["currentRelease"].is_null());
    assert_eq!(
        v["data"]["apps"]["nodes"][0]["organization"]["slug"],
        "my-org"
    );

    sim.set_graphql_apps_page_size(Some(3));
    let mut after = String::new();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let v = graphql(&agent, &sim, apps_q, json!({"org": org_id, "after": after})).json();
        let apps = &v["data"]["apps"];
        for n in apps["nodes"].as_array().unwrap() {
            seen.push(n["name"].as_str().unwrap().to_string());
        }
        pages += 1;
        if apps["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = apps["pageInfo"]["endCursor"].as_str().unwrap().to_string();
        assert!(pages < 5);
    }
    assert_eq!(pages, 2);
    assert_eq!(seen, ["my-app", "b-app", "c-app", "d-app"]);
}

#[test]
fn token_is_checked_when_set() {
    let sim = sim();
    sim.add_machine("my-app", MachineSpec::new("started"));
    let agent = agent();
    let url = machines_url(&sim, "my-app");
    // Default: anything goes.
    assert_eq!(call(&agent, "GET", &url, None).status, 200);

    sim.set_token(Some("FlyV1 fm2_secret"));
    let r = call(&agent, "GET", &url, None);
    assert_eq!(r.status, 401);
    assert!(!r.error().is_empty());
    let r = try_call(&agent, "GET", &url, None, Some("Bearer fm2_secret")).unwrap();
    assert_eq!(r.status, 401);
    let r = try_call(&agent, "GET", &url, None, Some("FlyV1 fm2_secret")).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        sim.requests().last().unwrap().header("AUTHORIZATION"),
        Some("FlyV1 fm2_secret")
    );

    let body = json!({"query": RELEASE_QUERY, "variables": {"appName": "my-app"}}).to_string();
    let gql = format!("{}/graphql", sim.url());
    let v = try_call(&agent, "POST", &gql, Some(&body), None)
        .unwrap()
        .json();
    assert_eq!(v["errors"][0]["extensions"]["code"], "UNAUTHORIZED");
    let v = try_call(&agent, "POST", &gql, Some(&body), Some("FlyV1 fm2_secret"))
        .unwrap()
        .json();
    assert_eq!(v["data"]["app"]["currentRelease"]["status"], "complete");
}

#[test]
fn status_fault_with_retry_after_does_not_change_state_and_expires() {
    let sim = sim();
    let agent = agent();
    let url = machines_url(&sim, "my-app");
    let capacity = r#"{"error": "could not reserve resource for machine: insufficient memory available to fulfill request", "status": "insufficient_capacity"}"#;
    sim.inject(FaultRule::new(
        Some("post"),
        Some("/machines"),
        1,
        Fault::status(503, capacity),
    ));
    sim.inject(FaultRule {
        method: Some("GET".into()),
        path_contains: Some("/machines".into()),
        times: 2,
        fault: Fault::Status {
            code: 429,
            body: r#"{"error":"rate limit exceeded"}"#.into(),
            retry_after: Some("1".into()),
        },
    });

    let r = call(&agent, "POST", &url, Some(&create_body(json!({}))));
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["status"], "insufficient_capacity");
    assert!(
        sim.machines("my-app").is_empty(),
        "faulted create must not create"
    );
    let r = call(&agent, "POST", &url, Some(&create_body(json!({}))));
    assert_eq!(r.status, 200, "the rule applied only once");
    assert_eq!(sim.machines("my-app").len(), 1);

    for _ in 0..2 {
        let r = call(&agent, "GET", &url, None);
        assert_eq!(r.status, 429);
        assert_eq!(r.retry_after.as_deref(), Some("1"));
        assert_eq!(r.error(), "rate limit exceeded");
    }
    assert_eq!(call(&agent, "GET", &url, None).status, 200);
    // Every request is recorded, faulted or not.
    assert_eq!(sim.take_requests().len(), 5);
    assert!(sim.requests().is_empty());

    sim.inject(FaultRule::new(
        None,
        None,
        10,
        Fault::status(500, "<html>oops</html>"),
    ));
    let r = call(&agent, "GET", &url, None);
    assert_eq!(r.status, 500);
    assert!(r.content_type.unwrap().starts_with("text/plain"));
    sim.clear_faults();
    assert_eq!(call(&agent, "GET", &url, None).status, 200);
}

#[test]
fn malformed_json_fault() {
    let sim = sim();
    let id = sim.add_machine("my-app", MachineSpec::new("stopped"));
    let agent = agent();
    sim.inject(FaultRule::new(
        None,
        Some("/start"),
        1,
        Fault::MalformedJson,
    ));
    let r = call(
        &agent,
        "POST",
        &format!("{}/{id}/start", machines_url(&sim, "my-app")),
        None,
    );
    assert_eq!(r.status, 200);
    assert!(
        serde_json::from_str::<Value>(&r.body).is_err(),
        "{}",
        r.body
    );
    assert_eq!(
        sim.machines("my-app")[0].state,
        "stopped",
        "no state change"
    );
}

#[test]
fn hang_fault_times_out_the_client_then_applies() {
    let sim = sim();
    let id = sim.add_machine("my-app", MachineSpec::new("stopped"));
    sim.inject(FaultRule::new(
        Some("POST"),
        Some("/start"),
        1,
        Fault::Hang(Duration::from_millis(600)),
    ));
    let impatient = agent_with_timeout(Duration::from_millis(200));
    let t0 = Instant::now();
    let res = try_call(
        &impatient,
        "POST",
        &format!("{}/{id}/start", machines_url(&sim, "my-app")),
        None,
        None,
    );
    assert!(res.is_err(), "client should time out");
    assert!(t0.elapsed() < Duration::from_millis(550));
    assert_eq!(sim.machines("my-app")[0].state, "stopped");
    // The hung request is handled normally once the hang ends.
    let deadline = Instant::now() + Duration::from_secs(3);
    while sim.machines("my-app")[0].state != "started" {
        assert!(Instant::now() < deadline, "hung start never applied");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn drop_fault_is_a_transport_error_and_changes_nothing() {
    let sim = sim();
    let id = sim.add_machine("my-app", MachineSpec::new("started"));
    sim.inject(FaultRule::new(Some("DELETE"), None, 1, Fault::Drop));
    let agent = agent();
    let url = format!("{}/{id}?kill=true", machines_url(&sim, "my-app"));
    let t0 = Instant::now();
    let res = try_call(&agent, "DELETE", &url, None, None);
    assert!(
        res.is_err(),
        "expected a transport error, got {:?}",
        res.map(|r| r.status)
    );
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "drop must be immediate"
    );
    assert_eq!(sim.machines("my-app").len(), 1);
    assert_eq!(sim.requests().len(), 1);
    // The next request works (fresh connection).
    assert_eq!(call(&agent, "DELETE", &url, None).status, 200);
    assert!(sim.machines("my-app").is_empty());
}

#[test]
fn latency_and_max_in_flight_with_concurrent_requests() {
    let sim = Arc::new(sim());
    sim.add_machine("my-app", MachineSpec::new("started"));
    sim.set_latency(Duration::from_millis(400));
    assert_eq!(sim.max_in_flight(), 0);
    let n = 8;
    let barrier = Arc::new(Barrier::new(n));
    let t0 = Instant::now();
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let sim = Arc::clone(&sim);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let agent = agent();
                barrier.wait();
                let r = call(&agent, "GET", &machines_url(&sim, "my-app"), None);
                assert_eq!(r.status, 200);
            })
        })
        .collect();
    // While the requests are sleeping they are in flight.
    let deadline = Instant::now() + Duration::from_secs(2);
    while sim.in_flight() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(sim.in_flight() > 0);
    for h in handles {
        h.join().unwrap();
    }
    let elapsed = t0.elapsed();
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_millis(400 * n as u64 / 2),
        "requests were serialised: {elapsed:?}"
    );
    assert_eq!(sim.max_in_flight(), n);
    assert_eq!(sim.in_flight(), 0);
    sim.reset_max_in_flight();
    assert_eq!(sim.max_in_flight(), 0);

    sim.set_latency(Duration::ZERO);
    let agent = agent();
    call(&agent, "GET", &machines_url(&sim, "my-app"), None);
    assert_eq!(sim.max_in_flight(), 1);
}

#[test]
fn rate_limit_per_action_and_id() {
    let sim = sim();
    sim.add_app("my-org", "other");
    let id = sim.add_machine("my-app", MachineSpec::new("started"));
    let agent = agent();
    let url = machines_url(&sim, "my-app");

    // Off by default.
    for _ in 0..5 {
        assert_eq!(call(&agent, "GET", &url, None).status, 200);
    }
    sim.set_rate_limit(true);
    for _ in 0..3 {
        assert_eq!(call(&agent, "GET", &url, None).status, 200);
    }
    let r = call(&agent, "GET", &url, None);
    assert_eq!(r.status, 429);
    assert_eq!(r.json(), json!({"error": "rate limit exceeded"}));
    // Another app and another action have their own buckets.
    assert_eq!(
        call(&agent, "GET", &machines_url(&sim, "other"), None).status,
        200
    );
    for i in 0..10 {
        let r = call(&agent, "GET", &format!("{url}/{id}"), None);
        assert_eq!(r.status, 200, "get #{i}");
    }
    assert_eq!(
        call(&agent, "GET", &format!("{url}/{id}"), None).status,
        429
    );
    // Refill: one list token after ~1 s.
    std::thread::sleep(Duration::from_millis(1050));
    assert_eq!(call(&agent, "GET", &url, None).status, 200);
    assert_eq!(call(&agent, "GET", &url, None).status, 429);
    // A rate-limited stop changes nothing.
    for _ in 0..3 {
        call(&agent, "POST", &format!("{url}/{id}/suspend"), None);
    }
    sim.set_machine_state("my-app", &id, "started");
    let before = sim.machines("my-app")[0].state.clone();
    assert_eq!(
        call(&agent, "POST", &format!("{url}/{id}/suspend"), None).status,
        429
    );
    assert_eq!(sim.machines("my-app")[0].state, before);
}

#[test]
fn wait_endpoint() {
    let sim = sim();
    let id = sim.add_machine("my-app", MachineSpec::new("stopped"));
    let agent = agent();
    let base = format!("{}/{id}", machines_url(&sim, "my-app"));
    let r = call(
        &agent,
        "GET",
        &format!("{base}/wait?state=stopped&timeout=1"),
        None,
    );
    assert_eq!((r.status, r.json()), (200, json!({"ok": true})));
    let t0 = Instant::now();
    let r = call(
        &agent,
        "GET",
        &format!("{base}/wait?state=started&timeout=1"),
        None,
    );
    assert_eq!(r.status, 408);
    assert!(r.error().starts_with("deadline_exceeded"));
    assert!(t0.elapsed() >= Duration::from_millis(900));
    let r = call(&agent, "GET", &format!("{base}/wait?state=bogus"), None);
    assert_eq!(r.status, 400);
}

#[test]
fn recorded_requests_carry_method_path_query_headers_body() {
    let sim = sim();
    let agent = agent();
    call(
        &agent,
        "GET",
        &format!(
            "{}?region=ord&metadata.fly_process_group=a%20b",
            machines_url(&sim, "my-app")
        ),
        None,
    );
    let body = create_body(json!({}));
    call(&agent, "POST", &machines_url(&sim, "my-app"), Some(&body));
    let reqs = sim.take_requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(reqs[0].path, "/v1/apps/my-app/machines");
    assert_eq!(reqs[0].query, "region=ord&metadata.fly_process_group=a%20b");
    assert_eq!(
        reqs[0].query_param("metadata.fly_process_group").as_deref(),
        Some("a b")
    );
    assert_eq!(reqs[0].body, "");
    assert!(reqs[0].json().is_none());
    assert_eq!(reqs[1].method, "POST");
    assert_eq!(reqs[1].body, body);
    assert_eq!(reqs[1].header("Content-Type"), Some("application/json"));
    assert!(reqs[1].at >= reqs[0].at);
}

#[test]
fn simulator_drop_is_prompt_even_with_a_hung_request() {
    let sim = sim();
    sim.inject(FaultRule::new(
        None,
        None,
        1,
        Fault::Hang(Duration::from_secs(30)),
    ));
    let url = machines_url(&sim, "my-app");
    let client = std::thread::spawn(move || {
        let agent = agent_with_timeout(Duration::from_secs(5));
        try_call(&agent, "GET", &url, None, None).is_err()
    });
    let deadline = Instant::now() + Duration::from_secs(2);
    while sim.in_flight() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(sim.in_flight(), 1);
    let t0 = Instant::now();
    drop(sim);
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(client.join().unwrap(), "the hung client gets an error");
}

#[test]
fn fake_server_scripts_status_body_delay_and_drop() {
    let server = FakeServer::start(|rq| match rq.path.as_str() {
        "/api/v1/query" => Reply::json(
            422,
            r#"{"status":"error","errorType":"execution","error":"boom"}"#,
        ),
        "/html" => Reply::text(
            502,
            "text/html",
            "<html><body>502 Bad Gateway</body></html>",
        )
        .header("X-Proxy", "fly"),
        "/slow" => Reply::json(200, r#"{"slow":true}"#).delayed(Duration::from_millis(800)),
        "/drop" => Reply::dropped(),
        _ => Reply::text(404, "text/plain", "nope"),
    });
    let agent = agent();

    let r = call(
        &agent,
        "GET",
        &format!("{}/api/v1/query?query=up", server.url()),
        None,
    );
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["errorType"], "execution");
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    let r = call(&agent, "GET", &format!("{}/html", server.url()), None);
    assert_eq!(r.status, 502);
    assert_eq!(r.content_type.as_deref(), Some("text/html"));
    assert!(r.body.contains("Bad Gateway"));

    // A delayed reply does not block another request.
    let slow_url = format!("{}/slow", server.url());
    let slow = std::thread::spawn(move || {
        let t0 = Instant::now();
        let r = call(
            &agent_with_timeout(Duration::from_secs(5)),
            "GET",
            &slow_url,
            None,
        );
        (r.status, t0.elapsed())
    });
    let deadline = Instant::now() + Duration::from_secs(2);
    while !server.requests().iter().any(|r| r.path == "/slow") {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    let t0 = Instant::now();
    let r = call(&agent, "GET", &format!("{}/fast", server.url()), None);
    assert_eq!(r.status, 404);
    assert!(
        t0.elapsed() < Duration::from_millis(400),
        "{:?}",
        t0.elapsed()
    );
    let (status, took) = slow.join().unwrap();
    assert_eq!(status, 200);
    assert!(took >= Duration::from_millis(700), "{took:?}");

    let res = try_call(&agent, "GET", &format!("{}/drop", server.url()), None, None);
    assert!(res.is_err());

    let reqs = server.requests();
    assert_eq!(reqs.len(), 5);
    assert_eq!(reqs[0].query, "query=up");
    assert_eq!(reqs[4].path, "/drop");
}

#[test]
fn fake_server_drop_returns_promptly_while_a_handler_sleeps() {
    let server = FakeServer::start(|rq| {
        if rq.path == "/sleepy" {
            // A handler that blocks by itself (not through `delayed`).
            std::thread::sleep(Duration::from_millis(1500));
        }
        Reply::json(200, "{}").delayed(Duration::from_secs(20))
    });
    let url = format!("{}/sleepy", server.url());
    let client = std::thread::spawn(move || {
        try_call(
            &agent_with_timeout(Duration::from_secs(5)),
            "GET",
            &url,
            None,
            None,
        )
        .is_err()
    });
    let deadline = Instant::now() + Duration::from_secs(2);
    while server.requests().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(server.requests().len(), 1);
    let t0 = Instant::now();
    drop(server);
    assert!(
        t0.elapsed() < Duration::from_millis(800),
        "{:?}",
        t0.elapsed()
    );
    assert!(
        client.join().unwrap(),
        "the sleeping request ends with an error"
    );
}
