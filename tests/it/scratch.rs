//! The `FROM scratch` story without Docker: the static musl binary, alone in an empty
//! directory, run under `chroot` (no libc, no CA files, no /etc, no /proc), does `version`,
//! `eval` against a local Prometheus and `serve --once` against the Machines API simulator.

use std::process::Command;
use std::time::Duration;

use flysim::harness::{self, Output, PromStub, TempDir, autoscaler_env, with};
use flysim::{MachineSpec, Simulator};

use crate::support::{queue_depth_env, queue_depth_prometheus, static_binary};

/// An empty directory holding only the binary, as `/fly-autoscaler`.
struct Jail {
    dir: TempDir,
}

impl Jail {
    fn new() -> Jail {
        let dir = TempDir::new("scratch");
        std::fs::copy(static_binary(), dir.path().join("fly-autoscaler")).expect("copy binary");
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1, "nothing but the binary");
        Jail { dir }
    }

    /// Runs `/fly-autoscaler <args>` chrooted into the directory (as root, or as root of a
    /// new user namespace when the tests run unprivileged).
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let root = self.dir.path().to_str().unwrap();
        let mut argv: Vec<&str> = Vec::new();
        let is_root = harness::is_root();
        if !is_root {
            argv.extend(["--user", "--map-root-user", "chroot"]);
        }
        argv.extend([root, "/fly-autoscaler"]);
        argv.extend_from_slice(args);
        let program = if is_root { "chroot" } else { "unshare" };
        harness::run(program, &argv, env, Duration::from_secs(60))
    }
}

#[test]
fn the_binary_is_static() {
    let binary = static_binary();
    let file = Command::new("file")
        .arg(&binary)
        .output()
        .expect("file(1); run .ci/deps");
    let file = String::from_utf8_lossy(&file.stdout);
    assert!(
        file.contains("statically linked") || file.contains("static-pie linked"),
        "{file}"
    );
    let ldd = Command::new("ldd").arg(&binary).output().expect("ldd");
    let ldd =
        String::from_utf8_lossy(&ldd.stdout).to_string() + &String::from_utf8_lossy(&ldd.stderr);
    assert!(
        ldd.contains("statically linked") || ldd.contains("not a dynamic executable"),
        "{ldd}"
    );
}

#[test]
fn version_eval_and_serve_once_in_an_empty_root() {
    let jail = Jail::new();
    let out = jail.run(&["version"], &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.starts_with("fly-autoscaler "), "{}", out.stdout);

    let (_endpoint, prom) = queue_depth_prometheus(42.0);
    let url = prom.url();
    let out = jail.run(&["eval"], &queue_depth_env(&url, "ceil(queue_depth / 10)"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["started"]["min"], 5);

    let sim = Simulator::start();
    sim.add_app("my-org", "my-app");
    for _ in 0..3 {
        sim.add_machine("my-app", MachineSpec::new("stopped"));
    }
    let metric = PromStub::start(2.0);
    let base = autoscaler_env(&sim, &metric, "my-app");
    let env = with(&base, &[("FAS_STARTED_MACHINE_COUNT", "q")]);
    let out = jail.run(&["serve", "--once"], &env);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(sim.count("my-app", "started"), 2);
}
