//! The HTML report: one self-contained file (inline SVG and CSS, no script, nothing fetched):
//! a chart per metric, per group a chart of the target band with the started and created
//! machines of the configured run and the baseline, the summary table, and the settings that
//! produced it (never a credential).

use std::fmt::Write;

use super::replay::Step;
use super::report::metric_values;
use super::{Backtest, GroupRuns};
use crate::clock::{self, Stamp};
use crate::config::{self, DEFAULT_MAX_MACHINES, GroupConfig};
use crate::duration::format_go;
use crate::http::redact_url;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 30.0;
/// Ranges up to this long (ms) get time labels with seconds.
const SECONDS_SHOWN_UP_TO: Stamp = 15 * 60 * 1000;
/// Points per drawn line at most; longer series are reduced to their extremes per column.
const COLUMNS: usize = 900;

const METRIC: &str = "#3b6fb6";
const BAND: &str = "#d9e6f5";
const CONFIGURED: &str = "#1f7a4d";
const BASELINE: &str = "#c0562a";
const CREATED: &str = "#7a7a7a";
const TARGET: &str = "#6a8fc7";

pub fn render(b: &Backtest) -> String {
    let steps = b.grid.steps();
    let (t0, t1) = (
        b.grid.from,
        b.grid.time(steps.saturating_sub(1)).max(b.grid.from + 1),
    );
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>backtest of {app}</title><style>{CSS}</style></head><body>\
         <h1>Backtest of {app}</h1><p class=\"sub\">{from} → {to} UTC · {steps} steps of {step}s · {failed} with a missing metric · \
         each action is assumed done within its step; <b>baseline</b> = every scale control off (the Go program)</p>",
        app = esc(&b.app),
        from = esc(&clock::rfc3339(t0)),
        to = esc(&clock::rfc3339(t1)),
        step = b.grid.step_ms as f64 / 1000.0,
        failed = b.failed_steps,
    );
    out.push_str("<h2>Metrics</h2>");
    let names: Vec<String> = metric_values(b, 0).into_iter().map(|(n, _)| n).collect();
    for (i, name) in names.iter().enumerate() {
        let values: Vec<(Stamp, Option<f64>)> = (0..steps)
            .map(|k| (b.grid.time(k), metric_values(b, k)[i].1))
            .collect();
        let line = Line {
            label: name.clone(),
            color: METRIC,
            dashed: false,
            stepped: false,
            points: values,
        };
        out.push_str(&chart(&format!("metric {name}"), &[line], None, t0, t1));
    }
    for g in &b.groups {
        group(&mut out, b, g, t0, t1);
    }
    settings(&mut out, b);
    out.push_str("</body></html>\n");
    out
}

const CSS: &str = "body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;color:#222;margin:24px auto;max-width:940px;padding:0 12px}\
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}\
.sub{color:#555;margin:0 0 12px}figure{margin:10px 0 18px}figcaption{font-weight:600;margin:0 0 2px}\
.legend span{display:inline-block;margin-right:16px;font-size:13px}.legend i{display:inline-block;width:18px;height:3px;vertical-align:middle;margin-right:5px}\
table{border-collapse:collapse;margin:6px 0 12px}td,th{padding:4px 14px;border-bottom:1px solid #e5e5e5;text-align:right}\
th:first-child,td:first-child{text-align:left}th{background:#f5f7fa}svg text{font-size:11px;fill:#555}\
pre{background:#f6f8fa;padding:10px;overflow-x:auto;font-size:12px}";

fn group(out: &mut String, b: &Backtest, g: &GroupRuns, t0: Stamp, t1: Stamp) {
    let title = if b.labeled {
        format!("Process group \"{}\"", g.name)
    } else {
        "Machines".to_string()
    };
    let _ = write!(out, "<h2>{}</h2>", esc(&title));
    let started = |steps: &[Step], label: &str, color, dashed| Line {
        label: label.to_string(),
        color,
        dashed,
        stepped: true,
        points: steps
            .iter()
            .map(|s| (s.t, Some(s.started as f64)))
            .collect(),
    };
    // Drawn in this order: the configured run on top.
    let lines = [
        Line {
            label: "created (configured)".to_string(),
            color: CREATED,
            dashed: false,
            stepped: true,
            points: g
                .configured
                .steps
                .iter()
                .map(|s| (s.t, Some(s.created as f64)))
                .collect(),
        },
        Line {
            label: "started target, min (raw)".to_string(),
            color: TARGET,
            dashed: true,
            stepped: true,
            points: g
                .configured
                .steps
                .iter()
                .map(|s| (s.t, s.target.and_then(|t| t.started.min).map(f64::from)))
                .collect(),
        },
        started(&g.baseline.steps, "started (baseline)", BASELINE, true),
        started(
            &g.configured.steps,
            "started (configured)",
            CONFIGURED,
            false,
        ),
    ];
    let band: Vec<(Stamp, Option<(f64, f64)>)> = g
        .configured
        .steps
        .iter()
        .map(|s| {
            let b = s.target.map(|t| t.started);
            let range = b.and_then(|b| match (b.min, b.max) {
                (None, None) => None,
                (min, max) => Some((
                    f64::from(min.unwrap_or(0)),
                    f64::from(max.or(min).unwrap_or(0)),
                )),
            });
            (s.t, range)
        })
        .collect();
    out.push_str(&chart(
        "started machines and the started target (band: min to max the expressions asked for)",
        &lines,
        Some(&band),
        t0,
        t1,
    ));
    out.push_str("<table><tr><th></th><th>configured</th><th>baseline</th></tr>");
    for (label, c, base) in super::report::rows(&g.configured.summary, &g.baseline.summary) {
        let _ = write!(out, "<tr><td>{label}</td><td>{c}</td><td>{base}</td></tr>");
    }
    out.push_str("</table>");
}

fn settings(out: &mut String, b: &Backtest) {
    out.push_str("<h2>Settings</h2><pre>");
    let c = &b.config;
    let mut text = format!(
        "app-name: {}\ninterval: {}\n",
        c.app_name,
        format_go(c.interval)
    );
    if c.max_machines != DEFAULT_MAX_MACHINES {
        let _ = writeln!(text, "max-machines: {}", c.max_machines);
    }
    if c.time_offset != 0 {
        let minutes = c.time_offset.abs() / 60;
        let sign = if c.time_offset < 0 { '-' } else { '+' };
        let _ = writeln!(
            text,
            "time-offset: \"{sign}{:02}:{:02}\"",
            minutes / 60,
            minutes % 60
        );
    }
    text.push_str("metric-collectors:\n");
    for m in &c.metric_collectors {
        let _ = writeln!(
            text,
            "  - type: {}\n    metric-name: {}\n    address: {}\n    query: {}",
            m.kind.as_str(),
            m.metric_name,
            redact_url(&m.address),
            m.query
        );
    }
    if b.labeled {
        text.push_str("process-groups:\n");
        for g in &b.groups {
            let _ = writeln!(text, "  {:?}:", g.name);
            group_settings(&mut text, &g.config, "    ");
        }
    } else if let Some(g) = b.groups.first() {
        group_settings(&mut text, &g.config, "");
    }
    for (name, v) in &b.constants {
        let _ = writeln!(text, "# -set {name}={v}: a constant for the whole replay");
    }
    out.push_str(&esc(&text));
    out.push_str("</pre>");
}

/// A group's keys that differ from their defaults, one per line after `indent`.
fn group_settings(text: &mut String, g: &GroupConfig, indent: &str) {
    let count = |n: Option<u32>| n.map(|n| n.to_string()).unwrap_or_default();
    let step = |s: Option<config::Step>| s.map(|s| s.to_string()).unwrap_or_default();
    let keys = [
        ("created-machine-count", g.created_machine_count.clone()),
        (
            "min-created-machine-count",
            g.min_created_machine_count.clone(),
        ),
        (
            "max-created-machine-count",
            g.max_created_machine_count.clone(),
        ),
        ("started-machine-count", g.started_machine_count.clone()),
        (
            "min-started-machine-count",
            g.min_started_machine_count.clone(),
        ),
        (
            "max-started-machine-count",
            g.max_started_machine_count.clone(),
        ),
        ("initial-machine-state", g.initial_machine_state.clone()),
        (
            "scale-up-stabilization",
            format_go(g.scale_up_stabilization),
        ),
        (
            "scale-down-stabilization",
            format_go(g.scale_down_stabilization),
        ),
        ("max-scale-up", step(g.max_scale_up)),
        ("max-scale-down", step(g.max_scale_down)),
        ("cooldown", format_go(g.cooldown)),
        ("fallback-after", g.fallback_after.to_string()),
        (
            "fallback-started-machine-count",
            count(g.fallback_started_machine_count),
        ),
        (
            "fallback-created-machine-count",
            count(g.fallback_created_machine_count),
        ),
        ("stop-order", format!("{:?}", g.stop_order).to_lowercase()),
        (
            "scale-down-method",
            format!("{:?}", g.scale_down_method).to_lowercase(),
        ),
    ];
    for (key, value) in keys {
        let default = ["", "0s", "0", "id", "stop", "started"].contains(&value.as_str());
        if !default {
            let _ = writeln!(text, "{indent}{key}: {value}");
        }
    }
}

/// A band's range at each time; `None` is a gap.
type Band = [(Stamp, Option<(f64, f64)>)];
/// A stretch of a band: its lower and upper edge.
type Edges = (Vec<(Stamp, f64)>, Vec<(Stamp, f64)>);

/// One drawn series; `None` values are gaps.
struct Line {
    label: String,
    color: &'static str,
    dashed: bool,
    /// A count that holds until the next step (drawn as steps), not a sampled value.
    stepped: bool,
    points: Vec<(Stamp, Option<f64>)>,
}

/// An SVG line chart with time and value axes and a legend.
fn chart(title: &str, lines: &[Line], band: Option<&Band>, t0: Stamp, t1: Stamp) -> String {
    let high = lines
        .iter()
        .flat_map(|l| l.points.iter().filter_map(|p| p.1))
        .chain(band.into_iter().flatten().filter_map(|b| b.1.map(|r| r.1)))
        .fold(0.0f64, f64::max);
    let (top, tick) = nice_axis(high);
    let x = |t: Stamp| LEFT + (t - t0) as f64 / (t1 - t0) as f64 * (WIDTH - LEFT - RIGHT);
    let y = |v: f64| TOP + (1.0 - v / top) * (HEIGHT - TOP - BOTTOM);
    let mut svg = format!(
        "<figure><figcaption>{}</figcaption><svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"100%\" role=\"img\" aria-label=\"{0}\">",
        esc(title)
    );
    // Grid and value axis.
    let mut v = 0.0;
    while v <= top + tick / 2.0 {
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#e6e6e6\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            y(v) + 4.0,
            short(v),
            y = y(v)
        );
        v += tick;
    }
    // Time axis: five labels, with seconds when the range is short enough to need them.
    for i in 0..=4 {
        let t = t0 + (t1 - t0) * i / 4;
        let c = clock::civil(t, 0);
        let anchor = match i {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        let label = if t1 - t0 <= SECONDS_SHOWN_UP_TO {
            format!("{:02}:{:02}:{:02}", c.hour, c.minute, c.second)
        } else {
            format!("{:02}-{:02} {:02}:{:02}", c.month, c.day, c.hour, c.minute)
        };
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"{anchor}\">{label}</text>",
            x(t),
            HEIGHT - 10.0,
        );
    }
    let _ = write!(
        svg,
        "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{b}\" y2=\"{b}\" stroke=\"#999\"/>",
        WIDTH - RIGHT,
        b = HEIGHT - BOTTOM
    );
    if let Some(band) = band {
        for (lo, hi) in runs(band) {
            let path: Vec<String> = lo
                .iter()
                .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
                .chain(
                    hi.iter()
                        .rev()
                        .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v))),
                )
                .collect();
            let _ = write!(
                svg,
                "<polygon points=\"{}\" fill=\"{BAND}\"/>",
                path.join(" ")
            );
        }
    }
    for line in lines {
        let dash = if line.dashed {
            " stroke-dasharray=\"6 4\""
        } else {
            ""
        };
        let mut d = String::new();
        let mut pen_down = false;
        for (t, v) in reduce(&line.points) {
            match v {
                // A count holds until the next step: across, then up or down.
                Some(v) if pen_down && line.stepped => {
                    let _ = write!(d, "H{:.1}V{:.1}", x(t), y(v));
                }
                Some(v) => {
                    let _ = write!(
                        d,
                        "{}{:.1},{:.1}",
                        if pen_down { "L" } else { "M" },
                        x(t),
                        y(v)
                    );
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        let _ = write!(
            svg,
            "<path d=\"{d}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.6\"{dash}/>",
            line.color
        );
    }
    svg.push_str("</svg><div class=\"legend\">");
    for line in lines {
        let _ = write!(
            svg,
            "<span><i style=\"background:{}\"></i>{}</span>",
            line.color,
            esc(&line.label)
        );
    }
    if band.is_some() {
        let _ = write!(
            svg,
            "<span><i style=\"background:{BAND};height:10px\"></i>started target (min..max)</span>"
        );
    }
    svg.push_str("</div></figure>");
    svg
}

/// At most [`COLUMNS`] points: each column keeps its lowest and highest value, in time
/// order, so spikes stay visible.
fn reduce(points: &[(Stamp, Option<f64>)]) -> Vec<(Stamp, Option<f64>)> {
    if points.len() <= COLUMNS * 2 {
        return points.to_vec();
    }
    let per = points.len().div_ceil(COLUMNS);
    points
        .chunks(per)
        .flat_map(|chunk| {
            let values = chunk.iter().filter_map(|(t, v)| v.map(|v| (*t, v)));
            let low = values.clone().min_by(|a, b| a.1.total_cmp(&b.1));
            let high = values.max_by(|a, b| a.1.total_cmp(&b.1));
            match (low, high) {
                (Some(l), Some(h)) if l.0 <= h.0 => vec![(l.0, Some(l.1)), (h.0, Some(h.1))],
                (Some(l), Some(h)) => vec![(h.0, Some(h.1)), (l.0, Some(l.1))],
                _ => vec![(chunk[0].0, None)],
            }
        })
        .collect()
}

/// The band's stretches without gaps, each as its lower and upper edge (reduced like lines).
fn runs(band: &Band) -> Vec<Edges> {
    let per = band.len().div_ceil(COLUMNS).max(1);
    let mut runs = Vec::new();
    let (mut lo, mut hi) = (Vec::new(), Vec::new());
    for chunk in band.chunks(per) {
        let present: Vec<(Stamp, (f64, f64))> = chunk
            .iter()
            .filter_map(|(t, r)| r.map(|r| (*t, r)))
            .collect();
        if present.is_empty() {
            if !lo.is_empty() {
                runs.push((std::mem::take(&mut lo), std::mem::take(&mut hi)));
            }
            continue;
        }
        let t = present[0].0;
        lo.push((
            t,
            present.iter().map(|p| p.1.0).fold(f64::INFINITY, f64::min),
        ));
        hi.push((
            t,
            present
                .iter()
                .map(|p| p.1.1)
                .fold(f64::NEG_INFINITY, f64::max),
        ));
    }
    if !lo.is_empty() {
        runs.push((lo, hi));
    }
    runs
}

/// The axis top and tick for values up to `high`: 1, 2 or 5 × a power of ten.
fn nice_axis(high: f64) -> (f64, f64) {
    let high = if high.is_finite() && high > 0.0 {
        high
    } else {
        1.0
    };
    let raw = high / 4.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let tick = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|t| *t >= raw)
        .unwrap_or(10.0 * magnitude);
    ((high / tick).ceil() * tick, tick)
}

fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{}k", v / 1e3)
    } else {
        format!("{}", (v * 1000.0).round() / 1000.0)
    }
}

/// HTML escaping of text (attribute values use it too).
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_are_round() {
        assert_eq!(nice_axis(7.0), (8.0, 2.0));
        assert_eq!(nice_axis(0.0), (1.0, 0.5));
        assert_eq!(nice_axis(130.0), (150.0, 50.0));
    }

    #[test]
    fn long_series_are_reduced_to_their_extremes() {
        let points: Vec<(Stamp, Option<f64>)> = (0..100_000)
            .map(|k| (k, Some(if k == 50_001 { 99.0 } else { 1.0 })))
            .collect();
        let reduced = reduce(&points);
        assert!(reduced.len() <= 2 * COLUMNS);
        assert!(
            reduced.iter().any(|p| p.1 == Some(99.0)),
            "the spike survives"
        );
    }

    #[test]
    fn a_short_replay_has_seconds_steps_and_its_settings() {
        use crate::collector::Grid;
        use crate::config::{CollectorConfig, CollectorKind, Config, Step};
        let mut config = Config {
            app_name: "my-app".into(),
            metric_collectors: vec![CollectorConfig {
                kind: CollectorKind::Prometheus,
                metric_name: "q".into(),
                address: "http://user:secret@prometheus:9090".into(),
                query: "sum(q)".into(),
                ..CollectorConfig::default()
            }],
            ..Config::default()
        };
        config.group.started_machine_count = "q".into();
        config.group.max_scale_up = Some(Step::Percent(50));
        let groups = crate::reconcile::compile_groups(&config).unwrap();
        let grid = Grid {
            from: 1_795_850_879_000,
            step_ms: 1000,
            steps: 4,
            metrics: vec!["q".into()],
            values: vec![vec![Some(1.0), Some(3.0), Some(2.0), Some(2.0)]],
        };
        let opts = super::super::Options::default();
        let page = render(&super::super::replay_all(
            &config, &groups, "my-app", grid, &opts,
        ));
        assert!(
            page.contains(">07:27:59</text>"),
            "a 3 s range is labelled in seconds"
        );
        assert!(
            page.contains("query: sum(q)\nstarted-machine-count: q\nmax-scale-up: 50%\n"),
            "top level without process groups: {page}"
        );
        assert!(!page.contains("secret"), "{page}");
        let started = page
            .split("<path d=\"")
            .find(|p| p.contains(CONFIGURED))
            .unwrap();
        assert!(started.starts_with("M56.0,") && started.contains('H') && started.contains('V'));
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc("<a href=\"x\">&"), "&lt;a href=&quot;x&quot;&gt;&amp;");
    }
}
