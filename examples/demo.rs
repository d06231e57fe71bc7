//! `make demo`: the autoscaler's main job, end to end, with real parts and nothing to set up.
//!
//! 1. A metrics endpoint serves `queue_depth{app="demo-app"}` and a real Prometheus scrapes it
//!    every second.
//! 2. The Fly Machines API simulator holds app `demo-app` (org `demo-org`): 1 started and 5
//!    stopped machines in process group `app`, and requires the API token.
//! 3. `fly-autoscaler serve -config testdata/demo.yml` runs against both, reconciling every 2 s
//!    with `started-machine-count: ceil(queue_depth / 10)`.
//! 4. The demo moves `queue_depth` through a few values and waits, each time, until the
//!    simulator shows the expected number of started machines, printing the autoscaler's log
//!    and the machines as they change.
//! 5. It prints the autoscaler's own counters and stops it with SIGTERM (exit status 0
//!    expected).
//! 6. A second scenario: one noisy queue (`testdata/demo-noisy.yml`) scales two apps, one
//!    without and one with `scale-down-stabilization`, side by side for 24 seconds; the demo
//!    prints each second and then the starts and stops of each.
//! 7. `fly-autoscaler backtest` replays those seconds from Prometheus with the same config,
//!    and writes its HTML report (`target/demo-backtest.html`); then everything is stopped.
//!
//! ```text
//! cargo build --bin fly-autoscaler --example demo && ./target/debug/examples/demo [--keep] [--screenshot PNG]
//! ```
//!
//! `--keep` leaves the first scenario running at its end, prints the URLs, and lets you type
//! new `queue_depth` values, until Ctrl-C (the second scenario is then skipped).
//! `--screenshot PNG` also renders the backtest report with headless Chromium (the README's
//! picture: `--screenshot testdata/backtest-report.png`). The exit status is non-zero when a
//! step does not converge (the autoscaler's log tail is printed).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use flysim::harness::{self, Daemon, MetricsEndpoint, Prometheus, tail, wait_until};
use flysim::{MachineSpec, SimMachine, Simulator};

const ORG: &str = "demo-org";
const APP: &str = "demo-app";
const GROUP: &str = "app";
const TOKEN: &str = "fm2_demo_token";
const QUERY: &str = r#"sum(queue_depth{app="demo-app"})"#;
/// How long one step may take to converge (scrape every 1 s, reconcile every 2 s).
const STEP_DEADLINE: Duration = Duration::from_secs(30);
const FIRST_SAMPLE_DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

/// Machines seeded in the simulator.
const STARTED: usize = 1;
const STOPPED: usize = 5;

/// The scenario: (queue_depth, started machines expected, what it shows).
const STEPS: [(f64, usize, &str); 5] = [
    (
        5.0,
        1,
        "a trickle of work: ceil(5/10) = 1, the running machine is enough",
    ),
    (
        42.0,
        5,
        "a burst: ceil(42/10) = 5, start 4 stopped machines",
    ),
    (
        75.0,
        6,
        "peak: ceil(75/10) = 8 but the app has 6 machines: all run, and the autoscaler warns",
    ),
    (12.0, 2, "the queue drains: ceil(12/10) = 2, stop 4"),
    (0.0, 0, "idle: ceil(0/10) = 0, stop the last 2"),
];

const USAGE: &str = "\
usage: demo [--keep] [--screenshot PNG]

Runs fly-autoscaler end to end against a local Prometheus and the Fly Machines
API simulator (about a minute), then a noisy queue with and without
scale-down-stabilization, and a backtest of it. Needs `prometheus` on PATH (or
$PROMETHEUS_BIN) and the debug binary: `make demo` does both.

  --keep            after the first scenario, leave it running and print the
                    URLs; type a number + Enter to set queue_depth; Ctrl-C to stop
  --screenshot PNG  render the backtest's HTML report to PNG (needs chromium)
  -h, --help        show this help
";

fn main() -> ExitCode {
    let mut keep = false;
    let mut screenshot = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--keep" => keep = true,
            "--screenshot" => match args.next() {
                Some(path) => screenshot = Some(PathBuf::from(path)),
                None => {
                    eprintln!("demo: --screenshot needs a file path\n\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("demo: unknown argument {other:?}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    // First Ctrl-C: stop waiting and clean up; a second one exits at once.
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ =
            signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&interrupted));
        let _ = signal_hook::flag::register(sig, Arc::clone(&interrupted));
    }
    let out = Out::new();
    match run(&out, keep, screenshot.as_deref(), &interrupted) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) if interrupted.load(Ordering::SeqCst) => {
            out.say("demo interrupted; everything it started is stopped");
            ExitCode::from(130)
        }
        Err(e) => {
            out.say(&format!("demo FAILED: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// Prints lines prefixed with the time since the demo started.
struct Out {
    t0: Instant,
}

impl Out {
    fn new() -> Out {
        Out { t0: Instant::now() }
    }

    fn say(&self, msg: &str) {
        println!("[{:>5.1}s] {msg}", self.t0.elapsed().as_secs_f64());
    }

    /// A continuation line (no timestamp), indented to line up with `say`'s text.
    fn more(&self, msg: &str) {
        println!("         {msg}");
    }

    fn step(&self, msg: &str) {
        println!();
        self.say(&format!("== {msg}"));
    }
}

fn run(
    out: &Out,
    keep: bool,
    screenshot: Option<&Path>,
    interrupted: &AtomicBool,
) -> Result<(), String> {
    preflight()?;
    out.say("fly-autoscaler demo: a real Prometheus, the Fly Machines API simulator and");
    out.more("`fly-autoscaler serve`, scaling demo-app with started-machine-count = ceil(queue_depth / 10)");

    // 1. Metric source and Prometheus.
    out.step("1. metrics: queue_depth endpoint + a real Prometheus scraping it every 1 s");
    let endpoint = MetricsEndpoint::start();
    let set_depth = |v: f64| endpoint.set_labeled("queue_depth", &[("app", APP)], v);
    set_depth(STEPS[0].0);
    out.say(&format!(
        "metrics endpoint {} serves queue_depth{{app=\"{APP}\"}} {}",
        endpoint.url(),
        STEPS[0].0
    ));
    let prom = Prometheus::start(&[&endpoint.addr()]);
    out.say(&format!(
        "Prometheus (pid {}) ready at {}",
        prom.pid(),
        prom.url()
    ));
    out.say(&format!(
        "waiting for the first scraped sample of {QUERY} (Prometheus applies new targets on a 5 s tick, so ~6 s)..."
    ));
    let waited = Instant::now();
    let mut first = None;
    wait_until(FIRST_SAMPLE_DEADLINE, || {
        first = prom.query(QUERY);
        first.is_some() || interrupted.load(Ordering::SeqCst)
    });
    check_interrupt(interrupted)?;
    let first = first.ok_or_else(|| {
        format!(
            "Prometheus has no sample of {QUERY} after {FIRST_SAMPLE_DEADLINE:?}; its log:\n{}",
            prom.log_tail(20)
        )
    })?;
    out.say(&format!(
        "Prometheus answers {QUERY} = {first} (after {:.1}s)",
        waited.elapsed().as_secs_f64()
    ));

    // 2. Machines API simulator.
    out.step("2. Fly Machines API simulator");
    let sim = Simulator::start();
    sim.set_token(Some(&format!("FlyV1 {TOKEN}")));
    sim.add_app(ORG, APP);
    for state in
        std::iter::repeat_n("started", STARTED).chain(std::iter::repeat_n("stopped", STOPPED))
    {
        sim.add_machine(APP, MachineSpec::new(state).group(Some(GROUP)));
    }
    out.say(&format!(
        "simulator at {}: org {ORG}, app {APP}, {STARTED} started + {STOPPED} stopped machines in process group {GROUP:?}; requires token",
        sim.url()
    ));

    // 3. The autoscaler.
    out.step("3. fly-autoscaler serve");
    let config = config_path();
    // The kernel picks the port; the autoscaler logs it.
    let metrics_addr = "127.0.0.1:0";
    let sim_url = sim.url();
    let prom_url = prom.url();
    let env = [
        ("FLY_FLAPS_BASE_URL", sim_url.as_str()),
        ("FLY_API_BASE_URL", sim_url.as_str()),
        ("FAS_API_TOKEN", TOKEN),
        ("DEMO_PROMETHEUS_URL", prom_url.as_str()),
        ("DEMO_METRICS_ADDR", metrics_addr),
        // The demo relays and reads text log lines, whatever the binary's default.
        ("FAS_LOG_FORMAT", "text"),
    ];
    let config_arg = config.to_string_lossy().into_owned();
    let args = ["serve", "-config", config_arg.as_str()];
    out.say(&format!("{} {}", binary().display(), args.join(" ")));
    out.more(&format!(
        "config {} (interval 2s; ${{DEMO_*}} expanded from the environment):",
        display_path(&config)
    ));
    for line in config_summary(&config) {
        out.more(&format!("  {line}"));
    }
    out.more(&format!(
        "env: FLY_FLAPS_BASE_URL=FLY_API_BASE_URL={sim_url} FAS_API_TOKEN={TOKEN}"
    ));
    out.more(&format!(
        "     DEMO_PROMETHEUS_URL={prom_url} DEMO_METRICS_ADDR={metrics_addr}"
    ));
    let mut daemon = Daemon::spawn(binary(), &args, &env);
    let mut watch = Watch::new(out, &sim, interrupted);
    let result = (|| {
        let metrics_url = watch.wait_serving(&mut daemon)?;
        out.say(&format!(
            "autoscaler (pid {}) serving its metrics at {metrics_url}",
            daemon.pid()
        ));
        watch.show_table(true);

        // 4. The scenario.
        out.step("4. scenario: move queue_depth, wait until the simulator shows the target");
        let mut took = Vec::new();
        for (i, (depth, expected, why)) in STEPS.iter().enumerate() {
            println!();
            out.say(&format!(
                "step {}/{}: queue_depth = {depth} -> expect {expected} started ({why})",
                i + 1,
                STEPS.len()
            ));
            set_depth(*depth);
            let t = watch.converge(&mut daemon, *expected)?;
            took.push(t);
        }
        let total: Duration = took.iter().sum();
        let slowest = took.iter().max().copied().unwrap_or_default();

        // 5. The autoscaler's own metrics, then shutdown.
        out.step("5. the autoscaler's /metrics");
        let (want_starts, want_stops) = expected_actions();
        let body = harness::http_get(&metrics_url, &[], Duration::from_secs(5))
            .map_err(|e| format!("GET {metrics_url}: {e}"))?
            .1;
        for line in body.lines().filter(|l| {
            [
                "fas_machine_start_count",
                "fas_machine_stop_count",
                "fas_reconcile_count",
            ]
            .iter()
            .any(|name| l.starts_with(name))
        }) {
            out.more(line);
        }
        let starts = sample(&body, "fas_machine_start_count{status=\"ok\"}");
        let stops = sample(&body, "fas_machine_stop_count{status=\"ok\"}");
        if starts != Some(want_starts as f64) || stops != Some(want_stops as f64) {
            return Err(format!(
                "the scenario needs {want_starts} starts and {want_stops} stops; /metrics says {starts:?} and {stops:?}"
            ));
        }
        out.say(&format!(
            "{want_starts} machine starts and {want_stops} stops, exactly what the scenario needs"
        ));

        if keep {
            keep_running(&mut watch, &mut daemon, &endpoint, &prom, &metrics_url)?;
        }

        out.step("shutdown");
        let code = match daemon.wait_exit(Duration::ZERO) {
            Some(code) => {
                out.say("fly-autoscaler already stopped on the terminal's SIGINT");
                Some(code)
            }
            None => {
                out.say(&format!("SIGTERM -> fly-autoscaler (pid {})", daemon.pid()));
                daemon.signal("TERM");
                daemon.wait_exit(Duration::from_secs(15))
            }
        };
        watch.relay(&daemon);
        match code {
            Some(0) => out.say("fly-autoscaler exited with status 0"),
            Some(c) => {
                return Err(format!(
                    "fly-autoscaler exited with status {c} after SIGTERM"
                ));
            }
            None => return Err("fly-autoscaler still running 15 s after SIGTERM".to_string()),
        }
        Ok((total, slowest))
    })();
    let (total, slowest) = match result {
        Ok(r) => r,
        Err(e) => {
            if !interrupted.load(Ordering::SeqCst) {
                out.say(&format!("FAILED: {e}"));
                diagnose(out, &daemon, &prom);
            }
            return Err(e);
        }
    };

    let noisy = !interrupted.load(Ordering::SeqCst);
    if !noisy {
        out.say("interrupted: the second scenario is skipped");
    } else if let Err(e) = noisy_queue(out, &sim, &endpoint, &prom, screenshot, interrupted) {
        if !interrupted.load(Ordering::SeqCst) {
            out.say(&format!("FAILED: {e}"));
        }
        return Err(e);
    }

    let prom_pid = prom.pid();
    drop(prom);
    out.say(&format!("Prometheus (pid {prom_pid}) stopped"));
    drop(sim);
    drop(endpoint);
    out.say("simulator and metrics endpoint stopped");
    let children = [("prometheus", prom_pid), ("fly-autoscaler", daemon.pid())];
    if let Some((name, pid)) = children.iter().find(|(_, pid)| harness::is_alive(*pid)) {
        return Err(format!(
            "a child process is still running: {name} (pid {pid})"
        ));
    }

    println!();
    out.say(&format!(
        "demo passed: {} steps converged ({:.1}s in all, slowest {:.1}s){}, clean shutdown",
        STEPS.len(),
        total.as_secs_f64(),
        slowest.as_secs_f64(),
        if noisy {
            ", the noisy queue's stops held back by the window"
        } else {
            ""
        }
    ));
    Ok(())
}

/// Watches the simulator's machines and the autoscaler's log while the demo waits.
struct Watch<'a> {
    out: &'a Out,
    sim: &'a Simulator,
    interrupted: &'a AtomicBool,
    /// Bytes of the daemon's stderr already relayed.
    relayed: usize,
    /// `reconciled` lines seen so far.
    reconciles: usize,
    /// Do not relay `reconciled` lines of passes that changed nothing.
    quiet: bool,
    last_table: String,
}

impl<'a> Watch<'a> {
    fn new(out: &'a Out, sim: &'a Simulator, interrupted: &'a AtomicBool) -> Watch<'a> {
        Watch {
            out,
            sim,
            interrupted,
            relayed: 0,
            reconciles: 0,
            quiet: false,
            last_table: String::new(),
        }
    }

    fn machines(&self) -> Vec<SimMachine> {
        self.sim.machines(APP)
    }

    fn started(&self) -> usize {
        self.sim.count(APP, "started")
    }

    /// Prints the autoscaler's new complete log lines (timestamp dropped), indented.
    fn relay(&mut self, daemon: &Daemon) {
        let err = daemon.stderr();
        let Some(new) = err.get(self.relayed..) else {
            return;
        };
        let Some(end) = new.rfind('\n') else {
            return;
        };
        for line in new[..end].lines() {
            // "2024-01-02T03:04:05.678Z INFO  reconciled app=…": drop the timestamp.
            let text = match line.split_once(' ') {
                Some((ts, rest)) if ts.contains('T') && ts.ends_with('Z') => rest,
                _ => line,
            };
            if text
                .trim_start_matches(|c: char| c.is_ascii_uppercase())
                .trim_start()
                .starts_with("reconciled ")
            {
                self.reconciles += 1;
                if self.quiet && text.contains("plan=\"no scale\"") {
                    continue;
                }
            }
            self.out.more(&format!("  | {text}"));
        }
        self.relayed += end + 1;
    }

    /// Prints the machine table when it differs from the last one printed (or `always`).
    fn show_table(&mut self, always: bool) {
        let machines = self.machines();
        let (ids, states) = table(&machines);
        let started = machines.iter().filter(|m| m.state == "started").count();
        let key = states.clone();
        if !always && key == self.last_table {
            return;
        }
        self.last_table = key;
        self.out.say(&format!("machine  {ids}"));
        self.out.more(&format!(
            "state    {states}  ({started} of {} started)",
            machines.len()
        ));
    }

    fn tick(&mut self, daemon: &Daemon) {
        self.relay(daemon);
        self.show_table(false);
    }

    /// Waits until the daemon logs where it serves `/metrics`; returns that URL.
    fn wait_serving(&mut self, daemon: &mut Daemon) -> Result<String, String> {
        let url = harness::metrics_url(daemon, Duration::from_secs(10));
        self.relay(daemon);
        self.alive(daemon)?;
        url.ok_or_else(|| "fly-autoscaler did not serve its metrics within 10 s".to_string())
    }

    fn alive(&mut self, daemon: &mut Daemon) -> Result<(), String> {
        check_interrupt(self.interrupted)?;
        if let Some(code) = daemon.wait_exit(Duration::ZERO) {
            self.relay(daemon);
            return Err(format!(
                "fly-autoscaler exited unexpectedly with status {code}"
            ));
        }
        Ok(())
    }

    /// Relays the log and shows the machines until `done` holds, the daemon dies, Ctrl-C,
    /// or `timeout`; `Ok(false)` on timeout.
    fn watch_until(
        &mut self,
        daemon: &mut Daemon,
        timeout: Duration,
        mut done: impl FnMut(&Self) -> bool,
    ) -> Result<bool, String> {
        let mut failed = Ok(());
        let held = wait_until(timeout, || {
            self.tick(daemon);
            failed = self.alive(daemon);
            failed.is_err() || done(self)
        });
        failed.map(|()| held)
    }

    /// Waits until `expected` machines are started and the autoscaler has reconciled at least
    /// once since the step began, then for one more pass that must keep it so. Returns the
    /// time to converge.
    fn converge(&mut self, daemon: &mut Daemon, expected: usize) -> Result<Duration, String> {
        let start = Instant::now();
        let passes = self.reconciles;
        let converged = self.watch_until(daemon, STEP_DEADLINE, |w| {
            w.started() == expected && w.reconciles > passes
        })?;
        if !converged {
            return Err(format!(
                "{} machines started after {STEP_DEADLINE:?}, expected {expected}",
                self.started()
            ));
        }
        let took = start.elapsed();
        self.out.say(&format!(
            "converged: {expected} started, {:.1}s after queue_depth changed",
            took.as_secs_f64()
        ));
        // One more pass must leave it alone.
        let passes = self.reconciles;
        if !self.watch_until(daemon, Duration::from_secs(10), |w| w.reconciles > passes)? {
            return Err("no reconcile pass logged for 10 s".to_string());
        }
        self.show_table(false);
        let started = self.started();
        if started != expected {
            return Err(format!(
                "the next pass changed it: {started} started, expected {expected}"
            ));
        }
        self.out
            .say(&format!("steady: the next pass kept {expected} started"));
        Ok(took)
    }
}

/// `--keep`: everything stays up until Ctrl-C; numbers typed on stdin set queue_depth.
fn keep_running(
    watch: &mut Watch,
    daemon: &mut Daemon,
    endpoint: &MetricsEndpoint,
    prom: &Prometheus,
    metrics_url: &str,
) -> Result<(), String> {
    let out = watch.out;
    let sim_url = watch.sim.url();
    out.step("--keep: everything keeps running; Ctrl-C to stop");
    out.more(&format!(
        "Prometheus UI       {}/graph?g0.expr={}&g0.tab=0",
        prom.url(),
        percent_encode(QUERY)
    ));
    out.more(&format!("queue_depth source  {}", endpoint.url()));
    out.more(&format!("autoscaler metrics  {metrics_url}"));
    out.more(&format!(
        "Machines API        curl -H 'Authorization: FlyV1 {TOKEN}' {sim_url}/v1/apps/{APP}/machines"
    ));
    out.more("type a number + Enter to set queue_depth (passes that change nothing are not shown)");
    watch.quiet = true;
    let (tx, rx) = mpsc::channel();
    // Held here so the channel stays open when stdin ends: `recv_timeout` keeps pacing.
    let _open = tx.clone();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        watch.tick(daemon);
        if watch.interrupted.load(Ordering::SeqCst) {
            println!();
            out.say("Ctrl-C: shutting down (the terminal sends SIGINT to the autoscaler and Prometheus too)");
            return Ok(());
        }
        if daemon.wait_exit(Duration::ZERO).is_some() {
            return Ok(()); // reported by the shutdown step
        }
        // Waits for a typed line, refreshing the display meanwhile.
        if let Ok(line) = rx.recv_timeout(POLL) {
            match line.trim().parse::<f64>() {
                Ok(v) if v >= 0.0 => {
                    endpoint.set_labeled("queue_depth", &[("app", APP)], v);
                    out.say(&format!(
                        "queue_depth = {v} -> expect {} started",
                        (v / 10.0).ceil()
                    ));
                }
                _ if line.trim().is_empty() => {}
                _ => out.say(&format!("not a queue_depth: {:?}", line.trim())),
            }
        }
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986), for a query parameter.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Ids (last 4 characters) and states, in columns.
fn table(machines: &[SimMachine]) -> (String, String) {
    let mut ids = String::new();
    let mut states = String::new();
    for m in machines {
        let width = m.state.len().max(4) + 2;
        let id = &m.id[m.id.len().saturating_sub(4)..];
        ids.push_str(&format!("{id:<width$}"));
        states.push_str(&format!("{:<width$}", m.state));
    }
    (ids.trim_end().to_string(), states.trim_end().to_string())
}

/// Machine starts and stops the scenario needs, from the seeded state.
fn expected_actions() -> (usize, usize) {
    let mut current = STARTED;
    let (mut starts, mut stops) = (0, 0);
    for (_, expected, _) in STEPS {
        if expected > current {
            starts += expected - current;
        } else {
            stops += current - expected;
        }
        current = expected;
    }
    (starts, stops)
}

/// The value of one sample line of a Prometheus text exposition.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// What to look at when a step fails.
fn diagnose(out: &Out, daemon: &Daemon, prom: &Prometheus) {
    println!();
    out.say(&format!(
        "Prometheus now answers {QUERY} = {:?}",
        prom.query(QUERY)
    ));
    let err = daemon.stderr();
    let lines: Vec<&str> = err.lines().collect();
    out.say("fly-autoscaler stderr (last 30 lines):");
    for line in &lines[lines.len().saturating_sub(30)..] {
        out.more(&format!("  {line}"));
    }
}

fn check_interrupt(interrupted: &AtomicBool) -> Result<(), String> {
    if interrupted.load(Ordering::SeqCst) {
        Err("interrupted".to_string())
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Scenario 2: a noisy queue, with and without scale-down-stabilization
// ---------------------------------------------------------------------------------------------

/// `queue_depth{queue="jobs"}`, one value a second: noise between 2 and 4 machines' worth,
/// then a quiet spell of 1 machine's worth longer than the window.
const NOISE: [f64; 12] = [
    35.0, 14.0, 38.0, 17.0, 33.0, 12.0, 39.0, 18.0, 36.0, 11.0, 34.0, 16.0,
];
const QUIET: (f64, usize) = (5.0, 12);
/// The two apps and their `scale-down-stabilization`.
const SIDES: [(&str, &str); 2] = [("noisy-go", "0s"), ("noisy-held", "8s")];
const NOISY_QUERY: &str = r#"sum(queue_depth{queue="jobs"})"#;

fn noisy_queue(
    out: &Out,
    sim: &Simulator,
    endpoint: &MetricsEndpoint,
    prom: &Prometheus,
    screenshot: Option<&Path>,
    interrupted: &AtomicBool,
) -> Result<(), String> {
    out.step("6. a noisy queue: the same metric, without and with scale-down-stabilization");
    let set = |v: f64| endpoint.set_labeled("queue_depth", &[("queue", "jobs")], v);
    set(NOISE[0]);
    // Scraped within a second: the first scenario's Prometheus already scrapes the endpoint.
    let scraped = wait_until(Duration::from_secs(30), || {
        prom.query(NOISY_QUERY) == Some(NOISE[0]) || interrupted.load(Ordering::SeqCst)
    });
    check_interrupt(interrupted)?;
    if !scraped {
        return Err(format!("Prometheus has no {NOISY_QUERY} = {}", NOISE[0]));
    }
    for (app, _) in SIDES {
        sim.add_app(ORG, app);
        for state in [
            "started", "started", "stopped", "stopped", "stopped", "stopped",
        ] {
            sim.add_machine(app, MachineSpec::new(state).group(Some(GROUP)));
        }
    }
    let config = noisy_config();
    out.say(&format!(
        "apps {} and {}: 2 started + 4 stopped machines each; {} with",
        SIDES[0].0,
        SIDES[1].0,
        display_path(&config)
    ));
    for line in config_summary(&config) {
        out.more(&format!("  {line}"));
    }
    let prom_url = prom.url();
    let sim_url = sim.url();
    let mut daemons = Vec::new();
    for (app, window) in SIDES {
        let platform = [
            ("FLY_FLAPS_BASE_URL", sim_url.as_str()),
            ("FLY_API_BASE_URL", sim_url.as_str()),
            ("FAS_API_TOKEN", TOKEN),
        ];
        let env = [&platform[..], &noisy_env(&prom_url, app, window)].concat();
        let config_arg = config.to_string_lossy().into_owned();
        daemons.push(Daemon::spawn(
            binary(),
            &["serve", "-config", &config_arg],
            &env,
        ));
        out.say(&format!(
            "fly-autoscaler serve for {app} with DEMO_WINDOW={window} (pid {})",
            daemons.last().map_or(0, Daemon::pid)
        ));
    }
    let result = noisy_run(out, sim, &set, &daemons, interrupted);
    for d in &daemons {
        d.signal("TERM");
    }
    for d in &mut daemons {
        if d.wait_exit(Duration::from_secs(15)) != Some(0) && result.is_ok() {
            return Err(format!(
                "fly-autoscaler exited badly:\n{}",
                tail(&d.stderr(), 20)
            ));
        }
    }
    let (from, to) = result.inspect_err(|_| {
        for d in &daemons {
            out.more(&format!(
                "  | {}",
                tail(&d.stderr(), 10).replace('\n', "\n           | ")
            ));
        }
    })?;
    out.say("both stopped with SIGTERM, exit status 0");
    backtest(out, &prom_url, from, to, screenshot)
}

/// Runs the scenario: `(first, last)` second of it, Unix time.
fn noisy_run(
    out: &Out,
    sim: &Simulator,
    set: &dyn Fn(f64),
    daemons: &[Daemon],
    interrupted: &AtomicBool,
) -> Result<(i64, i64), String> {
    let started = |app: &str| sim.count(app, "started");
    let both_at = |n: usize| SIDES.iter().all(|(app, _)| started(app) == n);
    // The first value takes a scrape (1 s) and a reconcile (1 s) to reach the machines.
    if !wait_until(Duration::from_secs(30), || {
        both_at(4) || interrupted.load(Ordering::SeqCst)
    }) {
        return Err(format!(
            "the apps did not reach 4 started machines: {} and {}",
            started(SIDES[0].0),
            started(SIDES[1].0)
        ));
    }
    check_interrupt(interrupted)?;
    sim.take_requests();
    // The first whole second after now: the queue's series exists by then.
    let from = unix_now() + 1;
    println!();
    out.say(&format!(
        "queue_depth changes every second; started machines of each app (window {} / {}):",
        SIDES[0].1, SIDES[1].1
    ));
    let values = NOISE
        .iter()
        .copied()
        .chain(std::iter::repeat_n(QUIET.0, QUIET.1));
    let mut quiet_since = None;
    for (second, value) in values.enumerate() {
        if second == NOISE.len() {
            quiet_since = Some(Instant::now());
        }
        set(value);
        wait_until(Duration::from_secs(1), || {
            interrupted.load(Ordering::SeqCst)
        });
        check_interrupt(interrupted)?;
        out.say(&format!(
            "queue_depth {value:>4} (wants {})  started: {} / {}",
            (value / 10.0).ceil(),
            started(SIDES[0].0),
            started(SIDES[1].0)
        ));
    }
    // The window lets the held side down once the quiet spell is longer than it.
    if !wait_until(Duration::from_secs(20), || {
        both_at(1) || interrupted.load(Ordering::SeqCst)
    }) {
        check_interrupt(interrupted)?;
        return Err(format!(
            "after the quiet spell: {} and {} started, expected 1 each",
            started(SIDES[0].0),
            started(SIDES[1].0)
        ));
    }
    let to = unix_now();
    let requests = sim.take_requests();
    let count = |app: &str, verb: &str, before: Option<Instant>| {
        let suffix = format!("/{verb}");
        let prefix = format!("/v1/apps/{app}/machines/");
        requests
            .iter()
            .filter(|r| {
                r.method == "POST" && r.path.starts_with(&prefix) && r.path.ends_with(&suffix)
            })
            .filter(|r| before.is_none_or(|b| r.at < b))
            .count()
    };
    println!();
    out.say(&format!(
        "{:<34}{:>14}{:>30}",
        "",
        "no window",
        format!("scale-down-stabilization {}", SIDES[1].1)
    ));
    for (label, verb, before) in [
        ("machine starts", "start", None),
        ("machine stops", "stop", None),
        ("  of which during the noise", "stop", quiet_since),
    ] {
        out.say(&format!(
            "{label:<34}{:>14}{:>30}",
            count(SIDES[0].0, verb, before),
            count(SIDES[1].0, verb, before)
        ));
    }
    let (go, held) = (
        count(SIDES[0].0, "stop", None),
        count(SIDES[1].0, "stop", None),
    );
    if count(SIDES[1].0, "stop", quiet_since) > 0 || held >= go {
        return Err(format!(
            "the window should have held every stop during the noise: {held} stops with it, {go} without"
        ));
    }
    for d in daemons {
        if let Some(line) = d
            .stderr()
            .lines()
            .find(|l| l.contains("held=scale-down-stabilization"))
        {
            out.say("a pass the window held back, from the held app's log:");
            out.more(&format!(
                "  | {}",
                line.split_once(' ').map_or(line, |(_, rest)| rest)
            ));
        }
    }
    Ok((from, to))
}

/// Replays the scenario's seconds from Prometheus with the held side's config, prints the
/// report and writes its HTML (and, if asked, a screenshot of it).
fn backtest(
    out: &Out,
    prom_url: &str,
    from: i64,
    to: i64,
    screenshot: Option<&Path>,
) -> Result<(), String> {
    out.step("7. fly-autoscaler backtest: the same seconds replayed from Prometheus");
    let html = binary().parent().and_then(Path::parent).map_or_else(
        || PathBuf::from("demo-backtest.html"),
        |t| t.join("demo-backtest.html"),
    );
    let config = noisy_config().to_string_lossy().into_owned();
    let (from, to, html_arg) = (
        from.to_string(),
        to.to_string(),
        html.to_string_lossy().into_owned(),
    );
    let args = [
        "backtest",
        "-config",
        &config,
        "-from",
        &from,
        "-to",
        &to,
        "-step",
        "1s",
        "-machines",
        "6",
        "-started",
        "4",
        "-html",
        &html_arg,
    ];
    out.say(&format!("fly-autoscaler {}", args.join(" ")));
    // No token or Machines API: a backtest only reads Prometheus.
    let env = noisy_env(prom_url, SIDES[1].0, SIDES[1].1);
    let run = harness::run(binary(), &args, &env, Duration::from_secs(60));
    if run.code != Some(0) {
        return Err(format!(
            "backtest failed ({:?}): {}",
            run.code,
            run.stderr.trim()
        ));
    }
    for line in run.stdout.lines() {
        out.more(&format!("  {line}"));
    }
    out.say(&format!("HTML report: {}", display_path(&html)));
    if let Some(png) = screenshot {
        harness::screenshot(&html, png, 1000, 1400)?;
        out.say(&format!("screenshot of it: {}", display_path(png)));
    }
    Ok(())
}

fn noisy_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/demo-noisy.yml")
}

/// What `testdata/demo-noisy.yml` expands for one side: Prometheus, the app and its window.
fn noisy_env<'a>(prom_url: &'a str, app: &'a str, window: &'a str) -> [(&'a str, &'a str); 4] {
    [
        ("DEMO_PROMETHEUS_URL", prom_url),
        ("DEMO_APP", app),
        ("DEMO_WINDOW", window),
        ("FAS_LOG_FORMAT", "text"),
    ]
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The binary and Prometheus must be there; say how to get them instead of a panic.
fn preflight() -> Result<(), String> {
    let binary = binary();
    if !binary.is_file() {
        return Err(format!(
            "{} not found; build it first: cargo build --bin fly-autoscaler (or run `make demo`)",
            binary.display()
        ));
    }
    let from_env = std::env::var_os("PROMETHEUS_BIN").is_some_and(|v| !v.is_empty());
    if !from_env && harness::which("prometheus").is_none() {
        return Err(
            "`prometheus` not found on PATH (or $PROMETHEUS_BIN); run .ci/deps (`make demo` does)"
                .to_string(),
        );
    }
    let config = config_path();
    if !config.is_file() {
        return Err(format!("{} not found", config.display()));
    }
    Ok(())
}

/// The autoscaler, built beside this example (`make demo` builds both).
fn binary() -> PathBuf {
    harness::built_binary("fly-autoscaler")
}

fn config_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/demo.yml")
}

/// `path` relative to the current directory when it is inside it.
fn display_path(path: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
}

/// The config file without comments and blank lines.
fn config_summary(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(str::to_string)
        .collect()
}
