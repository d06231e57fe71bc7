//! A real Prometheus server (Debian's `prometheus` 2.42) for integration tests, a
//! test-controlled metrics endpoint for it to scrape, and `promtool check metrics`.
//!
//! Timing (see shared/reference/prometheus-and-temporal.md §4): `/-/ready` answers
//! 0.1–0.3 s after launch, but the first scraped sample is queryable only ~5–6 s after
//! launch (the scrape manager applies targets on a 5 s tick), so use
//! [`Prometheus::wait_for`] with a timeout of 20 s or more for the first value.

use super::bin::{TempDir, file_tail, find_tool, free_port, http_get, spawn_logged, terminate};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// A generous timeout for the *first* scraped sample to become queryable (it takes
/// ~5–6 s after start on an idle machine; more when the suite runs in parallel).
pub const FIRST_SAMPLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Content type of the Prometheus text exposition format 0.0.4.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

// ---------------------------------------------------------------------------------------
// MetricsEndpoint
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Exposition {
    /// family name → (rendered label set, e.g. `{app="a"}` or "") → value
    families: BTreeMap<String, BTreeMap<String, f64>>,
    /// When set, served verbatim instead of the families.
    raw: Option<String>,
}

/// A tiny_http server on 127.0.0.1:0 serving `GET /metrics` in text format 0.0.4
/// (every family a gauge with `# HELP` and `# TYPE` lines, so the output passes
/// `promtool check metrics`). Any other path is 404. Drop stops the server.
pub struct MetricsEndpoint {
    server: Arc<tiny_http::Server>,
    state: Arc<Mutex<Exposition>>,
    scrapes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    port: u16,
}

impl MetricsEndpoint {
    pub fn start() -> MetricsEndpoint {
        let server = Arc::new(
            tiny_http::Server::http("127.0.0.1:0").expect("bind metrics endpoint on 127.0.0.1:0"),
        );
        let port = server
            .server_addr()
            .to_ip()
            .expect("metrics endpoint listens on IP")
            .port();
        let state = Arc::new(Mutex::new(Exposition::default()));
        let scrapes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (server, state, scrapes, stop) = (
                Arc::clone(&server),
                Arc::clone(&state),
                Arc::clone(&scrapes),
                Arc::clone(&stop),
            );
            thread::spawn(move || {
                loop {
                    let req = match server.recv() {
                        Ok(req) => req,
                        Err(_) if stop.load(Ordering::SeqCst) => break,
                        Err(_) => continue,
                    };
                    let path = req.url().split('?').next().unwrap_or("");
                    let resp = if *req.method() == tiny_http::Method::Get && path == "/metrics" {
                        scrapes.fetch_add(1, Ordering::SeqCst);
                        let body = render(&state.lock().unwrap());
                        tiny_http::Response::from_string(body).with_header(
                            tiny_http::Header::from_bytes("Content-Type", TEXT_FORMAT)
                                .expect("header"),
                        )
                    } else {
                        tiny_http::Response::from_string("404 page not found\n")
                            .with_status_code(404)
                    };
                    let _ = req.respond(resp);
                }
            })
        };
        MetricsEndpoint {
            server,
            state,
            scrapes,
            stop,
            thread: Some(thread),
            port,
        }
    }

    /// Sets the unlabeled gauge sample `name value` (with `# TYPE name gauge`).
    pub fn set(&self, name: &str, value: f64) {
        self.set_labeled(name, &[], value);
    }

    /// Sets the gauge sample `name{k="v",…} value`; label values are escaped.
    /// Other series of the same family are kept.
    pub fn set_labeled(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        let key = render_labels(labels);
        let mut state = self.state.lock().unwrap();
        state
            .families
            .entry(name.to_owned())
            .or_default()
            .insert(key, value);
    }

    /// Removes the whole family `name` (all its series).
    pub fn remove(&self, name: &str) {
        self.state.lock().unwrap().families.remove(name);
    }

    /// Serves `body` verbatim (e.g. a broken exposition) until called with `None`.
    pub fn set_raw(&self, body: Option<&str>) {
        self.state.lock().unwrap().raw = body.map(str::to_owned);
    }

    /// The body `GET /metrics` returns right now.
    pub fn render(&self) -> String {
        render(&self.state.lock().unwrap())
    }

    /// How many `GET /metrics` requests were answered.
    pub fn scrapes(&self) -> u64 {
        self.scrapes.load(Ordering::SeqCst)
    }

    /// "127.0.0.1:PORT" — what to put in a scrape config.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// "http://127.0.0.1:PORT/metrics"
    pub fn url(&self) -> String {
        format!("http://{}/metrics", self.addr())
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn render(state: &Exposition) -> String {
    if let Some(raw) = &state.raw {
        return raw.clone();
    }
    let mut out = String::new();
    for (name, series) in &state.families {
        out.push_str(&format!(
            "# HELP {name} Test gauge {name}.\n# TYPE {name} gauge\n"
        ));
        for (labels, value) in series {
            out.push_str(&format!("{name}{labels} {}\n", format_value(*value)));
        }
    }
    out
}

fn render_labels(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label_value(v)))
        .collect();
    format!("{{{}}}", parts.join(","))
}

/// Escapes `\`, `"` and newline, the only escapes the text format allows.
pub fn escape_label_value(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// A sample value as the text format writes it: `NaN`, `+Inf`, `-Inf`, or the number.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{v}")
    }
}

// ---------------------------------------------------------------------------------------
// Prometheus server
// ---------------------------------------------------------------------------------------

const READY_DEADLINE: Duration = Duration::from_secs(30);
const START_ATTEMPTS: u32 = 5;

/// A `prometheus` child process on a free loopback port with its own temp dir (config,
/// TSDB, log). Drop sends SIGTERM, waits (SIGKILL after 5 s) and removes the dir.
pub struct Prometheus {
    child: Child,
    port: u16,
    log: PathBuf,
    // Dropped after `child` is stopped (see Drop): removes config, TSDB and log.
    dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `scrape_targets` ("127.0.0.1:PORT", path `/metrics`)
    /// every 1 s in one job named `test`, and waits for `/-/ready`.
    pub fn start(scrape_targets: &[&str]) -> Prometheus {
        Prometheus::start_with_jobs(&[("test", scrape_targets)])
    }

    /// Like [`Prometheus::start`] with several jobs: `(job_name, targets)`.
    pub fn start_with_jobs(jobs: &[(&str, &[&str])]) -> Prometheus {
        let bin = find_tool("PROMETHEUS_BIN", "prometheus");
        let dir = TempDir::new("prometheus");
        let config = dir.write("prometheus.yml", &config_yaml(jobs));
        let tsdb = dir.path().join("data");
        let log = dir.path().join("prometheus.log");
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port();
            let mut child = spawn_logged(
                Command::new(&bin)
                    .arg(format!("--config.file={}", config.display()))
                    .arg(format!("--storage.tsdb.path={}", tsdb.display()))
                    .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                    .current_dir(dir.path()),
                &log,
                &format!(
                    "--- attempt {attempt}: {} on port {port} ---",
                    bin.display()
                ),
            );
            let url = format!("http://127.0.0.1:{port}/-/ready");
            let deadline = Instant::now() + READY_DEADLINE;
            loop {
                if let Ok((200, _)) = http_get(&url, &[], Duration::from_secs(2)) {
                    return Prometheus {
                        child,
                        port,
                        log,
                        dir,
                    };
                }
                if let Some(status) = child.try_wait().expect("try_wait") {
                    let tail = file_tail(&log, 30);
                    if tail.contains("address already in use") && attempt < START_ATTEMPTS {
                        break; // port taken between free_port() and the bind: retry
                    }
                    panic!("prometheus exited ({status}) before it was ready; log tail:\n{tail}");
                }
                if Instant::now() >= deadline {
                    terminate(&mut child, Duration::from_secs(5));
                    panic!(
                        "prometheus not ready at {url} after {READY_DEADLINE:?}; log tail:\n{}",
                        file_tail(&log, 30)
                    );
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        unreachable!("prometheus start attempts exhausted")
    }

    /// "http://127.0.0.1:PORT"
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's temp dir (holds `prometheus.yml`, `data/`, `prometheus.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last `lines` lines of Prometheus' log.
    pub fn log_tail(&self, lines: usize) -> String {
        file_tail(&self.log, lines)
    }

    /// `GET /api/v1/query?query=…`: (HTTP status, body), or Err on a transport error.
    pub fn query_raw(&self, promql: &str) -> Result<(u16, String), String> {
        http_get(
            &format!("{}/api/v1/query", self.url()),
            &[("query", promql)],
            Duration::from_secs(10),
        )
    }

    /// The first sample of an instant query: the first series of a vector (series order is
    /// Prometheus'), a scalar, or the last point of the first series of a matrix.
    /// `None` when the result is empty, a string, or the query fails.
    pub fn query(&self, promql: &str) -> Option<f64> {
        match self.query_raw(promql) {
            Ok((200, body)) => first_value(&body),
            _ => None,
        }
    }

    /// Polls [`Prometheus::query`] every 100 ms until it yields a value for which `pred`
    /// is true and returns it. On timeout panics with the last raw response, the scrape
    /// targets' health and the tail of Prometheus' log.
    pub fn wait_for(&self, promql: &str, pred: impl Fn(f64) -> bool, timeout: Duration) -> f64 {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.query_raw(promql);
            if let Ok((200, body)) = &last {
                if let Some(v) = first_value(body) {
                    if pred(v) {
                        return v;
                    }
                }
            }
            if Instant::now() >= deadline {
                let last = match last {
                    Ok((status, body)) => format!("HTTP {status}: {body}"),
                    Err(e) => format!("transport error: {e}"),
                };
                panic!(
                    "Prometheus::wait_for(`{promql}`) timed out after {timeout:?}\nlast response: {last}\ntargets: {}\n--- prometheus log (tail) ---\n{}",
                    self.targets_summary(),
                    self.log_tail(20)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Health of the scrape target whose instance/address is `target` ("127.0.0.1:PORT"),
    /// from `/api/v1/targets`: "up", "down" or "unknown" (not scraped yet); `None` if
    /// Prometheus does not list it (yet) or the request fails.
    pub fn scrape_health(&self, target: &str) -> Option<String> {
        self.active_targets()
            .into_iter()
            .find(|t| target_matches(t, target))
            .and_then(|t| t["health"].as_str().map(str::to_owned))
    }

    /// The `lastError` of the scrape target `target` ("" when the last scrape worked).
    pub fn scrape_error(&self, target: &str) -> Option<String> {
        self.active_targets()
            .into_iter()
            .find(|t| target_matches(t, target))
            .and_then(|t| t["lastError"].as_str().map(str::to_owned))
    }

    /// Polls [`Prometheus::scrape_health`] every 100 ms until it equals `health`
    /// ("up"/"down"); panics with the targets and log tail on timeout.
    pub fn wait_for_health(&self, target: &str, health: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.scrape_health(target).as_deref() == Some(health) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "target {target} not {health} after {timeout:?}\ntargets: {}\n--- prometheus log (tail) ---\n{}",
                    self.targets_summary(),
                    self.log_tail(20)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn active_targets(&self) -> Vec<serde_json::Value> {
        let Ok((200, body)) = http_get(
            &format!("{}/api/v1/targets", self.url()),
            &[],
            Duration::from_secs(10),
        ) else {
            return Vec::new();
        };
        let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&body) else {
            return Vec::new();
        };
        match v["data"]["activeTargets"].take() {
            serde_json::Value::Array(targets) => targets,
            _ => Vec::new(),
        }
    }

    fn targets_summary(&self) -> String {
        let parts: Vec<String> = self
            .active_targets()
            .iter()
            .map(|t| {
                format!(
                    "{} {} health={} lastError={:?}",
                    t["labels"]["job"].as_str().unwrap_or("?"),
                    t["scrapeUrl"].as_str().unwrap_or("?"),
                    t["health"].as_str().unwrap_or("?"),
                    t["lastError"].as_str().unwrap_or("")
                )
            })
            .collect();
        if parts.is_empty() {
            "(none)".to_owned()
        } else {
            parts.join("; ")
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(5));
        // `dir` (a TempDir) is removed when the fields drop, after the process is gone.
    }
}

fn target_matches(t: &serde_json::Value, target: &str) -> bool {
    t["labels"]["instance"].as_str() == Some(target)
        || t["discoveredLabels"]["__address__"].as_str() == Some(target)
        || t["scrapeUrl"].as_str() == Some(target)
}

fn config_yaml(jobs: &[(&str, &[&str])]) -> String {
    let mut y = String::from(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:",
    );
    let jobs: Vec<_> = jobs
        .iter()
        .filter(|(_, targets)| !targets.is_empty())
        .collect();
    if jobs.is_empty() {
        y.push_str(" []\n");
        return y;
    }
    y.push('\n');
    for (job, targets) in jobs {
        let list: Vec<String> = targets
            .iter()
            .map(|t| format!("'{}'", t.replace('\'', "''")))
            .collect();
        y.push_str(&format!(
            "  - job_name: '{}'\n    static_configs:\n      - targets: [{}]\n",
            job.replace('\'', "''"),
            list.join(", ")
        ));
    }
    y
}

/// First value of a `/api/v1/query` response body (see [`Prometheus::query`]).
pub fn first_value(body: &str) -> Option<f64> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    if v["status"] != "success" {
        return None;
    }
    let data = &v["data"];
    let pair = match data["resultType"].as_str()? {
        "vector" => &data["result"][0]["value"],
        "scalar" => &data["result"],
        "matrix" => data["result"][0]["values"].as_array()?.last()?,
        _ => return None,
    };
    pair[1].as_str()?.parse::<f64>().ok()
}

// ---------------------------------------------------------------------------------------
// promtool
// ---------------------------------------------------------------------------------------

/// `$PROMTOOL_BIN` or `promtool` on PATH (panics with a hint to run `.ci/deps`).
pub fn promtool() -> PathBuf {
    find_tool("PROMTOOL_BIN", "promtool")
}

/// Runs `promtool check metrics` with `text` on stdin: (exit code, stdout, stderr).
/// promtool exits 0 when clean, 3 for lint problems, 1 for parse errors.
pub fn promtool_check_metrics_output(text: &str) -> (Option<i32>, String, String) {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start promtool");
    let mut stdin = child.stdin.take().expect("stdin pipe");
    let text = text.to_owned();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(text.as_bytes());
    });
    let out = child.wait_with_output().expect("promtool output");
    let _ = writer.join();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `Ok(())` when `promtool check metrics` accepts `text` (exit 0), else `Err(stderr + stdout)`.
pub fn promtool_check_metrics(text: &str) -> Result<(), String> {
    match promtool_check_metrics_output(text) {
        (Some(0), _, _) => Ok(()),
        (_, stdout, stderr) => Err(format!("{stderr}{stdout}")),
    }
}
