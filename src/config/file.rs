//! The YAML file: decoded strictly (unknown keys are errors naming the key and its line) into
//! optional fields, so that only the keys present in the file replace environment values.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::{
    CollectorConfig, CollectorKind, Config, EnvLookup, GroupConfig, LogFormat, ScaleDownMethod,
    Step, StopOrder, parse_time_offset,
};
use crate::duration::{parse_non_negative, parse_positive};
use crate::expand::expand;
use crate::secret::Secret;

/// The file's structs: the per-group keys are listed once and go both into a
/// `process-groups` entry and, as every group's defaults, into the top level (serde cannot
/// flatten a struct into one that denies unknown keys).
macro_rules! file_structs {
    (group { $($g:ident: $gt:ty,)* } top { $($t:ident: $tt:ty,)* }) => {
        #[derive(Deserialize, Default)]
        #[serde(deny_unknown_fields, rename_all = "kebab-case")]
        struct FileGroup {
            $($g: Option<$gt>,)*
        }

        #[derive(Deserialize, Default)]
        #[serde(deny_unknown_fields, rename_all = "kebab-case")]
        struct FileConfig {
            $($g: Option<$gt>,)*
            $($t: Option<$tt>,)*
        }

        impl FileConfig {
            /// The per-group keys given at top level.
            fn take_group(&mut self) -> FileGroup {
                FileGroup {
                    $($g: self.$g.take(),)*
                }
            }
        }
    };
}

file_structs! {
    group {
        created_machine_count: String,
        min_created_machine_count: String,
        max_created_machine_count: String,
        started_machine_count: String,
        min_started_machine_count: String,
        max_started_machine_count: String,
        regions: Vec<String>,
        initial_machine_state: String,
        scale_up_stabilization: Parsed<Duration>,
        scale_down_stabilization: Parsed<Duration>,
        max_scale_up: Parsed<Step>,
        max_scale_down: Parsed<Step>,
        cooldown: Parsed<Duration>,
        fallback_after: u32,
        fallback_created_machine_count: u32,
        fallback_started_machine_count: u32,
        stop_order: Parsed<StopOrder>,
        stop_priority_query: String,
        scale_down_method: Parsed<ScaleDownMethod>,
    }
    top {
        app_name: String,
        org: String,
        process_group: String,
        process_groups: BTreeMap<String, FileGroup>,
        concurrency: Count,
        interval: GoDuration,
        timeout: GoDuration,
        app_list_refresh_interval: GoDuration,
        api_token: String,
        verbose: YamlBool,
        metric_collectors: Vec<FileCollector>,
        action_concurrency: Count,
        metrics_addr: String,
        log_format: Parsed<LogFormat>,
        flaps_base_url: String,
        api_base_url: String,
        deploy_guard: YamlBool,
        deploy_guard_fail_open_after: GoDuration,
        max_machines: Count,
        time_offset: Parsed<TimeOffset>,
        leader_election_url: String,
        leader_election_key: String,
        leader_election_ttl: GoDuration,
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileCollector {
    #[serde(rename = "type")]
    kind: Option<String>,
    metric_name: Option<String>,
    query: Option<String>,
    address: Option<String>,
    token: Option<String>,
    namespace: Option<String>,
    cert_data: Option<String>,
    key_data: Option<String>,
    ca_data: Option<String>,
    api_key: Option<String>,
    url: Option<String>,
    method: Option<String>,
    body: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    json_pointer: Option<String>,
    aggregate: Option<String>,
    commands: Option<Vec<String>>,
}

/// Config files larger than this are refused before parsing (a real one is a few KB).
const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Nesting deeper than this is refused before parsing (the real config nests 3 levels; the
/// YAML parser takes seconds per 10,000 levels).
const MAX_NESTING: usize = 64;

/// Reads the file, refusing one too large or too deeply nested to be a config.
pub(super) fn read(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read: {e}"))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "the file is larger than {} KiB, which no config is; check the path",
            MAX_FILE_BYTES / 1024
        ));
    }
    if let Some(line) = too_deep(&text) {
        return Err(format!(
            "nesting deeper than {MAX_NESTING} levels at line {line}; a config nests 3 levels"
        ));
    }
    Ok(text)
}

/// The line at which YAML nesting passes [`MAX_NESTING`]: flow brackets outside quotes and
/// comments, plus block levels by indentation and `- ` items.
fn too_deep(text: &str) -> Option<usize> {
    let mut flow = 0usize;
    let mut indents: Vec<usize> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if flow == 0 && !trimmed.is_empty() && !trimmed.starts_with('#') {
            let indent = line.len() - trimmed.len();
            while indents.last().is_some_and(|&i| i > indent) {
                indents.pop();
            }
            if indents.last() != Some(&indent) {
                indents.push(indent);
            }
            let dashes = trimmed
                .as_bytes()
                .chunks(2)
                .take_while(|c| c == b"- ")
                .count();
            if indents.len() + dashes > MAX_NESTING {
                return Some(n + 1);
            }
        }
        let mut quote = None;
        for c in line.chars() {
            match (quote, c) {
                (None, '#') => break,
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, '[' | '{') => {
                    flow += 1;
                    if flow > MAX_NESTING {
                        return Some(n + 1);
                    }
                }
                (None, ']' | '}') => flow = flow.saturating_sub(1),
                _ => {}
            }
        }
    }
    None
}

/// Decodes `text` (after `${VAR}` expansion) on top of `config`. The error is one line.
pub(super) fn overlay(config: &mut Config, text: &str, env: EnvLookup) -> Result<(), String> {
    let expanded = expand(text, |name| match name {
        "$" => Some("$".to_string()),
        "APP_NAME" => None,
        _ => Some(env(name).unwrap_or_default()),
    });
    if expanded.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---"
    }) {
        return Err(
            "the file is empty; see testdata/fly-autoscaler.yml for an example".to_string(),
        );
    }
    let file: FileConfig = serde_yaml::from_str(&expanded).map_err(|e| describe_yaml_error(&e))?;
    file.apply(config)
}

impl FileConfig {
    fn apply(mut self, c: &mut Config) -> Result<(), String> {
        let group = self.take_group();
        let top_counts = group.sets_counts();
        group.apply(&mut c.group);
        if let Some(groups) = self.process_groups.take() {
            if let Some(key) = top_counts {
                return Err(format!(
                    "{key} is set at top level together with process-groups; move it under a group"
                ));
            }
            // Top-level values are every group's defaults, except the count expressions.
            let defaults = c.group.without_counts();
            c.process_groups = groups
                .into_iter()
                .map(|(name, g)| {
                    let mut config = defaults.clone();
                    g.apply(&mut config);
                    (name, config)
                })
                .collect();
        }
        for (value, slot) in [
            (self.app_name, &mut c.app_name),
            (self.org, &mut c.org),
            (self.metrics_addr, &mut c.metrics_addr),
            (self.flaps_base_url, &mut c.flaps_base_url),
            (self.api_base_url, &mut c.api_base_url),
            (self.leader_election_key, &mut c.leader_election_key),
        ] {
            if let Some(v) = value {
                *slot = v;
            }
        }
        if let Some(group) = self.process_group {
            c.process_group = Some(group);
        }
        for (value, slot) in [
            (self.interval, &mut c.interval),
            (self.timeout, &mut c.timeout),
            (
                self.app_list_refresh_interval,
                &mut c.app_list_refresh_interval,
            ),
            (
                self.deploy_guard_fail_open_after,
                &mut c.deploy_guard_fail_open_after,
            ),
            (self.leader_election_ttl, &mut c.leader_election_ttl),
        ] {
            if let Some(GoDuration(d)) = value {
                *slot = d;
            }
        }
        for (value, slot) in [
            (self.concurrency, &mut c.concurrency),
            (self.action_concurrency, &mut c.action_concurrency),
            (self.max_machines, &mut c.max_machines),
        ] {
            if let Some(Count(n)) = value {
                *slot = n;
            }
        }
        for (value, slot) in [
            (self.verbose, &mut c.verbose),
            (self.deploy_guard, &mut c.deploy_guard),
        ] {
            if let Some(YamlBool(b)) = value {
                *slot = b;
            }
        }
        if let Some(token) = self.api_token {
            c.api_token = Secret::new(token);
        }
        if let Some(url) = self.leader_election_url {
            c.leader_election_url = Secret::new(url);
        }
        if let Some(Parsed(f)) = self.log_format {
            c.log_format = f;
        }
        if let Some(Parsed(TimeOffset(o))) = self.time_offset {
            c.time_offset = o;
        }
        if let Some(collectors) = self.metric_collectors {
            c.metric_collectors = collectors
                .into_iter()
                .map(FileCollector::into_config)
                .collect();
        }
        Ok(())
    }
}

impl FileGroup {
    /// The first count-expression key this entry sets.
    fn sets_counts(&self) -> Option<&'static str> {
        [
            (&self.created_machine_count, "created-machine-count"),
            (&self.min_created_machine_count, "min-created-machine-count"),
            (&self.max_created_machine_count, "max-created-machine-count"),
            (&self.started_machine_count, "started-machine-count"),
            (&self.min_started_machine_count, "min-started-machine-count"),
            (&self.max_started_machine_count, "max-started-machine-count"),
        ]
        .into_iter()
        .find(|(v, _)| v.as_deref().is_some_and(|s| !s.trim().is_empty()))
        .map(|(_, key)| key)
    }

    fn apply(self, g: &mut GroupConfig) {
        for (value, slot) in [
            (self.created_machine_count, &mut g.created_machine_count),
            (
                self.min_created_machine_count,
                &mut g.min_created_machine_count,
            ),
            (
                self.max_created_machine_count,
                &mut g.max_created_machine_count,
            ),
            (self.started_machine_count, &mut g.started_machine_count),
            (
                self.min_started_machine_count,
                &mut g.min_started_machine_count,
            ),
            (
                self.max_started_machine_count,
                &mut g.max_started_machine_count,
            ),
            (self.initial_machine_state, &mut g.initial_machine_state),
            (self.stop_priority_query, &mut g.stop_priority_query),
        ] {
            if let Some(v) = value {
                *slot = v;
            }
        }
        if let Some(regions) = self.regions {
            g.regions = regions;
        }
        for (value, slot) in [
            (self.scale_up_stabilization, &mut g.scale_up_stabilization),
            (
                self.scale_down_stabilization,
                &mut g.scale_down_stabilization,
            ),
            (self.cooldown, &mut g.cooldown),
        ] {
            if let Some(Parsed(d)) = value {
                *slot = d;
            }
        }
        if let Some(Parsed(step)) = self.max_scale_up {
            g.max_scale_up = Some(step);
        }
        if let Some(Parsed(step)) = self.max_scale_down {
            g.max_scale_down = Some(step);
        }
        if let Some(n) = self.fallback_after {
            g.fallback_after = n;
        }
        if let Some(n) = self.fallback_created_machine_count {
            g.fallback_created_machine_count = Some(n);
        }
        if let Some(n) = self.fallback_started_machine_count {
            g.fallback_started_machine_count = Some(n);
        }
        if let Some(Parsed(o)) = self.stop_order {
            g.stop_order = o;
        }
        if let Some(Parsed(m)) = self.scale_down_method {
            g.scale_down_method = m;
        }
    }
}

impl FileCollector {
    fn into_config(self) -> CollectorConfig {
        let s = |v: Option<String>| v.unwrap_or_default();
        CollectorConfig {
            kind: CollectorKind::parse(&s(self.kind)),
            metric_name: s(self.metric_name),
            query: s(self.query),
            address: s(self.address),
            token: Secret::new(s(self.token)),
            namespace: s(self.namespace),
            cert_data: s(self.cert_data),
            key_data: Secret::new(s(self.key_data)),
            ca_data: s(self.ca_data),
            api_key: Secret::new(s(self.api_key)),
            url: Secret::new(s(self.url)),
            method: s(self.method),
            body: s(self.body),
            headers: self
                .headers
                .unwrap_or_default()
                .into_iter()
                .map(|(name, value)| (name, Secret::new(value)))
                .collect(),
            json_pointer: s(self.json_pointer),
            aggregate: s(self.aggregate),
            commands: self.commands.unwrap_or_default(),
        }
    }
}

/// serde_yaml's message, made shorter where it lists every known key, with a suggestion for
/// misspelt keys. serde_yaml never quotes the values of string fields, so secrets stay out.
fn describe_yaml_error(e: &serde_yaml::Error) -> String {
    let raw = e.to_string();
    let line = e.location().map(|l| l.line());
    if let Some(start) = raw.find("unknown field `") {
        let path = raw[..start].trim_end_matches(": ");
        let rest = &raw[start + "unknown field `".len()..];
        let key = &rest[..rest.find('`').unwrap_or(rest.len())];
        let known: Vec<&str> = rest.split('`').skip(2).step_by(2).collect();
        let mut msg = if path.is_empty() {
            format!("unknown key {key:?}")
        } else {
            format!("{path}: unknown key {key:?}")
        };
        if let Some(line) = line {
            msg.push_str(&format!(" at line {line}"));
        }
        match closest(key, &known) {
            Some(best) => msg.push_str(&format!("; did you mean {best:?}?")),
            None => msg.push_str(&format!("; known keys: {}", known.join(", "))),
        }
        return msg;
    }
    raw
}

/// The known key nearest to a misspelt one, if it is near enough to be a typo.
fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// A positive Go duration string; a bare number is rejected as the Go program does.
struct GoDuration(Duration);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor("a Go duration such as \"15s\"", |s| {
            parse_positive(s).map(GoDuration).map_err(|reason| {
                format!(
                    "invalid duration {s:?}: {reason}; write a Go duration such as \"15s\" or \"1m30s\""
                )
            })
        }))
    }
}

/// Parses a string inside the deserializer, so that serde_yaml adds the key path and the line
/// to the error.
struct StrVisitor<T>(&'static str, fn(&str) -> Result<T, String>);

impl<T> Visitor<'_> for StrVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.1)(v).map_err(E::custom)
    }
}

/// `true`/`false` plus the YAML 1.1 words (`yes`, `on`, …) that the Go program's YAML library
/// accepted.
struct YamlBool(bool);

impl<'de> Deserialize<'de> for YamlBool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = YamlBool;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true or false")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<YamlBool, E> {
                Ok(YamlBool(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<YamlBool, E> {
                super::parse_bool(v)
                    .filter(|_| v != "1" && v != "0")
                    .map(YamlBool)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

/// A count (workers, machines): a YAML number (a fraction is truncated, as in Go); values
/// below 1 mean 1.
struct Count(usize);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number such as 4")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
                Ok(Count(v.clamp(1, u32::MAX as i64) as usize))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
                Ok(Count(v.clamp(1, u32::MAX as u64) as usize))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Count, E> {
                self.visit_i64(v as i64)
            }
        }
        d.deserialize_any(V)
    }
}

/// A value parsed from its string form inside the deserializer, so that serde_yaml adds the
/// key path and line to the error; a number is read as its decimal string (`max-scale-up: 4`).
struct Parsed<T>(T);

/// How a string becomes the value of a key, with the error that says what to write.
trait FromConfigStr: Sized {
    const EXPECTING: &'static str;
    fn from_config_str(s: &str) -> Result<Self, String>;
}

impl FromConfigStr for LogFormat {
    const EXPECTING: &'static str = "text or json";
    fn from_config_str(s: &str) -> Result<Self, String> {
        LogFormat::parse(s).ok_or_else(|| format!("invalid log format {s:?}; use text or json"))
    }
}

impl FromConfigStr for Duration {
    const EXPECTING: &'static str = "a Go duration such as \"5m\"";
    fn from_config_str(s: &str) -> Result<Self, String> {
        parse_non_negative(s).map_err(|reason| {
            format!(
                "invalid duration {s:?}: {reason}; write a Go duration such as \"5m\" or \"0s\""
            )
        })
    }
}

impl FromConfigStr for Step {
    const EXPECTING: &'static str = "a count such as 4 or a percentage such as \"50%\"";
    fn from_config_str(s: &str) -> Result<Self, String> {
        Step::parse(s)
    }
}

impl FromConfigStr for StopOrder {
    const EXPECTING: &'static str = "id, newest or oldest";
    fn from_config_str(s: &str) -> Result<Self, String> {
        StopOrder::parse(s)
    }
}

impl FromConfigStr for ScaleDownMethod {
    const EXPECTING: &'static str = "stop or suspend";
    fn from_config_str(s: &str) -> Result<Self, String> {
        ScaleDownMethod::parse(s)
    }
}

/// `time-offset` in seconds east of UTC.
struct TimeOffset(i32);

impl FromConfigStr for TimeOffset {
    const EXPECTING: &'static str = "a UTC offset such as \"-05:00\"";
    fn from_config_str(s: &str) -> Result<Self, String> {
        parse_time_offset(s).map(TimeOffset)
    }
}

impl<'de, T: FromConfigStr> Deserialize<'de> for Parsed<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<T: FromConfigStr> Visitor<'_> for V<T> {
            type Value = Parsed<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(T::EXPECTING)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Parsed<T>, E> {
                T::from_config_str(v).map(Parsed).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Parsed<T>, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Parsed<T>, E> {
                self.visit_str(&v.to_string())
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}
