use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::*;

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k: &str| map.get(k).cloned()
}

fn from_env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_env(&env_of(pairs))
}

fn overlay(c: &mut Config, yaml: &str, pairs: &[(&str, &str)]) -> Result<(), String> {
    file::overlay(c, yaml, &env_of(pairs))
}

fn reference_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/fly-autoscaler.yml")
}

#[test]
fn reference_config_parses_every_field() {
    let mut c = Config::default();
    c.overlay_file(&reference_path(), &env_of(&[])).unwrap();
    assert_eq!(c.app_name, "TARGET_APP_NAME");
    assert_eq!(c.group.regions, ["iad", "ord", "sjc"]);
    assert_eq!(c.process_group.as_deref(), Some("app"));
    assert_eq!(c.groups()[0].0, "app");
    assert_eq!(c.group.created_machine_count, "ceil(queue_depth / 10)");
    assert_eq!(c.group.started_machine_count, "ceil(queue_depth / 10)");
    assert_eq!(c.interval, Duration::from_secs(15));
    assert_eq!(c.api_token.expose(), "FlyV1 ...");
    assert!(!c.verbose);
    assert_eq!(c.metric_collectors.len(), 2);
    let p = &c.metric_collectors[0];
    assert_eq!(p.kind, CollectorKind::Prometheus);
    assert_eq!(p.metric_name, "queue_depth");
    assert_eq!(p.address, "https://api.fly.io/prometheus/MY_ORG");
    assert_eq!(p.query, "sum(queue_depth)");
    assert_eq!(p.token.expose(), "FlyV1 ...");
    let t = &c.metric_collectors[1];
    assert_eq!(t.kind, CollectorKind::Temporal);
    assert_eq!(t.metric_name, "workflow_count");
    assert_eq!(t.address, "localhost:7233");
    assert_eq!(t.cert_data, "-----BEGIN CERTIFICATE-----...");
    assert_eq!(t.key_data.expose(), "-----BEGIN EC PRIVATE KEY-----...");
    assert_eq!(t.query, "WorkflowType=\"my_workflow_type\"");
    // Untouched keys keep their defaults.
    assert_eq!(c.timeout, DEFAULT_TIMEOUT);
    assert_eq!(c.concurrency, 1);
    c.group.initial_machine_state = "started".into();
    c.validate().unwrap();
}

#[test]
fn defaults_match_the_go_program() {
    let c = from_env(&[]).unwrap();
    assert_eq!(c.concurrency, 1);
    assert_eq!(c.interval, Duration::from_secs(15));
    assert_eq!(c.timeout, Duration::from_secs(30));
    assert_eq!(c.app_list_refresh_interval, Duration::from_secs(60));
    assert_eq!(c.process_group, None, "the default, app");
    assert_eq!(c.groups()[0].0, "app");
    assert_eq!(c.group.initial_machine_state, "started");
    assert_eq!(c.metrics_addr, ":9090");
    assert_eq!(c.flaps_base_url, "https://api.machines.dev");
    assert_eq!(c.api_base_url, "https://api.fly.io");
    assert!(c.metric_collectors.is_empty());
    assert!(c.deploy_guard);
}

#[test]
fn reads_every_env_var() {
    let c = from_env(&[
        ("FAS_APP_NAME", "my-app-*"),
        ("FAS_ORG", "my-org"),
        ("FAS_REGIONS", "iad, ord,,sjc"),
        ("FAS_PROCESS_GROUP", "worker"),
        ("FAS_MIN_CREATED_MACHINE_COUNT", "1"),
        ("FAS_MAX_CREATED_MACHINE_COUNT", "5"),
        ("FAS_INITIAL_MACHINE_STATE", "stopped"),
        ("FAS_STARTED_MACHINE_COUNT", "x"),
        ("FAS_CONCURRENCY", "0"),
        ("FAS_INTERVAL", "1m30s"),
        ("FAS_TIMEOUT", "10s"),
        ("FAS_APP_LIST_REFRESH_INTERVAL", "2m"),
        ("FAS_API_TOKEN", "FlyV1 fm2_abc"),
        ("FAS_VERBOSE", "true"),
        ("FAS_LOG_FORMAT", "json"),
        ("FAS_METRICS_ADDR", "127.0.0.1:9191"),
        ("FAS_ACTION_CONCURRENCY", "8"),
        ("FLY_FLAPS_BASE_URL", "http://_api.internal:4280"),
        ("FLY_API_BASE_URL", "http://localhost:1"),
        ("FAS_DEPLOY_GUARD", "false"),
        ("FAS_DEPLOY_GUARD_FAIL_OPEN_AFTER", "1m"),
        ("FAS_PROMETHEUS_ADDRESS", "http://prom:9090"),
        ("FAS_PROMETHEUS_METRIC_NAME", "x"),
        ("FAS_PROMETHEUS_QUERY", "sum(x{app=\"$APP_NAME\"})"),
        ("FAS_PROMETHEUS_TOKEN", "tok"),
        ("FAS_TEMPORAL_ADDRESS", "temporal:7243"),
        ("FAS_TEMPORAL_NAMESPACE", "ns"),
        ("FAS_TEMPORAL_METRIC_NAME", "wf"),
        ("FAS_TEMPORAL_QUERY", "WorkflowType=\"a\""),
        ("TEMPORAL_TLS_CERT_DATA", "cert1"),
        ("FAS_TEMPORAL_CERT_DATA", "cert2"),
        ("FAS_TEMPORAL_KEY_DATA", "key2"),
        ("FAS_TEMPORAL_API_KEY", "apikey"),
    ])
    .unwrap();
    assert_eq!(c.app_name, "my-app-*");
    assert_eq!(c.org, "my-org");
    assert_eq!(c.group.regions, ["iad", "ord", "sjc"]);
    assert_eq!(c.process_group.as_deref(), Some("worker"));
    assert_eq!(c.group.min_created_machine_count, "1");
    assert_eq!(c.group.max_created_machine_count, "5");
    assert_eq!(c.group.initial_machine_state, "stopped");
    assert_eq!(c.group.started_machine_count, "x");
    assert_eq!(c.concurrency, 1, "values below 1 become 1");
    assert_eq!(c.interval, Duration::from_secs(90));
    assert_eq!(c.timeout, Duration::from_secs(10));
    assert_eq!(c.app_list_refresh_interval, Duration::from_secs(120));
    assert_eq!(c.api_token.expose(), "FlyV1 fm2_abc");
    assert!(c.verbose);
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.metrics_addr, "127.0.0.1:9191");
    assert_eq!(c.action_concurrency, 8);
    assert_eq!(c.flaps_base_url, "http://_api.internal:4280");
    assert_eq!(c.api_base_url, "http://localhost:1");
    assert!(!c.deploy_guard);
    assert_eq!(c.deploy_guard_fail_open_after, Duration::from_secs(60));
    let p = &c.metric_collectors[0];
    assert_eq!(
        (&p.kind, p.address.as_str(), p.metric_name.as_str()),
        (&CollectorKind::Prometheus, "http://prom:9090", "x")
    );
    assert_eq!(
        p.query, "sum(x{app=\"$APP_NAME\"})",
        "env queries are not expanded at load"
    );
    assert_eq!(p.token.expose(), "tok");
    let t = &c.metric_collectors[1];
    assert_eq!(t.kind, CollectorKind::Temporal);
    assert_eq!(t.namespace, "ns");
    assert_eq!(t.metric_name, "wf");
    assert_eq!(t.cert_data, "cert1", "TEMPORAL_TLS_CERT_DATA wins");
    assert_eq!(t.key_data.expose(), "key2");
    assert_eq!(t.api_key.expose(), "apikey");
}

#[test]
fn env_parse_errors_name_the_variable_and_value() {
    let cases = [
        (
            "FAS_CONCURRENCY",
            "four",
            "cannot parse FAS_CONCURRENCY as integer: \"four\"",
        ),
        (
            "FAS_CONCURRENCY",
            " 4",
            "cannot parse FAS_CONCURRENCY as integer: \" 4\"",
        ),
        (
            "FAS_INTERVAL",
            "15",
            "cannot parse FAS_INTERVAL as duration: \"15\": missing unit",
        ),
        (
            "FAS_TIMEOUT",
            "0s",
            "cannot parse FAS_TIMEOUT as duration: \"0s\": must be greater than zero",
        ),
        (
            "FAS_APP_LIST_REFRESH_INTERVAL",
            "1d",
            "cannot parse FAS_APP_LIST_REFRESH_INTERVAL as duration: \"1d\"",
        ),
        (
            "FAS_VERBOSE",
            "maybe",
            "cannot parse FAS_VERBOSE as boolean: \"maybe\"",
        ),
        (
            "FAS_LOG_FORMAT",
            "xml",
            "cannot parse FAS_LOG_FORMAT as log format: \"xml\"",
        ),
    ];
    for (var, value, want) in cases {
        let err = from_env(&[(var, value)]).unwrap_err().to_string();
        assert!(err.starts_with(want), "{var}={value:?}: got {err:?}");
    }
}

#[test]
fn file_overrides_env_only_for_keys_it_has() {
    let mut c = from_env(&[
        ("FAS_APP_NAME", "from-env"),
        ("FAS_ORG", "env-org"),
        ("FAS_REGIONS", "iad"),
        ("FAS_PROMETHEUS_ADDRESS", "http://env"),
        ("FAS_PROMETHEUS_METRIC_NAME", "m"),
        ("FAS_PROMETHEUS_QUERY", "q"),
    ])
    .unwrap();
    overlay(
        &mut c,
        "app-name: from-file\norg: \"\"\nregions: [ord, sjc]\n",
        &[],
    )
    .unwrap();
    assert_eq!(c.app_name, "from-file");
    assert_eq!(c.org, "", "an empty string in the file still overrides");
    assert_eq!(
        c.group.regions,
        ["ord", "sjc"],
        "lists are replaced, not merged"
    );
    assert_eq!(
        c.metric_collectors.len(),
        1,
        "absent keys keep the env value"
    );

    overlay(&mut c, "metric-collectors: []\n", &[]).unwrap();
    assert!(
        c.metric_collectors.is_empty(),
        "a file list replaces env collectors"
    );
}

#[test]
fn file_text_is_expanded_from_the_environment() {
    let mut c = Config::default();
    overlay(
        &mut c,
        "app-name: ${TARGET}\napi-token: \"$TOKEN\"\nmetric-collectors:\n  - type: prometheus\n    metric-name: q\n    address: http://p\n    query: 'sum(x{app=\"$APP_NAME\"}) + label_replace(y, \"a\", \"$$1\", \"b\", \"(.*)\")'\n",
        &[("TARGET", "my-app"), ("TOKEN", "FlyV1 fm2_x")],
    )
    .unwrap();
    assert_eq!(c.app_name, "my-app");
    assert_eq!(c.api_token.expose(), "FlyV1 fm2_x");
    assert_eq!(
        c.metric_collectors[0].query,
        "sum(x{app=\"$APP_NAME\"}) + label_replace(y, \"a\", \"$1\", \"b\", \"(.*)\")"
    );
}

#[test]
fn file_scalars_durations_and_booleans() {
    let mut c = Config::default();
    overlay(
        &mut c,
        "created-machine-count: 2\nconcurrency: 2.7\ninterval: 1m30s\ntimeout: 500ms\nverbose: yes\ndeploy-guard: off\nlog-format: json\n",
        &[],
    )
    .unwrap();
    assert_eq!(c.group.created_machine_count, "2");
    assert_eq!(c.concurrency, 2);
    assert_eq!(c.interval, Duration::from_secs(90));
    assert_eq!(c.timeout, Duration::from_millis(500));
    assert!(c.verbose);
    assert!(!c.deploy_guard);
    assert_eq!(c.log_format, LogFormat::Json);
}

#[test]
fn file_errors_are_one_line_and_name_key_and_line() {
    let cases: &[(&str, &str)] = &[
        (
            "app-name: x\nintervall: 15s\n",
            "unknown key \"intervall\" at line 2; did you mean \"interval\"?",
        ),
        (
            "metric-collectors:\n  - type: prometheus\n    qurey: x\n",
            "metric-collectors[0]: unknown key \"qurey\" at line 3; did you mean \"query\"?",
        ),
        (
            "interval: 15\n",
            "interval: invalid duration \"15\": missing unit",
        ),
        (
            "interval: \"0s\"\n",
            "interval: invalid duration \"0s\": must be greater than zero",
        ),
        (
            "concurrency: \"2\"\n",
            "concurrency: invalid type: string \"2\", expected a number such as 4",
        ),
        (
            "verbose: maybe\n",
            "verbose: invalid value: string \"maybe\", expected true or false",
        ),
        (
            "regions: iad\n",
            "regions: invalid type: string \"iad\", expected a sequence",
        ),
        ("app-name: [\n", "line"),
        ("", "the file is empty"),
        ("# only a comment\n", "the file is empty"),
        ("log-format: xml\n", "invalid log format \"xml\""),
        (
            "max-scale-up: 0\n",
            "max-scale-up: \"0\" is not a count such as 4",
        ),
        (
            "max-scale-down: lots\n",
            "max-scale-down: \"lots\" is not a count",
        ),
        (
            "stop-order: random\n",
            "stop-order: \"random\" is not a stop order; use id, newest or oldest",
        ),
        (
            "scale-down-method: kill\n",
            "\"kill\" is not a scale-down method; use stop or suspend",
        ),
        (
            "cooldown: -1s\n",
            "cooldown: invalid duration \"-1s\": must not be negative",
        ),
        (
            "time-offset: EST\n",
            "\"EST\" is not a UTC offset; write it as -05:00",
        ),
        (
            "process-groups:\n  web:\n    started-machin-count: x\n",
            "process-groups.web: unknown key \"started-machin-count\" at line 3; did you mean \"started-machine-count\"?",
        ),
        (
            "started-machine-count: x\nprocess-groups:\n  web:\n    started-machine-count: y\n",
            "started-machine-count is set at top level together with process-groups; move it under a group",
        ),
    ];
    for (yaml, want) in cases {
        let mut c = Config::default();
        let err = overlay(&mut c, yaml, &[]).unwrap_err();
        assert!(err.contains(want), "{yaml:?}: got {err:?}");
        assert!(!err.contains('\n'), "{yaml:?}: multi-line error {err:?}");
    }
}

#[test]
fn missing_file_names_the_path() {
    let err = Config::load(
        Some(std::path::Path::new("/nonexistent/x.yml")),
        &env_of(&[]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("config file \"/nonexistent/x.yml\": cannot read:"),
        "{err}"
    );
}

fn valid() -> Config {
    Config {
        app_name: "myapp".into(),
        group: GroupConfig {
            started_machine_count: "1".into(),
            ..GroupConfig::default()
        },
        ..Config::default()
    }
}

#[test]
fn every_go_validation_message() {
    let base = || Config {
        group: GroupConfig {
            initial_machine_state: "started".into(),
            ..Config::default().group
        },
        app_name: "myapp".into(),
        ..Config::default()
    };
    let cases: Vec<(Config, &str)> = vec![
        (
            Config {
                app_name: String::new(),
                ..valid()
            },
            "app name required",
        ),
        (
            base(),
            "must define either created machine count or started machine count",
        ),
        (
            Config {
                group: GroupConfig {
                    created_machine_count: "1".into(),
                    min_created_machine_count: "1".into(),
                    ..base().group
                },
                ..base()
            },
            "cannot define created machine count and min/max created machine count",
        ),
        (
            Config {
                group: GroupConfig {
                    min_created_machine_count: "1".into(),
                    ..base().group
                },
                ..base()
            },
            "max created machine count required if min created machine count is defined",
        ),
        (
            Config {
                group: GroupConfig {
                    max_created_machine_count: "1".into(),
                    ..base().group
                },
                ..base()
            },
            "min created machine count required if max created machine count is defined",
        ),
        (
            Config {
                group: GroupConfig {
                    started_machine_count: "1".into(),
                    min_started_machine_count: "1".into(),
                    ..base().group
                },
                ..base()
            },
            "cannot define started machine count and min/max started machine count",
        ),
        (
            Config {
                group: GroupConfig {
                    min_started_machine_count: "1".into(),
                    ..base().group
                },
                ..base()
            },
            "max started machine count required if min started machine count is defined",
        ),
        (
            Config {
                group: GroupConfig {
                    max_started_machine_count: "1".into(),
                    ..base().group
                },
                ..base()
            },
            "min started machine count required if max started machine count is defined",
        ),
        (
            Config {
                group: GroupConfig {
                    initial_machine_state: "running".into(),
                    ..valid().group
                },
                ..valid()
            },
            "initial machine state must be either 'started' or 'stopped'",
        ),
        (
            Config {
                metric_collectors: vec![CollectorConfig {
                    kind: CollectorKind::Prometheus,
                    ..Default::default()
                }],
                ..valid()
            },
            "metric-collectors[0]: metric name required",
        ),
        (
            Config {
                metric_collectors: vec![CollectorConfig {
                    metric_name: "m".into(),
                    ..Default::default()
                }],
                ..valid()
            },
            "metric-collectors[0]: type required",
        ),
        (
            Config {
                metric_collectors: vec![CollectorConfig {
                    metric_name: "m".into(),
                    kind: CollectorKind::parse("graphite"),
                    ..Default::default()
                }],
                ..valid()
            },
            "metric-collectors[0]: invalid type: \"graphite\"",
        ),
        (
            Config {
                metric_collectors: vec![CollectorConfig {
                    metric_name: "m".into(),
                    kind: CollectorKind::Prometheus,
                    ..Default::default()
                }],
                ..valid()
            },
            "metric-collectors[0]: prometheus address required",
        ),
        (
            Config {
                metric_collectors: vec![CollectorConfig {
                    metric_name: "m".into(),
                    kind: CollectorKind::Prometheus,
                    address: "http://p".into(),
                    ..Default::default()
                }],
                ..valid()
            },
            "metric-collectors[0]: prometheus query required",
        ),
        (
            Config {
                metric_collectors: vec![CollectorConfig {
                    metric_name: "m".into(),
                    kind: CollectorKind::Temporal,
                    ..Default::default()
                }],
                ..valid()
            },
            "metric-collectors[0]: temporal address required",
        ),
    ];
    for (config, want) in cases {
        let err = config.validate().unwrap_err().to_string();
        assert!(err.starts_with(want), "want {want:?}, got {err:?}");
        assert!(err.len() > want.len() + 10, "{err:?} should say what to do");
    }
}

#[test]
fn extra_validation() {
    let prom = |name: &str, address: &str| CollectorConfig {
        kind: CollectorKind::Prometheus,
        metric_name: name.into(),
        address: address.into(),
        query: "q".into(),
        ..Default::default()
    };
    let dup = Config {
        metric_collectors: vec![prom("m", "http://a"), prom("m", "http://b")],
        ..valid()
    };
    assert!(dup.validate().unwrap_err().to_string().starts_with(
        "metric-collectors[1]: metric name \"m\" is already used by metric-collectors[0]"
    ));
    let bad_url = Config {
        metric_collectors: vec![prom("m", "prom:9090")],
        ..valid()
    };
    assert!(
        bad_url
            .validate()
            .unwrap_err()
            .to_string()
            .contains("must start with http:// or https://")
    );

    let wildcard = Config {
        app_name: "my-app-*".into(),
        api_token: Secret::new("t"),
        ..valid()
    };
    assert!(
        wildcard
            .validate_for_serve()
            .unwrap_err()
            .to_string()
            .starts_with("organization required if app name uses a wildcard")
    );
    let no_token = valid();
    assert!(
        no_token
            .validate_for_serve()
            .unwrap_err()
            .to_string()
            .starts_with("cannot create fly client: api token required")
    );
    assert!(
        Config {
            api_token: Secret::new("t"),
            ..valid()
        }
        .validate_for_serve()
        .is_ok()
    );
}

#[test]
fn count_expression_mapping() {
    let c = GroupConfig {
        created_machine_count: "a".into(),
        min_started_machine_count: "b".into(),
        max_started_machine_count: "c".into(),
        ..GroupConfig::default()
    };
    let expr = |key: &str, source| CountExpr {
        key: key.into(),
        source,
    };
    assert_eq!(
        c.count_exprs(Count::Created),
        CountExprs {
            min: expr("created-machine-count", "a"),
            max: expr("created-machine-count", "a")
        }
    );
    assert_eq!(
        c.count_exprs(Count::Started),
        CountExprs {
            min: expr("min-started-machine-count", "b"),
            max: expr("max-started-machine-count", "c")
        }
    );
}

#[test]
fn debug_output_never_contains_secrets() {
    let mut c = from_env(&[
        ("FAS_API_TOKEN", "FlyV1 fm2_topsecret"),
        ("FAS_PROMETHEUS_ADDRESS", "http://p"),
        ("FAS_PROMETHEUS_TOKEN", "promsecret"),
    ])
    .unwrap();
    c.metric_collectors[0].key_data = Secret::new("keysecret");
    let shown = format!("{c:?}");
    for s in ["topsecret", "promsecret", "keysecret"] {
        assert!(!shown.contains(s));
    }
}

#[test]
fn scale_controls_from_env_and_file() {
    let c = from_env(&[
        ("FAS_SCALE_UP_STABILIZATION", "30s"),
        ("FAS_SCALE_DOWN_STABILIZATION", "5m"),
        ("FAS_MAX_SCALE_UP", "4"),
        ("FAS_MAX_SCALE_DOWN", "50%"),
        ("FAS_COOLDOWN", "2m"),
        ("FAS_FALLBACK_AFTER", "3"),
        ("FAS_FALLBACK_STARTED_MACHINE_COUNT", "2"),
        ("FAS_FALLBACK_CREATED_MACHINE_COUNT", "5"),
        ("FAS_STOP_ORDER", "newest"),
        ("FAS_STOP_PRIORITY_QUERY", "load{app=\"$APP_NAME\"}"),
        ("FAS_SCALE_DOWN_METHOD", "suspend"),
        ("FAS_TIME_OFFSET", "-05:00"),
        ("FAS_MAX_MACHINES", "50"),
    ])
    .unwrap();
    let g = &c.group;
    assert_eq!(g.scale_up_stabilization, Duration::from_secs(30));
    assert_eq!(g.scale_down_stabilization, Duration::from_secs(300));
    assert_eq!(g.max_scale_up, Some(Step::Count(4)));
    assert_eq!(g.max_scale_down, Some(Step::Percent(50)));
    assert_eq!(g.cooldown, Duration::from_secs(120));
    assert_eq!(g.fallback_after, 3);
    assert_eq!(g.fallback_started_machine_count, Some(2));
    assert_eq!(g.fallback_created_machine_count, Some(5));
    assert_eq!(g.stop_order, StopOrder::Newest);
    assert_eq!(g.stop_priority_query, "load{app=\"$APP_NAME\"}");
    assert_eq!(g.scale_down_method, ScaleDownMethod::Suspend);
    assert_eq!(c.time_offset, -5 * 3600);
    assert_eq!(c.max_machines, 50);
    let err = from_env(&[("FAS_MAX_SCALE_UP", "-1")])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("cannot parse FAS_MAX_SCALE_UP as step limit: \"-1\""),
        "{err}"
    );

    let mut c = Config::default();
    overlay(
        &mut c,
        "scale-down-stabilization: 10m\nmax-scale-up: 2\nmax-scale-down: \"25%\"\ncooldown: 0s\nfallback-after: 2\nfallback-started-machine-count: 1\nstop-order: oldest\nscale-down-method: suspend\ntime-offset: \"+01:30\"\n",
        &[],
    )
    .unwrap();
    assert_eq!(c.group.scale_down_stabilization, Duration::from_secs(600));
    assert_eq!(c.group.max_scale_up, Some(Step::Count(2)));
    assert_eq!(c.group.max_scale_down, Some(Step::Percent(25)));
    assert_eq!(c.group.fallback_after, 2);
    assert_eq!(c.group.stop_order, StopOrder::Oldest);
    assert_eq!(c.time_offset, 5400);
}

#[test]
fn process_groups_inherit_top_level_settings_except_counts() {
    let mut c = from_env(&[("FAS_REGIONS", "iad"), ("FAS_COOLDOWN", "1m")]).unwrap();
    overlay(
        &mut c,
        "app-name: my-app\nscale-down-method: suspend\nprocess-groups:\n  web:\n    started-machine-count: ceil(rps / 100)\n  worker:\n    min-created-machine-count: 1\n    max-created-machine-count: 20\n    regions: [iad, ord]\n    scale-down-method: stop\n  \"\":\n    started-machine-count: \"1\"\n",
        &[],
    )
    .unwrap();
    let groups = c.groups();
    let names: Vec<&str> = groups.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["", "web", "worker"]);
    let (_, web) = groups[1];
    assert_eq!(web.started_machine_count, "ceil(rps / 100)");
    assert_eq!(web.regions, ["iad"], "from the environment's top level");
    assert_eq!(web.cooldown, Duration::from_secs(60));
    assert_eq!(web.scale_down_method, ScaleDownMethod::Suspend);
    let (_, worker) = groups[2];
    assert_eq!(worker.regions, ["iad", "ord"]);
    assert_eq!(worker.scale_down_method, ScaleDownMethod::Stop);
    assert_eq!(
        worker.started_machine_count, "",
        "top-level counts are never defaults"
    );
    c.validate().unwrap();
}

#[test]
fn process_group_rules() {
    let groups = |web: GroupConfig| Config {
        process_groups: vec![("web".into(), web)],
        ..valid()
    };
    let web = valid().group;
    let cases: Vec<(Config, &str)> = vec![
        (
            Config {
                process_group: Some("worker".into()),
                ..groups(web.clone())
            },
            "process-group \"worker\" is set together with process-groups",
        ),
        (
            groups(GroupConfig::default()),
            "process-groups[\"web\"]: must define either created machine count or started machine count",
        ),
        (
            groups(GroupConfig {
                min_created_machine_count: "1".into(),
                ..GroupConfig::default()
            }),
            "process-groups[\"web\"]: max created machine count required if min created machine count is defined",
        ),
        (
            groups(GroupConfig {
                fallback_after: 2,
                ..web.clone()
            }),
            "process-groups[\"web\"]: fallback-after is set without a fallback count",
        ),
    ];
    for (config, want) in cases {
        let err = config.validate().unwrap_err().to_string();
        assert!(err.starts_with(want), "want {want:?}, got {err:?}");
    }
    // The default process group is not a conflict, nor an explicit empty one.
    assert!(groups(web.clone()).validate().is_ok());
    assert!(
        Config {
            process_group: Some(String::new()),
            ..groups(web)
        }
        .validate()
        .is_ok()
    );

    // Count variables left in the environment are named.
    let dir = std::env::temp_dir().join(format!("fas-groups-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("groups.yml");
    std::fs::write(
        &path,
        "app-name: a\nprocess-groups:\n  web:\n    started-machine-count: \"1\"\n",
    )
    .unwrap();
    let env = env_of(&[
        ("FAS_STARTED_MACHINE_COUNT", "2"),
        ("FAS_MAX_CREATED_MACHINE_COUNT", "3"),
    ]);
    let err = Config::load(Some(&path), &env).unwrap_err().to_string();
    assert!(
        err.starts_with("FAS_MAX_CREATED_MACHINE_COUNT, FAS_STARTED_MACHINE_COUNT set in the environment together with process-groups"),
        "{err}"
    );
    assert!(Config::load(Some(&path), &env_of(&[])).is_ok());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn control_and_limit_validation() {
    let with = |f: fn(&mut Config)| {
        let mut c = valid();
        f(&mut c);
        c.validate().map_err(|e| e.to_string())
    };
    type Change = fn(&mut Config);
    let cases: Vec<(Change, &str)> = vec![
        (
            |c| c.concurrency = 100_000,
            "concurrency 100000 is too large: set concurrency (FAS_CONCURRENCY) to at most 1024",
        ),
        (
            |c| c.action_concurrency = 65,
            "action-concurrency 65 is too large",
        ),
        (
            |c| c.max_machines = 30_000,
            "max-machines 30000 is too large",
        ),
        (
            |c| c.interval = Duration::from_nanos(1),
            "interval 1ns is too short: set interval (FAS_INTERVAL) to at least 100ms",
        ),
        (
            |c| c.timeout = Duration::from_millis(50),
            "timeout 50ms is too short",
        ),
        (
            |c| c.group.scale_down_stabilization = Duration::from_secs(7200),
            "scale-down-stabilization 2h0m0s is too long",
        ),
        (
            |c| c.group.max_scale_up = Some(Step::Percent(5000)),
            "max-scale-up 5000% is too large",
        ),
        (
            |c| c.group.fallback_started_machine_count = Some(1),
            "a fallback count is set without fallback-after",
        ),
        (
            |c| c.group.stop_priority_query = "x".into(),
            "stop-priority-query needs a prometheus collector",
        ),
    ];
    for (f, want) in cases {
        let err = with(f).unwrap_err();
        assert!(err.starts_with(want), "want {want:?}, got {err:?}");
    }
    assert!(with(|c| c.concurrency = 1024).is_ok());
}

#[test]
fn oversized_and_deeply_nested_files_are_refused_before_parsing() {
    let dir = std::env::temp_dir().join(format!("fas-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big.yml");
    std::fs::write(&big, format!("app-name: a\n#{}\n", "x".repeat(1024 * 1024))).unwrap();
    let err = Config::load(Some(&big), &env_of(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("the file is larger than 1024 KiB"), "{err}");
    let deep = dir.join("deep.yml");
    std::fs::write(
        &deep,
        format!("app-name: {}{}\n", "[".repeat(100_000), "]".repeat(100_000)),
    )
    .unwrap();
    let err = Config::load(Some(&deep), &env_of(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nesting deeper than 64 levels at line 1"),
        "{err}"
    );
    let block = dir.join("block.yml");
    let nested: String = (0..80)
        .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
        .collect();
    std::fs::write(&block, nested).unwrap();
    let err = Config::load(Some(&block), &env_of(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nesting deeper than 64 levels at line 65"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A config with the one group's count set and `yaml` on top.
fn with_yaml(yaml: &str, pairs: &[(&str, &str)]) -> Result<Config, String> {
    let mut c = Config {
        app_name: "my-app".into(),
        org: "my-org".into(),
        ..Config::default()
    };
    c.group.started_machine_count = "1".into();
    overlay(&mut c, yaml, pairs)?;
    c.validate().map_err(|e| e.to_string())?;
    Ok(c)
}

#[test]
fn http_and_redis_collectors_from_the_file() {
    let yaml = r#"
metric-collectors:
  - type: http
    metric-name: pending
    url: http://nats.internal:8222/jsz?consumers=true
    method: post
    body: '{"app": "$APP_NAME"}'
    headers: {Authorization: "Bearer ${CI_TOKEN}"}
    json-pointer: /account_details/*/num_pending
    aggregate: max
  - type: redis
    metric-name: queue_depth
    url: ${REDIS_URL}
    commands: [LLEN queue:$APP_NAME, "zcard delayed"]
"#;
    let c = with_yaml(
        yaml,
        &[
            ("CI_TOKEN", "tok3n"),
            ("REDIS_URL", "redis://u:pw@r:6379/1"),
        ],
    )
    .unwrap();
    let h = &c.metric_collectors[0];
    assert_eq!(h.kind, CollectorKind::Http);
    assert_eq!(
        h.url.expose(),
        "http://nats.internal:8222/jsz?consumers=true"
    );
    assert_eq!(h.method, "post");
    assert_eq!(
        h.body, r#"{"app": "$APP_NAME"}"#,
        "APP_NAME is left for collection time"
    );
    assert_eq!(h.headers[0].0, "Authorization");
    assert_eq!(h.headers[0].1.expose(), "Bearer tok3n");
    assert_eq!(h.aggregate, "max");
    let r = &c.metric_collectors[1];
    assert_eq!(r.kind, CollectorKind::Redis);
    assert_eq!(r.url.expose(), "redis://u:pw@r:6379/1");
    assert_eq!(r.commands, ["LLEN queue:$APP_NAME", "zcard delayed"]);
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("tok3n") && !shown.contains(":pw@"),
        "{shown}"
    );
}

#[test]
fn http_and_redis_mistakes_are_one_line_each() {
    let bad = |collector: &str| {
        let yaml = format!("metric-collectors:\n  - metric-name: m\n{collector}");
        with_yaml(&yaml, &[]).unwrap_err()
    };
    let http = "    type: http\n    url: http://h/x\n";
    let err = bad(http);
    assert!(err.contains("json-pointer required"), "{err}");
    let err = bad(&format!("{http}    json-pointer: jobs\n"));
    assert!(
        err.contains("invalid json-pointer \"jobs\"") && err.contains("start with /"),
        "{err}"
    );
    let err = bad(&format!("{http}    json-pointer: /a\n    aggregate: avg\n"));
    assert!(err.contains("invalid aggregate \"avg\""), "{err}");
    let err = bad(&format!("{http}    json-pointer: /a\n    body: x\n"));
    assert!(err.contains("body is set for a GET request"), "{err}");
    let err = bad("    type: http\n    url: ftp://h?key=s3cret\n    json-pointer: /a\n");
    assert!(
        err.contains("invalid http url") && !err.contains("s3cret"),
        "{err}"
    );
    let err = bad(&format!(
        "{http}    json-pointer: /a\n    headers: {{\"X Y\": v}}\n"
    ));
    assert!(err.contains("invalid header \"X Y\""), "{err}");
    let err = bad("    type: http\n    address: http://h\n");
    assert!(err.contains("address is not a key of type http"), "{err}");

    let redis = "    type: redis\n    url: redis://:s3cret@h:6379\n";
    let err = bad(redis);
    assert!(err.contains("redis commands required"), "{err}");
    let err = bad(&format!("{redis}    commands: [DEL queue]\n"));
    assert!(
        err.contains("invalid commands[0] \"DEL queue\"") && err.contains("not an allowed command"),
        "{err}"
    );
    let err = bad("    type: redis\n    url: http://:s3cret@h\n    commands: [DBSIZE]\n");
    assert!(
        err.contains("invalid redis url") && !err.contains("s3cret"),
        "{err}"
    );
    let err = bad(&format!("{redis}    commands: [DBSIZE]\n    ca-data: x\n"));
    assert!(err.contains("ca-data is set for a redis:// url"), "{err}");
    for err in [bad(redis), bad("    type: http\n")] {
        assert!(!err.contains('\n'), "{err}");
    }
}

#[test]
fn leader_election_keys() {
    let c = with_yaml("leader-election-url: redis://:pw@lock:6379\n", &[]).unwrap();
    assert_eq!(c.leader_election_ttl, DEFAULT_LEADER_ELECTION_TTL);
    assert_eq!(c.leader_key(), "fly-autoscaler:leader:my-org:my-app");
    let c = with_yaml(
        "leader-election-url: rediss://lock\nleader-election-key: k\nleader-election-ttl: 3s\n",
        &[],
    )
    .unwrap();
    assert_eq!(
        (c.leader_key().as_str(), c.leader_election_ttl),
        ("k", Duration::from_secs(3))
    );
    let err = with_yaml(
        "leader-election-url: redis://lock\nleader-election-ttl: 1s\n",
        &[],
    )
    .unwrap_err();
    assert!(err.contains("leader-election-ttl 1s is too short") && err.contains("at least 2s"));
    let err = with_yaml("leader-election-url: http://:pw@lock\n", &[]).unwrap_err();
    assert!(
        err.contains("invalid leader-election-url") && !err.contains("pw"),
        "{err}"
    );
    let env = from_env(&[
        ("FAS_LEADER_ELECTION_URL", "redis://lock"),
        ("FAS_LEADER_ELECTION_KEY", "key"),
        ("FAS_LEADER_ELECTION_TTL", "4s"),
    ])
    .unwrap();
    assert_eq!(env.leader_election_url.expose(), "redis://lock");
    assert_eq!(env.leader_election_key, "key");
    assert_eq!(env.leader_election_ttl, Duration::from_secs(4));
}
/// Random config files through everything `eval` and `serve` do with one before the first
/// reconcile (read, `${VAR}` expansion, YAML, validation, expressions, collectors): never a
/// panic; every error one line, naming no secret.
mod properties {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::testing;
    use proptest::prelude::*;

    /// A value every secret key gets in generated files; no error may show it.
    const SECRET: &str = "fm2_sekrit";

    const KEYS: &[&str] = &[
        "app-name",
        "org",
        "process-group",
        "process-groups",
        "concurrency",
        "interval",
        "timeout",
        "app-list-refresh-interval",
        "verbose",
        "metric-collectors",
        "action-concurrency",
        "metrics-addr",
        "log-format",
        "flaps-base-url",
        "api-base-url",
        "deploy-guard",
        "deploy-guard-fail-open-after",
        "max-machines",
        "time-offset",
        "created-machine-count",
        "min-created-machine-count",
        "max-created-machine-count",
        "started-machine-count",
        "min-started-machine-count",
        "max-started-machine-count",
        "regions",
        "initial-machine-state",
        "scale-up-stabilization",
        "scale-down-stabilization",
        "max-scale-up",
        "max-scale-down",
        "cooldown",
        "fallback-after",
        "fallback-created-machine-count",
        "fallback-started-machine-count",
        "stop-order",
        "stop-priority-query",
        "scale-down-method",
        "intervall",
        "x",
        "",
    ];
    const WORDS: &[&str] = &[
        "15s",
        "0s",
        "-1s",
        "100ms",
        "1ns",
        "99999999h",
        "1.5h",
        "1e3s",
        "off",
        "json",
        "text",
        "started",
        "stopped",
        "suspend",
        "stop",
        "newest",
        "50%",
        "0%",
        "1000000%",
        "-05:00",
        "+14:00",
        "25:00",
        "ceil(q / 10)",
        "q ? 1 : 0",
        "((q)",
        "q ** q ** q",
        "${TEST_DURATION}",
        "$APP_NAME",
        "${",
        "*",
        "my-*",
        "prometheus",
        "temporal",
        "http://127.0.0.1:1",
        "localhost:7233",
        "dns:///h:1",
        "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----",
        "1",
        "0",
        "-1",
        "1025",
        "65",
        "20001",
        "4294967296",
        "true",
        "no",
        "~",
        "null",
    ];

    /// A YAML node, rendered in block or flow style.
    #[derive(Debug, Clone)]
    enum Node {
        Scalar(String),
        Flow(Vec<Node>),
        Seq(Vec<Node>),
        Map(Vec<(String, Node)>),
    }

    fn scalar() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(WORDS).prop_map(|w| format!("{w:?}")),
            2 => prop::sample::select(WORDS).prop_map(String::from),
            1 => any::<f64>().prop_map(|f| f.to_string()),
            1 => any::<i64>().prop_map(|n| n.to_string()),
            1 => "[ -~]{0,12}".prop_map(|s| format!("{s:?}")),
            1 => "[ -~\t]{0,12}",
            1 => Just("&a x".to_string()),
            1 => Just("*a".to_string()),
            1 => Just("!!binary aGk=".to_string()),
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => prop::sample::select(KEYS).prop_map(String::from),
            1 => "[a-z-]{1,8}",
        ]
    }

    fn node() -> impl Strategy<Value = Node> {
        scalar()
            .prop_map(Node::Scalar)
            .prop_recursive(4, 40, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Node::Flow),
                    prop::collection::vec(inner.clone(), 1..4).prop_map(Node::Seq),
                    prop::collection::vec((key(), inner), 1..5).prop_map(Node::Map),
                ]
            })
    }

    /// `key: value` lines at `indent`.
    fn render_map(entries: &[(String, Node)], indent: usize, out: &mut String) {
        for (k, v) in entries {
            out.push_str(&" ".repeat(indent));
            out.push_str(k);
            out.push(':');
            render_value(v, indent, out);
        }
    }

    /// A value after `key:` or `- `.
    fn render_value(node: &Node, indent: usize, out: &mut String) {
        match node {
            Node::Scalar(_) | Node::Flow(_) => {
                out.push(' ');
                out.push_str(&flow(node));
                out.push('\n');
            }
            Node::Seq(items) => {
                out.push('\n');
                for item in items {
                    out.push_str(&" ".repeat(indent + 2));
                    out.push('-');
                    render_value(item, indent + 4, out);
                }
            }
            Node::Map(entries) => {
                out.push('\n');
                render_map(entries, indent + 2, out);
            }
        }
    }

    fn flow(node: &Node) -> String {
        match node {
            Node::Scalar(s) => s.clone(),
            Node::Flow(items) | Node::Seq(items) => {
                format!(
                    "[{}]",
                    items.iter().map(flow).collect::<Vec<_>>().join(", ")
                )
            }
            Node::Map(entries) => format!(
                "{{{}}}",
                entries
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", flow(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// One `metric-collectors` entry, its secrets set to [`SECRET`].
    fn collector() -> impl Strategy<Value = String> {
        let word = || prop::sample::select(WORDS);
        (
            prop::sample::select(&["prometheus", "temporal", "graphite"][..]),
            prop::sample::select(&["q", "w", "hour", ""][..]),
            word(),
            word(),
            prop::sample::subsequence(&["token", "api-key", "key-data"][..], 0..=3),
            prop::option::of(word()),
        )
            .prop_map(|(kind, name, address, query, secrets, cert)| {
                let mut out = format!(
                    "  - type: {kind}\n    metric-name: {name:?}\n    address: {address:?}\n    query: {query:?}\n"
                );
                for key in secrets {
                    out.push_str(&format!("    {key}: {SECRET:?}\n"));
                }
                if let Some(cert) = cert {
                    out.push_str(&format!("    cert-data: {cert:?}\n"));
                }
                out
            })
    }

    /// A config file: often a working core, collectors, the API token, then random keys
    /// (mostly known) with scalar, flow or block values.
    fn config_file() -> impl Strategy<Value = String> {
        (
            prop::option::weighted(0.75, prop::sample::select(WORDS)),
            any::<bool>(),
            prop::collection::vec(collector(), 0..3),
            prop::collection::vec(
                (
                    key(),
                    prop_oneof![3 => scalar().prop_map(Node::Scalar), 1 => node()],
                ),
                0..4,
            ),
        )
            .prop_map(|(core, token, collectors, entries)| {
                let mut out = String::new();
                if let Some(count) = core {
                    out.push_str(&format!(
                        "app-name: my-app\nstarted-machine-count: {count:?}\n"
                    ));
                }
                if token {
                    out.push_str(&format!("api-token: {SECRET:?}\n"));
                }
                if !collectors.is_empty() {
                    out.push_str("metric-collectors:\n");
                    out.push_str(&collectors.concat());
                }
                render_map(&entries, 0, &mut out);
                out
            })
    }

    /// The reference config, or a generated one, with characters inserted and spans cut.
    fn mangled_file() -> impl Strategy<Value = String> {
        let reference = include_str!("../../testdata/fly-autoscaler.yml").to_string();
        (
            prop_oneof![Just(reference), config_file()],
            prop::collection::vec(
                (
                    any::<prop::sample::Index>(),
                    prop::sample::select(
                        &[
                            '[', '{', ':', '-', '"', '\'', '\t', '\n', ' ', '#', '&', '*', '!',
                            '|', '>', '%', '@', '\u{0}', 'é',
                        ][..],
                    ),
                ),
                0..6,
            ),
            prop::option::of((any::<prop::sample::Index>(), 0usize..40)),
        )
            .prop_map(|(text, inserts, cut)| {
                let mut chars: Vec<char> = text.chars().collect();
                for (at, c) in inserts {
                    let i = at.index(chars.len() + 1);
                    chars.insert(i, c);
                }
                if let Some((at, len)) = cut {
                    let i = at.index(chars.len() + 1);
                    chars.drain(i..(i + len).min(chars.len()));
                }
                chars.into_iter().collect()
            })
    }

    /// Loads `text` as `-config` does (environment empty but for one variable), then
    /// compiles the expressions and builds the collectors; the first error.
    fn load(text: &str) -> Result<(), String> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "fas-config-prop-{}-{}.yml",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, text).unwrap();
        let loaded = Config::load(Some(&path), &env_of(&[("TEST_DURATION", "15s")]));
        let _ = std::fs::remove_file(&path);
        let config = loaded.map_err(|e| e.to_string())?;
        crate::reconcile::compile_groups(&config)?;
        crate::collector::build(&config.metric_collectors)?;
        Ok(())
    }

    fn check_error(result: Result<(), String>, secret_may_show: bool) -> Result<(), TestCaseError> {
        if let Err(e) = result {
            prop_assert!(!e.trim().is_empty());
            prop_assert!(!e.contains(['\n', '\r']), "not one line: {e:?}");
            prop_assert!(secret_may_show || !e.contains(SECRET), "secret shown: {e}");
        }
        Ok(())
    }

    use proptest::test_runner::TestCaseError;

    proptest! {
        #![proptest_config(testing::cases(256))]

        #[test]
        fn generated_config_files_load_or_fail_in_one_line(text in config_file()) {
            check_error(load(&text), false)?;
        }

        #[test]
        fn mangled_config_files_load_or_fail_in_one_line(text in mangled_file()) {
            // Mangling can move a secret under another key, where showing it is fair.
            check_error(load(&text), true)?;
        }
    }
}
