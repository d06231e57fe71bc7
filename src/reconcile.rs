//! One app, end to end: deploy guard → collect → targets → list → plan → apply, all inside one
//! deadline. Apply carries the plan out with bounded parallelism and per-machine error
//! isolation; it decides nothing itself.

use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::collector::{self, CollectError, Collector};
use crate::expr::{TargetError, TargetExprs};
use crate::http::Deadline;
use crate::machines::{ApiError, MachinesClient};
use crate::plan::{self, Action, Plan, Policy};
use crate::release::ReleaseClient;
use crate::telemetry::{MachineOp, Telemetry};

/// Everything needed to reconcile any app; shared by all workers.
pub struct Reconciler {
    pub machines: MachinesClient,
    /// `None` when the deploy guard is off.
    pub releases: Option<ReleaseClient>,
    pub collectors: Vec<Box<dyn Collector>>,
    pub targets: TargetExprs,
    pub process_group: String,
    pub regions: Vec<String>,
    pub skip_launch: bool,
    pub timeout: Duration,
    pub action_concurrency: usize,
    /// How long a failing release check may hold scaling back before it is ignored.
    pub deploy_guard_fail_open_after: Duration,
    /// Plan and log, but change nothing.
    pub dry_run: bool,
    pub telemetry: Arc<Telemetry>,
}

/// What one app carries from one reconcile to the next.
#[derive(Debug, Default)]
pub struct AppState {
    /// Next position in `regions` (per app, unlike the Go program's per-worker counter).
    pub region_cursor: usize,
    /// Since when the release check has been failing.
    release_check_failing_since: Option<Instant>,
}

/// How a reconcile ended when nothing went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The plan was carried out; `failed` machine operations failed.
    Applied {
        action: &'static str,
        ok: usize,
        failed: usize,
    },
    /// A release is in progress; nothing was done.
    DeployInProgress,
}

#[derive(Debug)]
pub enum ReconcileError {
    ReleaseCheck(String),
    Metrics(CollectError),
    Targets(TargetError),
    ListMachines(ApiError),
    NoCloneSource,
}

impl ReconcileError {
    pub fn kind(&self) -> &'static str {
        match self {
            ReconcileError::ReleaseCheck(_) => "release_check",
            ReconcileError::Metrics(_) => "metrics",
            ReconcileError::Targets(_) => "expression",
            ReconcileError::ListMachines(e) if e.is_timeout() => "timeout",
            ReconcileError::ListMachines(_) => "list_machines",
            ReconcileError::NoCloneSource => "no_clone_source",
        }
    }
}

impl fmt::Display for ReconcileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReconcileError::ReleaseCheck(e) => write!(f, "get current release failed: {e}"),
            ReconcileError::Metrics(e) => write!(f, "metrics collection failed: {e}"),
            ReconcileError::Targets(e) => write!(f, "{e}"),
            ReconcileError::ListMachines(e) => write!(f, "{e}"),
            ReconcileError::NoCloneSource => {
                f.write_str("no machine available to clone for scale up")
            }
        }
    }
}

impl std::error::Error for ReconcileError {}

impl Reconciler {
    /// Reconciles `app` once. Errors before apply mean nothing was changed.
    pub fn reconcile(&self, app: &str, state: &Mutex<AppState>) -> Result<Outcome, ReconcileError> {
        let started = Instant::now();
        let result = self.reconcile_inner(app, state, started);
        let took = started.elapsed();
        match &result {
            Ok(Outcome::Applied { action, .. }) => self.telemetry.reconciled(app, action, took),
            Ok(Outcome::DeployInProgress) => self.telemetry.tick_skipped(app, "deploy_in_progress"),
            Err(e) => {
                self.telemetry.reconcile_failed(app, e.kind(), took);
                log::error!(app, kind = e.kind(), took_ms = took.as_millis() as u64; "reconciliation failed: {e}");
            }
        }
        result
    }

    fn reconcile_inner(
        &self,
        app: &str,
        state: &Mutex<AppState>,
        started: Instant,
    ) -> Result<Outcome, ReconcileError> {
        let deadline = Deadline::after(self.timeout);
        if self.deploy_in_progress(app, state, deadline)? {
            log::warn!(app; "release in progress, skipping reconciliation");
            return Ok(Outcome::DeployInProgress);
        }
        let metrics = collector::collect_all(&self.collectors, app, deadline)
            .map_err(ReconcileError::Metrics)?;
        for (name, value) in &metrics {
            self.telemetry.metric_value(app, name, *value);
        }
        let targets = self
            .targets
            .evaluate(&metrics)
            .map_err(ReconcileError::Targets)?;
        self.telemetry.targets(app, &targets);
        let machines = self
            .machines
            .list_machines(app, deadline)
            .map_err(ReconcileError::ListMachines)?;
        let region_cursor = lock(state).region_cursor;
        let plan = plan::plan(
            &targets,
            &machines,
            &Policy {
                process_group: &self.process_group,
                regions: &self.regions,
                region_cursor,
                skip_launch: self.skip_launch,
            },
        );
        self.telemetry.current(app, &plan.current);
        if plan.action == Action::NoCloneSource {
            return Err(ReconcileError::NoCloneSource);
        }
        if plan.shortfall() > 0 {
            log::warn!(app, shortfall = plan.shortfall();
                "not enough stopped machines available to reach target, please create more machines");
        }
        let (ok, failed) = if self.dry_run {
            (0, 0)
        } else {
            self.apply(app, &plan, state, deadline)
        };
        let action = action_label(&plan.action);
        let c = plan.current;
        let range = |b: plan::Bounds| match (b.min, b.max) {
            (None, None) => "-".to_string(),
            (min, max) if min == max => min.map_or("-".into(), |v| v.to_string()),
            (min, max) => format!(
                "{}..{}",
                min.map_or("".into(), |v| v.to_string()),
                max.map_or("".into(), |v| v.to_string())
            ),
        };
        log::info!(
            app,
            created = c.created,
            started = c.started,
            stopped = c.stopped,
            suspended = c.suspended,
            target_created = range(targets.created).as_str(),
            target_started = range(targets.started).as_str(),
            plan = plan.summary().as_str(),
            ok,
            failed,
            dry_run = self.dry_run,
            took_ms = started.elapsed().as_millis() as u64;
            "reconciled"
        );
        Ok(Outcome::Applied { action, ok, failed })
    }

    /// The deploy guard. A failing check skips the app (as in Go) until it has failed for
    /// `deploy_guard_fail_open_after`; then scaling goes ahead, so a broken GraphQL token or
    /// outage cannot freeze an app's scaling forever.
    fn deploy_in_progress(
        &self,
        app: &str,
        state: &Mutex<AppState>,
        deadline: Deadline,
    ) -> Result<bool, ReconcileError> {
        let Some(releases) = &self.releases else {
            return Ok(false);
        };
        match releases.current_status(app, deadline) {
            Ok(status) => {
                lock(state).release_check_failing_since = None;
                Ok(status.as_deref() == Some("running"))
            }
            Err(e) => {
                let since = *lock(state)
                    .release_check_failing_since
                    .get_or_insert_with(Instant::now);
                if since.elapsed() < self.deploy_guard_fail_open_after {
                    return Err(ReconcileError::ReleaseCheck(e));
                }
                log::warn!(app, failing_for_s = since.elapsed().as_secs();
                    "release check keeps failing, scaling anyway: {e}");
                Ok(false)
            }
        }
    }

    /// Carries out the plan's action; returns (succeeded, failed) machine operations.
    fn apply(
        &self,
        app: &str,
        plan: &Plan,
        state: &Mutex<AppState>,
        deadline: Deadline,
    ) -> (usize, usize) {
        let n = self.action_concurrency;
        let m = &self.machines;
        match &plan.action {
            Action::None | Action::NoCloneSource => (0, 0),
            Action::Create { launches, .. } => {
                if !self.regions.is_empty() {
                    lock(state).region_cursor += launches.len();
                }
                bulk(launches, launches.len(), Mode::StopOnFailure, n, |l| {
                    let result = m.create_machine(app, l, deadline);
                    if let Ok(created) = &result {
                        log::info!(app, id = created.id.as_str(), region = created.region.as_str(); "machine created");
                    }
                    self.record(app, MachineOp::Create, "", result.map(drop))
                })
            }
            Action::Destroy(ids) => bulk(ids, ids.len(), Mode::Once, n, |id| {
                let result = m.destroy_machine(app, id, deadline);
                self.record(app, MachineOp::Destroy, id, result)
            }),
            Action::Start { candidates, needed } => {
                bulk(candidates, *needed, Mode::ReplaceFailures, n, |id| {
                    let result = m.start_machine(app, id, deadline);
                    self.record(app, MachineOp::Start, id, result)
                })
            }
            Action::Stop { candidates, needed } => {
                bulk(candidates, *needed, Mode::ReplaceFailures, n, |id| {
                    let result = m.stop_machine(app, id, deadline);
                    self.record(app, MachineOp::Stop, id, result)
                })
            }
        }
    }

    /// Counts and logs one machine operation; true if it succeeded.
    fn record(&self, app: &str, op: MachineOp, id: &str, result: Result<(), ApiError>) -> bool {
        self.telemetry.machine_op(app, op, result.is_ok());
        match result {
            Ok(()) => {
                if op != MachineOp::Create {
                    log::info!(app, id; "machine {}", past_tense(op));
                }
                true
            }
            Err(e) => {
                log::error!(app, id, op = op.as_str(); "cannot {} machine, skipping: {e}", op.as_str());
                false
            }
        }
    }
}

fn past_tense(op: MachineOp) -> &'static str {
    match op {
        MachineOp::Create => "created",
        MachineOp::Destroy => "destroyed",
        MachineOp::Start => "started",
        MachineOp::Stop => "stopped",
    }
}

/// The Go program's `fas_reconcile_count` status for an action.
fn action_label(action: &Action) -> &'static str {
    match action {
        // The Go program counted a bulk start even with nothing to start.
        Action::Start { candidates, .. } if candidates.is_empty() => "no_scale",
        Action::None | Action::NoCloneSource => "no_scale",
        Action::Create { .. } => "create",
        Action::Destroy(_) => "destroy",
        Action::Start { .. } => "start",
        Action::Stop { .. } => "stop",
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How a bulk operation treats failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Each item once; a failure still uses up its place (destroy: never more than planned).
    Once,
    /// A failure is replaced by the next candidate (start, stop: as in Go).
    ReplaceFailures,
    /// After a failure no new item is begun (create: a failing launch usually fails again,
    /// and the Go program looped on it forever).
    StopOnFailure,
}

/// Runs `op` over `items` until `needed` succeeded (or items run out), with at most
/// `concurrency` operations at a time. Returns (succeeded, failed).
fn bulk<T: Sync>(
    items: &[T],
    needed: usize,
    mode: Mode,
    concurrency: usize,
    op: impl Fn(&T) -> bool + Sync,
) -> (usize, usize) {
    #[derive(Default)]
    struct Progress {
        next: usize,
        in_flight: usize,
        ok: usize,
        failed: usize,
    }
    let limit = if mode == Mode::ReplaceFailures {
        items.len()
    } else {
        needed.min(items.len())
    };
    let progress = Mutex::new(Progress::default());
    let take = || {
        let mut p = lock(&progress);
        let stop = p.next >= limit
            || p.ok + p.in_flight >= needed
            || (mode == Mode::StopOnFailure && p.failed > 0);
        if stop {
            return None;
        }
        p.next += 1;
        p.in_flight += 1;
        Some(&items[p.next - 1])
    };
    let workers = concurrency.max(1).min(needed.min(limit));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                while let Some(item) = take() {
                    let ok = op(item);
                    let mut p = lock(&progress);
                    p.in_flight -= 1;
                    if ok {
                        p.ok += 1;
                    } else {
                        p.failed += 1;
                    }
                }
            });
        }
    });
    let p = lock(&progress);
    (p.ok, p.failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn replace_failures_moves_on_to_the_next_candidate() {
        // Go case 18: start of "2" fails, "1" and "3" succeed, "4" is never tried.
        let tried = Mutex::new(Vec::new());
        let (ok, failed) = bulk(&["1", "2", "3", "4"], 2, Mode::ReplaceFailures, 1, |id| {
            tried.lock().unwrap().push(*id);
            *id != "2"
        });
        assert_eq!((ok, failed), (2, 1));
        assert_eq!(*tried.lock().unwrap(), ["1", "2", "3"]);
    }

    #[test]
    fn once_counts_failures_against_the_target() {
        let (ok, failed) = bulk(&["1", "2", "3"], 2, Mode::Once, 4, |id| *id != "1");
        assert_eq!((ok, failed), (1, 1));
    }

    #[test]
    fn stop_on_failure_begins_nothing_new() {
        let calls = AtomicUsize::new(0);
        let (ok, failed) = bulk(&[1, 2, 3, 4, 5], 5, Mode::StopOnFailure, 1, |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            false
        });
        assert_eq!((ok, failed), (0, 1));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn runs_in_parallel_up_to_the_limit() {
        let in_flight = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let items: Vec<usize> = (0..20).collect();
        let (ok, _) = bulk(&items, 20, Mode::ReplaceFailures, 4, |_| {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(5));
            in_flight.fetch_sub(1, Ordering::SeqCst);
            true
        });
        assert_eq!(ok, 20);
        assert_eq!(peak.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn nothing_to_do() {
        assert_eq!(
            bulk::<u8>(&[], 3, Mode::ReplaceFailures, 4, |_| true),
            (0, 0)
        );
        assert_eq!(bulk(&[1], 0, Mode::Once, 4, |_| true), (0, 0));
    }
}
