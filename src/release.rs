//! The deploy guard's question to Fly's GraphQL API: is a release of this app in progress?
//! (`currentReleaseUnprocessed.status == "running"`, as flyctl sets it during a deploy.)

use serde::Deserialize;
use serde_json::{Value, json};
use ureq::Agent;

use crate::auth;
use crate::http::{self, Deadline};
use crate::secret::Secret;

/// The query fly-go sends (after its whitespace compaction).
const CURRENT_RELEASE: &str = "query ($appName: String!) { app(name: $appName) { currentRelease: currentReleaseUnprocessed { id version description reason status imageRef stable user { id email name } createdAt } } }";

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
            agent: http::agent(None),
            endpoint: format!("{}/graphql", api_base_url.trim_end_matches('/')),
            authorization: auth::fly_graphql(token),
        }
    }

    /// The status of the app's current release; `None` when the app was never deployed (the
    /// Go program crashed on that).
    pub fn current_status(&self, app: &str, deadline: Deadline) -> Result<Option<String>, String> {
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
        .map_err(|t| format!("release status of {app}: {t}"))?;
        if reply.status != 200 {
            return Err(format!(
                "release status of {app}: server returned a non-200 status code: {} ({})",
                reply.status,
                reply.excerpt()
            ));
        }
        let parsed: Response = serde_json::from_str(&reply.body).map_err(|_| {
            format!(
                "release status of {app}: response is not JSON: {}",
                reply.excerpt()
            )
        })?;
        if let Some(e) = parsed.errors.first() {
            return Err(format!("release status of {app}: {}", e.message));
        }
        let release = parsed
            .data
            .as_ref()
            .and_then(|d| d.get("app"))
            .filter(|a| !a.is_null())
            .ok_or_else(|| format!("release status of {app}: app not found"))?
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
