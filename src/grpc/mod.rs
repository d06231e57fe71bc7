//! A unary gRPC client without an async runtime: HTTP/2 over one blocking socket per call
//! (cleartext "prior knowledge" h2c, or TLS with ALPN `h2`), as the gRPC over HTTP/2
//! protocol (grpc/grpc `doc/PROTOCOL-HTTP2.md`) describes it.
//!
//! Only what a unary call needs: the connection preface and SETTINGS (with ACK), one stream
//! per call with HEADERS (+CONTINUATION) and length-prefixed DATA, WINDOW_UPDATE for what is
//! received and flow control for what is sent, PING ACK, RST_STREAM, GOAWAY, and the
//! `grpc-status`/`grpc-message` trailers (or a trailers-only answer). No compression, no
//! streaming, no server push. HPACK is `loona-hpack`'s; protobuf messages are written by hand
//! with [`proto`].
//!
//! A [`Channel`] keeps idle connections (one per caller running at the same time, so one
//! per worker thread) and makes a new one after an error or a GOAWAY. A call on a reused
//! connection that the server had closed meanwhile is sent again once on a new connection:
//! only for calls that are safe to repeat, which is all this client makes (reads).
//!
//! Limits, so that nothing is allocated in proportion to a number the server sent: frames up
//! to 16 KiB (the default SETTINGS_MAX_FRAME_SIZE, never raised), header blocks up to
//! 64 KiB, response messages up to 4 MiB (gRPC's default limit).

mod conn;
mod frame;
pub mod proto;
mod tls;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::http::Deadline;

pub use tls::{TlsFiles, certificates as pem_certificates};

/// Response messages larger than this are refused (gRPC's default receive limit).
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024;
/// Header blocks (HEADERS + CONTINUATION, compressed) and decoded header lists larger than
/// this are refused; also advertised as SETTINGS_MAX_HEADER_LIST_SIZE.
pub const MAX_HEADER_LIST: usize = 64 * 1024;
/// Idle connections kept per channel; more callers at once still work, their connections are
/// closed after the call.
const MAX_IDLE: usize = 64;
/// An idle connection older than this is closed instead of reused: servers drop idle
/// connections (gRPC keepalive), and a reused dead one costs a failed write and a retry.
const MAX_IDLE_AGE: Duration = Duration::from_secs(50);

/// gRPC status codes (grpc/grpc `doc/statuscodes.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    pub fn from_u32(n: u32) -> Option<Code> {
        use Code::*;
        Some(match n {
            0 => Ok,
            1 => Cancelled,
            2 => Unknown,
            3 => InvalidArgument,
            4 => DeadlineExceeded,
            5 => NotFound,
            6 => AlreadyExists,
            7 => PermissionDenied,
            8 => ResourceExhausted,
            9 => FailedPrecondition,
            10 => Aborted,
            11 => OutOfRange,
            12 => Unimplemented,
            13 => Internal,
            14 => Unavailable,
            15 => DataLoss,
            16 => Unauthenticated,
            _ => return None,
        })
    }

    /// The canonical upper-case name, as gRPC tools print it.
    pub fn name(self) -> &'static str {
        use Code::*;
        match self {
            Ok => "OK",
            Cancelled => "CANCELLED",
            Unknown => "UNKNOWN",
            InvalidArgument => "INVALID_ARGUMENT",
            DeadlineExceeded => "DEADLINE_EXCEEDED",
            NotFound => "NOT_FOUND",
            AlreadyExists => "ALREADY_EXISTS",
            PermissionDenied => "PERMISSION_DENIED",
            ResourceExhausted => "RESOURCE_EXHAUSTED",
            FailedPrecondition => "FAILED_PRECONDITION",
            Aborted => "ABORTED",
            OutOfRange => "OUT_OF_RANGE",
            Unimplemented => "UNIMPLEMENTED",
            Internal => "INTERNAL",
            Unavailable => "UNAVAILABLE",
            DataLoss => "DATA_LOSS",
            Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// The status a client reports for an HTTP status when the server sent no `grpc-status`
    /// (grpc/grpc `doc/http-grpc-status-mapping.md`).
    pub fn from_http(status: u16) -> Code {
        match status {
            400 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            429 | 502..=504 => Code::Unavailable,
            _ => Code::Unknown,
        }
    }
}

/// A failed call: the server's status, or one the client derived from what went wrong
/// (UNAVAILABLE for connection failures, DEADLINE_EXCEEDED when time ran out, INTERNAL for
/// protocol violations). `message` is one line of at most a few hundred characters, with the
/// server's text escaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub message: String,
}

impl Status {
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            f.write_str(self.code.name())
        } else {
            write!(f, "{}: {}", self.code.name(), self.message)
        }
    }
}

impl std::error::Error for Status {}

/// Where a channel connects: a host (name or IP literal) and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

impl Target {
    /// `host:port`, `[v6]:port`, or gRPC's `dns:///host:port`. The error says what is wrong
    /// with the value; the caller names the key.
    pub fn parse(address: &str) -> Result<Target, String> {
        let a = address.trim();
        let a = a.strip_prefix("dns:///").unwrap_or(a);
        if a.contains("://") || a.contains('/') {
            return Err(
                "expected host:port (gRPC) or an http:// or https:// URL (HTTP API)".into(),
            );
        }
        let (host, port) = if let Some(rest) = a.strip_prefix('[') {
            let (h, p) = rest
                .split_once(']')
                .ok_or("an IPv6 address needs its closing ']'")?;
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("{h:?} is not an IPv6 address"));
            }
            (
                h,
                p.strip_prefix(':').ok_or("a port is missing, e.g. :7233")?,
            )
        } else {
            let (h, p) = a
                .rsplit_once(':')
                .ok_or("a port is missing, e.g. temporal:7233")?;
            if h.contains(':') {
                return Err("write an IPv6 address in brackets, e.g. [::1]:7233".into());
            }
            (h, p)
        };
        if host.is_empty() {
            return Err("the host is missing, e.g. temporal:7233".into());
        }
        if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("the host contains spaces or control characters".into());
        }
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("port {port:?} is not a number from 1 to 65535"))?;
        Ok(Target {
            host: host.to_string(),
            port,
        })
    }

    /// `:authority` and the text shown in messages: `host:port`, `[v6]:port`.
    pub fn authority(&self) -> String {
        if self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv6()) {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// TLS of a channel: the rustls configuration and the name the server's certificate must
/// carry (the host of the address).
#[derive(Clone)]
pub struct Tls {
    config: Arc<rustls::ClientConfig>,
    server_name: rustls::pki_types::ServerName<'static>,
}

impl Tls {
    pub fn new(target: &Target, files: &TlsFiles) -> Result<Tls, String> {
        let server_name = rustls::pki_types::ServerName::try_from(target.host.clone())
            .map_err(|_| format!("{:?} is not a valid TLS server name", target.host))?;
        Ok(Tls {
            config: tls::client_config(files)?,
            server_name,
        })
    }
}

/// A connection to one server, shared by threads; see the module docs.
pub struct Channel {
    target: Target,
    authority: String,
    tls: Option<Tls>,
    user_agent: String,
    idle: Mutex<Vec<conn::Conn>>,
}

impl Channel {
    pub fn new(target: Target, tls: Option<Tls>, user_agent: &str) -> Channel {
        Channel {
            authority: target.authority(),
            target,
            tls,
            user_agent: user_agent.to_string(),
            idle: Mutex::new(Vec::new()),
        }
    }

    #[cfg(test)]
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Calls `path` (`/package.Service/Method`) with one request message and returns the one
    /// response message. `metadata` names must be lower case; an `authorization` value is
    /// sent "never indexed" so no HPACK table (ours, a proxy's) keeps it. The deadline is
    /// sent as `grpc-timeout` and bounds every connect, read and write.
    pub fn unary(
        &self,
        path: &str,
        metadata: &[(&str, &str)],
        message: &[u8],
        deadline: Deadline,
    ) -> Result<Vec<u8>, Status> {
        let request = conn::Request {
            path,
            authority: &self.authority,
            user_agent: &self.user_agent,
            metadata,
            message,
        };
        let mut retried = false;
        loop {
            let (mut c, reused) = match self.take_idle() {
                Some(c) => (c, true),
                None => (
                    conn::Conn::connect(&self.target, self.tls.as_ref(), deadline)?,
                    false,
                ),
            };
            let result = c.unary(&request, deadline, reused);
            if c.is_reusable() {
                self.put_idle(c);
            }
            match result {
                Ok(message) => return Ok(message),
                Err(failure) if failure.retry && !retried && deadline.remaining().is_some() => {
                    log::debug!(
                        "grpc {}: {}; sending the call again on a new connection",
                        self.authority,
                        failure.status
                    );
                    retried = true;
                    // The other idle connections are as old: most likely closed as well.
                    self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
                }
                Err(failure) => return Err(failure.status),
            }
        }
    }

    fn take_idle(&self) -> Option<conn::Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(c) = idle.pop() {
            if c.idle_since().elapsed() < MAX_IDLE_AGE {
                return Some(c);
            }
        }
        None
    }

    fn put_idle(&self, c: conn::Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(c);
        }
    }

    #[cfg(test)]
    /// Idle connections kept (for tests and the bench).
    pub fn idle_connections(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// `grpc-timeout`: at most 8 digits and a unit (microseconds up to 100 s, then milliseconds,
/// then seconds).
pub fn timeout_header(d: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let micros = d.as_micros().max(1);
    if micros <= MAX {
        format!("{micros}u")
    } else if d.as_millis() <= MAX {
        format!("{}m", d.as_millis())
    } else {
        format!("{}S", d.as_secs().min(MAX as u64))
    }
}

/// Text from a server made safe to show: `%XX` of `grpc-message` decoded, control
/// characters (newlines included) escaped, cut to `max` characters.
pub fn one_line(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in text.trim().chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push(' '),
            c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    out
}

/// `grpc-message` is percent-encoded UTF-8; bad escapes are kept as they are.
pub fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' && i + 2 < raw.len() {
            let hex = std::str::from_utf8(&raw[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(b) = hex {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How long since `since`, for messages: `1.0s`.
fn secs(since: Instant) -> String {
    format!("{:.1}s", since.elapsed().as_secs_f64())
}
