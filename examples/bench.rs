//! `make bench`: speed and memory of the `fly-autoscaler` binary, printed as a table.
//!
//! ```text
//! cargo build --release --bin fly-autoscaler --example bench
//! FAS_STATIC_BIN=target/x86_64-unknown-linux-musl/release/fly-autoscaler ./target/release/examples/bench [--quick]
//! ```
//!
//! Everything runs on loopback against the Machines API simulator (`flysim`), scripted
//! Prometheus stand-ins with injected latency, and (for `eval`) a real Prometheus. Numbers are
//! printed, never asserted: the exit status is 0 unless the harness itself breaks. Progress
//! goes to stderr, the table to stdout. `--quick` shrinks every size for a smoke run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use flysim::harness::{
    self, Daemon, History, Image, MetricsEndpoint, PromStub, Prometheus, RUNNING_BILLING, Redis,
    TempDir, Temporal, autoscaler_env, billing_env, log_field, proc_status, tail, wait_until, with,
};
use flysim::{FakeServer, MachineSpec, Reply, Simulator};

/// Clock ticks per second of `/proc/<pid>/stat` times.
const TICKS_PER_SECOND: f64 = 100.0;
const MIB: f64 = 1024.0 * 1024.0;

/// How big each measurement is (`--quick` shrinks them).
struct Sizes {
    /// Repetitions of each bulk-start run (the median is reported).
    bulk_reps: usize,
    /// Stopped machines to start in the bulk-start runs.
    bulk_machines: usize,
    /// Apps in the wildcard runs at concurrency > 1.
    wild_apps: usize,
    /// Apps in the wildcard run at concurrency 1 (1,000 would take over a minute).
    wild_apps_c1: usize,
    /// Cycles of the long-running `serve` before memory and CPU are read.
    cycles: u64,
    /// Apps of the big long-running `serve`.
    daemon_apps: usize,
    /// Runs of `version`, `eval` and of the bare query (medians reported).
    static_runs: usize,
    /// Failovers measured after SIGKILL and after SIGTERM each (medians reported).
    failovers: usize,
    /// Runs of `serve --once` over each big machine list (the median peak RSS is reported).
    list_runs: usize,
    /// Apps of the big wildcard runs (first cycle at concurrency 64; static `serve` memory).
    huge_apps: usize,
    /// Days of 15 s history the backtest replays.
    backtest_days: usize,
    /// Runs of each backtest (medians reported).
    backtest_runs: usize,
}

const FULL: Sizes = Sizes {
    bulk_reps: 3,
    bulk_machines: 20,
    wild_apps: 1000,
    wild_apps_c1: 250,
    cycles: 10,
    daemon_apps: 1000,
    static_runs: 20,
    failovers: 5,
    list_runs: 3,
    huge_apps: 10_000,
    backtest_days: 30,
    backtest_runs: 5,
};

const QUICK: Sizes = Sizes {
    bulk_reps: 1,
    bulk_machines: 20,
    wild_apps: 100,
    wild_apps_c1: 25,
    cycles: 3,
    daemon_apps: 100,
    static_runs: 5,
    failovers: 1,
    list_runs: 1,
    huge_apps: 500,
    backtest_days: 3,
    backtest_runs: 1,
};

/// One line of the table.
struct Row {
    name: String,
    value: String,
    budget: String,
    verdict: String,
}

/// A group of measurements.
type Section = fn(&Sizes) -> Vec<Row>;

fn row(name: impl Into<String>, value: impl Into<String>, budget: &str, verdict: &str) -> Row {
    Row {
        name: name.into(),
        value: value.into(),
        budget: budget.to_string(),
        verdict: verdict.to_string(),
    }
}

fn progress(msg: &str) {
    eprintln!("bench: {msg}");
}

fn main() -> ExitCode {
    let mut quick = false;
    // Sections whose name contains one of these words; none: every section.
    let mut only: Vec<String> = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => quick = true,
            "-h" | "--help" => {
                println!(
                    "usage: bench [--quick] [SECTION...]\n\nSECTION: a word of a section's name (\"lists\", \"static\"); none runs them all.\nEnvironment: FAS_STATIC_BIN = path of the static musl binary (optional)."
                );
                return ExitCode::SUCCESS;
            }
            other if other.starts_with('-') => {
                eprintln!(
                    "bench: unknown argument {other:?} (usage: bench [--quick] [SECTION...])"
                );
                return ExitCode::from(2);
            }
            word => only.push(word.to_string()),
        }
    }
    let sizes = if quick { &QUICK } else { &FULL };
    let binary = binary();
    if !binary.is_file() {
        eprintln!(
            "bench: {} not found; run `cargo build --release --bin fly-autoscaler` first",
            binary.display()
        );
        return ExitCode::from(1);
    }
    // A panicking section is reported in the table (and by the default hook on stderr).
    let began = Instant::now();
    progress(&format!(
        "binary {} ({} mode, {} CPUs, load average {})",
        binary.display(),
        if quick { "quick" } else { "full" },
        thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    ));

    let mut rows: Vec<Row> = Vec::new();
    let mut broken = false;
    let sections: [(&str, Section); 10] = [
        ("bulk start", bulk_start_rows),
        ("wildcard apps", wildcard_rows),
        ("serve memory and CPU", daemon_rows),
        ("static binary", static_rows),
        ("temporal: gRPC vs HTTP API", temporal_rows),
        ("image", image_rows),
        ("leader election failover", leader_rows),
        ("machine lists", list_rows),
        ("backtest", backtest_rows),
        ("many apps: threads and the network floor", many_apps_rows),
    ];
    let chosen = sections
        .into_iter()
        .filter(|(name, _)| only.is_empty() || only.iter().any(|o| name.contains(o.as_str())));
    for (name, section) in chosen {
        progress(&format!("== {name}"));
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| section(sizes))) {
            Ok(mut r) => rows.append(&mut r),
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                let first = msg.lines().next().unwrap_or("").to_string();
                rows.push(row(format!("{name}: HARNESS ERROR"), first, "—", "error"));
                broken = true;
            }
        }
    }
    let took = began.elapsed();
    progress(&format!("done in {:.1} s", took.as_secs_f64()));
    print_table(&rows, sizes, quick, took);
    if broken {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Bulk start
// ---------------------------------------------------------------------------------------------

const BULK_LATENCY: Duration = Duration::from_millis(50);

fn bulk_start_rows(sizes: &Sizes) -> Vec<Row> {
    let n = sizes.bulk_machines;
    let mut rows = Vec::new();
    // `None` = the default (4), not set in the environment.
    for (label, conc) in [
        ("default 4", None),
        ("1, sequential like Go", Some(1)),
        ("20", Some(20)),
    ] {
        let effective = conc.unwrap_or(4);
        let mut walls = Vec::new();
        let mut reconciles = Vec::new();
        let mut peak = 0;
        for rep in 0..sizes.bulk_reps {
            let r = bulk_start_once(n, conc);
            progress(&format!(
                "bulk start, action concurrency {label}, run {}: wall {:.0} ms, reconcile {} ms, peak in flight {}",
                rep + 1,
                ms(r.wall),
                r.took_ms,
                r.peak
            ));
            walls.push(r.wall);
            reconciles.push(Duration::from_millis(r.took_ms));
            peak = peak.max(r.peak);
        }
        let wall = median(&mut walls);
        let reconcile = median(&mut reconciles);
        let floor = BULK_LATENCY * (2 + n.div_ceil(effective)) as u32;
        let floor_text = format!(
            "{:.0} ms = (2 + ⌈{n}/{effective}⌉) × {} ms",
            ms(floor),
            BULK_LATENCY.as_millis()
        );
        let name = format!("1. Bulk start {n} stopped, action concurrency {label}");
        rows.push(row(
            format!("{name}: process wall"),
            format!(
                "{:.0} ms (start-up + exit {:.0} ms; peak {peak} in flight)",
                ms(wall),
                ms(wall.saturating_sub(reconcile))
            ),
            &floor_text,
            &ratio(wall, floor),
        ));
        rows.push(row(
            format!("{name}: reconcile (`took_ms`)"),
            format!("{:.0} ms", ms(reconcile)),
            &floor_text,
            &ratio(reconcile, floor),
        ));
    }
    rows
}

struct BulkRun {
    wall: Duration,
    took_ms: u64,
    peak: usize,
}

fn bulk_start_once(n: usize, action_concurrency: Option<usize>) -> BulkRun {
    let sim = Simulator::start();
    sim.add_app("bench", "bench-app");
    for _ in 0..n {
        sim.add_machine("bench-app", MachineSpec::new("stopped"));
    }
    sim.set_latency(BULK_LATENCY);
    let prom = slow_prometheus(n as f64, BULK_LATENCY);
    let conc = action_concurrency.map(|c| c.to_string());
    let base = autoscaler_env(&sim, &prom, "bench-app");
    let mut env = with(&base, &[STARTED_Q, ("FAS_DEPLOY_GUARD", "false")]);
    if let Some(c) = &conc {
        env.push(("FAS_ACTION_CONCURRENCY", c));
    }
    let run = harness::run(
        binary(),
        &["serve", "--once"],
        &env,
        Duration::from_secs(60),
    );
    assert_eq!(run.code, Some(0), "serve --once failed:\n{}", run.stderr);
    let started = sim.count("bench-app", "started");
    assert_eq!(started, n, "not every machine started:\n{}", run.stderr);
    let took_ms = run
        .stderr
        .lines()
        .filter(|l| l.contains(" reconciled "))
        .find_map(|l| log_field(l, "took_ms"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no `reconciled ... took_ms=` line:\n{}", run.stderr));
    BulkRun {
        wall: run.wall,
        took_ms,
        peak: sim.max_in_flight(),
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Many wildcard apps, one cycle
// ---------------------------------------------------------------------------------------------

const WILD_LATENCY: Duration = Duration::from_millis(20);
/// Release check (GraphQL) + metric query + machine list.
const REQUESTS_PER_APP: u32 = 3;

fn wildcard_rows(sizes: &Sizes) -> Vec<Row> {
    let mut rows = Vec::new();
    for conc in [1usize, 8, 32] {
        let apps = if conc == 1 {
            sizes.wild_apps_c1
        } else {
            sizes.wild_apps
        };
        progress(&format!(
            "wildcard: {apps} apps, concurrency {conc} (floor {:.1} s)",
            wild_floor(apps, conc).as_secs_f64()
        ));
        let r = wildcard_once(apps, conc);
        let floor = wild_floor(apps, conc);
        progress(&format!(
            "wildcard: {apps} apps, concurrency {conc}: wall {:.2} s, peak in flight {}",
            r.wall.as_secs_f64(),
            r.peak
        ));
        let scaled = if apps == sizes.wild_apps {
            String::new()
        } else {
            format!(" ({apps} apps, not {}: floor scaled)", sizes.wild_apps)
        };
        rows.push(row(
            format!("2. {apps} wildcard apps, 1 cycle, concurrency {conc}{scaled}"),
            format!(
                "{:.2} s ({:.2} req/app seen; simulator peak in flight {} {})",
                r.wall.as_secs_f64(),
                r.requests_per_app,
                r.peak,
                if r.peak == conc {
                    "= concurrency".to_string()
                } else {
                    format!("≠ concurrency {conc}")
                }
            ),
            &format!(
                "{:.2} s = {} ms + ⌈{apps}/{conc}⌉ × {REQUESTS_PER_APP} × {} ms",
                floor.as_secs_f64(),
                WILD_LATENCY.as_millis(),
                WILD_LATENCY.as_millis()
            ),
            &ratio(r.wall, floor),
        ));
    }
    rows
}

fn wild_floor(apps: usize, conc: usize) -> Duration {
    WILD_LATENCY + WILD_LATENCY * REQUESTS_PER_APP * apps.div_ceil(conc) as u32
}

struct WildRun {
    wall: Duration,
    peak: usize,
    requests_per_app: f64,
}

fn wildcard_once(apps: usize, conc: usize) -> WildRun {
    let sim = seeded_wildcard_sim(apps);
    sim.set_latency(WILD_LATENCY);
    let prom = slow_prometheus(1.0, WILD_LATENCY);
    let conc = conc.to_string();
    let base = autoscaler_env(&sim, &prom, "app-*");
    let env = with(
        &base,
        &[STARTED_Q, ("FAS_ORG", "bench"), ("FAS_CONCURRENCY", &conc)],
    );
    sim.take_requests();
    sim.reset_max_in_flight();
    let run = harness::run(
        binary(),
        &["serve", "--once"],
        &env,
        Duration::from_secs(150),
    );
    assert_eq!(
        run.code,
        Some(0),
        "serve --once failed:\n{}",
        tail(&run.stderr, 20)
    );
    let sim_requests = sim.take_requests().len();
    let total = sim_requests + prom.requests();
    WildRun {
        wall: run.wall,
        peak: sim.max_in_flight(),
        // Minus the one org app-list call.
        requests_per_app: total.saturating_sub(1) as f64 / apps as f64,
    }
}

/// A simulator with `app-0000`… in org `bench`, each with 1 started machine.
fn seeded_wildcard_sim(apps: usize) -> Simulator {
    let sim = Simulator::start();
    for i in 0..apps {
        let app = format!("app-{i:04}");
        sim.add_app("bench", &app);
        sim.add_machine(&app, MachineSpec::new("started"));
    }
    sim
}

// ---------------------------------------------------------------------------------------------
// 3 + 4. Long-running serve: memory and CPU
// ---------------------------------------------------------------------------------------------

fn daemon_rows(sizes: &Sizes) -> Vec<Row> {
    let mut rows = Vec::new();
    let small = daemon_run(&binary(), Serve::new(1, sizes.cycles));
    rows.push(row(
        format!(
            "3. `serve` RSS (glibc release build), 1 app, after {} cycles",
            small.cycles
        ),
        format!(
            "{:.2} MiB (VmRSS {} kB; VmHWM {:.2} MiB)",
            small.rss_kb as f64 / 1024.0,
            small.rss_kb,
            small.hwm_kb as f64 / 1024.0
        ),
        "≤ 8 MiB",
        pass(small.rss_kb as f64 / 1024.0 <= 8.0),
    ));
    let big = daemon_run(&binary(), Serve::new(sizes.daemon_apps, sizes.cycles));
    rows.push(row(
        format!(
            "3. `serve` RSS (glibc release build), {} wildcard apps, concurrency 32, after {} cycles",
            sizes.daemon_apps, big.cycles
        ),
        big.memory(),
        "— (no budget)",
        "info",
    ));
    let per = |ticks: u64, n: u64| ticks as f64 / TICKS_PER_SECOND * 1000.0 / n.max(1) as f64;
    rows.push(row(
        format!(
            "4. CPU per reconcile, {} apps (whole run)",
            sizes.daemon_apps
        ),
        format!(
            "{:.3} ms ({:.2} s utime+stime / {} reconciles)",
            per(big.cpu_ticks, big.reconciles),
            big.cpu_ticks as f64 / TICKS_PER_SECOND,
            big.reconciles
        ),
        "— (no budget)",
        "info",
    ));
    if let Some((ticks, n)) = big.steady {
        rows.push(row(
            format!(
                "4. CPU per reconcile, {} apps (after cycle 1)",
                sizes.daemon_apps
            ),
            format!(
                "{:.3} ms ({:.2} s / {n} reconciles; excludes start-up and cycle 1)",
                per(ticks, n),
                ticks as f64 / TICKS_PER_SECOND
            ),
            "≤ 0.2 ms",
            pass(per(ticks, n) <= 0.2),
        ));
    }
    rows
}

struct DaemonStats {
    cycles: u64,
    rss_kb: u64,
    hwm_kb: u64,
    cpu_ticks: u64,
    reconciles: u64,
    elapsed: Duration,
    /// CPU ticks and reconciles between the end of cycle 1 and the end.
    steady: Option<(u64, u64)>,
    /// With [`Serve::count_threads`]: threads created and reconciles logged while strace was
    /// attached (from the end of cycle 1 to the end).
    threads: Option<(u64, u64)>,
}

impl DaemonStats {
    /// RSS and peak, with the work done.
    fn memory(&self) -> String {
        format!(
            "{:.2} MiB (VmHWM {:.2} MiB; {} reconciles in {:.1} s)",
            self.rss_kb as f64 / 1024.0,
            self.hwm_kb as f64 / 1024.0,
            self.reconciles,
            self.elapsed.as_secs_f64()
        )
    }
}

/// One long-running `serve` (interval 1s, simulator latency 0): 1 app (`bench-app`) or `apps`
/// wildcard apps, until `cycles × apps` reconciles completed.
#[derive(Clone, Copy)]
struct Serve {
    apps: usize,
    cycles: u64,
    concurrency: usize,
    /// Attach `strace -f -c -e trace=clone,clone3` after cycle 1 and count thread creations.
    count_threads: bool,
}

impl Serve {
    fn new(apps: usize, cycles: u64) -> Serve {
        Serve {
            apps,
            cycles,
            concurrency: 32,
            count_threads: false,
        }
    }
}

fn daemon_run(program: &Path, run: Serve) -> DaemonStats {
    let Serve {
        apps,
        cycles,
        concurrency,
        count_threads,
    } = run;
    let (sim, app_name) = if apps == 1 {
        let sim = Simulator::start();
        sim.add_app("bench", "bench-app");
        sim.add_machine("bench-app", MachineSpec::new("started"));
        (sim, "bench-app")
    } else {
        (seeded_wildcard_sim(apps), "app-*")
    };
    let prom = PromStub::start(1.0);
    let base = autoscaler_env(&sim, &prom, app_name);
    let concurrency = concurrency.to_string();
    let env = with(
        &base,
        &[
            STARTED_Q,
            ("FAS_ORG", "bench"),
            ("FAS_CONCURRENCY", &concurrency),
            ("FAS_INTERVAL", "1s"),
            ("FAS_METRICS_ADDR", "127.0.0.1:0"),
        ],
    );
    progress(&format!(
        "serve ({}): {apps} app(s), waiting for {cycles} cycles (interval 1s)",
        program.display()
    ));
    let started = Instant::now();
    let mut daemon = Daemon::spawn(program, &["serve"], &env);
    let pid = daemon.pid();
    let metrics_url = harness::metrics_url(&daemon, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("serve did not start:\n{}", tail(&daemon.stderr(), 20)));
    let want = cycles * apps as u64;
    // Progress is followed in the log (cheap for the daemon); /metrics is scraped once at the
    // end so that scraping a 1,000-app exposition does not inflate the CPU numbers.
    let mut first_cycle: Option<(u64, u64)> = None;
    let strace_dir = TempDir::new("bench-strace");
    let strace_out = strace_dir.path().join("summary");
    // strace attached after cycle 1, and the reconciles logged when it was.
    let mut tracer: Option<(Daemon, u64)> = None;
    let mut last_report = Instant::now();
    let mut done = 0;
    // A cycle of 10,000 apps takes seconds even with a simulator that answers at once.
    let per_cycle = Duration::from_secs(4).max(Duration::from_millis(4 * apps as u64));
    let reached = wait_until(Duration::from_secs(30) + per_cycle * cycles as u32, || {
        done = count_reconciled(&daemon.stderr());
        if first_cycle.is_none() && done >= apps as u64 {
            first_cycle = Some((cpu_ticks(pid).unwrap_or(0), done));
            if count_threads {
                tracer = Some((attach_strace(pid, &strace_out), done));
            }
        }
        if last_report.elapsed() >= Duration::from_secs(3) {
            progress(&format!("serve: {done}/{want} reconciles"));
            last_report = Instant::now();
        }
        done >= want || daemon.wait_exit(Duration::ZERO).is_some()
    });
    if let Some(code) = daemon.wait_exit(Duration::ZERO) {
        panic!(
            "serve exited ({code}) early:\n{}",
            tail(&daemon.stderr(), 20)
        );
    }
    assert!(
        reached,
        "serve: only {done} of {want} reconciles after {:?}:\n{}",
        started.elapsed(),
        tail(&daemon.stderr(), 20)
    );
    let elapsed = started.elapsed();
    let threads = tracer.map(|(strace, at_attach)| {
        let logged = count_reconciled(&daemon.stderr());
        (detach_strace(strace, &strace_out), logged - at_attach)
    });
    let rss_kb = proc_status(pid, "VmRSS:").expect("VmRSS of serve");
    let hwm_kb = proc_status(pid, "VmHWM:").expect("VmHWM of serve");
    let ticks = cpu_ticks(pid).expect("/proc/<pid>/stat of serve");
    let (status, body) =
        harness::http_get(&metrics_url, &[], Duration::from_secs(10)).expect("scrape /metrics");
    assert_eq!(status, 200, "/metrics answered {status}");
    let reconciles = sum_series(&body, "fas_reconcile_count{") as u64;
    let errors = sum_series(&body, "fas_reconcile_errors_total{") as u64;
    progress(&format!(
        "serve: {reconciles} reconciles counted by /metrics ({errors} errors), RSS {rss_kb} kB, HWM {hwm_kb} kB, CPU {:.2} s",
        ticks as f64 / TICKS_PER_SECOND
    ));
    daemon.signal("TERM");
    if daemon.wait_exit(Duration::from_secs(10)).is_none() {
        progress("serve did not exit 10 s after SIGTERM; killing it");
    }
    drop(daemon);
    let steady = first_cycle.and_then(|(t0, n0)| {
        (ticks >= t0 && reconciles > n0).then(|| (ticks - t0, reconciles - n0))
    });
    DaemonStats {
        cycles: reconciles / apps as u64,
        rss_kb,
        hwm_kb,
        cpu_ticks: ticks,
        reconciles,
        elapsed,
        steady,
        threads,
    }
}

/// `strace -f -c -e trace=clone,clone3 -p <pid>`: counts the threads `pid` creates from now on.
fn attach_strace(pid: u32, summary: &Path) -> Daemon {
    let strace = harness::which("strace").expect("strace on PATH (`apt-get install strace`)");
    let pid = pid.to_string();
    let summary = summary.to_string_lossy().into_owned();
    let args = [
        "-f",
        "-c",
        "-e",
        "trace=clone,clone3",
        "-o",
        &summary,
        "-p",
        &pid,
    ];
    let tracer = Daemon::spawn(strace, &args, &[]);
    // strace says so on stderr once it is attached to every thread.
    let attached = wait_until(Duration::from_secs(10), || {
        tracer.stderr().contains("attached")
    });
    assert!(attached, "strace did not attach:\n{}", tracer.stderr());
    tracer
}

/// Stops [`attach_strace`]'s strace and reads the calls of its `total` line.
fn detach_strace(mut strace: Daemon, summary: &Path) -> u64 {
    strace.signal("INT");
    assert!(
        strace.wait_exit(Duration::from_secs(10)).is_some(),
        "strace did not exit after SIGINT"
    );
    let text = std::fs::read_to_string(summary).expect("strace summary");
    // `% time  seconds  usecs/call  calls  errors syscall`; no call at all: no total line.
    text.lines()
        .find(|l| l.trim_end().ends_with(" total"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(0)
}

/// `reconciled` log lines (one per successful reconcile).
fn count_reconciled(stderr: &str) -> u64 {
    stderr.matches(" reconciled app=").count() as u64
}

/// Sum of every sample whose line starts with `prefix` (e.g. `fas_reconcile_count{`).
fn sum_series(exposition: &str, prefix: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

// ---------------------------------------------------------------------------------------------
// 5. Static binary
// ---------------------------------------------------------------------------------------------

const EVAL_QUERY: &str = "sum(queue_depth{app=\"$APP_NAME\"})";

/// `$FAS_STATIC_BIN`, when it names a file.
fn static_binary() -> Option<PathBuf> {
    std::env::var_os("FAS_STATIC_BIN")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_file())
}

fn static_rows(sizes: &Sizes) -> Vec<Row> {
    let Some(path) = static_binary() else {
        progress("static binary: FAS_STATIC_BIN not set or missing (`make static`)");
        return vec![row(
            "5. Static binary",
            "not built (set FAS_STATIC_BIN; `make static`)",
            "≤ 6 MiB; eval ≤ 10 ms above network",
            "n/a",
        )];
    };
    let runs = sizes.static_runs;
    let mut rows = Vec::new();
    let size = std::fs::metadata(&path).expect("stat static binary").len();
    rows.push(row(
        "5. Static binary size",
        format!("{size} bytes = {:.2} MiB", size as f64 / MIB),
        "≤ 6 MiB",
        pass(size as f64 <= 6.0 * MIB),
    ));

    let gnu_time = gnu_time();
    let no_time = "n/a (GNU time missing: `apt-get install time`)";

    // `version`
    progress(&format!("static: `version` × {runs}"));
    let _ = harness::run(&path, &["version"], &[], Duration::from_secs(10));
    let mut walls: Vec<Duration> = (0..runs)
        .map(|_| {
            let r = harness::run(&path, &["version"], &[], Duration::from_secs(10));
            assert_eq!(r.code, Some(0), "version failed: {}", r.stderr);
            r.wall
        })
        .collect();
    let version_wall = median(&mut walls);
    rows.push(row(
        format!("5. Static `version`: start-to-exit wall (median of {runs})"),
        format!("{:.2} ms", ms(version_wall)),
        "— (no budget)",
        "info",
    ));
    rows.push(peak_rss_row(
        "5. Static `version`: peak RSS (VmHWM)",
        gnu_time.as_ref(),
        no_time,
        |t| peak_rss_kb(t, &path, &["version"], &[], 5),
    ));

    // `eval` against a real Prometheus.
    progress("static: starting Prometheus and waiting for the first sample (~6 s)");
    let endpoint = MetricsEndpoint::start();
    endpoint.set_labeled("queue_depth", &[("app", "my-app")], 35.0);
    let prometheus = Prometheus::start(&[&endpoint.addr()]);
    let concrete = EVAL_QUERY.replace("$APP_NAME", "my-app");
    prometheus.wait_for(&concrete, |v| v == 35.0, Duration::from_secs(30));
    let prom_url = prometheus.url();
    let env = [
        ("FAS_APP_NAME", "my-app"),
        ("FAS_STARTED_MACHINE_COUNT", "ceil(queue_depth / 10)"),
        ("FAS_PROMETHEUS_ADDRESS", prom_url.as_str()),
        ("FAS_PROMETHEUS_METRIC_NAME", "queue_depth"),
        ("FAS_PROMETHEUS_QUERY", EVAL_QUERY),
    ];
    let query_url = format!("{prom_url}/api/v1/query");
    let eval_once = |program: &Path| {
        let r = harness::run(program, &["eval"], &env, Duration::from_secs(20));
        assert_eq!(r.code, Some(0), "eval failed: {}", r.stderr);
        assert!(
            r.stdout.contains("\"min\": 4"),
            "unexpected eval output: {}",
            r.stdout
        );
        r.wall
    };
    let query_once = || {
        // A new agent per call: a fresh connection, like `eval`'s.
        let t = Instant::now();
        let (status, body) =
            harness::http_get(&query_url, &[("query", &concrete)], Duration::from_secs(10))
                .expect("query Prometheus");
        let took = t.elapsed();
        assert_eq!(status, 200, "{body}");
        took
    };
    progress(&format!("static: `eval` × {runs}, bare query × {runs}"));
    let release = binary();
    // Warm-up (Prometheus' query path, page cache), then interleaved runs.
    eval_once(&path);
    eval_once(&release);
    query_once();
    let (mut evals, mut queries, mut glibc) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        evals.push(eval_once(&path));
        queries.push(query_once());
        glibc.push(eval_once(&release));
    }
    let eval_wall = median(&mut evals);
    let net = median(&mut queries);
    let glibc_wall = median(&mut glibc);
    let above = eval_wall.saturating_sub(net);
    rows.push(row(
        format!("5. Static `eval` vs real Prometheus: wall (median of {runs})"),
        format!("{:.2} ms", ms(eval_wall)),
        "— (see next rows)",
        "info",
    ));
    rows.push(row(
        format!("5. Bare HTTP query to the same Prometheus (median of {runs})"),
        format!("{:.2} ms", ms(net)),
        "— (network + Prometheus)",
        "info",
    ));
    rows.push(row(
        "5. Static `eval` minus network",
        format!("{:.2} ms", ms(above)),
        "≤ 10 ms",
        pass(above <= Duration::from_millis(10)),
    ));
    rows.push(row(
        format!("5. (glibc release build) `eval` wall, for comparison (median of {runs})"),
        format!("{:.2} ms", ms(glibc_wall)),
        "— (no budget)",
        "info",
    ));
    rows.push(peak_rss_row(
        "5. Static `eval`: peak RSS (VmHWM)",
        gnu_time.as_ref(),
        no_time,
        |t| peak_rss_kb(t, &path, &["eval"], &env, 5),
    ));
    drop(prometheus);
    drop(endpoint);

    // `serve` of the static binary (the one the image ships): musl's allocator instead of
    // glibc's per-thread arenas.
    let small = daemon_run(&path, Serve::new(1, sizes.cycles));
    rows.push(row(
        format!(
            "5. Static `serve` RSS, 1 app, after {} cycles",
            small.cycles
        ),
        format!(
            "{:.2} MiB (VmHWM {:.2} MiB)",
            small.rss_kb as f64 / 1024.0,
            small.hwm_kb as f64 / 1024.0
        ),
        "≤ 8 MiB",
        pass(small.rss_kb as f64 / 1024.0 <= 8.0),
    ));
    let big = daemon_run(&path, Serve::new(sizes.daemon_apps, sizes.cycles));
    rows.push(row(
        format!(
            "5. Static `serve` RSS, {} wildcard apps, concurrency 32, after {} cycles",
            sizes.daemon_apps, big.cycles
        ),
        format!(
            "{:.2} MiB (VmHWM {:.2} MiB; CPU {:.3} ms/reconcile)",
            big.rss_kb as f64 / 1024.0,
            big.hwm_kb as f64 / 1024.0,
            big.cpu_ticks as f64 / TICKS_PER_SECOND * 1000.0 / big.reconciles.max(1) as f64
        ),
        "— (no budget)",
        "info",
    ));
    rows
}

// ---------------------------------------------------------------------------------------------
// 11. Many apps: no thread per request, CPU-bound or network-bound
// ---------------------------------------------------------------------------------------------

/// Concurrency of the big wildcard runs.
const MANY_CONCURRENCY: usize = 64;

fn many_apps_rows(sizes: &Sizes) -> Vec<Row> {
    let mut rows = Vec::new();
    let apps = sizes.huge_apps;
    let floor = wild_floor(apps, MANY_CONCURRENCY);
    progress(&format!(
        "many apps: {apps} apps, concurrency {MANY_CONCURRENCY} (floor {:.2} s)",
        floor.as_secs_f64()
    ));
    let r = wildcard_once(apps, MANY_CONCURRENCY);
    let over = r.wall.as_secs_f64() / floor.as_secs_f64();
    rows.push(row(
        format!("11. {apps} wildcard apps, 1 cycle, concurrency {MANY_CONCURRENCY}"),
        format!(
            "{:.2} s ({:.2} req/app seen; simulator peak in flight {}); {}",
            r.wall.as_secs_f64(),
            r.requests_per_app,
            r.peak,
            ratio(r.wall, floor)
        ),
        &format!(
            "≤ 1.1 × {:.2} s = {} ms + ⌈{apps}/{MANY_CONCURRENCY}⌉ × {REQUESTS_PER_APP} × {} ms",
            floor.as_secs_f64(),
            WILD_LATENCY.as_millis(),
            WILD_LATENCY.as_millis()
        ),
        pass(over <= 1.1),
    ));

    match static_binary() {
        Some(path) => {
            let run = Serve {
                concurrency: MANY_CONCURRENCY,
                ..Serve::new(apps, 3)
            };
            let big = daemon_run(&path, run);
            rows.push(row(
                format!(
                    "11. Static `serve` RSS, {apps} wildcard apps, concurrency {MANY_CONCURRENCY}, after {} cycles",
                    big.cycles
                ),
                big.memory(),
                "≤ 24 MiB",
                pass(big.rss_kb as f64 / 1024.0 <= 24.0),
            ));
        }
        None => rows.push(row(
            format!("11. Static `serve` RSS, {apps} wildcard apps"),
            "not built (set FAS_STATIC_BIN; `make static`)",
            "≤ 24 MiB",
            "n/a",
        )),
    }

    let name = format!(
        "11. Threads created per reconcile after cycle 1 ({} apps, concurrency 32)",
        sizes.daemon_apps
    );
    if harness::which("strace").is_none() {
        rows.push(row(
            name,
            "n/a (strace missing: `apt-get install strace`)",
            "0",
            "n/a",
        ));
        return rows;
    }
    let run = Serve {
        count_threads: true,
        ..Serve::new(sizes.daemon_apps, sizes.cycles)
    };
    let stats = daemon_run(&binary(), run);
    let (threads, reconciles) = stats.threads.expect("strace counted");
    rows.push(row(
        name,
        format!("{threads} clone/clone3 calls over {reconciles} reconciles"),
        "0",
        pass(threads == 0 && reconciles > 0),
    ));
    rows
}

/// GNU time, whose `-f %M` prints the child's peak RSS (ru_maxrss, kB).
fn gnu_time() -> Option<PathBuf> {
    let t = PathBuf::from("/usr/bin/time");
    let t = if t.is_file() {
        t
    } else {
        harness::which("time")?
    };
    let probe = harness::run(&t, &["-f", "%M", "true"], &[], Duration::from_secs(10));
    (probe.code == Some(0) && probe.stderr.trim().parse::<u64>().is_ok()).then_some(t)
}

/// Median of `runs` peak-RSS readings of `program args` under GNU time.
fn peak_rss_kb(
    time: &Path,
    program: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    runs: usize,
) -> u64 {
    let dir = TempDir::new("bench-time");
    let out = dir.path().join("maxrss");
    let out_s = out.to_string_lossy().into_owned();
    let program_s = program.to_string_lossy().into_owned();
    let mut full: Vec<&str> = vec!["-f", "%M", "-o", &out_s, &program_s];
    full.extend_from_slice(args);
    let mut readings: Vec<u64> = (0..runs)
        .map(|_| {
            let r = harness::run(time, &full, env, Duration::from_secs(20));
            assert_eq!(r.code, Some(0), "time {args:?} failed: {}", r.stderr);
            std::fs::read_to_string(&out)
                .ok()
                .and_then(|s| s.trim().lines().last()?.trim().parse().ok())
                .expect("GNU time output")
        })
        .collect();
    readings.sort_unstable();
    readings[readings.len() / 2]
}

// ---------------------------------------------------------------------------------------------
// Shared pieces
// ---------------------------------------------------------------------------------------------

/// Every run scales the started machines to the metric `q`.
const STARTED_Q: (&str, &str) = ("FAS_STARTED_MACHINE_COUNT", "q");

/// A Prometheus stand-in answering every query with `value`, after `delay`.
fn slow_prometheus(value: f64, delay: Duration) -> PromStub {
    let prom = PromStub::start(value);
    prom.set_delay(delay);
    prom
}

/// The release build of the autoscaler, beside this example.
fn binary() -> PathBuf {
    harness::built_binary("fly-autoscaler")
}

/// utime + stime of `/proc/<pid>/stat`, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; the first of them is field 3 (state).
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ratio(value: Duration, floor: Duration) -> String {
    format!("{:.2}× floor", value.as_secs_f64() / floor.as_secs_f64())
}

fn pass(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

/// The 1/5/15-minute load averages (other work on the machine skews the timings).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".to_string())
}

// ---------------------------------------------------------------------------------------------
// 6. Temporal: `eval` over gRPC vs over the HTTP API
// ---------------------------------------------------------------------------------------------

fn temporal_rows(sizes: &Sizes) -> Vec<Row> {
    let runs = sizes.static_runs;
    let program = static_binary().unwrap_or_else(binary);
    progress("temporal: starting the dev server, 3 running workflows");
    let t = Temporal::start(&[]);
    for i in 0..3 {
        t.start_workflow("default", "billing", &format!("billing-{i}"), "q");
    }
    t.wait_for_count("default", RUNNING_BILLING, 3, Duration::from_secs(10));
    let (grpc_address, http_url) = (t.grpc_address(), t.http_url());
    let query = "WorkflowType=\"$APP_NAME\"";
    let grpc_env = billing_env(&grpc_address, query);
    let http_env = billing_env(&http_url, query);
    let eval_once = |env: &[(&str, &str)]| {
        let r = harness::run(&program, &["eval"], env, Duration::from_secs(20));
        assert_eq!(r.code, Some(0), "eval failed: {}", r.stderr);
        assert!(
            r.stdout.contains("\"min\": 3"),
            "unexpected eval output: {}",
            r.stdout
        );
        r.wall
    };
    let count_url = format!("{}/api/v1/namespaces/default/workflow-count", t.http_url());
    let query_once = || {
        let started = Instant::now();
        let (status, body) = harness::http_get(
            &count_url,
            &[("query", RUNNING_BILLING)],
            Duration::from_secs(10),
        )
        .expect("count over HTTP");
        let took = started.elapsed();
        assert_eq!(status, 200, "{body}");
        took
    };
    progress(&format!(
        "temporal: `eval` over gRPC × {runs}, over HTTP × {runs}, bare HTTP count × {runs}"
    ));
    eval_once(&grpc_env);
    eval_once(&http_env);
    query_once();
    let (mut grpc, mut http, mut bare) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        grpc.push(eval_once(&grpc_env));
        http.push(eval_once(&http_env));
        bare.push(query_once());
    }
    let (grpc, http, bare) = (median(&mut grpc), median(&mut http), median(&mut bare));
    let which = if program == binary() {
        "release"
    } else {
        "static"
    };
    vec![
        row(
            format!(
                "6. Temporal {which} `eval` over gRPC (h2c, host:port): wall (median of {runs})"
            ),
            format!("{:.2} ms", ms(grpc)),
            "— (compare with the next row)",
            "info",
        ),
        row(
            format!(
                "6. Temporal {which} `eval` over the HTTP API (http://): wall (median of {runs})"
            ),
            format!("{:.2} ms", ms(http)),
            "— (same server, same query)",
            "info",
        ),
        row(
            "6. gRPC vs HTTP API `eval`",
            format!(
                "{:+.2} ms ({:.2}×)",
                ms(grpc) - ms(http),
                grpc.as_secs_f64() / http.as_secs_f64().max(1e-9)
            ),
            "—",
            "info",
        ),
        row(
            format!("6. Bare HTTP count from this process, fresh connection (median of {runs})"),
            format!("{:.2} ms", ms(bare)),
            "— (network + Temporal)",
            "info",
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// 7. The image
// ---------------------------------------------------------------------------------------------

fn image_rows(_: &Sizes) -> Vec<Row> {
    let Some(binary) = static_binary() else {
        return vec![row(
            "7. Image",
            "not built (set FAS_STATIC_BIN; `make static`)",
            "—",
            "n/a",
        )];
    };
    if !harness::is_root() || harness::which("buildah").is_none() {
        progress("image: needs root and buildah (`.ci/deps`)");
        return vec![row(
            "7. Image",
            "not built (needs root and buildah)",
            "—",
            "n/a",
        )];
    }
    progress("image: buildah bud of the Dockerfile");
    let began = Instant::now();
    let image = Image::build(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile"),
        &binary,
    );
    let built = began.elapsed();
    let binary_size = std::fs::metadata(&binary)
        .expect("stat static binary")
        .len();
    let size = image.size();
    let pushed = image.pushed_size();
    vec![
        row(
            "7. Image size, as stored (FROM scratch, 1 layer)",
            format!(
                "{size} bytes = {:.2} MiB (binary + {} bytes of tar headers and config)",
                size as f64 / MIB,
                size.saturating_sub(binary_size)
            ),
            "— (binary ≤ 6 MiB)",
            "info",
        ),
        row(
            "7. Image size, as pushed (gzip layer)",
            format!("{pushed} bytes = {:.2} MiB", pushed as f64 / MIB),
            "— (no budget)",
            "info",
        ),
        row(
            "7. Image build (buildah bud + from, vfs, chroot)",
            format!("{:.2} s", built.as_secs_f64()),
            "— (no budget)",
            "info",
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// 8. Leader election failover
// ---------------------------------------------------------------------------------------------

/// Two `serve` processes with the default leader-election TTL (15 s) and interval (15 s) on
/// one real Redis; the leader is sent `signal` and the metric changes at once: the time from
/// the signal to the other instance's first machine action.
fn failover_once(redis: &Redis, run: usize, signal: &str) -> Duration {
    let sim = Simulator::start();
    sim.add_app("my-org", "my-app");
    for _ in 0..3 {
        sim.add_machine("my-app", MachineSpec::new("stopped"));
    }
    let metric = PromStub::start(1.0);
    let base = autoscaler_env(&sim, &metric, "my-app");
    let (url, key) = (redis.url(), format!("bench:failover:{signal}:{run}"));
    let env = with(
        &base,
        &[
            ("FAS_STARTED_MACHINE_COUNT", "q"),
            ("FAS_METRICS_ADDR", "off"),
            ("FAS_LEADER_ELECTION_URL", url.as_str()),
            ("FAS_LEADER_ELECTION_KEY", key.as_str()),
        ],
    );
    let mut instances: Vec<Daemon> = (0..2)
        .map(|_| Daemon::spawn(binary(), &["serve"], &env))
        .collect();
    let acted = |sim: &Simulator| -> Vec<(Instant, String)> {
        sim.requests()
            .into_iter()
            .filter(|r| r.method == "POST")
            .map(|r| (r.at, r.header("user-agent").unwrap_or_default().to_string()))
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(60), || sim.count("my-app", "started")
            == 1),
        "no leader acted"
    );
    let leader_ua = acted(&sim)[0].1.clone();
    let leader = instances
        .iter()
        .position(|d| {
            let id = d
                .stderr()
                .lines()
                .find(|l| l.contains("fly-autoscaler "))
                .and_then(|l| log_field(l, "instance"))
                .unwrap_or_default();
            !id.is_empty() && leader_ua.contains(&id)
        })
        .expect("the leader's instance id in its User-Agent");
    let signalled = Instant::now();
    instances[leader].signal(signal);
    metric.set(2.0);
    let took = wait_until(Duration::from_secs(60), || {
        acted(&sim).iter().any(|(_, ua)| *ua != leader_ua)
    });
    assert!(took, "no failover after SIG{signal}");
    let first = acted(&sim)
        .into_iter()
        .find(|(_, ua)| *ua != leader_ua)
        .map(|(at, _)| at)
        .unwrap();
    for d in &mut instances {
        d.signal("KILL");
        d.wait_exit(Duration::from_secs(10));
    }
    first.saturating_duration_since(signalled)
}

fn leader_rows(sizes: &Sizes) -> Vec<Row> {
    let redis = Redis::start();
    let runs = sizes.failovers;
    let mut rows = Vec::new();
    for (signal, bound, budget) in [
        ("KILL", "≤ ttl + interval = 30 s", Duration::from_secs(30)),
        ("TERM", "≤ interval = 15 s", Duration::from_secs(15)),
    ] {
        progress(&format!(
            "leader election: failover after SIG{signal} × {runs} (default ttl 15s)"
        ));
        let mut times: Vec<Duration> = (0..runs)
            .map(|i| failover_once(&redis, i, signal))
            .collect();
        let (min, max) = (*times.iter().min().unwrap(), *times.iter().max().unwrap());
        let median = median(&mut times);
        rows.push(row(
            format!("8. Leader failover after SIG{signal}, default ttl 15s: signal to the standby's first action (median of {runs})"),
            format!(
                "{:.2} s (min {:.2} s, max {:.2} s)",
                median.as_secs_f64(),
                min.as_secs_f64(),
                max.as_secs_f64()
            ),
            bound,
            pass(median <= budget),
        ));
    }
    rows
}

// ---------------------------------------------------------------------------------------------
// 9. Big machine lists: peak RSS of `serve --once`
// ---------------------------------------------------------------------------------------------

/// Machines in the big lists; 20,000 is the most a list may hold.
const LIST_SIZES: [usize; 2] = [10_000, 20_000];
const LIST_BUDGET_MIB: f64 = 48.0;

fn list_rows(sizes: &Sizes) -> Vec<Row> {
    let Some(time) = gnu_time() else {
        return vec![row(
            "9. `serve --once` over a big machine list",
            "n/a (GNU time missing: `apt-get install time`)",
            "< 48 MiB at 10,000 machines",
            "n/a",
        )];
    };
    let mut programs = vec![("glibc release", binary())];
    if let Some(p) = std::env::var_os("FAS_STATIC_BIN")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_file())
    {
        programs.push(("static", p));
    }
    let mut rows = Vec::new();
    for n in LIST_SIZES {
        let body = machine_list_body(n);
        let list_mb = body.len() as f64 / 1e6;
        let per_machine_kb = body.len() as f64 / n as f64 / 1000.0;
        let api = machines_api_serving(body);
        let url = api.url();
        let count = n.to_string();
        let env = [
            ("FAS_APP_NAME", "my-app"),
            ("FAS_API_TOKEN", "x"),
            ("FLY_FLAPS_BASE_URL", url.as_str()),
            ("FLY_API_BASE_URL", url.as_str()),
            ("FAS_STARTED_MACHINE_COUNT", count.as_str()),
            ("FAS_MAX_MACHINES", "20000"),
            ("FAS_LOG_FORMAT", "text"),
        ];
        for (which, program) in &programs {
            progress(&format!(
                "lists: {which} `serve --once` over {n} machines ({list_mb:.1} MB) × {}",
                sizes.list_runs
            ));
            // The run reads every machine and has nothing to do.
            let check = harness::run(program, &["serve", "--once"], &env, Duration::from_secs(60));
            let expected = format!("created={n} started={n} stopped=0");
            assert!(
                check.code == Some(0)
                    && check.stderr.contains(&expected)
                    && check.stderr.contains("plan=\"no scale\""),
                "serve --once over {n} machines:\n{}",
                tail(&check.stderr, 5)
            );
            let kb = peak_rss_kb(&time, program, &["serve", "--once"], &env, sizes.list_runs);
            let mib = kb as f64 / 1024.0;
            let (budget, verdict) = if n == LIST_SIZES[0] {
                ("< 48 MiB", pass(mib < LIST_BUDGET_MIB))
            } else {
                ("— (no budget)", "info")
            };
            rows.push(row(
                format!("9. {which} `serve --once` over {n} machines: peak RSS (VmHWM)"),
                format!(
                    "{mib:.2} MiB ({kb} kB; list {list_mb:.1} MB, {per_machine_kb:.1} KB per machine; {:.2} s)",
                    check.wall.as_secs_f64()
                ),
                budget,
                verdict,
            ));
        }
    }
    rows
}

/// A JSON list of `n` started machines of group `app`, each shaped like the first machine of
/// `testdata/fixtures/list-machines-response.json` with 20 more environment variables in
/// its config (a real app's machines are 2–4 KB of JSON): distinct ids, names, instance
/// ids and addresses.
fn machine_list_body(n: usize) -> String {
    let fixture: serde_json::Value = serde_json::from_str(include_str!(
        "../testdata/fixtures/list-machines-response.json"
    ))
    .expect("the list fixture");
    let mut template = fixture[0].clone();
    for i in 0..20 {
        template["config"]["env"][format!("APP_SETTING_{i:02}")] =
            serde_json::json!(format!("value-{i}-of-a-typical-length-for-a-setting"));
    }
    let mut out = String::with_capacity(n * 3_500);
    out.push('[');
    for i in 0..n {
        template["id"] = serde_json::json!(format!("e28656{i:08x}"));
        template["name"] = serde_json::json!(format!("machine-{i}"));
        template["instance_id"] = serde_json::json!(format!("01J8ZK{i:020X}"));
        template["private_ip"] = serde_json::json!(format!("fdaa:9:1c2d:a7b:{:x}::2", i + 1));
        if i > 0 {
            out.push(',');
        }
        out.push_str(&template.to_string());
    }
    out.push(']');
    out
}

/// A stand-in Machines API that lists `body` for `my-app` and reports no release.
fn machines_api_serving(body: String) -> FakeServer {
    FakeServer::start(move |rq| match rq.path.as_str() {
        "/v1/apps/my-app/machines" => Reply::json(200, &body),
        "/graphql" => Reply::json(200, r#"{"data":{"app":{"currentRelease":null}}}"#),
        _ => Reply::json(404, r#"{"error":"not found"}"#),
    })
}

// ---------------------------------------------------------------------------------------------
// 10. Backtest: a month of history, fetched from a real Prometheus and replayed
// ---------------------------------------------------------------------------------------------

const BACKTEST_STEP: i64 = 15;

/// The replayed config: two metrics, and every scale control that keeps state at work.
const BACKTEST_CONFIG: &str = r#"app-name: bench
interval: 15s
concurrency: CONCURRENCY
verbose: true
log-format: text
min-started-machine-count: ceil(queue_depth / 10) + ceil(http_rps / 100)
max-started-machine-count: ceil(queue_depth / 10) + ceil(http_rps / 100) + 1
scale-down-stabilization: 5m
max-scale-up: 4
cooldown: 1m
metric-collectors:
  - type: prometheus
    metric-name: queue_depth
    address: "PROMETHEUS"
    query: 'sum(queue_depth{app="$APP_NAME"})'
  - type: prometheus
    metric-name: http_rps
    address: "PROMETHEUS"
    query: 'sum(http_rps{app="$APP_NAME"})'
"#;

/// A day's cycle plus noise (a fixed pseudo-random sequence): the planner acts often.
fn bench_history(t0: i64, steps: usize) -> History {
    let mut seed: u64 = 12345;
    let mut noise = move || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) as f64 / (1u64 << 31) as f64 - 0.5
    };
    let mut history = History::new();
    for (name, base, swing, spread, phase) in [
        ("queue_depth", 40.0, 35.0, 30.0, 0.0),
        ("http_rps", 300.0, 250.0, 200.0, 1.0),
    ] {
        let samples: Vec<(f64, Option<f64>)> = (0..steps as i64)
            .map(|k| {
                let t = t0 + BACKTEST_STEP * k - 5;
                let day = (t % 86_400) as f64 / 86_400.0;
                let v =
                    base + swing * (std::f64::consts::TAU * day + phase).sin() + spread * noise();
                (t as f64, Some(v.max(0.0).round()))
            })
            .collect();
        history.gauge(name, &[("app", "bench")], samples);
    }
    history
}

/// `took_ms` and `cpu_ms` of the backtest's debug line starting with `message`.
fn phase(stderr: &str, message: &str) -> (Duration, Option<Duration>) {
    let line = stderr
        .lines()
        .find(|l| l.contains(&format!("DEBUG {message}")))
        .unwrap_or_else(|| panic!("no {message:?} line in:\n{}", tail(stderr, 10)));
    let field = |key| {
        log_field(line, key)
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
    };
    (field("took_ms").expect("took_ms"), field("cpu_ms"))
}

fn backtest_rows(sizes: &Sizes) -> Vec<Row> {
    let days = sizes.backtest_days;
    let steps = days * 86_400 / BACKTEST_STEP as usize;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    let t0 = (now - 600) / BACKTEST_STEP * BACKTEST_STEP - BACKTEST_STEP * (steps as i64 - 1);
    progress(&format!(
        "backtest: writing {days} days of two metrics with promtool"
    ));
    let history = bench_history(t0, steps);
    let written = Instant::now();
    let prometheus = Prometheus::start_with_history(&[], &history);
    let backfill = written.elapsed();
    let dir = TempDir::new("bench-backtest");
    let (from, to) = (
        t0.to_string(),
        (t0 + BACKTEST_STEP * (steps as i64 - 1)).to_string(),
    );
    let label = format!("10. Backtest, {days} days at 15 s ({steps} steps), 2 metrics");
    let mut rows = vec![row(
        format!("{label}: history written (promtool) and Prometheus ready"),
        format!("{:.1} s ({} samples)", backfill.as_secs_f64(), 2 * steps),
        "— (set-up, not the autoscaler)",
        "info",
    )];
    let write_config = |concurrency: usize| {
        let config = BACKTEST_CONFIG
            .replace("PROMETHEUS", &prometheus.url())
            .replace("CONCURRENCY", &concurrency.to_string());
        dir.write("bench.yml", &config).display().to_string()
    };
    // The whole range, 20 machines, `concurrency` and `format`.
    let command = |concurrency: usize, format: &str| -> Vec<String> {
        let path = write_config(concurrency);
        let args = [
            "backtest",
            "-config",
            &path,
            "-from",
            &from,
            "-to",
            &to,
            "-machines",
            "20",
            "-format",
            format,
        ];
        args.map(String::from).to_vec()
    };
    for concurrency in [1, 4] {
        let owned = command(concurrency, "text");
        let args: Vec<&str> = owned.iter().map(String::as_str).collect();
        progress(&format!(
            "backtest: {} runs, concurrency {concurrency}",
            sizes.backtest_runs
        ));
        let (mut fetch, mut replay, mut cpu, mut wall) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..sizes.backtest_runs {
            let r = harness::run(binary(), &args, &[], Duration::from_secs(300));
            assert_eq!(r.code, Some(0), "backtest failed: {}", r.stderr);
            assert!(
                r.stdout
                    .contains(&format!("{steps} steps of 15s (0 with a missing metric)")),
                "{}",
                r.stdout
            );
            fetch.push(phase(&r.stderr, "history fetched").0);
            let (took, on_cpu) = phase(&r.stderr, "replayed");
            replay.push(took);
            cpu.extend(on_cpu);
            wall.push(r.wall);
        }
        let runs = sizes.backtest_runs;
        let queries = 2 * steps.div_ceil(10_000);
        rows.push(row(
            format!("{label}: history fetch, {queries} range queries, concurrency {concurrency} (median of {runs})"),
            format!("{:.0} ms", ms(median(&mut fetch))),
            "— (Prometheus' own work and JSON)",
            "info",
        ));
        if concurrency == 1 {
            let took = median(&mut replay);
            let on_cpu = if cpu.is_empty() {
                "CPU n/a".to_string()
            } else {
                format!("{:.0} ms on CPU", ms(median(&mut cpu)))
            };
            rows.push(row(
                format!("{label}: replay, expressions + scale controls + plan, configured and baseline (median of {runs})"),
                format!("{:.0} ms ({on_cpu})", ms(took)),
                "≤ 1 s",
                pass(took <= Duration::from_secs(1)),
            ));
        }
        rows.push(row(
            format!(
                "{label}: whole command, text report, concurrency {concurrency} (median of {runs})"
            ),
            format!("{:.2} s", median(&mut wall).as_secs_f64()),
            "— (no budget)",
            "info",
        ));
    }
    let gnu_time = gnu_time();
    for format in ["text", "json"] {
        let owned = command(1, format);
        let args: Vec<&str> = owned.iter().map(String::as_str).collect();
        rows.push(peak_rss_row(
            &format!("{label}: peak RSS, -format {format}"),
            gnu_time.as_ref(),
            "n/a (GNU time missing: `apt-get install time`)",
            |t| peak_rss_kb(t, &binary(), &args, &[], 1),
        ));
    }
    rows
}

fn print_table(rows: &[Row], sizes: &Sizes, quick: bool, took: Duration) {
    let headers = ["Measurement", "Value", "Floor / budget", "Ratio / verdict"];
    let cells: Vec<[&str; 4]> = rows
        .iter()
        .map(|r| {
            [
                r.name.as_str(),
                r.value.as_str(),
                r.budget.as_str(),
                r.verdict.as_str(),
            ]
        })
        .collect();
    let mut widths = headers.map(|h| h.chars().count());
    for c in &cells {
        for (w, s) in widths.iter_mut().zip(c) {
            *w = (*w).max(s.chars().count());
        }
    }
    let line = |c: [&str; 4]| {
        let parts: Vec<String> = c
            .iter()
            .zip(widths)
            .map(|(s, w)| format!("{s}{}", " ".repeat(w - s.chars().count())))
            .collect();
        format!("| {} |", parts.join(" | "))
    };
    println!();
    println!(
        "fly-autoscaler bench ({}; {} CPUs; took {:.0} s; load average at the end: {})",
        if quick { "--quick" } else { "full" },
        thread::available_parallelism().map_or(0, |n| n.get()),
        took.as_secs_f64(),
        load_average()
    );
    println!();
    println!("{}", line(headers));
    let dashes: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    println!("|-{}-|", dashes.join("-|-"));
    for c in cells {
        println!("{}", line(c));
    }
    println!();
    let notes = [
        format!(
            "1. Wall = `Instant` from spawn to a blocking `wait` of `serve --once` (median of {} runs); \
             `took_ms` is the binary's own `reconciled` log field, so wall minus it is start-up + exit. \
             The simulator and the Prometheus stand-in (`PromStub`) each add 50 ms per request; \
             floor = collect + list + ⌈machines / action concurrency⌉ start rounds, deploy guard off; \
             peak in flight is the simulator's own counter.",
            sizes.bulk_reps
        ),
        "2. Same wall measurement, one run each; 20 ms per request on the simulator (GraphQL \
         release check + machine list) and the Prometheus stand-in (metric query): 3 serial \
         requests per app, plus the one org app-list call. \"req/app seen\" counts the requests \
         both servers received."
            .to_string(),
        "3–4. `serve` with FAS_INTERVAL=1s, FAS_CONCURRENCY=32, simulator latency 0: cycles are \
         counted from the `reconciled` log lines, then VmRSS/VmHWM are read from \
         /proc/<pid>/status and utime+stime (100 ticks/s) from /proc/<pid>/stat, and \
         `fas_reconcile_count` from one /metrics scrape gives the reconcile count CPU is divided by."
            .to_string(),
        format!(
            "5. Size from the file's metadata; `version`/`eval` wall as in 1 (median of {n}, after \
             one warm-up); `eval` queries a real Prometheus (scraping a test endpoint every 1 s) and \
             the network row is a bare /api/v1/query of the same PromQL from this process on a fresh \
             connection (median of {n}, interleaved with the evals); peak RSS is GNU `/usr/bin/time \
             -f %M` (ru_maxrss, median of 5); static `serve` rows repeat 3–4 with the musl binary.",
            n = sizes.static_runs
        ),
        format!(
            "6. A real Temporal dev server (`temporal server start-dev`, 3 running workflows of the \
             counted type): `eval` of the static binary (release if FAS_STATIC_BIN is unset) with \
             the same collector, once as a bare gRPC address and once as the HTTP API URL, \
             interleaved, median of {n} after one warm-up each; every `eval` is a new process, \
             so each pays its connection set-up (TCP + HTTP/2 preface and SETTINGS, or TCP + \
             HTTP/1.1).",
            n = sizes.static_runs
        ),
        "7. `make image` without a Docker engine: buildah (vfs storage, chroot isolation, a \
         private store) builds the Dockerfile with the static binary; \"as stored\" sums the \
         manifest's layer and config sizes, \"as pushed\" the same after `buildah push` to an \
         OCI layout (gzip layers, what a registry receives); build time includes creating the \
         working container."
            .to_string(),
        format!(
            "8. Two `serve` processes of the release binary (default `leader-election-ttl` \
             15 s, interval 15 s) against one real `redis-server` and the simulator; the \
             leader is signalled right after its first machine action and the metric changes \
             at once; the time runs from the signal to the other instance's first machine \
             action in the simulator's log (median of {}).",
            sizes.failovers
        ),
        format!(
            "9. `serve --once` of the release (and static) binary against a stand-in Machines API \
             listing 10,000 and 20,000 started machines shaped like the list fixture's first \
             machine plus 20 environment variables (size per machine shown), the target \
             equal to the count (a pass that reads every machine and does nothing, checked from \
             its `reconciled` line first); peak RSS is GNU `/usr/bin/time -f %M` (median of {}).",
            sizes.list_runs
        ),
        format!(
            "10. {days} days of two metrics every 15 s (a daily cycle plus fixed pseudo-random \
             noise) written with `promtool tsdb create-blocks-from openmetrics` into a real \
             Prometheus' data dir before it starts (retention 10 years). `backtest` of the \
             release binary with `verbose: true`: fetch and replay times are its own debug \
             lines (`history fetched`, `replayed` with `took_ms` and the thread's CPU time \
             `cpu_ms`), so the replay is timed from the history on the grid to both runs \
             (configured and baseline) finished, without the fetch or the report; median of {n}. \
             The config uses scale-down-stabilization 5m, max-scale-up 4 and cooldown 1m; \
             20 machines. Wall is `Instant` from spawn to exit.",
            days = sizes.backtest_days,
            n = sizes.backtest_runs
        ),
        format!(
            "11. The first row is row 2's run with {apps} apps at concurrency {MANY_CONCURRENCY}. \
             The static row is 3–4's `serve` of the static binary over {apps} apps at \
             concurrency {MANY_CONCURRENCY}, read after 3 cycles. Threads: 3–4's `serve` of the \
             release binary; after cycle 1 `strace -f -c -e trace=clone,clone3 -p <pid>` is \
             attached until the last cycle ends, and its call total is divided by the \
             `reconciled` lines logged meanwhile (strace slows every syscall, so this run's CPU \
             is not reported).",
            apps = sizes.huge_apps
        ),
    ];
    println!("How each number was measured:");
    for n in notes {
        println!("- {n}");
    }
}

/// A "peak RSS" row: the measured kB and MiB, or why it could not be measured.
fn peak_rss_row<T>(
    name: &str,
    gnu_time: Option<&T>,
    no_time: &str,
    measure: impl Fn(&T) -> u64,
) -> Row {
    let value = gnu_time.map(measure).map_or(no_time.to_string(), |kb| {
        format!("{kb} kB = {:.2} MiB", kb as f64 / 1024.0)
    });
    row(name, value, "— (no budget)", "info")
}
