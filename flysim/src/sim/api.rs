//! Request handling: faults, the token check, routing and each endpoint.

use std::sync::atomic::Ordering;

use serde_json::{Map, Value, json};

use super::machine::{DEFAULT_IMAGE, Machine, Seed, default_config};
use super::{App, Fault, Shared, State};
use crate::http::{Outcome, RecordedRequest, ServerCtx};
use crate::util::{Rng, is_go_duration, now_ms, parse_query};

/// The deploy guard's query as fly-go sends it (whitespace compacted), reference §8.3.
const CURRENT_RELEASE_QUERY: &str = "query ($appName: String!) { app(name: $appName) { currentRelease: currentReleaseUnprocessed { id version description reason status imageRef stable user { id email name } createdAt } } }";

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn raw(status: u16, content_type: &str, body: String) -> Resp {
        Resp {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body,
        }
    }

    fn json(status: u16, v: &Value) -> Resp {
        Resp::raw(status, "application/json", v.to_string())
    }

    fn error(status: u16, msg: &str) -> Resp {
        Resp::json(status, &json!({ "error": msg }))
    }

    fn ok() -> Resp {
        Resp::json(200, &json!({"ok": true}))
    }

    fn graphql_error(message: &str, code: &str) -> Resp {
        Resp::json(
            200,
            &json!({"data": null, "errors": [{"message": message, "extensions": {"code": code}}]}),
        )
    }
}

#[derive(Clone, Copy)]
enum Action {
    Start,
    Stop,
    Suspend,
}

enum Route<'a> {
    ListApps,
    ListMachines(&'a str),
    CreateMachine(&'a str),
    GetMachine(&'a str, &'a str),
    DestroyMachine(&'a str, &'a str),
    Act(&'a str, &'a str, Action),
    GraphQl,
    MethodNotAllowed(&'static str),
    NotFound,
}

impl Route<'_> {
    /// The query parameters this endpoint takes.
    fn params(&self) -> &'static [&'static str] {
        match self {
            Route::ListApps => &["org_slug"],
            Route::DestroyMachine(..) => &["kill", "force"],
            _ => &[],
        }
    }
}

fn route<'a>(method: &str, path: &'a str) -> Route<'a> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let allow = |allowed: &'static str, route: Route<'a>| {
        if allowed.split(", ").any(|m| m == method) {
            route
        } else {
            Route::MethodNotAllowed(allowed)
        }
    };
    match segments[..] {
        ["graphql"] => allow("POST", Route::GraphQl),
        ["v1", "apps"] => allow("GET", Route::ListApps),
        ["v1", "apps", app, "machines"] => match method {
            "GET" => Route::ListMachines(app),
            "POST" => Route::CreateMachine(app),
            _ => Route::MethodNotAllowed("GET, POST"),
        },
        ["v1", "apps", app, "machines", id] => match method {
            "GET" => Route::GetMachine(app, id),
            "DELETE" => Route::DestroyMachine(app, id),
            _ => Route::MethodNotAllowed("GET, DELETE"),
        },
        ["v1", "apps", app, "machines", id, action] => {
            let action = match action {
                "start" => Action::Start,
                "stop" => Action::Stop,
                "suspend" => Action::Suspend,
                _ => return Route::NotFound,
            };
            allow("POST", Route::Act(app, id, action))
        }
        _ => Route::NotFound,
    }
}

struct InFlight<'a>(&'a Shared);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shared {
    pub(super) fn handle(&self, rq: &RecordedRequest, ctx: &ServerCtx) -> Outcome {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let _in_flight = InFlight(self);
        let latency = self.state().latency;
        if !ctx.sleep(latency) {
            return Outcome::Drop;
        }
        let fault = self.state().take_fault(rq);
        let resp = match fault {
            None => self.answer(rq),
            Some(Fault::Status {
                code,
                body,
                retry_after,
            }) => {
                let content_type = if body.trim_start().starts_with(['{', '[']) {
                    "application/json"
                } else {
                    "text/plain; charset=utf-8"
                };
                let mut resp = Resp::raw(code, content_type, body);
                resp.headers
                    .extend(retry_after.map(|ra| ("Retry-After".to_string(), ra)));
                resp
            }
            Some(Fault::MalformedJson) => {
                let truncated = r#"{"id": "7814000000, "state": "star"#;
                Resp::raw(200, "application/json", truncated.to_string())
            }
            Some(Fault::Hang(d)) if ctx.sleep(d) => self.answer(rq),
            Some(Fault::Hang(_) | Fault::Drop) => return Outcome::Drop,
            Some(Fault::DropAfter) => {
                self.answer(rq);
                return Outcome::Drop;
            }
            Some(Fault::Redirect { code, location }) => Resp {
                status: code,
                headers: vec![("Location".to_string(), location)],
                body: String::new(),
            },
            Some(Fault::HugeList(n)) => Resp::raw(200, "application/json", huge_list(n)),
        };
        Outcome::Respond {
            status: resp.status,
            headers: resp.headers,
            body: resp.body,
        }
    }

    /// The simulator's own answer, with the `fly-request-id` the API adds.
    fn answer(&self, rq: &RecordedRequest) -> Resp {
        let mut resp = self.dispatch(rq);
        let seq = self.request_seq.fetch_add(1, Ordering::SeqCst);
        resp.headers.push((
            "fly-request-id".to_string(),
            format!("01sim{:011x}{seq:06x}", now_ms()),
        ));
        resp
    }

    fn dispatch(&self, rq: &RecordedRequest) -> Resp {
        let route = route(&rq.method, &rq.path);
        let mut st = self.state();
        if let Some(token) = &st.token {
            if rq.header("authorization") != Some(token.as_str()) {
                return match route {
                    Route::GraphQl => Resp::graphql_error(
                        "You must be authenticated to view this.",
                        "UNAUTHORIZED",
                    ),
                    _ => Resp::error(401, "unauthorized"),
                };
            }
        }
        let resp = match route {
            Route::NotFound => Resp::error(404, "not found"),
            Route::MethodNotAllowed(allow) => {
                let mut r = Resp::error(405, "method not allowed");
                r.headers.push(("Allow".into(), allow.into()));
                r
            }
            route => endpoint(&mut st, &route, rq),
        };
        // A zero transition time completes at once.
        st.settle();
        resp
    }
}

fn endpoint(st: &mut State, route: &Route<'_>, rq: &RecordedRequest) -> Resp {
    let params = parse_query(&rq.query);
    if let Some((k, _)) = params
        .iter()
        .find(|(k, _)| !route.params().contains(&k.as_str()))
    {
        return Resp::error(
            400,
            &format!("invalid_argument: the simulator does not take query parameter {k:?} here"),
        );
    }
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let transition = st.transition;
    match *route {
        Route::GraphQl => graphql(st, &rq.body),
        Route::ListApps => list_apps(st, param("org_slug")),
        Route::ListMachines(app) => with_app(st, app, |a| {
            let list = a.machines.iter().map(|m| m.json().clone()).collect();
            Resp::json(200, &Value::Array(list))
        }),
        Route::CreateMachine(app) => create_machine(st, app, &rq.body),
        Route::GetMachine(app, id) => with_machine(st, app, id, |m| Resp::json(200, m.json())),
        Route::DestroyMachine(app, id) => {
            let mut force = false;
            for key in ["kill", "force"] {
                match param(key).map(parse_go_bool) {
                    None => {}
                    Some(Some(b)) => force |= b,
                    Some(None) => {
                        return Resp::error(
                            400,
                            &format!("invalid_argument: invalid value for {key}"),
                        );
                    }
                }
            }
            with_machine(st, app, id, |m| destroy(m, force, transition))
        }
        Route::Act(app, id, action) => {
            if let (Action::Stop, Err(resp)) = (action, check_stop_body(&rq.body)) {
                return resp;
            }
            with_machine(st, app, id, |m| act(m, action, transition))
        }
        Route::NotFound | Route::MethodNotAllowed(_) => unreachable!("answered by dispatch"),
    }
}

fn with_app(st: &mut State, app: &str, f: impl FnOnce(&mut App) -> Resp) -> Resp {
    match st.app_by_name_mut(app) {
        Some(a) => f(a),
        None => Resp::error(404, "app not found"),
    }
}

fn with_machine(st: &mut State, app: &str, id: &str, f: impl FnOnce(&mut Machine) -> Resp) -> Resp {
    with_app(st, app, |a| match a.machine_mut(id) {
        Some(m) => f(m),
        None => Resp::error(404, "machine not found"),
    })
}

fn precondition(action: &str, state: &str) -> Resp {
    Resp::error(
        412,
        &format!("failed_precondition: unable to {action} machine from current state: '{state}'"),
    )
}

fn act(m: &mut Machine, action: Action, transition: std::time::Duration) -> Resp {
    let state = m.state().to_string();
    match (action, state.as_str()) {
        (Action::Start, "stopped" | "created" | "suspended" | "failed") => {
            m.begin("starting", Some("started"), transition);
            Resp::json(
                200,
                &json!({"previous_state": state, "migrated": false, "new_host": ""}),
            )
        }
        (Action::Start, "started") => Resp::error(
            412,
            "failed_precondition: machine still active, refusing to start",
        ),
        (Action::Start, "replacing") => Resp::error(
            412,
            "failed_precondition: machine getting replaced, refusing to start",
        ),
        (Action::Start, other) => precondition("start", other),
        // Stopping a suspended machine discards its snapshot (DOCS).
        (Action::Stop, "started" | "suspended") => {
            m.begin("stopping", Some("stopped"), transition);
            Resp::ok()
        }
        (Action::Stop, other) => precondition("stop", other),
        (Action::Suspend, "started") => {
            m.begin("suspending", Some("suspended"), transition);
            Resp::ok()
        }
        (Action::Suspend, other) => precondition("suspend", other),
    }
}

fn destroy(m: &mut Machine, force: bool, transition: std::time::Duration) -> Resp {
    let stopped = matches!(m.state(), "stopped" | "suspended" | "created" | "failed");
    if !force && !stopped {
        return Resp::error(
            412,
            "failed_precondition: unable to destroy machine, not currently stopped",
        );
    }
    m.begin("destroying", None, transition);
    Resp::ok()
}

/// A stop body, when there is one: `id` and `signal` strings, `timeout` a number or a Go
/// duration string (fly-go sends `{"id": …, "timeout": "0s"}`, gotcha G4).
fn check_stop_body(body: &str) -> Result<(), Resp> {
    if body.trim().is_empty() {
        return Ok(());
    }
    let obj = json_object(body)?;
    for key in ["id", "signal"] {
        if !matches!(obj.get(key), None | Some(Value::Null | Value::String(_))) {
            return Err(Resp::error(
                400,
                &format!("invalid_argument: {key} must be a string"),
            ));
        }
    }
    match obj.get("timeout") {
        None | Some(Value::Null | Value::Number(_)) => Ok(()),
        Some(Value::String(s)) if is_go_duration(s) => Ok(()),
        Some(other) => Err(Resp::error(
            400,
            &format!("invalid_argument: invalid stop timeout: {other}"),
        )),
    }
}

/// A request body that must be a JSON object, or the API's 400 answer.
fn json_object(body: &str) -> Result<Map<String, Value>, Resp> {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(_) => Err(Resp::error(
            400,
            "invalid_argument: request body must be a JSON object",
        )),
        Err(e) => Err(Resp::error(
            400,
            &format!("invalid_argument: invalid JSON body: {e}"),
        )),
    }
}

fn create_machine(st: &mut State, app: &str, body: &str) -> Resp {
    let obj = match json_object(body) {
        Ok(obj) => obj,
        Err(resp) => return resp,
    };
    let invalid = |what: &str| Resp::error(400, &format!("invalid_argument: {what}"));
    let Some(config @ Value::Object(_)) = obj.get("config") else {
        return invalid("config is required and must be an object");
    };
    let image = match config.get("image") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        _ => return invalid("config.image is required"),
    };
    let optional_string = |key: &str| match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str()).filter(|s| !s.is_empty())),
        Some(_) => Err(invalid(&format!("{key} must be a string"))),
    };
    let (region, name) = match (optional_string("region"), optional_string("name")) {
        (Ok(r), Ok(n)) => (r.unwrap_or("iad"), n),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let skip_launch = match obj.get("skip_launch") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return invalid("skip_launch must be a boolean"),
    };
    let seed = Seed {
        id: st.next_machine_id(),
        name,
        state: "created",
        region,
        image: &image,
        config: config.clone(),
        host_status: Some("ok"),
    };
    let mut m = Machine::generated(seed, &mut st.rng);
    let created = Resp::json(200, m.json());
    let (transient, end) = if skip_launch {
        ("created", "stopped")
    } else {
        ("starting", "started")
    };
    m.begin(transient, Some(end), st.transition);
    with_app(st, app, |a| {
        a.machines.push(m);
        created
    })
}

fn list_apps(st: &State, org: Option<&str>) -> Resp {
    let Some(org) = org.filter(|s| !s.is_empty()) else {
        return Resp::error(400, "invalid_argument: org_slug is required");
    };
    if !st.orgs.iter().any(|o| o == org) {
        return Resp::error(404, "organization not found");
    }
    let apps: Vec<Value> = st
        .apps
        .iter()
        .filter(|a| a.org == org)
        .map(|a| {
            json!({
                "id": a.id,
                "name": a.name,
                "machine_count": a.machines.len(),
                "volume_count": 0,
                "network": "default",
            })
        })
        .collect();
    Resp::json(200, &json!({"total_apps": apps.len(), "apps": apps}))
}

fn graphql(st: &State, body: &str) -> Resp {
    let bad = |msg: String| Resp::json(400, &json!({"errors": [{"message": msg}]}));
    let req: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(e) => return bad(format!("invalid JSON body: {e}")),
    };
    let Some(query) = req.get("query").and_then(Value::as_str) else {
        return bad("No query string was present".to_string());
    };
    if query.split_whitespace().collect::<Vec<_>>().join(" ") != CURRENT_RELEASE_QUERY {
        return Resp::graphql_error(
            &format!("the simulator answers only the current-release query, not {query:?}"),
            "INVALID",
        );
    }
    let name = req["variables"]["appName"].as_str().unwrap_or("");
    let Some(app) = st.app(name) else {
        return Resp::json(
            200,
            &json!({"data": {"app": null}, "errors": [{
                "message": "Could not find App", "path": ["app"], "extensions": {"code": "NOT_FOUND"}
            }]}),
        );
    };
    let release = app.release.as_ref().map_or(Value::Null, |status| {
        let image = app
            .machines
            .iter()
            .find_map(|m| m.json().get("config")?.get("image")?.as_str())
            .unwrap_or(DEFAULT_IMAGE);
        json!({
            "id": "Qz8rLmNoPqRsTuVwXyZ0aB1c",
            "version": 42,
            "description": format!("Deploy image {image}"),
            "reason": "deploy",
            "status": status,
            "imageRef": image,
            "stable": status == "complete",
            "user": {"id": "Dq1wE2rT3yU4", "email": "ops@example.com", "name": "Ops Bot"},
            "createdAt": app.release_created_at,
        })
    });
    Resp::json(200, &json!({"data": {"app": {"currentRelease": release}}}))
}

/// Go's `strconv.ParseBool`, which fly-go's `kill=` values come from.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// A list of `n` started machines with distinct ids, built from one template.
fn huge_list(n: usize) -> String {
    let seed = Seed {
        id: String::new(),
        name: None,
        state: "started",
        region: "iad",
        image: DEFAULT_IMAGE,
        config: default_config(DEFAULT_IMAGE, Some("app"), "iad"),
        host_status: Some("ok"),
    };
    let mut template = Machine::generated(seed, &mut Rng::seeded()).json().clone();
    let machines: Vec<Value> = (0..n)
        .map(|i| {
            template["id"] = json!(format!("b16{i:011x}"));
            template["name"] = json!(format!("huge-list-{i}"));
            template.clone()
        })
        .collect();
    Value::Array(machines).to_string()
}
