use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

use super::*;
use crate::collector::{SourceError, SourceErrorKind};
use crate::expr::MetricValues;
use crate::http::Transport;
use crate::machines::ApiErrorKind;
use crate::wire::CloneSource;
use crate::wire::CreateRequest;

#[test]
fn replace_failures_moves_on_to_the_next_candidate() {
    // Go case 18: start of "2" fails, "1" and "3" succeed, "4" is never tried.
    let tried = Mutex::new(Vec::new());
    let tally = bulk(&["1", "2", "3", "4"], 2, Mode::ReplaceFailures, 1, |id| {
        tried.lock().unwrap().push(*id);
        if *id == "2" { Done::No } else { Done::Yes }
    });
    assert_eq!((tally.ok, tally.failed), (2, 1));
    assert_eq!(*tried.lock().unwrap(), ["1", "2", "3"]);
}

#[test]
fn an_unknown_outcome_is_not_replaced() {
    let tried = Mutex::new(Vec::new());
    let tally = bulk(&["1", "2", "3"], 2, Mode::ReplaceFailures, 1, |id| {
        tried.lock().unwrap().push(*id);
        if *id == "1" { Done::Unknown } else { Done::Yes }
    });
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
    let tally = bulk(&["1", "2", "3"], 2, Mode::Once, 4, |id| {
        if *id == "1" { Done::No } else { Done::Yes }
    });
    assert_eq!((tally.ok, tally.failed), (1, 1));
}

#[test]
fn stop_on_failure_begins_nothing_new() {
    let calls = AtomicUsize::new(0);
    let tally = bulk(&[1, 2, 3, 4, 5], 5, Mode::StopOnFailure, 1, |_| {
        calls.fetch_add(1, Ordering::SeqCst);
        Done::No
    });
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
    let tally = bulk(&items, 20, Mode::ReplaceFailures, 4, |_| {
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
        bulk::<u8>(&[], 3, Mode::ReplaceFailures, 4, |_| Done::Yes),
        Tally::default()
    );
    assert_eq!(
        bulk(&[1], 0, Mode::Once, 4, |_| Done::Yes),
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
    /// `act` on these ids fails with this error and (if `Some`) leaves the machine in that
    /// state, as a dropped connection after the change was made would.
    act_fails: Mutex<BTreeMap<String, ActFailure>>,
    get_fails: Mutex<bool>,
    calls: Mutex<Vec<String>>,
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
        self.machines.lock().unwrap().push(Machine {
            id: id.into(),
            state: state.into(),
            region: "iad".into(),
            host_status: "ok".into(),
            process_group: "app".into(),
            clone: Some(CloneSource {
                config: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
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
        if metrics.contains_key("fail") {
            return Err(CollectError {
                metric: "fail".into(),
                error: SourceError {
                    source: "fake".into(),
                    kind: SourceErrorKind::Answer("down".into()),
                    hint: "",
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
        self.calls
            .lock()
            .unwrap()
            .push(format!("create {}", r.region));
        Ok(Machine::default())
    }

    fn act(&self, _: &str, change: Change, id: &str, _: Deadline) -> Result<(), ApiError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("{} {id}", change.op().as_str()));
        if let Some((error, state)) = self.act_fails.lock().unwrap().get(id).copied() {
            if let Some(state) = state {
                self.set_state(id, state);
            }
            return Err(error());
        }
        let state = match change {
            Change::Start => "started",
            Change::Stop => "stopped",
            Change::Destroy => "destroying",
        };
        self.set_state(id, state);
        Ok(())
    }

    fn org_apps(&self, _: &str, _: Deadline) -> Result<Vec<String>, ApiError> {
        Ok(vec![])
    }
}

fn reconciler(fake: &Arc<Fake>, config: Config) -> Reconciler {
    let targets = TargetExprs::compile(&config).unwrap();
    Reconciler::new(
        &config,
        targets,
        Box::new(Arc::clone(fake)),
        Arc::new(Telemetry::new()),
        false,
    )
}

fn started_count(expr: &str) -> Config {
    Config {
        app_name: "a".into(),
        started_machine_count: expr.into(),
        action_concurrency: 1,
        ..Config::default()
    }
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
        .insert("2".into(), (precondition, Some("started")));
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
            }
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
        .insert("2".into(), (dropped, None));
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
        .insert("2".into(), (dropped, None));
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

#[test]
fn a_destroy_of_a_machine_already_gone_counts_as_done() {
    let fake = Arc::new(Fake::default());
    fake.machine("1", "started");
    fake.machine("2", "stopped");
    fn gone() -> ApiError {
        api_error(ApiErrorKind::Status {
            code: 404,
            message: "machine not found".into(),
            status: String::new(),
        })
    }
    fake.act_fails
        .lock()
        .unwrap()
        .insert("2".into(), (gone, None));
    let config = Config {
        created_machine_count: "1".into(),
        ..started_count("")
    };
    let outcome = reconciler(&fake, config)
        .reconcile("a", &Mutex::default())
        .unwrap();
    assert!(matches!(
        outcome,
        Outcome::Applied {
            action: "destroy",
            tally: Tally {
                ok: 1,
                failed: 0,
                unknown: 0
            }
        }
    ));
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
    fake.metrics.lock().unwrap().insert("fail".into(), 0.0);
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
        created_machine_count: "1e308".into(),
        max_machines: 3,
        ..started_count("")
    };
    let outcome = reconciler(&fake, config)
        .reconcile("a", &Mutex::default())
        .unwrap();
    assert!(matches!(
        outcome,
        Outcome::Applied {
            action: "create",
            tally: Tally { ok: 2, .. }
        }
    ));
    assert_eq!(fake.calls(), ["list", "create iad", "create iad"]);
}
