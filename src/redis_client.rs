//! A Redis server shared by threads: what the `redis` collector and the leader election both
//! use. The `redis` crate's synchronous client (no async runtime), with TLS on rustls and the
//! bundled roots (or a private CA from `ca-data`).
//!
//! Idle connections are kept, one per caller running at the same time (so one per worker
//! thread), and dropped after any error. A command on a reused connection that fails on I/O
//! (the server restarted since) is sent once more on a new connection: every command sent
//! here is safe to repeat (reads, and lock scripts that compare before they change anything).
//!
//! Every error text is one line and never holds the URL's password: the URL is shown
//! without credentials, and the password is cut out of any text the client or server wrote.

use std::sync::Mutex;
use std::time::Instant;

use redis::{Client, Connection, ConnectionAddr, IntoConnectionInfo, RedisError, TlsCertificates};

use crate::collector::{SourceError, SourceErrorKind};
use crate::grpc;
use crate::http::{Deadline, Transport};
use crate::secret::Secret;

/// Idle connections kept; more callers at once still work, their connections are closed.
const MAX_IDLE: usize = 64;
/// Server messages are cut to this many characters.
const MAX_MESSAGE: usize = 300;

/// One Redis server (`redis://` or `rediss://`).
pub struct RedisServer {
    client: Client,
    /// `redis://host:port/db` for messages.
    shown: String,
    /// Cut out of every message (the crate's and the server's texts).
    password: Secret,
    idle: Mutex<Vec<Connection>>,
}

/// Why a command gave no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No answer within the deadline.
    Timeout,
    /// No connection, or it broke: the server may be down or restarting.
    Transport(Transport),
    /// The server refused the connection's login (`AUTH`) or database (`SELECT`).
    Login(String),
    /// The server answered a command with an error (`WRONGTYPE`, `NOPERM`…), or with
    /// something this client cannot read.
    Reply(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout => f.write_str("timed out"),
            Failure::Transport(t) => write!(f, "{t}"),
            Failure::Login(m) => write!(
                f,
                "login refused: {m} (check the user, password and database in the URL)"
            ),
            Failure::Reply(m) => f.write_str(m),
        }
    }
}

impl Failure {
    /// As a metric source's error; a timeout says how long was waited.
    pub fn into_source(self, source: String, started: Instant) -> SourceError {
        let kind = match self {
            Failure::Timeout => SourceErrorKind::Timeout(started.elapsed()),
            Failure::Transport(t) => SourceErrorKind::Transport(t),
            login @ Failure::Login(_) => SourceErrorKind::Answer(login.to_string()),
            Failure::Reply(m) => SourceErrorKind::Answer(m),
        };
        SourceError {
            source,
            kind,
            hint: String::new(),
        }
    }
}

/// Checks a `redis://` or `rediss://` URL without connecting; the error names what is wrong
/// but never shows the URL (the caller names the key).
pub fn check_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err("it must start with redis:// or rediss:// (TLS)".to_string());
    }
    if url.contains('#') {
        return Err(
            "a #fragment such as #insecure is not supported: certificates are always verified; \
             for a private CA set ca-data"
                .to_string(),
        );
    }
    url.into_connection_info().map(|_| ()).map_err(|_| {
        "it is not a valid Redis URL; write redis://[user:password@]host[:port][/db] \
         (percent-encode special characters in the password)"
            .to_string()
    })
}

impl RedisServer {
    /// A client for `url` (checked with [`check_url`]); `ca_data` (PEM) replaces the bundled
    /// roots for `rediss://`. Nothing is connected yet.
    pub fn new(url: &Secret, ca_data: &str) -> Result<RedisServer, String> {
        let raw = url.expose().trim();
        check_url(raw)?;
        let info = raw
            .into_connection_info()
            .map_err(|_| "not a valid Redis URL".to_string())?;
        let password = Secret::new(info.redis_settings().password().unwrap_or_default());
        let tls = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
        let shown = format!(
            "{}://{}/{}",
            if tls { "rediss" } else { "redis" },
            info.addr(),
            info.redis_settings().db()
        );
        // The crate's CLIENT SETINFO is one more command per connection, refused by ACL
        // users that may only count.
        let settings = info.redis_settings().clone().set_skip_set_lib_name();
        let info = info.set_redis_settings(settings);
        let client = if ca_data.trim().is_empty() {
            Client::open(info)
        } else {
            if !tls {
                return Err(
                    "ca-data is set but the URL is redis:// (no TLS); use rediss://".into(),
                );
            }
            grpc::pem_certificates(ca_data, "ca-data")?;
            Client::build_with_tls(
                info,
                TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca_data.as_bytes().to_vec()),
                },
            )
        }
        .map_err(|_| "cannot set up the Redis client (TLS settings)".to_string())?;
        Ok(RedisServer {
            client,
            shown,
            password,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// `redis://host:port/db`, without credentials.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Runs `f` on a connection within `deadline`: an idle one, else a new one. See the
    /// module docs for the one retry.
    pub fn with_connection<T>(
        &self,
        deadline: Deadline,
        f: impl Fn(&mut Connection) -> Result<T, RedisError>,
    ) -> Result<T, Failure> {
        let mut retried = false;
        loop {
            let (mut conn, reused) = match self.take_idle() {
                Some(c) => (c, true),
                None => (self.connect(deadline)?, false),
            };
            let left = deadline.remaining().ok_or(Failure::Timeout)?;
            let result = conn
                .set_read_timeout(Some(left))
                .and_then(|()| conn.set_write_timeout(Some(left)))
                .and_then(|()| f(&mut conn));
            match result {
                Ok(value) => {
                    self.put_idle(conn);
                    return Ok(value);
                }
                Err(e) if reused && !retried && is_broken(&e) && deadline.remaining().is_some() => {
                    log::debug!(redis = self.shown.as_str(), err:% = self.describe(&e);
                        "redis connection closed by the server; sending again on a new one");
                    retried = true;
                    // The other idle connections are as old: most likely closed as well.
                    self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
                }
                // A server error leaves the connection usable.
                Err(e)
                    if e.kind() != redis::ErrorKind::Io
                        && !e.is_timeout()
                        && e.code().is_some() =>
                {
                    self.put_idle(conn);
                    return Err(self.failure(&e));
                }
                Err(e) => return Err(self.failure(&e)),
            }
        }
    }

    fn connect(&self, deadline: Deadline) -> Result<Connection, Failure> {
        let left = deadline.remaining().ok_or(Failure::Timeout)?;
        self.client
            .get_connection_with_timeout(left)
            .map_err(|e| match self.failure(&e) {
                // AUTH and SELECT errors come while connecting.
                Failure::Reply(m) => Failure::Login(m),
                Failure::Transport(Transport::Broken(m)) => {
                    Failure::Transport(Transport::NotConnected(m))
                }
                other => other,
            })
    }

    fn take_idle(&self) -> Option<Connection> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    fn put_idle(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    /// Idle connections kept (for tests).
    #[cfg(test)]
    pub fn idle_connections(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn failure(&self, e: &RedisError) -> Failure {
        if e.is_timeout() {
            return Failure::Timeout;
        }
        let text = self.describe(e);
        if e.kind() == redis::ErrorKind::Io
            || e.is_connection_refusal()
            || e.is_connection_dropped()
        {
            if e.is_connection_refusal() {
                Failure::Transport(Transport::NotConnected(text))
            } else {
                Failure::Transport(Transport::Broken(text))
            }
        } else {
            Failure::Reply(text)
        }
    }

    /// The error's text on one line, cut, with the password taken out.
    pub fn describe(&self, e: &RedisError) -> String {
        // A server error as the server wrote it: `WRONGTYPE Operation against a key…`.
        let mut text = match (e.code(), e.detail()) {
            (Some(code), Some(detail)) => format!("{code} {detail}"),
            _ => e.to_string(),
        };
        if !self.password.is_empty() {
            text = text.replace(self.password.expose(), "<password>");
        }
        grpc::one_line(&text, MAX_MESSAGE)
    }
}

/// Whether `e` says the connection is gone (rather than the server refusing the command).
fn is_broken(e: &RedisError) -> bool {
    e.is_connection_dropped() || (e.kind() == redis::ErrorKind::Io && !e.is_timeout())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn urls_are_checked_and_shown_without_credentials() {
        assert!(check_url("redis://localhost:6379/0").is_ok());
        assert!(check_url("rediss://u:p@h:6380/2").is_ok());
        assert!(check_url("http://h:6379").unwrap_err().contains("redis://"));
        assert!(check_url("rediss://h/#insecure").is_err());
        let s = RedisServer::new(&Secret::new("redis://fas:s3cret@127.0.0.1:6390/3"), "").unwrap();
        assert_eq!(s.shown(), "redis://127.0.0.1:6390/3");
        let tls = RedisServer::new(&Secret::new("rediss://:pw@example.com"), "").unwrap();
        assert_eq!(tls.shown(), "rediss://example.com:6379/0");
        let err = RedisServer::new(&Secret::new("redis://:pw@h"), "-----BEGIN CERTIFICATE-----")
            .err()
            .unwrap();
        assert!(err.contains("rediss://"), "{err}");
    }

    #[test]
    fn the_password_never_reaches_a_message() {
        let s = RedisServer::new(&Secret::new("redis://fas:hunter2@127.0.0.1:1/0"), "").unwrap();
        let e = RedisError::from((
            redis::ErrorKind::AuthenticationFailed,
            "bad",
            "password hunter2\nrejected".to_string(),
        ));
        let text = s.describe(&e);
        assert!(!text.contains("hunter2") && !text.contains('\n'), "{text}");
    }

    #[test]
    fn a_server_that_is_down_is_a_transport_failure() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let s = RedisServer::new(&Secret::new(format!("redis://127.0.0.1:{port}")), "").unwrap();
        let got = s.with_connection(Deadline::after(Duration::from_secs(5)), |c| {
            redis::cmd("PING").query::<String>(c)
        });
        assert!(
            matches!(got, Err(Failure::Transport(Transport::NotConnected(_)))),
            "{got:?}"
        );
        assert_eq!(s.idle_connections(), 0);
    }
}
