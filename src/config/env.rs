//! The environment pass (Go: `NewConfigFromEnv`): every `FAS_*` variable, plus the `FLY_*` and
//! `TEMPORAL_*` ones fly-go and the Temporal SDK read.

use std::time::Duration;

use super::{CollectorConfig, CollectorKind, Config, ConfigError, EnvLookup, LogFormat};
use crate::duration::parse_positive;
use crate::secret::Secret;

impl Config {
    pub fn from_env(env: EnvLookup) -> Result<Config, ConfigError> {
        let var = |name: &str| env(name).unwrap_or_default();
        let mut c = Config {
            app_name: var("FAS_APP_NAME"),
            org: var("FAS_ORG"),
            regions: split_regions(&var("FAS_REGIONS")),
            created_machine_count: var("FAS_CREATED_MACHINE_COUNT"),
            min_created_machine_count: var("FAS_MIN_CREATED_MACHINE_COUNT"),
            max_created_machine_count: var("FAS_MAX_CREATED_MACHINE_COUNT"),
            initial_machine_state: var("FAS_INITIAL_MACHINE_STATE"),
            started_machine_count: var("FAS_STARTED_MACHINE_COUNT"),
            min_started_machine_count: var("FAS_MIN_STARTED_MACHINE_COUNT"),
            max_started_machine_count: var("FAS_MAX_STARTED_MACHINE_COUNT"),
            api_token: Secret::new(var("FAS_API_TOKEN")),
            ..Config::default()
        };
        if c.initial_machine_state.is_empty() {
            c.initial_machine_state = "started".to_string();
        }
        if let Some(group) = nonempty(env, "FAS_PROCESS_GROUP") {
            c.process_group = group;
        }
        for (name, slot) in [
            ("FAS_CONCURRENCY", &mut c.concurrency),
            ("FAS_ACTION_CONCURRENCY", &mut c.action_concurrency),
            ("FAS_MAX_MACHINES", &mut c.max_machines),
        ] {
            if let Some(v) = nonempty(env, name) {
                *slot = parse_env_int(&v, name)?.clamp(1, u32::MAX as i64) as usize;
            }
        }
        let durations: [(&'static str, &mut Duration); 4] = [
            ("FAS_INTERVAL", &mut c.interval),
            ("FAS_TIMEOUT", &mut c.timeout),
            (
                "FAS_APP_LIST_REFRESH_INTERVAL",
                &mut c.app_list_refresh_interval,
            ),
            (
                "FAS_DEPLOY_GUARD_FAIL_OPEN_AFTER",
                &mut c.deploy_guard_fail_open_after,
            ),
        ];
        for (name, slot) in durations {
            if let Some(v) = nonempty(env, name) {
                *slot = parse_positive(&v).map_err(|reason| ConfigError::Env {
                    var: name,
                    kind: "duration",
                    value: v.clone(),
                    reason,
                })?;
            }
        }
        for (name, slot) in [
            ("FAS_VERBOSE", &mut c.verbose),
            ("FAS_DEPLOY_GUARD", &mut c.deploy_guard),
        ] {
            if let Some(v) = nonempty(env, name) {
                *slot = super::parse_bool(&v).ok_or_else(|| ConfigError::Env {
                    var: name,
                    kind: "boolean",
                    value: v.clone(),
                    reason: "use true or false".to_string(),
                })?;
            }
        }
        if let Some(v) = nonempty(env, "FAS_LOG_FORMAT") {
            c.log_format = LogFormat::parse(&v).ok_or_else(|| ConfigError::Env {
                var: "FAS_LOG_FORMAT",
                kind: "log format",
                value: v.clone(),
                reason: "use text or json".to_string(),
            })?;
        }
        for (name, slot) in [
            ("FAS_METRICS_ADDR", &mut c.metrics_addr),
            ("FLY_FLAPS_BASE_URL", &mut c.flaps_base_url),
            ("FLY_API_BASE_URL", &mut c.api_base_url),
        ] {
            if let Some(v) = nonempty(env, name) {
                *slot = v;
            }
        }

        if let Some(address) = nonempty(env, "FAS_PROMETHEUS_ADDRESS") {
            c.metric_collectors.push(CollectorConfig {
                kind: CollectorKind::Prometheus,
                address,
                metric_name: var("FAS_PROMETHEUS_METRIC_NAME"),
                query: var("FAS_PROMETHEUS_QUERY"),
                token: Secret::new(var("FAS_PROMETHEUS_TOKEN")),
                ..CollectorConfig::default()
            });
        }
        if let Some(address) = nonempty(env, "FAS_TEMPORAL_ADDRESS") {
            let first = |a: &str, b: &str| nonempty(env, a).unwrap_or_else(|| var(b));
            c.metric_collectors.push(CollectorConfig {
                kind: CollectorKind::Temporal,
                address,
                namespace: var("FAS_TEMPORAL_NAMESPACE"),
                metric_name: var("FAS_TEMPORAL_METRIC_NAME"),
                query: var("FAS_TEMPORAL_QUERY"),
                cert_data: first("TEMPORAL_TLS_CERT_DATA", "FAS_TEMPORAL_CERT_DATA"),
                key_data: Secret::new(first("TEMPORAL_TLS_KEY_DATA", "FAS_TEMPORAL_KEY_DATA")),
                ca_data: var("FAS_TEMPORAL_CA_DATA"),
                api_key: Secret::new(first("TEMPORAL_API_KEY", "FAS_TEMPORAL_API_KEY")),
                ..CollectorConfig::default()
            });
        }
        Ok(c)
    }
}

fn nonempty(env: EnvLookup, name: &str) -> Option<String> {
    env(name).filter(|v| !v.is_empty())
}

/// `FAS_REGIONS`: comma-separated; items are trimmed and empty items dropped (the Go program
/// kept `" ord"` with its space, which the API rejects).
fn split_regions(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(String::from)
        .collect()
}

/// Go's `strconv.Atoi`: an optional sign and decimal digits, nothing else.
fn parse_env_int(v: &str, var: &'static str) -> Result<i64, ConfigError> {
    v.parse::<i64>().map_err(|_| ConfigError::Env {
        var,
        kind: "integer",
        value: v.to_string(),
        reason: "use a whole number such as 4".to_string(),
    })
}
