//! fly-autoscaler: a metrics-driven autoscaler for Fly Machines, a drop-in replacement for the
//! Go `fly-autoscaler`.
//!
//! Data flows one way: `cmd` → `pool` → `reconcile` → {`collector`, `expr`, `machines`,
//! `plan`}; `telemetry` is written by `reconcile`/`pool` and read by its HTTP thread.

pub mod auth;
pub mod cmd;
pub mod collector;
pub mod config;
pub mod duration;
pub mod expand;
pub mod expr;
pub mod grpc;
pub mod http;
pub mod logging;
pub mod machines;
pub mod plan;
pub mod pool;
pub mod reconcile;
pub mod release;
pub mod secret;
pub mod telemetry;
pub mod wildcard;
