//! Running the binary under test, and the TLS front only these tests need. Everything the
//! demo and bench share is in `flysim::harness`.

pub mod png;
pub mod tls;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use flysim::harness::{
    self, Daemon, MetricsEndpoint, Output, Prometheus, PrometheusApi, autoscaler_env, billing_env,
    metrics_url, wait_until, with,
};
use flysim::{MachineSpec, Simulator};

/// The binary under test, built by Cargo for this test target.
pub const FAS: &str = env!("CARGO_BIN_EXE_fly-autoscaler");

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

/// `serve` running as a daemon with `/metrics` on a port the kernel picks
/// (`FAS_METRICS_ADDR=127.0.0.1:0` in the environment).
pub struct Serve {
    pub daemon: Daemon,
    pub metrics: String,
}

impl Serve {
    /// Starts `serve` with `args` and `env`; returns once it serves `/metrics`.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Serve {
        let daemon = Daemon::spawn(FAS, &[&["serve"][..], args].concat(), env);
        let metrics = metrics_url(&daemon, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("serve did not start:\n{}", daemon.stderr()));
        Serve { daemon, metrics }
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

    /// Waits for `cond`; on timeout fails the test with `what` and the daemon's log.
    pub fn wait_for(&self, what: &str, cond: impl FnMut() -> bool, timeout: Duration) {
        assert!(
            wait_until(timeout, cond),
            "timed out waiting for {what}\n{}",
            self.daemon.stderr()
        );
    }

    /// Its `reconciled` lines so far.
    pub fn reconciled(&self) -> Vec<String> {
        reconciled(&self.daemon.stderr())
    }
}

/// The value of `series` in an exposition text.
pub fn sample_in(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
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
