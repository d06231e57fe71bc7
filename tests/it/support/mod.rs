//! Running the binary under test, and the TLS front only these tests need. Everything the
//! demo and bench share is in `flysim::harness`.

pub mod png;
pub mod tls;

use std::time::Duration;

use flysim::harness::{self, Output, billing_env};

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
