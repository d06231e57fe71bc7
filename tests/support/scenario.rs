//! Wiring shared by the tests that run `serve`: a metric source whose value per app the test
//! controls, and the environment that points the binary at it and at the simulator.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::fake_http::{FakeServer, Reply};
use super::simulator::Simulator;

/// The token the tests configure, and the header the simulator then expects.
pub const TOKEN: &str = "fm2_testsecret";
pub const TOKEN_HEADER: &str = "FlyV1 fm2_testsecret";

/// A Prometheus stand-in answering the query `<app name>` (the configured query is
/// `$APP_NAME`) with that app's value, or the default value.
pub struct Metric {
    server: FakeServer,
    values: Arc<Mutex<HashMap<String, f64>>>,
}

impl Metric {
    pub fn start(default: f64) -> Metric {
        let values = Arc::new(Mutex::new(HashMap::from([(String::new(), default)])));
        let v = Arc::clone(&values);
        let server = FakeServer::start(move |req| {
            let form = if req.body.is_empty() {
                req.query.clone()
            } else {
                req.body.clone()
            };
            let app = form
                .split('&')
                .find_map(|p| p.strip_prefix("query="))
                .unwrap_or("")
                .to_string();
            let values = v.lock().unwrap();
            let value = values
                .get(&app)
                .or_else(|| values.get(""))
                .copied()
                .unwrap_or(0.0);
            Reply::json(
                200,
                &format!(
                    r#"{{"status":"success","data":{{"resultType":"scalar","result":[1,"{value}"]}}}}"#
                ),
            )
        });
        Metric { server, values }
    }

    /// Sets the value for every app without its own.
    pub fn set(&self, value: f64) {
        self.values.lock().unwrap().insert(String::new(), value);
    }

    pub fn set_for(&self, app: &str, value: f64) {
        self.values.lock().unwrap().insert(app.to_string(), value);
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn requests(&self) -> usize {
        self.server.requests().len()
    }
}

/// Environment for `serve` against `sim` with the metric `q` from `metric`. The simulator is
/// made to require the token.
pub fn env(sim: &Simulator, metric: &Metric, app: &str) -> Vec<(String, String)> {
    sim.set_token(Some(TOKEN_HEADER));
    [
        ("FAS_APP_NAME", app),
        ("FAS_API_TOKEN", TOKEN),
        ("FLY_FLAPS_BASE_URL", sim.url().as_str()),
        ("FLY_API_BASE_URL", sim.url().as_str()),
        ("FAS_PROMETHEUS_ADDRESS", metric.url().as_str()),
        ("FAS_PROMETHEUS_METRIC_NAME", "q"),
        ("FAS_PROMETHEUS_QUERY", "$APP_NAME"),
        ("FAS_TIMEOUT", "10s"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// `env` plus overrides, as the `&[(&str, &str)]` the runners take.
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
