//! A real Redis server (Debian's `redis-server`, 7.0) on a free loopback port, with an ACL
//! user and a password (the default user is off), plain or TLS-only with certificates from
//! [`Pki`]. Commands are sent with `redis-cli`, which speaks both. Dropping it stops it.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::pki::Pki;
use super::process::{TempDir, file_tail, find_tool, start_server, terminate, wait_until};

/// The ACL user the server is started with, and its password.
pub const REDIS_USER: &str = "fas";
pub const REDIS_PASSWORD: &str = "pw-9f3k2-secret";

/// See the module docs.
pub struct Redis {
    child: Option<Child>,
    port: u16,
    /// `Some` for a TLS-only server: the CA the server's certificate is signed by.
    ca: Option<PathBuf>,
    config: PathBuf,
    log: PathBuf,
    _dir: TempDir,
}

impl Redis {
    /// A plain-TCP server.
    pub fn start() -> Redis {
        Redis::launch(None)
    }

    /// A server that speaks TLS only, with `pki`'s `server` certificate (127.0.0.1 and
    /// localhost, signed by its `ca`).
    pub fn start_tls(pki: &Pki) -> Redis {
        Redis::launch(Some(pki))
    }

    fn launch(pki: Option<&Pki>) -> Redis {
        let bin = find_tool("REDIS_SERVER_BIN", "redis-server");
        let dir = TempDir::new("redis");
        let log = dir.path().join("redis.log");
        let config = dir.path().join("redis.conf");
        let tls = pki.map(|p| (p.path("server.pem"), p.path("server.key"), p.path("ca.pem")));
        let write_config = |port: u16| {
            let listen = match &tls {
                None => format!("port {port}\n"),
                Some((cert, key, ca)) => format!(
                    "port 0\ntls-port {port}\ntls-cert-file {}\ntls-key-file {}\n\
                     tls-ca-cert-file {}\ntls-auth-clients no\n",
                    cert.display(),
                    key.display(),
                    ca.display()
                ),
            };
            let text = format!(
                "bind 127.0.0.1\n{listen}save \"\"\nappendonly no\ndir {}\n\
                 user default off\nuser {REDIS_USER} on >{REDIS_PASSWORD} ~* &* +@all\n",
                dir.path().display()
            );
            std::fs::write(&config, text).expect("write redis.conf");
        };
        let ca = tls.as_ref().map(|(_, _, ca)| ca.clone());
        let (child, ports) = start_server(
            &log,
            1,
            |ports| {
                write_config(ports[0]);
                let mut cmd = Command::new(&bin);
                cmd.arg(&config);
                cmd
            },
            |ports| ping(ports[0], ca.as_ref()),
        );
        Redis {
            child: Some(child),
            port: ports[0],
            ca,
            config,
            log,
            _dir: dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://fas:PASSWORD@127.0.0.1:PORT/0`, or `rediss://…@localhost:PORT/0` with TLS.
    pub fn url(&self) -> String {
        self.url_as(REDIS_USER, REDIS_PASSWORD)
    }

    /// The URL with other credentials.
    pub fn url_as(&self, user: &str, password: &str) -> String {
        match self.ca {
            None => format!("redis://{user}:{password}@127.0.0.1:{}/0", self.port),
            Some(_) => format!("rediss://{user}:{password}@localhost:{}/0", self.port),
        }
    }

    /// The CA's PEM for `ca-data` (TLS servers only).
    pub fn ca_pem(&self) -> String {
        let path = self.ca.as_ref().expect("a TLS server");
        std::fs::read_to_string(path).expect("read the CA")
    }

    /// Runs one command through `redis-cli`; its output, trimmed. Panics if it fails.
    pub fn cmd(&self, args: &[&str]) -> String {
        let out = cli(self.port, self.ca.as_ref(), args)
            .output()
            .expect("run redis-cli");
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success() && !text.starts_with("ERR") && !text.starts_with("WRONGTYPE"),
            "redis-cli {args:?}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    /// Stops the server (SIGTERM); its data is gone (no persistence).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(10));
        }
    }

    /// Starts it again on the same port, empty; waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        let bin = find_tool("REDIS_SERVER_BIN", "redis-server");
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .expect("open the redis log");
        let child = Command::new(bin)
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .expect("start redis-server again");
        self.child = Some(child);
        let up = wait_until(Duration::from_secs(30), || {
            ping(self.port, self.ca.as_ref())
        });
        assert!(up, "redis did not come back:\n{}", file_tail(&self.log, 20));
    }

    /// The server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        file_tail(&self.log, 30)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn cli(port: u16, ca: Option<&PathBuf>, args: &[&str]) -> Command {
    let mut cmd = Command::new(find_tool("REDIS_CLI_BIN", "redis-cli"));
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args([
            "--user",
            REDIS_USER,
            "--pass",
            REDIS_PASSWORD,
            "--no-auth-warning",
        ]);
    if let Some(ca) = ca {
        cmd.arg("--tls")
            .arg("--cacert")
            .arg(ca)
            .args(["--sni", "localhost"]);
    }
    cmd.args(args).stdin(Stdio::null());
    cmd
}

fn ping(port: u16, ca: Option<&PathBuf>) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
        && cli(port, ca, &["PING"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG")
}
