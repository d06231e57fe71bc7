//! The test environment the autoscaler's integration tests, demo and bench share: child
//! processes in a clean environment, waiting on conditions, real Prometheus and Temporal
//! servers, Redis and NATS servers, test certificates, promtool, headless Chromium, the usual
//! wiring of a `serve` run against the simulator, and the container image built with buildah.

mod browser;
mod image;
mod nats;
mod pki;
mod process;
mod prometheus;
mod redis;
mod scenario;
mod temporal;
#[cfg(test)]
mod tests;

pub use browser::{dump_dom, screenshot};
pub use image::Image;
pub use nats::{Nats, NatsClient};
pub use pki::Pki;
pub use process::{
    Daemon, Output, TempDir, built_binary, file_tail, find_tool, free_port, http_get, is_alive,
    is_root, log_field, metrics_url, proc_status, run, send_signal, start_server, tail, terminate,
    wait_until, which,
};
pub use prometheus::{History, MetricsEndpoint, Prometheus, promtool_check_metrics};
pub use redis::{REDIS_PASSWORD, REDIS_USER, Redis};
pub use scenario::{PromStub, PrometheusApi, TOKEN, TOKEN_HEADER, autoscaler_env, sim_env, with};
pub use temporal::{RUNNING_BILLING, Temporal, billing_env};
