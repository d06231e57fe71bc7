//! `type: redis`: a real `redis-server` with an ACL user, plain and TLS-only; every error
//! path in one line without the password; and `serve` scaling the simulator's app on a queue
//! length across a Redis restart.

use std::time::Duration;

use flysim::harness::{
    Daemon, Output, Pki, REDIS_PASSWORD, Redis, TempDir, log_field, sim_env, wait_until, with,
};
use flysim::{MachineSpec, Simulator};

use crate::support;

/// A config file for app `my-app` whose started count is `queue`, the sum of `commands`
/// on the Redis at `$REDIS_URL` (plus `extra` collector lines).
fn config(dir: &TempDir, commands: &[&str], extra: &str) -> String {
    let list = commands
        .iter()
        .map(|c| format!("      - {c}\n"))
        .collect::<String>();
    let path = dir.write(
        "fly-autoscaler.yml",
        &format!(
            "app-name: my-app\nstarted-machine-count: queue\nmetric-collectors:\n  - type: redis\n    metric-name: queue\n    url: ${{REDIS_URL}}\n    commands:\n{list}{extra}"
        ),
    );
    path.to_str().unwrap().to_string()
}

fn eval(url: &str, commands: &[&str], extra: &str) -> Output {
    let dir = TempDir::new("redis-collector");
    let config = config(&dir, commands, extra);
    support::run(
        &["eval", "-config", &config],
        &[
            ("REDIS_URL", url),
            ("FAS_LOG_FORMAT", "text"),
            ("FAS_TIMEOUT", "5s"),
        ],
    )
}

fn started(out: &Output) -> serde_json::Value {
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    support::started_of(&out.stdout)
}

/// The one error line of a failed `eval`; checks the password is not in it.
fn error_line(out: &Output) -> String {
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    let line = out.stderr.trim().to_string();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(!line.contains(REDIS_PASSWORD), "{line}");
    line
}

const QUEUES: [&str; 4] = [
    "LLEN queue:$APP_NAME",
    "ZCARD queue:delayed",
    "GET jobs:waiting",
    "GET jobs:never-set",
];

#[test]
fn sums_lists_sorted_sets_and_counters() {
    let redis = Redis::start();
    redis.cmd(&["RPUSH", "queue:my-app", "a", "b", "c"]);
    redis.cmd(&["RPUSH", "queue:other-app", "x"]);
    redis.cmd(&["ZADD", "queue:delayed", "1", "x", "2", "y"]);
    redis.cmd(&["SET", "jobs:waiting", "4"]);
    assert_eq!(started(&eval(&redis.url(), &QUEUES, "")), 9);
    redis.cmd(&["LPOP", "queue:my-app", "2"]);
    assert_eq!(started(&eval(&redis.url(), &QUEUES, "")), 7);
    assert_eq!(started(&eval(&redis.url(), &["dbsize"], "")), 4);
}

#[test]
fn tls_with_a_private_ca() {
    let pki = Pki::new();
    let redis = Redis::start_tls(&pki);
    redis.cmd(&["RPUSH", "queue:my-app", "a", "b"]);
    let ca = redis.ca_pem().replace('\n', "\n      ");
    let with_ca = format!("    ca-data: |\n      {ca}\n");
    assert_eq!(started(&eval(&redis.url(), &QUEUES[..1], &with_ca)), 2);
    // Without ca-data only the bundled public roots are trusted.
    let line = error_line(&eval(&redis.url(), &QUEUES[..1], ""));
    assert!(line.contains("collect metric (\"queue\")"), "{line}");
    assert!(line.contains("rediss://localhost:"), "{line}");
    assert!(line.to_ascii_lowercase().contains("certificate"), "{line}");
}

#[test]
fn errors_name_the_problem_and_never_the_password() {
    let mut redis = Redis::start();
    redis.cmd(&["SET", "queue:my-app", "not a list"]);
    let url = redis.url();

    for wrong in [
        redis.url_as("fas", "wrong-password"),
        redis.url_as("nobody", REDIS_PASSWORD),
    ] {
        let line = error_line(&eval(&wrong, &QUEUES[..1], ""));
        assert!(
            line.contains("login refused: ") && line.contains("authentication failed"),
            "{line}"
        );
    }

    let line = error_line(&eval(&url, &QUEUES[..1], ""));
    assert!(
        line.contains("LLEN queue:my-app: WRONGTYPE"),
        "the command as sent, and the server's word: {line}"
    );
    let line = error_line(&eval(&url, &["GET queue:my-app"], ""));
    assert!(
        line.contains("GET queue:my-app returned \"not a list\", not a number"),
        "{line}"
    );

    let line = error_line(&eval(&url, &["DEL queue:my-app"], ""));
    assert!(
        line.contains("metric-collectors[0]: invalid commands[0] \"DEL queue:my-app\"")
            && line.contains("only read-only counting commands are: LLEN, ZCARD"),
        "{line}"
    );
    assert_eq!(
        redis.cmd(&["EXISTS", "queue:my-app"]),
        "1",
        "nothing was sent"
    );

    redis.stop();
    let line = error_line(&eval(&url, &QUEUES[..1], ""));
    assert!(
        line.contains("redis redis://127.0.0.1:") && line.contains("cannot connect"),
        "{line}"
    );
}

#[test]
fn serve_scales_on_a_queue_across_a_redis_restart() {
    let mut redis = Redis::start();
    let sim = Simulator::start();
    sim.add_app("my-org", "my-app");
    for _ in 0..5 {
        sim.add_machine("my-app", MachineSpec::new("stopped"));
    }
    let dir = TempDir::new("redis-serve");
    let config = config(&dir, &QUEUES[..2], "");
    let base = sim_env(&sim, "my-app");
    let url = redis.url();
    let env = with(
        &base,
        &[
            ("REDIS_URL", url.as_str()),
            ("FAS_INTERVAL", "200ms"),
            ("FAS_METRICS_ADDR", "off"),
        ],
    );
    let serve = Daemon::spawn(support::FAS, &["serve", "-config", &config], &env);
    let started = |n: usize| {
        wait_until(Duration::from_secs(20), || {
            sim.count("my-app", "started") == n
        })
    };

    redis.cmd(&["RPUSH", "queue:my-app", "a", "b", "c"]);
    assert!(started(3), "{}", serve.stderr());
    redis.cmd(&["ZADD", "queue:delayed", "1", "x"]);
    assert!(started(4), "{}", serve.stderr());

    // Restarted empty: the next cycles reconnect and see the new queue.
    redis.restart();
    redis.cmd(&["RPUSH", "queue:my-app", "a"]);
    assert!(started(1), "{}\n{}", serve.stderr(), redis.log_tail());
    // The machines change before the reconcile that changed them logs its line.
    let last_target = || {
        let log = serve.stderr();
        let line = log.lines().rfind(|l| l.contains(" reconciled "))?;
        log_field(line, "target_started")
    };
    assert!(
        wait_until(Duration::from_secs(10), || last_target().as_deref()
            == Some("1")),
        "{}",
        serve.stderr()
    );
    let log = serve.stderr();
    assert!(!log.contains(REDIS_PASSWORD), "{log}");
}
