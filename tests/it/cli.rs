//! The command line: commands, flags in Go and GNU spellings, exit codes, one-line errors.

use flysim::harness::{Output, TempDir};

use crate::support;

fn run(args: &[&str]) -> Output {
    support::run(args, &[])
}

#[test]
fn exit_codes_and_usage() {
    let out = run(&[]);
    assert_eq!(out.code, Some(2));
    assert_eq!(
        out.stderr,
        "ERROR: no command given; run 'fly-autoscaler help' to see the commands\n"
    );

    let out = run(&["foo"]);
    assert_eq!(out.code, Some(2));
    assert_eq!(
        out.stderr,
        "ERROR: fly-autoscaler foo: unknown command; run 'fly-autoscaler help' to see the commands\n"
    );

    for args in [&["help"][..], &["--help"], &["-h"]] {
        let out = run(args);
        assert_eq!(out.code, Some(0), "{args:?}");
        assert!(
            out.stdout.contains("The commands are:")
                && out.stdout.contains("\teval")
                && out.stdout.contains("\tbacktest"),
            "{args:?}"
        );
    }
    for (cmd, flag) in [
        ("eval", "-help"),
        ("eval", "--help"),
        ("serve", "-h"),
        ("serve", "--help"),
        ("backtest", "-help"),
    ] {
        let out = run(&[cmd, flag]);
        assert_eq!(out.code, Some(0));
        assert!(
            out.stdout
                .starts_with(&format!("Usage: fly-autoscaler {cmd} [arguments]")),
            "{}",
            out.stdout
        );
        assert!(out.stdout.contains("-config PATH"));
    }
    assert!(run(&["serve", "-help"]).stdout.contains("-once"));
}

#[test]
fn version() {
    let out = run(&["version", "ignored", "--args"]);
    assert_eq!(out.code, Some(0));
    assert!(out.stdout.starts_with("fly-autoscaler "), "{}", out.stdout);
    assert_eq!(out.stdout.lines().count(), 1);
}

#[test]
fn unknown_flags_and_arguments_are_usage_errors() {
    for (args, expected) in [
        (
            &["serve", "--bogus"][..],
            "ERROR: serve: invalid option '--bogus'; run 'fly-autoscaler serve -help'",
        ),
        (&["eval", "-x"], "ERROR: eval: invalid option '-x'"),
        (&["eval", "-once"], "ERROR: eval: invalid option '--once'"),
        (
            &["eval", "extra"],
            "ERROR: eval: unexpected argument \"extra\"",
        ),
        (
            &["eval", "-config"],
            "ERROR: eval: -config needs a file path",
        ),
    ] {
        let out = run(args);
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.starts_with(expected), "{args:?}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1);
    }
}

#[test]
fn config_flag_spellings() {
    let dir = TempDir::new("cli-config");
    let path = dir.write(
        "bad.yml",
        "app-name: x\nstarted-machine-count: \"1\"\nintervall: 15s\n",
    );
    let p = path.to_str().unwrap();
    let eq1 = format!("-config={p}");
    let eq2 = format!("--config={p}");
    for args in [
        vec!["eval", "-config", p],
        vec!["eval", "--config", p],
        vec!["eval", eq1.as_str()],
        vec!["eval", eq2.as_str()],
    ] {
        let out = run(&args);
        assert_eq!(out.code, Some(1), "{args:?}");
        assert_eq!(
            out.stderr,
            format!(
                "ERROR: config file {p:?}: unknown key \"intervall\" at line 3; did you mean \"interval\"?\n"
            ),
            "{args:?}"
        );
    }
}

#[test]
fn validation_errors_name_the_setting() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[],
            "ERROR: app name required: set app-name in the config file or FAS_APP_NAME\n",
        ),
        (
            &[("FAS_APP_NAME", "a")],
            "ERROR: must define either created machine count or started machine count: set started-machine-count",
        ),
        (
            &[
                ("FAS_APP_NAME", "a"),
                ("FAS_STARTED_MACHINE_COUNT", "1"),
                ("FAS_INITIAL_MACHINE_STATE", "on"),
            ],
            "ERROR: initial machine state must be either 'started' or 'stopped': initial-machine-state (FAS_INITIAL_MACHINE_STATE) is \"on\"",
        ),
        (
            &[
                ("FAS_APP_NAME", "a"),
                ("FAS_STARTED_MACHINE_COUNT", "1"),
                ("FAS_INTERVAL", "15"),
            ],
            "ERROR: cannot parse FAS_INTERVAL as duration: \"15\": missing unit",
        ),
        (
            &[
                ("FAS_APP_NAME", "a"),
                ("FAS_STARTED_MACHINE_COUNT", "queue_depth * 2"),
            ],
            "ERROR: started-machine-count: unknown variable \"queue_depth\": no metrics are collected",
        ),
        (
            &[
                ("FAS_APP_NAME", "a"),
                ("FAS_STARTED_MACHINE_COUNT", "x"),
                ("FAS_PROMETHEUS_ADDRESS", "http://p"),
                ("FAS_PROMETHEUS_METRIC_NAME", "x"),
            ],
            "ERROR: metric-collectors[0]: prometheus query required: set query (FAS_PROMETHEUS_QUERY)",
        ),
    ];
    for (env, expected) in cases {
        let out = support::run(&["eval"], env);
        assert_eq!(out.code, Some(1), "{env:?}");
        assert!(out.stderr.starts_with(expected), "{env:?}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    }
}

#[test]
fn serve_needs_a_token_and_an_org_for_wildcards() {
    let base = [
        ("FAS_APP_NAME", "my-app-*"),
        ("FAS_STARTED_MACHINE_COUNT", "1"),
    ];
    let out = support::run(&["serve", "--once"], &base);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr
            .starts_with("ERROR: organization required if app name uses a wildcard"),
        "{}",
        out.stderr
    );
    let out = support::run(
        &["serve", "--once"],
        &[
            ("FAS_APP_NAME", "my-app"),
            ("FAS_STARTED_MACHINE_COUNT", "1"),
        ],
    );
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr
            .starts_with("ERROR: cannot create fly client: api token required"),
        "{}",
        out.stderr
    );
}

#[test]
fn secrets_never_appear_in_errors() {
    let dir = TempDir::new("cli-secrets");
    let path = dir.write(
        "fas.yml",
        "app-name: a\nstarted-machine-count: \"x\"\napi-token: FlyV1 fm2_apisecret\nmetric-collectors:\n  - type: temporal\n    metric-name: x\n    address: localhost:7243\n    cert-data: \"-----BEGIN CERTIFICATE-----\\nnotbase64certsecret\\n-----END CERTIFICATE-----\\n\"\n    key-data: \"-----BEGIN EC PRIVATE KEY-----\\nkeysecret\\n-----END EC PRIVATE KEY-----\\n\"\n    api-key: apikeysecret\n",
    );
    for cmd in ["eval", "serve"] {
        let out = support::run(
            &[cmd, "-config", path.to_str().unwrap()],
            &[("RUST_LOG", "trace")],
        );
        assert_eq!(out.code, Some(1), "{}", out.stderr);
        for secret in ["apisecret", "certsecret", "keysecret", "apikeysecret"] {
            assert!(
                !out.stderr.contains(secret),
                "{cmd} leaked {secret}: {}",
                out.stderr
            );
            assert!(!out.stdout.contains(secret));
        }
    }
}

#[test]
fn go_style_single_dash_flags_with_a_working_config() {
    let dir = TempDir::new("cli-ok");
    let path = dir.write("fas.yml", "app-name: a\ncreated-machine-count: \"2.5\"\n");
    let out = support::run(&["eval", "-config", path.to_str().unwrap()], &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["created"]["min"], 3);
    assert_eq!(json["started"]["max"], serde_json::Value::Null);
}
