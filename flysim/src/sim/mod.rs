//! A stateful simulator of the Fly Machines REST API, limited to what fly-autoscaler calls,
//! served over real HTTP on loopback. The wire format follows
//! `../shared/reference/machines-api.md`.
//!
//! # Endpoints
//!
//! `GET /v1/apps?org_slug=`, `GET|POST /v1/apps/{app}/machines`,
//! `GET|DELETE /v1/apps/{app}/machines/{id}` (`?kill=` or `?force=`),
//! `POST /v1/apps/{app}/machines/{id}/{start,stop,suspend}`, and on `POST /graphql` only the
//! deploy guard's current-release query. Any other path is `404`, another method `405`, and a
//! query parameter an endpoint does not take `400`: the simulator checks the client, so it
//! refuses what it does not model rather than ignore it.
//!
//! # Modelling choices
//!
//! * **Transitions** take [`Simulator::set_transition_time`] (default zero: immediate). Start
//!   passes through `starting`, stop `stopping`, suspend `suspending`, destroy `destroying`
//!   (then the machine is gone: `404`), create `starting` (or `created` with `skip_launch`).
//!   A create answers `state: "created"` whatever the transition time, like the API (§3.3,
//!   G6). A `skip_launch` machine ends `stopped`, flyctl's reading of G7.
//! * **Invalid transitions** answer `412` with the API's gRPC-style messages, e.g.
//!   `failed_precondition: machine still active, refusing to start` and `failed_precondition:
//!   unable to destroy machine, not currently stopped` (without `kill`/`force`: only
//!   `stopped`, `suspended`, `created` and `failed` machines). These bodies are quoted from the
//!   live API in public code; the stop and suspend messages mirror the start one (no source).
//! * **Not found**: `404 {"error": "app not found"}` / `{"error": "machine not found"}`.
//! * **Token**: with [`Simulator::set_token`], REST requests without that exact
//!   `Authorization` get `401 {"error": "unauthorized"}`, GraphQL requests `200` with an
//!   `UNAUTHORIZED` error.
//! * **Raw machines** ([`Simulator::add_raw_machine`]) are listed verbatim; actions find them
//!   by `id` (the first match) and change only their `state`.

mod api;
mod machine;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::http::{Handler, HttpServer, RecordedRequest, lock};
use crate::util::{Rng, fnv1a, now_ms, rfc3339};
use machine::{DEFAULT_IMAGE, Machine, Seed, default_config, process_group};

/// Which requests a fault applies to, and how many times.
#[derive(Debug, Clone)]
pub struct FaultRule {
    /// HTTP method to match (case-insensitive); `None` matches every method.
    pub method: Option<String>,
    /// Substring of the request target (path plus `?query`); `None` matches every target.
    pub path_contains: Option<String>,
    /// The rule applies to this many matching requests, then expires.
    pub times: usize,
    pub fault: Fault,
}

impl FaultRule {
    pub fn new(
        method: Option<&str>,
        path_contains: Option<&str>,
        times: usize,
        fault: Fault,
    ) -> Self {
        FaultRule {
            method: method.map(str::to_string),
            path_contains: path_contains.map(str::to_string),
            times,
            fault,
        }
    }

    fn matches(&self, rq: &RecordedRequest) -> bool {
        let target = format!("{}?{}", rq.path, rq.query);
        self.method
            .as_ref()
            .is_none_or(|m| m.eq_ignore_ascii_case(&rq.method))
            && self
                .path_contains
                .as_ref()
                .is_none_or(|p| target.contains(p.as_str()))
    }
}

/// A failure answered instead of (or around) the simulator's normal handling.
#[derive(Debug, Clone)]
pub enum Fault {
    /// A canned answer, nothing carried out. `Content-Type` is `application/json` when the
    /// body looks like JSON, else `text/plain`; `retry_after` adds a `Retry-After` header.
    Status {
        code: u16,
        body: String,
        retry_after: Option<String>,
    },
    /// `200` with a truncated JSON body, nothing carried out.
    MalformedJson,
    /// Sleep this long, then handle the request normally (its state change does happen).
    Hang(Duration),
    /// Close the connection without answering, nothing carried out.
    Drop,
    /// Carry the request out, then close the connection without answering: the client cannot
    /// know whether it happened.
    DropAfter,
    /// A redirect (`code` 3xx) to `location`, nothing carried out.
    Redirect { code: u16, location: String },
    /// `200` with a JSON list of this many generated started machines of group `app` (about
    /// 1.6 KB each), nothing carried out.
    HugeList(usize),
}

impl Fault {
    /// A [`Fault::Status`] without `Retry-After`.
    pub fn status(code: u16, body: &str) -> Fault {
        Fault::Status {
            code,
            body: body.to_string(),
            retry_after: None,
        }
    }

    /// The API's rate limiter (reference §7): `429 {"error":"rate limit exceeded"}` with
    /// `Retry-After: <retry_after>`.
    pub fn rate_limited(retry_after: &str) -> Fault {
        Fault::Status {
            code: 429,
            body: r#"{"error":"rate limit exceeded"}"#.to_string(),
            retry_after: Some(retry_after.to_string()),
        }
    }
}

/// A machine to seed with [`Simulator::add_machine`].
#[derive(Debug, Clone)]
pub struct MachineSpec {
    pub state: String,
    pub region: String,
    pub process_group: Option<String>,
    pub host_status: Option<String>,
    /// Full image reference, split into `image_ref`.
    pub image: String,
    /// Replaces the whole config; `None` builds one like the fixtures' with
    /// `metadata.fly_process_group = process_group` (absent when `None`) and `image`.
    pub config: Option<Value>,
}

impl MachineSpec {
    /// Region `iad`, group `app`, `host_status: "ok"`, the fixtures' digest-pinned image.
    pub fn new(state: &str) -> Self {
        MachineSpec {
            state: state.to_string(),
            region: "iad".to_string(),
            process_group: Some("app".to_string()),
            host_status: Some("ok".to_string()),
            image: DEFAULT_IMAGE.to_string(),
            config: None,
        }
    }

    pub fn region(mut self, region: &str) -> Self {
        self.region = region.to_string();
        self
    }

    pub fn group(mut self, group: Option<&str>) -> Self {
        self.process_group = group.map(str::to_string);
        self
    }

    pub fn host_status(mut self, host_status: Option<&str>) -> Self {
        self.host_status = host_status.map(str::to_string);
        self
    }

    pub fn image(mut self, image: &str) -> Self {
        self.image = image.to_string();
        self
    }

    pub fn config(mut self, config: Value) -> Self {
        self.config = Some(config);
        self
    }
}

/// A snapshot of one machine; fields a raw machine lacks are empty.
#[derive(Debug, Clone, PartialEq)]
pub struct SimMachine {
    pub id: String,
    pub state: String,
    pub region: String,
    /// As fly-go reads it: `metadata.fly_process_group`, else `metadata.process_group`.
    pub process_group: Option<String>,
    /// `Value::Null` when the machine has no `config`.
    pub config: Value,
}

impl SimMachine {
    fn of(json: &Value) -> SimMachine {
        let text = |key: &str| {
            json.get(key)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        SimMachine {
            id: text("id"),
            state: text("state"),
            region: text("region"),
            process_group: process_group(json),
            config: json.get("config").cloned().unwrap_or(Value::Null),
        }
    }
}

/// The simulator. Dropping it stops the server.
pub struct Simulator {
    shared: Arc<Shared>,
    http: HttpServer,
}

impl Simulator {
    /// Starts on `127.0.0.1:0`.
    pub fn start() -> Simulator {
        Simulator::start_on("127.0.0.1:0").expect("bind the Fly Machines API simulator")
    }

    /// Starts on `addr`, e.g. `127.0.0.1:4280`.
    pub fn start_on(addr: &str) -> io::Result<Simulator> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                token: None,
                latency: Duration::ZERO,
                transition: Duration::ZERO,
                faults: Vec::new(),
                orgs: Vec::new(),
                apps: Vec::new(),
                app_index: HashMap::new(),
                unsettled: HashSet::new(),
                machine_counter: 0,
                rng: Rng::seeded(),
            }),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            request_seq: AtomicUsize::new(0),
        });
        let s = Arc::clone(&shared);
        let handler: Handler = Arc::new(move |rq, ctx| s.handle(rq, ctx));
        let http = HttpServer::start(addr, Duration::from_secs(5), handler)?;
        Ok(Simulator { shared, http })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        self.http.url()
    }

    /// `Some(v)`: every request must carry exactly `Authorization: v`. `None` (default):
    /// anything goes.
    pub fn set_token(&self, authorization: Option<&str>) {
        self.state().token = authorization.map(str::to_string);
    }

    /// Delay before every request is handled (faulted ones too).
    pub fn set_latency(&self, d: Duration) {
        self.state().latency = d;
    }

    /// How long start, stop, suspend, destroy and create stay in their transient state.
    pub fn set_transition_time(&self, d: Duration) {
        self.state().transition = d;
    }

    /// Adds an app to an organisation; its current release is `complete`.
    pub fn add_app(&self, org: &str, app: &str) {
        self.state().ensure_app(org, app);
    }

    /// Removes an app and its machines: requests for it get `404`, the org list omits it.
    pub fn remove_app(&self, app: &str) {
        self.state().remove_app(app);
    }

    /// Seeds a machine (the app is created in org `personal` if unknown). Returns its id:
    /// 14 lowercase hex characters, increasing in insertion order.
    pub fn add_machine(&self, app: &str, spec: MachineSpec) -> String {
        let mut st = self.state();
        let id = st.next_machine_id();
        let config = spec.config.unwrap_or_else(|| {
            default_config(&spec.image, spec.process_group.as_deref(), &spec.region)
        });
        let seed = Seed {
            id: id.clone(),
            name: None,
            state: &spec.state,
            region: &spec.region,
            image: &spec.image,
            config,
            host_status: spec.host_status.as_deref(),
        };
        let m = Machine::generated(seed, &mut st.rng);
        st.app_mut("personal", app).machines.push(m);
        id
    }

    /// Seeds `json` exactly as the machine list will show it: odd states, duplicate ids,
    /// `"id": null`, missing fields, even a non-object.
    pub fn add_raw_machine(&self, app: &str, json: Value) {
        self.state()
            .app_mut("personal", app)
            .machines
            .push(Machine::raw(json));
    }

    /// Snapshot of an app's machines in list order.
    pub fn machines(&self, app: &str) -> Vec<SimMachine> {
        let st = self.state();
        st.app(app)
            .map(|a| {
                a.machines
                    .iter()
                    .map(|m| SimMachine::of(m.json()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many of the app's machines are in `state`.
    pub fn count(&self, app: &str, state: &str) -> usize {
        let st = self.state();
        let machines = st.app(app).map_or(&[][..], |a| &a.machines);
        machines.iter().filter(|m| m.state() == state).count()
    }

    /// What `GET /v1/apps/{app}/machines/{id}` returns now (`None`: 404).
    pub fn machine_json(&self, app: &str, id: &str) -> Option<Value> {
        let st = self.state();
        st.app(app)?.machine(id).map(|m| m.json().clone())
    }

    /// Sets a machine's state at once (an out-of-band change), ending any transition.
    /// Returns whether the machine exists.
    pub fn set_machine_state(&self, app: &str, id: &str, state: &str) -> bool {
        let mut st = self.state();
        let machine = st.app_by_name_mut(app).and_then(|a| a.machine_mut(id));
        machine.map(|m| m.set_state(state, "flyd")).is_some()
    }

    /// The app's current release status for GraphQL; `None`: never deployed (`null`).
    pub fn set_release_status(&self, app: &str, status: Option<&str>) {
        if let Some(a) = self.state().app_by_name_mut(app) {
            a.release = status.map(str::to_string);
        }
    }

    /// Adds a fault rule; the first live matching rule applies.
    pub fn inject(&self, rule: FaultRule) {
        self.state().faults.push(rule);
    }

    /// Every request received (GraphQL and faulted ones included), in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.http.requests()
    }

    /// Like [`Self::requests`], and clears the log.
    pub fn take_requests(&self) -> Vec<RecordedRequest> {
        self.http.take_requests()
    }

    /// Requests being handled right now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// Most requests handled at once since start or the last reset.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn reset_max_in_flight(&self) {
        let now = self.in_flight();
        self.shared.max_in_flight.store(now, Ordering::SeqCst);
    }

    /// The state with every due transition completed.
    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state()
    }
}

struct Shared {
    state: Mutex<State>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    request_seq: AtomicUsize,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        let mut st = lock(&self.state);
        st.settle();
        st
    }
}

struct App {
    id: String,
    name: String,
    org: String,
    machines: Vec<Machine>,
    release: Option<String>,
    release_created_at: String,
}

impl App {
    fn machine(&self, id: &str) -> Option<&Machine> {
        self.machines.iter().find(|m| m.id() == Some(id))
    }

    fn machine_mut(&mut self, id: &str) -> Option<&mut Machine> {
        self.machines.iter_mut().find(|m| m.id() == Some(id))
    }
}

struct State {
    token: Option<String>,
    latency: Duration,
    transition: Duration,
    faults: Vec<FaultRule>,
    /// Slugs of every organisation an app was ever added to.
    orgs: Vec<String>,
    /// In the order they were added (the org's app list keeps it).
    apps: Vec<App>,
    /// Position of each app in `apps`: a lookup is not a scan of 10,000 apps.
    app_index: HashMap<String, usize>,
    /// Apps that may have a machine in transition: every app handed out mutably, until a
    /// settle finds none (settling every app on every request would scan them all).
    unsettled: HashSet<String>,
    machine_counter: u64,
    rng: Rng,
}

impl State {
    /// Completes due transitions (computed on access rather than by a timer thread).
    fn settle(&mut self) {
        let now = Instant::now();
        let (apps, index) = (&mut self.apps, &self.app_index);
        self.unsettled.retain(|name| {
            let Some(app) = index.get(name).map(|&i| &mut apps[i]) else {
                return false;
            };
            app.machines.retain_mut(|m| m.settle(now));
            app.machines.iter().any(Machine::in_transition)
        });
    }

    fn app(&self, name: &str) -> Option<&App> {
        self.app_index.get(name).map(|&i| &self.apps[i])
    }

    fn app_by_name_mut(&mut self, name: &str) -> Option<&mut App> {
        let &i = self.app_index.get(name)?;
        self.unsettled.insert(name.to_string());
        Some(&mut self.apps[i])
    }

    fn remove_app(&mut self, name: &str) {
        self.apps.retain(|a| a.name != name);
        self.app_index = (self.apps.iter().enumerate())
            .map(|(i, a)| (a.name.clone(), i))
            .collect();
    }

    /// The app, added to `org` first if unknown.
    fn app_mut(&mut self, org: &str, name: &str) -> &mut App {
        self.ensure_app(org, name);
        self.app_by_name_mut(name).expect("just added")
    }

    fn ensure_app(&mut self, org: &str, name: &str) {
        if !self.orgs.iter().any(|o| o == org) {
            self.orgs.push(org.to_string());
        }
        if self.app(name).is_none() {
            let hash = fnv1a(name.as_bytes(), self.apps.len() as u64);
            self.app_index.insert(name.to_string(), self.apps.len());
            self.apps.push(App {
                id: format!("{hash:016x}"),
                name: name.to_string(),
                org: org.to_string(),
                machines: Vec::new(),
                release: Some("complete".to_string()),
                release_created_at: rfc3339(now_ms()),
            });
        }
    }

    fn next_machine_id(&mut self) -> String {
        self.machine_counter += 1;
        format!("7814{:010x}", self.machine_counter)
    }

    /// Takes one use of the first live matching rule.
    fn take_fault(&mut self, rq: &RecordedRequest) -> Option<Fault> {
        let rule = self
            .faults
            .iter_mut()
            .find(|r| r.times > 0 && r.matches(rq))?;
        rule.times -= 1;
        Some(rule.fault.clone())
    }
}
