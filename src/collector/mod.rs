//! Metric collectors: each turns one configured source into one number per app and cycle.

mod prometheus;
mod temporal;

use std::fmt;

pub use prometheus::PrometheusCollector;
pub use temporal::TemporalCollector;

use crate::config::CollectorConfig;
use crate::expr::MetricValues;
use crate::http::Deadline;

/// A source of one metric value.
pub trait Collector: Send + Sync {
    /// The variable name expressions use.
    fn metric_name(&self) -> &str;

    /// The current value for `app` (`${APP_NAME}` in the query), within `deadline`. The error
    /// is one line and names the source; it never contains a credential.
    fn collect(&self, app: &str, deadline: Deadline) -> Result<f64, String>;
}

/// A failed collection, naming the metric as the Go program does.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectError {
    pub metric: String,
    pub message: String,
}

impl fmt::Display for CollectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "collect metric ({:?}): {}", self.metric, self.message)
    }
}

impl std::error::Error for CollectError {}

/// Builds the configured collectors (config is already validated). Construction never
/// contacts a server, so start-up does not depend on the metric sources being up.
pub fn build(configs: &[CollectorConfig]) -> Result<Vec<Box<dyn Collector>>, String> {
    configs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let built: Result<Box<dyn Collector>, String> = match c.kind.as_str() {
                "prometheus" => Ok(Box::new(PrometheusCollector::new(c))),
                "temporal" => temporal::build(c),
                other => Err(format!("invalid type: {other:?}")),
            };
            built.map_err(|e| {
                format!("cannot create metrics collectors: metric-collectors[{i}]: {e}")
            })
        })
        .collect()
}

/// Collects every metric for `app`, in configuration order; the first failure ends the
/// collection, so a cycle never runs on partial data.
pub fn collect_all(
    collectors: &[Box<dyn Collector>],
    app: &str,
    deadline: Deadline,
) -> Result<MetricValues, CollectError> {
    collectors
        .iter()
        .map(|c| {
            c.collect(app, deadline)
                .map(|v| (c.metric_name().to_string(), v))
                .map_err(|message| CollectError {
                    metric: c.metric_name().to_string(),
                    message,
                })
        })
        .collect()
}
