//! Configuration: the Go program's `FAS_*` environment variables, then the YAML file (if any)
//! on top, with the Go program's defaults, precedence and validation messages. Each validation
//! message starts with the Go program's exact text and goes on with what to change.

mod env;
mod file;
mod validate;

use std::fmt;
use std::path::Path;
use std::time::Duration;

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
pub const DEFAULT_MAX_MACHINES: usize = 1000;

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
    /// The most machines one app may be scaled to, and the most actions of one reconcile.
    pub max_machines: usize,
}

/// A collector's `type`, read once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CollectorKind {
    /// No `type` given.
    #[default]
    Missing,
    Prometheus,
    Temporal,
    /// Anything else, as written (reported by validation).
    Other(String),
}

impl CollectorKind {
    pub fn parse(s: &str) -> CollectorKind {
        match s {
            "" => CollectorKind::Missing,
            "prometheus" => CollectorKind::Prometheus,
            "temporal" => CollectorKind::Temporal,
            other => CollectorKind::Other(other.to_string()),
        }
    }
}

/// One `metric-collectors[i]` entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CollectorConfig {
    pub kind: CollectorKind,
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
    /// JSON when stderr is not a terminal (a container, as the Go image logs), else text.
    Auto,
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

/// The state new machines are created in (`initial-machine-state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitialState {
    #[default]
    Started,
    /// Created without booting (`skip_launch`).
    Stopped,
}

impl InitialState {
    fn parse(s: &str) -> Option<InitialState> {
        match s {
            "started" => Some(InitialState::Started),
            "stopped" => Some(InitialState::Stopped),
            _ => None,
        }
    }
}

/// The two machine counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    Created,
    Started,
}

impl Count {
    pub fn word(self) -> &'static str {
        match self {
            Count::Created => "created",
            Count::Started => "started",
        }
    }
}

/// One expression of a count and the config key it comes from (blank = not set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountExpr<'a> {
    pub key: String,
    pub source: &'a str,
}

/// Minimum and maximum expressions of one count; the single form (`created-machine-count`)
/// gives both, from the same key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountExprs<'a> {
    pub min: CountExpr<'a>,
    pub max: CountExpr<'a>,
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
            log_format: LogFormat::Auto,
            flaps_base_url: DEFAULT_FLAPS_BASE_URL.to_string(),
            api_base_url: DEFAULT_API_BASE_URL.to_string(),
            deploy_guard: true,
            deploy_guard_fail_open_after: DEFAULT_DEPLOY_GUARD_FAIL_OPEN_AFTER,
            max_machines: DEFAULT_MAX_MACHINES,
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

    /// The file pass: `${VAR}` expansion of the whole text, then every key present in the file
    /// replaces the value from the environment.
    pub fn overlay_file(&mut self, path: &Path, env: EnvLookup) -> Result<(), ConfigError> {
        let shown = path.display().to_string();
        let text = file::read(path).map_err(|message| ConfigError::File {
            path: shown.clone(),
            message,
        })?;
        file::overlay(self, &text, env).map_err(|message| ConfigError::File {
            path: shown,
            message,
        })
    }

    /// The single, min and max expressions of one count, as configured.
    fn count_fields(&self, count: Count) -> [&str; 3] {
        match count {
            Count::Created => [
                &self.created_machine_count,
                &self.min_created_machine_count,
                &self.max_created_machine_count,
            ],
            Count::Started => [
                &self.started_machine_count,
                &self.min_started_machine_count,
                &self.max_started_machine_count,
            ],
        }
    }

    /// The expressions of one count, with their keys; the single form sets min and max.
    pub fn count_exprs(&self, count: Count) -> CountExprs<'_> {
        let [single, min, max] = self.count_fields(count);
        let word = count.word();
        let expr = |prefix: &str, source| CountExpr {
            key: format!("{prefix}{word}-machine-count"),
            source,
        };
        if single.trim().is_empty() {
            CountExprs {
                min: expr("min-", min),
                max: expr("max-", max),
            }
        } else {
            CountExprs {
                min: expr("", single),
                max: expr("", single),
            }
        }
    }

    /// Whether `app-name` is a pattern over the organization's apps.
    pub fn is_wildcard(&self) -> bool {
        self.app_name.contains('*')
    }

    /// `initial-machine-state`, once validated.
    pub fn initial_state(&self) -> InitialState {
        InitialState::parse(&self.initial_machine_state).unwrap_or_default()
    }
}

impl CollectorConfig {
    /// The namespace to count in (the Go program required one; `default` when unset).
    pub fn namespace_or_default(&self) -> &str {
        if self.namespace.is_empty() {
            DEFAULT_TEMPORAL_NAMESPACE
        } else {
            &self.namespace
        }
    }
}

/// Booleans as YAML 1.1 and most shells spell them.
fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "y" | "on" => Some(true),
        "false" | "0" | "no" | "n" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
