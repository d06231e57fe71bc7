//! `flysim`: a faithful, stateful simulator of the part of the Fly Machines API that
//! fly-autoscaler calls ([`Simulator`]), a scripted HTTP server ([`FakeServer`]), and the
//! [`harness`] the autoscaler's tests, demo and bench run in. The `flysim` binary serves the
//! simulator on its own.
//!
//! It does not depend on the autoscaler: it checks it.

mod http;
mod sim;
#[cfg(test)]
mod test_client;
mod util;

pub mod harness;

pub use http::{FakeServer, RecordedRequest, Reply};
pub use sim::{Fault, FaultRule, MachineSpec, SimMachine, Simulator};
