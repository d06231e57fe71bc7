//! The environment pass (Go: `NewConfigFromEnv`): every `FAS_*` variable, plus the `FLY_*` and
//! `TEMPORAL_*` ones fly-go and the Temporal SDK read.

use std::time::Duration;

use super::{
    CollectorConfig, CollectorKind, Config, ConfigError, EnvLookup, GroupConfig, LogFormat,
    ScaleDownMethod, Step, StopOrder, parse_time_offset,
};
use crate::duration::{parse_non_negative, parse_positive};
use crate::secret::Secret;

/// The count-expression variables, which `process-groups` replaces.
pub(super) const COUNT_VARS: [&str; 6] = [
    "FAS_CREATED_MACHINE_COUNT",
    "FAS_MIN_CREATED_MACHINE_COUNT",
    "FAS_MAX_CREATED_MACHINE_COUNT",
    "FAS_STARTED_MACHINE_COUNT",
    "FAS_MIN_STARTED_MACHINE_COUNT",
    "FAS_MAX_STARTED_MACHINE_COUNT",
];

impl Config {
    pub fn from_env(env: EnvLookup) -> Result<Config, ConfigError> {
        let var = |name: &str| env(name).unwrap_or_default();
        let mut c = Config {
            app_name: var("FAS_APP_NAME"),
            org: var("FAS_ORG"),
            process_group: nonempty(env, "FAS_PROCESS_GROUP"),
            group: group_from_env(env)?,
            api_token: Secret::new(var("FAS_API_TOKEN")),
            leader_election_url: Secret::new(var("FAS_LEADER_ELECTION_URL")),
            leader_election_key: var("FAS_LEADER_ELECTION_KEY"),
            ..Config::default()
        };
        for (name, slot) in [
            ("FAS_CONCURRENCY", &mut c.concurrency),
            ("FAS_ACTION_CONCURRENCY", &mut c.action_concurrency),
            ("FAS_MAX_MACHINES", &mut c.max_machines),
        ] {
            if let Some(v) = nonempty(env, name) {
                *slot = parse_env_int(&v, name)?.clamp(1, u32::MAX as i64) as usize;
            }
        }
        let durations: [(&'static str, &mut Duration); 5] = [
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
            ("FAS_LEADER_ELECTION_TTL", &mut c.leader_election_ttl),
        ];
        for (name, slot) in durations {
            if let Some(d) = parse_var(env, name, "duration", parse_positive)? {
                *slot = d;
            }
        }
        let boolean = |v: &str| super::parse_bool(v).ok_or_else(|| "use true or false".to_string());
        for (name, slot) in [
            ("FAS_VERBOSE", &mut c.verbose),
            ("FAS_DEPLOY_GUARD", &mut c.deploy_guard),
        ] {
            if let Some(b) = parse_var(env, name, "boolean", boolean)? {
                *slot = b;
            }
        }
        let format = |v: &str| LogFormat::parse(v).ok_or_else(|| "use text or json".to_string());
        if let Some(f) = parse_var(env, "FAS_LOG_FORMAT", "log format", format)? {
            c.log_format = f;
        }
        if let Some(o) = parse_var(env, "FAS_TIME_OFFSET", "UTC offset", parse_time_offset)? {
            c.time_offset = o;
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

/// The per-group keys from the environment: the one group, or every group's defaults.
fn group_from_env(env: EnvLookup) -> Result<GroupConfig, ConfigError> {
    let var = |name: &str| env(name).unwrap_or_default();
    let [
        created,
        min_created,
        max_created,
        started,
        min_started,
        max_started,
    ] = COUNT_VARS.map(var);
    let mut g = GroupConfig {
        created_machine_count: created,
        min_created_machine_count: min_created,
        max_created_machine_count: max_created,
        started_machine_count: started,
        min_started_machine_count: min_started,
        max_started_machine_count: max_started,
        regions: split_regions(&var("FAS_REGIONS")),
        stop_priority_query: var("FAS_STOP_PRIORITY_QUERY"),
        ..GroupConfig::default()
    };
    if let Some(v) = nonempty(env, "FAS_INITIAL_MACHINE_STATE") {
        g.initial_machine_state = v;
    }
    for (name, slot) in [
        ("FAS_SCALE_UP_STABILIZATION", &mut g.scale_up_stabilization),
        (
            "FAS_SCALE_DOWN_STABILIZATION",
            &mut g.scale_down_stabilization,
        ),
        ("FAS_COOLDOWN", &mut g.cooldown),
    ] {
        if let Some(d) = parse_var(env, name, "duration", parse_non_negative)? {
            *slot = d;
        }
    }
    g.max_scale_up = parse_var(env, "FAS_MAX_SCALE_UP", "step limit", Step::parse)?;
    g.max_scale_down = parse_var(env, "FAS_MAX_SCALE_DOWN", "step limit", Step::parse)?;
    let count = |v: &str| {
        v.parse::<u32>()
            .map_err(|_| "use a whole number such as 4".to_string())
    };
    if let Some(n) = parse_var(env, "FAS_FALLBACK_AFTER", "integer", count)? {
        g.fallback_after = n;
    }
    g.fallback_created_machine_count =
        parse_var(env, "FAS_FALLBACK_CREATED_MACHINE_COUNT", "integer", count)?;
    g.fallback_started_machine_count =
        parse_var(env, "FAS_FALLBACK_STARTED_MACHINE_COUNT", "integer", count)?;
    if let Some(o) = parse_var(env, "FAS_STOP_ORDER", "stop order", StopOrder::parse)? {
        g.stop_order = o;
    }
    if let Some(m) = parse_var(
        env,
        "FAS_SCALE_DOWN_METHOD",
        "scale-down method",
        ScaleDownMethod::parse,
    )? {
        g.scale_down_method = m;
    }
    Ok(g)
}

/// Parses a variable if it is set; the error names the variable and its value.
fn parse_var<T>(
    env: EnvLookup,
    var: &'static str,
    kind: &'static str,
    f: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, ConfigError> {
    nonempty(env, var)
        .map(|v| {
            f(&v).map_err(|reason| ConfigError::Env {
                var,
                kind,
                value: v.clone(),
                reason,
            })
        })
        .transpose()
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
