//! Configuration: the Go program's `FAS_*` environment variables, then the YAML file (if any)
//! on top, with the Go program's defaults, precedence and validation messages. Each validation
//! message starts with the Go program's exact text and goes on with what to change.

mod file;

use std::fmt;
use std::path::Path;
use std::time::Duration;

use crate::duration::parse_positive;
use crate::secret::Secret;

pub const DEFAULT_CONCURRENCY: usize = 1;
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_APP_LIST_REFRESH_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_PROCESS_GROUP: &str = "app";
pub const DEFAULT_ACTION_CONCURRENCY: usize = 4;
pub const DEFAULT_METRICS_ADDR: &str = ":9090";
pub const DEFAULT_FLAPS_BASE_URL: &str = "https://api.machines.dev";
pub const DEFAULT_API_BASE_URL: &str = "https://api.fly.io";
pub const DEFAULT_DEPLOY_GUARD_FAIL_OPEN_AFTER: Duration = Duration::from_secs(300);
pub const DEFAULT_TEMPORAL_NAMESPACE: &str = "default";

/// Everything the autoscaler is told, after environment and file are merged.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub app_name: String,
    pub org: String,
    pub regions: Vec<String>,
    pub process_group: String,
    pub created_machine_count: String,
    pub min_created_machine_count: String,
    pub max_created_machine_count: String,
    pub initial_machine_state: String,
    pub started_machine_count: String,
    pub min_started_machine_count: String,
    pub max_started_machine_count: String,
    pub concurrency: usize,
    pub interval: Duration,
    pub timeout: Duration,
    pub app_list_refresh_interval: Duration,
    pub api_token: Secret,
    pub verbose: bool,
    pub metric_collectors: Vec<CollectorConfig>,
    // Beyond the Go program (README: "Differences from the Go version").
    pub action_concurrency: usize,
    pub metrics_addr: String,
    pub log_format: LogFormat,
    pub flaps_base_url: String,
    pub api_base_url: String,
    pub deploy_guard: bool,
    pub deploy_guard_fail_open_after: Duration,
}

/// One `metric-collectors[i]` entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CollectorConfig {
    pub kind: String,
    pub metric_name: String,
    pub query: String,
    pub address: String,
    pub token: Secret,
    pub namespace: String,
    pub cert_data: String,
    pub key_data: Secret,
    pub ca_data: String,
    pub api_key: Secret,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    fn parse(s: &str) -> Option<LogFormat> {
        match s {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// Minimum and maximum expressions of one machine count (blank = not set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountExprs<'a> {
    pub min: &'a str,
    pub max: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// An environment variable that does not parse; the value is shown (only non-secret
    /// variables are ever parsed).
    Env {
        var: &'static str,
        kind: &'static str,
        value: String,
        reason: String,
    },
    /// The config file cannot be read or decoded.
    File { path: String, message: String },
    /// A validation rule failed: the Go program's message, then what to do.
    Invalid { message: String, hint: String },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Env {
                var,
                kind,
                value,
                reason,
            } => write!(f, "cannot parse {var} as {kind}: {value:?}: {reason}"),
            ConfigError::File { path, message } => write!(f, "config file {path:?}: {message}"),
            ConfigError::Invalid { message, hint } if hint.is_empty() => f.write_str(message),
            ConfigError::Invalid { message, hint } => write!(f, "{message}: {hint}"),
        }
    }
}

impl std::error::Error for ConfigError {}

fn invalid(message: impl Into<String>, hint: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        message: message.into(),
        hint: hint.into(),
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            app_name: String::new(),
            org: String::new(),
            regions: Vec::new(),
            process_group: DEFAULT_PROCESS_GROUP.to_string(),
            created_machine_count: String::new(),
            min_created_machine_count: String::new(),
            max_created_machine_count: String::new(),
            initial_machine_state: String::new(),
            started_machine_count: String::new(),
            min_started_machine_count: String::new(),
            max_started_machine_count: String::new(),
            concurrency: DEFAULT_CONCURRENCY,
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            app_list_refresh_interval: DEFAULT_APP_LIST_REFRESH_INTERVAL,
            api_token: Secret::default(),
            verbose: false,
            metric_collectors: Vec::new(),
            action_concurrency: DEFAULT_ACTION_CONCURRENCY,
            metrics_addr: DEFAULT_METRICS_ADDR.to_string(),
            log_format: LogFormat::Text,
            flaps_base_url: DEFAULT_FLAPS_BASE_URL.to_string(),
            api_base_url: DEFAULT_API_BASE_URL.to_string(),
            deploy_guard: true,
            deploy_guard_fail_open_after: DEFAULT_DEPLOY_GUARD_FAIL_OPEN_AFTER,
        }
    }
}

/// Reads one environment variable; tests pass a map instead of the process environment.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment as an [`EnvLookup`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Config {
    /// Environment first, then the file (keys present in the file win), then validation.
    pub fn load(path: Option<&Path>, env: EnvLookup) -> Result<Config, ConfigError> {
        let mut config = Config::from_env(env)?;
        if let Some(path) = path {
            config.overlay_file(path, env)?;
        }
        config.validate()?;
        Ok(config)
    }

    /// The environment pass (Go: `NewConfigFromEnv`).
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
        if let Some(group) = env("FAS_PROCESS_GROUP").filter(|v| !v.is_empty()) {
            c.process_group = group;
        }
        if let Some(v) = nonempty(env, "FAS_CONCURRENCY") {
            c.concurrency = parse_env_int(&v, "FAS_CONCURRENCY")?.max(1) as usize;
        }
        if let Some(v) = nonempty(env, "FAS_ACTION_CONCURRENCY") {
            c.action_concurrency = parse_env_int(&v, "FAS_ACTION_CONCURRENCY")?.max(1) as usize;
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
                *slot = parse_bool(&v).ok_or_else(|| ConfigError::Env {
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
        if let Some(v) = nonempty(env, "FAS_METRICS_ADDR") {
            c.metrics_addr = v;
        }
        if let Some(v) = nonempty(env, "FLY_FLAPS_BASE_URL") {
            c.flaps_base_url = v;
        }
        if let Some(v) = nonempty(env, "FLY_API_BASE_URL") {
            c.api_base_url = v;
        }

        if let Some(address) = nonempty(env, "FAS_PROMETHEUS_ADDRESS") {
            c.metric_collectors.push(CollectorConfig {
                kind: "prometheus".to_string(),
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
                kind: "temporal".to_string(),
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

    /// The file pass: `${VAR}` expansion of the whole text, then every key present in the file
    /// replaces the value from the environment.
    pub fn overlay_file(&mut self, path: &Path, env: EnvLookup) -> Result<(), ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: shown.clone(),
            message: format!("cannot read: {e}"),
        })?;
        file::overlay(self, &text, env).map_err(|message| ConfigError::File {
            path: shown,
            message,
        })
    }

    /// Minimum and maximum created-count expressions (the single form sets both).
    pub fn created_counts(&self) -> CountExprs<'_> {
        count_exprs(
            &self.created_machine_count,
            &self.min_created_machine_count,
            &self.max_created_machine_count,
        )
    }

    /// Minimum and maximum started-count expressions (the single form sets both).
    pub fn started_counts(&self) -> CountExprs<'_> {
        count_exprs(
            &self.started_machine_count,
            &self.min_started_machine_count,
            &self.max_started_machine_count,
        )
    }

    /// Whether `app-name` is a pattern over the organization's apps.
    pub fn is_wildcard(&self) -> bool {
        self.app_name.contains('*')
    }

    /// The Go program's validation, in its order and with its messages, then the checks it
    /// lacked (reported at start-up here instead of failing every cycle).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.app_name.is_empty() {
            return Err(invalid(
                "app name required",
                "set app-name in the config file or FAS_APP_NAME",
            ));
        }
        let set = |s: &str| !s.trim().is_empty();
        let counts = [
            &self.created_machine_count,
            &self.min_created_machine_count,
            &self.max_created_machine_count,
            &self.started_machine_count,
            &self.min_started_machine_count,
            &self.max_started_machine_count,
        ];
        if !counts.iter().any(|s| set(s)) {
            return Err(invalid(
                "must define either created machine count or started machine count",
                "set started-machine-count (FAS_STARTED_MACHINE_COUNT) and/or \
                 created-machine-count (FAS_CREATED_MACHINE_COUNT), e.g. \"ceil(queue_depth / 10)\"",
            ));
        }
        for (word, single, min, max) in [
            (
                "created",
                &self.created_machine_count,
                &self.min_created_machine_count,
                &self.max_created_machine_count,
            ),
            (
                "started",
                &self.started_machine_count,
                &self.min_started_machine_count,
                &self.max_started_machine_count,
            ),
        ] {
            let key = |prefix: &str| format!("{prefix}{word}-machine-count");
            if set(single) && (set(min) || set(max)) {
                return Err(invalid(
                    format!("cannot define {word} machine count and min/max {word} machine count"),
                    format!(
                        "remove either {} or both {} and {}",
                        key(""),
                        key("min-"),
                        key("max-")
                    ),
                ));
            }
            if set(min) && !set(max) {
                return Err(invalid(
                    format!(
                        "max {word} machine count required if min {word} machine count is defined"
                    ),
                    format!("set {} too", key("max-")),
                ));
            }
            if set(max) && !set(min) {
                return Err(invalid(
                    format!(
                        "min {word} machine count required if max {word} machine count is defined"
                    ),
                    format!("set {} too", key("min-")),
                ));
            }
        }
        if self.initial_machine_state != "started" && self.initial_machine_state != "stopped" {
            return Err(invalid(
                "initial machine state must be either 'started' or 'stopped'",
                format!(
                    "initial-machine-state (FAS_INITIAL_MACHINE_STATE) is {:?}",
                    self.initial_machine_state
                ),
            ));
        }
        for (i, c) in self.metric_collectors.iter().enumerate() {
            c.validate().map_err(|(message, hint)| {
                invalid(format!("metric-collectors[{i}]: {message}"), hint)
            })?;
            if let Some(j) = self.metric_collectors[..i]
                .iter()
                .position(|other| other.metric_name == c.metric_name)
            {
                return Err(invalid(
                    format!(
                        "metric-collectors[{i}]: metric name {:?} is already used by metric-collectors[{j}]",
                        c.metric_name
                    ),
                    "give every collector its own metric-name",
                ));
            }
        }
        Ok(())
    }

    /// What `serve` needs beyond `eval`: a token and, for a wildcard, the organization.
    pub fn validate_for_serve(&self) -> Result<(), ConfigError> {
        if self.is_wildcard() && self.org.is_empty() {
            return Err(invalid(
                "organization required if app name uses a wildcard",
                format!(
                    "app-name {:?} contains '*'; set org (FAS_ORG) to the organization slug",
                    self.app_name
                ),
            ));
        }
        if self.api_token.is_empty() {
            return Err(invalid(
                "cannot create fly client: api token required",
                "set FAS_API_TOKEN (or api-token) to a token from `fly tokens create deploy -a <app>`",
            ));
        }
        Ok(())
    }
}

impl CollectorConfig {
    fn validate(&self) -> Result<(), (String, String)> {
        let fail = |m: &str, h: &str| Err((m.to_string(), h.to_string()));
        if self.metric_name.is_empty() {
            return fail(
                "metric name required",
                "set metric-name: the variable name expressions use for this value",
            );
        }
        match self.kind.as_str() {
            "" => fail("type required", "set type to prometheus or temporal"),
            "prometheus" => {
                if self.address.is_empty() {
                    return fail(
                        "prometheus address required",
                        "set address (FAS_PROMETHEUS_ADDRESS), e.g. https://api.fly.io/prometheus/<org>",
                    );
                }
                if self.query.is_empty() {
                    return fail(
                        "prometheus query required",
                        "set query (FAS_PROMETHEUS_QUERY), e.g. sum(queue_depth)",
                    );
                }
                check_url("prometheus address", &self.address)
            }
            "temporal" => {
                if self.address.is_empty() {
                    return fail(
                        "temporal address required",
                        "set address (FAS_TEMPORAL_ADDRESS): host:port for gRPC, e.g. localhost:7233, or the HTTP API URL, e.g. http://localhost:7243",
                    );
                }
                let url = ["http://", "https://"]
                    .iter()
                    .any(|s| self.address.starts_with(s));
                if !url {
                    // A bare host:port is gRPC, as in the Go program.
                    crate::grpc::Target::parse(&self.address)
                        .map_err(|e| (format!("invalid temporal address {:?}", self.address), e))?;
                }
                if self.cert_data.is_empty() != self.key_data.is_empty() {
                    return fail(
                        "temporal TLS needs both cert-data and key-data",
                        "set both (TEMPORAL_TLS_CERT_DATA and TEMPORAL_TLS_KEY_DATA) or neither",
                    );
                }
                Ok(())
            }
            other => Err((
                format!("invalid type: {other:?}"),
                "use prometheus or temporal".to_string(),
            )),
        }
    }

    /// The namespace to count in (the Go program required one; `default` when unset).
    pub fn namespace_or_default(&self) -> &str {
        if self.namespace.is_empty() {
            DEFAULT_TEMPORAL_NAMESPACE
        } else {
            &self.namespace
        }
    }
}

fn check_url(what: &str, url: &str) -> Result<(), (String, String)> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err((
            format!("invalid {what} {url:?}"),
            "it must start with http:// or https://".to_string(),
        ))
    }
}

fn count_exprs<'a>(single: &'a str, min: &'a str, max: &'a str) -> CountExprs<'a> {
    if single.trim().is_empty() {
        CountExprs { min, max }
    } else {
        CountExprs {
            min: single,
            max: single,
        }
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

/// Booleans as YAML 1.1 and most shells spell them.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "y" | "on" => Some(true),
        "false" | "0" | "no" | "n" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
