//! Validation: the Go program's rules in its order and with its messages (each followed by
//! what to change), then the checks it lacked, reported at start-up instead of failing every
//! cycle.

use std::time::Duration;

use super::{
    CollectorConfig, CollectorKind, Config, ConfigError, Count, GroupConfig, InitialState, Step,
};
use crate::collector;
use crate::duration::format_go;
use crate::machines::MAX_LISTED_MACHINES;
use crate::redis_client;

/// Bounds on the worker pools: one thread each, so a typo must not become 100,000 threads.
const MAX_CONCURRENCY: usize = 1024;
const MAX_ACTION_CONCURRENCY: usize = 64;
/// A shorter lease leaves no room for a renewal that takes a moment.
const MIN_LEADER_TTL: Duration = Duration::from_secs(2);
/// Below this an interval burns CPU and a timeout fails every request.
const MIN_PERIOD: Duration = Duration::from_millis(100);
/// Stabilization windows: Kubernetes HPA's limit too.
const MAX_WINDOW: Duration = Duration::from_secs(3600);
const MAX_PERCENT: u32 = 1000;

fn invalid(message: impl Into<String>, hint: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        message: message.into(),
        hint: hint.into(),
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.app_name.is_empty() {
            return Err(invalid(
                "app name required",
                "set app-name in the config file or FAS_APP_NAME",
            ));
        }
        if self.process_groups.is_empty() {
            self.group.validate("")?;
        } else {
            if let Some(group) = self.process_group.as_deref().filter(|g| !g.is_empty()) {
                return Err(invalid(
                    format!("process-group {group:?} is set together with process-groups"),
                    "name the groups under process-groups only; remove process-group (FAS_PROCESS_GROUP)",
                ));
            }
            for (name, group) in &self.process_groups {
                group.validate(&format!("process-groups[{name:?}]: "))?;
            }
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
        let has_prometheus = self
            .metric_collectors
            .iter()
            .any(|c| c.kind == CollectorKind::Prometheus);
        for (name, group) in self.groups() {
            if !group.stop_priority_query.is_empty() && !has_prometheus {
                return Err(invalid(
                    format!(
                        "{}stop-priority-query needs a prometheus collector",
                        group_prefix(name, self)
                    ),
                    "it is sent to the first prometheus collector's address; add one, or remove stop-priority-query (FAS_STOP_PRIORITY_QUERY)",
                ));
            }
        }
        self.validate_leader_election()?;
        self.validate_limits()
    }

    fn validate_leader_election(&self) -> Result<(), ConfigError> {
        let url = self.leader_election_url.expose();
        if url.is_empty() {
            return Ok(());
        }
        redis_client::check_url(url)
            .map_err(|e| invalid("invalid leader-election-url (FAS_LEADER_ELECTION_URL)", e))?;
        if self.leader_election_ttl < MIN_LEADER_TTL {
            return Err(invalid(
                format!(
                    "leader-election-ttl {} is too short",
                    format_go(self.leader_election_ttl)
                ),
                format!(
                    "set leader-election-ttl (FAS_LEADER_ELECTION_TTL) to at least {}",
                    format_go(MIN_LEADER_TTL)
                ),
            ));
        }
        Ok(())
    }

    /// Bounds the Go program lacked: pools, periods and the machine bound.
    fn validate_limits(&self) -> Result<(), ConfigError> {
        for (key, var, value, max) in [
            (
                "concurrency",
                "FAS_CONCURRENCY",
                self.concurrency,
                MAX_CONCURRENCY,
            ),
            (
                "action-concurrency",
                "FAS_ACTION_CONCURRENCY",
                self.action_concurrency,
                MAX_ACTION_CONCURRENCY,
            ),
            (
                "max-machines",
                "FAS_MAX_MACHINES",
                self.max_machines,
                MAX_LISTED_MACHINES,
            ),
        ] {
            if value > max {
                return Err(invalid(
                    format!("{key} {value} is too large"),
                    format!("set {key} ({var}) to at most {max}"),
                ));
            }
        }
        for (key, var, value) in [
            ("interval", "FAS_INTERVAL", self.interval),
            ("timeout", "FAS_TIMEOUT", self.timeout),
        ] {
            if value < MIN_PERIOD {
                return Err(invalid(
                    format!("{key} {} is too short", format_go(value)),
                    format!("set {key} ({var}) to at least {}", format_go(MIN_PERIOD)),
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

/// `process-groups["web"]: ` for a message about a group, empty without process groups.
fn group_prefix(name: &str, config: &Config) -> String {
    if config.process_groups.is_empty() {
        String::new()
    } else {
        format!("process-groups[{name:?}]: ")
    }
}

impl GroupConfig {
    /// The Go program's count and state rules, then the scale controls; `prefix` names the
    /// process group in messages.
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let set = |s: &str| !s.trim().is_empty();
        if !self.has_counts() {
            return Err(invalid(
                format!(
                    "{prefix}must define either created machine count or started machine count"
                ),
                "set started-machine-count (FAS_STARTED_MACHINE_COUNT) and/or \
                 created-machine-count (FAS_CREATED_MACHINE_COUNT), e.g. \"ceil(queue_depth / 10)\"",
            ));
        }
        for count in [Count::Created, Count::Started] {
            let word = count.word();
            let [single, min, max] = self.count_fields(count);
            let key = |prefix: &str| format!("{prefix}{word}-machine-count");
            if set(single) && (set(min) || set(max)) {
                return Err(invalid(
                    format!(
                        "{prefix}cannot define {word} machine count and min/max {word} machine count"
                    ),
                    format!(
                        "remove either {} or both {} and {}",
                        key(""),
                        key("min-"),
                        key("max-")
                    ),
                ));
            }
            for (have, lack, have_word, lack_word) in
                [(min, max, "min", "max"), (max, min, "max", "min")]
            {
                if set(have) && !set(lack) {
                    return Err(invalid(
                        format!(
                            "{prefix}{lack_word} {word} machine count required if {have_word} {word} machine count is defined"
                        ),
                        format!("set {} too", key(&format!("{lack_word}-"))),
                    ));
                }
            }
        }
        if InitialState::parse(&self.initial_machine_state).is_none() {
            return Err(invalid(
                format!("{prefix}initial machine state must be either 'started' or 'stopped'"),
                format!(
                    "initial-machine-state (FAS_INITIAL_MACHINE_STATE) is {:?}",
                    self.initial_machine_state
                ),
            ));
        }
        self.validate_controls(prefix)
    }

    fn validate_controls(&self, prefix: &str) -> Result<(), ConfigError> {
        for (key, var, window) in [
            (
                "scale-up-stabilization",
                "FAS_SCALE_UP_STABILIZATION",
                self.scale_up_stabilization,
            ),
            (
                "scale-down-stabilization",
                "FAS_SCALE_DOWN_STABILIZATION",
                self.scale_down_stabilization,
            ),
        ] {
            if window > MAX_WINDOW {
                return Err(invalid(
                    format!("{prefix}{key} {} is too long", format_go(window)),
                    format!("set {key} ({var}) to at most {}", format_go(MAX_WINDOW)),
                ));
            }
        }
        for (key, var, step) in [
            ("max-scale-up", "FAS_MAX_SCALE_UP", self.max_scale_up),
            ("max-scale-down", "FAS_MAX_SCALE_DOWN", self.max_scale_down),
        ] {
            if let Some(Step::Percent(p)) =
                step.filter(|s| matches!(s, Step::Percent(p) if *p > MAX_PERCENT))
            {
                return Err(invalid(
                    format!("{prefix}{key} {p}% is too large"),
                    format!("set {key} ({var}) to at most {MAX_PERCENT}%, or to a count"),
                ));
            }
        }
        let fallback_counts = self.fallback_created_machine_count.is_some()
            || self.fallback_started_machine_count.is_some();
        if self.fallback_after > 0 && !fallback_counts {
            return Err(invalid(
                format!("{prefix}fallback-after is set without a fallback count"),
                "set fallback-started-machine-count and/or fallback-created-machine-count \
                 (FAS_FALLBACK_STARTED_MACHINE_COUNT, FAS_FALLBACK_CREATED_MACHINE_COUNT)",
            ));
        }
        if self.fallback_after == 0 && fallback_counts {
            return Err(invalid(
                format!("{prefix}a fallback count is set without fallback-after"),
                "set fallback-after (FAS_FALLBACK_AFTER) to the number of failed collections after which it applies, e.g. 3",
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
        match &self.kind {
            CollectorKind::Missing => fail(
                "type required",
                "set type to prometheus, temporal, http or redis",
            ),
            CollectorKind::Prometheus => {
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
            CollectorKind::Temporal => {
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
            CollectorKind::Http => self.validate_http(),
            CollectorKind::Redis => self.validate_redis(),
            CollectorKind::Other(other) => Err((
                format!("invalid type: {other:?}"),
                "use prometheus, temporal, http or redis".to_string(),
            )),
        }
    }
}

impl CollectorConfig {
    /// Keys of another type that a user may write for `url`.
    fn refuse_other_keys(&self) -> Result<(), (String, String)> {
        let kind = self.kind.as_str();
        if !self.address.is_empty() {
            return Err((
                format!("address is not a key of type {kind}"),
                "write the endpoint as url".to_string(),
            ));
        }
        if !self.query.is_empty() {
            return Err((
                format!("query is not a key of type {kind}"),
                match self.kind {
                    CollectorKind::Redis => "write the commands as commands: [LLEN queue]",
                    _ => "pick the value with json-pointer",
                }
                .to_string(),
            ));
        }
        Ok(())
    }

    fn validate_http(&self) -> Result<(), (String, String)> {
        self.refuse_other_keys()?;
        let url = self.url.expose();
        if url.is_empty() {
            return Err((
                "http url required".to_string(),
                "set url, e.g. http://nats.internal:8222/jsz?consumers=true".to_string(),
            ));
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            // The URL is not shown: it may carry a key in its query string.
            return Err((
                "invalid http url".to_string(),
                "url must start with http:// or https://".to_string(),
            ));
        }
        let method = collector::parse_method(&self.method)
            .map_err(|e| (format!("invalid method {:?}", self.method), e))?;
        if method == "GET" && !self.body.is_empty() {
            return Err((
                "body is set for a GET request".to_string(),
                "set method: POST to send it, or remove body".to_string(),
            ));
        }
        for (name, value) in &self.headers {
            collector::check_header(name, value).map_err(|e| {
                (
                    format!("invalid header {name:?}"),
                    format!("{e}; header values are sent as written"),
                )
            })?;
        }
        if self.json_pointer.is_empty() {
            return Err((
                "json-pointer required".to_string(),
                "set json-pointer to the value to read, e.g. /jobs/scheduled (RFC 6901; * matches every element)".to_string(),
            ));
        }
        collector::JsonPointer::parse(&self.json_pointer)
            .map_err(|e| (format!("invalid json-pointer {:?}", self.json_pointer), e))?;
        collector::Aggregate::parse(&self.aggregate)
            .map_err(|e| (format!("invalid aggregate {:?}", self.aggregate), e))?;
        Ok(())
    }

    fn validate_redis(&self) -> Result<(), (String, String)> {
        self.refuse_other_keys()?;
        let url = self.url.expose();
        if url.is_empty() {
            return Err((
                "redis url required".to_string(),
                "set url, e.g. redis://default:password@my-redis.upstash.io:6379 or ${REDIS_URL}"
                    .to_string(),
            ));
        }
        // The URL is never shown: it holds the password.
        redis_client::check_url(url).map_err(|e| ("invalid redis url".to_string(), e))?;
        if self.commands.is_empty() {
            return Err((
                "redis commands required".to_string(),
                "set commands to one or more counting commands, e.g. [LLEN queue:default]"
                    .to_string(),
            ));
        }
        for (i, command) in self.commands.iter().enumerate() {
            collector::RedisCommand::parse(command)
                .map_err(|e| (format!("invalid commands[{i}] {command:?}"), e))?;
        }
        if !self.ca_data.trim().is_empty() && !url.starts_with("rediss://") {
            return Err((
                "ca-data is set for a redis:// url".to_string(),
                "use rediss:// (TLS) for ca-data to apply, or remove ca-data".to_string(),
            ));
        }
        Ok(())
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
