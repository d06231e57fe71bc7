//! One app, end to end: deploy guard → collect → targets → list → plan → apply, all inside one
//! deadline. Apply carries the plan out with bounded parallelism and per-machine error
//! isolation; it decides nothing itself, except that an operation whose outcome is unknown is
//! settled by reading the machine back, never by acting on another machine.

mod platform;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use platform::{Change, Fly, Platform};

use crate::collector::CollectError;
use crate::config::{Config, InitialState};
use crate::expr::{TargetError, TargetExprs};
use crate::http::Deadline;
use crate::machines::ApiError;
use crate::plan::{self, Action, Plan, Policy};
use crate::release::ReleaseError;
use crate::telemetry::{MachineOp, OpStatus, Telemetry};
use crate::wire::{Machine, Stable, StateClass, Toward};

/// Everything needed to reconcile any app; shared by all workers.
pub struct Reconciler {
    platform: Box<dyn Platform>,
    targets: TargetExprs,
    process_group: String,
    regions: Vec<String>,
    initial_state: InitialState,
    timeout: Duration,
    action_concurrency: usize,
    max_machines: usize,
    /// How long a failing release check may hold scaling back before it is ignored.
    deploy_guard_fail_open_after: Duration,
    /// Plan and log, but change nothing.
    dry_run: bool,
    telemetry: Arc<Telemetry>,
}

/// What one app carries from one reconcile to the next.
#[derive(Debug, Default)]
pub struct AppState {
    /// Next position in `regions` (per app, unlike the Go program's per-worker counter).
    region_cursor: usize,
    /// Since when the release check has been failing.
    release_check_failing_since: Option<Instant>,
}

/// How a reconcile ended when nothing went wrong before apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The plan was carried out.
    Applied { action: &'static str, tally: Tally },
    /// A release is in progress; nothing was done.
    DeployInProgress,
}

impl Outcome {
    /// Whether every machine operation is known to have succeeded.
    pub fn is_clean(&self) -> bool {
        match self {
            Outcome::Applied { tally, .. } => tally.failed == 0 && tally.unknown == 0,
            Outcome::DeployInProgress => true,
        }
    }
}

/// Machine operations of one apply, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub ok: usize,
    pub failed: usize,
    /// Neither the answer nor a read-back told what happened.
    pub unknown: usize,
}

#[derive(Debug)]
pub enum ReconcileError {
    ReleaseCheck(ReleaseError),
    Metrics(CollectError),
    Targets(TargetError),
    ListMachines(ApiError),
    NoCloneSource,
}

impl ReconcileError {
    /// A word for metrics labels; any error that is a timeout is `timeout`.
    pub fn kind(&self) -> &'static str {
        match self {
            ReconcileError::ReleaseCheck(e) if e.is_timeout() => "timeout",
            ReconcileError::Metrics(e) if e.error.is_timeout() => "timeout",
            ReconcileError::ListMachines(e) if e.is_timeout() => "timeout",
            ReconcileError::ReleaseCheck(_) => "release_check",
            ReconcileError::Metrics(_) => "metrics",
            ReconcileError::Targets(_) => "expression",
            ReconcileError::ListMachines(_) => "list_machines",
            ReconcileError::NoCloneSource => "no_clone_source",
        }
    }
}

impl ReconcileError {
    /// The Go program's log message for this failure.
    pub fn message(&self) -> &'static str {
        match self {
            ReconcileError::ReleaseCheck(_) => "get current release failed",
            ReconcileError::Metrics(_) => "metrics collection failed",
            _ => "reconciliation failed",
        }
    }

    /// What went wrong, without the message (the Go program's `err` attribute).
    pub fn cause(&self) -> &dyn fmt::Display {
        match self {
            ReconcileError::ReleaseCheck(e) => e,
            ReconcileError::Metrics(e) => e,
            ReconcileError::Targets(e) => e,
            ReconcileError::ListMachines(e) => e,
            ReconcileError::NoCloneSource => &"no machine available to clone for scale up",
        }
    }
}

impl fmt::Display for ReconcileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.message(), self.cause())
    }
}

impl std::error::Error for ReconcileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReconcileError::ReleaseCheck(e) => Some(e),
            ReconcileError::Metrics(e) => Some(e),
            ReconcileError::Targets(e) => Some(e),
            ReconcileError::ListMachines(e) => Some(e),
            ReconcileError::NoCloneSource => None,
        }
    }
}

/// How one machine operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    Yes,
    No,
    /// The machine could not be read back: it must not be replaced by another one.
    Unknown,
}

impl Reconciler {
    pub fn new(
        config: &Config,
        targets: TargetExprs,
        platform: Box<dyn Platform>,
        telemetry: Arc<Telemetry>,
        dry_run: bool,
    ) -> Reconciler {
        Reconciler {
            platform,
            targets,
            process_group: config.process_group.clone(),
            regions: config.regions.clone(),
            initial_state: config.initial_state(),
            timeout: config.timeout,
            action_concurrency: config.action_concurrency,
            max_machines: config.max_machines,
            deploy_guard_fail_open_after: config.deploy_guard_fail_open_after,
            dry_run,
            telemetry,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// The organization's app names, within one timeout.
    pub fn org_apps(&self, org: &str) -> Result<Vec<String>, ApiError> {
        self.platform.org_apps(org, Deadline::after(self.timeout))
    }

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
                log::error!(app, err:% = e.cause(), kind = e.kind(), took_ms = took.as_millis() as u64; "{}", e.message());
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
        let metrics = self
            .platform
            .collect(app, deadline)
            .map_err(ReconcileError::Metrics)?;
        for (name, value) in &metrics {
            self.telemetry.metric_value(app, name, *value);
        }
        let mut targets = self
            .targets
            .evaluate(&metrics)
            .map_err(ReconcileError::Targets)?;
        let limit = u32::try_from(self.max_machines).unwrap_or(u32::MAX);
        if targets.clamp_to(limit) {
            log::warn!(app, max_machines = self.max_machines;
                "target above max-machines, clamped; raise max-machines if the app really needs more");
        }
        self.telemetry.targets(app, &targets);
        let machines = self
            .platform
            .list(app, deadline)
            .map_err(ReconcileError::ListMachines)?;
        let region_cursor = lock(state).region_cursor;
        let plan = plan::plan(
            &targets,
            &machines,
            &Policy {
                process_group: &self.process_group,
                regions: &self.regions,
                region_cursor,
                initial_state: self.initial_state,
                max_machines: self.max_machines,
            },
        );
        self.telemetry.current(app, &plan.current, &plan.skipped);
        let bound = |v: Option<u32>| v.unwrap_or(0);
        log::info!(
            app,
            "current.started" = plan.current.started,
            "current.stopped" = plan.current.stopped,
            "target.created.min" = bound(targets.created.min),
            "target.created.max" = bound(targets.created.max),
            "target.started.min" = bound(targets.started.min),
            "target.started.max" = bound(targets.started.max);
            "reconciling"
        );
        let s = plan.skipped;
        if s != plan::Skipped::default() {
            log::debug!(app, no_id = s.no_id, duplicate_id = s.duplicate_id, ignored_state = s.ignored_state;
                "machines left out of the plan");
        }
        if plan.action == Action::NoCloneSource {
            return Err(ReconcileError::NoCloneSource);
        }
        let tally = if self.dry_run {
            Tally::default()
        } else {
            self.apply(app, &plan, &machines, state, deadline)
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
            in_transition = c.in_transition,
            target_created = range(targets.created).as_str(),
            target_started = range(targets.started).as_str(),
            plan = plan.summary().as_str(),
            ok = tally.ok,
            failed = tally.failed,
            unknown = tally.unknown,
            dry_run = self.dry_run,
            took_ms = started.elapsed().as_millis() as u64;
            "reconciled"
        );
        Ok(Outcome::Applied { action, tally })
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
        match self.platform.release_status(app, deadline) {
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
                log::warn!(app, failing_for_s = since.elapsed().as_secs(), err:% = e;
                    "release check keeps failing, scaling anyway");
                Ok(false)
            }
        }
    }

    /// Carries out the plan's action, between the Go program's `begin bulk …` and
    /// `bulk … completed` lines.
    fn apply(
        &self,
        app: &str,
        plan: &Plan,
        machines: &[Machine],
        state: &Mutex<AppState>,
        deadline: Deadline,
    ) -> Tally {
        let kind = match &plan.action {
            Action::None | Action::NoCloneSource => return Tally::default(),
            Action::Create(_) => "create",
            Action::Destroy(_) => "destroy",
            Action::Start { .. } => "start",
            Action::Stop { .. } => "stop",
        };
        log::info!(app; "begin bulk {kind}");
        if plan.shortfall() > 0 {
            log::warn!(app, shortfall = plan.shortfall();
                "not enough stopped machines available to reach target, please create more machines");
        }
        let n = self.action_concurrency;
        let tally = match &plan.action {
            Action::None | Action::NoCloneSource => Tally::default(),
            Action::Create(launches) => {
                if !self.regions.is_empty() {
                    lock(state).region_cursor += launches.regions.len();
                }
                let requests: Vec<_> = launches.requests().collect();
                bulk(
                    &requests,
                    requests.len(),
                    Mode::StopOnFailure,
                    n,
                    |request| {
                        let result = self.platform.create(app, *request, deadline);
                        match &result {
                            Ok(created) => {
                                log::info!(app, id = created.id.as_str(), region = created.region.as_str(); "machine created")
                            }
                            Err(e) => {
                                log::error!(app, err:% = e; "cannot create machine, skipping")
                            }
                        }
                        let done = if result.is_ok() { Done::Yes } else { Done::No };
                        self.telemetry
                            .machine_op(app, MachineOp::Create, done.into());
                        done
                    },
                )
            }
            Action::Destroy(ids) => bulk(ids, ids.len(), Mode::Once, n, |id| {
                let region = machines
                    .iter()
                    .find(|m| m.id == *id)
                    .map_or("", |m| m.region.as_str());
                self.change(app, Change::Destroy, id, region, deadline)
            }),
            Action::Start { candidates, needed } => {
                bulk(candidates, *needed, Mode::ReplaceFailures, n, |id| {
                    self.change(app, Change::Start, id, "", deadline)
                })
            }
            Action::Stop { candidates, needed } => {
                bulk(candidates, *needed, Mode::ReplaceFailures, n, |id| {
                    self.change(app, Change::Stop, id, "", deadline)
                })
            }
        };
        log::info!(app, n = tally.ok, failed = tally.failed, unknown = tally.unknown; "bulk {kind} completed");
        tally
    }

    /// Starts, stops or destroys one machine. When the outcome is unknown (no answer, or an
    /// answer such as 412 that says the machine is not where it was), the machine is read
    /// back and counted as what it really is.
    fn change(
        &self,
        app: &str,
        change: Change,
        id: &str,
        region: &str,
        deadline: Deadline,
    ) -> Done {
        let verb = change.op().as_str();
        let done = match self.platform.act(app, change, id, deadline) {
            Ok(()) => Done::Yes,
            Err(e) if change == Change::Destroy && e.is_not_found() => {
                log::info!(app, id, err:% = e; "machine already gone");
                Done::Yes
            }
            Err(e) if e.outcome_unknown() => match self.platform.get(app, id, deadline) {
                Ok(m) if reached(change, &m) => {
                    log::info!(app, id, state = m.state.as_str(), err:% = e; "machine read back in the wanted state after an unclear answer");
                    Done::Yes
                }
                Ok(m) => {
                    log::error!(app, id, err:% = e, state = m.state.as_str(); "cannot {verb} machine, skipping");
                    Done::No
                }
                Err(g) if change == Change::Destroy && g.is_not_found() => Done::Yes,
                Err(g) => {
                    log::error!(app, id, err:% = e, read_back:% = g;
                        "machine state unknown after failed {verb}, not replacing it");
                    Done::Unknown
                }
            },
            Err(e) => {
                log::error!(app, id, err:% = e; "cannot {verb} machine, skipping");
                Done::No
            }
        };
        if done == Done::Yes {
            let past = change.op().past_tense();
            if region.is_empty() {
                log::info!(app, id; "machine {past}");
            } else {
                log::info!(app, id, region; "machine {past}");
            }
        }
        self.telemetry.machine_op(app, change.op(), done.into());
        done
    }
}

impl From<Done> for OpStatus {
    fn from(d: Done) -> OpStatus {
        match d {
            Done::Yes => OpStatus::Ok,
            Done::No => OpStatus::Failed,
            Done::Unknown => OpStatus::Unknown,
        }
    }
}

/// Whether a machine read back is where `change` was taking it (or on its way there).
fn reached(change: Change, m: &Machine) -> bool {
    let counts_as = match m.class() {
        StateClass::Stable(s) | StateClass::Transient(Toward::State(s)) => Some(s),
        StateClass::Transient(Toward::Initial) => None,
        StateClass::Ignored => {
            return change == Change::Destroy
                && matches!(m.state.as_str(), "destroying" | "destroyed");
        }
    };
    match change {
        Change::Start => counts_as == Some(Stable::Started),
        Change::Stop => matches!(counts_as, Some(Stable::Stopped | Stable::Suspended)),
        Change::Destroy => false,
    }
}

/// The Go program's `fas_reconcile_count` status for an action.
fn action_label(action: &Action) -> &'static str {
    match action {
        // Also a start with nothing left to start: the Go program counts the bulk start.
        Action::None | Action::NoCloneSource => "no_scale",
        Action::Create(_) => "create",
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
    /// A failure is replaced by the next candidate (start, stop: as in Go); an unknown
    /// outcome is not.
    ReplaceFailures,
    /// After a failure no new item is begun (create: a failing launch usually fails again,
    /// and the Go program looped on it forever).
    StopOnFailure,
}

/// Runs `op` over `items` until `needed` succeeded (or items run out), with at most
/// `concurrency` operations at a time.
fn bulk<T: Sync>(
    items: &[T],
    needed: usize,
    mode: Mode,
    concurrency: usize,
    op: impl Fn(&T) -> Done + Sync,
) -> Tally {
    #[derive(Default)]
    struct Progress {
        next: usize,
        in_flight: usize,
        tally: Tally,
    }
    let limit = if mode == Mode::ReplaceFailures {
        items.len()
    } else {
        needed.min(items.len())
    };
    let progress = Mutex::new(Progress::default());
    let take = || {
        let mut p = lock(&progress);
        let t = p.tally;
        let stop = p.next >= limit
            || t.ok + t.unknown + p.in_flight >= needed
            || (mode == Mode::StopOnFailure && t.failed + t.unknown > 0);
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
                    let done = op(item);
                    let mut p = lock(&progress);
                    p.in_flight -= 1;
                    match done {
                        Done::Yes => p.tally.ok += 1,
                        Done::No => p.tally.failed += 1,
                        Done::Unknown => p.tally.unknown += 1,
                    }
                }
            });
        }
    });
    let p = lock(&progress);
    p.tally
}

#[cfg(test)]
mod tests;
