//! The test environment the autoscaler's integration tests, demo and bench share: child
//! processes in a clean environment, waiting on conditions, a real Prometheus and promtool.

mod process;
mod prometheus;
#[cfg(test)]
mod tests;

pub use process::{
    Daemon, Output, TempDir, built_binary, file_tail, find_tool, free_port, http_get, is_root,
    log_field, metrics_url, run, send_signal, start_server, tail, terminate, wait_until, which,
};
pub use prometheus::{MetricsEndpoint, Prometheus, promtool_check_metrics};
