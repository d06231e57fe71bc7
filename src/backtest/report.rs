//! The backtest's reports: a text summary with a sparkline, JSON, and CSV.

use std::io::{self, Write};
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::replay::{Run, Step, Summary};
use super::{Backtest, Format, GroupRuns};
use crate::clock;
use crate::duration::format_go;
use crate::plan::TargetCounts;

pub fn write(b: &Backtest, format: Format, out: &mut dyn Write) -> io::Result<()> {
    match format {
        Format::Text => text(b, out),
        Format::Json => {
            json_report(b, &mut *out)?;
            writeln!(out)
        }
        Format::Csv => csv(b, out),
    }
}

/// The summary's rows: label, configured, baseline.
pub(super) fn rows(
    configured: &Summary,
    baseline: &Summary,
) -> Vec<(&'static str, String, String)> {
    // Whole seconds as a Go duration: readable for a minute's replay and for a month's.
    let time = |s: f64| format_go(Duration::from_secs(s.max(0.0).round() as u64));
    let n = |v: usize| v.to_string();
    vec![
        ("starts", n(configured.starts), n(baseline.starts)),
        ("stops", n(configured.stops), n(baseline.stops)),
        ("creates", n(configured.creates), n(baseline.creates)),
        ("destroys", n(configured.destroys), n(baseline.destroys)),
        (
            "direction changes",
            n(configured.direction_changes),
            n(baseline.direction_changes),
        ),
        (
            "peak started",
            n(configured.peak_started),
            n(baseline.peak_started),
        ),
        (
            "started machine-time",
            time(configured.started_machine_seconds),
            time(baseline.started_machine_seconds),
        ),
        (
            "time under target",
            time(configured.under_target_seconds),
            time(baseline.under_target_seconds),
        ),
    ]
}

fn text(b: &Backtest, out: &mut dyn Write) -> io::Result<()> {
    let steps = b.grid.steps();
    writeln!(
        out,
        "backtest of {} from {} to {}, {} steps of {}s ({} with a missing metric)",
        b.app,
        clock::rfc3339(b.grid.from),
        clock::rfc3339(b.grid.time(steps.saturating_sub(1))),
        steps,
        b.grid.step_ms as f64 / 1000.0,
        b.failed_steps
    )?;
    writeln!(
        out,
        "each action is assumed done within its step; baseline = every scale control off (the Go program)"
    )?;
    for g in &b.groups {
        if b.labeled {
            writeln!(out, "\nprocess group {:?}", g.name)?;
        }
        writeln!(out, "\n{:<24}{:>14}{:>14}", "", "configured", "baseline")?;
        for (label, c, base) in rows(&g.configured.summary, &g.baseline.summary) {
            writeln!(out, "{label:<24}{c:>14}{base:>14}")?;
        }
        writeln!(
            out,
            "\nstarted (configured) {}",
            sparkline(&g.configured.steps, 60)
        )?;
        writeln!(
            out,
            "started (baseline)   {}",
            sparkline(&g.baseline.steps, 60)
        )?;
    }
    Ok(())
}

/// Started machines over time in one line: `width` buckets, each its highest value.
pub fn sparkline(steps: &[Step], width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    if steps.is_empty() {
        return String::new();
    }
    let peak = steps.iter().map(|s| s.started).max().unwrap_or(0).max(1);
    let buckets = width.min(steps.len()).max(1);
    let line: String = (0..buckets)
        .map(|b| {
            let range = b * steps.len() / buckets
                ..((b + 1) * steps.len() / buckets).max(b * steps.len() / buckets + 1);
            let high = steps[range].iter().map(|s| s.started).max().unwrap_or(0);
            BARS[(high * (BARS.len() - 1) + peak / 2) / peak]
        })
        .collect();
    format!("{line} (0..{peak})")
}

/// The JSON report, written as it goes: one step's object at a time, so a month of steps
/// never sits in memory as a JSON tree (that took a gigabyte for 172,800 steps).
fn json_report(b: &Backtest, out: &mut dyn Write) -> io::Result<()> {
    let steps = b.grid.steps();
    fn field(out: &mut dyn Write, name: &str, value: &impl serde::Serialize) -> io::Result<()> {
        write!(out, ",\"{name}\":")?;
        serde_json::to_writer(&mut *out, value).map_err(io::Error::other)
    }
    write!(out, "{{\"app\":")?;
    serde_json::to_writer(&mut *out, &b.app).map_err(io::Error::other)?;
    field(out, "from", &json!(clock::rfc3339(b.grid.from)))?;
    field(
        out,
        "to",
        &json!(clock::rfc3339(b.grid.time(steps.saturating_sub(1)))),
    )?;
    field(out, "step_seconds", &json!(b.grid.step_ms as f64 / 1000.0))?;
    field(out, "steps", &json!(steps))?;
    field(out, "failed_steps", &json!(b.failed_steps))?;
    if b.labeled {
        let total = |pick: fn(&GroupRuns) -> &Run| total(b.groups.iter().map(pick));
        field(out, "summary", &total(|g| &g.configured))?;
        field(out, "baseline", &total(|g| &g.baseline))?;
        out.write_all(b",\"series\":")?;
        series(b, None, out)?;
        out.write_all(b",\"groups\":{")?;
        for (i, g) in b.groups.iter().enumerate() {
            let name = serde_json::to_string(&g.name).map_err(io::Error::other)?;
            write!(out, "{}{name}:{{", if i == 0 { "" } else { "," })?;
            write!(out, "\"summary\":")?;
            serde_json::to_writer(&mut *out, &g.configured.summary).map_err(io::Error::other)?;
            field(out, "baseline", &g.baseline.summary)?;
            out.write_all(b",\"series\":")?;
            series(b, Some(g), out)?;
            out.write_all(b"}")?;
        }
        out.write_all(b"}")?;
    } else if let Some(g) = b.groups.first() {
        field(out, "summary", &g.configured.summary)?;
        field(out, "baseline", &g.baseline.summary)?;
        out.write_all(b",\"series\":")?;
        series(b, Some(g), out)?;
    }
    out.write_all(b"}")
}

/// Several groups' summaries as one: counts and times add up, the peak is the peak of the
/// summed started machines.
fn total<'a>(runs: impl Iterator<Item = &'a Run> + Clone) -> Summary {
    let mut sum = Summary::default();
    for r in runs.clone() {
        let s = r.summary;
        sum.starts += s.starts;
        sum.stops += s.stops;
        sum.creates += s.creates;
        sum.destroys += s.destroys;
        sum.started_machine_seconds += s.started_machine_seconds;
        sum.under_target_seconds += s.under_target_seconds;
        sum.direction_changes += s.direction_changes;
    }
    let steps = runs.clone().map(|r| r.steps.len()).max().unwrap_or(0);
    sum.peak_started = (0..steps)
        .map(|k| {
            runs.clone()
                .filter_map(|r| r.steps.get(k))
                .map(|s| s.started)
                .sum()
        })
        .max()
        .unwrap_or(0);
    sum
}

/// One object per step, as a JSON array; `None`: every group summed, without targets.
fn series(b: &Backtest, group: Option<&GroupRuns>, out: &mut dyn Write) -> io::Result<()> {
    out.write_all(b"[")?;
    for k in 0..b.grid.steps() {
        let step = {
            let metrics: Map<String, Value> = metric_values(b, k)
                .into_iter()
                .map(|(name, v)| (name, v.map_or(Value::Null, |v| json!(v))))
                .collect();
            let mut step = Map::new();
            step.insert("t".into(), json!(b.grid.time(k) as f64 / 1000.0));
            step.insert("metrics".into(), Value::Object(metrics));
            match group {
                Some(g) => {
                    let s = &g.configured.steps[k];
                    step.insert("target".into(), json!(s.target));
                    step.insert("effective".into(), json!(s.effective));
                    step.insert("created".into(), json!(s.created));
                    step.insert("started".into(), json!(s.started));
                    step.insert("action".into(), json!(s.action));
                }
                None => {
                    let each = b.groups.iter().map(|g| &g.configured.steps[k]);
                    step.insert(
                        "created".into(),
                        json!(each.clone().map(|s| s.created).sum::<usize>()),
                    );
                    step.insert(
                        "started".into(),
                        json!(each.clone().map(|s| s.started).sum::<usize>()),
                    );
                    let actions: Vec<String> = b
                        .groups
                        .iter()
                        .map(|g| format!("{}: {}", g.name, g.configured.steps[k].action))
                        .collect();
                    step.insert("action".into(), json!(actions.join("; ")));
                }
            }
            Value::Object(step)
        };
        if k > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, &step).map_err(io::Error::other)?;
    }
    out.write_all(b"]")
}

/// The metrics of step `k`, in collector order: history (or `None`), then constants.
pub fn metric_values(b: &Backtest, k: usize) -> Vec<(String, Option<f64>)> {
    b.grid
        .metrics
        .iter()
        .zip(&b.grid.values)
        .map(|(name, row)| (name.clone(), row[k]))
        .chain(b.constants.iter().map(|(n, v)| (n.clone(), Some(*v))))
        .collect()
}

fn csv(b: &Backtest, out: &mut dyn Write) -> io::Result<()> {
    let names: Vec<String> = metric_values(b, 0).into_iter().map(|(n, _)| n).collect();
    let bounds = ["created_min", "created_max", "started_min", "started_max"];
    let mut header: Vec<String> = Vec::new();
    if b.labeled {
        header.push("process_group".into());
    }
    header.push("t".into());
    header.extend(names.iter().map(|n| csv_field(n)));
    header.extend(bounds.iter().map(|s| s.to_string()));
    header.extend(bounds.iter().map(|s| format!("effective_{s}")));
    header.extend(["created", "started", "action"].map(String::from));
    writeln!(out, "{}", header.join(","))?;
    for g in &b.groups {
        for (k, s) in g.configured.steps.iter().enumerate() {
            let mut row: Vec<String> = Vec::new();
            if b.labeled {
                row.push(csv_field(&g.name));
            }
            row.push(format!("{}", s.t as f64 / 1000.0));
            row.extend(
                metric_values(b, k)
                    .into_iter()
                    .map(|(_, v)| v.map_or(String::new(), |v| v.to_string())),
            );
            for t in [s.target, s.effective] {
                row.extend(flat(t));
            }
            row.push(s.created.to_string());
            row.push(s.started.to_string());
            row.push(csv_field(&s.action));
            writeln!(out, "{}", row.join(","))?;
        }
    }
    Ok(())
}

fn flat(t: Option<TargetCounts>) -> [String; 4] {
    let v = |b: Option<u32>| b.map_or(String::new(), |b| b.to_string());
    match t {
        Some(t) => [
            v(t.created.min),
            v(t.created.max),
            v(t.started.min),
            v(t.started.max),
        ],
        None => Default::default(),
    }
}

/// RFC 4180: quoted when it holds a comma, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(started: usize) -> Step {
        Step {
            t: 0,
            target: None,
            effective: None,
            created: 4,
            started,
            action: String::new(),
        }
    }

    #[test]
    fn sparklines_show_the_peak_of_each_bucket() {
        let steps: Vec<Step> = [0, 0, 4, 0, 2, 2, 8, 8].map(step).to_vec();
        assert_eq!(sparkline(&steps, 4), "▁▅▃█ (0..8)");
        assert_eq!(sparkline(&steps, 100), "▁▁▅▁▃▃██ (0..8)");
        assert_eq!(sparkline(&[], 10), "");
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("start 2 of [a, b]"), "\"start 2 of [a, b]\"");
        assert_eq!(csv_field("no scale"), "no scale");
        assert_eq!(csv_field("a\"b"), "\"a\"\"b\"");
    }
}
