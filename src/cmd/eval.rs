//! `eval`: collect every metric once, evaluate the expressions and print the target counts as
//! the Go program does. Nothing is scaled and no API token is needed.

use std::collections::BTreeMap;
use std::path::Path;

use crate::clock;
use crate::collector;
use crate::http::Deadline;

/// Prints `{"created":{"min":…,"max":…},"started":{…}}` (two-space indent, `null` = unset);
/// with `process-groups`, one such object per group: `{"web": {…}, "worker": {…}}`.
pub fn run(config_path: Option<&Path>) -> Result<(), String> {
    let super::Prepared {
        config,
        groups,
        collectors,
    } = super::prepare(config_path)?;
    // Standard error: standard output is the JSON.
    for metric in super::shadowed_time_variables(&config) {
        eprintln!("WARNING: metric-name {metric:?} {}", super::SHADOWED);
    }
    // A wildcard pattern is substituted literally for $APP_NAME, as in the Go program.
    let mut metrics = collector::collect_all(
        &collectors,
        &config.app_name,
        Deadline::after(config.timeout),
    )
    .map_err(|e| format!("metrics collection failed: {e}"))?;
    clock::add_time_variables(&mut metrics, clock::now(), config.time_offset);
    let json = if config.process_groups.is_empty() {
        let (_, targets) = &groups[0];
        let counts = targets.evaluate(&metrics).map_err(|e| e.to_string())?;
        serde_json::to_string_pretty(&counts)
    } else {
        let counts = groups
            .iter()
            .map(|(name, targets)| {
                targets
                    .evaluate(&metrics)
                    .map(|c| (name.as_str(), c))
                    .map_err(|e| format!("process-groups[{name:?}]: {e}"))
            })
            .collect::<Result<BTreeMap<_, _>, String>>()?;
        serde_json::to_string_pretty(&counts)
    }
    .map_err(|e| e.to_string())?;
    println!("{json}");
    Ok(())
}
