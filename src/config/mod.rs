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
pub const DEFAULT_LEADER_ELECTION_TTL: Duration = Duration::from_secs(15);

/// Everything the autoscaler is told, after environment and file are merged.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub app_name: String,
    pub org: String,
    /// `process-group` / `FAS_PROCESS_GROUP` when set (`None`: the Go default, `app`).
    pub process_group: Option<String>,
    /// The per-group keys at top level: the one group's settings, or with `process_groups`
    /// every group's defaults (count expressions excepted).
    pub group: GroupConfig,
    /// `process-groups`: several groups of one app, each with its own expressions.
    pub process_groups: Vec<(String, GroupConfig)>,
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
    /// `time-offset`: the zone of the expressions' time variables, seconds east of UTC.
    pub time_offset: i32,
    /// `leader-election-url`: the Redis holding the lock (empty = no election).
    pub leader_election_url: Secret,
    /// `leader-election-key` (empty = derived from org and app name, see `leader_key`).
    pub leader_election_key: String,
    pub leader_election_ttl: Duration,
}

/// The keys one process group may set.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupConfig {
    pub created_machine_count: String,
    pub min_created_machine_count: String,
    pub max_created_machine_count: String,
    pub started_machine_count: String,
    pub min_started_machine_count: String,
    pub max_started_machine_count: String,
    pub regions: Vec<String>,
    pub initial_machine_state: String,
    pub scale_up_stabilization: Duration,
    pub scale_down_stabilization: Duration,
    pub max_scale_up: Option<Step>,
    pub max_scale_down: Option<Step>,
    pub cooldown: Duration,
    /// Consecutive failed collections before the fallback counts apply; 0 = never.
    pub fallback_after: u32,
    pub fallback_created_machine_count: Option<u32>,
    pub fallback_started_machine_count: Option<u32>,
    pub stop_order: StopOrder,
    pub stop_priority_query: String,
    pub scale_down_method: ScaleDownMethod,
}

impl Default for GroupConfig {
    fn default() -> GroupConfig {
        GroupConfig {
            created_machine_count: String::new(),
            min_created_machine_count: String::new(),
            max_created_machine_count: String::new(),
            started_machine_count: String::new(),
            min_started_machine_count: String::new(),
            max_started_machine_count: String::new(),
            regions: Vec::new(),
            initial_machine_state: "started".to_string(),
            scale_up_stabilization: Duration::ZERO,
            scale_down_stabilization: Duration::ZERO,
            max_scale_up: None,
            max_scale_down: None,
            cooldown: Duration::ZERO,
            fallback_after: 0,
            fallback_created_machine_count: None,
            fallback_started_machine_count: None,
            stop_order: StopOrder::Id,
            stop_priority_query: String::new(),
            scale_down_method: ScaleDownMethod::Stop,
        }
    }
}

/// A step limit: a number of machines, or a percentage of the created count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Count(u32),
    Percent(u32),
}

impl Step {
    /// `4` or `50%`.
    pub fn parse(s: &str) -> Result<Step, String> {
        let s = s.trim();
        let (number, percent) = match s.strip_suffix('%') {
            Some(n) => (n.trim(), true),
            None => (s, false),
        };
        let n: u32 =
            number.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                format!("{s:?} is not a count such as 4 or a percentage such as 50%")
            })?;
        Ok(if percent {
            Step::Percent(n)
        } else {
            Step::Count(n)
        })
    }
}

impl fmt::Display for Step {
    /// As written in the config: `4` or `50%`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Count(n) => write!(f, "{n}"),
            Step::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// `stop-order`: which started machines go first on scale-down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOrder {
    /// Lowest machine ids first (the Go program's order).
    Id,
    /// Latest `created_at` first.
    Newest,
    Oldest,
}

impl StopOrder {
    pub fn parse(s: &str) -> Result<StopOrder, String> {
        match s {
            "id" => Ok(StopOrder::Id),
            "newest" => Ok(StopOrder::Newest),
            "oldest" => Ok(StopOrder::Oldest),
            other => Err(format!(
                "{other:?} is not a stop order; use id, newest or oldest"
            )),
        }
    }
}

/// `scale-down-method`: what happens to started machines that are too many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleDownMethod {
    Stop,
    /// Suspended machines resume from a memory snapshot, faster than a cold boot.
    Suspend,
}

impl ScaleDownMethod {
    pub fn parse(s: &str) -> Result<ScaleDownMethod, String> {
        match s {
            "stop" => Ok(ScaleDownMethod::Stop),
            "suspend" => Ok(ScaleDownMethod::Suspend),
            other => Err(format!(
                "{other:?} is not a scale-down method; use stop or suspend"
            )),
        }
    }
}

/// `time-offset`: `Z`, `UTC` or `±HH:MM`, as seconds east of UTC.
pub fn parse_time_offset(s: &str) -> Result<i32, String> {
    let s = s.trim();
    if s.is_empty() || s == "Z" || s.eq_ignore_ascii_case("utc") {
        return Ok(0);
    }
    let bad = || format!("{s:?} is not a UTC offset; write it as -05:00 or +01:00");
    let (sign, rest) = match s.as_bytes()[0] {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 14 || m > 59 || h < 0 || m < 0 {
        return Err(bad());
    }
    Ok(sign * (h * 3600 + m * 60))
}

/// A collector's `type`, read once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CollectorKind {
    /// No `type` given.
    #[default]
    Missing,
    Prometheus,
    Temporal,
    /// Any JSON endpoint: a value picked with a JSON pointer.
    Http,
    /// Counting commands on a Redis server.
    Redis,
    /// Anything else, as written (reported by validation).
    Other(String),
}

impl CollectorKind {
    /// The `type` as written.
    pub fn as_str(&self) -> &str {
        match self {
            CollectorKind::Missing => "",
            CollectorKind::Prometheus => "prometheus",
            CollectorKind::Temporal => "temporal",
            CollectorKind::Http => "http",
            CollectorKind::Redis => "redis",
            CollectorKind::Other(s) => s,
        }
    }

    pub fn parse(s: &str) -> CollectorKind {
        match s {
            "" => CollectorKind::Missing,
            "prometheus" => CollectorKind::Prometheus,
            "temporal" => CollectorKind::Temporal,
            "http" => CollectorKind::Http,
            "redis" => CollectorKind::Redis,
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
    /// `url` of `http` and `redis`: secret, as it may carry a password or an API key.
    pub url: Secret,
    /// `method` of `http` (empty = GET).
    pub method: String,
    /// `body` of an `http` POST.
    pub body: String,
    /// `headers` of `http`: names as written, values secret.
    pub headers: Vec<(String, Secret)>,
    pub json_pointer: String,
    /// `aggregate` of `http` (empty = sum).
    pub aggregate: String,
    /// `commands` of `redis`, as written.
    pub commands: Vec<String>,
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
            process_group: None,
            group: GroupConfig::default(),
            process_groups: Vec::new(),
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
            time_offset: 0,
            leader_election_url: Secret::default(),
            leader_election_key: String::new(),
            leader_election_ttl: DEFAULT_LEADER_ELECTION_TTL,
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
        if !config.process_groups.is_empty() {
            let left: Vec<&str> = env::COUNT_VARS
                .iter()
                .copied()
                .filter(|v| env(v).is_some_and(|x| !x.trim().is_empty()))
                .collect();
            if !left.is_empty() {
                return Err(ConfigError::Invalid {
                    message: format!(
                        "{} set in the environment together with process-groups",
                        left.join(", ")
                    ),
                    hint: "with process-groups every count expression belongs under a group; unset these variables".to_string(),
                });
            }
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

    /// Whether `app-name` is a pattern over the organization's apps.
    pub fn is_wildcard(&self) -> bool {
        self.app_name.contains('*')
    }

    /// The leader election's lock key: `leader-election-key`, else one per organization and
    /// app-name, so two autoscalers of different apps never share a lock.
    pub fn leader_key(&self) -> String {
        if self.leader_election_key.is_empty() {
            format!("fly-autoscaler:leader:{}:{}", self.org, self.app_name)
        } else {
            self.leader_election_key.clone()
        }
    }

    /// The process groups to scale, each with its settings: the `process_groups`, else the
    /// one group of `process-group` (default `app`).
    pub fn groups(&self) -> Vec<(&str, &GroupConfig)> {
        if self.process_groups.is_empty() {
            let name = self
                .process_group
                .as_deref()
                .unwrap_or(DEFAULT_PROCESS_GROUP);
            vec![(name, &self.group)]
        } else {
            self.process_groups
                .iter()
                .map(|(name, g)| (name.as_str(), g))
                .collect()
        }
    }
}

impl GroupConfig {
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

    /// Whether any count expression is set.
    pub fn has_counts(&self) -> bool {
        [Count::Created, Count::Started]
            .iter()
            .any(|c| self.count_fields(*c).iter().any(|s| !s.trim().is_empty()))
    }

    /// Clears the count expressions (group defaults never carry them).
    fn without_counts(&self) -> GroupConfig {
        GroupConfig {
            created_machine_count: String::new(),
            min_created_machine_count: String::new(),
            max_created_machine_count: String::new(),
            started_machine_count: String::new(),
            min_started_machine_count: String::new(),
            max_started_machine_count: String::new(),
            ..self.clone()
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
