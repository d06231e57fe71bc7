//! The autoscaler's own metrics, kept in memory and rendered in the Prometheus text format
//! 0.0.4 for `/metrics`.
//!
//! The Go program's three families keep their names and `status` labels so existing
//! dashboards work. They are declared `untyped`: their names lack `_total`, which promtool
//! rejects for counters, and PromQL treats both alike. Everything else follows Prometheus'
//! naming rules and carries an `app` label.

mod process;
mod server;

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use server::MetricsServer;

use crate::plan::{Current, Skipped, TargetCounts};

/// Buckets of `fas_reconcile_duration_seconds`.
const DURATION_BUCKETS: [f64; 11] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Untyped,
}

/// A metric family, rendered in this order.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    GoStart,
    GoStop,
    GoReconcile,
    Actions,
    Reconciles,
    Errors,
    Skipped,
    MetricValue,
    Target,
    EffectiveTarget,
    Fallback,
    Machines,
    Apps,
    SkippedMachines,
    Panics,
    Leader,
    LeaderChanges,
}

impl Family {
    const ALL: [Family; 17] = [
        Family::GoStart,
        Family::GoStop,
        Family::GoReconcile,
        Family::Actions,
        Family::Reconciles,
        Family::Errors,
        Family::Skipped,
        Family::MetricValue,
        Family::Target,
        Family::EffectiveTarget,
        Family::Fallback,
        Family::Machines,
        Family::Apps,
        Family::SkippedMachines,
        Family::Panics,
        Family::Leader,
        Family::LeaderChanges,
    ];

    /// Name, kind and help text.
    fn describe(self) -> (&'static str, Kind, &'static str) {
        match self {
            Family::GoStart => (
                "fas_machine_start_count",
                Kind::Untyped,
                "Machines started (ok) or that failed to start (failed); Go fly-autoscaler name.",
            ),
            Family::GoStop => (
                "fas_machine_stop_count",
                Kind::Untyped,
                "Machines stopped (ok) or that failed to stop (failed); Go fly-autoscaler name.",
            ),
            Family::GoReconcile => (
                "fas_reconcile_count",
                Kind::Untyped,
                "Reconciles by the action taken; Go fly-autoscaler name.",
            ),
            Family::Actions => (
                "fas_machine_actions_total",
                Kind::Counter,
                "Machine operations by app, operation and outcome.",
            ),
            Family::Reconciles => (
                "fas_reconciles_total",
                Kind::Counter,
                "Completed reconciles by app and the action taken.",
            ),
            Family::Errors => (
                "fas_reconcile_errors_total",
                Kind::Counter,
                "Reconciles that failed, by app and kind of failure.",
            ),
            Family::Skipped => (
                "fas_skipped_ticks_total",
                Kind::Counter,
                "Ticks on which an app was not reconciled, by reason.",
            ),
            Family::MetricValue => (
                "fas_metric_value",
                Kind::Gauge,
                "Last collected value of each metric, per app.",
            ),
            Family::Target => (
                "fas_target_machines",
                Kind::Gauge,
                "Target machine counts from the expressions (created/started, min/max).",
            ),
            Family::EffectiveTarget => (
                "fas_effective_target_machines",
                Kind::Gauge,
                "Target machine counts after the scale controls (stabilization, cooldown, fallback).",
            ),
            Family::Fallback => (
                "fas_fallback_active",
                Kind::Gauge,
                "1 while an app's targets come from its fallback counts (metrics failing).",
            ),
            Family::Machines => (
                "fas_machines",
                Kind::Gauge,
                "Managed machines by state at the last reconcile (created = all states).",
            ),
            Family::Apps => (
                "fas_managed_apps",
                Kind::Gauge,
                "Apps currently being reconciled.",
            ),
            Family::SkippedMachines => (
                "fas_skipped_machines",
                Kind::Gauge,
                "Listed machines of the group left out of the last plan, by reason.",
            ),
            Family::Panics => (
                "fas_panics_total",
                Kind::Counter,
                "Reconciles that ended in an internal error (a bug); the app is tried again next tick.",
            ),
            Family::Leader => (
                "fas_leader",
                Kind::Gauge,
                "1 while this instance holds the leader election's lock and may act, else 0 (leader election only).",
            ),
            Family::LeaderChanges => (
                "fas_leader_changes_total",
                Kind::Counter,
                "Times this instance became leader or standby (leader election only).",
            ),
        }
    }
}

/// Every series, kept per scope (an app, or an app and a process group; scope 0 has no
/// labels and holds the process-wide series) in one short vector each. A map entry with its
/// own rendered key per series cost 18 MB for 10,000 apps; this costs about 0.4 KB an app.
struct Store {
    /// By scope id; a forgotten app's slot is emptied and reused.
    scopes: Vec<ScopeSeries>,
    /// Scope id by rendered scope labels (`app="a",process_group="w"`).
    scope_ids: HashMap<Box<str>, u32>,
    free: Vec<u32>,
    /// The labels after the scope's (`state="started",bound="min"`), rendered and kept for
    /// good: they come from a fixed vocabulary and the configured metric names.
    rests: Vec<Box<str>>,
    rest_ids: HashMap<Box<str>, u32>,
}

#[derive(Default)]
struct ScopeSeries {
    labels: Box<str>,
    series: Vec<Series>,
}

struct Series {
    family: Family,
    /// Index in `Store::rests`.
    rest: u32,
    value: f64,
}

/// The scope of process-wide series.
const NO_SCOPE: u32 = 0;

impl Store {
    fn new() -> Store {
        Store {
            scopes: vec![ScopeSeries::default()],
            scope_ids: HashMap::new(),
            free: Vec::new(),
            rests: Vec::new(),
            rest_ids: HashMap::new(),
        }
    }

    fn scope_id(&mut self, who: Option<Scope>) -> u32 {
        let Some(who) = who else {
            return NO_SCOPE;
        };
        with_buffer(|key| {
            render_labels(key, &[("app", who.app)]);
            if let Some(group) = who.group {
                key.push(',');
                render_labels(key, &[("process_group", group)]);
            }
            if let Some(&id) = self.scope_ids.get(key.as_str()) {
                return id;
            }
            let labels = ScopeSeries {
                labels: key.as_str().into(),
                series: Vec::new(),
            };
            let id = match self.free.pop() {
                Some(id) => {
                    self.scopes[id as usize] = labels;
                    id
                }
                None => {
                    self.scopes.push(labels);
                    u32::try_from(self.scopes.len() - 1).unwrap_or(u32::MAX)
                }
            };
            self.scope_ids.insert(key.as_str().into(), id);
            id
        })
    }

    fn rest_id(&mut self, rest: &[(&'static str, &str)]) -> u32 {
        with_buffer(|key| {
            render_labels(key, rest);
            if let Some(&id) = self.rest_ids.get(key.as_str()) {
                return id;
            }
            let id = u32::try_from(self.rests.len()).unwrap_or(u32::MAX);
            self.rests.push(key.as_str().into());
            self.rest_ids.insert(key.as_str().into(), id);
            id
        })
    }

    /// The series, made (at 0) if new.
    fn series(
        &mut self,
        family: Family,
        who: Option<Scope>,
        rest: &[(&'static str, &str)],
    ) -> &mut f64 {
        let scope = self.scope_id(who);
        let rest = self.rest_id(rest);
        let series = &mut self.scopes[scope as usize].series;
        let at = match series
            .iter()
            .position(|s| s.family == family && s.rest == rest)
        {
            Some(at) => at,
            None => {
                series.push(Series {
                    family,
                    rest,
                    value: 0.0,
                });
                series.len() - 1
            }
        };
        &mut series[at].value
    }

    fn remove(&mut self, family: Family, who: Scope, rest: &[(&'static str, &str)]) {
        let scope = self.scope_id(Some(who));
        let rest = self.rest_id(rest);
        self.scopes[scope as usize]
            .series
            .retain(|s| !(s.family == family && s.rest == rest));
    }

    /// Frees every scope of `app` (`app` is always a scope's first label).
    fn forget_app(&mut self, app: &str) {
        let prefix = with_buffer(|key| {
            render_labels(key, &[("app", app)]);
            key.clone()
        });
        let Store {
            scopes,
            scope_ids,
            free,
            ..
        } = self;
        scope_ids.retain(|labels, id| {
            let of_app = labels
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(','));
            if of_app {
                scopes[*id as usize] = ScopeSeries::default();
                free.push(*id);
            }
            !of_app
        });
    }

    fn render(&self, out: &mut String) {
        for family in Family::ALL {
            let (name, kind, help) = family.describe();
            let kind = match kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Untyped => "untyped",
            };
            header(out, name, help, kind);
            for scope in &self.scopes {
                for s in scope.series.iter().filter(|s| s.family == family) {
                    let rest = self.rests.get(s.rest as usize).map_or("", |r| r);
                    out.push_str(name);
                    if !scope.labels.is_empty() || !rest.is_empty() {
                        out.push('{');
                        out.push_str(&scope.labels);
                        if !scope.labels.is_empty() && !rest.is_empty() {
                            out.push(',');
                        }
                        out.push_str(rest);
                        out.push('}');
                    }
                    let _ = writeln!(out, " {}", format_value(s.value));
                }
            }
        }
    }
}

/// A machine operation, for the per-machine counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineOp {
    Create,
    Destroy,
    Start,
    Stop,
    Suspend,
}

impl MachineOp {
    pub fn as_str(self) -> &'static str {
        match self {
            MachineOp::Create => "create",
            MachineOp::Destroy => "destroy",
            MachineOp::Start => "start",
            MachineOp::Stop => "stop",
            MachineOp::Suspend => "suspend",
        }
    }

    /// As in the Go program's log lines: `machine started`.
    pub fn past_tense(self) -> &'static str {
        match self {
            MachineOp::Create => "created",
            MachineOp::Destroy => "destroyed",
            MachineOp::Start => "started",
            MachineOp::Stop => "stopped",
            MachineOp::Suspend => "suspended",
        }
    }
}

/// Whose series: an app, and its process group when `process-groups` is used (without it the
/// series keep the labels they always had).
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub app: &'a str,
    pub group: Option<&'a str>,
}

impl<'a> Scope<'a> {
    fn app(app: &'a str) -> Scope<'a> {
        Scope { app, group: None }
    }
}

/// How a machine operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpStatus {
    Ok,
    Failed,
    /// The machine could not be read back after an answer that left its state open.
    Unknown,
}

impl OpStatus {
    fn as_str(self) -> &'static str {
        match self {
            OpStatus::Ok => "ok",
            OpStatus::Failed => "failed",
            OpStatus::Unknown => "unknown",
        }
    }
}

/// All metrics of one process.
pub struct Telemetry {
    store: Mutex<Store>,
    durations: Mutex<Histogram>,
    started: Instant,
    /// Milliseconds since `started` when the scheduler last proved it is alive.
    heartbeat_ms: AtomicU64,
    /// With leader election: [`ROLE_LEADER`] or [`ROLE_STANDBY`]; 0 without.
    role: AtomicU8,
}

const ROLE_LEADER: u8 = 1;
const ROLE_STANDBY: u8 = 2;

#[derive(Default)]
struct Histogram {
    counts: [u64; DURATION_BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}

impl Telemetry {
    pub fn new() -> Telemetry {
        let mut store = Store::new();
        // The Go program exported these from start-up, at zero.
        for (family, statuses) in [
            (Family::GoStart, &["ok", "failed"][..]),
            (Family::GoStop, &["ok", "failed"][..]),
            (
                Family::GoReconcile,
                &["create", "destroy", "start", "stop", "no_scale"][..],
            ),
        ] {
            for status in statuses {
                store.series(family, None, &[("status", status)]);
            }
        }
        Telemetry {
            store: Mutex::new(store),
            durations: Mutex::new(Histogram::default()),
            started: Instant::now(),
            heartbeat_ms: AtomicU64::new(0),
            role: AtomicU8::new(0),
        }
    }

    /// This instance's role in the leader election; `changed` counts a change of role.
    pub fn leader(&self, leading: bool, changed: bool) {
        let role = if leading { ROLE_LEADER } else { ROLE_STANDBY };
        self.role.store(role, Ordering::Relaxed);
        self.set(Family::Leader, None, &[], f64::from(u8::from(leading)));
        self.update(Family::LeaderChanges, None, &[], |v| {
            *v += f64::from(u8::from(changed))
        });
    }

    /// `leader` or `standby` with leader election, `None` without.
    pub fn role(&self) -> Option<&'static str> {
        match self.role.load(Ordering::Relaxed) {
            ROLE_LEADER => Some("leader"),
            ROLE_STANDBY => Some("standby"),
            _ => None,
        }
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `f` on the series of `family` with `who`'s labels followed by `rest`.
    fn update(
        &self,
        family: Family,
        who: Option<Scope>,
        rest: &[(&'static str, &str)],
        f: impl FnOnce(&mut f64),
    ) {
        f(self.store().series(family, who, rest));
    }

    fn inc(&self, family: Family, who: Option<Scope>, rest: &[(&'static str, &str)]) {
        self.update(family, who, rest, |v| *v += 1.0);
    }

    fn set(&self, family: Family, who: Option<Scope>, rest: &[(&'static str, &str)], value: f64) {
        self.update(family, who, rest, |v| *v = value);
    }

    /// One machine operation and its outcome.
    pub fn machine_op(&self, who: Scope, op: MachineOp, status: OpStatus) {
        self.inc(
            Family::Actions,
            Some(who),
            &[("op", op.as_str()), ("status", status.as_str())],
        );
        // The Go families know only ok and failed, and no suspend.
        let go_status = if status == OpStatus::Ok {
            "ok"
        } else {
            "failed"
        };
        match op {
            MachineOp::Start => self.inc(Family::GoStart, None, &[("status", go_status)]),
            MachineOp::Stop => self.inc(Family::GoStop, None, &[("status", go_status)]),
            MachineOp::Create | MachineOp::Destroy | MachineOp::Suspend => {}
        }
    }

    /// A reconcile that panicked (caught by its worker).
    pub fn panicked(&self, app: &str) {
        self.inc(Family::Panics, Some(Scope::app(app)), &[]);
    }

    /// A completed plan and the action it took (`create`, …, `no_scale`).
    pub fn reconciled(&self, who: Scope, action: &str) {
        self.inc(Family::GoReconcile, None, &[("status", action)]);
        self.inc(Family::Reconciles, Some(who), &[("action", action)]);
    }

    /// A reconcile (or one group's part of it) that failed before acting.
    pub fn reconcile_failed(&self, who: Scope, kind: &str) {
        self.inc(Family::Errors, Some(who), &[("kind", kind)]);
    }

    /// How long one app's reconcile took, whatever its outcome.
    pub fn observe_duration(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let mut h = self.durations.lock().unwrap_or_else(|e| e.into_inner());
        for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    /// A tick on which `app` was not reconciled (`busy`, `deploy_in_progress`, …).
    pub fn tick_skipped(&self, app: &str, reason: &str) {
        self.inc(
            Family::Skipped,
            Some(Scope::app(app)),
            &[("reason", reason)],
        );
    }

    pub fn metric_value(&self, app: &str, metric: &str, value: f64) {
        self.set(
            Family::MetricValue,
            Some(Scope::app(app)),
            &[("metric", metric)],
            value,
        );
    }

    /// The targets the expressions asked for and those after the scale controls.
    pub fn targets(&self, who: Scope, raw: &TargetCounts, effective: &TargetCounts) {
        let mut store = self.store();
        for (family, t) in [(Family::Target, raw), (Family::EffectiveTarget, effective)] {
            for (state, bounds) in [("created", t.created), ("started", t.started)] {
                for (bound, value) in [("min", bounds.min), ("max", bounds.max)] {
                    let rest = [("state", state), ("bound", bound)];
                    match value {
                        Some(v) => *store.series(family, Some(who), &rest) = f64::from(v),
                        None => store.remove(family, who, &rest),
                    }
                }
            }
        }
    }

    pub fn fallback_active(&self, who: Scope, active: bool) {
        self.set(
            Family::Fallback,
            Some(who),
            &[],
            f64::from(u8::from(active)),
        );
    }

    pub fn current(&self, who: Scope, c: &Current, skipped: &Skipped) {
        for (state, n) in [
            ("created", c.created),
            ("started", c.started),
            ("stopped", c.stopped),
            ("suspended", c.suspended),
            ("in_transition", c.in_transition),
        ] {
            self.set(Family::Machines, Some(who), &[("state", state)], n as f64);
        }
        for (reason, n) in [
            ("no_id", skipped.no_id),
            ("duplicate_id", skipped.duplicate_id),
            ("ignored_state", skipped.ignored_state),
        ] {
            self.set(
                Family::SkippedMachines,
                Some(who),
                &[("reason", reason)],
                n as f64,
            );
        }
    }

    pub fn managed_apps(&self, n: usize) {
        self.set(Family::Apps, None, &[], n as f64);
    }

    /// Drops every series of an app that is no longer managed.
    pub fn forget_app(&self, app: &str) {
        self.store().forget_app(app);
    }

    /// Called by the scheduler loop at least every second.
    pub fn heartbeat(&self) {
        self.heartbeat_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Whether the scheduler loop has beaten within `max_age`.
    pub fn is_alive(&self, max_age: Duration) -> bool {
        let last = Duration::from_millis(self.heartbeat_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last) <= max_age
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        self.store().render(&mut out);
        {
            let h = self.durations.lock().unwrap_or_else(|e| e.into_inner());
            let name = "fas_reconcile_duration_seconds";
            header(
                &mut out,
                name,
                "Time taken by reconciles, from release check to the last machine call.",
                "histogram",
            );
            for (bound, count) in DURATION_BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
            }
            let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{name}_sum {}", format_value(h.sum));
            let _ = writeln!(out, "{name}_count {}", h.count);
        }
        header(
            &mut out,
            "fas_build_info",
            "Version of the running autoscaler.",
            "gauge",
        );
        out.push_str("fas_build_info{");
        render_labels(
            &mut out,
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("commit", option_env!("FAS_COMMIT").unwrap_or("unknown")),
            ],
        );
        out.push_str("} 1\n");
        header(
            &mut out,
            "fas_uptime_seconds",
            "Seconds since the process started.",
            "gauge",
        );
        let _ = writeln!(
            out,
            "fas_uptime_seconds {}",
            format_value(self.started.elapsed().as_secs_f64())
        );
        process::render(&mut out);
        out
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Calls `f` with a cleared per-thread buffer: a lookup renders its key without allocating.
fn with_buffer<T>(f: impl FnOnce(&mut String) -> T) -> T {
    thread_local! {
        static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    KEY.with(|key| {
        let mut key = key.borrow_mut();
        key.clear();
        f(&mut key)
    })
}

/// `k="v",k2="v2"`, values escaped as the text format wants: backslash, quote and newline.
fn render_labels(out: &mut String, labels: &[(&'static str, &str)]) {
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v == f64::INFINITY {
        "+Inf".to_string()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Bounds;

    #[test]
    fn go_families_exist_from_start_at_zero() {
        let text = Telemetry::new().render();
        for line in [
            "fas_machine_start_count{status=\"ok\"} 0",
            "fas_machine_start_count{status=\"failed\"} 0",
            "fas_machine_stop_count{status=\"ok\"} 0",
            "fas_reconcile_count{status=\"no_scale\"} 0",
            "# TYPE fas_reconcile_count untyped",
        ] {
            assert!(text.contains(line), "missing {line}");
        }
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn counts_and_forgets_apps() {
        let t = Telemetry::new();
        let a = Scope {
            app: "a",
            group: None,
        };
        let b = Scope {
            app: "b",
            group: Some("worker"),
        };
        t.machine_op(a, MachineOp::Start, OpStatus::Ok);
        t.machine_op(a, MachineOp::Start, OpStatus::Failed);
        t.machine_op(a, MachineOp::Start, OpStatus::Unknown);
        t.machine_op(b, MachineOp::Create, OpStatus::Ok);
        t.machine_op(b, MachineOp::Suspend, OpStatus::Ok);
        t.reconciled(a, "start");
        t.observe_duration(Duration::from_millis(20));
        t.metric_value("a", "queue\"depth", f64::NAN);
        let raw = TargetCounts {
            created: Bounds::default(),
            started: Bounds {
                min: Some(2),
                max: Some(3),
            },
        };
        let effective = TargetCounts {
            started: Bounds {
                min: Some(2),
                max: Some(5),
            },
            ..raw
        };
        t.targets(a, &raw, &effective);
        t.fallback_active(b, true);
        let text = t.render();
        for line in [
            "fas_machine_start_count{status=\"ok\"} 1",
            "fas_machine_start_count{status=\"failed\"} 2",
            "fas_machine_actions_total{app=\"a\",op=\"start\",status=\"ok\"} 1",
            "fas_machine_actions_total{app=\"a\",op=\"start\",status=\"unknown\"} 1",
            "fas_machine_actions_total{app=\"b\",process_group=\"worker\",op=\"create\",status=\"ok\"} 1",
            "fas_machine_actions_total{app=\"b\",process_group=\"worker\",op=\"suspend\",status=\"ok\"} 1",
            "fas_effective_target_machines{app=\"a\",state=\"started\",bound=\"max\"} 5",
            "fas_fallback_active{app=\"b\",process_group=\"worker\"} 1",
            "fas_reconcile_count{status=\"start\"} 1",
            "fas_reconciles_total{app=\"a\",action=\"start\"} 1",
            "fas_metric_value{app=\"a\",metric=\"queue\\\"depth\"} NaN",
            "fas_target_machines{app=\"a\",state=\"started\",bound=\"max\"} 3",
            "fas_reconcile_duration_seconds_bucket{le=\"0.05\"} 1",
            "fas_reconcile_duration_seconds_count 1",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(
            !text.contains("state=\"created\",bound=\"min\""),
            "unset targets are absent"
        );
        let scopes = t.store().scopes.len();
        t.forget_app("a");
        let text = t.render();
        assert!(!text.contains("app=\"a\""));
        assert!(text.contains("app=\"b\""));
        // A new app takes the forgotten one's place: app churn does not grow the store.
        t.panicked("c");
        assert_eq!(t.store().scopes.len(), scopes);
        assert!(t.render().contains("fas_panics_total{app=\"c\"} 1"));
        assert!(
            text.contains("fas_machine_start_count{status=\"ok\"} 1"),
            "global counters stay"
        );
    }

    #[test]
    fn heartbeat() {
        let t = Telemetry::new();
        t.heartbeat();
        assert!(t.is_alive(Duration::from_secs(1)));
    }
}
