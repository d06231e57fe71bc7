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
    assert_eq!(c.regions, ["iad", "ord", "sjc"]);
    assert_eq!(c.process_group, "app");
    assert_eq!(c.created_machine_count, "ceil(queue_depth / 10)");
    assert_eq!(c.started_machine_count, "ceil(queue_depth / 10)");
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
    c.initial_machine_state = "started".into();
    c.validate().unwrap();
}

#[test]
fn defaults_match_the_go_program() {
    let c = from_env(&[]).unwrap();
    assert_eq!(c.concurrency, 1);
    assert_eq!(c.interval, Duration::from_secs(15));
    assert_eq!(c.timeout, Duration::from_secs(30));
    assert_eq!(c.app_list_refresh_interval, Duration::from_secs(60));
    assert_eq!(c.process_group, "app");
    assert_eq!(c.initial_machine_state, "started");
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
    assert_eq!(c.regions, ["iad", "ord", "sjc"]);
    assert_eq!(c.process_group, "worker");
    assert_eq!(c.min_created_machine_count, "1");
    assert_eq!(c.max_created_machine_count, "5");
    assert_eq!(c.initial_machine_state, "stopped");
    assert_eq!(c.started_machine_count, "x");
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
    assert_eq!(c.regions, ["ord", "sjc"], "lists are replaced, not merged");
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
    assert_eq!(c.created_machine_count, "2");
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
        started_machine_count: "1".into(),
        initial_machine_state: "started".into(),
        ..Config::default()
    }
}

#[test]
fn every_go_validation_message() {
    let base = || Config {
        app_name: "myapp".into(),
        initial_machine_state: "started".into(),
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
                created_machine_count: "1".into(),
                min_created_machine_count: "1".into(),
                ..base()
            },
            "cannot define created machine count and min/max created machine count",
        ),
        (
            Config {
                min_created_machine_count: "1".into(),
                ..base()
            },
            "max created machine count required if min created machine count is defined",
        ),
        (
            Config {
                max_created_machine_count: "1".into(),
                ..base()
            },
            "min created machine count required if max created machine count is defined",
        ),
        (
            Config {
                started_machine_count: "1".into(),
                min_started_machine_count: "1".into(),
                ..base()
            },
            "cannot define started machine count and min/max started machine count",
        ),
        (
            Config {
                min_started_machine_count: "1".into(),
                ..base()
            },
            "max started machine count required if min started machine count is defined",
        ),
        (
            Config {
                max_started_machine_count: "1".into(),
                ..base()
            },
            "min started machine count required if max started machine count is defined",
        ),
        (
            Config {
                initial_machine_state: "running".into(),
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
    let c = Config {
        created_machine_count: "a".into(),
        min_started_machine_count: "b".into(),
        max_started_machine_count: "c".into(),
        ..Config::default()
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
