//! The replay: every step of the history through the same targets → scale controls → plan as
//! `serve`, on a simulated fleet in which every action completes within its step. Pure: the
//! history, the settings and the starting fleet in; the series and its summary out.

use serde::Serialize;
use serde_json::value::RawValue;

use crate::clock::{self, Stamp};
use crate::collector::Grid;
use crate::config::{GroupConfig, InitialState, ScaleDownMethod, StopOrder};
use crate::expr::{MetricValues, TargetExprs};
use crate::plan::controls::{Controls, Direction, Memory};
use crate::plan::{self, Action, Policy, TargetCounts};
use crate::wire::{CloneSource, Machine};

/// What one replay of a group needs besides the history.
pub struct Scenario<'a> {
    pub group: &'a str,
    pub targets: &'a TargetExprs,
    pub config: &'a GroupConfig,
    /// `false`: the baseline, every scale control off (the Go program's behaviour).
    pub controls: bool,
    pub max_machines: usize,
    pub time_offset: i32,
    /// The fleet at the first step.
    pub created: usize,
    pub started: usize,
}

/// What a run did, in the report's terms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    pub starts: usize,
    pub stops: usize,
    pub creates: usize,
    pub destroys: usize,
    pub started_machine_seconds: f64,
    pub peak_started: usize,
    /// Time with fewer started machines than the raw `min` target.
    pub under_target_seconds: f64,
    /// How often scaling flipped between up and down.
    pub direction_changes: usize,
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub t: Stamp,
    /// The targets the expressions asked for; `None` when the metrics failed.
    pub target: Option<TargetCounts>,
    pub effective: Option<TargetCounts>,
    /// After the step's action.
    pub created: usize,
    pub started: usize,
    pub action: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub summary: Summary,
    pub steps: Vec<Step>,
}

/// The values expressions see at each step (history, constants, time variables), kept in one
/// map updated in place: a replay evaluates hundreds of thousands of steps, and building a
/// map per step was most of its time.
pub struct StepMetrics<'a> {
    grid: &'a Grid,
    values: MetricValues,
    time_offset: i32,
    /// Time variables no metric shadows (a metric with such a name keeps its value).
    time_variables: [bool; 5],
}

impl<'a> StepMetrics<'a> {
    pub fn new(grid: &'a Grid, constants: &[(String, f64)], time_offset: i32) -> StepMetrics<'a> {
        let mut values: MetricValues = grid.metrics.iter().map(|n| (n.clone(), 0.0)).collect();
        values.extend(constants.iter().cloned());
        let time_variables = clock::TIME_VARIABLES.map(|name| !values.contains_key(name));
        for (name, shown) in clock::TIME_VARIABLES.iter().zip(time_variables) {
            if shown {
                values.insert(name.to_string(), 0.0);
            }
        }
        StepMetrics {
            grid,
            values,
            time_offset,
            time_variables,
        }
    }

    /// The values at step `k`, or `None` when a metric has no sample there.
    pub fn at(&mut self, k: usize) -> Option<&MetricValues> {
        for (name, row) in self.grid.metrics.iter().zip(&self.grid.values) {
            let value = row[k]?;
            if let Some(slot) = self.values.get_mut(name) {
                *slot = value;
            }
        }
        let now = clock::time_variables(self.grid.time(k), self.time_offset);
        for ((name, value), shown) in now.into_iter().zip(self.time_variables) {
            if let Some(slot) = self.values.get_mut(name).filter(|_| shown) {
                *slot = value;
            }
        }
        Some(&self.values)
    }
}

/// Whether a metric has no sample at step `k` (a failed collection).
pub fn failed_at(grid: &Grid, k: usize) -> bool {
    grid.values.iter().any(|row| row[k].is_none())
}

/// Replays `scenario` over every step of `grid`.
pub fn replay(grid: &Grid, constants: &[(String, f64)], s: &Scenario) -> Run {
    let controls = if s.controls {
        Controls::from(s.config)
    } else {
        Controls::default()
    };
    let policy = Policy {
        process_group: s.group,
        regions: &[],
        region_cursor: 0,
        initial_state: s.config.initial_state(),
        max_machines: s.max_machines,
        max_scale_up: s.config.max_scale_up.filter(|_| s.controls),
        max_scale_down: s.config.max_scale_down.filter(|_| s.controls),
        stop_order: if s.controls {
            s.config.stop_order
        } else {
            StopOrder::Id
        },
        stop_priority: None,
        scale_down_method: if s.controls {
            s.config.scale_down_method
        } else {
            ScaleDownMethod::Stop
        },
    };
    let mut fleet = Fleet::new(s.group, s.created, s.started);
    let mut memory = Memory::default();
    let mut summary = Summary::default();
    let mut last_direction = None;
    let step_seconds = grid.step_ms as f64 / 1000.0;
    let limit = u32::try_from(s.max_machines).unwrap_or(u32::MAX);
    let mut steps = Vec::with_capacity(grid.steps());
    let mut metrics = StepMetrics::new(grid, constants, s.time_offset);
    for k in 0..grid.steps() {
        let t = grid.time(k);
        let raw = match metrics.at(k) {
            Some(metrics) => s
                .targets
                .evaluate(metrics)
                .map(|mut targets| {
                    targets.clamp_minimums_to(limit);
                    targets
                })
                .map_err(|e| e.to_string()),
            None => Err("a metric has no sample".to_string()),
        };
        let decided =
            plan::decide_and_plan(&controls, &mut memory, t, raw, &fleet.machines, &policy);
        let (target, effective, action) = match decided {
            Ok((decision, plan)) => {
                if let Some(direction) =
                    fleet.apply(&plan.action, policy.initial_state, &mut summary)
                {
                    memory.acted(direction, t);
                    if last_direction.is_some_and(|d| d != direction) {
                        summary.direction_changes += 1;
                    }
                    last_direction = Some(direction);
                }
                (Some(decision.raw), Some(decision.effective), plan.summary())
            }
            Err(e) => (None, None, format!("metrics failed: {e}")),
        };
        let started = fleet.started();
        summary.started_machine_seconds += started as f64 * step_seconds;
        summary.peak_started = summary.peak_started.max(started);
        if target
            .and_then(|t| t.started.min)
            .is_some_and(|min| started < min as usize)
        {
            summary.under_target_seconds += step_seconds;
        }
        steps.push(Step {
            t,
            target,
            effective,
            created: fleet.machines.len(),
            started,
            action,
        });
    }
    Run { summary, steps }
}

/// The simulated fleet: machines `m000001`, … in one process group; ids in creation order,
/// so the planner's id order is age order.
struct Fleet {
    machines: Vec<Machine>,
    next: usize,
    group: String,
}

impl Fleet {
    fn new(group: &str, created: usize, started: usize) -> Fleet {
        let mut fleet = Fleet {
            machines: Vec::with_capacity(created),
            next: 1,
            group: group.to_string(),
        };
        for i in 0..created {
            fleet.add(if i < started { "started" } else { "stopped" });
        }
        fleet
    }

    fn add(&mut self, state: &str) {
        let id = format!("m{:06}", self.next);
        self.next += 1;
        let created_at = format!("{:020}", self.next);
        self.machines.push(Machine {
            id,
            state: state.to_string(),
            region: "sim".to_string(),
            host_status: "ok".to_string(),
            process_group: self.group.clone(),
            created_at,
            clone: RawValue::from_string("{}".to_string())
                .ok()
                .map(|config| CloneSource {
                    config,
                    image: String::new(),
                }),
        });
    }

    fn started(&self) -> usize {
        self.machines
            .iter()
            .filter(|m| m.state == "started")
            .count()
    }

    fn set(&mut self, ids: &[String], state: &str, limit: usize) -> usize {
        let mut n = 0;
        for id in ids.iter().take(limit) {
            if let Some(m) = self.machines.iter_mut().find(|m| m.id == *id) {
                m.state = state.to_string();
                n += 1;
            }
        }
        n
    }

    /// Carries `action` out at once; the direction it moved the fleet, if it did.
    fn apply(
        &mut self,
        action: &Action,
        initial: InitialState,
        summary: &mut Summary,
    ) -> Option<Direction> {
        let moved = match action {
            Action::None | Action::NoCloneSource => 0,
            Action::Create(l) => {
                let state = match initial {
                    InitialState::Started => "started",
                    InitialState::Stopped => "stopped",
                };
                for _ in &l.regions {
                    self.add(state);
                }
                summary.creates += l.regions.len();
                l.regions.len()
            }
            Action::Destroy(ids) => {
                let before = self.machines.len();
                self.machines.retain(|m| !ids.contains(&m.id));
                summary.destroys += before - self.machines.len();
                before - self.machines.len()
            }
            Action::Start { candidates, needed } => {
                let n = self.set(candidates, "started", *needed);
                summary.starts += n;
                n
            }
            Action::Stop { candidates, needed } => {
                let n = self.set(candidates, "stopped", *needed);
                summary.stops += n;
                n
            }
            Action::Suspend { candidates, needed } => {
                let n = self.set(candidates, "suspended", *needed);
                summary.stops += n;
                n
            }
        };
        action.direction().filter(|_| moved > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn grid(values: &[Option<f64>]) -> Grid {
        Grid {
            from: 0,
            step_ms: 15_000,
            steps: values.len(),
            metrics: vec!["q".into()],
            values: vec![values.to_vec()],
        }
    }

    fn scenario<'a>(
        targets: &'a TargetExprs,
        config: &'a GroupConfig,
        controls: bool,
    ) -> Scenario<'a> {
        Scenario {
            group: "app",
            targets,
            config,
            controls,
            max_machines: 100,
            time_offset: 0,
            created: 4,
            started: 0,
        }
    }

    fn started_q() -> (TargetExprs, GroupConfig) {
        let config = GroupConfig {
            started_machine_count: "q".into(),
            scale_down_stabilization: Duration::from_secs(60),
            ..GroupConfig::default()
        };
        (TargetExprs::compile(&config, &["q"]).unwrap(), config)
    }

    #[test]
    fn a_square_wave_flaps_without_a_window_and_not_with_one() {
        let (targets, config) = started_q();
        let wave: Vec<Option<f64>> = (0..20)
            .map(|k| Some(if k % 2 == 0 { 3.0 } else { 1.0 }))
            .collect();
        let baseline = replay(&grid(&wave), &[], &scenario(&targets, &config, false));
        assert_eq!(baseline.summary.starts, 3 + 9 * 2);
        assert_eq!(baseline.summary.stops, 10 * 2);
        assert_eq!(baseline.summary.direction_changes, 19);
        let held = replay(&grid(&wave), &[], &scenario(&targets, &config, true));
        assert_eq!(held.summary.starts, 3);
        assert_eq!(held.summary.stops, 0);
        assert_eq!(held.summary.direction_changes, 0);
        assert_eq!(held.summary.peak_started, 3);
        assert_eq!(held.steps[1].target.unwrap().started.max, Some(1));
        assert_eq!(held.steps[1].effective.unwrap().started.max, Some(3));
        assert_eq!(held.summary.started_machine_seconds, 20.0 * 3.0 * 15.0);
    }

    #[test]
    fn gaps_are_failed_steps_and_under_target_time_is_counted() {
        let (targets, config) = started_q();
        let values = [Some(2.0), None, Some(6.0), Some(6.0)];
        let run = replay(&grid(&values), &[], &scenario(&targets, &config, false));
        assert_eq!(run.steps[1].target, None);
        assert!(run.steps[1].action.starts_with("metrics failed"));
        assert_eq!(run.steps[1].started, 2, "nothing changes on a failed step");
        // 6 wanted, only 4 machines exist: two steps under target.
        assert_eq!(run.summary.under_target_seconds, 30.0);
        assert_eq!(run.summary.peak_started, 4);
    }

    #[test]
    fn step_metrics_are_updated_in_place_with_the_step_time() {
        let mut g = grid(&[Some(1.0), None, Some(3.0)]);
        g.from = 1_795_850_879_000; // 2026-11-28 07:27:59 UTC, a Saturday
        g.step_ms = 3_600_000;
        g.metrics.push("hour".into());
        g.values.push(vec![Some(42.0); 3]);
        let constants = [("w".to_string(), 2.0)];
        let mut m = StepMetrics::new(&g, &constants, -5 * 3600);
        let at0 = m.at(0).unwrap().clone();
        assert_eq!(
            (at0["q"], at0["w"], at0["hour"]),
            (1.0, 2.0, 42.0),
            "the metric wins"
        );
        assert_eq!(
            (at0["minute"], at0["weekday"], at0["day"]),
            (27.0, 6.0, 28.0)
        );
        assert!(m.at(1).is_none());
        assert!(failed_at(&g, 1) && !failed_at(&g, 2));
        let at2 = m.at(2).unwrap();
        assert_eq!((at2["q"], at2["day"], at2["hour"]), (3.0, 28.0, 42.0));
        assert_eq!(
            at2.len(),
            7,
            "q, hour, w and four time variables, nothing added per step"
        );
    }

    #[test]
    fn constants_stand_in_for_sources_without_history() {
        let config = GroupConfig {
            started_machine_count: "q + w".into(),
            ..GroupConfig::default()
        };
        let targets = TargetExprs::compile(&config, &["q", "w"]).unwrap();
        let run = replay(
            &grid(&[Some(1.0)]),
            &[("w".into(), 2.0)],
            &scenario(&targets, &config, true),
        );
        assert_eq!(run.steps[0].started, 3);
    }
}
