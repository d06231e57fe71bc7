//! The usual wiring of a `serve` run: a Prometheus stand-in whose answer per app the caller
//! controls, and the environment that points the autoscaler at it and at the simulator.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::http::lock;
use crate::{FakeServer, Reply, Simulator};

/// The API token the scenario configures, and the header the simulator then requires.
pub const TOKEN: &str = "fm2_testsecret";
pub const TOKEN_HEADER: &str = "FlyV1 fm2_testsecret";

#[derive(Default)]
struct Answer {
    value: f64,
    delay: Option<Duration>,
}

/// A Prometheus stand-in answering every instant query with one scalar, the metric `q`.
pub struct PromStub {
    server: FakeServer,
    answer: Arc<Mutex<Answer>>,
}

impl PromStub {
    pub fn start(value: f64) -> PromStub {
        let answer = Arc::new(Mutex::new(Answer { value, delay: None }));
        let read = Arc::clone(&answer);
        let server = FakeServer::start(move |_| {
            let answer = lock(&read);
            let body = format!(
                r#"{{"status":"success","data":{{"resultType":"scalar","result":[1,"{}"]}}}}"#,
                answer.value
            );
            let reply = Reply::json(200, &body);
            match answer.delay {
                Some(d) => reply.delayed(d),
                None => reply,
            }
        });
        PromStub { server, answer }
    }

    pub fn set(&self, value: f64) {
        lock(&self.answer).value = value;
    }

    /// Answers after `d` (a slow Prometheus).
    pub fn set_delay(&self, d: Duration) {
        lock(&self.answer).delay = Some(d);
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Queries answered so far.
    pub fn requests(&self) -> usize {
        self.server.requests().len()
    }
}

/// A server the autoscaler can query as Prometheus: the stand-in or the real thing.
pub trait PrometheusApi {
    /// `http://127.0.0.1:PORT`
    fn url(&self) -> String;
}

impl PrometheusApi for PromStub {
    fn url(&self) -> String {
        PromStub::url(self)
    }
}

impl PrometheusApi for crate::harness::Prometheus {
    fn url(&self) -> String {
        crate::harness::Prometheus::url(self)
    }
}

/// Environment for the autoscaler against `sim` (made to require [`TOKEN`]) and metric `q`
/// from `prom`, for `app` (a name or a wildcard). The query is `$APP_NAME`, which the
/// stand-in ignores; against a real Prometheus, replace `FAS_PROMETHEUS_QUERY`.
pub fn autoscaler_env(
    sim: &Simulator,
    prom: &impl PrometheusApi,
    app: &str,
) -> Vec<(String, String)> {
    let mut env = sim_env(sim, app);
    for (k, v) in [
        ("FAS_PROMETHEUS_ADDRESS", prom.url().as_str()),
        ("FAS_PROMETHEUS_METRIC_NAME", "q"),
        ("FAS_PROMETHEUS_QUERY", "$APP_NAME"),
    ] {
        env.push((k.to_string(), v.to_string()));
    }
    env
}

/// Environment for the autoscaler against `sim` (made to require [`TOKEN`]) for `app`,
/// without a metric source: the caller's config file names one.
pub fn sim_env(sim: &Simulator, app: &str) -> Vec<(String, String)> {
    sim.set_token(Some(TOKEN_HEADER));
    [
        ("FAS_APP_NAME", app),
        ("FAS_API_TOKEN", TOKEN),
        ("FLY_FLAPS_BASE_URL", &sim.url()),
        ("FLY_API_BASE_URL", &sim.url()),
        ("FAS_TIMEOUT", "10s"),
        // The log lines read back are text, whatever the binary's default.
        ("FAS_LOG_FORMAT", "text"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// `base` with `extra` added or replacing its pairs, as the `&[(&str, &str)]` runners take.
pub fn with<'a>(
    base: &'a [(String, String)],
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut out: Vec<(&str, &str)> = base
        .iter()
        .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    out.extend_from_slice(extra);
    out
}
