//! Run the real `fly-autoscaler` binary (or any program) hermetically, plus the small
//! helpers the other support modules share: free ports, temp dirs, finding external tools.
//!
//! Environment rule for every child started here: the environment is cleared except
//! `PATH`, `HOME` and `TMPDIR`, then the caller's `env` pairs are added, so `FAS_*`,
//! `FLY_*`, `RUST_LOG`, … of the developer's shell never leak into a test.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long `run`/`run_command` lets a child run before killing it and panicking.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Variables kept from the test process' environment.
const KEPT_VARS: [&str; 3] = ["PATH", "HOME", "TMPDIR"];

/// Whether the tests run as root (else namespaces must be entered with `unshare --user`).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false)
}

/// The built binary under test. Integration tests get its path from Cargo; examples (which
/// include this module too) find it next to their own directory, `target/<profile>/`.
pub fn binary() -> PathBuf {
    if let Some(path) = option_env!("CARGO_BIN_EXE_fly-autoscaler") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("path of the running example");
    let profile_dir = exe
        .parent()
        .and_then(|examples| examples.parent())
        .expect("examples live in target/<profile>/examples");
    profile_dir.join("fly-autoscaler")
}

/// What a finished child printed and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code; `None` when the child was ended by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the binary under test with `args` and the hermetic environment plus `env`.
/// Stdin is null. Kills the child and panics if it runs longer than [`RUN_TIMEOUT`].
pub fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    run_command(binary(), args, env)
}

/// Like [`run`], with text fed to the child's stdin (then closed).
pub fn run_with_stdin(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    run_inner(binary().as_os_str(), args, env, Some(stdin))
}

/// Like [`run`] for any program (same environment rule, stdin null, timeout).
pub fn run_command(
    program: impl AsRef<std::ffi::OsStr>,
    args: &[&str],
    env: &[(&str, &str)],
) -> Output {
    run_inner(program.as_ref(), args, env, None)
}

fn run_inner(
    program: &std::ffi::OsStr,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&str>,
) -> Output {
    let mut cmd = hermetic_command(program, args, env);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let shown = describe(program, args);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        let text = text.to_owned();
        // A writer thread, so a child that never reads cannot block us.
        thread::spawn(move || {
            use std::io::Write;
            let _ = pipe.write_all(text.as_bytes());
        });
    }
    let out = Capture::start(&mut child);
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = match wait_until(&mut child, deadline) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            out.finish(Duration::from_secs(2));
            panic!(
                "{shown} still running after {RUN_TIMEOUT:?}; killed.\n--- stdout ---\n{}\n--- stderr ---\n{}",
                out.stdout(),
                out.stderr()
            );
        }
    };
    out.finish(Duration::from_secs(5));
    Output {
        code: status.code(),
        stdout: out.stdout(),
        stderr: out.stderr(),
    }
}

/// A `Command` with the hermetic environment (see the module docs).
pub fn hermetic_command(
    program: impl AsRef<std::ffi::OsStr>,
    args: &[&str],
    env: &[(&str, &str)],
) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args).env_clear();
    for key in KEPT_VARS {
        if let Some(value) = std::env::var_os(key) {
            cmd.env(key, value);
        }
    }
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd
}

fn describe(program: &std::ffi::OsStr, args: &[&str]) -> String {
    let mut s = format!("`{}", program.to_string_lossy());
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s.push('`');
    s
}

/// Polls `try_wait` until the child exits or the deadline passes.
pub fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Sends `kill -<sig> <pid>` (e.g. `sig` = "TERM", "INT", "KILL", "HUP").
pub fn send_signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Sends SIGTERM, waits up to `grace`, then SIGKILLs; always reaps the child.
pub fn terminate(child: &mut Child, grace: Duration) -> ExitStatus {
    if let Ok(Some(status)) = child.try_wait() {
        return status;
    }
    send_signal(child.id(), "TERM");
    if let Some(status) = wait_until(child, Instant::now() + grace) {
        return status;
    }
    let _ = child.kill();
    child.wait().expect("wait after SIGKILL")
}

/// Shared, growing buffers filled by background reader threads.
struct Capture {
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Capture {
    fn start(child: &mut Child) -> Capture {
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(pipe) = child.stdout.take() {
            readers.push(pump(pipe, Arc::clone(&stdout)));
        }
        if let Some(pipe) = child.stderr.take() {
            readers.push(pump(pipe, Arc::clone(&stderr)));
        }
        Capture {
            stdout,
            stderr,
            readers,
        }
    }

    /// Waits (bounded) for the readers to see EOF; a grandchild holding the pipe open
    /// must not hang the test, so after `limit` the readers are left to finish alone.
    fn finish(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(2));
        }
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }
}

fn pump(mut pipe: impl Read + Send + 'static, buf: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.lock().unwrap().extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    })
}

/// A unique directory under `std::env::temp_dir()`, removed (recursively) on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<tmp>/fas-<tag>-<pid>-<nanos>-<n>`.
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        loop {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!("fas-{tag}-{}-{nanos}-{n}", std::process::id()));
            match std::fs::create_dir(&path) {
                Ok(()) => return TempDir { path },
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("cannot create temp dir {}: {e}", path.display()),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `contents` to `name` inside the dir (parents created) and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
        }
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A long-running child (e.g. `fly-autoscaler serve`) whose stdout and stderr are
/// captured by background threads. Drop SIGKILLs it (if still running) and reaps it.
pub struct Daemon {
    child: Child,
    name: String,
    out: Capture,
    status: Option<ExitStatus>,
}

impl Daemon {
    /// Spawns the binary under test (environment rule as for [`run`], stdin null).
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        Daemon::spawn_command(&binary().to_string_lossy(), args, env)
    }

    /// Spawns any program with the same rules.
    pub fn spawn_command(program: &str, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let name = describe(program.as_ref(), args);
        let mut child = hermetic_command(program, args, env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let out = Capture::start(&mut child);
        Daemon {
            child,
            name,
            out,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `kill -<sig> <pid>` ("TERM", "INT", "HUP", …). Does nothing once the child
    /// has been reaped (its pid may belong to someone else by then). Panics if `kill` fails.
    pub fn signal(&self, sig: &str) {
        if self.status.is_some() {
            return;
        }
        assert!(
            send_signal(self.pid(), sig),
            "kill -{sig} {} ({}) failed",
            self.pid(),
            self.name
        );
    }

    /// Waits for the child to exit. Returns its exit code, or `128 + signal` when it was
    /// ended by a signal (shell convention; see [`Daemon::status`] for the raw status);
    /// `None` if it is still running at the deadline. Can be called again after exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        if self.status.is_none() {
            self.status = wait_until(&mut self.child, Instant::now() + timeout);
            if self.status.is_some() {
                self.out.finish(Duration::from_secs(2));
            }
        }
        self.status.map(|s| {
            use std::os::unix::process::ExitStatusExt;
            s.code()
                .or_else(|| s.signal().map(|sig| 128 + sig))
                .unwrap_or(-1)
        })
    }

    /// The raw exit status, once [`Daemon::wait_exit`] has seen the child exit.
    pub fn status(&self) -> Option<ExitStatus> {
        self.status
    }

    /// Everything the child wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.out.stderr()
    }

    /// Everything the child wrote to stdout so far.
    pub fn stdout(&self) -> String {
        self.out.stdout()
    }

    /// Polls (every 10 ms) until stderr contains `needle`; false at the deadline.
    pub fn wait_for_stderr(&self, needle: &str, timeout: Duration) -> bool {
        wait_for_text(|| self.stderr(), needle, timeout)
    }

    /// Polls (every 10 ms) until stdout contains `needle`; false at the deadline.
    pub fn wait_for_stdout(&self, needle: &str, timeout: Duration) -> bool {
        wait_for_text(|| self.stdout(), needle, timeout)
    }
}

fn wait_for_text(read: impl Fn() -> String, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if read().contains(needle) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A loopback port that was free a moment ago (bind 127.0.0.1:0, read, release).
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct loopback ports, all held at once while choosing so none repeats.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local_addr").port())
        .collect()
}

/// Finds an external tool: `$<env_var>` when set and non-empty, else `name` on `PATH`.
/// Panics with a one-line hint to run `.ci/deps` when it is missing.
pub fn find_tool(env_var: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        if is_executable(&path) {
            return path;
        }
        panic!(
            "${env_var}={} is not an executable file; run `.ci/deps` to install the test dependencies",
            path.display()
        );
    }
    which(name).unwrap_or_else(|| {
        panic!("`{name}` not found on PATH (or set ${env_var}); run `.ci/deps` to install the test dependencies")
    })
}

/// `name` looked up on `PATH`, like `command -v`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The last `lines` lines of a (log) file, or a note that it cannot be read.
pub fn file_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// A plain HTTP GET for the harness: every status is returned (not an error), no proxy,
/// `timeout` for the whole exchange. `query` pairs are percent-encoded. `Err` only for
/// transport problems (connection refused, timeout, …).
pub fn http_get(
    url: &str,
    query: &[(&str, &str)],
    timeout: Duration,
) -> Result<(u16, String), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(timeout))
        .build()
        .into();
    let mut req = agent.get(url);
    for (k, v) in query {
        req = req.query(*k, *v);
    }
    let mut resp = req.call().map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    Ok((status, body))
}

/// Spawns `cmd` with stdin null and stdout+stderr appended to `log` (after a header line).
pub fn spawn_logged(cmd: &mut Command, log: &Path, header: &str) -> Child {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
    let _ = writeln!(file, "{header}");
    let err = file.try_clone().expect("clone log file handle");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()))
}
