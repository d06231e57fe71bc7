//! Metric collectors: each turns one configured source into one number per app and cycle.

mod history;
mod http;
mod prometheus;
mod redis;
mod temporal;

use std::fmt;
use std::time::Duration;

pub use self::http::{Aggregate, JsonPointer, check_header, parse_method};
pub use self::redis::RedisCommand;
pub use history::{Grid, HistoryError, fetch_grid, range_chunks};
pub use prometheus::PrometheusClient;
use prometheus::PrometheusCollector;

use crate::clock::Stamp;
use crate::config::{CollectorConfig, CollectorKind};
use crate::expr::MetricValues;
use crate::http::{Deadline, Transport};

/// A source of one metric value.
pub trait Collector: Send + Sync {
    /// The variable name expressions use.
    fn metric_name(&self) -> &str;

    /// The current value for `app` (`${APP_NAME}` in the query), within `deadline`.
    fn collect(&self, app: &str, deadline: Deadline) -> Result<f64, SourceError>;

    /// Values from `from` to `to` every `step` (at most `history::MAX_RANGE_POINTS` steps),
    /// where the source has them; `None` for a source that only answers "now".
    fn range(
        &self,
        _app: &str,
        _from: Stamp,
        _to: Stamp,
        _step: Duration,
        _deadline: Deadline,
    ) -> Option<Result<Vec<(Stamp, f64)>, SourceError>> {
        None
    }
}

/// Why a source gave no value. Its text is one line and never contains a credential.
#[derive(Debug, Clone)]
pub struct SourceError {
    /// The source, for messages: `prometheus http://prom:9090`.
    pub source: String,
    pub kind: SourceErrorKind,
    /// What the user may have got wrong, appended to the message (may be empty).
    pub hint: String,
}

#[derive(Debug, Clone)]
pub enum SourceErrorKind {
    /// No answer within the deadline; how long was waited.
    Timeout(Duration),
    /// No answer within the deadline, as the source's client words it.
    TimedOut(String),
    Transport(Transport),
    /// An answer that holds no value: the source's error, or a body that is not one.
    Answer(String),
}

impl SourceError {
    pub fn is_timeout(&self) -> bool {
        matches!(
            self.kind,
            SourceErrorKind::Timeout(_)
                | SourceErrorKind::TimedOut(_)
                | SourceErrorKind::Transport(Transport::Timeout)
        )
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.source)?;
        match &self.kind {
            SourceErrorKind::Timeout(after) => {
                write!(f, "request timed out after {:.1}s", after.as_secs_f64())?
            }
            SourceErrorKind::Transport(t) => write!(f, "{t}")?,
            SourceErrorKind::Answer(m) | SourceErrorKind::TimedOut(m) => f.write_str(m)?,
        }
        f.write_str(&self.hint)
    }
}

impl std::error::Error for SourceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            SourceErrorKind::Transport(t) => Some(t),
            _ => None,
        }
    }
}

/// A failed collection, naming the metric as the Go program does.
#[derive(Debug, Clone)]
pub struct CollectError {
    pub metric: String,
    pub error: SourceError,
}

impl fmt::Display for CollectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "collect metric ({:?}): {}", self.metric, self.error)
    }
}

impl std::error::Error for CollectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Builds the configured collectors (config is already validated). Construction never
/// contacts a server, so start-up does not depend on the metric sources being up.
pub fn build(configs: &[CollectorConfig]) -> Result<Vec<Box<dyn Collector>>, String> {
    configs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let built: Result<Box<dyn Collector>, String> = match &c.kind {
                CollectorKind::Prometheus => Ok(Box::new(PrometheusCollector::new(c))),
                CollectorKind::Temporal => temporal::build(c),
                CollectorKind::Http => {
                    http::HttpCollector::new(c).map(|h| Box::new(h) as Box<dyn Collector>)
                }
                CollectorKind::Redis => {
                    redis::RedisCollector::new(c).map(|r| Box::new(r) as Box<dyn Collector>)
                }
                CollectorKind::Missing | CollectorKind::Other(_) => {
                    Err(format!("invalid type: {:?}", c.kind))
                }
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
                .map_err(|error| CollectError {
                    metric: c.metric_name().to_string(),
                    error,
                })
        })
        .collect()
}
