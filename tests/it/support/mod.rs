//! Running the binary under test, and the TLS front only these tests need. Everything the
//! demo and bench share is in `flysim::harness`.

pub mod tls;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use flysim::harness::{self, MetricsEndpoint, Output, Prometheus, billing_env};
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
