//! Metric collectors: each turns one configured source into one number per app and cycle.

mod prometheus;
mod temporal;

use std::fmt;
use std::time::Duration;

use prometheus::PrometheusCollector;
pub use prometheus::{MAX_RANGE_POINTS, PrometheusClient};

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

    /// Values from `from` to `to` every `step` (at most [`MAX_RANGE_POINTS`] steps), where
    /// the source has them; `None` for a source that only answers "now".
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

/// `from..=to` cut into pieces of at most [`MAX_RANGE_POINTS`] steps, each `(first, last)`.
pub fn range_chunks(from: Stamp, to: Stamp, step: Duration) -> Vec<(Stamp, Stamp)> {
    let step_ms = i64::try_from(step.as_millis()).unwrap_or(i64::MAX).max(1);
    let span = step_ms.saturating_mul(MAX_RANGE_POINTS - 1);
    let mut chunks = Vec::new();
    let mut start = from;
    while start <= to {
        let end = start.saturating_add(span).min(to);
        chunks.push((start, end));
        start = end.saturating_add(step_ms);
    }
    chunks
}

/// Every collector's values over a range, merged by time: only the steps where every metric
/// has a value. `None` when a collector keeps no history.
pub fn history(
    collectors: &[Box<dyn Collector>],
    app: &str,
    from: Stamp,
    to: Stamp,
    step: Duration,
    deadline: Deadline,
) -> Option<Result<Vec<(Stamp, MetricValues)>, CollectError>> {
    let mut by_time: std::collections::BTreeMap<Stamp, MetricValues> = Default::default();
    for c in collectors {
        let mut samples = Vec::new();
        for (first, last) in range_chunks(from, to, step) {
            match c.range(app, first, last, step, deadline)? {
                Ok(s) => samples.extend(s),
                Err(error) => {
                    return Some(Err(CollectError {
                        metric: c.metric_name().to_string(),
                        error,
                    }));
                }
            }
        }
        for (at, value) in samples {
            by_time
                .entry(at)
                .or_default()
                .insert(c.metric_name().to_string(), value);
        }
    }
    Some(Ok(by_time
        .into_iter()
        .filter(|(_, m)| m.len() == collectors.len())
        .collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_cut_below_the_point_limit() {
        let step = Duration::from_secs(15);
        assert_eq!(range_chunks(0, 0, step), [(0, 0)]);
        assert_eq!(range_chunks(0, 30_000, step), [(0, 30_000)]);
        let day30 = 30 * 86_400_000;
        let chunks = range_chunks(0, day30, step);
        assert_eq!(chunks.len(), 18, "172,801 points in chunks of 10,000");
        assert_eq!(chunks[0], (0, 9_999 * 15_000));
        assert_eq!(chunks[1].0, 10_000 * 15_000);
        assert_eq!(chunks.last().unwrap().1, day30);
        for w in chunks.windows(2) {
            assert_eq!(w[1].0, w[0].1 + 15_000, "no step lost or repeated");
        }
        assert!(range_chunks(10, 0, step).is_empty());
    }
}
