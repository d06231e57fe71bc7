//! Running the binary under test, and the servers only these tests need: a Temporal dev
//! server and a TLS front for it. Everything the demo and bench share is in
//! `flysim::harness`.

pub mod temporal;
pub mod tls;

use std::time::Duration;

use flysim::harness::{self, Output};

/// The binary under test, built by Cargo for this test target.
pub const FAS: &str = env!("CARGO_BIN_EXE_fly-autoscaler");

/// Runs the binary under test with `args` in the hermetic environment plus `env`; killed
/// (and the test failed) after a minute.
pub fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    harness::run(FAS, args, env, Duration::from_secs(60))
}
