use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

use super::apply::{Done, Mode, Permits, bulk};
use super::platform::Change;
use super::*;
use crate::collector::{SourceError, SourceErrorKind};
use crate::config::GroupConfig;
use crate::expr::MetricValues;
use crate::http::Transport;
use crate::machines::ApiErrorKind;
use crate::wire::CloneSource;
use crate::wire::CreateRequest;

#[test]
fn replace_failures_moves_on_to_the_next_candidate() {
    // Go case 18: start of "2" fails, "1" and "3" succeed, "4" is never tried.
    let tried = Mutex::new(Vec::new());
    let tally = bulk(
        &["1", "2", "3", "4"],
        2,
        Mode::ReplaceFailures,
        &Permits::new(1),
        |id| {
            tried.lock().unwrap().push(*id);
            if *id == "2" { Done::No } else { Done::Yes }
        },
    );
    assert_eq!((tally.ok, tally.failed), (2, 1));
    assert_eq!(*tried.lock().unwrap(), ["1", "2", "3"]);
}

#[test]
fn an_unknown_outcome_is_not_replaced() {
    let tried = Mutex::new(Vec::new());
    let tally = bulk(
        &["1", "2", "3"],
        2,
        Mode::ReplaceFailures,
        &Permits::new(1),
        |id| {
            tried.lock().unwrap().push(*id);
            if *id == "1" { Done::Unknown } else { Done::Yes }
        },
    );
    assert_eq!(
        tally,
        Tally {
            ok: 1,
            failed: 0,
            unknown: 1
        }
    );
    assert_eq!(*tried.lock().unwrap(), ["1", "2"]);
}

#[test]
fn once_counts_failures_against_the_target() {
    let tally = bulk(&["1", "2", "3"], 2, Mode::Once, &Permits::new(4), |id| {
        if *id == "1" { Done::No } else { Done::Yes }
    });
    assert_eq!((tally.ok, tally.failed), (1, 1));
}

#[test]
fn stop_on_failure_begins_nothing_new() {
    let calls = AtomicUsize::new(0);
    let tally = bulk(
        &[1, 2, 3, 4, 5],
        5,
        Mode::StopOnFailure,
        &Permits::new(1),
        |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            Done::No
        },
    );
    assert_eq!((tally.ok, tally.failed), (0, 1));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn runs_in_parallel_up_to_the_limit() {
    // Each operation waits until four are in flight at once (or a deadline passes), so the
    // test proves four ran together without timing anything.
    let in_flight = Mutex::new(0usize);
    let changed = Condvar::new();
    let peak = AtomicUsize::new(0);
    let items: Vec<usize> = (0..20).collect();
    let tally = bulk(&items, 20, Mode::ReplaceFailures, &Permits::new(4), |_| {
        let mut n = in_flight.lock().unwrap();
        *n += 1;
        peak.fetch_max(*n, Ordering::SeqCst);
        changed.notify_all();
        let (mut n, _) = changed
            .wait_timeout_while(n, Duration::from_secs(10), |n| {
                *n < 4 && peak.load(Ordering::SeqCst) < 4
            })
            .unwrap();
        *n -= 1;
        Done::Yes
    });
    assert_eq!(tally.ok, 20);
    assert_eq!(peak.load(Ordering::SeqCst), 4);
}

#[test]
fn nothing_to_do() {
    assert_eq!(
        bulk::<u8>(&[], 3, Mode::ReplaceFailures, &Permits::new(4), |_| {
            Done::Yes
        }),
        Tally::default()
    );
    assert_eq!(
        bulk(&[1], 0, Mode::Once, &Permits::new(4), |_| Done::Yes),
        Tally::default()
    );
}

/// The error an `act` returns, and the state it leaves the machine in (if it changed it).
type ActFailure = (fn() -> ApiError, Option<&'static str>);

/// A platform in memory: machines by id, scripted failures, every call recorded.
#[derive(Default)]
struct Fake {
    release: Mutex<Option<Result<Option<String>, ()>>>,
    metrics: Mutex<BTreeMap<String, f64>>,
    machines: Mutex<Vec<Machine>>,
    /// These calls (`"start 2"`) fail with this error and (if `Some`) leave the machine in
    /// that state, as a dropped connection after the change was made would.
    act_fails: Mutex<BTreeMap<String, ActFailure>>,
    get_fails: Mutex<bool>,
    calls: Mutex<Vec<String>>,
    priorities: Mutex<std::collections::HashMap<String, f64>>,
    collect_fails: Mutex<bool>,
    /// Creates of clones of this group fail.
    create_fails: Mutex<String>,
    /// `None`: a source without history.
    history: Mutex<Option<Vec<(Stamp, MetricValues)>>>,
}

fn api_error(kind: ApiErrorKind) -> ApiError {
    ApiError {
        op: "op".into(),
        kind,
    }
}

fn dropped() -> ApiError {
    api_error(ApiErrorKind::Transport(Transport::Broken(
        "connection reset".into(),
    )))
}

fn precondition() -> ApiError {
    api_error(ApiErrorKind::Status {
        code: 412,
        message: "failed_precondition: machine still active, refusing to start".into(),
        status: String::new(),
    })
}

impl Fake {
    fn machine(&self, id: &str, state: &str) {
        self.grouped(id, state, "app");
    }

    fn grouped(&self, id: &str, state: &str, group: &str) {
        let config = format!("{{\"metadata\":{{\"fly_process_group\":\"{group}\"}}}}");
        self.machines.lock().unwrap().push(Machine {
            id: id.into(),
            state: state.into(),
            region: "iad".into(),
            host_status: "ok".into(),
            process_group: group.into(),
            clone: Some(CloneSource {
                config: serde_json::value::RawValue::from_string(config).unwrap(),
                image: String::new(),
            }),
            ..Machine::default()
        });
    }

    fn state(&self, id: &str) -> String {
        let machines = self.machines.lock().unwrap();
        machines
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.state.clone())
            .unwrap_or_default()
    }

    fn set_state(&self, id: &str, state: &str) {
        for m in self
            .machines
            .lock()
            .unwrap()
            .iter_mut()
            .filter(|m| m.id == id)
        {
            m.state = state.into();
        }
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl Platform for Arc<Fake> {
    fn release_status(&self, _: &str, _: Deadline) -> Result<Option<String>, ReleaseError> {
        match self.release.lock().unwrap().clone() {
            None => Ok(None),
            Some(Ok(s)) => Ok(s),
            Some(Err(())) => Err(ReleaseError {
                app: "a".into(),
                kind: crate::release::ReleaseErrorKind::Graphql("boom".into()),
            }),
        }
    }

    fn collect(&self, _: &str, _: Deadline) -> Result<MetricValues, CollectError> {
        let metrics = self.metrics.lock().unwrap().clone();
        if *self.collect_fails.lock().unwrap() {
            return Err(CollectError {
                metric: "q".into(),
                error: SourceError {
                    source: "fake".into(),
                    kind: SourceErrorKind::Answer("down".into()),
                    hint: String::new(),
                },
            });
        }
        Ok(metrics)
    }

    fn list(&self, _: &str, _: Deadline) -> Result<Vec<Machine>, ApiError> {
        self.calls.lock().unwrap().push("list".into());
        Ok(self.machines.lock().unwrap().clone())
    }

    fn get(&self, _: &str, id: &str, _: Deadline) -> Result<Machine, ApiError> {
        self.calls.lock().unwrap().push(format!("get {id}"));
        if *self.get_fails.lock().unwrap() {
            return Err(dropped());
        }
        let machines = self.machines.lock().unwrap();
        machines
            .iter()
            .find(|m| m.id == id)
            .cloned()
            .ok_or_else(|| {
                api_error(ApiErrorKind::Status {
                    code: 404,
                    message: "machine not found".into(),
                    status: String::new(),
                })
            })
    }

    fn create(&self, _: &str, r: CreateRequest, _: Deadline) -> Result<Machine, ApiError> {
        let group = r.config["metadata"]["fly_process_group"]
            .as_str()
            .unwrap_or("");
        self.calls.lock().unwrap().push(
            format!("create {} {group}", r.region)
                .trim_end()
                .to_string(),
        );
        if *self.create_fails.lock().unwrap() == group {
            return Err(dropped());
        }
        Ok(Machine::default())
    }

    fn act(&self, _: &str, change: Change, id: &str, _: Deadline) -> Result<(), ApiError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("{} {id}", change.op().as_str()));
        let call = format!("{} {id}", change.op().as_str());
        if let Some((error, state)) = self.act_fails.lock().unwrap().get(&call).copied() {
            if let Some(state) = state {
                self.set_state(id, state);
            }
            return Err(error());
        }
        let state = match change {
            Change::Start => "started",
            Change::Stop => "stopped",
            Change::Suspend => "suspended",
            Change::Destroy => "destroying",
        };
        self.set_state(id, state);
        Ok(())
    }

    fn org_apps(&self, _: &str, _: Deadline) -> Result<Vec<String>, ApiError> {
        Ok(vec![])
    }

    fn stop_priorities(
        &self,
        _: &str,
        _: &str,
        _: Deadline,
    ) -> Result<std::collections::HashMap<String, f64>, SourceError> {
        Ok(self.priorities.lock().unwrap().clone())
    }

    fn history(
        &self,
        _: &str,
        _: Stamp,
        _: Stamp,
        _: Duration,
        _: Deadline,
    ) -> Option<Result<Vec<(Stamp, MetricValues)>, CollectError>> {
        self.history.lock().unwrap().clone().map(Ok)
    }
}

fn reconciler(fake: &Arc<Fake>, config: Config) -> Reconciler {
    let groups = compile_groups(&config).unwrap();
    Reconciler::new(
        &config,
        groups,
        Box::new(Arc::clone(fake)),
        Arc::new(Telemetry::new()),
        false,
    )
}

fn started_count(expr: &str) -> Config {
    Config {
        app_name: "a".into(),
        group: GroupConfig {
            started_machine_count: expr.into(),
            ..GroupConfig::default()
        },
        action_concurrency: 1,
        ..Config::default()
    }
}

fn with_group(config: Config, f: impl FnOnce(&mut GroupConfig)) -> Config {
    let mut config = config;
    f(&mut config.group);
    config
}

// Issue 9, defect 4: a start that was carried out but whose answer was lost counts as a
// start after reading the machine back; no other machine is started in its place.
#[test]
fn a_dropped_start_is_read_back_not_replaced() {
    let fake = Arc::new(Fake::default());
    fake.machine("1", "started");
    fake.machine("2", "stopped");
    fake.machine("3", "stopped");
    fake.act_fails
        .lock()
        .unwrap()
        .insert("start 2".into(), (precondition, Some("started")));
    let r = reconciler(&fake, started_count("2"));
    let outcome = r.reconcile("a", &Mutex::default()).unwrap();
    assert_eq!(
        outcome,
        Outcome::Applied {
            action: "start",
            tally: Tally {
                ok: 1,
                failed: 0,
                unknown: 0
            },
            failed_groups: 0,
        }
    );
    assert_eq!(fake.calls(), ["list", "start 2", "get 2"]);
    assert_eq!(fake.state("3"), "stopped");
}

#[test]
fn a_start_that_did_not_happen_is_replaced_by_the_next_machine() {
    let fake = Arc::new(Fake::default());
    fake.machine("2", "stopped");
    fake.machine("3", "stopped");
    fake.act_fails
        .lock()
        .unwrap()
        .insert("start 2".into(), (dropped, None));
    let r = reconciler(&fake, started_count("1"));
    let outcome = r.reconcile("a", &Mutex::default()).unwrap();
    assert!(matches!(
        outcome,
        Outcome::Applied {
            tally: Tally {
                ok: 1,
                failed: 1,
                unknown: 0
            },
            ..
        }
    ));
    assert_eq!(fake.calls(), ["list", "start 2", "get 2", "start 3"]);
}

#[test]
fn an_unreadable_machine_is_unknown_and_not_replaced() {
    let fake = Arc::new(Fake::default());
    fake.machine("2", "stopped");
    fake.machine("3", "stopped");
    fake.act_fails
        .lock()
        .unwrap()
        .insert("start 2".into(), (dropped, None));
    *fake.get_fails.lock().unwrap() = true;
    let r = reconciler(&fake, started_count("1"));
    let outcome = r.reconcile("a", &Mutex::default()).unwrap();
    assert!(!outcome.is_clean());
    assert!(matches!(
        outcome,
        Outcome::Applied {
            tally: Tally {
                ok: 0,
                failed: 0,
                unknown: 1
            },
            ..
        }
    ));
    assert_eq!(fake.calls(), ["list", "start 2", "get 2"]);
}

// A destroy, stop or suspend answered 404 counts as done: the machine is gone, and nothing
// is destroyed, stopped or suspended in its place (issue 9's fault matrix).
#[test]
fn a_change_to_a_machine_already_gone_counts_as_done() {
    fn gone() -> ApiError {
        api_error(ApiErrorKind::Status {
            code: 404,
            message: "machine not found".into(),
            status: String::new(),
        })
    }
    let destroy = with_group(started_count(""), |g| g.created_machine_count = "1".into());
    let suspend = with_group(started_count("1"), |g| {
        g.scale_down_method = crate::config::ScaleDownMethod::Suspend
    });
    for (states, config, call, action) in [
        (["started", "stopped"], destroy, "destroy 2", "destroy"),
        (["started", "started"], started_count("1"), "stop 1", "stop"),
        (["started", "started"], suspend, "suspend 1", "stop"),
    ] {
        let fake = Arc::new(Fake::default());
        fake.machine("1", states[0]);
        fake.machine("2", states[1]);
        fake.act_fails
            .lock()
            .unwrap()
            .insert(call.into(), (gone, None));
        let outcome = reconciler(&fake, config)
            .reconcile("a", &Mutex::default())
            .unwrap();
        assert_eq!(fake.calls(), ["list", call]);
        assert_eq!(
            outcome,
            Outcome::Applied {
                action,
                tally: Tally {
                    ok: 1,
                    failed: 0,
                    unknown: 0
                },
                failed_groups: 0,
            }
        );
    }
}

// Issue 10: the fail-open branch of the deploy guard.
#[test]
fn a_failing_release_check_holds_scaling_back_then_fails_open() {
    let fake = Arc::new(Fake::default());
    fake.machine("1", "stopped");
    *fake.release.lock().unwrap() = Some(Err(()));
    let config = Config {
        deploy_guard_fail_open_after: Duration::from_secs(3600),
        ..started_count("1")
    };
    let state = Mutex::new(AppState::default());
    let r = reconciler(&fake, config.clone());
    let err = r.reconcile("a", &state).unwrap_err();
    assert_eq!(err.kind(), "release_check");
    assert!(fake.calls().is_empty(), "nothing listed or changed");

    // Failing for longer than the limit: scale anyway.
    state.lock().unwrap().release_check_failing_since =
        Some(Instant::now() - Duration::from_secs(3601));
    let outcome = r.reconcile("a", &state).unwrap();
    assert!(matches!(
        outcome,
        Outcome::Applied {
            action: "start",
            ..
        }
    ));
    assert_eq!(fake.calls(), ["list", "start 1"]);

    // A successful check resets the clock; a running release skips the app.
    *fake.release.lock().unwrap() = Some(Ok(Some("running".into())));
    assert_eq!(r.reconcile("a", &state).unwrap(), Outcome::DeployInProgress);
    assert_eq!(state.lock().unwrap().release_check_failing_since, None);
}

#[test]
fn a_failed_collection_changes_nothing() {
    let fake = Arc::new(Fake::default());
    fake.machine("1", "started");
    *fake.collect_fails.lock().unwrap() = true;
    let config = Config {
        metric_collectors: vec![crate::config::CollectorConfig {
            metric_name: "fail".into(),
            ..Default::default()
        }],
        ..started_count("fail")
    };
    let err = reconciler(&fake, config)
        .reconcile("a", &Mutex::default())
        .unwrap_err();
    assert_eq!(err.kind(), "metrics");
    assert!(fake.calls().is_empty());
}

// Issue 9, defect 3: a huge target is clamped to max-machines; nothing is allocated for it.
#[test]
fn a_huge_target_is_clamped_to_max_machines() {
    let fake = Arc::new(Fake::default());
    fake.machine("1", "started");
    let config = Config {
        max_machines: 3,
        ..with_group(started_count(""), |g| {
            g.created_machine_count = "1e308".into()
        })
    };
    let outcome = reconciler(&fake, config)
        .reconcile("a", &Mutex::default())
        .unwrap();
    assert!(matches!(
        outcome,
        Outcome::Applied {
            action: "create",
            tally: Tally { ok: 2, .. },
            ..
        }
    ));
    assert_eq!(fake.calls(), ["list", "create iad app", "create iad app"]);
}

fn metric(fake: &Fake, name: &str, value: f64) {
    fake.metrics.lock().unwrap().insert(name.into(), value);
}

fn collector(name: &str) -> crate::config::CollectorConfig {
    crate::config::CollectorConfig {
        metric_name: name.into(),
        ..Default::default()
    }
}

/// Issue 14: each group follows its own metric on its own machines; ungrouped machines are
/// never touched; a create clones a machine of its own group, and a failing create in one
/// group does not stop the other.
#[test]
fn process_groups_scale_independently() {
    let fake = Arc::new(Fake::default());
    fake.grouped("w1", "started", "web");
    fake.grouped("w2", "stopped", "web");
    fake.grouped("k1", "started", "worker");
    fake.grouped("u1", "stopped", "");
    metric(&fake, "rps", 200.0);
    metric(&fake, "depth", 30.0);
    let web = GroupConfig {
        started_machine_count: "ceil(rps / 100)".into(),
        ..GroupConfig::default()
    };
    let worker = GroupConfig {
        min_created_machine_count: "ceil(depth / 10)".into(),
        max_created_machine_count: "20".into(),
        regions: vec!["ord".into()],
        ..GroupConfig::default()
    };
    let config = Config {
        app_name: "a".into(),
        process_groups: vec![("web".into(), web), ("worker".into(), worker)],
        metric_collectors: vec![collector("rps"), collector("depth")],
        ..Config::default()
    };
    *fake.create_fails.lock().unwrap() = "worker".into();
    let outcome = reconciler(&fake, config)
        .reconcile("a", &Mutex::default())
        .unwrap();
    let mut calls = fake.calls();
    calls.sort();
    assert_eq!(calls, ["create ord worker", "list", "start w2"]);
    assert!(matches!(
        outcome,
        Outcome::Applied {
            tally: Tally {
                ok: 1,
                failed: 1,
                ..
            },
            failed_groups: 0,
            ..
        }
    ));
    assert_eq!(
        fake.state("u1"),
        "stopped",
        "ungrouped machines are never touched"
    );
}

#[test]
fn an_expression_error_in_one_group_does_not_stop_another() {
    let fake = Arc::new(Fake::default());
    fake.grouped("w1", "stopped", "web");
    fake.grouped("k1", "stopped", "worker");
    metric(&fake, "n", f64::NAN);
    metric(&fake, "one", 1.0);
    let group = |expr: &str| GroupConfig {
        started_machine_count: expr.into(),
        ..GroupConfig::default()
    };
    let config = Config {
        app_name: "a".into(),
        process_groups: vec![("web".into(), group("n")), ("worker".into(), group("one"))],
        metric_collectors: vec![collector("n"), collector("one")],
        ..Config::default()
    };
    let outcome = reconciler(&fake, config)
        .reconcile("a", &Mutex::default())
        .unwrap();
    assert_eq!(fake.calls(), ["list", "start k1"]);
    assert!(matches!(
        outcome,
        Outcome::Applied {
            failed_groups: 1,
            ..
        }
    ));
    assert!(!outcome.is_clean());
}

fn refused() -> ApiError {
    api_error(ApiErrorKind::Status {
        code: 400,
        message: "machine cannot be suspended".into(),
        status: String::new(),
    })
}

/// Issue 12: a refused suspend is followed by a stop only if the machine is still started.
#[test]
fn a_refused_suspend_stops_a_started_machine_but_never_a_suspended_one() {
    let fake = Arc::new(Fake::default());
    fake.machine("1", "started");
    fake.machine("2", "started");
    fake.machine("3", "started");
    let mut fails = fake.act_fails.lock().unwrap();
    fails.insert("suspend 1".into(), (refused, None));
    fails.insert("suspend 2".into(), (refused, Some("suspended")));
    drop(fails);
    let config = with_group(started_count("1"), |g| {
        g.scale_down_method = crate::config::ScaleDownMethod::Suspend
    });
    let outcome = reconciler(&fake, config)
        .reconcile("a", &Mutex::default())
        .unwrap();
    assert_eq!(
        fake.calls(),
        ["list", "suspend 1", "get 1", "stop 1", "suspend 2", "get 2"]
    );
    assert_eq!(fake.state("2"), "suspended", "its snapshot is kept");
    assert!(matches!(
        outcome,
        Outcome::Applied {
            action: "stop",
            tally: Tally { ok: 2, .. },
            ..
        }
    ));
}

/// Issue 12: with a stabilization window, a restart reads the window from history, so a dip
/// shorter than the window stops nothing.
#[test]
fn the_window_is_filled_from_history_on_the_first_reconcile() {
    let fake = Arc::new(Fake::default());
    for id in ["1", "2", "3"] {
        fake.machine(id, "started");
    }
    metric(&fake, "q", 1.0);
    let now = clock::now();
    let past: Vec<(Stamp, MetricValues)> = (1..20)
        .map(|k| (now - k * 15_000, [("q".to_string(), 3.0)].into()))
        .collect();
    *fake.history.lock().unwrap() = Some(past);
    let config = Config {
        metric_collectors: vec![collector("q")],
        ..with_group(started_count("q"), |g| {
            g.scale_down_stabilization = Duration::from_secs(600)
        })
    };
    let r = reconciler(&fake, config.clone());
    let outcome = r.reconcile("a", &Mutex::default()).unwrap();
    assert!(matches!(
        outcome,
        Outcome::Applied {
            action: "no_scale",
            ..
        }
    ));
    assert_eq!(fake.calls(), ["list"]);
    // Without history the window starts empty and the dip stops machines at once.
    *fake.history.lock().unwrap() = None;
    fake.calls.lock().unwrap().clear();
    let outcome = reconciler(&fake, config)
        .reconcile("a", &Mutex::default())
        .unwrap();
    assert!(matches!(outcome, Outcome::Applied { action: "stop", .. }));
}

/// Issue 12: the fallback counts after N failed collections, and the expression again after.
#[test]
fn fallback_counts_while_metrics_fail() {
    let fake = Arc::new(Fake::default());
    for id in ["1", "2", "3", "4"] {
        fake.machine(id, "stopped");
    }
    metric(&fake, "q", 1.0);
    *fake.collect_fails.lock().unwrap() = true;
    let config = Config {
        metric_collectors: vec![collector("q")],
        ..with_group(started_count("q"), |g| {
            g.fallback_after = 2;
            g.fallback_started_machine_count = Some(3);
        })
    };
    let r = reconciler(&fake, config);
    let state = Mutex::new(AppState::default());
    let first = r.reconcile("a", &state).unwrap();
    assert!(!first.is_clean(), "the first failure fails the cycle");
    assert_eq!(fake.calls(), ["list"], "and changes nothing");
    let second = r.reconcile("a", &state).unwrap();
    assert!(matches!(
        second,
        Outcome::Applied {
            action: "start",
            tally: Tally { ok: 3, .. },
            ..
        }
    ));
    assert!(
        r.telemetry()
            .render()
            .contains("fas_fallback_active{app=\"a\"} 1")
    );
    // Metrics back: the expression (1) again, and three machines to stop.
    *fake.collect_fails.lock().unwrap() = false;
    let third = r.reconcile("a", &state).unwrap();
    assert!(
        matches!(
            third,
            Outcome::Applied {
                action: "stop",
                tally: Tally { ok: 2, .. },
                ..
            }
        ),
        "{third:?} {:?}",
        fake.calls()
    );
    assert!(
        r.telemetry()
            .render()
            .contains("fas_fallback_active{app=\"a\"} 0")
    );
}

/// A lease that holds for `checks` more checks, then is gone.
struct Lease {
    checks: std::sync::atomic::AtomicUsize,
}

impl Fence for Lease {
    fn holds(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.checks
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    fn term(&self) -> u64 {
        1
    }
}

fn fenced(fake: &Arc<Fake>, checks: usize) -> Reconciler {
    let config = Config {
        metric_collectors: vec![collector("q")],
        ..started_count("q")
    };
    reconciler(fake, config).fenced_by(Arc::new(Lease {
        checks: checks.into(),
    }))
}

#[test]
fn the_fence_is_asked_before_the_cycle_and_every_action() {
    let fake = Arc::new(Fake::default());
    for id in ["1", "2", "3"] {
        fake.machine(id, "stopped");
    }
    metric(&fake, "q", 3.0);
    let state = Mutex::new(AppState::default());
    let standby = fenced(&fake, 0).reconcile("a", &state).unwrap();
    assert_eq!(standby, Outcome::Standby);
    assert!(fake.calls().is_empty(), "a standby lists nothing");

    // The lease holds for the cycle's check and one action, then lapses mid-apply.
    let lapsing = fenced(&fake, 2).reconcile("a", &state).unwrap();
    let starts = fake
        .calls()
        .iter()
        .filter(|c| c.starts_with("start"))
        .count();
    assert_eq!(
        starts,
        1,
        "no action after the lease lapsed: {:?}",
        fake.calls()
    );
    assert!(
        matches!(
            lapsing,
            Outcome::Applied {
                tally: Tally {
                    ok: 1,
                    failed: 0,
                    unknown: 0
                },
                ..
            }
        ),
        "{lapsing:?}"
    );
}

#[test]
fn forget_starts_the_memory_afresh() {
    let fake = Arc::new(Fake::default());
    fake.machine("1", "started");
    metric(&fake, "q", 1.0);
    let state = Mutex::new(AppState::default());
    fenced(&fake, 10).reconcile("a", &state).unwrap();
    assert!(state.lock().unwrap().prefilled);
    state.lock().unwrap().forget();
    let s = state.lock().unwrap();
    assert!(
        !s.prefilled && s.groups.is_empty(),
        "the next reconcile prefills again"
    );
}
