//! fly-autoscaler: a metrics-driven autoscaler for Fly Machines, a drop-in replacement for the
//! Go `fly-autoscaler`.
//!
//! Data flows one way: `cmd` → `pool` → `reconcile` → {`collector`, `expr`, `machines`,
//! `plan`}; `wire` (the Machines API's vocabulary) lies below both `machines` and `plan`;
//! `telemetry` is written by `reconcile`/`pool` and read by its HTTP thread. Only what the
//! binary needs is public.

mod auth;
mod backtest;
mod clock;
mod cmd;
mod collector;
mod config;
mod duration;
mod expand;
mod expr;
mod grpc;
mod http;
mod leader;
mod logging;
mod machines;
mod plan;
mod pool;
mod queue;
mod reconcile;
mod redis_client;
mod release;
mod resolver;
mod secret;
mod telemetry;
#[cfg(test)]
mod testing;
mod wildcard;
mod wire;

pub use backtest::{
    Format as BacktestFormat, Options as BacktestOptions, TimeArg, parse_set, parse_step,
    run as backtest,
};
pub use cmd::{ServeOptions, eval, serve, version_line};
pub use logging::{install_panic_hook, one_line};
