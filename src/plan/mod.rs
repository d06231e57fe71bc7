//! The pure decision: from target counts and the listed machines, what to create, destroy,
//! start or stop. No I/O; `serve`, `serve -once` and `-dry-run` all use this one function.
//!
//! The Go program's rules: only machines with `host_status == "ok"` in the configured process
//! group count; exactly one kind of action per cycle, in the order create, destroy, start,
//! stop. Beyond Go:
//! * the state table (`wire::StateClass`): transient states count as the state they end in
//!   and are never acted on; `destroying`, `failed` and unknown states are not counted at all
//!   (Go counted them as created, and destroyed the app's last live machine for them);
//! * suspended machines count as created but not started, are resumed before stopped machines
//!   are started (resuming is faster than a cold boot), and are destroyed after stopped ones;
//! * invariants no input can break: a machine is addressed at most once, never without an
//!   id, never more than `max_machines` actions, and a destroy never leaves the group without
//!   a machine in a stable state (the last one to clone from).

pub mod controls;

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use crate::config::{Count, InitialState, ScaleDownMethod, Step, StopOrder};
use crate::wire::{CreateRequest, Machine, Stable, StateClass, Toward};
use controls::{Controls, Decision, Held, Memory, Stamp};

/// Minimum and maximum of one count; `None` = no bound (blank expression).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Bounds {
    pub min: Option<u32>,
    pub max: Option<u32>,
}

/// What the expressions asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TargetCounts {
    pub created: Bounds,
    pub started: Bounds,
}

impl TargetCounts {
    pub fn bounds(&self, count: Count) -> Bounds {
        match count {
            Count::Created => self.created,
            Count::Started => self.started,
        }
    }

    pub fn bounds_mut(&mut self, count: Count) -> &mut Bounds {
        match count {
            Count::Created => &mut self.created,
            Count::Started => &mut self.started,
        }
    }

    /// Every minimum lowered to at most `max` (`max-machines`); true if one was lowered.
    /// Minimums are what scale up; a maximum above `max` is left alone, so an app that
    /// already has more machines is not scaled down because of the bound.
    pub fn clamp_minimums_to(&mut self, max: u32) -> bool {
        let mut clamped = false;
        for bound in [&mut self.created.min, &mut self.started.min]
            .into_iter()
            .flatten()
        {
            if *bound > max {
                *bound = max;
                clamped = true;
            }
        }
        clamped
    }
}

/// Inputs of the decision besides targets and machines.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    pub process_group: &'a str,
    /// Regions for new machines, used in turn starting at `region_cursor`.
    pub regions: &'a [String],
    pub region_cursor: usize,
    pub initial_state: InitialState,
    /// The most machine actions one plan may hold.
    pub max_machines: usize,
    /// The most machines one plan may create or start (resp. destroy or stop).
    pub max_scale_up: Option<Step>,
    pub max_scale_down: Option<Step>,
    /// Which started machines go first on scale-down.
    pub stop_order: StopOrder,
    /// Per-machine values (`stop-priority-query`): the lowest goes first, machines without
    /// one after those with one.
    pub stop_priority: Option<&'a HashMap<String, f64>>,
    pub scale_down_method: ScaleDownMethod,
}

/// Machines of the managed group, by the state they count as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Current {
    /// Every counted machine (the Go program's "created" count, without ignored states).
    pub created: usize,
    pub started: usize,
    pub stopped: usize,
    pub suspended: usize,
    /// Of the above, those in a transient state (counted, never acted on).
    pub in_transition: usize,
}

impl Current {
    pub fn count(&self, count: Count) -> usize {
        match count {
            Count::Created => self.created,
            Count::Started => self.started,
        }
    }
}

/// Listed machines of the group the plan left out, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    pub no_id: usize,
    pub duplicate_id: usize,
    /// `destroying`, `failed`, unknown states…
    pub ignored_state: usize,
}

/// Machines to create by cloning one.
#[derive(Debug, Clone, PartialEq)]
pub struct Launches {
    pub source: String,
    /// The source's config with `image` pinned; shared by every launch.
    pub config: Value,
    /// One region per machine to create.
    pub regions: Vec<String>,
    pub skip_launch: bool,
}

impl Launches {
    pub fn requests(&self) -> impl Iterator<Item = CreateRequest<'_>> {
        self.regions.iter().map(|region| CreateRequest {
            region,
            config: &self.config,
            skip_launch: self.skip_launch,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    None,
    Create(Launches),
    /// Exactly these machines; a failure is not replaced by another machine.
    Destroy(Vec<String>),
    /// `needed` machines from `candidates`, in order; a failure moves on to the next one.
    Start {
        candidates: Vec<String>,
        needed: usize,
    },
    Stop {
        candidates: Vec<String>,
        needed: usize,
    },
    /// As `Stop`, with `scale-down-method: suspend`.
    Suspend {
        candidates: Vec<String>,
        needed: usize,
    },
    /// More machines are needed but none exists to clone from.
    NoCloneSource,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub current: Current,
    pub skipped: Skipped,
    pub action: Action,
    /// The step limit that made the action smaller than the targets asked for.
    pub limited_by: Option<Held>,
}

impl Action {
    /// The way the action moves the app, if it moves it.
    pub fn direction(&self) -> Option<controls::Direction> {
        match self {
            Action::Create(_) | Action::Start { .. } => Some(controls::Direction::Up),
            Action::Destroy(_) | Action::Stop { .. } | Action::Suspend { .. } => {
                Some(controls::Direction::Down)
            }
            Action::None | Action::NoCloneSource => None,
        }
    }
}

impl Plan {
    /// Machines wanted but not available to start (the Go program warns about this).
    pub fn shortfall(&self) -> usize {
        match &self.action {
            Action::Start { candidates, needed } => needed.saturating_sub(candidates.len()),
            _ => 0,
        }
    }

    /// A short description for logs: `start 3 of [id, …]` (at most [`SHOWN`] ids or regions,
    /// then how many more).
    pub fn summary(&self) -> String {
        match &self.action {
            Action::None => "no scale".to_string(),
            Action::Create(l) => format!(
                "create {} cloned from {} in [{}]",
                l.regions.len(),
                l.source,
                shown(&l.regions)
            ),
            Action::Destroy(ids) => format!("destroy {} [{}]", ids.len(), shown(ids)),
            Action::Start { candidates, .. } if candidates.is_empty() => {
                format!(
                    "no scale: {} short, nothing left to start",
                    self.shortfall()
                )
            }
            Action::Start { candidates, needed } => format!(
                "start {} of [{}]",
                needed.min(&candidates.len()),
                shown(candidates)
            ),
            Action::Stop { candidates, needed } => format!(
                "stop {} of [{}]",
                needed.min(&candidates.len()),
                shown(candidates)
            ),
            Action::Suspend { candidates, needed } => format!(
                "suspend {} of [{}]",
                needed.min(&candidates.len()),
                shown(candidates)
            ),
            Action::NoCloneSource => "cannot create: no machine to clone".to_string(),
        }
    }
}

/// The most ids (or regions) a plan's summary names: a log line stays readable with
/// thousands of machines.
const SHOWN: usize = 10;

/// `a, b, c`; past [`SHOWN`] items, the first ones and `, … 990 more`.
fn shown(items: &[String]) -> String {
    let mut s = items[..items.len().min(SHOWN)].join(", ");
    if items.len() > SHOWN {
        s.push_str(&format!(", … {} more", items.len() - SHOWN));
    }
    s
}

/// A managed machine and the state it counts as.
struct Managed<'a> {
    machine: &'a Machine,
    counts_as: Stable,
    stable: bool,
}

/// Decides the single action of this cycle.
pub fn plan(targets: &TargetCounts, machines: &[Machine], policy: &Policy) -> Plan {
    let (managed, skipped) = managed(machines, policy);
    plan_managed(targets, &managed, skipped, policy)
}

/// [`plan`] on the group's machines, already picked out.
fn plan_managed(
    targets: &TargetCounts,
    managed: &[Managed],
    skipped: Skipped,
    policy: &Policy,
) -> Plan {
    let current = count(managed);
    let stable = |state: Stable| {
        managed
            .iter()
            .filter(move |m| m.stable && m.counts_as == state)
            .map(|m| m.machine)
    };
    let by_id = |states: &[Stable]| -> Vec<String> {
        states
            .iter()
            .flat_map(|s| {
                let mut ids: Vec<String> = stable(*s).map(|m| m.id.clone()).collect();
                ids.sort_unstable();
                ids
            })
            .collect()
    };
    let clone_source = managed
        .iter()
        .find(|m| m.stable && m.machine.clone.is_some())
        .map(|m| m.machine);
    let limit = policy.max_machines;
    let created = current.created;
    let started = current.started;
    let up = step_limit(policy.max_scale_up, created);
    let down = step_limit(policy.max_scale_down, created);
    let mut limited_by = None;
    // How many of `wanted` this plan does: at most the step limit and `max_machines`.
    let mut size = |wanted: usize, step: usize, held: Held| {
        if wanted > step.min(limit) && step < limit {
            limited_by = Some(held);
        }
        wanted.min(step).min(limit)
    };

    let action = if let Some(min) = above(created, targets.created.min) {
        match clone_source {
            Some(source) => Action::Create(launches(
                source,
                size(min - created, up, Held::MaxScaleUp),
                policy,
            )),
            None => Action::NoCloneSource,
        }
    } else if let Some(max) = below(created, targets.created.max) {
        let mut ids: Vec<String> = [
            Stable::Stopped,
            Stable::Suspended,
            Stable::Created,
            Stable::Started,
        ]
        .iter()
        .flat_map(|s| stable(*s).map(|m| m.id.clone()))
        .take(size(created - max, down, Held::MaxScaleDown))
        .collect();
        let stable_left = managed
            .iter()
            .any(|m| m.stable && !ids.contains(&m.machine.id));
        if !stable_left && !ids.is_empty() {
            // Keep the clone source (else the first candidate): the group's last machine in a
            // stable state.
            let keep = clone_source
                .and_then(|s| ids.iter().position(|id| *id == s.id))
                .unwrap_or(0);
            ids.remove(keep);
        }
        if ids.is_empty() {
            // Only machines in transition are over the bound: wait for them to settle.
            Action::None
        } else {
            Action::Destroy(ids)
        }
    } else if let Some(min) = above(started, targets.started.min) {
        // Candidates beyond the first `max_machines` are never tried, so failures replaced
        // by the next candidate cost at most that many calls too.
        let mut candidates = by_id(&[Stable::Suspended, Stable::Stopped]);
        candidates.truncate(limit);
        Action::Start {
            candidates,
            needed: size(min - started, up, Held::MaxScaleUp),
        }
    } else if let Some(max) = below(started, targets.started.max) {
        let mut candidates = stop_order(stable(Stable::Started).collect(), policy);
        candidates.truncate(limit);
        let needed = size(started - max, down, Held::MaxScaleDown);
        match policy.scale_down_method {
            ScaleDownMethod::Stop => Action::Stop { candidates, needed },
            ScaleDownMethod::Suspend => Action::Suspend { candidates, needed },
        }
    } else {
        Action::None
    };
    Plan {
        current,
        skipped,
        action,
        limited_by,
    }
}

/// The most machines one step may move: a count, or a percentage of the created count
/// (rounded up, never below 1).
fn step_limit(step: Option<Step>, created: usize) -> usize {
    match step {
        None => usize::MAX,
        Some(Step::Count(n)) => n as usize,
        Some(Step::Percent(p)) => (created * p as usize).div_ceil(100).max(1),
    }
}

/// Started machines in the order they are stopped (or suspended).
fn stop_order(mut machines: Vec<&Machine>, policy: &Policy) -> Vec<String> {
    machines.sort_by(|a, b| match policy.stop_order {
        StopOrder::Id => a.id.cmp(&b.id),
        StopOrder::Newest => b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)),
        StopOrder::Oldest => a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)),
    });
    if let Some(priority) = policy.stop_priority {
        // Stable sort: machines with equal (or no) value keep the order above.
        machines.sort_by(|a, b| {
            let (pa, pb) = (priority.get(&a.id), priority.get(&b.id));
            match (pa, pb) {
                (Some(x), Some(y)) => x.total_cmp(y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            }
        });
    }
    machines.into_iter().map(|m| m.id.clone()).collect()
}

/// One group's decision at `now`, the same in every mode (`serve`, `-once`, `-dry-run`,
/// `backtest`): the scale controls weigh the raw targets (or the failure to get them) against
/// the current counts, then the plan follows the effective targets.
pub fn decide_and_plan<E>(
    controls: &Controls,
    memory: &mut Memory,
    now: Stamp,
    raw: Result<TargetCounts, E>,
    machines: &[Machine],
    policy: &Policy,
) -> Result<(Decision, Plan), E> {
    let (managed, skipped) = managed(machines, policy);
    let current = count(&managed);
    let mut decision = controls::decide(controls, memory, now, raw, &current)?;
    let plan = plan_managed(&decision.effective, &managed, skipped, policy);
    decision.held.extend(plan.limited_by);
    Ok((decision, plan))
}

fn count(managed: &[Managed]) -> Current {
    let mut current = Current::default();
    for m in managed {
        current.created += 1;
        match m.counts_as {
            Stable::Started => current.started += 1,
            Stable::Stopped => current.stopped += 1,
            Stable::Suspended => current.suspended += 1,
            Stable::Created => {}
        }
        current.in_transition += usize::from(!m.stable);
    }
    current
}

/// `Some(min)` when `count` is below the minimum.
fn above(count: usize, min: Option<u32>) -> Option<usize> {
    min.map(|m| m as usize).filter(|&m| count < m)
}

/// `Some(max)` when `count` is above the maximum.
fn below(count: usize, max: Option<u32>) -> Option<usize> {
    max.map(|m| m as usize).filter(|&m| count > m)
}

/// The group's machines that count, each id once, with what the others were skipped for.
fn managed<'a>(machines: &'a [Machine], policy: &Policy) -> (Vec<Managed<'a>>, Skipped) {
    let mut skipped = Skipped::default();
    let mut seen: HashSet<&str> = HashSet::with_capacity(machines.len());
    let mut managed = Vec::with_capacity(machines.len());
    for machine in machines {
        if machine.host_status != "ok" || machine.process_group != policy.process_group {
            continue;
        }
        if machine.id.is_empty() {
            skipped.no_id += 1;
            continue;
        }
        if !seen.insert(&machine.id) {
            skipped.duplicate_id += 1;
            continue;
        }
        let (counts_as, stable) = match machine.class() {
            StateClass::Stable(s) => (s, true),
            StateClass::Transient(Toward::State(s)) => (s, false),
            StateClass::Transient(Toward::Initial) => match policy.initial_state {
                InitialState::Started => (Stable::Started, false),
                InitialState::Stopped => (Stable::Stopped, false),
            },
            StateClass::Ignored => {
                skipped.ignored_state += 1;
                continue;
            }
        };
        managed.push(Managed {
            machine,
            counts_as,
            stable,
        });
    }
    (managed, skipped)
}

/// Clones of `source`, regions in turn from the cursor (an empty region, or none configured,
/// means the source's region).
fn launches(source: &Machine, count: usize, policy: &Policy) -> Launches {
    let regions = (0..count)
        .map(|k| {
            let region = match policy.regions {
                [] => "",
                regions => regions[(policy.region_cursor + k) % regions.len()].as_str(),
            };
            if region.is_empty() {
                source.region.clone()
            } else {
                region.to_string()
            }
        })
        .collect();
    Launches {
        source: source.id.clone(),
        config: source
            .clone
            .as_ref()
            .map(|c| c.pinned_config())
            .unwrap_or_default(),
        regions,
        skip_launch: policy.initial_state == InitialState::Stopped,
    }
}

#[cfg(test)]
mod tests;
