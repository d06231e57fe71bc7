//! `backtest`: replays an app's metric history through the expressions, the scale controls and
//! the planner, and reports what the config would have done next to what the Go program would
//! have done (every control off). History is the only I/O: Prometheus range queries, cut below
//! its point limit and fetched `concurrency` at a time; the replay itself is pure.

mod html;
mod replay;
mod report;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::clock::{self, Stamp};
use crate::collector::{self, Collector, Grid, HistoryError};
use crate::config::{Config, GroupConfig, process_env};
use crate::duration::parse_go_duration;
use crate::expr::TargetExprs;
use crate::reconcile::compile_groups;
use crate::wildcard;
use replay::Run;

/// A time on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeArg {
    Now,
    /// This long before now.
    Ago(Duration),
    At(Stamp),
}

impl TimeArg {
    /// RFC 3339, a Unix timestamp, `now`, or a negative Go duration (`-24h`).
    pub fn parse(s: &str) -> Result<TimeArg, String> {
        let s = s.trim();
        if s == "now" {
            return Ok(TimeArg::Now);
        }
        if let Some(ago) = s.strip_prefix('-') {
            if let Ok(nanos) = parse_go_duration(ago) {
                return Ok(TimeArg::Ago(Duration::from_nanos(nanos.max(0) as u64)));
            }
        }
        if let Ok(secs) = s.parse::<f64>() {
            if secs.is_finite() && secs.abs() < 1e14 {
                return Ok(TimeArg::At((secs * 1000.0).round() as Stamp));
            }
        }
        clock::parse_rfc3339(s).map(TimeArg::At).ok_or_else(|| {
            format!(
                "{s:?} is not a time: write RFC 3339 (2026-11-20T00:00:00Z), a Unix timestamp, now, or a negative duration such as -24h"
            )
        })
    }

    fn at(self, now: Stamp) -> Stamp {
        match self {
            TimeArg::Now => now,
            TimeArg::Ago(d) => now.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            TimeArg::At(t) => t,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
    Csv,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format, String> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            other => Err(format!("{other:?} is not a format; use text, json or csv")),
        }
    }
}

/// `-step`: a positive Go duration.
pub fn parse_step(s: &str) -> Result<Duration, String> {
    crate::duration::parse_positive(s)
        .map_err(|e| format!("{s:?}: {e}; write a Go duration such as 15s"))
}

/// `-set NAME=VALUE`.
pub fn parse_set(s: &str) -> Result<(String, f64), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: write -set NAME=VALUE, e.g. -set workflows=3"))?;
    let value: f64 = value
        .trim()
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
        .ok_or_else(|| format!("{s:?}: the value must be a number"))?;
    Ok((name.trim().to_string(), value))
}

#[derive(Debug, Clone)]
pub struct Options {
    pub config: Option<PathBuf>,
    pub app: Option<String>,
    pub from: TimeArg,
    pub to: TimeArg,
    pub step: Option<Duration>,
    pub machines: Option<usize>,
    pub started: Option<usize>,
    pub set: Vec<(String, f64)>,
    pub format: Format,
    pub html: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            config: None,
            app: None,
            from: TimeArg::Ago(Duration::from_secs(24 * 3600)),
            to: TimeArg::Now,
            step: None,
            machines: None,
            started: None,
            set: Vec::new(),
            format: Format::Text,
            html: None,
        }
    }
}

/// The most steps one replay holds: each kept step costs about 430 bytes (two runs), so a
/// million is about 430 MB — six months at 15 s. Longer ranges want a longer `-step`.
const MAX_STEPS: i64 = 1_000_000;

/// One group's two runs.
pub struct GroupRuns {
    pub name: String,
    pub config: GroupConfig,
    pub configured: Run,
    pub baseline: Run,
}

/// A finished backtest: the history and every group's runs.
pub struct Backtest {
    pub app: String,
    pub grid: Grid,
    pub constants: Vec<(String, f64)>,
    /// With `process-groups`, one per group; else one.
    pub groups: Vec<GroupRuns>,
    pub labeled: bool,
    /// Steps where a metric had no sample.
    pub failed_steps: usize,
    pub config: Config,
}

pub fn run(opts: &Options) -> Result<(), String> {
    let config = Config::load(opts.config.as_deref(), &process_env).map_err(|e| e.to_string())?;
    // Warnings (Prometheus' own) on stderr; with `verbose`, how long each phase took.
    crate::logging::init(config.log_format, config.verbose);
    let groups = compile_groups(&config)?;
    let collectors = collector::build(&config.metric_collectors)?;
    let app = match &opts.app {
        Some(app) => app.clone(),
        None if wildcard::is_pattern(&config.app_name) => {
            return Err(format!(
                "app-name {:?} is a pattern: name the app to replay with -app",
                config.app_name
            ));
        }
        None => config.app_name.clone(),
    };
    let now = clock::now();
    let (from, to) = (opts.from.at(now), opts.to.at(now));
    let step = opts.step.unwrap_or(config.interval);
    if step < Duration::from_millis(1) {
        return Err("-step must be at least 1ms, e.g. -step 15s".to_string());
    }
    if from >= to {
        return Err(format!(
            "-from {} is not before -to {}",
            clock::rfc3339(from),
            clock::rfc3339(to)
        ));
    }
    let step_ms = i64::try_from(step.as_millis()).unwrap_or(i64::MAX);
    if (to - from) / step_ms > MAX_STEPS {
        return Err(format!(
            "{} steps is more than {MAX_STEPS}; use a longer -step or a shorter range",
            (to - from) / step_ms
        ));
    }
    for (name, _) in &opts.set {
        if !collectors.iter().any(|c| c.metric_name() == name) {
            let names: Vec<&str> = collectors.iter().map(|c| c.metric_name()).collect();
            return Err(format!(
                "-set {name}: no collector has metric-name {name:?}; the metrics are: {}",
                names.join(", ")
            ));
        }
    }
    let fetched: Vec<&dyn Collector> = collectors
        .iter()
        .map(|c| c.as_ref())
        .filter(|c| !opts.set.iter().any(|(name, _)| name == c.metric_name()))
        .collect();
    let fetching = Instant::now();
    let grid = collector::fetch_grid(
        &fetched,
        &app,
        from,
        to,
        step,
        config.timeout,
        config.concurrency,
    )
    .map_err(|e| match e {
        HistoryError::NoHistory { metric } => format!(
            "metric {metric:?} comes from a source without history (only prometheus keeps one); give it a constant with -set {metric}=VALUE"
        ),
        HistoryError::Source(e) => format!("cannot read history: {e}"),
    })?;
    log::debug!(steps = grid.steps(), metrics = fetched.len(),
        range_queries = fetched.len() * collector::range_chunks(from, to, step).len(),
        took_ms = fetching.elapsed().as_millis() as u64; "history fetched");
    let (replaying, cpu) = (Instant::now(), thread_cpu());
    let backtest = replay_all(&config, &groups, &app, grid, opts);
    let cpu_ms = cpu
        .zip(thread_cpu())
        .map(|(before, after)| after.saturating_sub(before).as_millis() as u64);
    log::debug!(steps = backtest.grid.steps(), groups = backtest.groups.len(),
        took_ms = replaying.elapsed().as_millis() as u64, cpu_ms;
        "replayed: expressions, scale controls and plan at every step, configured and baseline");
    let writing = Instant::now();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    report::write(&backtest, opts.format, &mut out)
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write the report: {e}"))?;
    if let Some(path) = &opts.html {
        std::fs::write(path, html::render(&backtest))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    log::debug!(took_ms = writing.elapsed().as_millis() as u64; "report written");
    Ok(())
}

/// This thread's CPU time so far (Linux): on a busy machine, wall time alone says little.
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// Both runs of every group (pure: the history is already fetched).
pub fn replay_all(
    config: &Config,
    groups: &[(String, TargetExprs)],
    app: &str,
    grid: Grid,
    opts: &Options,
) -> Backtest {
    let constants = opts.set.clone();
    let failed_steps = (0..grid.steps())
        .filter(|k| replay::failed_at(&grid, *k))
        .count();
    let runs = config
        .groups()
        .into_iter()
        .zip(groups)
        .map(|((name, group), (_, targets))| {
            let created = opts
                .machines
                .unwrap_or_else(|| first_created(&grid, &constants, config.time_offset, targets))
                .min(config.max_machines);
            let scenario = |controls| replay::Scenario {
                group: name,
                targets,
                config: group,
                controls,
                max_machines: config.max_machines,
                time_offset: config.time_offset,
                created,
                started: opts.started.unwrap_or(0).min(created),
            };
            GroupRuns {
                name: name.to_string(),
                config: group.clone(),
                configured: replay::replay(&grid, &constants, &scenario(true)),
                baseline: replay::replay(&grid, &constants, &scenario(false)),
            }
        })
        .collect();
    Backtest {
        app: app.to_string(),
        grid,
        constants,
        groups: runs,
        labeled: !config.process_groups.is_empty(),
        failed_steps,
        config: config.clone(),
    }
}

/// The fleet's size at the start: the lowest created bound at the first step, else 1.
fn first_created(
    grid: &Grid,
    constants: &[(String, f64)],
    time_offset: i32,
    targets: &TargetExprs,
) -> usize {
    let mut metrics = replay::StepMetrics::new(grid, constants, time_offset);
    let Some(metrics) = (grid.steps() > 0).then(|| metrics.at(0)).flatten() else {
        return 1;
    };
    targets
        .evaluate(metrics)
        .ok()
        .and_then(|t| t.created.min.or(t.created.max))
        .map_or(1, |n| n as usize)
}
