//! Any JSON endpoint: NATS JetStream monitoring, RabbitMQ's management API, Buildkite's agent
//! metrics, GitHub Actions, an app's own `/stats`. One GET (or POST) per collection, a value
//! picked with an RFC 6901 JSON pointer where a `*` segment matches every element of an array
//! or member of an object, and the matches folded with `sum`, `max`, `min` or `count`.
//!
//! Header values are secrets (tokens): never in a message, and never sent to another host.
//! Redirects are followed here rather than by ureq, which drops only `Authorization`: a hop
//! to another origin (scheme, host, port) drops every configured header.

use std::time::Instant;

use serde_json::Value;
use ureq::Agent;

use super::{Collector, SourceError, SourceErrorKind};
use crate::config::CollectorConfig;
use crate::expand::expand_query;
use crate::grpc::one_line;
use crate::http::{self, Deadline, Redirects, Reply, Transport};
use crate::secret::Secret;

/// Redirects followed before giving up.
const MAX_REDIRECTS: usize = 5;
/// Keys listed in a "no such key" message.
const SHOWN_KEYS: usize = 10;

/// `json-pointer`, parsed: RFC 6901 plus `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPointer {
    text: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    /// `*`: every element or member.
    Any,
}

/// A match: where it is (for messages) and the value.
type Match<'a> = (String, &'a Value);

impl JsonPointer {
    /// `""` (the whole document) or `/a/b~1c/*/d`; `~0` is `~` and `~1` is `/`.
    pub fn parse(text: &str) -> Result<JsonPointer, String> {
        if text.is_empty() {
            return Ok(JsonPointer {
                text: String::new(),
                segments: Vec::new(),
            });
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!(
                "{text:?} is not a JSON pointer: it must start with /, e.g. /data/0/count"
            ));
        };
        let segments = rest
            .split('/')
            .map(|raw| {
                if raw == "*" {
                    return Ok(Segment::Any);
                }
                let mut key = String::with_capacity(raw.len());
                let mut chars = raw.chars();
                while let Some(c) = chars.next() {
                    match (c, c == '~') {
                        (_, false) => key.push(c),
                        (_, true) => match chars.next() {
                            Some('0') => key.push('~'),
                            Some('1') => key.push('/'),
                            _ => {
                                return Err(format!(
                                    "{text:?} is not a JSON pointer: ~ must be followed by 0 (for ~) or 1 (for /)"
                                ));
                            }
                        },
                    }
                }
                Ok(Segment::Key(key))
            })
            .collect::<Result<_, _>>()?;
        Ok(JsonPointer {
            text: text.to_string(),
            segments,
        })
    }

    /// Every value the pointer reaches. Under a `*`, an element without the next key is
    /// passed over; the pointer is an error only when it reaches nothing because a key or
    /// index was missing (a typo), and then the message says where it stopped and what
    /// keys were there. A `*` over empty arrays or objects reaches nothing without error.
    fn select<'a>(&self, root: &'a Value) -> Result<Vec<Match<'a>>, String> {
        let mut matches: Vec<Match> = vec![(String::new(), root)];
        let mut first_miss: Option<String> = None;
        for segment in &self.segments {
            let mut next = Vec::new();
            for (path, value) in &matches {
                match (segment, value) {
                    (Segment::Any, Value::Array(items)) => next.extend(
                        items
                            .iter()
                            .enumerate()
                            .map(|(i, v)| (format!("{path}/{i}"), v)),
                    ),
                    (Segment::Any, Value::Object(members)) => next.extend(
                        members
                            .iter()
                            .map(|(k, v)| (format!("{path}/{}", escape(k)), v)),
                    ),
                    (Segment::Any, other) => {
                        first_miss.get_or_insert_with(|| {
                            format!("* at {} found {}", shown_path(path), kind(other))
                        });
                    }
                    (Segment::Key(key), Value::Object(members)) => match members.get(key) {
                        Some(v) => next.push((format!("{path}/{}", escape(key)), v)),
                        None => {
                            first_miss.get_or_insert_with(|| {
                                format!(
                                    "no key {:?} at {}; keys there: {}",
                                    one_line(key, 60),
                                    shown_path(path),
                                    keys(members)
                                )
                            });
                        }
                    },
                    (Segment::Key(key), Value::Array(items)) => {
                        match index(key).and_then(|i| items.get(i)) {
                            Some(v) => next.push((format!("{path}/{key}"), v)),
                            None => {
                                first_miss.get_or_insert_with(|| {
                                    format!(
                                        "no element {:?} at {}, an array of {}",
                                        one_line(key, 60),
                                        shown_path(path),
                                        items.len()
                                    )
                                });
                            }
                        }
                    }
                    (Segment::Key(key), other) => {
                        first_miss.get_or_insert_with(|| {
                            format!(
                                "no key {:?} at {}: it holds {}",
                                one_line(key, 60),
                                shown_path(path),
                                kind(other)
                            )
                        });
                    }
                }
            }
            if next.is_empty() {
                if let Some(miss) = first_miss {
                    return Err(format!(
                        "json-pointer {} matched nothing: {miss}",
                        self.text
                    ));
                }
            }
            matches = next;
        }
        Ok(matches)
    }
}

/// An array index as RFC 6901 writes it: digits, no leading zero.
fn index(key: &str) -> Option<usize> {
    let digits = key.bytes().all(|b| b.is_ascii_digit());
    if key.is_empty() || !digits || (key.len() > 1 && key.starts_with('0')) {
        return None;
    }
    key.parse().ok()
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn shown_path(path: &str) -> String {
    if path.is_empty() {
        "the top level".to_string()
    } else {
        one_line(path, 120)
    }
}

fn keys(members: &serde_json::Map<String, Value>) -> String {
    if members.is_empty() {
        return "none (an empty object)".to_string();
    }
    let mut shown: Vec<String> = members
        .keys()
        .take(SHOWN_KEYS)
        .map(|k| one_line(k, 40))
        .collect();
    if members.len() > SHOWN_KEYS {
        shown.push(format!("… ({} keys)", members.len()));
    }
    shown.join(", ")
}

/// What a value is, for messages.
fn kind(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {:?}", one_line(s, 40)),
        Value::Array(a) => format!("an array of {}", a.len()),
        Value::Object(_) => "an object".to_string(),
    }
}

/// `aggregate`: how the matches become one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Sum,
    Max,
    Min,
    Count,
}

impl Aggregate {
    /// `sum` (also when empty), `max`, `min` or `count`.
    pub fn parse(s: &str) -> Result<Aggregate, String> {
        match s {
            "" | "sum" => Ok(Aggregate::Sum),
            "max" => Ok(Aggregate::Max),
            "min" => Ok(Aggregate::Min),
            "count" => Ok(Aggregate::Count),
            other => Err(format!(
                "{other:?} is not an aggregate; use sum, max, min or count"
            )),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Aggregate::Sum => "sum",
            Aggregate::Max => "max",
            Aggregate::Min => "min",
            Aggregate::Count => "count",
        }
    }

    /// Folds the matches of `pointer`; for all but `count` each must be a number or a
    /// string holding one.
    fn fold(self, pointer: &JsonPointer, matches: &[Match]) -> Result<f64, String> {
        if self == Aggregate::Count {
            return Ok(matches.len() as f64);
        }
        let mut numbers = matches.iter().map(|(path, v)| {
            let n = match v {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            };
            n.ok_or_else(|| {
                format!(
                    "json-pointer {} matched {} at {}, not a number",
                    pointer.text,
                    kind(v),
                    shown_path(path)
                )
            })
        });
        let first = match numbers.next() {
            Some(n) => n?,
            None if self == Aggregate::Sum => return Ok(0.0),
            None => {
                return Err(format!(
                    "json-pointer {} matched nothing (empty arrays or objects), so there is no {}",
                    pointer.text,
                    self.as_str()
                ));
            }
        };
        numbers.try_fold(first, |acc, n| {
            let n = n?;
            Ok(match self {
                Aggregate::Sum => acc + n,
                Aggregate::Max => acc.max(n),
                Aggregate::Min => acc.min(n),
                Aggregate::Count => unreachable!("counted above"),
            })
        })
    }
}

/// `method`: GET (default) or POST.
pub fn parse_method(s: &str) -> Result<&'static str, String> {
    match s.to_ascii_uppercase().as_str() {
        "" | "GET" => Ok("GET"),
        "POST" => Ok("POST"),
        _ => Err(format!("{s:?} is not a method; use GET or POST")),
    }
}

/// A header name as HTTP allows it (a token), and a value without control characters. The
/// error names the header, never its value.
pub fn check_header(name: &str, value: &Secret) -> Result<(), String> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(format!(
            "header name {name:?} is not a valid HTTP header name"
        ));
    }
    if value.expose().chars().any(|c| c.is_control() && c != '\t') {
        return Err(format!(
            "the value of header {name:?} contains a line break or control character"
        ));
    }
    Ok(())
}

pub struct HttpCollector {
    metric: String,
    url: Secret,
    method: &'static str,
    body: String,
    headers: Vec<(String, Secret)>,
    pointer: JsonPointer,
    aggregate: Aggregate,
    agent: Agent,
}

impl HttpCollector {
    pub fn new(c: &CollectorConfig) -> Result<HttpCollector, String> {
        for (name, value) in &c.headers {
            check_header(name, value)?;
        }
        Ok(HttpCollector {
            metric: c.metric_name.clone(),
            url: c.url.clone(),
            method: parse_method(&c.method)?,
            body: c.body.clone(),
            headers: c.headers.clone(),
            pointer: JsonPointer::parse(&c.json_pointer)?,
            aggregate: Aggregate::parse(&c.aggregate)?,
            agent: http::agent(None, Redirects::Refuse),
        })
    }

    fn has_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// One request, redirects followed (see the module docs).
    fn fetch(&self, url: &str, deadline: Deadline) -> Result<Reply, FetchError> {
        let mut url = url.to_string();
        let mut method = self.method;
        let mut with_headers = true;
        for _ in 0..=MAX_REDIRECTS {
            let reply = http::exchange(deadline, |timeout| {
                let mut req = ureq::http::Request::builder()
                    .method(method)
                    .uri(url.as_str());
                if !self.has_header("accept") {
                    req = req.header("Accept", "application/json");
                }
                if method == "POST" && !self.has_header("content-type") {
                    req = req.header("Content-Type", "application/json");
                }
                if with_headers {
                    for (name, value) in &self.headers {
                        req = req.header(name.as_str(), value.expose());
                    }
                }
                if method == "POST" {
                    let req = req.body(self.body.clone()).map_err(ureq::Error::from)?;
                    let req = self.agent.configure_request(req);
                    self.agent.run(req.timeout_global(Some(timeout)).build())
                } else {
                    let req = req.body(()).map_err(ureq::Error::from)?;
                    let req = self.agent.configure_request(req);
                    self.agent.run(req.timeout_global(Some(timeout)).build())
                }
            })
            .map_err(FetchError::Transport)?;
            let Some(location) = reply
                .location
                .as_deref()
                .filter(|_| is_redirect(reply.status))
            else {
                return Ok(reply);
            };
            let next = resolve(&url, location).ok_or_else(|| {
                FetchError::Answer(format!(
                    "HTTP {} redirect to {} that cannot be followed",
                    reply.status,
                    reply.shown_location()
                ))
            })?;
            if origin(&next) != origin(&url) {
                with_headers = false;
            }
            if reply.status == 303 || (matches!(reply.status, 301 | 302) && method == "POST") {
                method = "GET";
            }
            url = next;
        }
        Err(FetchError::Answer(format!(
            "more than {MAX_REDIRECTS} redirects"
        )))
    }

    /// The method and URL for messages: no credentials, no query string (it may hold a key).
    fn source(&self, url: &str) -> String {
        let shown = http::redact_url(url);
        let shown = shown.split(['?', '#']).next().unwrap_or_default();
        format!("http {} {shown}", self.method)
    }
}

enum FetchError {
    Transport(Transport),
    Answer(String),
}

fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// `scheme://host:port` in lower case, the default port filled in.
fn origin(url: &str) -> Option<(String, String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let default = if scheme == "https" { 443 } else { 80 };
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, p.parse().ok()?),
        _ => (host_port, default),
    };
    Some((scheme, host.to_ascii_lowercase(), port))
}

/// Where a `Location` points, from `base`: an absolute http(s) URL, `//host/path`,
/// `/path` or a path relative to the base's directory.
fn resolve(base: &str, location: &str) -> Option<String> {
    let location = location.trim();
    let (scheme, rest) = base.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let root = &base[..scheme.len() + 3 + authority_end];
    let lower = location.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        Some(location.to_string())
    } else if location.contains("://") {
        None
    } else if let Some(rest) = location.strip_prefix("//") {
        Some(format!("{scheme}://{rest}"))
    } else if location.starts_with('/') {
        Some(format!("{root}{location}"))
    } else {
        let path = rest[authority_end..].split(['?', '#']).next().unwrap_or("");
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        let dir = if dir.is_empty() { "/" } else { dir };
        Some(format!("{root}{dir}{location}"))
    }
}

impl Collector for HttpCollector {
    fn metric_name(&self) -> &str {
        &self.metric
    }

    fn collect(&self, app: &str, deadline: Deadline) -> Result<f64, SourceError> {
        let url = expand_query(self.url.expose(), app);
        let started = Instant::now();
        let fail = |kind| SourceError {
            source: self.source(&url),
            kind,
            hint: String::new(),
        };
        let answer = |m: String| fail(SourceErrorKind::Answer(m));
        let reply = self.fetch(&url, deadline).map_err(|e| match e {
            FetchError::Transport(Transport::Timeout) => {
                fail(SourceErrorKind::Timeout(started.elapsed()))
            }
            FetchError::Transport(t) => fail(SourceErrorKind::Transport(t)),
            FetchError::Answer(m) => answer(m),
        })?;
        if !reply.is_success() {
            return Err(answer(format!(
                "HTTP {}: {}",
                reply.status,
                reply.excerpt()
            )));
        }
        let document: Value = serde_json::from_str(&reply.body).map_err(|_| {
            let kind = match reply.content_type.split(';').next().unwrap_or("").trim() {
                "" => String::new(),
                ct => format!(" ({})", one_line(ct, 60)),
            };
            answer(format!(
                "HTTP {} with a body that is not JSON{kind}: {}",
                reply.status,
                reply.excerpt()
            ))
        })?;
        let matches = self.pointer.select(&document).map_err(answer)?;
        self.aggregate.fold(&self.pointer, &matches).map_err(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pick(pointer: &str, aggregate: &str, doc: &Value) -> Result<f64, String> {
        let p = JsonPointer::parse(pointer)?;
        let matches = p.select(doc)?;
        Aggregate::parse(aggregate)?.fold(&p, &matches)
    }

    fn jsz() -> Value {
        json!({"account_details": [
            {"name": "A", "stream_detail": [
                {"name": "ORDERS", "consumer_detail": [
                    {"name": "c1", "num_pending": 4}, {"name": "c2", "num_pending": 6}]},
                {"name": "EMPTY"}
            ]},
            {"name": "B", "stream_detail": [
                {"name": "JOBS", "consumer_detail": [{"name": "c3", "num_pending": "5"}]}
            ]}
        ]})
    }

    #[test]
    fn plain_pointers_follow_rfc_6901() {
        let doc = json!({"a/b": {"m~n": [10, 20]}, "": 1, "jobs": {"scheduled": 3}});
        assert_eq!(pick("/a~1b/m~0n/1", "", &doc), Ok(20.0));
        assert_eq!(pick("/", "", &doc), Ok(1.0));
        assert_eq!(pick("/jobs/scheduled", "sum", &doc), Ok(3.0));
        assert_eq!(pick("", "", &json!(42)), Ok(42.0));
        assert!(
            JsonPointer::parse("jobs")
                .unwrap_err()
                .contains("must start with /")
        );
        assert!(JsonPointer::parse("/a~2").is_err());
    }

    #[test]
    fn wildcards_and_aggregates() {
        let doc = jsz();
        let p = "/account_details/*/stream_detail/*/consumer_detail/*/num_pending";
        assert_eq!(
            pick(p, "sum", &doc),
            Ok(15.0),
            "a stream without consumers is passed over"
        );
        assert_eq!(pick(p, "max", &doc), Ok(6.0));
        assert_eq!(pick(p, "min", &doc), Ok(4.0));
        assert_eq!(pick(p, "count", &doc), Ok(3.0));
        assert_eq!(pick("/account_details/*/name", "count", &doc), Ok(2.0));
        let members = json!({"queues": {"a": {"messages": 2}, "b": {"messages": 5}}});
        assert_eq!(pick("/queues/*/messages", "sum", &members), Ok(7.0));
    }

    #[test]
    fn a_wildcard_over_nothing_is_zero_for_sum_and_count_only() {
        let doc = json!({"runs": [], "map": {}});
        assert_eq!(pick("/runs/*/n", "sum", &doc), Ok(0.0));
        assert_eq!(pick("/map/*", "count", &doc), Ok(0.0));
        let err = pick("/runs/*/n", "max", &doc).unwrap_err();
        assert!(
            err.contains("matched nothing") && err.contains("no max"),
            "{err}"
        );
        assert!(pick("/runs/*", "min", &doc).is_err());
    }

    #[test]
    fn misses_name_the_pointer_and_the_keys_found() {
        let doc = jsz();
        let err = pick(
            "/account_details/*/stream_detail/*/consumers/*/num_pending",
            "sum",
            &doc,
        )
        .unwrap_err();
        assert_eq!(
            err,
            "json-pointer /account_details/*/stream_detail/*/consumers/*/num_pending matched \
             nothing: no key \"consumers\" at /account_details/0/stream_detail/0; keys there: \
             consumer_detail, name"
        );
        let err = pick("/acount_details", "sum", &doc).unwrap_err();
        assert!(
            err.ends_with("at the top level; keys there: account_details"),
            "{err}"
        );
        let err = pick("/account_details/7", "sum", &doc).unwrap_err();
        assert!(
            err.contains("no element \"7\" at /account_details, an array of 2"),
            "{err}"
        );
        let err = pick("/account_details/0/name/x", "sum", &doc).unwrap_err();
        assert!(err.contains("it holds the string \"A\""), "{err}");
        let err = pick("/account_details/0/name/*", "count", &doc).unwrap_err();
        assert!(
            err.contains("* at /account_details/0/name found the string"),
            "{err}"
        );
    }

    #[test]
    fn only_numbers_and_numeric_strings_are_summed() {
        let doc = json!({"a": [1, "2", true]});
        let err = pick("/a/*", "sum", &doc).unwrap_err();
        assert_eq!(err, "json-pointer /a/* matched true at /a/2, not a number");
        assert_eq!(pick("/a/*", "count", &doc), Ok(3.0));
        let err = pick("/a", "sum", &doc).unwrap_err();
        assert!(err.contains("an array of 3"), "{err}");
        assert!(
            Aggregate::parse("avg")
                .unwrap_err()
                .contains("sum, max, min or count")
        );
    }

    #[test]
    fn redirects_resolve_and_origins_compare() {
        let base = "https://api.example.com/v1/runs?x=1";
        assert_eq!(
            resolve(base, "/v2/r").as_deref(),
            Some("https://api.example.com/v2/r")
        );
        assert_eq!(
            resolve(base, "other").as_deref(),
            Some("https://api.example.com/v1/other")
        );
        assert_eq!(
            resolve(base, "//cdn.example.com/a").as_deref(),
            Some("https://cdn.example.com/a")
        );
        assert_eq!(
            resolve(base, "http://x:81/").as_deref(),
            Some("http://x:81/")
        );
        assert_eq!(resolve(base, "ftp://x/"), None);
        assert_eq!(
            origin("https://API.example.com/x"),
            origin("https://api.example.com:443/y")
        );
        assert_ne!(origin("https://h/"), origin("http://h/"));
        assert_ne!(origin("http://h:1/"), origin("http://h:2/"));
        assert_ne!(origin("http://u:p@h/"), origin("http://evil/"));
    }

    #[test]
    fn headers_and_methods_are_checked_without_showing_values() {
        assert!(check_header("Authorization", &Secret::new("Bearer x")).is_ok());
        let err = check_header("Bad Name", &Secret::new("v")).unwrap_err();
        assert!(err.contains("\"Bad Name\""));
        let err = check_header("X-Token", &Secret::new("sec\nret")).unwrap_err();
        assert!(err.contains("X-Token") && !err.contains("sec"), "{err}");
        assert_eq!(parse_method("post"), Ok("POST"));
        assert!(parse_method("PUT").is_err());
    }
}
