//! Fly Machines REST API client over one shared `ureq::Agent`.
//!
//! Retry discipline (the Go program had none of its own): HTTP 429 is honoured with its
//! `Retry-After` for every call, since a rate-limited request was not carried out; 5xx and
//! broken connections are retried with jittered exponential backoff only for idempotent calls
//! (list, start, stop, destroy); a create is retried only when the request provably never
//! reached the server, because a duplicate create costs a machine. All waiting stays inside the
//! caller's deadline.

mod types;

use std::fmt;
use std::time::Duration;

use serde_json::{Value, json};
use ureq::Agent;

pub use types::{ErrorBody, ImageRef, Machine, OrgApp, OrgApps};

use crate::auth;
use crate::http::{self, Deadline, Reply, Transport};
use crate::plan::Launch;
use crate::secret::Secret;

const MAX_ATTEMPTS: u32 = 5;
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(2);
/// Wait used for a 429 that carries no (or an unreadable) `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A failed call: what was attempted and why it failed.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub op: String,
    pub kind: ApiErrorKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ApiErrorKind {
    /// The API answered with an error status; `message` is its `error`/`message` field.
    Status {
        code: u16,
        message: String,
        status: String,
    },
    Transport(Transport),
    /// A 2xx answer whose body is not the JSON the API documents.
    Decode(String),
}

impl ApiError {
    fn new(op: &str, kind: ApiErrorKind) -> ApiError {
        ApiError {
            op: op.to_string(),
            kind,
        }
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, ApiErrorKind::Transport(Transport::Timeout))
    }

    /// A short word for metrics labels.
    pub fn kind_label(&self) -> &'static str {
        match &self.kind {
            ApiErrorKind::Status { code: 429, .. } => "rate_limited",
            ApiErrorKind::Status { code, .. } if *code >= 500 => "server_error",
            ApiErrorKind::Status { .. } => "client_error",
            ApiErrorKind::Transport(Transport::Timeout) => "timeout",
            ApiErrorKind::Transport(_) => "transport",
            ApiErrorKind::Decode(_) => "decode",
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ApiErrorKind::Status {
                code,
                message,
                status,
            } => {
                write!(f, "{}: HTTP {code}", self.op)?;
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                if !status.is_empty() && status != "unknown" {
                    write!(f, " ({status})")?;
                }
                Ok(())
            }
            ApiErrorKind::Transport(t) => write!(f, "{}: {t}", self.op),
            ApiErrorKind::Decode(m) => write!(f, "{}: {m}", self.op),
        }
    }
}

impl std::error::Error for ApiError {}

/// Whether a call may be repeated after an outcome we could not observe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    Idempotent,
    OnlyIfNotSent,
}

/// The Machines API of one Fly organization's token.
#[derive(Clone)]
pub struct MachinesClient {
    agent: Agent,
    base: String,
    authorization: Option<String>,
}

impl fmt::Debug for MachinesClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MachinesClient")
            .field("base", &self.base)
            .finish()
    }
}

impl MachinesClient {
    /// `base_url` as in `FLY_FLAPS_BASE_URL`; like fly-go, only scheme, host and port are used.
    pub fn new(base_url: &str, token: &Secret) -> Result<MachinesClient, String> {
        let base = origin(base_url).ok_or_else(|| {
            format!(
                "invalid Machines API URL {:?}: it must look like https://api.machines.dev or http://_api.internal:4280",
                http::redact_url(base_url)
            )
        })?;
        Ok(MachinesClient {
            agent: http::agent(None),
            base,
            authorization: auth::fly_api(token),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `GET /v1/apps/{app}/machines`, no filters: the planner needs `host_status` and `config`.
    pub fn list_machines(&self, app: &str, deadline: Deadline) -> Result<Vec<Machine>, ApiError> {
        let op = format!("list machines of {app}");
        let reply = self.call(
            &op,
            "GET",
            &format!("/v1/apps/{app}/machines"),
            None,
            Retry::Idempotent,
            deadline,
        )?;
        decode(&op, &reply)
    }

    /// `POST /v1/apps/{app}/machines` with the cloned config, region and `skip_launch`.
    pub fn create_machine(
        &self,
        app: &str,
        launch: &Launch,
        deadline: Deadline,
    ) -> Result<Machine, ApiError> {
        let op = format!("create machine in {app} ({})", launch.region);
        let mut body = json!({ "config": launch.config, "region": launch.region });
        if launch.skip_launch {
            body["skip_launch"] = Value::Bool(true);
        }
        let reply = self.call(
            &op,
            "POST",
            &format!("/v1/apps/{app}/machines"),
            Some(body),
            Retry::OnlyIfNotSent,
            deadline,
        )?;
        decode(&op, &reply)
    }

    /// `POST …/{id}/start`, no body. Starting a suspended machine resumes it.
    pub fn start_machine(&self, app: &str, id: &str, deadline: Deadline) -> Result<(), ApiError> {
        let op = format!("start machine {id}");
        self.call(
            &op,
            "POST",
            &format!("/v1/apps/{app}/machines/{id}/start"),
            None,
            Retry::Idempotent,
            deadline,
        )
        .map(drop)
    }

    /// `POST …/{id}/stop` with the body fly-go sends: the id and a zero timeout (= the
    /// machine's own stop config).
    pub fn stop_machine(&self, app: &str, id: &str, deadline: Deadline) -> Result<(), ApiError> {
        let op = format!("stop machine {id}");
        let body = json!({ "id": id, "timeout": "0s" });
        self.call(
            &op,
            "POST",
            &format!("/v1/apps/{app}/machines/{id}/stop"),
            Some(body),
            Retry::Idempotent,
            deadline,
        )
        .map(drop)
    }

    /// `DELETE …/{id}?kill=true`, as the Go program destroys.
    pub fn destroy_machine(&self, app: &str, id: &str, deadline: Deadline) -> Result<(), ApiError> {
        let op = format!("destroy machine {id}");
        self.call(
            &op,
            "DELETE",
            &format!("/v1/apps/{app}/machines/{id}?kill=true"),
            None,
            Retry::Idempotent,
            deadline,
        )
        .map(drop)
    }

    /// `GET /v1/apps?org_slug={org}`: the names of the organization's apps.
    pub fn list_org_apps(&self, org: &str, deadline: Deadline) -> Result<Vec<String>, ApiError> {
        let op = format!("list apps of organization {org}");
        let path = format!("/v1/apps?org_slug={}", encode_query_value(org));
        let reply = self.call(&op, "GET", &path, None, Retry::Idempotent, deadline)?;
        let apps: OrgApps = decode(&op, &reply)?;
        Ok(apps
            .apps
            .into_iter()
            .map(|a| a.name)
            .filter(|n| !n.is_empty())
            .collect())
    }

    /// One call with the retry discipline described in the module docs.
    fn call(
        &self,
        op: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
        retry: Retry,
        deadline: Deadline,
    ) -> Result<Reply, ApiError> {
        let url = format!("{}{path}", self.base);
        let mut attempt = 1;
        loop {
            let result = http::exchange(deadline, |timeout| {
                let mut req = ureq::http::Request::builder().method(method).uri(&url);
                if let Some(auth) = &self.authorization {
                    req = req.header("Authorization", auth);
                }
                let agent = &self.agent;
                match &body {
                    Some(b) => {
                        let req = req
                            .header("Content-Type", "application/json")
                            .body(b.to_string())
                            .map_err(ureq::Error::Http)?;
                        agent.run(
                            agent
                                .configure_request(req)
                                .timeout_global(Some(timeout))
                                .build(),
                        )
                    }
                    None => {
                        let req = req.body(()).map_err(ureq::Error::Http)?;
                        agent.run(
                            agent
                                .configure_request(req)
                                .timeout_global(Some(timeout))
                                .build(),
                        )
                    }
                }
            });
            let (error, wait) = match result {
                Ok(reply) if reply.is_success() => return Ok(reply),
                Ok(reply) => {
                    let wait = match reply.status {
                        429 => Some(retry_after(&reply)),
                        s if s >= 500 && retry == Retry::Idempotent => Some(backoff(attempt)),
                        _ => None,
                    };
                    (status_error(op, &reply), wait)
                }
                Err(t) => {
                    let wait = match (&t, retry) {
                        (Transport::Timeout, _) => None,
                        (Transport::NotConnected(_), _)
                        | (Transport::Broken(_), Retry::Idempotent) => Some(backoff(attempt)),
                        (Transport::Broken(_), Retry::OnlyIfNotSent) => None,
                    };
                    (ApiError::new(op, ApiErrorKind::Transport(t)), wait)
                }
            };
            let Some(wait) = wait.filter(|_| attempt < MAX_ATTEMPTS) else {
                return Err(error);
            };
            match deadline.remaining() {
                Some(left) if left > wait => {
                    log::warn!(op, attempt, wait_ms = wait.as_millis() as u64; "retrying after: {error}");
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                _ => return Err(error),
            }
        }
    }
}

/// Exponential backoff with full jitter: up to 100 ms, 200 ms, 400 ms, … capped at 2 s.
fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1 << (attempt - 1).min(10))
        .min(BACKOFF_CAP);
    ceiling / 2 + http::jitter(ceiling / 2)
}

/// `Retry-After` in seconds (the HTTP-date form is treated as the default wait).
fn retry_after(reply: &Reply) -> Duration {
    reply
        .retry_after
        .as_deref()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(3600.0)))
        .unwrap_or(DEFAULT_RETRY_AFTER)
        + http::jitter(Duration::from_millis(50))
}

fn status_error(op: &str, reply: &Reply) -> ApiError {
    let body: Option<ErrorBody> = serde_json::from_str(&reply.body).ok();
    let (message, status) = match body {
        Some(b) if !b.message.is_empty() => (b.message, b.status),
        Some(b) if !b.error.is_empty() => (b.error, b.status),
        _ => (reply.excerpt(), String::new()),
    };
    ApiError::new(
        op,
        ApiErrorKind::Status {
            code: reply.status,
            message,
            status,
        },
    )
}

fn decode<T: serde::de::DeserializeOwned>(op: &str, reply: &Reply) -> Result<T, ApiError> {
    serde_json::from_str(&reply.body).map_err(|e| {
        ApiError::new(
            op,
            ApiErrorKind::Decode(format!(
                "HTTP {} with a body that is not the expected JSON ({e}): {}",
                reply.status,
                reply.excerpt()
            )),
        )
    })
}

/// `scheme://host[:port]` of a URL, or `None` if it is not an http(s) URL.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit('@').next()?;
    (!host.is_empty()).then(|| format!("{scheme}://{host}"))
}

/// Percent-encodes a query value (org slugs are `[a-z0-9-]`, but be safe).
pub(crate) fn encode_query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_keeps_only_scheme_host_and_port() {
        assert_eq!(
            origin("https://api.machines.dev").as_deref(),
            Some("https://api.machines.dev")
        );
        assert_eq!(origin("http://h:1/x/y?z").as_deref(), Some("http://h:1"));
        assert_eq!(
            origin("http://_api.internal:4280/").as_deref(),
            Some("http://_api.internal:4280")
        );
        assert_eq!(origin("api.machines.dev"), None);
        assert_eq!(origin("ftp://x"), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= Duration::from_millis(100));
        assert!(
            backoff(3) >= Duration::from_millis(200) && backoff(3) <= Duration::from_millis(400)
        );
        assert!(backoff(30) <= BACKOFF_CAP);
    }

    #[test]
    fn error_messages_carry_status_and_api_text() {
        let reply = Reply {
            status: 503,
            content_type: "application/json".into(),
            retry_after: None,
            body: include_str!("../../testdata/fixtures/error-response-insufficient-capacity.json")
                .into(),
        };
        let e = status_error("create machine in my-app (ord)", &reply);
        assert_eq!(
            e.to_string(),
            "create machine in my-app (ord): HTTP 503: could not reserve resource for machine: insufficient memory available to fulfill request (insufficient_capacity)"
        );
        assert_eq!(e.kind_label(), "server_error");
        let html = Reply {
            status: 502,
            body: "<html><title>Bad Gateway</title></html>".into(),
            ..reply
        };
        assert_eq!(
            status_error("list machines of a", &html).to_string(),
            "list machines of a: HTTP 502: \"Bad Gateway\""
        );
    }

    #[test]
    fn retry_after_seconds() {
        let r = |v: Option<&str>| Reply {
            status: 429,
            content_type: String::new(),
            retry_after: v.map(String::from),
            body: String::new(),
        };
        assert!(retry_after(&r(Some("2"))) >= Duration::from_secs(2));
        assert!(retry_after(&r(None)) >= DEFAULT_RETRY_AFTER);
        assert!(retry_after(&r(Some("Wed, 21 Oct 2015 07:28:00 GMT"))) < Duration::from_secs(2));
    }
}
