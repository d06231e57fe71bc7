//! Child processes (the autoscaler, Prometheus, Temporal, `unshare`…), waiting on conditions,
//! temporary directories and small HTTP and log helpers.
//!
//! Environment rule for every child of [`run`] and [`Daemon::spawn`]: everything is cleared
//! but `PATH`, `HOME` and `TMPDIR`, then the caller's pairs are added, so the `FAS_*`, `FLY_*`
//! or `RUST_LOG` of a developer's shell never leak into a test.

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::http::lock;

/// Polls `done` (every 1 ms at first, backing off to 25 ms) until it is true or `timeout`
/// has passed; returns its last answer.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if done() {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(25));
    }
}

/// What a finished child printed, how it ended and how long it ran.
#[derive(Debug, Clone)]
pub struct Output {
    /// `None` when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// From spawn to exit, measured with a blocking wait (no polling delay).
    pub wall: Duration,
}

/// Runs `program` with `args` in the hermetic environment plus `env`, stdin null. Panics
/// (with its output) if it is still running after `timeout`, having killed it.
pub fn run(
    program: impl AsRef<OsStr>,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Output {
    let start = Instant::now();
    let mut d = Daemon::spawn(program, args, env);
    let (done, done_rx) = mpsc::channel::<()>();
    let pid = d.pid();
    let watchdog = thread::spawn(move || {
        let late = done_rx.recv_timeout(timeout) == Err(mpsc::RecvTimeoutError::Timeout);
        late && send_signal(pid, "KILL")
    });
    let status = d.child.wait().expect("wait for the child");
    let wall = start.elapsed();
    d.status = Some(status);
    let _ = done.send(());
    let killed = watchdog.join().unwrap_or(false);
    d.out.finish();
    assert!(
        !killed,
        "{} still running after {timeout:?}; killed.\n--- stdout ---\n{}\n--- stderr ---\n{}",
        d.name,
        d.stdout(),
        d.stderr()
    );
    Output {
        code: status.code(),
        stdout: d.stdout(),
        stderr: d.stderr(),
        wall,
    }
}

/// A `Command` with the hermetic environment (see the module docs).
fn hermetic(program: &OsStr, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args).env_clear();
    for key in ["PATH", "HOME", "TMPDIR"] {
        if let Some(value) = std::env::var_os(key) {
            cmd.env(key, value);
        }
    }
    cmd.envs(env.iter().copied());
    cmd
}

fn describe(program: &OsStr, args: &[&str]) -> String {
    let mut s = program.to_string_lossy().into_owned();
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    format!("`{s}`")
}

/// Sends `kill -<sig> <pid>` (`sig` = "TERM", "INT", "KILL", …).
pub fn send_signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Polls the child until it exits or `timeout` passes.
fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let mut status = None;
    wait_until(timeout, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    status
}

/// SIGTERM, then SIGKILL if it has not exited after `grace`; always reaps the child.
pub fn terminate(child: &mut Child, grace: Duration) -> ExitStatus {
    send_signal(child.id(), "TERM");
    wait_exit(child, grace).unwrap_or_else(|| {
        let _ = child.kill();
        child.wait().expect("wait after SIGKILL")
    })
}

/// Whether `pid` is a live process (not gone, not a zombie).
pub fn is_alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state is the first field after the parenthesised command name.
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
        .is_some_and(|state| state != 'Z')
}

/// The number of a `/proc/<pid>/status` line, e.g. `VmHWM:` (peak RSS, kB) or `Threads:`.
pub fn proc_status(pid: u32, key: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Whether the tests run as root (else namespaces need `unshare --user`).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n")
}

/// Stdout and stderr of a child, read to EOF by background threads.
struct Capture {
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Capture {
    fn start(child: &mut Child) -> Capture {
        let (stdout, stderr) = (Arc::default(), Arc::default());
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

    /// Waits (up to 5 s) for the readers to see EOF; a grandchild holding a pipe open must
    /// not hang the caller, so after that they are left to finish alone.
    fn finish(&self) {
        wait_until(Duration::from_secs(5), || {
            self.readers.iter().all(JoinHandle::is_finished)
        });
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&lock(&self.stdout)).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&lock(&self.stderr)).into_owned()
    }
}

fn pump(mut pipe: impl Read + Send + 'static, buf: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => lock(&buf).extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    })
}

/// A long-running child (e.g. `fly-autoscaler serve`) with its output captured. Dropping it
/// SIGKILLs it (if still running) and reaps it.
pub struct Daemon {
    child: Child,
    name: String,
    out: Capture,
    status: Option<ExitStatus>,
}

impl Daemon {
    /// Spawns `program` (environment rule as for [`run`], stdin null).
    pub fn spawn(program: impl AsRef<OsStr>, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let name = describe(program.as_ref(), args);
        let mut child = hermetic(program.as_ref(), args, env)
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

    /// Sends `kill -<sig>`; nothing once the child is reaped (its pid may be reused).
    pub fn signal(&self, sig: &str) {
        if self.status.is_none() {
            assert!(
                send_signal(self.pid(), sig),
                "kill -{sig} {} ({}) failed",
                self.pid(),
                self.name
            );
        }
    }

    /// Waits for the child to exit: its exit code, or `128 + signal` (the shell's
    /// convention); `None` if it still runs after `timeout`. Can be asked again after exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        if self.status.is_none() {
            self.status = wait_exit(&mut self.child, timeout);
            if self.status.is_some() {
                self.out.finish();
            }
        }
        let status = self.status?;
        Some(
            status
                .code()
                .or(status.signal().map(|s| 128 + s))
                .unwrap_or(-1),
        )
    }

    /// Everything it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.out.stderr()
    }

    /// Everything it wrote to stdout so far.
    pub fn stdout(&self) -> String {
        self.out.stdout()
    }

    /// The first complete stderr line containing `needle`, waiting up to `timeout` for it.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> Option<String> {
        let mut line = None;
        wait_until(timeout, || {
            let err = self.stderr();
            line = err.lines().find(|l| l.contains(needle)).map(str::to_string);
            line.is_some()
        });
        line
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

/// The value of `key` in one of the autoscaler's log lines, text (`key=value`, unquoted
/// values) or JSON (`"key":value`).
pub fn log_field(line: &str, key: &str) -> Option<String> {
    if line.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        return match v.get(key)? {
            serde_json::Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        };
    }
    line.split(' ')
        .find_map(|part| part.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
}

/// `http://ADDR/metrics` of a `fly-autoscaler serve` started with `FAS_METRICS_ADDR=127.0.0.1:0`:
/// the kernel picks the port and the autoscaler logs it (`serving metrics addr=…`).
pub fn metrics_url(daemon: &Daemon, timeout: Duration) -> Option<String> {
    let line = daemon.wait_for_line("serving metrics", timeout)?;
    Some(format!("http://{}/metrics", log_field(&line, "addr")?))
}

/// A unique directory under the system temp dir, removed (recursively) on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<tmp>/fas-<tag>-<pid>-<nanos>-<n>`.
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        loop {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!("fas-{tag}-{}-{nanos}-{n}", std::process::id());
            let path = std::env::temp_dir().join(name);
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

    /// Writes `contents` to `name` inside the dir (parents created); returns its path.
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

/// A loopback port free a moment ago (bound to `127.0.0.1:0`, read, released): for a server
/// that cannot bind port 0 itself (see [`start_server`]) or an address that refuses
/// connections. Every server of this crate binds port 0 itself.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct ports, all held at once while choosing so none repeats.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local_addr").port())
        .collect()
}

/// Starts a server that needs its ports on the command line: `command(ports)` with `ports`
/// free ports, its output appended to `log`, until `ready(ports)`. When another process took
/// a port first (the log says "address already in use") it tries again with new ports.
/// Panics with the log's tail when the server exits or is not ready within a minute.
pub fn start_server(
    log: &Path,
    ports: usize,
    command: impl Fn(&[u16]) -> Command,
    ready: impl Fn(&[u16]) -> bool,
) -> (Child, Vec<u16>) {
    const ATTEMPTS: u32 = 5;
    const READY_TIMEOUT: Duration = Duration::from_secs(60);
    for attempt in 1..=ATTEMPTS {
        let picked = free_ports(ports);
        let mut cmd = command(&picked);
        let shown = format!("{:?} on ports {picked:?}", cmd.get_program());
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        let _ = writeln!(file, "--- attempt {attempt}: {shown} ---");
        let err = file.try_clone().expect("clone the log file handle");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
        let mut exited = None;
        let up = wait_until(READY_TIMEOUT, || {
            exited = child.try_wait().expect("try_wait");
            exited.is_none() && ready(&picked)
        });
        if up {
            return (child, picked);
        }
        let log_tail = file_tail(log, 30);
        match exited {
            Some(_)
                if log_tail
                    .to_ascii_lowercase()
                    .contains("address already in use") =>
            {
                continue;
            }
            Some(status) => panic!("{shown} exited ({status}) before it was ready:\n{log_tail}"),
            None => {
                terminate(&mut child, Duration::from_secs(5));
                panic!("{shown} not ready after {READY_TIMEOUT:?}:\n{log_tail}");
            }
        }
    }
    panic!(
        "no free ports after {ATTEMPTS} attempts; see {}",
        log.display()
    )
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The last `lines` lines of a log file, or why it cannot be read.
pub fn file_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => tail(&String::from_utf8_lossy(&bytes), lines),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// An external tool: `$<env_var>` when set, else `name` on `PATH`. Panics with a hint to run
/// `.ci/deps` when it is missing.
pub fn find_tool(env_var: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            is_executable(&path),
            "${env_var}={} is not an executable file; run `.ci/deps`",
            path.display()
        );
        return path;
    }
    which(name).unwrap_or_else(|| {
        panic!("`{name}` not found on PATH (or set ${env_var}); run `.ci/deps` to install the test dependencies")
    })
}

/// `name` looked up on `PATH`, like `command -v`.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A binary of this workspace built into the same `target/<profile>/` as the running
/// example (`target/<profile>/examples/<name>`).
pub fn built_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("path of the running executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("examples live in target/<profile>/examples");
    profile_dir.join(name)
}

/// A plain GET: any status is an answer (not an error), no proxy, `timeout` for the whole
/// exchange, `query` pairs percent-encoded. `Err` only for transport failures.
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
    let body = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    Ok((resp.status().as_u16(), body))
}
