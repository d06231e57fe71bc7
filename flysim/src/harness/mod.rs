//! The test environment the autoscaler's integration tests, demo and bench share: child
//! processes in a clean environment, waiting on conditions, real Prometheus and Temporal
//! servers, promtool, and the usual wiring of a `serve` run against the simulator.

mod process;
mod prometheus;
mod scenario;
mod temporal;
#[cfg(test)]
mod tests;

pub use process::{
    Daemon, Output, TempDir, built_binary, file_tail, find_tool, free_port, http_get, is_alive,
    is_root, log_field, metrics_url, proc_status, run, send_signal, start_server, tail, terminate,
    wait_until, which,
};
pub use prometheus::{MetricsEndpoint, Prometheus, promtool_check_metrics};
pub use scenario::{PromStub, TOKEN, TOKEN_HEADER, autoscaler_env, with};
pub use temporal::{RUNNING_BILLING, Temporal, billing_env};
