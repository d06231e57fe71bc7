//! The I/O a reconcile needs, behind one small trait, so the reconcile can be tested without
//! HTTP. [`Fly`] is the real thing: collectors, the Machines API and the deploy guard.

use std::collections::HashMap;
use std::time::Duration;

use crate::clock::Stamp;
use crate::collector::{self, CollectError, Collector, PrometheusClient, SourceError};
use crate::expr::MetricValues;
use crate::http::Deadline;
use crate::machines::{ApiError, MachinesClient};
use crate::release::{ReleaseClient, ReleaseError};
use crate::telemetry::MachineOp;
use crate::wire::{CreateRequest, Machine};

/// A change to an existing machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Start,
    Stop,
    Suspend,
    Destroy,
}

impl Change {
    pub fn op(self) -> MachineOp {
        match self {
            Change::Start => MachineOp::Start,
            Change::Stop => MachineOp::Stop,
            Change::Suspend => MachineOp::Suspend,
            Change::Destroy => MachineOp::Destroy,
        }
    }
}

pub trait Platform: Send + Sync {
    /// The status of the app's current release (`None`: never deployed, or no deploy guard).
    fn release_status(&self, app: &str, deadline: Deadline)
    -> Result<Option<String>, ReleaseError>;
    /// Every metric for `app`.
    fn collect(&self, app: &str, deadline: Deadline) -> Result<MetricValues, CollectError>;
    fn list(&self, app: &str, deadline: Deadline) -> Result<Vec<Machine>, ApiError>;
    /// One machine read back.
    fn get(&self, app: &str, id: &str, deadline: Deadline) -> Result<Machine, ApiError>;
    fn create(
        &self,
        app: &str,
        request: CreateRequest,
        deadline: Deadline,
    ) -> Result<Machine, ApiError>;
    /// Starts, stops or destroys one machine.
    fn act(&self, app: &str, change: Change, id: &str, deadline: Deadline) -> Result<(), ApiError>;
    /// The names of an organization's apps.
    fn org_apps(&self, org: &str, deadline: Deadline) -> Result<Vec<String>, ApiError>;
    /// Per-machine values of `stop-priority-query`, by machine id.
    fn stop_priorities(
        &self,
        app: &str,
        query: &str,
        deadline: Deadline,
    ) -> Result<HashMap<String, f64>, SourceError>;
    /// Every metric over a past range (see [`collector::history`]).
    fn history(
        &self,
        app: &str,
        from: Stamp,
        to: Stamp,
        step: Duration,
        deadline: Deadline,
    ) -> Option<Result<Vec<(Stamp, MetricValues)>, CollectError>>;
}

/// Fly.io: the configured collectors, the Machines API and (unless disabled) the deploy
/// guard's GraphQL query.
pub struct Fly {
    pub machines: MachinesClient,
    pub releases: Option<ReleaseClient>,
    pub collectors: Vec<Box<dyn Collector>>,
    /// The first Prometheus collector's server, for `stop-priority-query`.
    pub prometheus: Option<PrometheusClient>,
}

impl Platform for Fly {
    fn release_status(
        &self,
        app: &str,
        deadline: Deadline,
    ) -> Result<Option<String>, ReleaseError> {
        match &self.releases {
            Some(releases) => releases.current_status(app, deadline),
            None => Ok(None),
        }
    }

    fn collect(&self, app: &str, deadline: Deadline) -> Result<MetricValues, CollectError> {
        collector::collect_all(&self.collectors, app, deadline)
    }

    fn list(&self, app: &str, deadline: Deadline) -> Result<Vec<Machine>, ApiError> {
        self.machines.list_machines(app, deadline)
    }

    fn get(&self, app: &str, id: &str, deadline: Deadline) -> Result<Machine, ApiError> {
        self.machines.get_machine(app, id, deadline)
    }

    fn create(
        &self,
        app: &str,
        request: CreateRequest,
        deadline: Deadline,
    ) -> Result<Machine, ApiError> {
        self.machines.create_machine(app, request, deadline)
    }

    fn act(&self, app: &str, change: Change, id: &str, deadline: Deadline) -> Result<(), ApiError> {
        let m = &self.machines;
        match change {
            Change::Start => m.start_machine(app, id, deadline),
            Change::Stop => m.stop_machine(app, id, deadline),
            Change::Suspend => m.suspend_machine(app, id, deadline),
            Change::Destroy => m.destroy_machine(app, id, deadline),
        }
    }

    fn org_apps(&self, org: &str, deadline: Deadline) -> Result<Vec<String>, ApiError> {
        self.machines.list_org_apps(org, deadline)
    }

    fn stop_priorities(
        &self,
        app: &str,
        query: &str,
        deadline: Deadline,
    ) -> Result<HashMap<String, f64>, SourceError> {
        match &self.prometheus {
            Some(p) => p.by_instance(&crate::expand::expand_query(query, app), deadline),
            // Validation requires a Prometheus collector for the query.
            None => Ok(HashMap::new()),
        }
    }

    fn history(
        &self,
        app: &str,
        from: Stamp,
        to: Stamp,
        step: Duration,
        deadline: Deadline,
    ) -> Option<Result<Vec<(Stamp, MetricValues)>, CollectError>> {
        collector::history(&self.collectors, app, from, to, step, deadline)
    }
}
