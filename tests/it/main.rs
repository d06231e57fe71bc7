//! Integration tests: the real `fly-autoscaler` binary against real Prometheus and Temporal
//! servers, scripted servers and the Machines API simulator (`flysim`). One test binary, so
//! the support code is compiled once and every module uses what it needs of it.

mod support;

mod backtest;
mod cli;
mod controls;
mod eval;
mod fault_matrix;
mod http_collector;
mod image;
mod leader;
mod logs;
mod process_groups;
mod redis_collector;
mod safety;
mod scratch;
mod serve_daemon;
mod serve_once;
mod temporal;
mod temporal_grpc;
