//! The scheduler and its fixed pool of `concurrency` worker threads.
//!
//! Every `interval` the scheduler hands each managed app to the workers, starting at once
//! (the Go program waited one interval). An app is never reconciled twice at the same time: if
//! its previous reconcile is still queued or running when its next tick comes, the tick is
//! skipped and counted. With a wildcard app name, the organization's app list is refreshed
//! every `app_list_refresh_interval`; a failed refresh keeps the last known list.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::logging;
use crate::queue::WorkQueue;
use crate::reconcile::{AppState, Reconciler};
use crate::wildcard;

/// A busy app's skipped ticks are logged at most this often.
const SKIP_LOG_EVERY: Duration = Duration::from_secs(60);

/// A stop request shared by the signal handler, the scheduler and the workers; it also
/// carries nudges (a new leader wakes the scheduler).
#[derive(Default)]
pub struct Shutdown {
    state: Mutex<Signals>,
    wake: Condvar,
}

#[derive(Default)]
struct Signals {
    requested: bool,
    nudges: u64,
}

impl Shutdown {
    fn lock(&self) -> std::sync::MutexGuard<'_, Signals> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn request(&self) {
        self.lock().requested = true;
        self.wake.notify_all();
    }

    pub fn is_requested(&self) -> bool {
        self.lock().requested
    }

    /// Wakes every waiter without requesting shutdown.
    pub fn nudge(&self) {
        self.lock().nudges += 1;
        self.wake.notify_all();
    }

    /// Sleeps up to `d`; returns early when shutdown is requested (true) or on a nudge.
    pub fn wait(&self, d: Duration) -> bool {
        let guard = self.lock();
        let nudges = guard.nudges;
        let (guard, _) = self
            .wake
            .wait_timeout_while(guard, d, |s| !s.requested && s.nudges == nudges)
            .unwrap_or_else(|e| e.into_inner());
        guard.requested
    }
}

/// Which apps to manage.
#[derive(Debug, Clone)]
pub struct Apps {
    /// An app name, or a pattern with `*`.
    pub name: String,
    /// Organization slug, needed for a pattern.
    pub org: String,
    pub refresh_interval: Duration,
}

impl Apps {
    /// The current app names, each once: the name itself, or the org's apps matching the
    /// pattern.
    fn resolve(&self, reconciler: &Reconciler) -> Result<Vec<String>, String> {
        if !wildcard::is_pattern(&self.name) {
            return Ok(vec![self.name.clone()]);
        }
        let all = reconciler.org_apps(&self.org).map_err(|e| e.to_string())?;
        Ok(all
            .into_iter()
            .filter(|a| wildcard::matches(&self.name, a))
            .collect())
    }
}

/// A managed app: its state between reconciles and whether a reconcile is pending.
struct Slot {
    busy: AtomicBool,
    active: AtomicBool,
    /// The leader election's term `state` belongs to.
    term: AtomicU64,
    state: Mutex<AppState>,
    /// When a skipped tick was last logged.
    skip_logged: Mutex<Option<Instant>>,
}

struct Job {
    app: String,
    slot: Arc<Slot>,
}

/// The worker threads; each reports the result of every job on `results`.
struct Workers {
    jobs: Arc<WorkQueue<Job>>,
    done: mpsc::Receiver<()>,
    count: usize,
}

impl Workers {
    fn start(
        count: usize,
        reconciler: &Arc<Reconciler>,
        shutdown: &Arc<Shutdown>,
        results: mpsc::Sender<(String, bool)>,
    ) -> Result<Workers, String> {
        let jobs = Arc::new(WorkQueue::new(usize::MAX));
        let (done_tx, done) = mpsc::channel();
        for i in 0..count {
            let (jobs, reconciler, shutdown, results, done_tx) = (
                Arc::clone(&jobs),
                Arc::clone(reconciler),
                Arc::clone(shutdown),
                results.clone(),
                done_tx.clone(),
            );
            thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || {
                    while let Some(job) = jobs.pop() {
                        let ok = run_job(&job, &reconciler, &shutdown);
                        job.slot.busy.store(false, Ordering::SeqCst);
                        let _ = results.send((job.app, ok));
                    }
                    let _ = done_tx.send(());
                })
                .map_err(|e| format!("cannot start worker threads (concurrency {count}): {e}"))?;
        }
        Ok(Workers { jobs, done, count })
    }

    /// Queues `app` unless its previous reconcile is still pending; false if skipped.
    fn submit(&self, app: &str, slot: &Arc<Slot>) -> bool {
        if slot.busy.swap(true, Ordering::SeqCst) {
            return false;
        }
        let _ = self.jobs.push(Job {
            app: app.to_string(),
            slot: Arc::clone(slot),
        });
        true
    }

    /// Lets queued work drain and waits for the workers, up to `grace`. Returns whether they
    /// all finished in time.
    fn finish(self, grace: Duration) -> bool {
        self.jobs.close();
        let deadline = Instant::now().checked_add(grace);
        for _ in 0..self.count {
            let left = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            if self.done.recv_timeout(left).is_err() {
                return false;
            }
        }
        true
    }
}

/// One reconcile; true if it succeeded. A panic (a bug) is caught, logged as one error
/// record and counted, and the app is tried again next tick.
fn run_job(job: &Job, reconciler: &Reconciler, shutdown: &Shutdown) -> bool {
    if shutdown.is_requested() || !job.slot.active.load(Ordering::SeqCst) {
        log::debug!(app = job.app.as_str(); "reconcile not started: shutting down or app removed");
        return false;
    }
    if let Some(term) = reconciler.term() {
        if job.slot.term.swap(term, Ordering::SeqCst) != term {
            // Memory from before another instance led: start afresh (prefill from history).
            job.slot
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .forget();
        }
    }
    let ok = match logging::catch_panic(|| reconciler.reconcile(&job.app, &job.slot.state)) {
        Ok(result) => result.is_ok_and(|outcome| outcome.is_clean()),
        Err(panic) => {
            reconciler.telemetry().panicked(&job.app);
            log::error!(app = job.app.as_str(), err:% = panic;
                "reconciliation failed with an internal error (a bug; please report it)");
            false
        }
    };
    if !job.slot.active.load(Ordering::SeqCst) {
        // The app left the list while this reconcile ran: what it just recorded goes too.
        reconciler.telemetry().forget_app(&job.app);
    }
    ok
}

fn new_slot() -> Arc<Slot> {
    Arc::new(Slot {
        busy: AtomicBool::new(false),
        active: AtomicBool::new(true),
        term: AtomicU64::new(0),
        state: Mutex::new(AppState::default()),
        skip_logged: Mutex::new(None),
    })
}

/// `serve --once`: one reconcile of every app, `concurrency` at a time. True if every app
/// reconciled without error.
pub fn run_once(
    reconciler: Arc<Reconciler>,
    apps: &Apps,
    concurrency: usize,
    shutdown: &Arc<Shutdown>,
) -> bool {
    let names = match apps.resolve(&reconciler) {
        Ok(names) => names,
        Err(e) => {
            log::error!(err:% = e; "app list update failed");
            return false;
        }
    };
    if names.is_empty() {
        log::warn!(pattern = apps.name.as_str(); "no app matches; nothing to reconcile");
    }
    reconciler.telemetry().managed_apps(names.len());
    let (results_tx, results) = mpsc::channel();
    let workers = match Workers::start(concurrency.max(1), &reconciler, shutdown, results_tx) {
        Ok(w) => w,
        Err(e) => {
            log::error!("{e}");
            return false;
        }
    };
    for name in &names {
        workers.submit(name, &new_slot());
    }
    // Each reconcile is bounded by the timeout and `concurrency` run at once, so the pass is
    // bounded by one timeout per round of apps.
    let rounds = u32::try_from(names.len().div_ceil(concurrency.max(1))).unwrap_or(u32::MAX);
    let budget = reconciler
        .timeout()
        .saturating_mul(rounds.max(1))
        .saturating_add(Duration::from_secs(5));
    let finished = workers.finish(budget);
    if !finished {
        log::error!(apps = names.len(), waited_s = budget.as_secs();
            "reconciles still running after every app's timeout; exiting");
    }
    let ok = results.try_iter().filter(|(_, ok)| *ok).count();
    finished && ok == names.len()
}

/// `serve`: reconciles every app each interval until shutdown is requested, then waits up to
/// `grace` for running reconciles.
pub fn run(
    reconciler: Arc<Reconciler>,
    apps: &Apps,
    concurrency: usize,
    interval: Duration,
    shutdown: &Arc<Shutdown>,
    grace: Duration,
) -> Result<(), String> {
    let (results_tx, results) = mpsc::channel();
    let workers = Workers::start(concurrency.max(1), &reconciler, shutdown, results_tx)?;
    let telemetry = Arc::clone(reconciler.telemetry());
    let mut slots: BTreeMap<String, Arc<Slot>> = BTreeMap::new();
    let mut next_tick = Instant::now();
    let mut next_refresh = Instant::now();
    let mut refreshed_once = false;
    let mut was_leading = false;
    while !shutdown.is_requested() {
        telemetry.heartbeat();
        // With leader election, only the leader refreshes and reconciles; a new leader
        // begins at once.
        let leading = reconciler.may_act();
        if leading && !was_leading {
            next_tick = Instant::now();
        }
        was_leading = leading;
        let now = Instant::now();
        if leading && (now >= next_refresh || !refreshed_once) {
            refresh(&reconciler, apps, &mut slots);
            refreshed_once = true;
            next_refresh = Instant::now() + apps.refresh_interval;
        }
        if now >= next_tick {
            for (app, slot) in slots.iter().filter(|_| leading) {
                if !workers.submit(app, slot) {
                    telemetry.tick_skipped(app, "busy");
                    let mut logged = slot.skip_logged.lock().unwrap_or_else(|e| e.into_inner());
                    if logged.is_none_or(|t| t.elapsed() >= SKIP_LOG_EVERY) {
                        log::warn!(app = app.as_str();
                            "previous reconcile still running, skipping this tick");
                        *logged = Some(Instant::now());
                    }
                }
            }
            // Late ticks are dropped, not queued: the next one is a whole interval away.
            next_tick += interval;
            if next_tick <= now {
                next_tick = now + interval;
            }
        }
        results.try_iter().for_each(drop);
        let wake = next_tick
            .min(next_refresh)
            .min(Instant::now() + Duration::from_secs(1));
        shutdown.wait(wake.saturating_duration_since(Instant::now()));
    }
    log::info!("scheduler stopped, waiting for running reconciles");
    if !workers.finish(grace) {
        log::warn!(grace_s = grace.as_secs(); "reconciles still running after the shutdown grace period; exiting anyway");
    }
    Ok(())
}

/// Brings `slots` in line with the current app list; on failure the last list is kept.
fn refresh(reconciler: &Reconciler, apps: &Apps, slots: &mut BTreeMap<String, Arc<Slot>>) {
    let names = match apps.resolve(reconciler) {
        Ok(names) => names,
        Err(e) => {
            log::error!(err:% = e; "app list update failed");
            return;
        }
    };
    // A set: 10,000 apps are not compared with 10,000 names each.
    let names: BTreeSet<String> = names.into_iter().collect();
    slots.retain(|app, slot| {
        let keep = names.contains(app);
        if !keep {
            log::info!(app = app.as_str(); "app no longer matches, stopped managing it");
            slot.active.store(false, Ordering::SeqCst);
            reconciler.telemetry().forget_app(app);
        }
        keep
    });
    for name in names {
        slots.entry(name).or_insert_with_key(|app| {
            log::info!(app = app.as_str(); "managing app");
            new_slot()
        });
    }
    reconciler.telemetry().managed_apps(slots.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_wakes_waiters() {
        let s = Arc::new(Shutdown::default());
        let waiter = {
            let s = Arc::clone(&s);
            thread::spawn(move || {
                let started = Instant::now();
                let woke = s.wait(Duration::from_secs(30));
                (woke, started.elapsed())
            })
        };
        s.request();
        let (woke, took) = waiter.join().unwrap();
        assert!(woke);
        assert!(took < Duration::from_secs(5));
        assert!(s.is_requested());
        assert!(!Shutdown::default().wait(Duration::from_millis(1)));
        let n = Arc::new(Shutdown::default());
        let waiter = {
            let n = Arc::clone(&n);
            thread::spawn(move || n.wait(Duration::from_secs(30)))
        };
        while !waiter.is_finished() {
            n.nudge();
            thread::sleep(Duration::from_millis(1));
        }
        assert!(!waiter.join().unwrap(), "a nudge wakes without stopping");
    }
}
