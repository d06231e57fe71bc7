//! `fly-autoscaler backtest` against a real Prometheus holding history written by `promtool
//! tsdb create-blocks-from openmetrics`: series of known shape, and what they must give,
//! computed here from the series alone (the test's own model of Prometheus' lookback and of
//! the Go rule "move to the target"), never by the crate's planner.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use flysim::harness::{self, History, Output, Prometheus, TempDir, free_port};
use serde_json::Value;

use crate::support::{self, png};

/// Seconds between steps, and between the samples written.
const STEP: i64 = 15;
/// Prometheus' default lookback: an instant query sees the latest sample this old or newer.
const LOOKBACK: i64 = 300;
/// Samples are written this long before each step, so no sample sits on a lookback boundary.
const LEAD: i64 = 5;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The first step of `steps` that end ten minutes ago, on a multiple of [`STEP`].
pub fn first_step(steps: usize) -> i64 {
    (now() - 600) / STEP * STEP - STEP * (steps as i64 - 1)
}

/// Samples of `values` (`None`: no sample) written [`LEAD`] seconds before each step.
pub fn samples(t0: i64, values: &[Option<f64>]) -> Vec<(i64, Option<f64>)> {
    values
        .iter()
        .enumerate()
        .map(|(k, v)| (t0 + STEP * k as i64 - LEAD, *v))
        .collect()
}

/// `(unix seconds, value)`; `None`: no sample.
type Samples = [(i64, Option<f64>)];

/// History of metrics `(name, app label, samples)`.
pub fn history(series: &[(&str, &str, &Samples)]) -> History {
    let mut h = History::new();
    for (name, app, samples) in series {
        h.gauge(
            name,
            &[("app", app)],
            samples.iter().map(|(t, v)| (*t as f64, *v)),
        );
    }
    h
}

/// What a range query answers at each step: the latest sample within the lookback.
fn seen(samples: &[(i64, Option<f64>)], t0: i64, steps: usize) -> Vec<Option<f64>> {
    (0..steps)
        .map(|k| {
            let t = t0 + STEP * k as i64;
            samples
                .iter()
                .filter(|(at, v)| *at <= t && t - *at <= LOOKBACK && v.is_some())
                .max_by_key(|(at, _)| *at)
                .and_then(|(_, v)| *v)
        })
        .collect()
}

/// The config's scale controls, as the model below applies them.
#[derive(Default, Clone, Copy)]
struct Rules {
    machines: usize,
    /// `scale-down-stabilization` in steps.
    down_window: Option<usize>,
    /// `fallback-after` and `fallback-started-machine-count`.
    fallback: Option<(usize, usize)>,
}

/// What the report must say, in its terms.
#[derive(Debug, Default, PartialEq)]
struct Expected {
    starts: usize,
    stops: usize,
    peak_started: usize,
    direction_changes: usize,
    started_machine_seconds: f64,
    under_target_seconds: f64,
    started: Vec<usize>,
}

/// `started-machine-count: q` on `machines` machines, none started at first: each step moves
/// the started count to the target (at most every machine), a step without a metric changes
/// nothing (or, after `fallback-after` of them, moves to the fallback count), and with a
/// scale-down window the count goes down only to the highest target of the window.
fn model(seen: &[Option<f64>], rules: Rules) -> Expected {
    let mut e = Expected::default();
    let mut started = 0usize;
    let mut failures = 0;
    let mut targets: Vec<(usize, usize)> = Vec::new();
    let mut last_up = None;
    for (k, q) in seen.iter().enumerate() {
        let target = match (q, rules.fallback) {
            (Some(q), _) => {
                failures = 0;
                Some(*q as usize)
            }
            (None, Some((after, count))) => {
                failures += 1;
                (failures >= after).then_some(count)
            }
            (None, None) => None,
        };
        if let Some(target) = target {
            targets.push((k, target));
            let floor = match rules.down_window {
                Some(w) => targets
                    .iter()
                    .filter(|(at, _)| at + w >= k)
                    .map(|(_, t)| *t)
                    .max()
                    .unwrap_or(target),
                None => target,
            };
            let next = if started < target {
                target.min(rules.machines)
            } else if started > floor {
                floor
            } else {
                started
            };
            if next != started {
                let up = next > started;
                if up {
                    e.starts += next - started;
                } else {
                    e.stops += started - next;
                }
                if last_up.is_some_and(|u| u != up) {
                    e.direction_changes += 1;
                }
                last_up = Some(up);
                started = next;
            }
            if started < target {
                e.under_target_seconds += STEP as f64;
            }
        }
        e.peak_started = e.peak_started.max(started);
        e.started_machine_seconds += (started as i64 * STEP) as f64;
        e.started.push(started);
    }
    e
}

/// The summary of a JSON report in the model's terms (`started` from `series`).
fn reported(summary: &Value, series: Option<&Value>) -> Expected {
    let n = |key: &str| {
        summary[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key}: {summary}")) as usize
    };
    Expected {
        starts: n("starts"),
        stops: n("stops"),
        peak_started: n("peak_started"),
        direction_changes: n("direction_changes"),
        started_machine_seconds: summary["started_machine_seconds"].as_f64().unwrap(),
        under_target_seconds: summary["under_target_seconds"].as_f64().unwrap(),
        started: series
            .map(|s| {
                s.as_array()
                    .unwrap()
                    .iter()
                    .map(|step| step["started"].as_u64().unwrap() as usize)
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn without_series(mut e: Expected) -> Expected {
    e.started.clear();
    e
}

/// A config file for app `app` (or a pattern): metric `q` from `prom`, then the collector
/// entries `collectors`, then `keys`.
fn config(dir: &TempDir, prom: &str, app: &str, collectors: &str, keys: &str) -> String {
    let text = format!(
        r#"app-name: "{app}"
interval: 15s
metric-collectors:
  - type: prometheus
    metric-name: q
    address: "{prom}"
    query: 'sum(q{{app="$APP_NAME"}})'
{collectors}{keys}"#
    );
    dir.write("fas.yml", &text).display().to_string()
}

/// `backtest` with `base` (see [`replay`]) and `more` arguments.
pub fn backtest(base: &[String], more: &[&str]) -> Output {
    let mut all = vec!["backtest"];
    all.extend(base.iter().map(String::as_str));
    all.extend_from_slice(more);
    support::run(&all, &[])
}

fn json_of(out: &Output) -> Value {
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

/// `-config` and `-from`/`-to` of `steps` steps of [`STEP`] from `t0`, as Unix timestamps.
pub fn replay(config: &str, t0: i64, steps: usize) -> Vec<String> {
    let to = t0 + STEP * (steps as i64 - 1);
    [
        "-config",
        config,
        "-from",
        &t0.to_string(),
        "-to",
        &to.to_string(),
    ]
    .map(String::from)
    .to_vec()
}

/// The error of a failed run: exit `code`, exactly one line `ERROR: …` containing `needle`.
fn assert_one_line_error(out: &Output, code: i32, needle: &str) {
    assert_eq!(out.code, Some(code), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.starts_with("ERROR: ") && out.stderr.contains(needle),
        "expected {needle:?} in {}",
        out.stderr
    );
}

#[test]
fn replays_a_square_wave_a_gap_and_a_ramp_as_an_independent_model_does() {
    // 12,000 steps: more than one range query may hold (11,000 points), so the history is
    // read in pieces; every step's value below checks that none is lost or repeated.
    const STEPS: usize = 12_000;
    let values: Vec<Option<f64>> = (0..STEPS)
        .map(|k| match k {
            0..4_000 => Some(if (k / 8) % 2 == 0 { 1.0 } else { 4.0 }),
            4_000..4_400 => None,
            _ => Some(((k - 4_400) / 800) as f64),
        })
        .collect();
    let t0 = first_step(STEPS);
    let written = samples(t0, &values);
    let prom = Prometheus::start_with_history(&[], &history(&[("q", "bt", &written)]));
    let seen = seen(&written, t0, STEPS);
    let missing = seen.iter().filter(|v| v.is_none()).count();
    assert_eq!(
        missing,
        400 - (LOOKBACK / STEP) as usize + 1,
        "the gap minus the steps the lookback still covers"
    );
    let dir = TempDir::new("backtest");
    let run = |extra: &str| {
        let keys = format!("started-machine-count: q\n{extra}");
        let config = config(&dir, &prom.url(), "bt", "", &keys);
        let more = ["-step", "15s", "-machines", "6", "-format", "json"];
        json_of(&backtest(&replay(&config, t0, STEPS), &more))
    };
    let plain = Rules {
        machines: 6,
        ..Rules::default()
    };

    let report = run("");
    assert_eq!(report["app"], "bt");
    assert_eq!(report["steps"], STEPS);
    assert_eq!(report["step_seconds"], 15.0);
    assert_eq!(report["failed_steps"], missing);
    let series = report["series"].as_array().unwrap();
    assert_eq!(series.len(), STEPS);
    for (k, (step, want)) in series.iter().zip(&seen).enumerate() {
        assert_eq!(
            step["t"].as_f64(),
            Some((t0 + STEP * k as i64) as f64),
            "step {k}"
        );
        assert_eq!(step["metrics"]["q"].as_f64(), *want, "value of step {k}");
    }
    let expected = model(&seen, plain);
    assert_eq!(
        reported(&report["summary"], Some(&report["series"])),
        expected
    );
    assert_eq!(
        reported(&report["baseline"], None),
        without_series(model(&seen, plain))
    );
    assert!(
        expected.under_target_seconds > 0.0,
        "the ramp goes past 6 machines"
    );
    assert!(expected.direction_changes > 400, "the square wave flaps");

    // fallback-after: the gap's failed steps move to the fallback count; the baseline (every
    // control off) keeps what it had.
    let report = run("fallback-after: 3\nfallback-started-machine-count: 2\n");
    let fallback = Rules {
        fallback: Some((3, 2)),
        ..plain
    };
    assert_eq!(report["failed_steps"], missing);
    assert_eq!(
        reported(&report["summary"], Some(&report["series"])),
        model(&seen, fallback)
    );
    assert_eq!(
        reported(&report["baseline"], None),
        without_series(model(&seen, plain))
    );
    let in_gap = &report["series"][4_000 + 19 + 2];
    assert_eq!(in_gap["metrics"]["q"], Value::Null);
    assert_eq!(in_gap["started"], 2, "{in_gap}");
    assert_eq!(in_gap["target"]["started"]["min"], 2, "{in_gap}");

    // A scale-down window longer than the wave's period: no flapping, paid for in
    // started machine-seconds.
    let report = run("scale-down-stabilization: 5m\n");
    let held = model(
        &seen,
        Rules {
            down_window: Some(20),
            ..plain
        },
    );
    let summary = reported(&report["summary"], Some(&report["series"]));
    let baseline = reported(&report["baseline"], None);
    assert_eq!(summary, held);
    assert_eq!(baseline, without_series(model(&seen, plain)));
    assert!(
        summary.direction_changes * 10 < baseline.direction_changes,
        "{} direction changes with the window, {} without",
        summary.direction_changes,
        baseline.direction_changes
    );
    assert!(summary.started_machine_seconds > baseline.started_machine_seconds);
    let wave_low = &report["series"][16];
    assert_eq!(wave_low["target"]["started"]["max"], 1, "{wave_low}");
    assert_eq!(wave_low["effective"]["started"]["max"], 4, "{wave_low}");
}

#[test]
fn a_wildcard_config_replays_the_app_named_with_app() {
    const STEPS: usize = 40;
    let t0 = first_step(STEPS);
    let two = samples(t0, &[Some(2.0); STEPS]);
    let five = samples(t0, &[Some(5.0); STEPS]);
    let prom = Prometheus::start_with_history(
        &[],
        &history(&[("q", "my-app-1", &two), ("q", "my-app-2", &five)]),
    );
    let dir = TempDir::new("backtest");
    let config = config(
        &dir,
        &prom.url(),
        "my-app-*",
        "",
        "org: my-org\nstarted-machine-count: q\n",
    );
    let base = replay(&config, t0, STEPS);
    let out = backtest(
        &base,
        &["-machines", "8", "-app", "my-app-2", "-format", "json"],
    );
    let report = json_of(&out);
    assert_eq!(report["app"], "my-app-2");
    assert_eq!(
        report["steps"], STEPS,
        "-step defaults to the interval, 15s"
    );
    assert!(
        report["series"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["metrics"]["q"] == 5.0),
        "$APP_NAME is my-app-2"
    );
    assert_eq!(report["summary"]["peak_started"], 5);
    assert_eq!(report["summary"]["starts"], 5);

    let out = backtest(&base, &["-machines", "8"]);
    assert_one_line_error(
        &out,
        1,
        "app-name \"my-app-*\" is a pattern: name the app to replay with -app",
    );
}

#[test]
fn a_source_without_history_needs_a_constant() {
    const STEPS: usize = 20;
    let t0 = first_step(STEPS);
    let prom = Prometheus::start_with_history(
        &[],
        &history(&[("q", "app", &samples(t0, &[Some(1.0); STEPS]))]),
    );
    let dir = TempDir::new("backtest");
    // Temporal only answers "now"; its address is never contacted.
    let temporal = format!("127.0.0.1:{}", free_port());
    let temporal = format!(
        "  - type: temporal\n    metric-name: workflows\n    address: \"{temporal}\"\n    query: 'WorkflowType=\"billing\"'\n"
    );
    let config = config(
        &dir,
        &prom.url(),
        "app",
        &temporal,
        "started-machine-count: q + workflows\n",
    );
    let base = [
        replay(&config, t0, STEPS),
        vec!["-format".into(), "json".into()],
    ]
    .concat();

    let out = backtest(&base, &[]);
    assert_one_line_error(
        &out,
        1,
        "metric \"workflows\" comes from a source without history (only prometheus keeps one); give it a constant with -set workflows=VALUE",
    );

    let report = json_of(&backtest(&base, &["-set", "workflows=3", "-machines", "6"]));
    let first = &report["series"][0];
    assert_eq!(first["metrics"]["workflows"], 3.0, "{first}");
    assert_eq!(first["metrics"]["q"], 1.0, "{first}");
    assert_eq!(first["started"], 4, "q + workflows");
    assert_eq!(report["failed_steps"], 0);

    // Every metric a constant: nothing is fetched, the range still has its steps.
    let constants = ["-set", "q=2", "-set", "workflows=3", "-machines", "6"];
    let report = json_of(&backtest(&base, &constants));
    assert_eq!(report["steps"], STEPS);
    assert_eq!(report["series"][STEPS - 1]["started"], 5);

    let out = backtest(&base, &["-set", "workflow=3"]);
    assert_one_line_error(
        &out,
        1,
        "-set workflow: no collector has metric-name \"workflow\"; the metrics are: q, workflows",
    );
}

#[test]
fn csv_rows_and_the_text_sparkline() {
    const STEPS: usize = 12;
    let values: Vec<Option<f64>> = (0..STEPS).map(|k| Some((k % 4) as f64)).collect();
    let t0 = first_step(STEPS);
    let prom =
        Prometheus::start_with_history(&[], &history(&[("q", "app", &samples(t0, &values))]));
    let dir = TempDir::new("backtest");
    let config = config(
        &dir,
        &prom.url(),
        "app",
        "",
        "min-started-machine-count: q\nmax-started-machine-count: q + 1\n",
    );
    let base = [
        replay(&config, t0, STEPS),
        vec!["-machines".into(), "4".into()],
    ]
    .concat();

    let out = backtest(&base, &["-format", "csv"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "t,q,created_min,created_max,started_min,started_max,effective_created_min,effective_created_max,effective_started_min,effective_started_max,created,started,action"
    );
    assert_eq!(lines.len(), STEPS + 1);
    // Step 3: q = 3, so 3..4 started; from 2 started, one more.
    let row: Vec<&str> = lines[4].splitn(13, ',').collect();
    assert_eq!(row[0], (t0 + 3 * STEP).to_string());
    assert_eq!(
        &row[1..12],
        ["3", "", "", "3", "4", "", "", "3", "4", "4", "3"]
    );
    assert!(row[12].starts_with("\"start 1 of ["), "{}", lines[4]);
    // Step 4: q = 0, 0..1 started: stop down to 1.
    assert_eq!(
        lines[5],
        format!(
            "{},0,,,0,1,,,0,1,4,1,\"stop 2 of [m000001, m000002, m000003]\"",
            t0 + 4 * STEP
        )
    );

    let out = backtest(&base, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout
            .starts_with(&format!("backtest of app from {}", rfc3339(t0))),
        "{}",
        out.stdout
    );
    for label in ["starts", "stops", "direction changes", "time under target"] {
        assert!(
            out.stdout.lines().any(|l| l.starts_with(label)),
            "{label}: {}",
            out.stdout
        );
    }
    // 0,1,2,3, 1,1,2,3, 1,1,2,3 started: 20 machine-steps of 15 s, in both runs.
    let time = out
        .stdout
        .lines()
        .find(|l| l.starts_with("started machine-time"));
    let time: Vec<&str> = time.unwrap().split_whitespace().collect();
    assert_eq!(time[2..], ["5m0s", "5m0s"]);
    // The started count per step is 0,1,2,3, 1,1,2,3, …: one bar per step, the peak full.
    let spark = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("started (configured) "))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert_eq!(spark, "▁▃▆█▃▃▆█▃▃▆█ (0..3)");
}

/// The time variables take each step's time, in `time-offset`; every metric a constant, so
/// no Prometheus is needed.
#[test]
fn time_variables_take_the_step_time() {
    let dir = TempDir::new("backtest");
    let unreachable = format!("http://127.0.0.1:{}", free_port());
    let keys = "time-offset: \"+05:30\"\nstarted-machine-count: hour + q\nmax-machines: 30\n";
    let config = config(&dir, &unreachable, "app", "", keys);
    let t0 = first_step(1) / 3600 * 3600 + 60;
    let base = [replay(&config, t0, 7), vec!["-step".into(), "1h".into()]].concat();
    let report = json_of(&backtest(
        &base,
        &["-set", "q=1", "-machines", "30", "-format", "json"],
    ));
    for (k, step) in report["series"].as_array().unwrap().iter().enumerate() {
        let local = t0 + 3600 * k as i64 + 19_800;
        let hour = support::date(local, "%H").parse::<u64>().unwrap();
        assert_eq!(
            step["target"]["started"]["min"],
            hour + 1,
            "step {k}: {step}"
        );
    }
}

/// `2026-11-28T07:27:59.000Z`, from `date` (not the crate's clock).
fn rfc3339(t: i64) -> String {
    support::date(t, "%Y-%m-%dT%H:%M:%S.000Z")
}

#[test]
fn bad_input_is_one_line() {
    let dir = TempDir::new("backtest");
    let unreachable = format!("http://127.0.0.1:{}", free_port());
    let config = config(&dir, &unreachable, "app", "", "started-machine-count: q\n");
    let c = ["-config".to_string(), config];
    for (args, code, needle) in [
        (
            &[
                "-from",
                "2026-01-02T00:00:00Z",
                "-to",
                "2026-01-01T00:00:00Z",
            ][..],
            1,
            "-from 2026-01-02T00:00:00.000Z is not before -to 2026-01-01T00:00:00.000Z",
        ),
        (&["-step", "0"], 2, "backtest: -step: \"0\""),
        (&["-step", "0s"], 2, "backtest: -step: \"0s\""),
        (&["-from", "yesterday"], 2, "\"yesterday\" is not a time"),
        (
            &["-format", "xml"],
            2,
            "\"xml\" is not a format; use text, json or csv",
        ),
        (&["-set", "q"], 2, "write -set NAME=VALUE"),
        (
            &["-set", "nope=1"],
            1,
            "-set nope: no collector has metric-name \"nope\"",
        ),
        (&["-from", "-1h"], 1, "cannot read history"),
    ] {
        let out = backtest(&c, args);
        assert_one_line_error(&out, code, needle);
        if needle == "cannot read history" {
            assert!(out.stderr.contains(&unreachable), "{}", out.stderr);
        }
    }
}

#[test]
fn the_html_report_renders_in_a_real_browser() {
    const STEPS: usize = 240;
    let t0 = first_step(STEPS);
    let queue: Vec<Option<f64>> = (0..STEPS)
        .map(|k| Some(((k as f64 / 20.0).sin() + 1.0) * 30.0))
        .collect();
    let rps: Vec<Option<f64>> = (0..STEPS).map(|k| Some((k % 60) as f64 * 5.0)).collect();
    let mut h = history(&[("q", "app", &samples(t0, &queue))]);
    h.gauge(
        "rps",
        &[("app", "app")],
        samples(t0, &rps).into_iter().map(|(t, v)| (t as f64, v)),
    );
    let prom = Prometheus::start_with_history(&[], &h);
    let dir = TempDir::new("backtest-html");
    let url = prom.url();
    let rps = format!(
        "  - type: prometheus\n    metric-name: rps\n    address: \"{url}\"\n    query: 'sum(rps{{app=\"$APP_NAME\"}})'\n"
    );
    let config = config(
        &dir,
        &url,
        "app",
        &rps,
        "started-machine-count: ceil(q / 10) + ceil(rps / 100)\nscale-down-stabilization: 2m\n",
    );
    let html = dir.path().join("report.html").display().to_string();
    let out = backtest(
        &replay(&config, t0, STEPS),
        &["-machines", "10", "-html", &html],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        !page.contains("<script") && !page.contains("src=") && !page.contains("href="),
        "self-contained: nothing to run or fetch"
    );

    let shot = dir.path().join("report.png");
    harness::screenshot(Path::new(&html), &shot, 1000, 1400).unwrap();
    let image = png::decode(&std::fs::read(&shot).expect("the screenshot is written"))
        .unwrap_or_else(|e| panic!("the screenshot is not a PNG we can read: {e}"));
    assert_eq!((image.width, image.height), (1000, 1400));
    let colours = image.distinct_colours(64);
    assert!(
        colours >= 8,
        "a chart page has text, lines and a band in several colours; the screenshot has {colours}"
    );

    let dom = harness::dump_dom(Path::new(&html)).unwrap();
    let charts = |title: &str| dom.matches(&format!("<figcaption>{title}")).count();
    assert_eq!(charts("metric q<"), 1, "{dom}");
    assert_eq!(charts("metric rps<"), 1);
    assert_eq!(charts("metric "), 2, "one chart per metric");
    assert_eq!(
        dom.matches("<svg").count(),
        3,
        "two metrics and the machines"
    );
}
