//! Carrying a plan out: bounded parallelism shared by every group of the app, per-machine error
//! isolation, and read-back of operations whose outcome is unknown. It decides nothing, except
//! that a machine whose state is unknown is never replaced by another one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

use super::platform::{Change, Platform};
use super::{Fence, Scope, lock};
use crate::http::Deadline;
use crate::plan::{Action, Launches};
use crate::telemetry::{MachineOp, OpStatus, Telemetry};
use crate::wire::{Machine, Stable, StateClass, Toward};

/// Machine operations of one apply, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub ok: usize,
    pub failed: usize,
    /// Neither the answer nor a read-back told what happened.
    pub unknown: usize,
}

/// How one machine operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Done {
    Yes,
    No,
    /// The machine could not be read back: it must not be replaced by another one.
    Unknown,
    /// Not sent: the leader election's lease is gone. No further item is begun.
    Fenced,
}

impl From<Done> for OpStatus {
    fn from(d: Done) -> OpStatus {
        match d {
            Done::Yes => OpStatus::Ok,
            Done::No => OpStatus::Failed,
            Done::Unknown | Done::Fenced => OpStatus::Unknown,
        }
    }
}

/// Places for machine operations in flight: `action-concurrency` for the whole app, shared
/// by its groups.
pub(super) struct Permits {
    capacity: usize,
    free: Mutex<usize>,
    returned: Condvar,
}

impl Permits {
    pub(super) fn new(n: usize) -> Permits {
        Permits {
            capacity: n.max(1),
            free: Mutex::new(n.max(1)),
            returned: Condvar::new(),
        }
    }

    fn run<T>(&self, op: impl FnOnce() -> T) -> T {
        let mut free = lock(&self.free);
        while *free == 0 {
            free = self.returned.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        drop(free);
        let result = op();
        *lock(&self.free) += 1;
        self.returned.notify_one();
        result
    }
}

/// What one group's apply needs besides the plan.
pub(super) struct Apply<'a> {
    pub platform: &'a dyn Platform,
    pub telemetry: &'a Telemetry,
    pub who: Scope<'a>,
    pub deadline: Deadline,
    pub permits: &'a Permits,
    /// The listed machines (for the region of a destroyed machine).
    pub machines: &'a [Machine],
    /// Set when a refused suspend was replaced by a stop (warned once per app).
    pub suspend_refused: &'a AtomicBool,
    /// With leader election, asked before every machine action.
    pub fence: Option<&'a dyn Fence>,
    /// Set when the fence stopped an action (warned once per app).
    pub fence_closed: &'a AtomicBool,
}

impl Apply<'_> {
    /// Carries out `action`, between the Go program's `begin bulk …` and `bulk … completed`
    /// lines.
    pub(super) fn run(&self, action: &Action, shortfall: usize) -> Tally {
        let (app, group) = (self.who.app, self.who.group);
        let kind = match action {
            Action::None | Action::NoCloneSource => return Tally::default(),
            Action::Create(_) => "create",
            Action::Destroy(_) => "destroy",
            Action::Start { .. } => "start",
            Action::Stop { .. } => "stop",
            Action::Suspend { .. } => "suspend",
        };
        log::info!(app, process_group = group; "begin bulk {kind}");
        if shortfall > 0 {
            log::warn!(app, process_group = group, shortfall;
                "not enough stopped machines available to reach target, please create more machines");
        }
        let tally = match action {
            Action::None | Action::NoCloneSource => Tally::default(),
            Action::Create(launches) => self.create(launches),
            Action::Destroy(ids) => bulk(ids, ids.len(), Mode::Once, self.permits, |id| {
                self.change(Change::Destroy, id)
            }),
            Action::Start { candidates, needed } => bulk(
                candidates,
                *needed,
                Mode::ReplaceFailures,
                self.permits,
                |id| self.change(Change::Start, id),
            ),
            Action::Stop { candidates, needed } => bulk(
                candidates,
                *needed,
                Mode::ReplaceFailures,
                self.permits,
                |id| self.change(Change::Stop, id),
            ),
            Action::Suspend { candidates, needed } => bulk(
                candidates,
                *needed,
                Mode::ReplaceFailures,
                self.permits,
                |id| self.suspend(id),
            ),
        };
        log::info!(app, process_group = group, n = tally.ok, failed = tally.failed, unknown = tally.unknown;
            "bulk {kind} completed");
        tally
    }

    /// Whether an action may be sent now; warns once when the lease is gone.
    fn may_act(&self) -> bool {
        if self.fence.is_none_or(|f| f.holds()) {
            return true;
        }
        if !self.fence_closed.swap(true, Ordering::SeqCst) {
            log::warn!(app = self.who.app, process_group = self.who.group;
                "leader lease no longer valid by this instance's clock: no further machine actions");
        }
        false
    }

    fn create(&self, launches: &Launches) -> Tally {
        let (app, group) = (self.who.app, self.who.group);
        let requests: Vec<_> = launches.requests().collect();
        bulk(
            &requests,
            requests.len(),
            Mode::StopOnFailure,
            self.permits,
            |request| {
                if !self.may_act() {
                    return Done::Fenced;
                }
                let result = self.platform.create(app, *request, self.deadline);
                match &result {
                    Ok(created) => {
                        log::info!(app, process_group = group, id = created.id.as_str(), region = created.region.as_str(); "machine created")
                    }
                    Err(e) => {
                        log::error!(app, process_group = group, err:% = e; "cannot create machine, skipping")
                    }
                }
                let done = if result.is_ok() { Done::Yes } else { Done::No };
                self.telemetry
                    .machine_op(self.who, MachineOp::Create, done.into());
                done
            },
        )
    }

    /// Starts, stops, suspends or destroys one machine. When the outcome is unknown (no
    /// answer, or an answer such as 412 that says the machine is not where it was), the
    /// machine is read back and counted as what it really is.
    fn change(&self, change: Change, id: &str) -> Done {
        if !self.may_act() {
            return Done::Fenced;
        }
        let done = match self.platform.act(self.who.app, change, id, self.deadline) {
            Ok(()) => Done::Yes,
            Err(e) => self.settle(change, id, &e),
        };
        self.count(change, id, done)
    }

    /// Suspends one machine. When the platform refuses (a 4xx other than 429), the machine is
    /// read back and stopped only if it is still started: stopping a suspended machine would
    /// throw its snapshot away.
    fn suspend(&self, id: &str) -> Done {
        let (app, group) = (self.who.app, self.who.group);
        if !self.may_act() {
            return Done::Fenced;
        }
        let done = match self.platform.act(app, Change::Suspend, id, self.deadline) {
            Ok(()) => Done::Yes,
            Err(e) if e.is_refused() && !e.is_not_found() => {
                match self.platform.get(app, id, self.deadline) {
                    Ok(m) if m.state == "started" => {
                        if !self.suspend_refused.swap(true, Ordering::Relaxed) {
                            log::warn!(app, process_group = group, id, err:% = e;
                                "suspend refused, stopping instead (warned once)");
                        }
                        self.count(Change::Suspend, id, Done::No);
                        return self.change(Change::Stop, id);
                    }
                    Ok(m) if reached(Change::Suspend, &m) => Done::Yes,
                    Ok(_) => Done::No,
                    Err(_) => Done::Unknown,
                }
            }
            Err(e) => self.settle(Change::Suspend, id, &e),
        };
        self.count(Change::Suspend, id, done)
    }

    /// The outcome of a failed change: read back when the answer leaves it open.
    fn settle(&self, change: Change, id: &str, e: &crate::machines::ApiError) -> Done {
        let (app, group) = (self.who.app, self.who.group);
        let verb = change.op().as_str();
        // Gone is as far from started as a machine can be: replacing it by another stop (or
        // suspend) would go one past the target.
        if change != Change::Start && e.is_not_found() {
            log::info!(app, process_group = group, id, err:% = e; "machine already gone");
            return Done::Yes;
        }
        if !e.outcome_unknown() {
            log::error!(app, process_group = group, id, err:% = e; "cannot {verb} machine, skipping");
            return Done::No;
        }
        match self.platform.get(app, id, self.deadline) {
            Ok(m) if reached(change, &m) => {
                log::info!(app, process_group = group, id, state = m.state.as_str(), err:% = e;
                    "machine read back in the wanted state after an unclear answer");
                Done::Yes
            }
            Ok(m) => {
                log::error!(app, process_group = group, id, err:% = e, state = m.state.as_str();
                    "cannot {verb} machine, skipping");
                Done::No
            }
            Err(g) if change == Change::Destroy && g.is_not_found() => Done::Yes,
            Err(g) => {
                log::error!(app, process_group = group, id, err:% = e, read_back:% = g;
                    "machine state unknown after failed {verb}, not replacing it");
                Done::Unknown
            }
        }
    }

    /// Logs a success as the Go program does and counts the outcome.
    fn count(&self, change: Change, id: &str, done: Done) -> Done {
        let (app, group) = (self.who.app, self.who.group);
        if done == Done::Yes {
            let past = change.op().past_tense();
            let region = match change {
                Change::Destroy => self
                    .machines
                    .iter()
                    .find(|m| m.id == id)
                    .map_or("", |m| m.region.as_str()),
                _ => "",
            };
            if region.is_empty() {
                log::info!(app, process_group = group, id; "machine {past}");
            } else {
                log::info!(app, process_group = group, id, region; "machine {past}");
            }
        }
        self.telemetry
            .machine_op(self.who, change.op(), done.into());
        done
    }
}

/// Whether a machine read back is where `change` was taking it (or on its way there).
fn reached(change: Change, m: &Machine) -> bool {
    let counts_as = match m.class() {
        StateClass::Stable(s) | StateClass::Transient(Toward::State(s)) => Some(s),
        StateClass::Transient(Toward::Initial) => None,
        StateClass::Ignored => {
            return change == Change::Destroy
                && matches!(m.state.as_str(), "destroying" | "destroyed");
        }
    };
    match change {
        Change::Start => counts_as == Some(Stable::Started),
        Change::Stop => matches!(counts_as, Some(Stable::Stopped | Stable::Suspended)),
        Change::Suspend => counts_as == Some(Stable::Suspended),
        Change::Destroy => false,
    }
}

/// How a bulk operation treats failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Each item once; a failure still uses up its place (destroy: never more than planned).
    Once,
    /// A failure is replaced by the next candidate (start, stop: as in Go); an unknown
    /// outcome is not.
    ReplaceFailures,
    /// After a failure no new item is begun (create: a failing launch usually fails again,
    /// and the Go program looped on it forever).
    StopOnFailure,
}

/// Runs `op` over `items` until `needed` succeeded (or items run out), each operation holding
/// one of `permits`.
pub(super) fn bulk<T: Sync>(
    items: &[T],
    needed: usize,
    mode: Mode,
    permits: &Permits,
    op: impl Fn(&T) -> Done + Sync,
) -> Tally {
    #[derive(Default)]
    struct Progress {
        next: usize,
        in_flight: usize,
        tally: Tally,
        fenced: bool,
    }
    let limit = if mode == Mode::ReplaceFailures {
        items.len()
    } else {
        needed.min(items.len())
    };
    let progress = Mutex::new(Progress::default());
    let take = || {
        let mut p = lock(&progress);
        let t = p.tally;
        let stop = p.fenced
            || p.next >= limit
            || t.ok + t.unknown + p.in_flight >= needed
            || (mode == Mode::StopOnFailure && t.failed + t.unknown > 0);
        if stop {
            return None;
        }
        p.next += 1;
        p.in_flight += 1;
        Some(&items[p.next - 1])
    };
    let workers = permits.capacity.min(needed.min(limit));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                while let Some(item) = take() {
                    let done = permits.run(|| op(item));
                    let mut p = lock(&progress);
                    p.in_flight -= 1;
                    match done {
                        Done::Yes => p.tally.ok += 1,
                        Done::No => p.tally.failed += 1,
                        Done::Unknown => p.tally.unknown += 1,
                        Done::Fenced => p.fenced = true,
                    }
                }
            });
        }
    });
    let p = lock(&progress);
    p.tally
}
