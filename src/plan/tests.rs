use serde_json::json;

use super::*;
use crate::machines::ImageRef;

/// A healthy machine with no process-group metadata (the Go tests' convention; they run with
/// an empty process group).
fn m(id: &str, state: &str) -> Machine {
    Machine {
        id: id.into(),
        state: state.into(),
        region: "iad".into(),
        host_status: "ok".into(),
        config: Some(json!({"image": "img", "metadata": {}})),
        ..Machine::default()
    }
}

fn in_group(mut machine: Machine, group: &str) -> Machine {
    machine.config = Some(json!({"image": "img", "metadata": {"fly_process_group": group}}));
    machine
}

const NO_REGIONS: &[String] = &[];

fn policy(group: &str) -> Policy<'_> {
    Policy {
        process_group: group,
        regions: NO_REGIONS,
        region_cursor: 0,
        skip_launch: false,
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
            suspended: 0
        }
    );
}

// Case 13: clone the first machine; the one without host_status is ignored.
#[test]
fn create_clones_first_machine() {
    let mut one = m("1", "started");
    one.config = Some(json!({"image": "old", "metadata": {"foo": "bar"}}));
    let mut two = m("2", "stopped");
    two.region = "den".into();
    two.config = Some(json!({"metadata": {"baz": "bat"}}));
    let mut three = m("3", "destroying");
    three.host_status = String::new();
    three.config = None;
    let p = plan(&created(Some(4), Some(4)), &[one, two, three], &policy(""));
    let Action::Create { source, launches } = &p.action else {
        panic!("{:?}", p.action)
    };
    assert_eq!(source, "1");
    assert_eq!(launches.len(), 2);
    for l in launches {
        assert_eq!(l.config["metadata"]["foo"], "bar");
        assert_eq!(
            l.region, "iad",
            "no regions configured: the source's region"
        );
        assert!(!l.skip_launch);
    }
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
            suspended: 2
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
        m("5", "starting"),
    ];
    let p = plan(&created(Some(1), Some(1)), &machines, &policy(""));
    assert_eq!(p.action, Action::Destroy(ids(&["4", "3", "2", "1"])));
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
    let mut legacy = m("1", "stopped");
    legacy.config = Some(json!({"metadata": {"process_group": "app"}}));
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
    unreachable.incomplete_config = unreachable.config.take();
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
            process_group: "",
            regions: &regions,
            region_cursor: 1,
            skip_launch: true,
        },
    );
    let Action::Create { launches, .. } = p.action else {
        panic!()
    };
    let got: Vec<&str> = launches.iter().map(|l| l.region.as_str()).collect();
    assert_eq!(
        got,
        ["ams", "sjc", "iad", "ams"],
        "an empty region means the source's region"
    );
    assert!(launches.iter().all(|l| l.skip_launch));
}

#[test]
fn clone_pins_the_image_and_keeps_unknown_config_fields() {
    let mut source = m("1", "stopped");
    source.image_ref = Some(ImageRef {
        registry: "registry.fly.io".into(),
        repository: "my-app".into(),
        tag: "deployment-1".into(),
        digest: "sha256:abc".into(),
    });
    source.config = Some(json!({
        "image": "registry.fly.io/my-app:deployment-1",
        "services": [{"autostop": "suspend", "future_field": {"x": 1}}],
        "mounts": [],
        "metadata": {}
    }));
    let p = plan(&created(Some(2), None), &[source], &policy(""));
    let Action::Create { launches, .. } = p.action else {
        panic!()
    };
    let c = &launches[0].config;
    assert_eq!(c["image"], "registry.fly.io/my-app:deployment-1@sha256:abc");
    assert_eq!(c["services"][0]["autostop"], "suspend");
    assert_eq!(c["services"][0]["future_field"]["x"], 1);
    assert_eq!(c["mounts"], json!([]));
}

#[test]
fn clone_source_skips_machines_without_config() {
    let mut bare = m("1", "started");
    bare.config = None;
    let p = plan(
        &created(Some(3), None),
        &[bare, m("2", "stopped")],
        &policy(""),
    );
    assert!(matches!(p.action, Action::Create { ref source, .. } if source == "2"));
}

#[test]
fn list_fixture_with_default_group() {
    let machines: Vec<Machine> = serde_json::from_str(include_str!(
        "../../testdata/fixtures/list-machines-response.json"
    ))
    .unwrap();
    let p = plan(&created(Some(6), None), &machines, &policy("app"));
    assert_eq!(
        p.current,
        Current {
            created: 5,
            started: 1,
            stopped: 1,
            suspended: 1
        }
    );
    assert!(matches!(p.action, Action::Create { ref source, .. } if source == "e2865641be1d86"));
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
