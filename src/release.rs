//! The deploy guard's question to Fly's GraphQL API: is a release of this app in progress?
//! (`currentReleaseUnprocessed.status == "running"`, as flyctl sets it during a deploy.)

use std::fmt;

use serde::Deserialize;
use serde_json::{Value, json};
use ureq::Agent;

use crate::auth;
use crate::http::{self, Deadline, Redirects, Transport};
use crate::secret::Secret;

/// The query fly-go sends (after its whitespace compaction).
const CURRENT_RELEASE: &str = "query ($appName: String!) { app(name: $appName) { currentRelease: currentReleaseUnprocessed { id version description reason status imageRef stable user { id email name } createdAt } } }";

/// A release check that got no usable answer.
#[derive(Debug)]
pub struct ReleaseError {
    pub app: String,
    pub kind: ReleaseErrorKind,
}

#[derive(Debug)]
pub enum ReleaseErrorKind {
    Transport(Transport),
    /// A non-200 answer, with an excerpt of its body (or the `Location` of a redirect).
    Status(u16, String),
    NotJson(String),
    /// The API's own error message.
    Graphql(String),
    AppNotFound,
}

impl ReleaseError {
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, ReleaseErrorKind::Transport(Transport::Timeout))
    }
}

impl fmt::Display for ReleaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "release status of {}: ", self.app)?;
        match &self.kind {
            ReleaseErrorKind::Transport(t) => write!(f, "{t}"),
            ReleaseErrorKind::Status(code, excerpt) if (300..400).contains(code) => write!(
                f,
                "HTTP {code} redirect to {excerpt} not followed; check api-base-url (FLY_API_BASE_URL)"
            ),
            ReleaseErrorKind::Status(code, excerpt) => write!(
                f,
                "server returned a non-200 status code: {code} ({excerpt})"
            ),
            ReleaseErrorKind::NotJson(excerpt) => write!(f, "response is not JSON: {excerpt}"),
            ReleaseErrorKind::Graphql(m) => f.write_str(m),
            ReleaseErrorKind::AppNotFound => f.write_str("app not found"),
        }
    }
}

impl std::error::Error for ReleaseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ReleaseErrorKind::Transport(t) => Some(t),
            _ => None,
        }
    }
}

pub struct ReleaseClient {
    agent: Agent,
    endpoint: String,
    authorization: Option<String>,
}

#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    errors: Vec<GraphqlError>,
}

#[derive(Deserialize)]
struct GraphqlError {
    #[serde(default)]
    message: String,
}

impl ReleaseClient {
    /// `api_base_url` as in `FLY_API_BASE_URL`; the endpoint is `<base>/graphql`.
    pub fn new(api_base_url: &str, token: &Secret) -> ReleaseClient {
        ReleaseClient {
            agent: http::agent(None, Redirects::Refuse),
            endpoint: format!("{}/graphql", api_base_url.trim_end_matches('/')),
            authorization: auth::fly_graphql(token),
        }
    }

    /// The status of the app's current release; `None` when the app was never deployed (the
    /// Go program crashed on that).
    pub fn current_status(
        &self,
        app: &str,
        deadline: Deadline,
    ) -> Result<Option<String>, ReleaseError> {
        let fail = |kind| ReleaseError {
            app: app.to_string(),
            kind,
        };
        let body = json!({ "query": CURRENT_RELEASE, "variables": { "appName": app } });
        let reply = http::exchange(deadline, |timeout| {
            let mut req = self
                .agent
                .post(&self.endpoint)
                .header("Content-Type", "application/json; charset=utf-8")
                .header("Accept", "application/json; charset=utf-8");
            if let Some(a) = &self.authorization {
                req = req.header("Authorization", a);
            }
            req.config()
                .timeout_global(Some(timeout))
                .build()
                .send(body.to_string())
        })
        .map_err(|t| fail(ReleaseErrorKind::Transport(t)))?;
        if (300..400).contains(&reply.status) {
            return Err(fail(ReleaseErrorKind::Status(
                reply.status,
                reply.shown_location(),
            )));
        }
        if reply.status != 200 {
            return Err(fail(ReleaseErrorKind::Status(
                reply.status,
                reply.excerpt(),
            )));
        }
        let parsed: Response = serde_json::from_str(&reply.body)
            .map_err(|_| fail(ReleaseErrorKind::NotJson(reply.excerpt())))?;
        if let Some(e) = parsed.errors.first() {
            return Err(fail(ReleaseErrorKind::Graphql(e.message.clone())));
        }
        let release = parsed
            .data
            .as_ref()
            .and_then(|d| d.get("app"))
            .filter(|a| !a.is_null())
            .ok_or_else(|| fail(ReleaseErrorKind::AppNotFound))?
            .get("currentRelease")
            .filter(|r| !r.is_null());
        Ok(release.map(|r| {
            r.get("status")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        }))
    }
}
