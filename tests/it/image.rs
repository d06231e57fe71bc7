//! The image really built: the Dockerfile with the static binary, through buildah (no Docker
//! engine needed; `flysim::harness::Image`), inspected — user, entrypoint, command, exposed
//! port, size — and run: `version`, and `eval` against a real Prometheus on loopback, as the
//! image's unprivileged user. Needs root (buildah without subordinate ids); skipped otherwise.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use flysim::harness::{self, Image, TempDir};
use serde_json::json;

use crate::support::{queue_depth_env, queue_depth_prometheus, static_binary};

#[test]
fn the_image_builds_inspects_and_runs() {
    if !harness::is_root() {
        eprintln!("skipped: building and running the image with buildah needs root");
        return;
    }
    let binary = static_binary();
    let dockerfile = Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile");
    let image = Image::build(&dockerfile, &binary);

    let inspect = image.inspect();
    let config = &inspect["OCIv1"]["config"];
    assert_eq!(config["User"], "65534:65534", "{config}");
    assert_eq!(config["Entrypoint"], json!(["/fly-autoscaler"]), "{config}");
    assert_eq!(config["Cmd"], json!(["serve"]), "{config}");
    assert_eq!(config["ExposedPorts"], json!({"9090/tcp": {}}), "{config}");
    // One layer holding one file: the binary plus tar headers and the config.
    let binary_size = std::fs::metadata(&binary).unwrap().len();
    let size = image.size();
    assert!(
        (binary_size..binary_size + 64 * 1024).contains(&size),
        "image {size} bytes for a {binary_size}-byte binary"
    );

    let out = image.run(&["/fly-autoscaler", "version"], &[], &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.starts_with("fly-autoscaler "), "{}", out.stdout);

    let (_endpoint, prom) = queue_depth_prometheus(42.0);
    let url = prom.url();
    let env = queue_depth_env(&url, "queue_depth > 40 ? ceil(queue_depth / 10) : 1");
    let out = image.run(&["/fly-autoscaler", "eval"], &env, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let result: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(result["started"]["min"], 5, "{}", out.stdout);

    // It runs as 65534, not root: a config file only root may read is refused.
    let dir = TempDir::new("image-config");
    let secret = dir.write(
        "fas.yml",
        "app-name: my-app\nstarted-machine-count: \"1\"\n",
    );
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = image.run(
        &["/fly-autoscaler", "eval", "-config", "/fas.yml"],
        &[],
        &[(&secret, "/fas.yml")],
    );
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("cannot read: Permission denied"),
        "{}",
        out.stderr
    );
}
