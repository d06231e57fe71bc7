//! `eval`: collect every metric once, evaluate the expressions and print the target counts as
//! the Go program does. Nothing is scaled and no API token is needed.

use std::path::Path;

use crate::collector;
use crate::http::Deadline;

/// Prints `{"created":{"min":…,"max":…},"started":{…}}` (two-space indent, `null` = unset).
pub fn run(config_path: Option<&Path>) -> Result<(), String> {
    let super::Prepared {
        config,
        targets,
        collectors,
    } = super::prepare(config_path)?;
    // A wildcard pattern is substituted literally for $APP_NAME, as in the Go program.
    let metrics = collector::collect_all(
        &collectors,
        &config.app_name,
        Deadline::after(config.timeout),
    )
    .map_err(|e| format!("metrics collection failed: {e}"))?;
    let counts = targets.evaluate(&metrics).map_err(|e| e.to_string())?;
    let json = serde_json::to_string_pretty(&counts).map_err(|e| e.to_string())?;
    println!("{json}");
    Ok(())
}
