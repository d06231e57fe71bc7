//! Leader election: three `serve` processes on one simulator app and one real Redis. The
//! simulator's request log tells them apart by the instance id in the User-Agent. Kills,
//! stops and a Redis outage move the lead; exactly one instance acts between any two events.
//! Failover times are measured in `make bench`; here they are bounded with room for a
//! loaded machine.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use flysim::harness::{
    self, Daemon, PromStub, Redis, autoscaler_env, log_field, metrics_url, wait_until, with,
};
use flysim::{MachineSpec, RecordedRequest, Simulator};

use crate::support;

const APP: &str = "my-app";
const TTL: Duration = Duration::from_secs(3);
const INTERVAL: Duration = Duration::from_secs(2);
/// Allowance for a loaded machine on top of the bounds the design promises.
const SLACK: Duration = Duration::from_secs(2);

struct Instance {
    daemon: Daemon,
    id: String,
    metrics: String,
}

impl Instance {
    fn start(sim: &Simulator, metric: &PromStub, redis: &Redis) -> Instance {
        let base = autoscaler_env(sim, metric, APP);
        let url = redis.url();
        let env = with(
            &base,
            &[
                ("FAS_STARTED_MACHINE_COUNT", "q"),
                ("FAS_INTERVAL", "2s"),
                ("FAS_METRICS_ADDR", "127.0.0.1:0"),
                ("FAS_LEADER_ELECTION_URL", url.as_str()),
                ("FAS_LEADER_ELECTION_TTL", "3s"),
            ],
        );
        let daemon = Daemon::spawn(support::FAS, &["serve"], &env);
        let metrics = metrics_url(&daemon, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("serve did not start:\n{}", daemon.stderr()));
        let line = daemon
            .wait_for_line("fly-autoscaler ", Duration::from_secs(5))
            .unwrap();
        let id = log_field(&line, "instance").expect("instance id logged");
        Instance {
            daemon,
            id,
            metrics,
        }
    }

    fn health(&self) -> String {
        let url = self.metrics.replace("/metrics", "/healthz");
        let (status, body) = harness::http_get(&url, &[], Duration::from_secs(5)).unwrap();
        assert_eq!(status, 200, "leader and standby are both healthy");
        body
    }
}

/// Machine actions (anything but a GET) with the instance that sent each.
fn actions(sim: &Simulator) -> Vec<(Instant, String)> {
    sim.requests()
        .iter()
        .filter(|r| r.method != "GET" && r.path.starts_with("/v1/"))
        .map(|r| (r.at, instance_of(r)))
        .collect()
}

fn instance_of(r: &RecordedRequest) -> String {
    let ua = r.header("user-agent").unwrap_or_default();
    ua.split("(instance ")
        .nth(1)
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no instance in User-Agent {ua:?}"))
        .to_string()
}

/// The instances that acted at or after `since` (and before `until`).
fn actors(sim: &Simulator, since: Instant, until: Option<Instant>) -> BTreeSet<String> {
    actions(sim)
        .into_iter()
        .filter(|(at, _)| *at >= since && until.is_none_or(|u| *at < u))
        .map(|(_, id)| id)
        .collect()
}

/// Sets the metric to `n` and waits until `n` machines run; returns who acted and when the
/// first action of that change came.
fn scale_to(
    sim: &Simulator,
    metric: &PromStub,
    n: usize,
    within: Duration,
    logs: &[&Instance],
) -> (String, Instant) {
    let since = Instant::now();
    metric.set(n as f64);
    let done = wait_until(within, || sim.count(APP, "started") == n);
    let stderr: Vec<String> = logs.iter().map(|i| i.daemon.stderr()).collect();
    assert!(
        done,
        "not scaled to {n} within {within:?}:\n{}",
        stderr.join("\n----\n")
    );
    let acted: Vec<(Instant, String)> = actions(sim)
        .into_iter()
        .filter(|(at, _)| *at >= since)
        .collect();
    let who: BTreeSet<&String> = acted.iter().map(|(_, id)| id).collect();
    assert_eq!(who.len(), 1, "exactly one instance acts: {who:?}");
    (acted[0].1.clone(), acted[0].0)
}

#[test]
fn one_of_three_acts_and_the_lead_moves_safely() {
    let mut redis = Redis::start();
    let sim = Simulator::start();
    sim.add_app("my-org", APP);
    for _ in 0..6 {
        sim.add_machine(APP, MachineSpec::new("stopped"));
    }
    let metric = PromStub::start(0.0);
    let mut all: Vec<Instance> = (0..3)
        .map(|_| Instance::start(&sim, &metric, &redis))
        .collect();
    let find = |all: &[Instance], id: &str| all.iter().position(|i| i.id == id).unwrap();
    let logs =
        |all: &[Instance]| -> Vec<String> { all.iter().map(|i| i.daemon.stderr()).collect() };

    let (first, _) = scale_to(
        &sim,
        &metric,
        2,
        Duration::from_secs(20),
        &all.iter().collect::<Vec<_>>(),
    );
    let leader = find(&all, &first);
    let bodies: Vec<String> = all.iter().map(Instance::health).collect();
    assert_eq!(
        bodies.iter().filter(|b| *b == "ok leader\n").count(),
        1,
        "{bodies:?}"
    );
    assert_eq!(
        bodies.iter().filter(|b| *b == "ok standby\n").count(),
        2,
        "{bodies:?}"
    );
    assert!(all[leader].daemon.stderr().contains("became leader"));

    // SIGKILL: the lock expires by itself; another acts within ttl + interval.
    let killed = Instant::now();
    all[leader].daemon.signal("KILL");
    all[leader].daemon.wait_exit(Duration::from_secs(5));
    let (second, at) = scale_to(
        &sim,
        &metric,
        4,
        Duration::from_secs(20),
        &all.iter().collect::<Vec<_>>(),
    );
    assert_ne!(second, first);
    assert!(
        at - killed <= TTL + INTERVAL + SLACK,
        "failover after SIGKILL took {:?}",
        at - killed
    );
    all.remove(leader);

    // SIGSTOP past the ttl: the third takes over; the stopped one, resumed, sends nothing.
    let leader = find(&all, &second);
    all[leader].daemon.signal("STOP");
    let (third, _) = scale_to(
        &sim,
        &metric,
        3,
        Duration::from_secs(20),
        &all.iter().collect::<Vec<_>>(),
    );
    assert_ne!(third, second);
    let resumed = Instant::now();
    all[leader].daemon.signal("CONT");
    assert!(
        all[leader]
            .daemon
            .wait_for_line("became standby", Duration::from_secs(10))
            .is_some(),
        "{}",
        all[leader].daemon.stderr()
    );
    let (again, _) = scale_to(
        &sim,
        &metric,
        5,
        Duration::from_secs(20),
        &all.iter().collect::<Vec<_>>(),
    );
    assert_eq!(again, third);
    assert!(
        !actors(&sim, resumed, None).contains(&second),
        "the resumed one sent nothing"
    );

    // Redis down: nobody acts at all; back: one leads again.
    redis.stop();
    let down = Instant::now();
    let standbys = || all.iter().all(|i| i.health() == "ok standby\n");
    assert!(wait_until(TTL * 3, standbys), "{:?}", logs(&all));
    metric.set(1.0);
    let acted = wait_until(TTL * 2, || !actors(&sim, down, None).is_empty());
    assert!(
        !acted,
        "an action while Redis was down: {:?}",
        actors(&sim, down, None)
    );
    assert_eq!(sim.count(APP, "started"), 5);
    // Taken before the restart: a leader may act as soon as Redis answers.
    let back = Instant::now();
    redis.restart();
    assert!(
        wait_until(Duration::from_secs(20), || sim.count(APP, "started") == 1),
        "{:?}",
        logs(&all)
    );
    let after_outage = actors(&sim, back, None);
    assert_eq!(after_outage.len(), 1, "{after_outage:?}");
    let fourth = after_outage.into_iter().next().unwrap();
    assert!(
        all.iter()
            .any(|i| i.daemon.stderr().contains("cannot reach redis"))
    );

    // SIGTERM: the lock is released; another acts within one interval.
    let leader = all
        .iter()
        .position(|i| i.health() == "ok leader\n")
        .expect("a leader");
    let lead = all[leader].id.clone();
    let termed = Instant::now();
    all[leader].daemon.signal("TERM");
    assert_eq!(
        all[leader].daemon.wait_exit(Duration::from_secs(20)),
        Some(0)
    );
    assert!(
        all[leader]
            .daemon
            .stderr()
            .contains("leader election: lock released")
    );
    let (next, at) = scale_to(
        &sim,
        &metric,
        2,
        Duration::from_secs(20),
        &all.iter().collect::<Vec<_>>(),
    );
    assert_ne!(next, lead);
    assert!(
        at - termed <= INTERVAL + SLACK,
        "failover after SIGTERM took {:?}",
        at - termed
    );

    // Anywhere in the run: the instances' actions never interleave — once another instance
    // has acted, an earlier one acts again only after a later change of lead.
    let log = actions(&sim);
    let mut runs: Vec<&str> = Vec::new();
    for (_, id) in &log {
        if runs.last() != Some(&id.as_str()) {
            runs.push(id);
        }
    }
    let mut leads = vec![first.as_str(), &second, &third, &fourth, &next];
    leads.dedup();
    assert_eq!(runs, leads, "one run of actions per lead");
}

#[test]
fn serve_once_acts_only_with_the_lock() {
    let redis = Redis::start();
    let sim = Simulator::start();
    sim.add_app("my-org", APP);
    sim.add_machine(APP, MachineSpec::new("stopped"));
    let metric = PromStub::start(1.0);
    let base = autoscaler_env(&sim, &metric, APP);
    let url = redis.url();
    let env = with(
        &base,
        &[
            ("FAS_STARTED_MACHINE_COUNT", "q"),
            ("FAS_LEADER_ELECTION_URL", url.as_str()),
            ("FAS_LEADER_ELECTION_KEY", "lock:my-app"),
        ],
    );
    redis.cmd(&["SET", "lock:my-app", "someone-else", "PX", "60000"]);
    let out = support::run(&["serve", "-once"], &env);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("another instance leads; nothing to do"),
        "{}",
        out.stderr
    );
    assert_eq!(sim.count(APP, "started"), 0);
    assert!(
        sim.requests()
            .iter()
            .all(|r| r.method == "GET" || !r.path.starts_with("/v1/"))
    );

    redis.cmd(&["DEL", "lock:my-app"]);
    let out = support::run(&["serve", "-once"], &env);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(sim.count(APP, "started"), 1);
    assert!(out.stderr.contains("became leader"), "{}", out.stderr);
    assert_eq!(
        redis.cmd(&["EXISTS", "lock:my-app"]),
        "0",
        "released after the pass"
    );

    let mut down = env.clone();
    down.retain(|(k, _)| *k != "FAS_LEADER_ELECTION_URL");
    down.push(("FAS_LEADER_ELECTION_URL", "redis://127.0.0.1:1"));
    let out = support::run(&["serve", "-once"], &down);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("leader election: cannot reach redis"),
        "{}",
        out.stderr
    );
}
