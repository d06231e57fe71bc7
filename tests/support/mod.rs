//! Test support shared by the integration tests: real servers (Prometheus, Temporal),
//! the Machines API simulator, a scripted HTTP server and a runner for the binary.
//! Each test binary uses a different subset, hence the allow.
#![allow(dead_code)]

pub mod bin;
pub mod fake_http;
pub mod prometheus;
pub mod scenario;
pub mod simulator;
pub mod temporal;
pub mod tls_proxy;
