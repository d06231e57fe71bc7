//! Leader election on Redis, so that two or more autoscalers can run with one acting: a lock
//! key whose value is the holder's instance id, with a TTL.
//!
//! * Acquire: `SET key id NX PX ttl`, tried by every standby each ttl/3.
//! * Renew: every ttl/3, a Lua script that extends the TTL only if the value is still this
//!   instance's id (compare-and-extend), so only the holder can extend it.
//! * Release: a Lua script that deletes the key only if it is still ours (compare-and-delete),
//!   on SIGTERM/SIGINT once the running reconciles are done, so a standby takes over at once.
//! * Fencing by time: the holder may act only until `sent + ttl − margin`, where `sent` is
//!   when the last successful acquire or renew was sent (so before Redis set the expiry) and
//!   the margin (ttl/5) covers the time from the check to the request reaching the Machines
//!   API. This is checked by the holder's own monotonic clock before every cycle and before
//!   every machine action: a process that was paused (SIGSTOP) past its lease sends nothing
//!   after it resumes until it has renewed, and a holder that cannot reach Redis stops acting
//!   before the key can expire for the others.
//!
//! What this cannot do: stop a request that was already on the wire, or one sent by a process
//! paused between its check and its send for longer than the margin. Redis is a single point
//! of coordination: when it is down nobody acts (logged once per minute).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::http::Deadline;
use crate::pool::Shutdown;
use crate::reconcile::Fence;
use crate::redis_client::{Failure, RedisServer};
use crate::secret::Secret;
use crate::telemetry::Telemetry;

/// "Redis unreachable" is logged at most this often.
const UNREACHABLE_LOG_EVERY: Duration = Duration::from_secs(60);

/// Extends the key's TTL only while it holds our id.
const EXTEND: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
    return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";
/// Deletes the key only while it holds our id.
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
    return redis.call('DEL', KEYS[1]) else return 0 end";

/// What an acquire found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquire {
    Won,
    /// Another instance holds the lock for this much longer (as far as Redis knows).
    Held {
        expires_in: Duration,
    },
}

/// Where the lock lives: Redis in production, a map with a fake clock in the unit tests.
pub trait LockStore: Send + Sync {
    /// Sets the key to `id` with `ttl` if it does not exist.
    fn acquire(&self, id: &str, ttl: Duration) -> Result<Acquire, Failure>;
    /// Extends the key's TTL if it holds `id`; whether it did.
    fn extend(&self, id: &str, ttl: Duration) -> Result<bool, Failure>;
    /// Deletes the key if it holds `id`; whether it did.
    fn release(&self, id: &str) -> Result<bool, Failure>;
    /// The server and key, for log lines.
    fn shown(&self) -> String;
}

/// The lock key on a Redis server.
pub struct RedisLock {
    server: RedisServer,
    key: String,
    /// Each command's deadline.
    timeout: Duration,
}

impl RedisLock {
    pub fn new(url: &Secret, key: &str, ttl: Duration) -> Result<RedisLock, String> {
        Ok(RedisLock {
            server: RedisServer::new(url, "")
                .map_err(|e| format!("invalid leader-election-url: {e}"))?,
            key: key.to_string(),
            // A lock command must not outlive the renew period.
            timeout: ttl / 4,
        })
    }

    fn script(&self, script: &str, id: &str, ttl: Option<Duration>) -> Result<bool, Failure> {
        self.server
            .with_connection(Deadline::after(self.timeout), |c| {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(script).arg(1).arg(&self.key).arg(id);
                if let Some(ttl) = ttl {
                    cmd.arg(ttl.as_millis() as u64);
                }
                cmd.query::<i64>(c)
            })
            .map(|n| n == 1)
    }
}

impl LockStore for RedisLock {
    /// `SET NX PX`, and in the same round trip the key's `PTTL`, so that a standby tries
    /// again right when the holder's lock expires.
    fn acquire(&self, id: &str, ttl: Duration) -> Result<Acquire, Failure> {
        self.server
            .with_connection(Deadline::after(self.timeout), |c| {
                redis::pipe()
                    .cmd("SET")
                    .arg(&self.key)
                    .arg(id)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl.as_millis() as u64)
                    .cmd("PTTL")
                    .arg(&self.key)
                    .query::<(Option<String>, i64)>(c)
            })
            .map(|(set, pttl)| match set {
                Some(_) => Acquire::Won,
                None => Acquire::Held {
                    expires_in: Duration::from_millis(pttl.max(0) as u64),
                },
            })
    }

    fn extend(&self, id: &str, ttl: Duration) -> Result<bool, Failure> {
        self.script(EXTEND, id, Some(ttl))
    }

    fn release(&self, id: &str) -> Result<bool, Failure> {
        self.script(RELEASE, id, None)
    }

    fn shown(&self) -> String {
        format!("{} key {:?}", self.server.shown(), self.key)
    }
}

/// What one acquire-or-renew round found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Round {
    Leading,
    /// Another instance holds the lock.
    Standby,
    /// Redis did not answer; nobody can act.
    Unreachable(Failure),
}

/// This instance's side of the election; see the module docs.
pub struct Election {
    store: Box<dyn LockStore>,
    id: String,
    ttl: Duration,
    margin: Duration,
    clock: Box<dyn Fn() -> Instant + Send + Sync>,
    telemetry: Arc<Telemetry>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Until when this instance may act; `None` = standby.
    valid_until: Option<Instant>,
    /// Times this instance became leader.
    term: u64,
    /// Set on shutdown: never lead again.
    stood_down: bool,
    /// When an unreachable Redis was last logged (`None`: reachable).
    unreachable_logged: Option<Instant>,
    /// When the other holder's lock expires, from the last acquire.
    retry_in: Option<Duration>,
}

impl Election {
    pub fn new(
        store: Box<dyn LockStore>,
        id: String,
        ttl: Duration,
        telemetry: Arc<Telemetry>,
    ) -> Election {
        Election::with_clock(store, id, ttl, telemetry, Box::new(Instant::now))
    }

    fn with_clock(
        store: Box<dyn LockStore>,
        id: String,
        ttl: Duration,
        telemetry: Arc<Telemetry>,
        clock: Box<dyn Fn() -> Instant + Send + Sync>,
    ) -> Election {
        telemetry.leader(false, false);
        Election {
            store,
            id,
            ttl,
            margin: ttl / 5,
            clock,
            telemetry,
            state: Mutex::new(State::default()),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One round: the holder renews, a standby tries to acquire.
    pub fn round(&self) -> Round {
        let (leading, stood_down) = {
            let s = self.state();
            (s.valid_until.is_some(), s.stood_down)
        };
        if stood_down {
            return Round::Standby;
        }
        let sent = (self.clock)();
        let answer = if leading {
            self.store.extend(&self.id, self.ttl)
        } else {
            self.store.acquire(&self.id, self.ttl).map(|a| match a {
                Acquire::Won => true,
                Acquire::Held { expires_in } => {
                    self.state().retry_in = Some(expires_in);
                    false
                }
            })
        };
        let mut s = self.state();
        if s.stood_down {
            return Round::Standby;
        }
        match answer {
            Ok(held) => {
                if s.unreachable_logged.take().is_some() {
                    log::info!(lock = self.store.shown().as_str(); "leader election: redis reachable again");
                }
                if held {
                    s.valid_until = Some(sent + self.ttl - self.margin);
                    if !leading {
                        s.term += 1;
                        self.changed(true, "acquired the lock");
                    }
                    Round::Leading
                } else {
                    if leading {
                        s.valid_until = None;
                        self.changed(false, "the lock expired or another instance holds it");
                    }
                    Round::Standby
                }
            }
            Err(e) => {
                if s.unreachable_logged
                    .is_none_or(|t| t.elapsed() >= UNREACHABLE_LOG_EVERY)
                {
                    log::warn!(lock = self.store.shown().as_str(), err:% = e;
                        "leader election: cannot reach redis; no instance acts until it answers");
                    s.unreachable_logged = Some(Instant::now());
                }
                if s.valid_until.is_some_and(|until| (self.clock)() >= until) {
                    s.valid_until = None;
                    self.changed(false, "the lock could not be renewed in time");
                }
                Round::Unreachable(e)
            }
        }
    }

    fn changed(&self, leading: bool, why: &str) {
        self.telemetry.leader(leading, true);
        let lock = self.store.shown();
        if leading {
            log::info!(instance = self.id.as_str(), lock = lock.as_str(), reason = why; "became leader");
        } else {
            log::warn!(instance = self.id.as_str(), lock = lock.as_str(), reason = why; "became standby");
        }
    }

    /// Rounds every ttl/3 (a standby sooner when the holder's lock expires sooner) until
    /// `stop` is requested; becoming leader wakes `stop`'s other waiters (the scheduler).
    pub fn run(&self, stop: &Shutdown) {
        loop {
            let term = self.term();
            self.round();
            if self.term() != term {
                stop.nudge();
            }
            let pause = match self.state().retry_in.take() {
                // A little after the expiry, so the key is surely gone.
                Some(expires_in) => (expires_in + Duration::from_millis(5)).min(self.ttl / 3),
                None => self.ttl / 3,
            };
            let next = Instant::now() + pause;
            loop {
                if stop.is_requested() {
                    return;
                }
                let left = next.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                stop.wait(left);
            }
        }
    }

    /// Stops acting at once and for good (shutdown): the fence closes, no round renews or
    /// acquires again. [`Election::release`] then frees the lock.
    pub fn stand_down(&self) {
        let mut s = self.state();
        s.stood_down = true;
        if s.valid_until.take().is_some() {
            self.changed(false, "shutting down");
        }
    }

    /// Deletes the lock if it is still ours, so a standby takes over at once.
    pub fn release(&self) {
        self.stand_down();
        match self.store.release(&self.id) {
            Ok(true) => {
                log::info!(lock = self.store.shown().as_str(); "leader election: lock released")
            }
            Ok(false) => {}
            Err(e) => log::warn!(lock = self.store.shown().as_str(), err:% = e;
                "leader election: cannot release the lock; it expires by itself"),
        }
    }
}

impl Fence for Election {
    fn holds(&self) -> bool {
        let s = self.state();
        s.valid_until.is_some_and(|until| (self.clock)() < until)
    }

    fn term(&self) -> u64 {
        self.state().term
    }
}

/// The lock's value: unique per process, and readable in the Machines API's request log
/// (the User-Agent carries it): the Fly machine id (else the host name), the pid and a
/// random nonce, as a `serve` and a cron `-once` may share a machine.
pub fn instance_id() -> String {
    let host = std::env::var("FLY_MACHINE_ID")
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .take(64)
        .collect();
    let nonce = crate::http::jitter(Duration::from_nanos(u64::MAX)).as_nanos() as u32;
    format!("{host}-{}-{nonce:08x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lock store on a fake clock: `key → (holder, expires)`.
    #[derive(Clone, Default)]
    struct FakeStore {
        now: Arc<Mutex<Duration>>,
        lock: Arc<Mutex<Option<(String, Duration)>>>,
        down: Arc<Mutex<bool>>,
    }

    impl FakeStore {
        fn holder(&self) -> Option<String> {
            let now = *self.now.lock().unwrap();
            self.lock
                .lock()
                .unwrap()
                .clone()
                .filter(|(_, until)| now < *until)
                .map(|(id, _)| id)
        }

        fn advance(&self, d: Duration) {
            *self.now.lock().unwrap() += d;
        }

        fn check(&self) -> Result<(), Failure> {
            if *self.down.lock().unwrap() {
                Err(Failure::Transport(crate::http::Transport::NotConnected(
                    "refused".into(),
                )))
            } else {
                Ok(())
            }
        }
    }

    impl LockStore for FakeStore {
        fn acquire(&self, id: &str, ttl: Duration) -> Result<Acquire, Failure> {
            self.check()?;
            let now = *self.now.lock().unwrap();
            if self.holder().is_some() {
                let until = self.lock.lock().unwrap().as_ref().unwrap().1;
                return Ok(Acquire::Held {
                    expires_in: until - now,
                });
            }
            *self.lock.lock().unwrap() = Some((id.to_string(), now + ttl));
            Ok(Acquire::Won)
        }

        fn extend(&self, id: &str, ttl: Duration) -> Result<bool, Failure> {
            self.check()?;
            if self.holder().as_deref() != Some(id) {
                return Ok(false);
            }
            let now = *self.now.lock().unwrap();
            *self.lock.lock().unwrap() = Some((id.to_string(), now + ttl));
            Ok(true)
        }

        fn release(&self, id: &str) -> Result<bool, Failure> {
            self.check()?;
            if self.holder().as_deref() != Some(id) {
                return Ok(false);
            }
            *self.lock.lock().unwrap() = None;
            Ok(true)
        }

        fn shown(&self) -> String {
            "fake".into()
        }
    }

    const TTL: Duration = Duration::from_secs(15);

    fn election(store: &FakeStore, id: &str) -> (Election, Arc<Telemetry>) {
        let start = Instant::now();
        let now = Arc::clone(&store.now);
        let telemetry = Arc::new(Telemetry::new());
        let e = Election::with_clock(
            Box::new(store.clone()),
            id.to_string(),
            TTL,
            Arc::clone(&telemetry),
            Box::new(move || start + *now.lock().unwrap()),
        );
        (e, telemetry)
    }

    #[test]
    fn one_leader_the_others_stand_by() {
        let store = FakeStore::default();
        let (a, ta) = election(&store, "a");
        let (b, _) = election(&store, "b");
        assert_eq!(a.round(), Round::Leading);
        assert_eq!(b.round(), Round::Standby);
        assert!(a.holds() && !b.holds());
        assert_eq!((a.term(), b.term()), (1, 0));
        assert_eq!(
            b.state().retry_in,
            Some(TTL),
            "b knows when a's lock expires"
        );
        // Renewed every ttl/3, a's lease never lapses and b never gets in.
        for _ in 0..10 {
            store.advance(TTL / 3);
            assert_eq!(a.round(), Round::Leading);
            assert_eq!(b.round(), Round::Standby);
            assert!(a.holds());
        }
        assert_eq!(a.term(), 1, "renewals are not new terms");
        let metrics = ta.render();
        assert!(metrics.contains("fas_leader 1") && metrics.contains("fas_leader_changes_total 1"));
    }

    #[test]
    fn the_fence_closes_at_ttl_minus_margin_by_the_holders_clock() {
        let store = FakeStore::default();
        let (a, _) = election(&store, "a");
        a.round();
        store.advance(TTL - TTL / 5 - Duration::from_millis(1));
        assert!(a.holds());
        store.advance(Duration::from_millis(1));
        assert!(!a.holds(), "closed before the key expires in Redis");
        assert_eq!(
            store.holder().as_deref(),
            Some("a"),
            "the key is still there"
        );
    }

    #[test]
    fn a_paused_holder_does_not_act_after_another_took_over() {
        let store = FakeStore::default();
        let (a, _) = election(&store, "a");
        let (b, _) = election(&store, "b");
        a.round();
        // a is paused (SIGSTOP) past the TTL; b takes over.
        store.advance(TTL + Duration::from_secs(1));
        assert_eq!(b.round(), Round::Leading);
        // a resumes: its fence is closed before any round, and the renewal fails.
        assert!(!a.holds());
        assert_eq!(a.round(), Round::Standby);
        assert!(!a.holds() && b.holds());
        assert_eq!(b.term(), 1);
    }

    #[test]
    fn redis_down_means_nobody_acts_and_one_leads_when_it_returns() {
        let store = FakeStore::default();
        let (a, ta) = election(&store, "a");
        let (b, _) = election(&store, "b");
        a.round();
        *store.down.lock().unwrap() = true;
        store.advance(TTL / 3);
        assert!(matches!(a.round(), Round::Unreachable(_)));
        assert!(a.holds(), "still inside its lease");
        store.advance(TTL / 3);
        a.round();
        store.advance(TTL / 3);
        assert!(matches!(a.round(), Round::Unreachable(_)));
        assert!(!a.holds(), "lease lapsed without a renewal");
        assert!(matches!(b.round(), Round::Unreachable(_)));
        assert!(!b.holds());
        *store.down.lock().unwrap() = false;
        let rounds = [a.round(), b.round()];
        assert_eq!(
            rounds.iter().filter(|r| **r == Round::Leading).count(),
            1,
            "{rounds:?}"
        );
        assert!(
            ta.render().contains("fas_leader_changes_total 3"),
            "leader, standby, leader"
        );
    }

    #[test]
    fn release_hands_over_at_once_and_never_leads_again() {
        let store = FakeStore::default();
        let (a, ta) = election(&store, "a");
        let (b, _) = election(&store, "b");
        a.round();
        a.release();
        assert!(!a.holds());
        assert_eq!(b.round(), Round::Leading);
        store.advance(TTL * 2);
        assert_eq!(a.round(), Round::Standby);
        assert!(!a.holds());
        assert!(ta.render().contains("fas_leader 0"));
    }

    #[test]
    fn instance_ids_are_unique_and_header_safe() {
        let (x, y) = (instance_id(), instance_id());
        assert_ne!(x, y);
        assert!(x.contains(&format!("-{}-", std::process::id())), "{x}");
        assert!(
            x.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')),
            "{x}"
        );
    }
}
