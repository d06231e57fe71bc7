//! The commands, one per file. `main` parses arguments and maps results to exit codes.

mod eval;
mod serve;

use std::path::Path;

pub use eval::run as eval;
pub use serve::{Options as ServeOptions, run as serve};

use crate::collector::{self, Collector};
use crate::config::{Config, process_env};
use crate::expr::TargetExprs;
use crate::reconcile::compile_groups;

/// `version` output: `fly-autoscaler <version>, commit=<sha>` (commit when built with one).
pub fn version_line() -> String {
    match option_env!("FAS_COMMIT") {
        Some(commit) if !commit.is_empty() => {
            format!(
                "fly-autoscaler {}, commit={commit}",
                env!("CARGO_PKG_VERSION")
            )
        }
        _ => format!("fly-autoscaler {}", env!("CARGO_PKG_VERSION")),
    }
}

/// What both commands start from.
struct Prepared {
    config: Config,
    /// Each process group's name and compiled expressions.
    groups: Vec<(String, TargetExprs)>,
    collectors: Vec<Box<dyn Collector>>,
}

/// Collected metrics named like a time variable (`hour`, …): expressions see the metric, as
/// in the Go program (which has no such variables); warned about at start-up.
fn shadowed_time_variables(config: &Config) -> Vec<&str> {
    config
        .metric_collectors
        .iter()
        .map(|c| c.metric_name.as_str())
        .filter(|name| crate::clock::TIME_VARIABLES.contains(name))
        .collect()
}

const SHADOWED: &str = "is also a time variable: expressions see the metric's value, not the time; rename the metric to use the time";

/// A validated config, compiled expressions and built collectors: every problem here is
/// reported before any metric is collected.
fn prepare(config_path: Option<&Path>) -> Result<Prepared, String> {
    let config = Config::load(config_path, &process_env).map_err(|e| e.to_string())?;
    let groups = compile_groups(&config)?;
    let collectors = collector::build(&config.metric_collectors)?;
    Ok(Prepared {
        config,
        groups,
        collectors,
    })
}
