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

use std::collections::HashSet;

use serde_json::Value;

use crate::config::InitialState;
use crate::wire::{CreateRequest, Machine, Stable, StateClass, Toward};

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
    /// Every bound lowered to at most `max`; true if one was lowered.
    pub fn clamp_to(&mut self, max: u32) -> bool {
        let mut clamped = false;
        for bound in [
            &mut self.created.min,
            &mut self.created.max,
            &mut self.started.min,
            &mut self.started.max,
        ]
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
    /// More machines are needed but none exists to clone from.
    NoCloneSource,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub current: Current,
    pub skipped: Skipped,
    pub action: Action,
}

impl Plan {
    /// Machines wanted but not available to start (the Go program warns about this).
    pub fn shortfall(&self) -> usize {
        match &self.action {
            Action::Start { candidates, needed } => needed.saturating_sub(candidates.len()),
            _ => 0,
        }
    }

    /// A short description for logs: `start 3 of [id, …]`.
    pub fn summary(&self) -> String {
        match &self.action {
            Action::None => "no scale".to_string(),
            Action::Create(l) => format!(
                "create {} cloned from {} in [{}]",
                l.regions.len(),
                l.source,
                l.regions.join(", ")
            ),
            Action::Destroy(ids) => format!("destroy {} [{}]", ids.len(), ids.join(", ")),
            Action::Start { candidates, .. } if candidates.is_empty() => {
                format!(
                    "no scale: {} short, nothing left to start",
                    self.shortfall()
                )
            }
            Action::Start { candidates, needed } => format!(
                "start {} of [{}]",
                needed.min(&candidates.len()),
                candidates.join(", ")
            ),
            Action::Stop { candidates, needed } => format!(
                "stop {} of [{}]",
                needed.min(&candidates.len()),
                candidates.join(", ")
            ),
            Action::NoCloneSource => "cannot create: no machine to clone".to_string(),
        }
    }
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
    let mut current = Current::default();
    for m in &managed {
        current.created += 1;
        match m.counts_as {
            Stable::Started => current.started += 1,
            Stable::Stopped => current.stopped += 1,
            Stable::Suspended => current.suspended += 1,
            Stable::Created => {}
        }
        current.in_transition += usize::from(!m.stable);
    }
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

    let action = if let Some(min) = above(created, targets.created.min) {
        match clone_source {
            Some(source) => Action::Create(launches(source, (min - created).min(limit), policy)),
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
        .take((created - max).min(limit))
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
        Action::Start {
            candidates: by_id(&[Stable::Suspended, Stable::Stopped]),
            needed: (min - started).min(limit),
        }
    } else if let Some(max) = below(started, targets.started.max) {
        Action::Stop {
            candidates: by_id(&[Stable::Started]),
            needed: (started - max).min(limit),
        }
    } else {
        Action::None
    };
    Plan {
        current,
        skipped,
        action,
    }
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
    let mut seen: HashSet<&str> = HashSet::new();
    let mut managed = Vec::new();
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
