//! `process-groups` end to end (issue 14): one app with `web`, `worker` and ungrouped
//! machines in the simulator, two metrics from a real Prometheus, each group scaled by its
//! own; validation; `eval`; the backtest of each group.

use flysim::harness::{Prometheus, TempDir};
use flysim::{Fault, FaultRule, MachineSpec, RecordedRequest, Simulator};
use serde_json::{Value, json};

use crate::backtest::{backtest, first_step, history, replay, samples};
use crate::support::{self, Live, SETTLE, Serve, pairs};

const APP: &str = "pg";

/// The issue's config: `web` by requests per second, `worker` by queue depth (at least one
/// machine, new ones in ams and cdg), collectors shared.
fn config(dir: &TempDir, prom: &str) -> String {
    let yaml = format!(
        r#"app-name: {APP}
metric-collectors:
  - type: prometheus
    metric-name: http_rps
    address: "{prom}"
    query: 'sum(http_rps{{app="$APP_NAME"}})'
  - type: prometheus
    metric-name: queue_depth
    address: "{prom}"
    query: 'sum(queue_depth{{app="$APP_NAME"}})'
process-groups:
  web:
    started-machine-count: ceil(http_rps / 100)
  worker:
    min-created-machine-count: max(ceil(queue_depth / 10), 1)
    max-created-machine-count: 20
    started-machine-count: ceil(queue_depth / 10)
    regions: [ams, cdg]
"#
    );
    dir.write("fas.yml", &yaml).display().to_string()
}

struct Fleet {
    web: Vec<String>,
    worker: String,
    ungrouped: Vec<String>,
}

/// Two stopped `web` machines, one started `worker` in ord, and two machines without a group.
fn seed(sim: &Simulator) -> Fleet {
    sim.add_app("my-org", APP);
    let add = |state: &str, group: Option<&str>, region: &str| {
        sim.add_machine(APP, MachineSpec::new(state).group(group).region(region))
    };
    Fleet {
        web: vec![
            add("stopped", Some("web"), "iad"),
            add("stopped", Some("web"), "iad"),
        ],
        worker: add("started", Some("worker"), "ord"),
        ungrouped: vec![add("started", None, "iad"), add("stopped", None, "iad")],
    }
}

fn started(sim: &Simulator, group: &str) -> usize {
    sim.machines(APP)
        .iter()
        .filter(|m| m.process_group.as_deref() == Some(group) && m.state == "started")
        .count()
}

fn created(sim: &Simulator, group: &str) -> usize {
    sim.machines(APP)
        .iter()
        .filter(|m| m.process_group.as_deref() == Some(group))
        .count()
}

/// Requests that addressed one of `ids` (a list addresses none).
fn touching<'a>(requests: &'a [RecordedRequest], ids: &[String]) -> Vec<&'a RecordedRequest> {
    requests
        .iter()
        .filter(|r| ids.iter().any(|id| r.path.contains(id.as_str())))
        .collect()
}

/// The simulator, its fleet, both metrics in a real Prometheus (`http_rps` 200, `queue_depth`
/// 30), and the config file (in the returned dir).
fn start() -> (Simulator, Fleet, Live, TempDir, String) {
    let sim = Simulator::start();
    let fleet = seed(&sim);
    let live = Live::start(&[("http_rps", APP, 200.0), ("queue_depth", APP, 30.0)]);
    let dir = TempDir::new("groups");
    let config = config(&dir, &live.prom.url());
    (sim, fleet, live, dir, config)
}

fn env(sim: &Simulator, live: &Live, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let settings = [&[("FAS_INTERVAL", "300ms")][..], extra].concat();
    support::env_for(sim, &live.prom, APP, &settings)
}

#[test]
fn each_group_follows_its_own_metric() {
    let (sim, fleet, live, _dir, config) = start();

    let out = support::run(&["eval", "-config", &config], &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let counts = |min: Option<u32>, max: Option<u32>| json!({"min": min, "max": max});
    let expected = json!({
        "web": {"created": counts(None, None), "started": counts(Some(2), Some(2))},
        "worker": {"created": counts(Some(3), Some(20)), "started": counts(Some(3), Some(3))},
    });
    assert_eq!(
        serde_json::from_str::<Value>(&out.stdout).unwrap(),
        expected
    );
    assert!(
        out.stdout
            .starts_with("{\n  \"web\": {\n    \"created\": {"),
        "{}",
        out.stdout
    );

    let env = env(&sim, &live, &[("FAS_METRICS_ADDR", "127.0.0.1:0")]);
    let s = Serve::start(&["-config", &config], &pairs(&env));
    s.wait_for(
        "web 2 started, worker 3 created and started",
        || {
            started(&sim, "web") == 2
                && created(&sim, "worker") == 3
                && started(&sim, "worker") == 3
        },
        SETTLE,
    );
    let requests = sim.requests();
    let creates: Vec<&RecordedRequest> = requests
        .iter()
        .filter(|r| r.method == "POST" && r.path == format!("/v1/apps/{APP}/machines"))
        .collect();
    assert_eq!(creates.len(), 2);
    let source = sim
        .machines(APP)
        .into_iter()
        .find(|m| m.id == fleet.worker)
        .unwrap();
    let mut regions: Vec<String> = creates
        .iter()
        .map(|r| {
            let body = r.json().unwrap();
            assert_eq!(body["config"]["metadata"]["fly_process_group"], "worker");
            assert_eq!(
                body["config"]["image"], source.config["image"],
                "cloned from the worker"
            );
            body["region"].as_str().unwrap().to_string()
        })
        .collect();
    regions.sort();
    assert_eq!(regions, ["ams", "cdg"]);

    // Per-group series; the Go families keep their labels and count every group.
    let series =
        |group: &str, rest: &str| format!("{{app=\"{APP}\",process_group=\"{group}\",{rest}}}");
    s.wait_for(
        "the next passes' gauges",
        || {
            s.sample(&format!(
                "fas_machines{}",
                series("worker", "state=\"started\"")
            )) == Some(3.0)
                && s.sample(&format!(
                    "fas_machines{}",
                    series("web", "state=\"started\"")
                )) == Some(2.0)
        },
        SETTLE,
    );
    let target = |group: &str, state: &str, bound: &str| {
        s.sample(&format!(
            "fas_target_machines{}",
            series(group, &format!("state=\"{state}\",bound=\"{bound}\""))
        ))
    };
    assert_eq!(target("web", "started", "min"), Some(2.0));
    assert_eq!(target("worker", "created", "max"), Some(20.0));
    assert_eq!(target("worker", "started", "max"), Some(3.0));
    assert_eq!(
        s.sample("fas_reconcile_count{status=\"create\"}"),
        Some(1.0)
    );
    assert_eq!(s.sample("fas_reconcile_count{status=\"start\"}"), Some(1.0));
    assert_eq!(
        s.sample("fas_machine_start_count{status=\"ok\"}"),
        Some(2.0)
    );
    assert!(
        !s.scrape().contains("process_group=\"\""),
        "no series for ungrouped machines"
    );

    // Both metrics fall: each group scales down by its own.
    live.set("http_rps", APP, 0.0);
    live.set("queue_depth", APP, 5.0);
    s.wait_for(
        "web 0 started, worker 1 started",
        || started(&sim, "web") == 0 && started(&sim, "worker") == 1,
        SETTLE,
    );
    assert_eq!(
        created(&sim, "worker"),
        3,
        "max created 20: nothing destroyed"
    );
    let requests = sim.requests();
    assert!(
        touching(&requests, &fleet.ungrouped).is_empty(),
        "ungrouped machines are never touched"
    );
    assert_eq!(started(&sim, ""), 0);
    let states: Vec<String> = sim
        .machines(APP)
        .into_iter()
        .filter(|m| m.process_group.is_none())
        .map(|m| m.state)
        .collect();
    assert_eq!(states, ["started", "stopped"]);
    for id in &fleet.web {
        assert_eq!(
            touching(&requests, std::slice::from_ref(id)).len(),
            2,
            "one start, one stop"
        );
    }
}

#[test]
fn a_failing_create_in_one_group_does_not_block_the_other() {
    let (sim, fleet, live, _dir, config) = start();
    sim.inject(FaultRule::new(
        Some("POST"),
        Some(&format!("/v1/apps/{APP}/machines?")),
        100,
        Fault::status(
            422,
            r#"{"error":"insufficient resources to create new machine with existing volume"}"#,
        ),
    ));
    // One operation at a time: the worker's first failed create is its only one (no new
    // create is begun after a failure), and the web starts share the same single permit.
    let env = env(&sim, &live, &[("FAS_ACTION_CONCURRENCY", "1")]);
    let out = support::run(&["serve", "-once", "-config", &config], &pairs(&env));
    assert_eq!(
        out.code,
        Some(1),
        "a failed create fails the run: {}",
        out.stderr
    );
    assert_eq!(
        started(&sim, "web"),
        2,
        "web started anyway: {}",
        out.stderr
    );
    assert_eq!(created(&sim, "worker"), 1);
    let creates = sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == format!("/v1/apps/{APP}/machines"))
        .count();
    assert_eq!(creates, 1);
    let lines = support::reconciled(&out.stderr);
    assert_eq!(lines.len(), 2, "one line per group: {}", out.stderr);
    let line = |group: &str| {
        lines
            .iter()
            .find(|l| l.contains(&format!(" process_group={group} ")))
            .unwrap_or_else(|| panic!("no reconciled line for {group}: {}", out.stderr))
    };
    assert!(
        line("web").contains("plan=\"start 2 of ["),
        "{}",
        line("web")
    );
    assert!(line("web").contains(" ok=2 failed=0 "), "{}", line("web"));
    let worker = line("worker");
    assert!(
        worker.contains(&format!(
            "plan=\"create 2 cloned from {} in [ams, cdg]\"",
            fleet.worker
        )),
        "{worker}"
    );
    assert!(worker.contains(" ok=0 failed=1 "), "{worker}");
    assert!(
        out.stderr.contains("cannot create machine, skipping"),
        "{}",
        out.stderr
    );
}

/// Each validation rule of `process-groups`: exit 1 and one line from the binary.
#[test]
fn validation_errors_name_the_rule() {
    let dir = TempDir::new("groups-invalid");
    let groups = "process-groups:\n  web:\n    started-machine-count: 2\n  worker:\n    created-machine-count: 1\n";
    // (YAML, environment, the error's text)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            "started-machine-count: 3\n",
            &[],
            "started-machine-count is set at top level together with process-groups; move it under a group",
        ),
        (
            "process-group: web\n",
            &[],
            "process-group \"web\" is set together with process-groups: name the groups under process-groups only; remove process-group (FAS_PROCESS_GROUP)",
        ),
        (
            "",
            &[("FAS_PROCESS_GROUP", "app")],
            "process-group \"app\" is set together with process-groups",
        ),
        (
            "",
            &[
                ("FAS_STARTED_MACHINE_COUNT", "1"),
                ("FAS_MAX_CREATED_MACHINE_COUNT", "4"),
            ],
            "FAS_MAX_CREATED_MACHINE_COUNT, FAS_STARTED_MACHINE_COUNT set in the environment together with process-groups: with process-groups every count expression belongs under a group; unset these variables",
        ),
        (
            "process-groups:\n  api:\n    regions: [iad]\n",
            &[],
            "process-groups[\"api\"]: must define either created machine count or started machine count",
        ),
        (
            "process-groups:\n  api:\n    min-created-machine-count: 1\n",
            &[],
            "process-groups[\"api\"]: max created machine count required if min created machine count is defined: set max-created-machine-count too",
        ),
        (
            "process-groups:\n  api:\n    started-machine-count: ceil(queue / 10)\n",
            &[],
            "process-groups[\"api\"]: started-machine-count: unknown variable \"queue\"",
        ),
        (
            "process-groups:\n  api:\n    started-machine-count: 1\n    fallback-after: 2\n",
            &[],
            "process-groups[\"api\"]: fallback-after is set without a fallback count",
        ),
    ];
    for (yaml, env, needle) in cases {
        let text = if yaml.contains("process-groups:") {
            format!("app-name: my-app\n{yaml}")
        } else {
            format!("app-name: my-app\n{yaml}{groups}")
        };
        let config = dir.write("fas.yml", &text).display().to_string();
        let out = support::run(&["eval", "-config", &config], env);
        assert_eq!(out.code, Some(1), "{text}\n{}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        assert!(
            out.stderr.starts_with("ERROR: ") && out.stderr.contains(needle),
            "expected {needle:?}:\n{}",
            out.stderr
        );
    }
    // `${VAR}` expansion works inside the map.
    let text =
        "app-name: my-app\nprocess-groups:\n  web:\n    started-machine-count: ${WEB_COUNT}\n";
    let config = dir.write("fas.yml", text).display().to_string();
    let out = support::run(&["eval", "-config", &config], &[("WEB_COUNT", "3")]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        serde_json::from_str::<Value>(&out.stdout).unwrap()["web"]["started"]["min"],
        3
    );
    // Not conflicts: process-group unset or empty, and a group for machines without one.
    let text = format!("app-name: my-app\n{groups}  \"\":\n    started-machine-count: 0\n");
    let config = dir.write("fas.yml", &text).display().to_string();
    for env in [&[][..], &[("FAS_PROCESS_GROUP", "")]] {
        let out = support::run(&["eval", "-config", &config], env);
        assert_eq!(out.code, Some(0), "{env:?}: {}", out.stderr);
        let v: Value = serde_json::from_str(&out.stdout).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["", "web", "worker"]);
        assert_eq!(v[""]["started"]["min"], 0);
    }
}

#[test]
fn the_backtest_reports_each_group() {
    let t0 = first_step(40);
    let rps: Vec<Option<f64>> = (0..40)
        .map(|k| Some(if k < 20 { 300.0 } else { 100.0 }))
        .collect();
    let queue: Vec<Option<f64>> = (0..40).map(|k| Some((k / 4) as f64 * 10.0)).collect();
    let history = history(&[
        ("http_rps", APP, &samples(t0, &rps)),
        ("queue_depth", APP, &samples(t0, &queue)),
    ]);
    let prom = Prometheus::start_with_history(&[], &history);
    let dir = TempDir::new("groups-backtest");
    let config = config(&dir, &prom.url());
    let html = dir.path().join("report.html").display().to_string();
    let out = backtest(
        &replay(&config, t0, 40),
        &["-machines", "3", "-format", "json", "-html", &html],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    let web = &report["groups"]["web"];
    let worker = &report["groups"]["worker"];
    assert_eq!(web["summary"]["peak_started"], 3);
    assert_eq!(web["summary"]["starts"], 3);
    assert_eq!(web["summary"]["stops"], 2);
    assert_eq!(worker["summary"]["peak_started"], 9, "queue 90 at the end");
    assert_eq!(
        worker["summary"]["creates"], 6,
        "3 machines at first, 9 wanted"
    );
    assert_eq!(worker["series"][39]["created"], 9);
    for key in ["starts", "stops", "creates"] {
        assert_eq!(
            report["summary"][key].as_u64().unwrap(),
            web["summary"][key].as_u64().unwrap() + worker["summary"][key].as_u64().unwrap(),
            "the top level sums the groups: {key}"
        );
    }
    let page = std::fs::read_to_string(&html).unwrap();
    for group in ["web", "worker"] {
        assert_eq!(
            page.matches(&format!("<h2>Process group &quot;{group}&quot;</h2>"))
                .count(),
            1,
            "a chart per group"
        );
    }
}
