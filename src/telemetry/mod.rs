//! The autoscaler's own metrics, kept in memory and rendered in the Prometheus text format
//! 0.0.4 for `/metrics`.
//!
//! The Go program's three families keep their names and `status` labels so existing
//! dashboards work. They are declared `untyped`: their names lack `_total`, which promtool
//! rejects for counters, and PromQL treats both alike. Everything else follows Prometheus'
//! naming rules and carries an `app` label.

mod process;
mod server;

use std::collections::BTreeMap;
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

struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    /// By label set, rendered as in the exposition (`app="a",state="started"`), so an update
    /// of an existing series allocates nothing and rendering copies it as it is.
    series: BTreeMap<String, f64>,
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
    /// The scope's labels followed by `more`.
    fn with(&self, more: &[(&'static str, &'a str)]) -> Vec<(&'static str, &'a str)> {
        let mut labels = vec![("app", self.app)];
        if let Some(group) = self.group {
            labels.push(("process_group", group));
        }
        labels.extend_from_slice(more);
        labels
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
    families: Mutex<Vec<Family>>,
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

const GO_START: &str = "fas_machine_start_count";
const GO_STOP: &str = "fas_machine_stop_count";
const GO_RECONCILE: &str = "fas_reconcile_count";
const ACTIONS: &str = "fas_machine_actions_total";
const RECONCILES: &str = "fas_reconciles_total";
const ERRORS: &str = "fas_reconcile_errors_total";
const SKIPPED: &str = "fas_skipped_ticks_total";
const METRIC_VALUE: &str = "fas_metric_value";
const TARGET: &str = "fas_target_machines";
const EFFECTIVE_TARGET: &str = "fas_effective_target_machines";
const FALLBACK: &str = "fas_fallback_active";
const MACHINES: &str = "fas_machines";
const APPS: &str = "fas_managed_apps";
const SKIPPED_MACHINES: &str = "fas_skipped_machines";
const PANICS: &str = "fas_panics_total";
const LEADER: &str = "fas_leader";
const LEADER_CHANGES: &str = "fas_leader_changes_total";

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}

impl Telemetry {
    pub fn new() -> Telemetry {
        let family = |name, kind, help| Family {
            name,
            help,
            kind,
            series: BTreeMap::new(),
        };
        let mut families = vec![
            family(
                GO_START,
                Kind::Untyped,
                "Machines started (ok) or that failed to start (failed); Go fly-autoscaler name.",
            ),
            family(
                GO_STOP,
                Kind::Untyped,
                "Machines stopped (ok) or that failed to stop (failed); Go fly-autoscaler name.",
            ),
            family(
                GO_RECONCILE,
                Kind::Untyped,
                "Reconciles by the action taken; Go fly-autoscaler name.",
            ),
            family(
                ACTIONS,
                Kind::Counter,
                "Machine operations by app, operation and outcome.",
            ),
            family(
                RECONCILES,
                Kind::Counter,
                "Completed reconciles by app and the action taken.",
            ),
            family(
                ERRORS,
                Kind::Counter,
                "Reconciles that failed, by app and kind of failure.",
            ),
            family(
                SKIPPED,
                Kind::Counter,
                "Ticks on which an app was not reconciled, by reason.",
            ),
            family(
                METRIC_VALUE,
                Kind::Gauge,
                "Last collected value of each metric, per app.",
            ),
            family(
                TARGET,
                Kind::Gauge,
                "Target machine counts from the expressions (created/started, min/max).",
            ),
            family(
                EFFECTIVE_TARGET,
                Kind::Gauge,
                "Target machine counts after the scale controls (stabilization, cooldown, fallback).",
            ),
            family(
                FALLBACK,
                Kind::Gauge,
                "1 while an app's targets come from its fallback counts (metrics failing).",
            ),
            family(
                MACHINES,
                Kind::Gauge,
                "Managed machines by state at the last reconcile (created = all states).",
            ),
            family(APPS, Kind::Gauge, "Apps currently being reconciled."),
            family(
                SKIPPED_MACHINES,
                Kind::Gauge,
                "Listed machines of the group left out of the last plan, by reason.",
            ),
            family(
                PANICS,
                Kind::Counter,
                "Reconciles that ended in an internal error (a bug); the app is tried again next tick.",
            ),
            family(
                LEADER,
                Kind::Gauge,
                "1 while this instance holds the leader election's lock and may act, else 0 (leader election only).",
            ),
            family(
                LEADER_CHANGES,
                Kind::Counter,
                "Times this instance became leader or standby (leader election only).",
            ),
        ];
        // The Go program exported these from start-up, at zero.
        for (name, statuses) in [
            (GO_START, &["ok", "failed"][..]),
            (GO_STOP, &["ok", "failed"][..]),
            (
                GO_RECONCILE,
                &["create", "destroy", "start", "stop", "no_scale"][..],
            ),
        ] {
            let f = families
                .iter_mut()
                .find(|f| f.name == name)
                .expect("declared above");
            for s in statuses {
                f.series.insert(format!("status=\"{s}\""), 0.0);
            }
        }
        Telemetry {
            families: Mutex::new(families),
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
        self.set(LEADER, &[], f64::from(u8::from(leading)));
        self.update(LEADER_CHANGES, &[], |v| *v += f64::from(u8::from(changed)));
    }

    /// `leader` or `standby` with leader election, `None` without.
    pub fn role(&self) -> Option<&'static str> {
        match self.role.load(Ordering::Relaxed) {
            ROLE_LEADER => Some("leader"),
            ROLE_STANDBY => Some("standby"),
            _ => None,
        }
    }

    fn update(&self, name: &str, labels: &[(&'static str, &str)], f: impl FnOnce(&mut f64)) {
        with_key(labels, |key| {
            let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(family) = families.iter_mut().find(|x| x.name == name) {
                match family.series.get_mut(key) {
                    Some(value) => f(value),
                    None => {
                        let mut value = 0.0;
                        f(&mut value);
                        family.series.insert(key.to_string(), value);
                    }
                }
            }
        });
    }

    fn inc(&self, name: &str, labels: &[(&'static str, &str)]) {
        self.update(name, labels, |v| *v += 1.0);
    }

    fn set(&self, name: &str, labels: &[(&'static str, &str)], value: f64) {
        self.update(name, labels, |v| *v = value);
    }

    /// One machine operation and its outcome.
    pub fn machine_op(&self, who: Scope, op: MachineOp, status: OpStatus) {
        self.inc(
            ACTIONS,
            &who.with(&[("op", op.as_str()), ("status", status.as_str())]),
        );
        // The Go families know only ok and failed, and no suspend.
        let go_status = if status == OpStatus::Ok {
            "ok"
        } else {
            "failed"
        };
        match op {
            MachineOp::Start => self.inc(GO_START, &[("status", go_status)]),
            MachineOp::Stop => self.inc(GO_STOP, &[("status", go_status)]),
            MachineOp::Create | MachineOp::Destroy | MachineOp::Suspend => {}
        }
    }

    /// A reconcile that panicked (caught by its worker).
    pub fn panicked(&self, app: &str) {
        self.inc(PANICS, &[("app", app)]);
    }

    /// A completed plan and the action it took (`create`, …, `no_scale`).
    pub fn reconciled(&self, who: Scope, action: &str) {
        self.inc(GO_RECONCILE, &[("status", action)]);
        self.inc(RECONCILES, &who.with(&[("action", action)]));
    }

    /// A reconcile (or one group's part of it) that failed before acting.
    pub fn reconcile_failed(&self, who: Scope, kind: &str) {
        self.inc(ERRORS, &who.with(&[("kind", kind)]));
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
        self.inc(SKIPPED, &[("app", app), ("reason", reason)]);
    }

    pub fn metric_value(&self, app: &str, metric: &str, value: f64) {
        self.set(METRIC_VALUE, &[("app", app), ("metric", metric)], value);
    }

    /// The targets the expressions asked for and those after the scale controls.
    pub fn targets(&self, who: Scope, raw: &TargetCounts, effective: &TargetCounts) {
        for (family, t) in [(TARGET, raw), (EFFECTIVE_TARGET, effective)] {
            for (state, bounds) in [("created", t.created), ("started", t.started)] {
                for (bound, value) in [("min", bounds.min), ("max", bounds.max)] {
                    let labels = who.with(&[("state", state), ("bound", bound)]);
                    match value {
                        Some(v) => self.set(family, &labels, f64::from(v)),
                        None => self.remove(family, &labels),
                    }
                }
            }
        }
    }

    pub fn fallback_active(&self, who: Scope, active: bool) {
        self.set(FALLBACK, &who.with(&[]), f64::from(u8::from(active)));
    }

    pub fn current(&self, who: Scope, c: &Current, skipped: &Skipped) {
        for (state, n) in [
            ("created", c.created),
            ("started", c.started),
            ("stopped", c.stopped),
            ("suspended", c.suspended),
            ("in_transition", c.in_transition),
        ] {
            self.set(MACHINES, &who.with(&[("state", state)]), n as f64);
        }
        for (reason, n) in [
            ("no_id", skipped.no_id),
            ("duplicate_id", skipped.duplicate_id),
            ("ignored_state", skipped.ignored_state),
        ] {
            self.set(SKIPPED_MACHINES, &who.with(&[("reason", reason)]), n as f64);
        }
    }

    pub fn managed_apps(&self, n: usize) {
        self.set(APPS, &[], n as f64);
    }

    fn remove(&self, name: &str, labels: &[(&'static str, &str)]) {
        with_key(labels, |key| {
            let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(family) = families.iter_mut().find(|x| x.name == name) {
                family.series.remove(key);
            }
        });
    }

    /// Drops every series of an app that is no longer managed (`app` is always the first
    /// label of a per-app series).
    pub fn forget_app(&self, app: &str) {
        let mut prefix = String::new();
        render_labels(&mut prefix, &[("app", app)]);
        let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        for family in families.iter_mut() {
            family.series.retain(|key, _| {
                !key.strip_prefix(&prefix)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(','))
            });
        }
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
        {
            let families = self.families.lock().unwrap_or_else(|e| e.into_inner());
            for f in families.iter() {
                let kind = match f.kind {
                    Kind::Counter => "counter",
                    Kind::Gauge => "gauge",
                    Kind::Untyped => "untyped",
                };
                header(&mut out, f.name, f.help, kind);
                for (labels, value) in &f.series {
                    out.push_str(f.name);
                    if !labels.is_empty() {
                        let _ = write!(out, "{{{labels}}}");
                    }
                    let _ = writeln!(out, " {}", format_value(*value));
                }
            }
        }
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

/// Calls `f` with the rendered label set, built in a reused per-thread buffer.
fn with_key<T>(labels: &[(&'static str, &str)], f: impl FnOnce(&str) -> T) -> T {
    thread_local! {
        static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    KEY.with(|key| {
        let mut key = key.borrow_mut();
        key.clear();
        render_labels(&mut key, labels);
        f(&key)
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
        t.forget_app("a");
        let text = t.render();
        assert!(!text.contains("app=\"a\""));
        assert!(text.contains("app=\"b\""));
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
