//! The pure decision: from target counts and the listed machines, what to create, destroy,
//! start or stop. No I/O; `eval`, `--dry-run` and `serve` all use this one function.
//!
//! The Go program's rules: only machines with `host_status == "ok"` in the configured process
//! group count; exactly one kind of action per cycle, in the order create, destroy, start,
//! stop. One improvement: suspended machines count as created but not started, are resumed
//! before stopped machines are started (resuming is faster than a cold boot), and are destroyed
//! after stopped ones.

use serde_json::Value;

use crate::machines::Machine;

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

/// Inputs of the decision besides targets and machines.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    pub process_group: &'a str,
    /// Regions for new machines, used in turn starting at `region_cursor`.
    pub regions: &'a [String],
    pub region_cursor: usize,
    /// `initial-machine-state: stopped`: create machines without booting them.
    pub skip_launch: bool,
}

/// Machines of the managed group, by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Current {
    /// Every managed machine, whatever its state (the Go program's "created" count).
    pub created: usize,
    pub started: usize,
    pub stopped: usize,
    pub suspended: usize,
}

/// One machine to create.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub region: String,
    /// The clone source's config as the API returned it, with `image` pinned.
    pub config: Value,
    pub skip_launch: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    None,
    Create {
        source: String,
        launches: Vec<Launch>,
    },
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
            Action::Create { source, launches } => {
                let regions: Vec<&str> = launches.iter().map(|l| l.region.as_str()).collect();
                format!(
                    "create {} cloned from {source} in [{}]",
                    launches.len(),
                    regions.join(", ")
                )
            }
            Action::Destroy(ids) => format!("destroy {} [{}]", ids.len(), ids.join(", ")),
            Action::Start { candidates, .. } if candidates.is_empty() => {
                format!(
                    "no scale: {} short, nothing left to start",
                    self.shortfall()
                )
            }
            Action::Start { candidates, needed } => {
                format!(
                    "start {} of [{}]",
                    needed.min(&candidates.len()),
                    candidates.join(", ")
                )
            }
            Action::Stop { candidates, needed } => {
                format!(
                    "stop {} of [{}]",
                    needed.min(&candidates.len()),
                    candidates.join(", ")
                )
            }
            Action::NoCloneSource => "cannot create: no machine to clone".to_string(),
        }
    }
}

/// Decides the single action of this cycle.
pub fn plan(targets: &TargetCounts, machines: &[Machine], policy: &Policy) -> Plan {
    let managed: Vec<&Machine> = machines
        .iter()
        .filter(|m| m.host_status == "ok" && m.process_group() == policy.process_group)
        .collect();
    let in_state = |state: &'static str| in_state(&managed, state);
    let current = Current {
        created: managed.len(),
        started: in_state("started").count(),
        stopped: in_state("stopped").count(),
        suspended: in_state("suspended").count(),
    };
    let ids_by_id = |states: &[&'static str]| -> Vec<String> {
        states
            .iter()
            .flat_map(|s| {
                let mut ids: Vec<String> = in_state(s).map(|m| m.id.clone()).collect();
                ids.sort_unstable();
                ids
            })
            .collect()
    };

    let action = if let Some(min) = targets
        .created
        .min
        .filter(|&min| current.created < min as usize)
    {
        create(&managed, min as usize - current.created, policy)
    } else if let Some(max) = targets
        .created
        .max
        .filter(|&max| current.created > max as usize)
    {
        let ids: Vec<String> = ["stopped", "suspended", "created", "started"]
            .iter()
            .flat_map(|s| in_state(s).map(|m| m.id.clone()))
            .take(current.created - max as usize)
            .collect();
        Action::Destroy(ids)
    } else if let Some(min) = targets
        .started
        .min
        .filter(|&min| current.started < min as usize)
    {
        Action::Start {
            candidates: ids_by_id(&["suspended", "stopped"]),
            needed: min as usize - current.started,
        }
    } else if let Some(max) = targets
        .started
        .max
        .filter(|&max| current.started > max as usize)
    {
        Action::Stop {
            candidates: ids_by_id(&["started"]),
            needed: current.started - max as usize,
        }
    } else {
        Action::None
    };
    Plan { current, action }
}

fn in_state<'a>(managed: &'a [&'a Machine], state: &'a str) -> impl Iterator<Item = &'a Machine> {
    managed.iter().copied().filter(move |m| m.state == state)
}

/// Clones of the first managed machine (API order) that has a config.
fn create(managed: &[&Machine], count: usize, policy: &Policy) -> Action {
    let Some(source) = managed.iter().find(|m| m.config.is_some()) else {
        return Action::NoCloneSource;
    };
    let mut config = source.config.clone().unwrap_or_default();
    if let (Some(image), Some(obj)) = (&source.image_ref, config.as_object_mut()) {
        obj.insert("image".to_string(), Value::String(image.full()));
    }
    let launches = (0..count)
        .map(|k| {
            let region = match policy.regions {
                [] => "",
                regions => regions[(policy.region_cursor + k) % regions.len()].as_str(),
            };
            Launch {
                region: if region.is_empty() {
                    source.region.clone()
                } else {
                    region.to_string()
                },
                config: config.clone(),
                skip_launch: policy.skip_launch,
            }
        })
        .collect();
    Action::Create {
        source: source.id.clone(),
        launches,
    }
}

#[cfg(test)]
mod tests;
