//! Metric history: every collector's values on one time grid, read with range queries cut
//! below Prometheus' 11,000-points-per-series limit and fetched a few at a time. Used to fill
//! the stabilization windows at start-up and by `backtest`.

use std::sync::Mutex;
use std::time::Duration;

use super::{CollectError, Collector};
use crate::clock::Stamp;
use crate::http::Deadline;
use crate::queue::WorkQueue;

/// The most steps one range query asks for (Prometheus refuses more than 11,000 points).
pub const MAX_RANGE_POINTS: i64 = 10_000;

/// Values on the grid `from, from + step, …, to`: one row per metric, `None` where the
/// source had no sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    pub from: Stamp,
    pub step_ms: i64,
    /// Steps of the range, whether or not any metric was fetched (all may be constants).
    pub steps: usize,
    pub metrics: Vec<String>,
    /// `values[metric][step]`.
    pub values: Vec<Vec<Option<f64>>>,
}

impl Grid {
    pub fn steps(&self) -> usize {
        self.steps
    }

    pub fn time(&self, step: usize) -> Stamp {
        self.from + self.step_ms * step as i64
    }
}

#[derive(Debug)]
pub enum HistoryError {
    /// This collector only answers "now" (Temporal, …).
    NoHistory {
        metric: String,
    },
    Source(CollectError),
}

impl std::fmt::Display for HistoryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HistoryError::NoHistory { metric } => write!(
                f,
                "metric {metric:?} comes from a source without history (only prometheus keeps one)"
            ),
            HistoryError::Source(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for HistoryError {}

/// `from..=to` cut into pieces of at most [`MAX_RANGE_POINTS`] steps, each `(first, last)`.
pub fn range_chunks(from: Stamp, to: Stamp, step: Duration) -> Vec<(Stamp, Stamp)> {
    let step_ms = step_millis(step);
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

fn step_millis(step: Duration) -> i64 {
    i64::try_from(step.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// Every collector's values over `from..=to`, each chunk request within `timeout`, at most
/// `parallelism` requests at a time.
pub fn fetch_grid(
    collectors: &[&dyn Collector],
    app: &str,
    from: Stamp,
    to: Stamp,
    step: Duration,
    timeout: Duration,
    parallelism: usize,
) -> Result<Grid, HistoryError> {
    let step_ms = step_millis(step);
    let steps = usize::try_from((to - from).max(-1).saturating_div(step_ms) + 1).unwrap_or(0);
    let chunks = range_chunks(from, to, step);
    let jobs = WorkQueue::new(usize::MAX);
    for (metric, _) in collectors.iter().enumerate() {
        for chunk in &chunks {
            let _ = jobs.push((metric, *chunk));
        }
    }
    jobs.close();
    let values = Mutex::new(vec![vec![None; steps]; collectors.len()]);
    let failure: Mutex<Option<HistoryError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..parallelism.clamp(1, 64) {
            s.spawn(|| {
                while let Some((i, (first, last))) = jobs.pop() {
                    if lock(&failure).is_some() {
                        continue;
                    }
                    let c = collectors[i];
                    let fetched = c.range(app, first, last, step, Deadline::after(timeout));
                    let result = match fetched {
                        None => Err(HistoryError::NoHistory {
                            metric: c.metric_name().to_string(),
                        }),
                        Some(Err(error)) => Err(HistoryError::Source(CollectError {
                            metric: c.metric_name().to_string(),
                            error,
                        })),
                        Some(Ok(samples)) => Ok(samples),
                    };
                    match result {
                        Ok(samples) => {
                            let mut values = lock(&values);
                            for (at, value) in samples {
                                let k = (at - from + step_ms / 2).div_euclid(step_ms);
                                if let Some(slot) =
                                    usize::try_from(k).ok().and_then(|k| values[i].get_mut(k))
                                {
                                    *slot = Some(value);
                                }
                            }
                        }
                        Err(e) => {
                            lock(&failure).get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    Ok(Grid {
        from,
        step_ms,
        steps,
        metrics: collectors
            .iter()
            .map(|c| c.metric_name().to_string())
            .collect(),
        values: values.into_inner().unwrap_or_else(|e| e.into_inner()),
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::SourceError;

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

    /// A source with a value at every even step, recording the ranges asked for.
    struct Even(Mutex<Vec<(Stamp, Stamp)>>);

    impl Collector for Even {
        fn metric_name(&self) -> &str {
            "even"
        }
        fn collect(&self, _: &str, _: Deadline) -> Result<f64, SourceError> {
            Ok(0.0)
        }
        fn range(
            &self,
            _: &str,
            from: Stamp,
            to: Stamp,
            step: Duration,
            _: Deadline,
        ) -> Option<Result<Vec<(Stamp, f64)>, SourceError>> {
            self.0.lock().unwrap().push((from, to));
            let step = step.as_millis() as i64;
            Some(Ok((from..=to)
                .step_by(step as usize)
                .filter(|t| (t / step) % 2 == 0)
                .map(|t| (t, (t / step) as f64))
                .collect()))
        }
    }

    struct Now;

    impl Collector for Now {
        fn metric_name(&self) -> &str {
            "now"
        }
        fn collect(&self, _: &str, _: Deadline) -> Result<f64, SourceError> {
            Ok(0.0)
        }
    }

    #[test]
    fn values_land_on_the_grid_with_gaps() {
        let even = Even(Mutex::new(Vec::new()));
        let step = Duration::from_secs(1);
        let to = 25_000 * 1000;
        let grid = fetch_grid(&[&even], "a", 0, to, step, Duration::from_secs(5), 4).unwrap();
        assert_eq!(grid.steps(), 25_001);
        assert_eq!(grid.values[0][0], Some(0.0));
        assert_eq!(grid.values[0][1], None);
        assert_eq!(grid.values[0][24_000], Some(24_000.0));
        assert_eq!(grid.time(3), 3000);
        let mut asked = even.0.lock().unwrap().clone();
        asked.sort();
        assert_eq!(asked, range_chunks(0, to, step));
        let err =
            fetch_grid(&[&even, &Now], "a", 0, to, step, Duration::from_secs(5), 2).unwrap_err();
        assert!(matches!(err, HistoryError::NoHistory { ref metric } if metric == "now"));
        let constants_only = fetch_grid(&[], "a", 0, 60_000, step, Duration::from_secs(5), 2);
        assert_eq!(
            constants_only.unwrap().steps(),
            61,
            "every metric a constant: the range still has its steps"
        );
    }
}
