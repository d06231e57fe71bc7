//! Running the binary under test, and the TLS front only these tests need. Everything the
//! demo and bench share is in `flysim::harness`.

pub mod png;
pub mod tls;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use flysim::harness::{
    self, Daemon, MetricsEndpoint, Output, PromStub, Prometheus, PrometheusApi, autoscaler_env,
    billing_env, metrics_url, wait_until, with,
};
use flysim::{MachineSpec, RecordedRequest, Simulator};

/// The binary under test, built by Cargo for this test target.
pub const FAS: &str = env!("CARGO_BIN_EXE_fly-autoscaler");

/// Runs the binary under test with `args` in the hermetic environment plus `env`; killed
/// (and the test failed) after a minute.
pub fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    harness::run(FAS, args, env, Duration::from_secs(60))
}

/// `eval` for app `billing` counting Temporal workflows at `address` with `query`
/// ([`billing_env`]) plus `extra` settings.
pub fn eval_env(address: &str, query: &str, extra: &[(&str, &str)]) -> Output {
    let env = [&billing_env(address, query)[..], extra].concat();
    run(&["eval"], &env)
}

/// `started.min` of `eval`'s JSON output.
pub fn started_of(stdout: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    v["started"]["min"].clone()
}

/// The app the `serve --once` scenarios scale.
pub const APP: &str = "my-app";

/// One `serve --once` run against the simulator.
pub struct Run {
    pub code: Option<i32>,
    pub stderr: String,
    /// What the simulator received during the run.
    pub requests: Vec<RecordedRequest>,
    pub took: Duration,
}

/// Runs `serve --once` for [`APP`] with the scenario env plus `extra`.
pub fn once(sim: &Simulator, metric: &PromStub, extra: &[(&str, &str)]) -> Run {
    let base = autoscaler_env(sim, metric, APP);
    let env = with(&base, extra);
    sim.take_requests();
    let out = run(&["serve", "--once"], &env);
    Run {
        code: out.code,
        stderr: out.stderr,
        requests: sim.take_requests(),
        took: out.wall,
    }
}

/// App `app` of organization `my-org` with one machine per state of `states` (group `app`,
/// region `iad`); their ids in the same order.
pub fn seed(sim: &Simulator, app: &str, states: &[&str]) -> Vec<String> {
    sim.add_app("my-org", app);
    states
        .iter()
        .map(|s| sim.add_machine(app, MachineSpec::new(s)))
        .collect()
}

/// A real Prometheus scraping `queue_depth` = `value` from a test endpoint, returned once the
/// value can be queried; the endpoint must live as long as the server.
pub fn queue_depth_prometheus(value: f64) -> (MetricsEndpoint, Prometheus) {
    let endpoint = MetricsEndpoint::start();
    endpoint.set("queue_depth", value);
    let prom = Prometheus::start(&[&endpoint.addr()]);
    prom.wait_for("queue_depth", |v| v == value, Duration::from_secs(30));
    (endpoint, prom)
}

/// `eval`'s environment for app `my-app`: `expression` as the started count, over metric
/// `queue_depth` (`sum(queue_depth)`) from the Prometheus at `url`.
pub fn queue_depth_env<'a>(url: &'a str, expression: &'a str) -> [(&'a str, &'a str); 5] {
    [
        ("FAS_APP_NAME", "my-app"),
        ("FAS_STARTED_MACHINE_COUNT", expression),
        ("FAS_PROMETHEUS_ADDRESS", url),
        ("FAS_PROMETHEUS_METRIC_NAME", "queue_depth"),
        ("FAS_PROMETHEUS_QUERY", "sum(queue_depth)"),
    ]
}

const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// The static musl binary: `$FAS_STATIC_BIN` (set by `make test`), else built here.
pub fn static_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("FAS_STATIC_BIN") {
        return PathBuf::from(path);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--bin",
            "fly-autoscaler",
            "--target",
            MUSL_TARGET,
        ])
        .env("CC_x86_64_unknown_linux_musl", "musl-gcc")
        .current_dir(root)
        .status()
        .expect("run cargo");
    assert!(
        status.success(),
        "static build failed; run `make static` (it installs musl-tools and the target)"
    );
    root.join(format!("target/{MUSL_TARGET}/release/fly-autoscaler"))
}

/// `METHOD path[?query]` of every Machines API request (GraphQL left out).
pub fn calls(run: &Run) -> Vec<String> {
    run.requests
        .iter()
        .filter(|r| r.path.starts_with("/v1/"))
        .map(|r| {
            if r.query.is_empty() {
                format!("{} {}", r.method, r.path)
            } else {
                format!("{} {}?{}", r.method, r.path, r.query)
            }
        })
        .collect()
}

/// The Machines API calls of a run about `app`'s machines, short and sorted (the order of
/// concurrent calls is not fixed): `list`, `create`, `get a`, `start a`, `stop a`,
/// `suspend a`, `destroy a`, where `ids[0]` is named `a`, `ids[1]` `b`, and so on; any other
/// id is written out, an empty one as `""`.
pub fn actions(requests: &[RecordedRequest], app: &str, ids: &[String]) -> Vec<String> {
    let prefix = format!("/v1/apps/{app}/machines");
    let name = |id: &str| match ids.iter().position(|i| i == id) {
        Some(k) => char::from(b'a' + k as u8).to_string(),
        None if id.is_empty() => "\"\"".to_string(),
        None => id.to_string(),
    };
    let mut out: Vec<String> = requests
        .iter()
        .filter_map(|r| {
            let rest = r.path.strip_prefix(&prefix)?;
            let parts: Vec<&str> = rest.splitn(3, '/').collect();
            Some(match (r.method.as_str(), parts.as_slice()) {
                ("GET", [""]) => "list".to_string(),
                ("POST", [""]) => "create".to_string(),
                ("GET", ["", id]) => format!("get {}", name(id)),
                ("DELETE", ["", id]) => format!("destroy {}", name(id)),
                ("POST", ["", id, verb]) => format!("{verb} {}", name(id)),
                _ => format!("{} {}", r.method, r.path),
            })
        })
        .collect();
    out.sort();
    out
}

/// Asserts how a `serve --once` run ended: [`assert_sane`], exit `code`, exactly the calls
/// `expected` lists (in [`actions`]' words, comma-separated, `start a*3` for three of them),
/// and an `ERROR` record containing `error` — or none at all when `error` is `None`.
pub fn assert_run(run: &Run, ids: &[String], code: i32, expected: &str, error: Option<&str>) {
    let stderr = &run.stderr;
    assert_sane(run.code, stderr);
    assert_eq!(run.code, Some(code), "exit status\n{stderr}");
    let mut want: Vec<String> = expected
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .flat_map(|item| match item.rsplit_once('*') {
            Some((call, n)) => vec![call.to_string(); n.parse().expect("a count after *")],
            None => vec![item.to_string()],
        })
        .collect();
    want.sort();
    assert_eq!(actions(&run.requests, APP, ids), want, "calls\n{stderr}");
    let errors = error_lines(stderr);
    match error {
        Some(e) => assert!(
            errors.iter().any(|l| l.contains(e)),
            "no ERROR record contains {e:?}\n{stderr}"
        ),
        None => assert!(errors.is_empty(), "unexpected errors\n{stderr}"),
    }
}

/// Asserts what every run must show whatever went wrong: no panic (exit code 101, a
/// signal, an "internal error" record) and every stderr line a whole log record (text
/// format), so outside text cannot forge a line.
pub fn assert_sane(code: Option<i32>, stderr: &str) {
    assert!(
        code.is_some_and(|c| c != 101),
        "exit {code:?} (101 is a panic, None a signal)\n{stderr}"
    );
    assert_records(stderr);
}

/// Asserts that no record tells of a panic and that every stderr line is a whole log record
/// (text format).
pub fn assert_records(stderr: &str) {
    // The panic hook's and the worker's records, and Rust's default panic message.
    for bad in [
        "internal error:",
        "with an internal error",
        "panicked",
        "RUST_BACKTRACE",
    ] {
        assert!(!stderr.contains(bad), "{bad:?} in the output:\n{stderr}");
    }
    for line in stderr.lines() {
        assert!(
            is_record(line),
            "not a whole log record: {line:?}\n{stderr}"
        );
    }
}

/// A text log line (`2026-01-02T03:04:05.678Z INFO  …`) or the `ERROR: ` line of a failure
/// before logging starts.
fn is_record(line: &str) -> bool {
    if line.starts_with("ERROR: ") {
        return true;
    }
    let mut parts = line.splitn(3, ' ');
    let (time, level) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let date = time.as_bytes();
    date.len() >= 20
        && date[..4].iter().all(u8::is_ascii_digit)
        && date[4] == b'-'
        && date[10] == b'T'
        && time.ends_with('Z')
        && ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&level)
}

/// Asserts that `stderr` holds `text` (shown in full when it does not).
pub fn assert_logged(stderr: &str, text: &str) {
    assert!(stderr.contains(text), "{text:?} not logged:\n{stderr}");
}

/// The `ERROR` records of a run's stderr.
pub fn error_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("ERROR: ") || l.split(' ').nth(1) == Some("ERROR"))
        .collect()
}

/// A running `serve` and the URL of its `/metrics`.
pub struct Serve {
    pub daemon: Daemon,
    pub metrics: String,
}

/// Starts `serve` with the scenario env plus `extra`, a short interval, and `/metrics` on a
/// port the kernel picks; returns once it serves.
pub fn serve(sim: &Simulator, metric: &PromStub, app: &str, extra: &[(&str, &str)]) -> Serve {
    serve_under(None, sim, metric, app, extra)
}

/// [`serve`] with at most `nofile` open file descriptors (`ulimit -n`, then `exec`, so the
/// daemon's pid is the autoscaler's).
pub fn serve_with_fd_limit(
    nofile: u32,
    sim: &Simulator,
    metric: &PromStub,
    app: &str,
    extra: &[(&str, &str)],
) -> Serve {
    serve_under(Some(nofile), sim, metric, app, extra)
}

fn serve_under(
    nofile: Option<u32>,
    sim: &Simulator,
    metric: &PromStub,
    app: &str,
    extra: &[(&str, &str)],
) -> Serve {
    let base = autoscaler_env(sim, metric, app);
    let mut defaults = vec![
        ("FAS_INTERVAL", "200ms"),
        ("FAS_METRICS_ADDR", "127.0.0.1:0"),
        ("FAS_STARTED_MACHINE_COUNT", "q"),
    ];
    defaults.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    defaults.extend_from_slice(extra);
    let env = with(&base, &defaults);
    let daemon = match nofile {
        None => Daemon::spawn(FAS, &["serve"], &env),
        Some(n) => {
            let script = format!("ulimit -n {n} && exec \"$0\" serve");
            Daemon::spawn("sh", &["-c", &script, FAS], &env)
        }
    };
    Serve::attach(daemon)
}

impl Serve {
    /// Starts `serve` with `args` and `env` (which sets `FAS_METRICS_ADDR=127.0.0.1:0`);
    /// returns once it serves `/metrics`.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Serve {
        Serve::attach(Daemon::spawn(FAS, &[&["serve"][..], args].concat(), env))
    }

    /// Waits for a started `serve` to say where it serves `/metrics`.
    fn attach(daemon: Daemon) -> Serve {
        let metrics = metrics_url(&daemon, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("serve did not start:\n{}", daemon.stderr()));
        Serve { daemon, metrics }
    }

    /// Its `reconciled` lines so far.
    pub fn reconciled(&self) -> Vec<String> {
        reconciled(&self.daemon.stderr())
    }

    pub fn scrape(&self) -> String {
        harness::http_get(&self.metrics, &[], Duration::from_secs(5))
            .expect("scrape")
            .1
    }

    /// The value of one sample line, e.g. `fas_reconcile_count{status="start"}`.
    pub fn sample(&self, series: &str) -> Option<f64> {
        sample_in(&self.scrape(), series)
    }

    pub fn wait_for(&self, what: &str, cond: impl FnMut() -> bool, timeout: Duration) {
        assert!(
            wait_until(timeout, cond),
            "timed out waiting for {what}\n{}",
            self.daemon.stderr()
        );
    }
}

/// The value of `series` in an exposition text.
pub fn sample_in(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
}

/// Machine-list requests made for `app` so far.
pub fn lists(sim: &Simulator, app: &str) -> Vec<Instant> {
    let path = format!("/v1/apps/{app}/machines");
    sim.requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path == path)
        .map(|r| r.at)
        .collect()
}

/// The `reconciled` lines of a text log.
pub fn reconciled(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(" reconciled "))
        .map(str::to_string)
        .collect()
}

/// Long enough for a scrape (every 1 s) and a few reconciles on a loaded machine.
pub const SETTLE: Duration = Duration::from_secs(30);

/// A metrics endpoint serving `metric{app=…}` gauges and a real Prometheus scraping it every
/// second.
pub struct Live {
    pub endpoint: MetricsEndpoint,
    pub prom: Prometheus,
}

impl Live {
    /// Serves each `(metric, app, value)`; returns once Prometheus has every one.
    pub fn start(values: &[(&str, &str, f64)]) -> Live {
        let endpoint = MetricsEndpoint::start();
        let prom = Prometheus::start(&[&endpoint.addr()]);
        let live = Live { endpoint, prom };
        for (metric, app, v) in values {
            live.set(metric, app, *v);
        }
        live
    }

    /// Sets `metric{app}` and waits until Prometheus answers it.
    pub fn set(&self, metric: &str, app: &str, value: f64) {
        self.endpoint.set_labeled(metric, &[("app", app)], value);
        self.prom.wait_for(
            &format!(r#"sum({metric}{{app="{app}"}})"#),
            |v| v == value,
            SETTLE,
        );
    }
}

/// The scenario environment ([`autoscaler_env`]) against `prom` for `app`, with `settings`
/// added (a later pair replaces an earlier one).
pub fn env_for(
    sim: &Simulator,
    prom: &impl PrometheusApi,
    app: &str,
    settings: &[(&str, &str)],
) -> Vec<(String, String)> {
    let base = autoscaler_env(sim, prom, app);
    with(&base, settings)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Owned environment pairs as the runners take them.
pub fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// `date -u -d @<t> +<format>`: times computed by coreutils, independent of the crate's
/// calendar.
pub fn date(t: i64, format: &str) -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{t}"), &format!("+{format}")])
        .output()
        .expect("run date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
