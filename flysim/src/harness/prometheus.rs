//! A real Prometheus server (Debian's `prometheus` 2.42), a test-controlled metrics endpoint
//! for it to scrape, and `promtool check metrics`.
//!
//! Timing (shared/reference/prometheus-and-temporal.md §4): `/-/ready` answers 0.1–0.3 s
//! after launch, but the first scraped sample is queryable only ~5–6 s after launch (the
//! scrape manager applies targets on a 5 s tick): give [`Prometheus::wait_for`] 30 s.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::process::{
    TempDir, file_tail, find_tool, http_get, start_server, terminate, wait_until,
};
use crate::http::{Handler, HttpServer, Outcome, lock};

/// family → rendered label set (`{app="a"}` or empty) → value
type Families = BTreeMap<String, BTreeMap<String, f64>>;

/// `GET /metrics` on `127.0.0.1:0` in text format 0.0.4, every family a gauge with `# HELP`
/// and `# TYPE` (so it passes `promtool check metrics`); anything else is 404.
pub struct MetricsEndpoint {
    families: Arc<Mutex<Families>>,
    http: HttpServer,
}

impl MetricsEndpoint {
    pub fn start() -> MetricsEndpoint {
        let families = Arc::new(Mutex::new(Families::new()));
        let served = Arc::clone(&families);
        let handler: Handler = Arc::new(move |rq, _| {
            let (status, content_type, body) = if rq.method == "GET" && rq.path == "/metrics" {
                let text = render(&lock(&served));
                (200, "text/plain; version=0.0.4; charset=utf-8", text)
            } else {
                (404, "text/plain", "404 page not found\n".to_string())
            };
            Outcome::Respond {
                status,
                headers: vec![("Content-Type".to_string(), content_type.to_string())],
                body,
            }
        });
        let http = HttpServer::start("127.0.0.1:0", Duration::from_secs(1), handler)
            .expect("bind the metrics endpoint");
        MetricsEndpoint { families, http }
    }

    /// Sets the unlabelled sample `name value`.
    pub fn set(&self, name: &str, value: f64) {
        self.set_labeled(name, &[], value);
    }

    /// Sets the sample `name{k="v",…} value` (label values escaped), keeping the family's
    /// other series.
    pub fn set_labeled(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        lock(&self.families)
            .entry(name.to_string())
            .or_default()
            .insert(render_labels(labels), value);
    }

    /// `127.0.0.1:PORT`, for a scrape config.
    pub fn addr(&self) -> String {
        self.http.addr().to_string()
    }

    /// `http://127.0.0.1:PORT/metrics`
    pub fn url(&self) -> String {
        format!("{}/metrics", self.http.url())
    }
}

fn render(families: &Families) -> String {
    let mut out = String::new();
    for (name, series) in families {
        out.push_str(&format!(
            "# HELP {name} Test gauge {name}.\n# TYPE {name} gauge\n"
        ));
        for (labels, value) in series {
            let value = match *value {
                v if v.is_nan() => "NaN".to_string(),
                f64::INFINITY => "+Inf".to_string(),
                f64::NEG_INFINITY => "-Inf".to_string(),
                v => v.to_string(),
            };
            out.push_str(&format!("{name}{labels} {value}\n"));
        }
    }
    out
}

/// `{k="v",…}` with values escaped, or empty.
fn render_labels(labels: &[(&str, &str)]) -> String {
    let rendered: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label_value(v)))
        .collect();
    if rendered.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", rendered.join(","))
    }
}

/// Escapes `\`, `"` and newline, the only escapes the text format has.
fn escape_label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A `prometheus` child on a free loopback port with its own temp dir (config, TSDB, log),
/// scraping every second, with a retention far longer than any history a test writes.
/// Dropping it stops it (SIGTERM, SIGKILL after 5 s) and removes the dir.
pub struct Prometheus {
    /// `None` between [`Prometheus::stop`] and [`Prometheus::restart`].
    child: Option<Child>,
    port: u16,
    bin: PathBuf,
    log: PathBuf,
    // Removed after the process is stopped (fields drop after `Drop::drop`).
    dir: TempDir,
}

/// Time-based retention counts back from the newest block, so backfilled history of any age
/// a test or the bench writes stays.
const RETENTION: &str = "3650d";

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`127.0.0.1:PORT`, path `/metrics`) in one job
    /// `test`, and waits for `/-/ready`.
    pub fn start(targets: &[&str]) -> Prometheus {
        Prometheus::start_in(TempDir::new("prometheus"), targets)
    }

    /// Like [`Prometheus::start`], on a TSDB that already holds `history`: written with
    /// `promtool tsdb create-blocks-from openmetrics` before Prometheus starts, so range
    /// queries over the past answer at once.
    pub fn start_with_history(targets: &[&str], history: &History) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let input = dir.write("history.om", &history.render());
        let out = Command::new(find_tool("PROMTOOL_BIN", "promtool"))
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            // One pass over the input per block: the default 2-hour blocks make a month of
            // history take a minute instead of a second.
            .arg("--max-block-duration=8760h")
            .arg(&input)
            .arg(dir.path().join("data"))
            .stdin(Stdio::null())
            .output()
            .expect("cannot start promtool");
        assert!(
            out.status.success(),
            "promtool tsdb create-blocks-from openmetrics failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The input can be large (the bench writes a month); the blocks hold it now.
        let _ = std::fs::remove_file(&input);
        Prometheus::start_in(dir, targets)
    }

    fn start_in(dir: TempDir, targets: &[&str]) -> Prometheus {
        let bin = find_tool("PROMETHEUS_BIN", "prometheus");
        dir.write("prometheus.yml", &config_yaml(targets));
        let log = dir.path().join("prometheus.log");
        let (child, ports) = start_server(
            &log,
            1,
            |ports| command(&bin, dir.path(), ports[0]),
            |ports| ready(ports[0]),
        );
        Prometheus {
            child: Some(child),
            port: ports[0],
            bin,
            log,
            dir,
        }
    }

    /// Stops the server (SIGTERM), keeping its data and port for [`Prometheus::restart`]:
    /// queries fail until then.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(5));
        }
    }

    /// Starts the stopped server again on the same port and data, and waits for `/-/ready`.
    pub fn restart(&mut self) {
        self.stop();
        let mut child = command(&self.bin, self.dir.path(), self.port)
            .stdin(Stdio::null())
            .stdout(log_file(&self.log))
            .stderr(log_file(&self.log))
            .spawn()
            .expect("cannot restart prometheus");
        let mut exited = None;
        let up = wait_until(Duration::from_secs(60), || {
            exited = child.try_wait().expect("try_wait");
            exited.is_none() && ready(self.port)
        });
        if !up {
            terminate(&mut child, Duration::from_secs(5));
            panic!(
                "prometheus did not restart on port {} ({exited:?}):\n{}",
                self.port,
                self.log_tail(30)
            );
        }
        self.child = Some(child);
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The running server's pid (0 while stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        file_tail(&self.log, lines)
    }

    fn query_raw(&self, promql: &str) -> Result<(u16, String), String> {
        let url = format!("{}/api/v1/query", self.url());
        http_get(&url, &[("query", promql)], Duration::from_secs(10))
    }

    /// The first sample of an instant query: of the first series of a vector, a scalar, or
    /// the last point of a matrix's first series. `None` when empty or failed.
    pub fn query(&self, promql: &str) -> Option<f64> {
        match self.query_raw(promql) {
            Ok((200, body)) => first_value(&body),
            _ => None,
        }
    }

    /// Polls [`Prometheus::query`] until `pred` holds for its value and returns it; panics
    /// after `timeout` with the last answer, the targets' health and the log's tail.
    pub fn wait_for(&self, promql: &str, pred: impl Fn(f64) -> bool, timeout: Duration) -> f64 {
        let mut last = Err(String::new());
        let mut value = None;
        let seen = wait_until(timeout, || {
            last = self.query_raw(promql);
            value = last.as_ref().ok().and_then(|(_, body)| first_value(body));
            value.is_some_and(&pred)
        });
        match (seen, value) {
            (true, Some(v)) => v,
            _ => panic!(
                "Prometheus::wait_for(`{promql}`) timed out after {timeout:?}\nlast answer: {last:?}\ntargets: {}\n--- prometheus log (tail) ---\n{}",
                self.targets_summary(),
                self.log_tail(20)
            ),
        }
    }

    /// Health of the scrape target `target` (`127.0.0.1:PORT`): "up", "down" or "unknown";
    /// `None` while Prometheus does not list it.
    pub fn scrape_health(&self, target: &str) -> Option<String> {
        self.active_targets()
            .into_iter()
            .find(|t| t["labels"]["instance"] == target)
            .and_then(|t| t["health"].as_str().map(str::to_string))
    }

    fn active_targets(&self) -> Vec<Value> {
        let url = format!("{}/api/v1/targets", self.url());
        let body =
            http_get(&url, &[], Duration::from_secs(10)).map_or_else(|_| String::new(), |(_, b)| b);
        match serde_json::from_str::<Value>(&body) {
            Ok(mut v) => v["data"]["activeTargets"]
                .as_array_mut()
                .map(std::mem::take)
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    fn targets_summary(&self) -> String {
        let parts: Vec<String> = self
            .active_targets()
            .iter()
            .map(|t| {
                format!(
                    "{} health={} lastError={}",
                    t["scrapeUrl"], t["health"], t["lastError"]
                )
            })
            .collect();
        parts.join("; ")
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The server's command line: config and TSDB in `dir`, listening on `port`.
fn command(bin: &Path, dir: &Path, port: u16) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg(format!(
        "--config.file={}",
        dir.join("prometheus.yml").display()
    ))
    .arg(format!(
        "--storage.tsdb.path={}",
        dir.join("data").display()
    ))
    .arg(format!("--storage.tsdb.retention.time={RETENTION}"))
    .arg(format!("--web.listen-address=127.0.0.1:{port}"))
    .current_dir(dir);
    cmd
}

fn ready(port: u16) -> bool {
    let url = format!("http://127.0.0.1:{port}/-/ready");
    matches!(http_get(&url, &[], Duration::from_secs(2)), Ok((200, _)))
}

fn log_file(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// Gauge samples with timestamps, for [`Prometheus::start_with_history`]: rendered as
/// OpenMetrics, each series' samples together and in time order.
#[derive(Debug, Default, Clone)]
pub struct History {
    /// family → series (rendered labels) → `(unix seconds, value)`
    families: BTreeMap<String, BTreeMap<String, Vec<(f64, f64)>>>,
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    /// Adds samples to the series `name{labels}`; `None` values are left out (a gap).
    pub fn gauge(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        samples: impl IntoIterator<Item = (f64, Option<f64>)>,
    ) -> &mut History {
        let series = self
            .families
            .entry(name.to_string())
            .or_default()
            .entry(render_labels(labels))
            .or_default();
        series.extend(samples.into_iter().filter_map(|(t, v)| Some((t, v?))));
        series.sort_by(|a, b| a.0.total_cmp(&b.0));
        self
    }

    /// The OpenMetrics text promtool reads.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, series) in &self.families {
            out.push_str(&format!(
                "# HELP {name} Test gauge {name}.\n# TYPE {name} gauge\n"
            ));
            for (labels, samples) in series {
                for (t, v) in samples {
                    out.push_str(&format!("{name}{labels} {v} {t}\n"));
                }
            }
        }
        out.push_str("# EOF\n");
        out
    }
}

fn config_yaml(targets: &[&str]) -> String {
    let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: 'test'\n    static_configs:\n      - targets: [{}]\n",
        list.join(", ")
    )
}

/// The first value of a `/api/v1/query` answer (see [`Prometheus::query`]).
fn first_value(body: &str) -> Option<f64> {
    let v: Value = serde_json::from_str(body).ok()?;
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
    pair[1].as_str()?.parse().ok()
}

/// `Ok` when `promtool check metrics` (`$PROMTOOL_BIN` or on PATH) accepts `text`, else its
/// complaints.
pub fn promtool_check_metrics(text: &str) -> Result<(), String> {
    let mut child = Command::new(find_tool("PROMTOOL_BIN", "promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start promtool");
    let mut stdin = child.stdin.take().expect("stdin pipe");
    let text = text.to_string();
    // A writer thread, so a large text cannot deadlock against promtool's output.
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let out = child.wait_with_output().expect("promtool output");
    let _ = writer.join();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&[out.stderr, out.stdout].concat()).into_owned())
    }
}
