//! The autoscaler's container image, built from its Dockerfile without a daemon: Debian's
//! `buildah` with `vfs` storage and `chroot` isolation (what `make image` does when no Docker
//! engine answers), in a private storage directory removed on drop, so a build never touches
//! the machine's image store or another test's. Needs root: rootless buildah would need
//! subordinate user ids.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::process::{Output, TempDir, find_tool, run};

const TAG: &str = "localhost/fly-autoscaler-rs:test";
/// The working container every [`Image::run`] uses.
const CONTAINER: &str = "fly-autoscaler-rs-test";
/// A build of one static binary takes about a second; vfs copies it a few times.
const TIMEOUT: Duration = Duration::from_secs(120);

pub struct Image {
    buildah: PathBuf,
    /// `root` (images, containers) and `run` (locks, state) storage, removed on drop (vfs
    /// leaves no mounts behind: a layer is a plain directory).
    dir: TempDir,
}

impl Image {
    /// Builds `dockerfile` with `binary` as its `BINARY` build argument, in a context directory
    /// holding only that binary, and makes a working container of it. Panics with buildah's
    /// output when either fails.
    pub fn build(dockerfile: &Path, binary: &Path) -> Image {
        let image = Image {
            buildah: find_tool("BUILDAH_BIN", "buildah"),
            dir: TempDir::new("image"),
        };
        let context = image.dir.path().join("context");
        std::fs::create_dir(&context).expect("create the build context");
        std::fs::copy(binary, context.join("fly-autoscaler"))
            .unwrap_or_else(|e| panic!("copy {}: {e}", binary.display()));
        let dockerfile = dockerfile.to_str().expect("a UTF-8 path");
        let context = context.to_str().expect("a UTF-8 path");
        image.buildah_ok(&[
            "bud",
            "--isolation",
            "chroot",
            "--build-arg",
            "BINARY=fly-autoscaler",
            "--tag",
            TAG,
            "--file",
            dockerfile,
            context,
        ]);
        image.buildah_ok(&["from", "--name", CONTAINER, TAG]);
        image
    }

    /// `buildah inspect --type image`: `["OCIv1"]["config"]` holds `User`, `Entrypoint`,
    /// `Cmd` and `ExposedPorts`; `["Manifest"]` is the manifest as a JSON string.
    pub fn inspect(&self) -> Value {
        let out = self.buildah_ok(&["inspect", "--type", "image", TAG]);
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("buildah inspect: {e}\n{}", out.stdout))
    }

    /// Bytes of the image as stored: its layers (uncompressed tar) and config, as its
    /// manifest lists them.
    pub fn size(&self) -> u64 {
        let inspect = self.inspect();
        let manifest: Value = inspect["Manifest"]
            .as_str()
            .and_then(|m| serde_json::from_str(m).ok())
            .unwrap_or_else(|| panic!("no manifest in {inspect}"));
        manifest_bytes(&manifest)
    }

    /// Bytes a registry receives: the image pushed to an OCI layout (layers gzip-compressed,
    /// as a push to a registry sends them), its layers and config.
    pub fn pushed_size(&self) -> u64 {
        let layout = self.dir.path().join("oci");
        let target = format!("oci:{}", layout.display());
        self.buildah_ok(&["push", "--quiet", TAG, &target]);
        let read = |path: PathBuf| -> Value {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        let index = read(layout.join("index.json"));
        let digest = index["manifests"][0]["digest"].as_str().unwrap_or_default();
        let blob = digest
            .strip_prefix("sha256:")
            .expect("a sha256 manifest digest");
        manifest_bytes(&read(layout.join("blobs/sha256").join(blob)))
    }

    /// Runs `args` in the working container as the image's user, on the host's network (so
    /// loopback servers are reachable), with `env` and the read-only bind `mounts` (host
    /// path, path inside). Stderr also holds buildah's own lines when the command fails.
    pub fn run(&self, args: &[&str], env: &[(&str, &str)], mounts: &[(&Path, &str)]) -> Output {
        let mut argv: Vec<String> = ["run", "--isolation", "chroot"].map(String::from).to_vec();
        for (k, v) in env {
            argv.extend(["--env".to_string(), format!("{k}={v}")]);
        }
        for (host, inside) in mounts {
            argv.extend([
                "--volume".to_string(),
                format!("{}:{inside}:ro", host.display()),
            ]);
        }
        argv.extend([CONTAINER.to_string(), "--".to_string()]);
        argv.extend(args.iter().map(|a| a.to_string()));
        self.buildah(&argv.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn buildah(&self, args: &[&str]) -> Output {
        let root = self.dir.path().join("root");
        let runroot = self.dir.path().join("run");
        let mut argv = vec![
            "--root",
            root.to_str().expect("a UTF-8 path"),
            "--runroot",
            runroot.to_str().expect("a UTF-8 path"),
            "--storage-driver",
            "vfs",
        ];
        argv.extend_from_slice(args);
        run(&self.buildah, &argv, &[], TIMEOUT)
    }

    fn buildah_ok(&self, args: &[&str]) -> Output {
        let out = self.buildah(args);
        assert_eq!(
            out.code,
            Some(0),
            "buildah {}:\n{}{}",
            args.join(" "),
            out.stdout,
            out.stderr
        );
        out
    }
}

/// The layers' and the config's sizes listed in an image manifest.
fn manifest_bytes(manifest: &Value) -> u64 {
    let layers: u64 = manifest["layers"].as_array().map_or(0, |layers| {
        layers.iter().filter_map(|l| l["size"].as_u64()).sum()
    });
    layers + manifest["config"]["size"].as_u64().unwrap_or(0)
}
