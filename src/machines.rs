//! Fly Machines REST API client over one shared `ureq::Agent`.
//!
//! Retry discipline (the Go program had none of its own): HTTP 429 is honoured with its
//! `Retry-After` for every call, since a rate-limited request was not carried out; 5xx and
//! broken connections are retried with jittered exponential backoff only for idempotent calls
//! (list, get, start, stop, suspend, destroy); a create is retried only when the request
//! provably never reached the server, because a duplicate create costs a machine. All waiting
//! stays inside the caller's deadline. Redirects are never followed: the API does not send
//! them, and acting on the machine ids of another host would be acting blind.

use std::fmt;
use std::time::Duration;

use ureq::Agent;

use crate::auth;
use crate::http::{self, Deadline, Redirects, Reply, Transport};
use crate::secret::Secret;
use crate::wire::{self, CreateRequest, ErrorBody, ListError, Machine, OrgApps};

const MAX_ATTEMPTS: u32 = 5;
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(2);
/// Wait used for a 429 that carries no (or an unreadable) `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// The most machines one list may hold: the bound on what a list costs in memory.
pub const MAX_LISTED_MACHINES: usize = 20_000;
/// And its bytes: 20,000 real machines are about 80 MB of JSON.
const MAX_LIST_BYTES: u64 = 128 * 1024 * 1024;

/// A failed call: what was attempted and why it failed.
#[derive(Debug)]
pub struct ApiError {
    pub op: String,
    pub kind: ApiErrorKind,
}

#[derive(Debug)]
pub enum ApiErrorKind {
    /// The API answered with an error status; `message` is its `error`/`message` field.
    Status {
        code: u16,
        message: String,
        status: String,
    },
    /// A 3xx answer, not followed.
    Redirect {
        code: u16,
        location: String,
    },
    Transport(Transport),
    /// A 2xx answer whose body is not the JSON the API documents.
    Decode(String),
    /// A machine list longer than [`MAX_LISTED_MACHINES`].
    TooMany(ListError),
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

    /// A client error other than rate limiting: the platform said no to this request.
    pub fn is_refused(&self) -> bool {
        matches!(self.kind, ApiErrorKind::Status { code, .. } if (400..500).contains(&code) && code != 429)
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self.kind, ApiErrorKind::Status { code: 404, .. })
    }

    /// Whether the call may have been carried out although it failed: no answer, an answer
    /// that the machine is already past the wanted change (409, 412), or a server error.
    /// The caller reads the machine back instead of guessing.
    pub fn outcome_unknown(&self) -> bool {
        match &self.kind {
            ApiErrorKind::Transport(t) => !matches!(t, Transport::NotConnected(_)),
            ApiErrorKind::Status { code, .. } => matches!(code, 408 | 409 | 412) || *code >= 500,
            ApiErrorKind::Redirect { .. } | ApiErrorKind::Decode(_) | ApiErrorKind::TooMany(_) => {
                false
            }
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
            ApiErrorKind::Redirect { code, location } => write!(
                f,
                "{}: HTTP {code} redirect to {location} not followed: the Machines API does not \
                 redirect; check flaps-base-url (FLY_FLAPS_BASE_URL)",
                self.op
            ),
            ApiErrorKind::Transport(t) => write!(f, "{}: {t}", self.op),
            ApiErrorKind::Decode(m) => write!(f, "{}: {m}", self.op),
            ApiErrorKind::TooMany(e) => write!(f, "{}: {e}", self.op),
        }
    }
}

impl std::error::Error for ApiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ApiErrorKind::Transport(t) => Some(t),
            ApiErrorKind::TooMany(e) => Some(e),
            _ => None,
        }
    }
}

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
            agent: http::agent(None, Redirects::Refuse),
            base,
            authorization: auth::fly_api(token),
        })
    }

    /// `GET /v1/apps/{app}/machines`, no filters (the planner needs `host_status` and
    /// `config`), read as a stream of at most [`MAX_LISTED_MACHINES`].
    pub fn list_machines(&self, app: &str, deadline: Deadline) -> Result<Vec<Machine>, ApiError> {
        let op = format!("list machines of {app}");
        self.call(
            &op,
            "GET",
            &machines_path(app),
            None,
            Retry::Idempotent,
            deadline,
            |response| {
                let body = response
                    .into_body()
                    .into_with_config()
                    .limit(MAX_LIST_BYTES);
                wire::read_machine_list(body.reader(), MAX_LISTED_MACHINES).map_err(|e| match e {
                    ListError::Json(j) if j.is_io() => {
                        let io = std::io::Error::from(j);
                        ApiError::new(&op, ApiErrorKind::Transport(Transport::from_io(io)))
                    }
                    ListError::Json(j) => ApiError::new(
                        &op,
                        ApiErrorKind::Decode(format!(
                            "HTTP 200 with a body that is not the expected JSON ({j})"
                        )),
                    ),
                    too_many => ApiError::new(&op, ApiErrorKind::TooMany(too_many)),
                })
            },
        )
    }

    /// `GET /v1/apps/{app}/machines/{id}`: one machine read back.
    pub fn get_machine(
        &self,
        app: &str,
        id: &str,
        deadline: Deadline,
    ) -> Result<Machine, ApiError> {
        let op = format!("get machine {id}");
        let reply = self.buffered(&op, "GET", &machine_path(app, id, ""), None, deadline)?;
        wire::read_machine(&reply.body).map_err(|e| decode_error(&op, &reply, &e))
    }

    /// `POST /v1/apps/{app}/machines` with the cloned config, region and `skip_launch`.
    pub fn create_machine(
        &self,
        app: &str,
        request: CreateRequest,
        deadline: Deadline,
    ) -> Result<Machine, ApiError> {
        let op = format!("create machine in {app} ({})", request.region);
        let body = request.to_json();
        let reply = self.call(
            &op,
            "POST",
            &machines_path(app),
            Some(body.as_bytes()),
            Retry::OnlyIfNotSent,
            deadline,
            |r| http::read_reply(r).map_err(|t| ApiError::new(&op, ApiErrorKind::Transport(t))),
        )?;
        wire::read_machine(&reply.body).map_err(|e| decode_error(&op, &reply, &e))
    }

    /// `POST …/{id}/start`, an empty body. Starting a suspended machine resumes it.
    pub fn start_machine(&self, app: &str, id: &str, deadline: Deadline) -> Result<(), ApiError> {
        let op = format!("start machine {id}");
        self.buffered(
            &op,
            "POST",
            &machine_path(app, id, "/start"),
            Some(b""),
            deadline,
        )
        .map(drop)
    }

    /// `POST …/{id}/stop` with the body fly-go sends: the id and a zero timeout (= the
    /// machine's own stop config).
    pub fn stop_machine(&self, app: &str, id: &str, deadline: Deadline) -> Result<(), ApiError> {
        let op = format!("stop machine {id}");
        let body = serde_json::json!({ "id": id, "timeout": "0s" }).to_string();
        self.buffered(
            &op,
            "POST",
            &machine_path(app, id, "/stop"),
            Some(body.as_bytes()),
            deadline,
        )
        .map(drop)
    }

    /// `POST …/{id}/suspend`, an empty body.
    pub fn suspend_machine(&self, app: &str, id: &str, deadline: Deadline) -> Result<(), ApiError> {
        let op = format!("suspend machine {id}");
        self.buffered(
            &op,
            "POST",
            &machine_path(app, id, "/suspend"),
            Some(b""),
            deadline,
        )
        .map(drop)
    }

    /// `DELETE …/{id}?kill=true`, as the Go program destroys.
    pub fn destroy_machine(&self, app: &str, id: &str, deadline: Deadline) -> Result<(), ApiError> {
        let op = format!("destroy machine {id}");
        self.buffered(
            &op,
            "DELETE",
            &machine_path(app, id, "?kill=true"),
            None,
            deadline,
        )
        .map(drop)
    }

    /// `GET /v1/apps?org_slug={org}`: the names of the organization's apps, each once.
    pub fn list_org_apps(&self, org: &str, deadline: Deadline) -> Result<Vec<String>, ApiError> {
        let op = format!("list apps of organization {org}");
        let path = format!("/v1/apps?org_slug={}", http::percent_encode(org));
        let reply = self.buffered(&op, "GET", &path, None, deadline)?;
        let apps: OrgApps =
            serde_json::from_str(&reply.body).map_err(|e| decode_error(&op, &reply, &e))?;
        let mut names: Vec<String> = apps
            .apps
            .into_iter()
            .map(|a| a.name)
            .filter(|n| !n.is_empty())
            .collect();
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }

    /// An idempotent call whose answer is read in full.
    fn buffered(
        &self,
        op: &str,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        deadline: Deadline,
    ) -> Result<Reply, ApiError> {
        self.call(op, method, path, body, Retry::Idempotent, deadline, |r| {
            http::read_reply(r).map_err(|t| ApiError::new(op, ApiErrorKind::Transport(t)))
        })
    }

    /// One call with the retry discipline described in the module docs; `read` takes a 2xx
    /// answer's body.
    #[allow(clippy::too_many_arguments)]
    fn call<T>(
        &self,
        op: &str,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        retry: Retry,
        deadline: Deadline,
        read: impl Fn(ureq::http::Response<ureq::Body>) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let url = format!("{}{path}", self.base);
        let mut attempt = 1;
        loop {
            let response = http::start(deadline, |timeout| {
                let mut req = ureq::http::Request::builder().method(method).uri(&url);
                if let Some(auth) = &self.authorization {
                    req = req.header("Authorization", auth);
                }
                // A slice body has a known length: `Content-Length: 0` for an empty POST, as
                // Go sends it (some proxies refuse an empty chunked body).
                match body {
                    Some(b) => {
                        if !b.is_empty() {
                            req = req.header("Content-Type", "application/json");
                        }
                        run(&self.agent, req.body(b), timeout)
                    }
                    None => run(&self.agent, req.body(()), timeout),
                }
            });
            let (error, wait) = match response {
                Ok(r) if r.status().is_success() => return read(r),
                Ok(r) if r.status().is_redirection() => {
                    let reply = http::read_reply(r)
                        .map_err(|t| ApiError::new(op, ApiErrorKind::Transport(t)))?;
                    return Err(ApiError::new(
                        op,
                        ApiErrorKind::Redirect {
                            code: reply.status,
                            location: reply.shown_location(),
                        },
                    ));
                }
                Ok(r) => match http::read_reply(r) {
                    Ok(reply) => {
                        let wait = match reply.status {
                            429 => Some(retry_after(&reply)),
                            s if s >= 500 && retry == Retry::Idempotent => Some(backoff(attempt)),
                            _ => None,
                        };
                        (status_error(op, &reply), wait)
                    }
                    Err(t) => (ApiError::new(op, ApiErrorKind::Transport(t)), None),
                },
                Err(t) => {
                    let wait = match (&t, retry) {
                        (Transport::Timeout, _) => None,
                        (Transport::NotConnected(_), _)
                        | (Transport::Broken(_), Retry::Idempotent) => Some(backoff(attempt)),
                        (Transport::Broken(_), Retry::OnlyIfNotSent)
                        | (Transport::TooLarge(_), _) => None,
                    };
                    (ApiError::new(op, ApiErrorKind::Transport(t)), wait)
                }
            };
            let Some(wait) = wait.filter(|_| attempt < MAX_ATTEMPTS) else {
                return Err(error);
            };
            match deadline.remaining() {
                Some(left) if left > wait => {
                    log::warn!(op, attempt, wait_ms = wait.as_millis() as u64, err:% = error; "retrying");
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                _ => return Err(error),
            }
        }
    }
}

fn run<B: ureq::AsSendBody>(
    agent: &Agent,
    request: Result<ureq::http::Request<B>, ureq::http::Error>,
    timeout: Duration,
) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
    let request = request.map_err(ureq::Error::Http)?;
    agent.run(
        agent
            .configure_request(request)
            .timeout_global(Some(timeout))
            .build(),
    )
}

/// `/v1/apps/{app}/machines`, the app name encoded as one path segment.
fn machines_path(app: &str) -> String {
    format!("/v1/apps/{}/machines", http::percent_encode(app))
}

/// `/v1/apps/{app}/machines/{id}{rest}`: the id, which comes from the API, is encoded too, so
/// whatever it holds it addresses that one machine (or none).
fn machine_path(app: &str, id: &str, rest: &str) -> String {
    format!("{}/{}{rest}", machines_path(app), http::percent_encode(id))
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

fn decode_error(op: &str, reply: &Reply, e: &serde_json::Error) -> ApiError {
    ApiError::new(
        op,
        ApiErrorKind::Decode(format!(
            "HTTP {} with a body that is not the expected JSON ({e}): {}",
            reply.status,
            reply.excerpt()
        )),
    )
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
            body: include_str!("../testdata/fixtures/error-response-insufficient-capacity.json")
                .into(),
            ..Reply::default()
        };
        let e = status_error("create machine in my-app (ord)", &reply);
        assert_eq!(
            e.to_string(),
            "create machine in my-app (ord): HTTP 503: could not reserve resource for machine: insufficient memory available to fulfill request (insufficient_capacity)"
        );
        assert!(e.outcome_unknown());
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
    fn which_failures_leave_the_outcome_unknown() {
        let status = |code| {
            ApiError::new(
                "x",
                ApiErrorKind::Status {
                    code,
                    message: String::new(),
                    status: String::new(),
                },
            )
        };
        assert!(status(412).outcome_unknown());
        assert!(status(409).outcome_unknown());
        assert!(status(500).outcome_unknown());
        assert!(!status(404).outcome_unknown());
        assert!(!status(401).outcome_unknown());
        assert!(!status(429).outcome_unknown());
        let transport = |t| ApiError::new("x", ApiErrorKind::Transport(t));
        assert!(transport(Transport::Timeout).outcome_unknown());
        assert!(transport(Transport::Broken("reset".into())).outcome_unknown());
        assert!(!transport(Transport::NotConnected("refused".into())).outcome_unknown());
    }

    #[test]
    fn redirects_are_reported_with_their_location() {
        let e = ApiError::new(
            "list machines of a",
            ApiErrorKind::Redirect {
                code: 302,
                location: format!("{:?}", "https://elsewhere.example/\nx"),
            },
        );
        let text = e.to_string();
        assert!(
            text.contains("HTTP 302 redirect to \"https://elsewhere.example/\\nx\" not followed"),
            "{text}"
        );
        assert!(!text.contains('\n'));
    }

    #[test]
    fn retry_after_seconds() {
        let r = |v: Option<&str>| Reply {
            status: 429,
            retry_after: v.map(String::from),
            ..Reply::default()
        };
        assert!(retry_after(&r(Some("2"))) >= Duration::from_secs(2));
        assert!(retry_after(&r(None)) >= DEFAULT_RETRY_AFTER);
        assert!(retry_after(&r(Some("Wed, 21 Oct 2015 07:28:00 GMT"))) < Duration::from_secs(2));
    }
}
