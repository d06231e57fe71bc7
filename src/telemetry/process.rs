//! `process_*` metrics (the names Prometheus' client libraries use), read from Linux's
//! `/proc`. On other systems they are simply absent.

use std::fmt::Write;

/// Clock ticks per second of `/proc/self/stat` times; 100 on every Linux build we target.
const TICKS_PER_SECOND: f64 = 100.0;

pub fn render(out: &mut String) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let status_kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
    };
    let mut gauge = |name: &str, kind: &str, help: &str, value: Option<f64>| {
        if let Some(v) = value {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
    };
    gauge(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        status_kb("VmRSS:").map(|kb| kb * 1024.0),
    );
    gauge(
        "process_threads",
        "gauge",
        "Number of OS threads.",
        status_kb("Threads:"),
    );
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name, which may itself contain spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    gauge(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        field(14)
            .zip(field(15))
            .map(|(u, s)| (u + s) / TICKS_PER_SECOND),
    );
    let boot_time = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    gauge(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        boot_time
            .zip(field(22))
            .map(|(b, ticks)| b + ticks / TICKS_PER_SECOND),
    );
    gauge(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as f64),
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_proc() {
        let mut out = String::new();
        super::render(&mut out);
        assert!(out.contains("process_resident_memory_bytes "));
        assert!(out.contains("process_cpu_seconds_total "));
        assert!(out.contains("process_start_time_seconds "));
    }
}
