//! One app, end to end: deploy guard → collect → targets → list → per process group: scale
//! controls → plan → apply, all inside one deadline. One machine list per app per cycle; each
//! group is planned on its own machines, and the groups' actions run at the same time within
//! the app's `action-concurrency`. An error in one group does not stop the others.

mod apply;
mod platform;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use apply::Tally;
pub use platform::{Fly, Platform};

use crate::clock::{self, Stamp};
use crate::collector::CollectError;
use crate::config::{Config, GroupConfig};
use crate::expr::{MetricValues, TargetError, TargetExprs};
use crate::http::Deadline;
use crate::machines::ApiError;
use crate::plan::controls::{self, Controls, FallbackChange, Memory};
use crate::plan::{self, Action, Plan, Policy, TargetCounts};
use crate::release::ReleaseError;
pub use crate::telemetry::Scope;
use crate::telemetry::Telemetry;
use crate::wire::Machine;
use apply::{Apply, Permits};

/// Everything needed to reconcile any app; shared by all workers.
pub struct Reconciler {
    platform: Box<dyn Platform>,
    groups: Vec<Group>,
    /// With `process-groups`, per-group series and log lines carry the group's name.
    labeled: bool,
    timeout: Duration,
    interval: Duration,
    action_concurrency: usize,
    max_machines: usize,
    time_offset: i32,
    /// How long a failing release check may hold scaling back before it is ignored.
    deploy_guard_fail_open_after: Duration,
    /// Plan and log, but change nothing.
    dry_run: bool,
    telemetry: Arc<Telemetry>,
    /// Whether "the window is filling" was logged (once per process).
    filling_logged: AtomicBool,
    /// With leader election: whether this instance may act now.
    fence: Option<Arc<dyn Fence>>,
}

/// Whether this instance may act: the leader election's lease, checked by its own clock
/// before every cycle and before every machine action.
pub trait Fence: Send + Sync {
    fn holds(&self) -> bool;
    /// How many times this instance became leader: a new term means the apps' memory is
    /// another leader's past.
    fn term(&self) -> u64;
}

/// One process group: its expressions and settings.
struct Group {
    name: String,
    targets: TargetExprs,
    config: GroupConfig,
    controls: Controls,
}

/// What one app carries from one reconcile to the next.
#[derive(Debug, Default)]
pub struct AppState {
    /// Since when the release check has been failing.
    release_check_failing_since: Option<Instant>,
    /// Per group, in the reconciler's order.
    groups: Vec<GroupState>,
    /// Whether the stabilization windows were filled from history.
    prefilled: bool,
    /// Whether a refused suspend was warned about (once per app).
    suspend_refused: AtomicBool,
}

impl AppState {
    /// Forgets everything, as at start-up: a standby that becomes leader refills its
    /// stabilization windows from history on the next reconcile instead of acting on what it
    /// saw before another instance led.
    pub fn forget(&mut self) {
        *self = AppState::default();
    }
}

#[derive(Debug, Default)]
struct GroupState {
    /// Next position in `regions` (per app, unlike the Go program's per-worker counter).
    region_cursor: usize,
    memory: Memory,
}

/// How a reconcile ended when nothing went wrong before the groups were planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The plans were carried out; `action` is the first group's (the Go program's label).
    Applied {
        action: &'static str,
        tally: Tally,
        /// Groups whose targets or plan failed.
        failed_groups: usize,
    },
    /// A release is in progress; nothing was done.
    DeployInProgress,
    /// Another instance leads (or this one's lease lapsed); nothing was done.
    Standby,
}

impl Outcome {
    /// Whether every group planned and every machine operation is known to have succeeded.
    pub fn is_clean(&self) -> bool {
        match self {
            Outcome::Applied {
                tally,
                failed_groups,
                ..
            } => tally.failed == 0 && tally.unknown == 0 && *failed_groups == 0,
            Outcome::DeployInProgress | Outcome::Standby => true,
        }
    }
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

/// What every group's plan starts from.
struct Inputs<'a> {
    machines: &'a [Machine],
    now: Stamp,
    deadline: Deadline,
}

/// One group's plan, ready to apply.
struct Planned {
    plan: Plan,
    raw: TargetCounts,
    effective: TargetCounts,
    held: Vec<controls::Held>,
}

impl Reconciler {
    /// `groups` are the config's groups with their compiled expressions, in order.
    pub fn new(
        config: &Config,
        groups: Vec<(String, TargetExprs)>,
        platform: Box<dyn Platform>,
        telemetry: Arc<Telemetry>,
        dry_run: bool,
    ) -> Reconciler {
        let groups = config
            .groups()
            .into_iter()
            .zip(groups)
            .map(|((name, config), (_, targets))| Group {
                name: name.to_string(),
                targets,
                controls: Controls::from(config),
                config: config.clone(),
            })
            .collect();
        Reconciler {
            platform,
            groups,
            labeled: !config.process_groups.is_empty(),
            timeout: config.timeout,
            interval: config.interval,
            action_concurrency: config.action_concurrency,
            max_machines: config.max_machines,
            time_offset: config.time_offset,
            deploy_guard_fail_open_after: config.deploy_guard_fail_open_after,
            dry_run,
            telemetry,
            filling_logged: AtomicBool::new(false),
            fence: None,
        }
    }

    /// Acts only while `fence` holds (leader election).
    pub fn fenced_by(mut self, fence: Arc<dyn Fence>) -> Reconciler {
        self.fence = Some(fence);
        self
    }

    /// Whether this instance may act now (always, without leader election).
    pub fn may_act(&self) -> bool {
        self.fence.as_ref().is_none_or(|f| f.holds())
    }

    /// The leader election's term, `None` without election.
    pub fn term(&self) -> Option<u64> {
        self.fence.as_ref().map(|f| f.term())
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

    fn scope<'a>(&'a self, app: &'a str, group: &'a Group) -> Scope<'a> {
        Scope {
            app,
            group: self.labeled.then_some(group.name.as_str()),
        }
    }

    /// Reconciles `app` once. Errors mean nothing was changed.
    pub fn reconcile(&self, app: &str, state: &Mutex<AppState>) -> Result<Outcome, ReconcileError> {
        if !self.may_act() {
            self.telemetry.tick_skipped(app, "standby");
            return Ok(Outcome::Standby);
        }
        let started = Instant::now();
        let mut state = lock(state);
        state
            .groups
            .resize_with(self.groups.len(), GroupState::default);
        let result = self.reconcile_inner(app, &mut state, started);
        self.telemetry.observe_duration(started.elapsed());
        let who = Scope { app, group: None };
        match &result {
            Ok(Outcome::DeployInProgress) => self.telemetry.tick_skipped(app, "deploy_in_progress"),
            Ok(Outcome::Applied { .. } | Outcome::Standby) => {}
            Err(e) => self.failed(who, e, started),
        }
        result
    }

    fn failed(&self, who: Scope, e: &ReconcileError, started: Instant) {
        self.telemetry.reconcile_failed(who, e.kind());
        log::error!(app = who.app, process_group = who.group, err:% = e.cause(), kind = e.kind(),
            took_ms = started.elapsed().as_millis() as u64; "{}", e.message());
    }

    fn reconcile_inner(
        &self,
        app: &str,
        state: &mut AppState,
        started: Instant,
    ) -> Result<Outcome, ReconcileError> {
        let deadline = Deadline::after(self.timeout);
        if self.deploy_in_progress(app, state, deadline)? {
            log::warn!(app; "release in progress, skipping reconciliation");
            return Ok(Outcome::DeployInProgress);
        }
        let now = clock::now();
        let metrics = self.platform.collect(app, deadline).map(|mut m| {
            for (name, value) in &m {
                self.telemetry.metric_value(app, name, *value);
            }
            clock::add_time_variables(&mut m, now, self.time_offset);
            m
        });
        if !state.prefilled {
            self.prefill(app, state, now, deadline);
        }
        // Every group's targets before the list, as the Go program evaluates before it lists:
        // when no group can go on (and none has a fallback), nothing is listed.
        let raws: Vec<Result<TargetCounts, ReconcileError>> = self
            .groups
            .iter()
            .map(|g| match &metrics {
                Ok(m) => self.targets(g, m).map_err(ReconcileError::Targets),
                Err(e) => Err(ReconcileError::Metrics(e.clone())),
            })
            .collect();
        let can_go_on = raws
            .iter()
            .zip(&self.groups)
            .any(|(raw, g)| raw.is_ok() || g.controls.fallback.is_some());
        if !can_go_on {
            if let Err(e) = metrics {
                return Err(ReconcileError::Metrics(e));
            }
            for (raw, group) in raws.iter().zip(&self.groups) {
                if let Err(e) = raw {
                    self.failed(self.scope(app, group), e, started);
                }
            }
            return Ok(Outcome::Applied {
                action: "no_scale",
                tally: Tally::default(),
                failed_groups: self.groups.len(),
            });
        }
        if let Err(e) = &metrics {
            log::warn!(app, err:% = e; "metrics collection failed");
        }
        let machines = self
            .platform
            .list(app, deadline)
            .map_err(ReconcileError::ListMachines)?;

        let mut planned = Vec::with_capacity(self.groups.len());
        let mut failed_groups = 0;
        for ((group, group_state), raw) in self.groups.iter().zip(&mut state.groups).zip(raws) {
            let inputs = Inputs {
                machines: &machines,
                now,
                deadline,
            };
            match self.plan_group(app, group, group_state, raw, &inputs) {
                Ok(p) => planned.push(Some(p)),
                Err(e) => {
                    failed_groups += 1;
                    self.failed(self.scope(app, group), &e, started);
                    planned.push(None);
                }
            }
        }
        let permits = Permits::new(self.action_concurrency);
        let suspend_refused = &state.suspend_refused;
        let fence_closed = AtomicBool::new(false);
        let tallies: Vec<Tally> = std::thread::scope(|s| {
            let runs: Vec<_> = self
                .groups
                .iter()
                .zip(&planned)
                .map(|(group, p)| {
                    let p = p.as_ref()?;
                    if self.dry_run || p.plan.action == Action::None {
                        return None;
                    }
                    let apply = Apply {
                        platform: self.platform.as_ref(),
                        telemetry: &self.telemetry,
                        who: self.scope(app, group),
                        deadline,
                        permits: &permits,
                        machines: &machines,
                        suspend_refused,
                        fence: self.fence.as_deref(),
                        fence_closed: &fence_closed,
                    };
                    Some(s.spawn(move || apply.run(&p.plan.action, p.plan.shortfall())))
                })
                .collect();
            runs.into_iter()
                .map(|r| r.and_then(|h| h.join().ok()).unwrap_or_default())
                .collect()
        });

        let mut total = Tally::default();
        let mut first_action = None;
        for (((group, group_state), p), tally) in self
            .groups
            .iter()
            .zip(&mut state.groups)
            .zip(&planned)
            .zip(&tallies)
        {
            let Some(p) = p else { continue };
            let action = action_label(&p.plan.action);
            first_action.get_or_insert(action);
            if let Some(direction) = p.plan.action.direction() {
                if self.dry_run || tally.ok > 0 {
                    group_state.memory.acted(direction, now);
                }
            }
            if let Action::Create(l) = &p.plan.action {
                if !self.dry_run && !group.config.regions.is_empty() {
                    group_state.region_cursor += l.regions.len();
                }
            }
            self.telemetry.reconciled(self.scope(app, group), action);
            self.log_reconciled(app, group, p, tally, started);
            total.ok += tally.ok;
            total.failed += tally.failed;
            total.unknown += tally.unknown;
        }
        Ok(Outcome::Applied {
            action: first_action.unwrap_or("no_scale"),
            tally: total,
            failed_groups,
        })
    }

    /// Targets, scale controls and plan of one group.
    fn plan_group(
        &self,
        app: &str,
        group: &Group,
        state: &mut GroupState,
        raw: Result<TargetCounts, ReconcileError>,
        inputs: &Inputs,
    ) -> Result<Planned, ReconcileError> {
        let who = self.scope(app, group);
        let Inputs {
            machines,
            now,
            deadline,
            ..
        } = *inputs;
        let config = &group.config;
        let mut policy = Policy {
            process_group: &group.name,
            regions: &config.regions,
            region_cursor: state.region_cursor,
            initial_state: config.initial_state(),
            max_machines: self.max_machines,
            max_scale_up: config.max_scale_up,
            max_scale_down: config.max_scale_down,
            stop_order: config.stop_order,
            stop_priority: None,
            scale_down_method: config.scale_down_method,
        };
        let decided = plan::decide_and_plan(
            &group.controls,
            &mut state.memory,
            now,
            raw,
            machines,
            &policy,
        );
        self.telemetry
            .fallback_active(who, state.memory.in_fallback(&group.controls));
        let (decision, mut plan) = decided?;
        match decision.fallback_change {
            Some(FallbackChange::Entered) => log::warn!(app, process_group = who.group;
                "metrics failing, scaling to the fallback counts until a collection succeeds"),
            Some(FallbackChange::Left) => log::warn!(app, process_group = who.group;
                "metrics back, leaving fallback"),
            None => {}
        }
        self.telemetry
            .targets(who, &decision.raw, &decision.effective);
        if matches!(plan.action, Action::Stop { .. } | Action::Suspend { .. })
            && !config.stop_priority_query.is_empty()
        {
            match self
                .platform
                .stop_priorities(app, &config.stop_priority_query, deadline)
            {
                Ok(priorities) => {
                    policy.stop_priority = Some(&priorities);
                    plan = plan::plan(&decision.effective, machines, &policy);
                }
                Err(e) => log::warn!(app, process_group = who.group, err:% = e;
                    "stop-priority-query failed, stopping in stop-order"),
            }
        }
        self.telemetry.current(who, &plan.current, &plan.skipped);
        let bound = |v: Option<u32>| v.unwrap_or(0);
        let t = decision.effective;
        log::info!(
            app,
            process_group = who.group,
            "current.started" = plan.current.started,
            "current.stopped" = plan.current.stopped,
            "target.created.min" = bound(t.created.min),
            "target.created.max" = bound(t.created.max),
            "target.started.min" = bound(t.started.min),
            "target.started.max" = bound(t.started.max);
            "reconciling"
        );
        let s = plan.skipped;
        if s != plan::Skipped::default() {
            log::debug!(app, process_group = who.group, no_id = s.no_id, duplicate_id = s.duplicate_id,
                ignored_state = s.ignored_state; "machines left out of the plan");
        }
        if plan.action == Action::NoCloneSource {
            return Err(ReconcileError::NoCloneSource);
        }
        Ok(Planned {
            plan,
            raw: decision.raw,
            effective: decision.effective,
            held: decision.held,
        })
    }

    /// A group's targets from the cycle's metrics, bounded by `max-machines`.
    fn targets(&self, group: &Group, metrics: &MetricValues) -> Result<TargetCounts, TargetError> {
        let mut targets = group.targets.evaluate(metrics)?;
        if targets.clamp_minimums_to(u32::try_from(self.max_machines).unwrap_or(u32::MAX)) {
            log::warn!(max_machines = self.max_machines, process_group = self.labeled.then_some(group.name.as_str());
                "target above max-machines, clamped; raise max-machines if the app really needs more");
        }
        Ok(targets)
    }

    /// Fills the stabilization windows from history when every collector keeps one, so a
    /// restart (or a `-once` run) does not forget what the window saw.
    fn prefill(&self, app: &str, state: &mut AppState, now: Stamp, deadline: Deadline) {
        state.prefilled = true;
        let window = self
            .groups
            .iter()
            .map(|g| {
                g.controls
                    .scale_up_stabilization
                    .max(g.controls.scale_down_stabilization)
            })
            .max()
            .unwrap_or_default();
        if window.is_zero() {
            return;
        }
        let from = now.saturating_sub(i64::try_from(window.as_millis()).unwrap_or(i64::MAX));
        match self
            .platform
            .history(app, from, now, self.interval, deadline)
        {
            None => {
                if !self.filling_logged.swap(true, Ordering::Relaxed) {
                    log::info!(
                        "a metric source keeps no history: stabilization windows fill as the autoscaler runs"
                    );
                }
            }
            Some(Err(e)) => {
                log::warn!(app, err:% = e; "cannot read metric history: the stabilization window fills as the autoscaler runs")
            }
            Some(Ok(steps)) => {
                let mut filled = 0;
                for (at, mut metrics) in steps {
                    clock::add_time_variables(&mut metrics, at, self.time_offset);
                    for (group, group_state) in self.groups.iter().zip(&mut state.groups) {
                        if let Ok(targets) = group.targets.evaluate(&metrics) {
                            let mut targets = targets;
                            targets.clamp_minimums_to(
                                u32::try_from(self.max_machines).unwrap_or(u32::MAX),
                            );
                            group_state.memory.record(at, targets);
                            filled += 1;
                        }
                    }
                }
                log::debug!(app, recommendations = filled; "stabilization window filled from history");
            }
        }
    }

    fn log_reconciled(
        &self,
        app: &str,
        group: &Group,
        p: &Planned,
        tally: &Tally,
        started: Instant,
    ) {
        let c = p.plan.current;
        let range = |b: plan::Bounds| match (b.min, b.max) {
            (None, None) => "-".to_string(),
            (min, max) if min == max => min.map_or("-".into(), |v| v.to_string()),
            (min, max) => format!(
                "{}..{}",
                min.map_or("".into(), |v| v.to_string()),
                max.map_or("".into(), |v| v.to_string())
            ),
        };
        let held: Vec<&str> = p.held.iter().map(|h| h.as_str()).collect();
        let changed = p.raw != p.effective;
        log::info!(
            app,
            process_group = self.labeled.then_some(group.name.as_str()),
            created = c.created,
            started = c.started,
            stopped = c.stopped,
            suspended = c.suspended,
            in_transition = c.in_transition,
            target_created = range(p.raw.created).as_str(),
            target_started = range(p.raw.started).as_str(),
            effective_created = changed.then(|| range(p.effective.created)),
            effective_started = changed.then(|| range(p.effective.started)),
            held = (!held.is_empty()).then(|| held.join(",")),
            plan = p.plan.summary().as_str(),
            ok = tally.ok,
            failed = tally.failed,
            unknown = tally.unknown,
            dry_run = self.dry_run,
            took_ms = started.elapsed().as_millis() as u64;
            "reconciled"
        );
    }

    /// The deploy guard. A failing check skips the app (as in Go) until it has failed for
    /// `deploy_guard_fail_open_after`; then scaling goes ahead, so a broken GraphQL token or
    /// outage cannot freeze an app's scaling forever.
    fn deploy_in_progress(
        &self,
        app: &str,
        state: &mut AppState,
        deadline: Deadline,
    ) -> Result<bool, ReconcileError> {
        match self.platform.release_status(app, deadline) {
            Ok(status) => {
                state.release_check_failing_since = None;
                Ok(status.as_deref() == Some("running"))
            }
            Err(e) => {
                let since = *state
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
}

/// The Go program's `fas_reconcile_count` status for an action.
fn action_label(action: &Action) -> &'static str {
    match action {
        Action::None | Action::NoCloneSource => "no_scale",
        Action::Create(_) => "create",
        Action::Destroy(_) => "destroy",
        // Also a start with nothing left to start: the Go program counts the bulk start.
        Action::Start { .. } => "start",
        Action::Stop { .. } | Action::Suspend { .. } => "stop",
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The groups of a config with their expressions compiled (every problem reported before any
/// metric is collected).
pub fn compile_groups(config: &Config) -> Result<Vec<(String, TargetExprs)>, String> {
    let metrics: Vec<&str> = config
        .metric_collectors
        .iter()
        .map(|c| c.metric_name.as_str())
        .collect();
    config
        .groups()
        .into_iter()
        .map(|(name, group)| {
            TargetExprs::compile(group, &metrics)
                .map(|t| (name.to_string(), t))
                .map_err(|e| {
                    if config.process_groups.is_empty() {
                        e.to_string()
                    } else {
                        format!("process-groups[{name:?}]: {e}")
                    }
                })
        })
        .collect()
}

#[cfg(test)]
mod tests;
