//! Scale controls: what stops thrashing, as pure functions of the raw targets, the time and a
//! small per-app memory. Every control is off by default (Go-compatible).
//!
//! * Stabilization windows (Kubernetes HPA semantics, per bound): scale-down uses the highest
//!   `max` recommended within the down window, so a machine goes only when every
//!   recommendation in the window agreed; scale-up uses the lowest `min` within the up window.
//! * Cooldown: after a scaling action, no action in the opposite direction until it passes;
//!   the same direction goes on, so a growing queue keeps scaling up.
//! * Fallback: from the Nth consecutive failed collection, constant targets replace the
//!   expressions until a collection succeeds.
//!
//! Step limits act on the plan's sizes and live in `plan` (`Policy::max_scale_up`).

use std::collections::VecDeque;
use std::time::Duration;

use super::{Bounds, Current, TargetCounts};
use crate::config::{Count, GroupConfig};

/// A point in time, milliseconds since the Unix epoch (wall time: a replay passes the time of
/// the step it replays).
pub type Stamp = i64;

/// The most recommendations one app remembers (an hour at 350 ms intervals); older ones go
/// first. Windows are at most an hour (validated), so this bound only bites for very short
/// intervals.
const MAX_REMEMBERED: usize = 10_000;

/// The scale controls of a config.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Controls {
    pub scale_up_stabilization: Duration,
    pub scale_down_stabilization: Duration,
    pub cooldown: Duration,
    pub fallback: Option<Fallback>,
}

/// `fallback-after` and the constant targets used then (`None`: no target for that count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fallback {
    pub after: u32,
    pub created: Option<u32>,
    pub started: Option<u32>,
}

/// Which way an action moved the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

/// A control that held an action back (for logs and `-dry-run`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Held {
    ScaleUpStabilization,
    ScaleDownStabilization,
    MaxScaleUp,
    MaxScaleDown,
    Cooldown,
}

impl Held {
    /// The config key of the control.
    pub fn as_str(self) -> &'static str {
        match self {
            Held::ScaleUpStabilization => "scale-up-stabilization",
            Held::ScaleDownStabilization => "scale-down-stabilization",
            Held::MaxScaleUp => "max-scale-up",
            Held::MaxScaleDown => "max-scale-down",
            Held::Cooldown => "cooldown",
        }
    }
}

/// What one app remembers between reconciles.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Memory {
    /// Raw recommendations, oldest first.
    recommendations: VecDeque<(Stamp, TargetCounts)>,
    last_action: Option<(Direction, Stamp)>,
    /// Consecutive failed collections.
    failures: u32,
    /// Whether the window was filled from history (or that was tried) since this memory began.
    pub prefilled: bool,
}

/// A change of the fallback state, to be logged as a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackChange {
    Entered,
    Left,
}

/// The targets of one cycle after the controls.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// What the expressions asked for (the fallback targets while in fallback).
    pub raw: TargetCounts,
    pub effective: TargetCounts,
    /// Controls that held an action back, given the current counts.
    pub held: Vec<Held>,
    pub in_fallback: bool,
    pub fallback_change: Option<FallbackChange>,
}

impl Memory {
    /// Remembers a recommendation without deciding (history read at start-up).
    pub fn record(&mut self, at: Stamp, targets: TargetCounts) {
        if self.recommendations.len() == MAX_REMEMBERED {
            self.recommendations.pop_front();
        }
        self.recommendations.push_back((at, targets));
    }

    /// Remembers that an action moved the app, for the cooldown.
    pub fn acted(&mut self, direction: Direction, at: Stamp) {
        self.last_action = Some((direction, at));
    }

    /// Whether the app is in fallback now.
    pub fn in_fallback(&self, controls: &Controls) -> bool {
        controls.fallback.is_some_and(|f| self.failures >= f.after)
    }

    fn forget_before(&mut self, oldest: Stamp) {
        while self
            .recommendations
            .front()
            .is_some_and(|(t, _)| *t < oldest)
        {
            self.recommendations.pop_front();
        }
    }
}

impl From<&GroupConfig> for Controls {
    fn from(g: &GroupConfig) -> Controls {
        Controls {
            scale_up_stabilization: g.scale_up_stabilization,
            scale_down_stabilization: g.scale_down_stabilization,
            cooldown: g.cooldown,
            fallback: (g.fallback_after > 0).then_some(Fallback {
                after: g.fallback_after,
                created: g.fallback_created_machine_count,
                started: g.fallback_started_machine_count,
            }),
        }
    }
}

/// One cycle's targets: `raw` is the error when the metrics could not be collected or
/// evaluated, and that error comes back when nothing may be done (a failed cycle, as in Go);
/// with a fallback, the fallback targets go through the controls like any recommendation.
pub fn decide<E>(
    controls: &Controls,
    memory: &mut Memory,
    now: Stamp,
    raw: Result<TargetCounts, E>,
    current: &Current,
) -> Result<Decision, E> {
    let was_in_fallback = memory.in_fallback(controls);
    memory.failures = match raw {
        Ok(_) => 0,
        Err(_) => memory.failures.saturating_add(1),
    };
    let in_fallback = memory.in_fallback(controls);
    let fallback_change = match (was_in_fallback, in_fallback) {
        (false, true) => Some(FallbackChange::Entered),
        (true, false) => Some(FallbackChange::Left),
        _ => None,
    };
    let raw = match (raw, controls.fallback) {
        (Ok(raw), _) => raw,
        (Err(_), Some(f)) if in_fallback => TargetCounts {
            created: Bounds {
                min: f.created,
                max: f.created,
            },
            started: Bounds {
                min: f.started,
                max: f.started,
            },
        },
        (Err(e), _) => return Err(e),
    };
    let window = controls
        .scale_up_stabilization
        .max(controls.scale_down_stabilization);
    memory.record(now, raw);
    memory.forget_before(now.saturating_sub(millis(window)));

    let mut held = Vec::new();
    let mut effective = raw;
    let up_since = now.saturating_sub(millis(controls.scale_up_stabilization));
    let down_since = now.saturating_sub(millis(controls.scale_down_stabilization));
    let in_window = |since: Stamp| {
        memory
            .recommendations
            .iter()
            .filter(move |(t, _)| *t >= since)
            .map(|(_, r)| *r)
    };
    for count in [Count::Created, Count::Started] {
        let n = current.count(count);
        let raw_bounds = raw.bounds(count);
        let bounds = effective.bounds_mut(count);
        // Lowest min in the window; `None` (no bound) is the lowest of all. A zero window
        // is this cycle alone (an earlier cycle within the same millisecond is not in it).
        if !controls.scale_up_stabilization.is_zero() {
            bounds.min = in_window(up_since)
                .map(|r| r.bounds(count).min)
                .try_fold(u32::MAX, |low, m| m.map(|m| low.min(m)));
        }
        // Highest max in the window; `None` (no bound) is the highest of all.
        if !controls.scale_down_stabilization.is_zero() {
            bounds.max = in_window(down_since)
                .map(|r| r.bounds(count).max)
                .try_fold(0, |high, m| m.map(|m| high.max(m)));
        }
        if wants_up(&raw_bounds, n) && !wants_up(bounds, n) {
            held.push(Held::ScaleUpStabilization);
        }
        if wants_down(&raw_bounds, n) && !wants_down(bounds, n) {
            held.push(Held::ScaleDownStabilization);
        }
        let cooling = memory
            .last_action
            .filter(|(_, at)| now < at.saturating_add(millis(controls.cooldown)));
        let opposite_wanted = match cooling {
            Some((Direction::Up, _)) => wants_down(bounds, n),
            Some((Direction::Down, _)) => wants_up(bounds, n),
            None => false,
        };
        match cooling {
            Some((Direction::Up, _)) => bounds.max = None,
            Some((Direction::Down, _)) => bounds.min = None,
            None => {}
        }
        if opposite_wanted {
            held.push(Held::Cooldown);
        }
    }
    held.sort_unstable();
    held.dedup();
    Ok(Decision {
        raw,
        effective,
        held,
        in_fallback,
        fallback_change,
    })
}

fn wants_up(b: &Bounds, count: usize) -> bool {
    b.min.is_some_and(|m| count < m as usize)
}

fn wants_down(b: &Bounds, count: usize) -> bool {
    b.max.is_some_and(|m| count > m as usize)
}

fn millis(d: Duration) -> Stamp {
    Stamp::try_from(d.as_millis()).unwrap_or(Stamp::MAX)
}

#[cfg(test)]
mod tests;
