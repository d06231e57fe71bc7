use serde_json::json;
use serde_json::value::RawValue;

use super::*;
use crate::config::{ScaleDownMethod, Step, StopOrder};
use crate::wire::CloneSource;

/// A healthy machine with no process-group metadata (the Go tests' convention; they run with
/// an empty process group), clonable.
fn m(id: &str, state: &str) -> Machine {
    Machine {
        id: id.into(),
        state: state.into(),
        region: "iad".into(),
        host_status: "ok".into(),
        clone: Some(source(json!({"image": "img", "metadata": {}}), "")),
        ..Machine::default()
    }
}

fn source(config: serde_json::Value, image: &str) -> CloneSource {
    CloneSource {
        config: RawValue::from_string(config.to_string()).unwrap(),
        image: image.into(),
    }
}

fn in_group(mut machine: Machine, group: &str) -> Machine {
    machine.process_group = group.into();
    machine
}

const NO_REGIONS: &[String] = &[];

fn policy(group: &str) -> Policy<'_> {
    Policy {
        process_group: group,
        regions: NO_REGIONS,
        region_cursor: 0,
        initial_state: InitialState::Started,
        max_machines: 1000,
        max_scale_up: None,
        max_scale_down: None,
        stop_order: StopOrder::Id,
        stop_priority: None,
        scale_down_method: ScaleDownMethod::Stop,
    }
}

fn started(min: u32, max: u32) -> TargetCounts {
    TargetCounts {
        started: Bounds {
            min: Some(min),
            max: Some(max),
        },
        ..TargetCounts::default()
    }
}

fn created(min: Option<u32>, max: Option<u32>) -> TargetCounts {
    TargetCounts {
        created: Bounds { min, max },
        ..TargetCounts::default()
    }
}

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// Go reconciler_test.go case 12.
#[test]
fn no_scale_within_bounds() {
    let p = plan(
        &started(1, 2),
        &[m("1", "started"), m("2", "stopped")],
        &policy(""),
    );
    assert_eq!(p.action, Action::None);
    assert_eq!(
        p.current,
        Current {
            created: 2,
            started: 1,
            stopped: 1,
            suspended: 0,
            in_transition: 0,
        }
    );
}

// Case 13: clone the first machine; the one without host_status is ignored.
#[test]
fn create_clones_first_machine() {
    let mut one = m("1", "started");
    one.clone = Some(source(
        json!({"image": "old", "metadata": {"foo": "bar"}}),
        "",
    ));
    let mut two = m("2", "stopped");
    two.region = "den".into();
    two.clone = Some(source(json!({"metadata": {"baz": "bat"}}), ""));
    let mut three = m("3", "destroying");
    three.host_status = String::new();
    three.clone = None;
    let p = plan(&created(Some(4), Some(4)), &[one, two, three], &policy(""));
    let Action::Create(l) = &p.action else {
        panic!("{:?}", p.action)
    };
    assert_eq!(l.source, "1");
    assert_eq!(l.config["metadata"]["foo"], "bar");
    assert_eq!(
        l.regions,
        ["iad", "iad"],
        "no regions configured: the source's region"
    );
    assert!(!l.skip_launch);
    assert_eq!(p.current.created, 2);
}

// Case 14.
#[test]
fn create_without_any_machine_is_blocked() {
    let p = plan(&created(Some(1), None), &[], &policy(""));
    assert_eq!(p.action, Action::NoCloneSource);
}

// Case 15: stopped machines go first, in API order.
#[test]
fn destroy_prefers_stopped_machines() {
    let machines = [
        m("1", "started"),
        m("2", "stopped"),
        m("3", "stopped"),
        m("4", "stopped"),
    ];
    let p = plan(&created(Some(2), Some(2)), &machines, &policy(""));
    assert_eq!(p.action, Action::Destroy(ids(&["2", "3"])));
}

// Case 16: max 0 is raised to 1 by the evaluator, so the started machine survives.
#[test]
fn destroy_never_removes_the_last_machine() {
    let machines = [
        m("1", "stopped"),
        m("2", "stopped"),
        m("3", "started"),
        m("4", "created"),
    ];
    let p = plan(&created(None, Some(1)), &machines, &policy(""));
    assert_eq!(p.action, Action::Destroy(ids(&["1", "2", "4"])));
}

// Cases 17 and 18: stopped machines in id order; failures are handled by apply.
#[test]
fn start_picks_stopped_machines_in_id_order() {
    let machines = [
        m("1", "started"),
        m("4", "stopped"),
        m("3", "stopped"),
        m("2", "stopped"),
    ];
    let p = plan(&started(3, 3), &machines, &policy(""));
    assert_eq!(
        p.action,
        Action::Start {
            candidates: ids(&["2", "3", "4"]),
            needed: 2
        }
    );
    assert_eq!(p.shortfall(), 0);
}

// Cases 19 and 20: the lowest ids are stopped first.
#[test]
fn stop_picks_started_machines_in_id_order() {
    let machines = [
        m("3", "started"),
        m("1", "started"),
        m("2", "started"),
        m("4", "stopped"),
    ];
    let p = plan(&started(1, 1), &machines, &policy(""));
    assert_eq!(
        p.action,
        Action::Stop {
            candidates: ids(&["1", "2", "3"]),
            needed: 2
        }
    );
}

#[test]
fn created_rules_come_before_started_rules() {
    let targets = TargetCounts {
        created: Bounds {
            min: Some(3),
            max: Some(3),
        },
        started: Bounds {
            min: Some(0),
            max: Some(0),
        },
    };
    let p = plan(&targets, &[m("1", "started")], &policy(""));
    assert!(matches!(p.action, Action::Create { .. }));
}

#[test]
fn suspended_machines_are_created_not_started_and_resumed_first() {
    let machines = [
        m("a", "stopped"),
        m("c", "suspended"),
        m("b", "suspended"),
        m("d", "started"),
    ];
    let p = plan(&started(3, 3), &machines, &policy(""));
    assert_eq!(
        p.current,
        Current {
            created: 4,
            started: 1,
            stopped: 1,
            suspended: 2,
            in_transition: 0,
        }
    );
    assert_eq!(
        p.action,
        Action::Start {
            candidates: ids(&["b", "c", "a"]),
            needed: 2
        }
    );
}

#[test]
fn destroy_order_is_stopped_suspended_created_started() {
    let machines = [
        m("1", "started"),
        m("2", "created"),
        m("3", "suspended"),
        m("4", "stopped"),
        m("6", "started"),
    ];
    let p = plan(&created(Some(1), Some(1)), &machines, &policy(""));
    assert_eq!(p.action, Action::Destroy(ids(&["4", "3", "2", "1"])));
}

// Issue 9, defect 1: a machine in transition counts but is never destroyed, so the last
// stable machine (the clone source) stays.
#[test]
fn destroy_keeps_the_last_stable_machine_when_others_are_in_transition() {
    let machines = [
        m("1", "started"),
        m("2", "created"),
        m("3", "suspended"),
        m("4", "stopped"),
        m("5", "starting"),
    ];
    let p = plan(&created(Some(1), Some(1)), &machines, &policy(""));
    assert_eq!(p.current.created, 5);
    assert_eq!(p.current.in_transition, 1);
    assert_eq!(p.action, Action::Destroy(ids(&["4", "3", "2"])));
}

#[test]
fn only_the_configured_process_group_counts() {
    let machines = [
        in_group(m("1", "started"), "app"),
        in_group(m("2", "stopped"), "worker"),
        m("3", "stopped"),
        in_group(m("4", "stopped"), "app"),
    ];
    let p = plan(&started(2, 2), &machines, &policy("app"));
    assert_eq!(p.current.created, 2);
    assert_eq!(
        p.action,
        Action::Start {
            candidates: ids(&["4"]),
            needed: 1
        }
    );
    let p = plan(&started(2, 2), &machines, &policy("worker"));
    assert_eq!(
        p.action,
        Action::Start {
            candidates: ids(&["2"]),
            needed: 2
        }
    );
    let p = plan(&started(2, 2), &machines, &policy(""));
    assert_eq!(
        p.action,
        Action::Start {
            candidates: ids(&["3"]),
            needed: 2
        },
        "\"\" selects machines without metadata"
    );
}

#[test]
fn legacy_process_group_metadata_counts() {
    // The wire reader resolves the legacy key; see wire's tests.
    let legacy = in_group(m("1", "stopped"), "app");
    let p = plan(&started(1, 1), &[legacy], &policy("app"));
    assert_eq!(
        p.action,
        Action::Start {
            candidates: ids(&["1"]),
            needed: 1
        }
    );
}

#[test]
fn unreachable_hosts_are_ignored() {
    let mut unreachable = m("1", "stopped");
    unreachable.host_status = "unreachable".into();
    unreachable.clone = None;
    let mut unknown = m("2", "started");
    unknown.host_status = "unknown".into();
    let p = plan(
        &started(1, 1),
        &[unreachable, unknown, m("3", "stopped")],
        &policy(""),
    );
    assert_eq!(p.current.created, 1);
    assert_eq!(
        p.action,
        Action::Start {
            candidates: ids(&["3"]),
            needed: 1
        }
    );
}

#[test]
fn empty_app() {
    assert_eq!(plan(&started(0, 0), &[], &policy("")).action, Action::None);
    let p = plan(&started(2, 2), &[], &policy(""));
    assert_eq!(
        p.action,
        Action::Start {
            candidates: vec![],
            needed: 2
        }
    );
    assert_eq!(p.shortfall(), 2);
}

#[test]
fn target_above_available_machines_starts_what_exists() {
    let machines = [m("1", "stopped"), m("2", "stopped"), m("3", "started")];
    let p = plan(&started(10, 10), &machines, &policy(""));
    assert_eq!(
        p.action,
        Action::Start {
            candidates: ids(&["1", "2"]),
            needed: 9
        }
    );
    assert_eq!(p.shortfall(), 7);
}

#[test]
fn regions_round_robin_from_the_cursor() {
    let regions: Vec<String> = ids(&["iad", "", "sjc"]);
    let mut source = m("1", "started");
    source.region = "ams".into();
    let p = plan(
        &created(Some(5), None),
        &[source],
        &Policy {
            region_cursor: 1,
            regions: &regions,
            initial_state: InitialState::Stopped,
            ..policy("")
        },
    );
    let Action::Create(l) = p.action else {
        panic!()
    };
    assert_eq!(
        l.regions,
        ["ams", "sjc", "iad", "ams"],
        "an empty region means the source's region"
    );
    assert!(l.requests().all(|r| r.skip_launch));
}

#[test]
fn clone_pins_the_image_and_keeps_unknown_config_fields() {
    let mut one = m("1", "stopped");
    one.clone = Some(source(
        json!({
            "image": "registry.fly.io/my-app:deployment-1",
            "services": [{"autostop": "suspend", "future_field": {"x": 1}}],
            "mounts": [],
            "metadata": {}
        }),
        "registry.fly.io/my-app:deployment-1@sha256:abc",
    ));
    let p = plan(&created(Some(2), None), &[one], &policy(""));
    let Action::Create(l) = p.action else {
        panic!()
    };
    let c = &l.config;
    assert_eq!(c["image"], "registry.fly.io/my-app:deployment-1@sha256:abc");
    assert_eq!(c["services"][0]["autostop"], "suspend");
    assert_eq!(c["services"][0]["future_field"]["x"], 1);
    assert_eq!(c["mounts"], json!([]));
}

#[test]
fn clone_source_skips_machines_without_config() {
    let mut bare = m("1", "started");
    bare.clone = None;
    let p = plan(
        &created(Some(3), None),
        &[bare, m("2", "stopped")],
        &policy(""),
    );
    assert!(matches!(p.action, Action::Create(ref l) if l.source == "2"));
}

#[test]
fn list_fixture_with_default_group() {
    let machines = crate::wire::read_machine_list(
        &include_bytes!("../../testdata/fixtures/list-machines-response.json")[..],
        100,
    )
    .unwrap();
    let p = plan(&created(Some(6), None), &machines, &policy("app"));
    assert_eq!(
        p.current,
        Current {
            created: 4,
            started: 1,
            stopped: 1,
            suspended: 1,
            in_transition: 0,
        },
        "the destroying machine is not counted"
    );
    assert_eq!(p.skipped.ignored_state, 1);
    assert!(matches!(p.action, Action::Create(ref l) if l.source == "e2865641be1d86"));
}

#[test]
fn summary_is_readable() {
    let p = plan(
        &started(3, 3),
        &[m("1", "stopped"), m("2", "stopped")],
        &policy(""),
    );
    assert_eq!(p.summary(), "start 2 of [1, 2]");
    let p = plan(&started(3, 3), &[m("1", "started")], &policy(""));
    assert_eq!(p.summary(), "no scale: 2 short, nothing left to start");
}

// Issue 9, defect 1: a `failed` (or `destroying`, `replacing`) machine is not counted as
// created, so a created count of 1 destroys nothing.
#[test]
fn machines_in_ignored_or_transient_states_never_cost_the_live_one() {
    for other in [
        "failed",
        "destroying",
        "replacing",
        "launch_failed",
        "bogus",
    ] {
        let p = plan(
            &created(Some(1), Some(1)),
            &[m("1", "started"), m("2", other)],
            &policy(""),
        );
        assert_eq!(p.action, Action::None, "with {other}");
    }
}

// Issue 9: scaling 3 → 1 while destroys are slow: the machines being destroyed are not
// counted, so the next cycle leaves the survivor alone.
#[test]
fn slow_destroys_do_not_cascade() {
    let first = plan(
        &created(Some(1), Some(1)),
        &[m("1", "started"), m("2", "started"), m("3", "started")],
        &policy(""),
    );
    assert_eq!(first.action, Action::Destroy(ids(&["1", "2"])));
    let next = plan(
        &created(Some(1), Some(1)),
        &[
            m("1", "destroying"),
            m("2", "destroying"),
            m("3", "started"),
        ],
        &policy(""),
    );
    assert_eq!(next.action, Action::None);
}

// Go issue 20: a slow stop counts as stopped; the next cycle neither stops another machine
// nor starts one to make up for it.
#[test]
fn slow_stops_are_not_compensated() {
    let p = plan(
        &started(1, 1),
        &[m("1", "stopping"), m("2", "started"), m("3", "stopped")],
        &policy(""),
    );
    assert_eq!(p.action, Action::None);
    assert_eq!(p.current.stopped, 2);
    assert_eq!(p.current.in_transition, 1);
}

#[test]
fn machines_in_transition_are_never_picked() {
    let p = plan(
        &started(3, 3),
        &[m("1", "stopping"), m("2", "suspending"), m("3", "started")],
        &policy(""),
    );
    assert_eq!(
        p.action,
        Action::Start {
            candidates: vec![],
            needed: 2
        }
    );
    let p = plan(
        &started(0, 0),
        &[m("1", "starting"), m("2", "updating"), m("3", "started")],
        &policy(""),
    );
    assert_eq!(
        p.action,
        Action::Stop {
            candidates: ids(&["3"]),
            needed: 3
        }
    );
}

#[test]
fn creating_machines_count_as_the_initial_state() {
    let machines = [m("1", "started"), m("2", "creating")];
    let p = plan(&started(2, 2), &machines, &policy(""));
    assert_eq!(p.action, Action::None, "creating → started");
    let stopped_policy = Policy {
        initial_state: InitialState::Stopped,
        ..policy("")
    };
    let p = plan(&started(2, 2), &machines, &stopped_policy);
    assert_eq!(p.current.stopped, 1);
    assert_eq!(
        p.action,
        Action::Start {
            candidates: vec![],
            needed: 1
        }
    );
}

// Issue 9, defect 2: a duplicate id is one machine.
#[test]
fn duplicate_ids_are_one_machine() {
    let p = plan(
        &created(Some(1), Some(1)),
        &[m("1", "started"), m("1", "started")],
        &policy(""),
    );
    assert_eq!(p.action, Action::None);
    assert_eq!(p.skipped.duplicate_id, 1);
    let p = plan(
        &started(2, 2),
        &[m("1", "stopped"), m("1", "stopped")],
        &policy(""),
    );
    assert_eq!(
        p.action,
        Action::Start {
            candidates: ids(&["1"]),
            needed: 2
        }
    );
}

// Issue 9, defect 6: a machine without an id is never addressed.
#[test]
fn machines_without_id_are_skipped() {
    let p = plan(
        &started(1, 1),
        &[m("", "stopped"), m("2", "stopped")],
        &policy(""),
    );
    assert_eq!(p.skipped.no_id, 1);
    assert_eq!(
        p.action,
        Action::Start {
            candidates: ids(&["2"]),
            needed: 1
        }
    );
}

// Issue 9, defect 3: no plan holds more than max_machines actions.
#[test]
fn actions_are_bounded_by_max_machines() {
    let bounded = Policy {
        max_machines: 3,
        ..policy("")
    };
    let p = plan(
        &created(Some(u32::MAX), None),
        &[m("1", "started")],
        &bounded,
    );
    assert!(matches!(p.action, Action::Create(ref l) if l.regions.len() == 3));
    let many: Vec<Machine> = (0..10).map(|i| m(&i.to_string(), "started")).collect();
    let p = plan(&started(0, 0), &many, &bounded);
    assert!(matches!(p.action, Action::Stop { needed: 3, .. }));
    let p = plan(&created(Some(1), Some(1)), &many, &bounded);
    assert!(matches!(p.action, Action::Destroy(ref ids) if ids.len() == 3));
}

// Minimums are clamped; maximums are not, so a bound below what an app already has never
// scales it down.
#[test]
fn target_minimums_are_clamped() {
    let mut t = created(Some(5_000), Some(7));
    t.started = Bounds {
        min: Some(u32::MAX),
        max: Some(u32::MAX),
    };
    assert!(t.clamp_minimums_to(1000));
    assert_eq!(
        t.created,
        Bounds {
            min: Some(1000),
            max: Some(7)
        }
    );
    assert_eq!(
        t.started,
        Bounds {
            min: Some(1000),
            max: Some(u32::MAX)
        }
    );
    assert!(!t.clamp_minimums_to(1000));
    let many: Vec<Machine> = (0..2000)
        .map(|i| m(&format!("{i:04}"), "started"))
        .collect();
    let bounded = Policy {
        max_machines: 1000,
        ..policy("")
    };
    let mut t = started(2000, 2000);
    t.clamp_minimums_to(1000);
    assert_eq!(plan(&t, &many, &bounded).action, Action::None);
}

// Start and stop candidates are bounded too: failures replaced by the next candidate never
// cost more than `max_machines` calls. The summary names ten of them.
#[test]
fn candidates_are_bounded_by_max_machines() {
    let bounded = Policy {
        max_machines: 20,
        ..policy("")
    };
    let stopped: Vec<Machine> = (0..50).map(|i| m(&format!("{i:02}"), "stopped")).collect();
    let p = plan(&started(1, 1), &stopped, &bounded);
    let Action::Start { candidates, needed } = &p.action else {
        panic!("{:?}", p.action)
    };
    assert_eq!((candidates.len(), *needed), (20, 1));
    assert_eq!(
        p.summary(),
        "start 1 of [00, 01, 02, 03, 04, 05, 06, 07, 08, 09, … 10 more]"
    );
}

/// Property tests: random machine lists (any state, duplicates, missing ids, other groups,
/// unreachable hosts) and random targets never break the planner's invariants — built as
/// `Machine`s, or sent through the list reader as JSON.
mod properties {
    use super::*;
    use crate::testing::{self, machine_list};
    use crate::wire::read_machine_list;
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;

    const STATES: &[&str] = &[
        "created",
        "started",
        "stopped",
        "suspended",
        "starting",
        "stopping",
        "suspending",
        "creating",
        "replacing",
        "destroying",
        "destroyed",
        "failed",
        "launch_failed",
        "",
        "weird",
    ];

    fn machine() -> impl Strategy<Value = Machine> {
        (
            prop::sample::select(&["", "1", "2", "3", "4", "5", "6", "7", "8"][..]),
            prop::sample::select(STATES),
            prop::sample::select(&["ok", "ok", "ok", "unreachable", ""][..]),
            prop::sample::select(&["", "", "app", "worker"][..]),
            any::<bool>(),
        )
            .prop_map(|(id, state, host, group, clonable)| {
                let mut machine = m(id, state);
                machine.host_status = host.into();
                machine.process_group = group.into();
                if !clonable {
                    machine.clone = None;
                }
                machine
            })
    }

    fn bound() -> impl Strategy<Value = Option<u32>> {
        prop_oneof![Just(None), (0u32..12).prop_map(Some), Just(Some(u32::MAX))]
    }

    /// Targets as `TargetExprs` makes them (a created bound is at least 1), and a policy.
    fn targets_and_policy() -> impl Strategy<Value = (TargetCounts, usize, bool, &'static str)> {
        (
            (bound(), bound(), bound(), bound()),
            1usize..6,
            any::<bool>(),
            prop::sample::select(&["", "app", "worker"][..]),
        )
            .prop_map(|(bounds, max_machines, initial_stopped, group)| {
                let targets = TargetCounts {
                    created: Bounds {
                        min: bounds.0.map(|v| v.max(1)),
                        max: bounds.1.map(|v| v.max(1)),
                    },
                    started: Bounds {
                        min: bounds.2,
                        max: bounds.3,
                    },
                };
                (targets, max_machines, initial_stopped, group)
            })
    }

    /// Plans, then checks every invariant of the planner (module docs of `plan`).
    fn plan_and_check(
        targets: &TargetCounts,
        machines: &[Machine],
        max_machines: usize,
        initial_stopped: bool,
        group: &str,
    ) -> Result<(), TestCaseError> {
        let policy = Policy {
            max_machines,
            initial_state: if initial_stopped {
                InitialState::Stopped
            } else {
                InitialState::Started
            },
            ..policy(group)
        };
        let p = plan(targets, machines, &policy);
        // The group's machines, each id by its first listing (as the planner reads them).
        let mut seen = HashSet::new();
        let managed: Vec<&Machine> = machines
            .iter()
            .filter(|m| m.host_status == "ok" && m.process_group == group && !m.id.is_empty())
            .filter(|m| seen.insert(m.id.clone()))
            .collect();
        let state_of = |id: &str| {
            managed
                .iter()
                .find(|m| m.id == id)
                .map(|m| m.state.as_str())
        };
        let stable =
            |s: Option<&str>| matches!(s, Some("created" | "started" | "stopped" | "suspended"));
        let addressed: Vec<&String> = match &p.action {
            Action::Destroy(ids) => ids.iter().collect(),
            Action::Start { candidates, .. }
            | Action::Stop { candidates, .. }
            | Action::Suspend { candidates, .. } => candidates.iter().collect(),
            _ => vec![],
        };
        // Never twice, never without an id, never more than max_machines, only machines of
        // the group in a stable state.
        let unique: HashSet<&String> = addressed.iter().copied().collect();
        prop_assert_eq!(unique.len(), addressed.len());
        prop_assert!(addressed.len() <= max_machines);
        for id in &addressed {
            prop_assert!(!id.is_empty());
            prop_assert!(stable(state_of(id)), "{id} is {:?}", state_of(id));
        }
        match &p.action {
            Action::Create(l) => {
                prop_assert!(l.regions.len() <= max_machines && !l.regions.is_empty());
                prop_assert!(stable(state_of(&l.source)));
            }
            Action::Destroy(ids) => {
                let stable_before = managed.iter().any(|m| stable(Some(&m.state)));
                let stable_after = managed
                    .iter()
                    .any(|m| stable(Some(&m.state)) && !ids.contains(&m.id));
                prop_assert!(
                    !stable_before || stable_after,
                    "destroy left no stable machine: {:?}",
                    p.action
                );
            }
            Action::Start { candidates, needed } => {
                prop_assert!(*needed <= max_machines);
                for id in candidates {
                    prop_assert!(matches!(state_of(id), Some("stopped" | "suspended")));
                }
            }
            Action::Stop { candidates, needed } | Action::Suspend { candidates, needed } => {
                prop_assert!(*needed <= max_machines);
                for id in candidates {
                    prop_assert_eq!(state_of(id), Some("started"));
                }
            }
            Action::None | Action::NoCloneSource => {}
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(testing::cases(512))]

        #[test]
        fn planner_invariants(
            machines in prop::collection::vec(machine(), 0..14),
            (targets, max_machines, initial_stopped, group) in targets_and_policy(),
        ) {
            plan_and_check(&targets, &machines, max_machines, initial_stopped, group)?;
        }

        #[test]
        fn planner_invariants_on_parsed_lists(
            list in machine_list(14),
            (targets, max_machines, initial_stopped, group) in targets_and_policy(),
        ) {
            let values: Vec<serde_json::Value> = list.into_iter().map(|(v, _)| v).collect();
            let text = serde_json::to_string(&values).unwrap();
            if let Ok(machines) = read_machine_list(text.as_bytes(), 20) {
                plan_and_check(&targets, &machines, max_machines, initial_stopped, group)?;
            }
        }
    }
}

// Issue 12: step limits, as a count or a percentage of the created count.
#[test]
fn step_limits_bound_each_direction() {
    let stepped = |up, down| Policy {
        max_scale_up: up,
        max_scale_down: down,
        ..policy("")
    };
    let stopped: Vec<Machine> = (0..10).map(|i| m(&format!("s{i}"), "stopped")).collect();
    let p = plan(
        &started(10, 10),
        &stopped,
        &stepped(Some(Step::Count(2)), None),
    );
    assert!(matches!(p.action, Action::Start { needed: 2, .. }));
    assert_eq!(p.limited_by, Some(Held::MaxScaleUp));
    // 25% of 10 created machines, rounded up: 3.
    let p = plan(
        &started(10, 10),
        &stopped,
        &stepped(Some(Step::Percent(25)), None),
    );
    assert!(matches!(p.action, Action::Start { needed: 3, .. }));
    // Never below 1, even at 1% of few machines.
    let p = plan(
        &started(10, 10),
        &stopped,
        &stepped(Some(Step::Percent(1)), None),
    );
    assert!(matches!(p.action, Action::Start { needed: 1, .. }));
    // A limit that does not bind is not reported.
    let p = plan(
        &started(1, 1),
        &stopped,
        &stepped(Some(Step::Count(2)), None),
    );
    assert_eq!(p.limited_by, None);
    let running: Vec<Machine> = (0..10).map(|i| m(&format!("r{i}"), "started")).collect();
    let p = plan(
        &started(0, 0),
        &running,
        &stepped(None, Some(Step::Count(4))),
    );
    assert!(matches!(p.action, Action::Stop { needed: 4, .. }));
    assert_eq!(p.limited_by, Some(Held::MaxScaleDown));
    let p = plan(
        &created(Some(1), Some(1)),
        &running,
        &stepped(None, Some(Step::Percent(50))),
    );
    assert!(matches!(p.action, Action::Destroy(ref ids) if ids.len() == 5));
    let p = plan(
        &created(Some(30), None),
        &running,
        &stepped(Some(Step::Count(2)), None),
    );
    assert!(matches!(p.action, Action::Create(ref l) if l.regions.len() == 2));
}

fn aged(id: &str, created_at: &str) -> Machine {
    Machine {
        created_at: created_at.into(),
        ..m(id, "started")
    }
}

#[test]
fn stop_order_and_priorities() {
    let machines = [
        aged("a", "2026-01-02T00:00:00Z"),
        aged("b", "2026-01-03T00:00:00Z"),
        aged("c", "2026-01-01T00:00:00Z"),
    ];
    let order = |stop_order, priority: Option<&HashMap<String, f64>>| {
        let p = plan(
            &started(0, 0),
            &machines,
            &Policy {
                stop_order,
                stop_priority: priority,
                ..policy("")
            },
        );
        match p.action {
            Action::Stop { candidates, .. } => candidates,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(order(StopOrder::Id, None), ["a", "b", "c"]);
    assert_eq!(order(StopOrder::Newest, None), ["b", "a", "c"]);
    assert_eq!(order(StopOrder::Oldest, None), ["c", "a", "b"]);
    // The least loaded first; machines without a sample after those with one.
    let load: HashMap<String, f64> = [("c".to_string(), 9.0), ("b".to_string(), 0.5)].into();
    assert_eq!(order(StopOrder::Id, Some(&load)), ["b", "c", "a"]);
}

#[test]
fn scale_down_by_suspend() {
    let p = plan(
        &started(1, 1),
        &[m("1", "started"), m("2", "started"), m("3", "suspended")],
        &Policy {
            scale_down_method: ScaleDownMethod::Suspend,
            ..policy("")
        },
    );
    assert_eq!(
        p.action,
        Action::Suspend {
            candidates: ids(&["1", "2"]),
            needed: 1
        }
    );
    assert_eq!(p.summary(), "suspend 1 of [1, 2]");
}
