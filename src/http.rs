//! What every HTTP client here shares: the `ureq` agent settings, deadlines derived from the
//! reconcile's remaining time, transport error classification, response reading and query
//! encoding.

use std::fmt;
use std::time::{Duration, Instant};

use ureq::Agent;
use ureq::tls::TlsConfig;

/// Buffered response bodies larger than this are refused (machine lists, the only large
/// bodies, are read as a stream and bounded by their number of machines).
const MAX_BODY: u64 = 16 * 1024 * 1024;

const USER_AGENT: &str = concat!("fly-autoscaler-rs/", env!("CARGO_PKG_VERSION"));

/// This process's instance id (leader election), once set.
static INSTANCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Makes every client made afterwards send `instance` in its User-Agent, so the Machines API's
/// request logs tell two autoscalers apart. The first call wins.
pub fn set_instance(instance: &str) {
    let _ = INSTANCE.set(instance.to_string());
}

/// `fly-autoscaler-rs/<version>`, with ` (instance <id>)` once [`set_instance`] was called.
pub fn user_agent() -> String {
    match INSTANCE.get() {
        Some(id) => format!("{USER_AGENT} (instance {id})"),
        None => USER_AGENT.to_string(),
    }
}

/// The moment by which a piece of work (one reconcile, one `eval`) must be done; every request
/// made for it gets the time left as its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline(Instant);

impl Deadline {
    pub fn after(d: Duration) -> Deadline {
        Deadline(Instant::now() + d)
    }

    /// Time left, or `None` once the deadline has passed.
    pub fn remaining(&self) -> Option<Duration> {
        self.0
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }
}

/// What a client does with a 3xx answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redirects {
    /// Returned as they are: the Machines and GraphQL APIs never redirect, so acting on
    /// another host's answer would be acting on someone else's data.
    Refuse,
    /// Followed (metric sources behind a proxy), never carrying `Authorization` along.
    FollowWithoutCredentials,
}

/// A new agent: status codes are returned, not turned into errors (their bodies carry the
/// API's message); server certificates are verified against bundled roots (no CA files needed
/// in a scratch image) unless `tls` says otherwise.
pub fn agent(tls: Option<TlsConfig>, redirects: Redirects) -> Agent {
    let max_redirects = match redirects {
        Redirects::Refuse => 0,
        Redirects::FollowWithoutCredentials => 5,
    };
    let mut config = Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(max_redirects)
        .redirect_auth_headers(ureq::config::RedirectAuthHeaders::Never)
        .user_agent(user_agent())
        .max_idle_connections_per_host(64)
        // ureq's 128 KiB per direction and pooled connection dominated memory with many
        // apps (a buffer is zeroed, so resident, as soon as its connection is used; 10,000
        // apps at concurrency 64 keep about 90 connections). Response headers must fit the
        // input buffer: 16 KiB, what proxies allow by default; these APIs send under 2 KiB.
        .input_buffer_size(16 * 1024)
        .output_buffer_size(16 * 1024)
        .timeout_connect(Some(Duration::from_secs(10)));
    if let Some(tls) = tls {
        config = config.tls_config(tls);
    }
    Agent::with_parts(
        config.build(),
        ureq::unversioned::transport::DefaultConnector::new(),
        crate::resolver::CachingResolver,
    )
}

/// Why a request produced no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// The request's time ran out.
    Timeout,
    /// No connection was made, so the server never saw the request (safe to retry anything).
    NotConnected(String),
    /// The connection broke after the request may have been sent.
    Broken(String),
    /// The answer's body is longer than this many bytes, more than any valid answer.
    TooLarge(u64),
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Timeout => f.write_str("timed out"),
            Transport::NotConnected(m) => write!(f, "cannot connect: {m}"),
            Transport::Broken(m) => write!(f, "connection failed: {m}"),
            Transport::TooLarge(limit) => write!(
                f,
                "the answer is larger than {} MiB, more than any valid answer; refused",
                limit / (1024 * 1024)
            ),
        }
    }
}

impl std::error::Error for Transport {}

impl From<ureq::Error> for Transport {
    fn from(e: ureq::Error) -> Transport {
        match e {
            ureq::Error::Timeout(_) => Transport::Timeout,
            ureq::Error::HostNotFound => Transport::NotConnected("host not found".to_string()),
            ureq::Error::ConnectionFailed => {
                Transport::NotConnected("connection failed".to_string())
            }
            ureq::Error::Io(io) => Transport::from_io(io),
            ureq::Error::BodyExceedsLimit(limit) => Transport::TooLarge(limit),
            ureq::Error::Tls(m) => Transport::NotConnected(format!("TLS: {m}")),
            ureq::Error::Rustls(e) => Transport::NotConnected(format!("TLS: {e}")),
            other => Transport::Broken(other.to_string()),
        }
    }
}

impl Transport {
    pub fn from_io(io: std::io::Error) -> Transport {
        use std::io::ErrorKind;
        // A body read through `Read` reports ureq's own errors (its timeout, its size limit)
        // as I/O errors.
        let io = match io.downcast::<ureq::Error>() {
            Ok(e) => return Transport::from(e),
            Err(io) => io,
        };
        match io.kind() {
            ErrorKind::ConnectionRefused | ErrorKind::AddrNotAvailable | ErrorKind::NotFound => {
                Transport::NotConnected(io.to_string())
            }
            ErrorKind::TimedOut | ErrorKind::WouldBlock => Transport::Timeout,
            // rustls handshake failures arrive as I/O errors: the request was never sent.
            _ if is_tls_failure(&io.to_string()) => {
                Transport::NotConnected(format!("TLS handshake failed: {io}"))
            }
            _ => Transport::Broken(io.to_string()),
        }
    }
}

fn is_tls_failure(message: &str) -> bool {
    ["certificate", "handshake", "received fatal alert", "tls"]
        .iter()
        .any(|m| message.to_ascii_lowercase().contains(m))
}

/// A response read in full.
#[derive(Debug, Default)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub retry_after: Option<String>,
    /// Where a 3xx answer points.
    pub location: Option<String>,
    pub body: String,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// A one-line excerpt of a body that is not the expected JSON (an HTML error page from a
    /// proxy, say): its `<title>` if it has one, else its first 120 characters.
    pub fn excerpt(&self) -> String {
        let body = self.body.trim();
        let lower = body.to_ascii_lowercase();
        let text = match (lower.find("<title>"), lower.find("</title>")) {
            (Some(a), Some(b)) if b > a => &body[a + 7..b],
            _ => body,
        };
        let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if one_line.is_empty() {
            return "empty body".to_string();
        }
        let mut cut: String = one_line.chars().take(120).collect();
        if cut.len() < one_line.len() {
            cut.push('…');
        }
        format!("{:?}", cut)
    }

    /// `Location` for messages: quoted, so it stays one line whatever it holds.
    pub fn shown_location(&self) -> String {
        format!("{:?}", self.location.as_deref().unwrap_or(""))
    }
}

/// Sends a request (built by `send` with the time left as its timeout) and reads the reply.
pub fn exchange(
    deadline: Deadline,
    send: impl FnOnce(Duration) -> Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<Reply, Transport> {
    read_reply(start(deadline, send)?)
}

/// Sends a request built by `send` with the time left as its timeout; the body is not read.
pub fn start(
    deadline: Deadline,
    send: impl FnOnce(Duration) -> Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<ureq::http::Response<ureq::Body>, Transport> {
    let remaining = deadline.remaining().ok_or(Transport::Timeout)?;
    Ok(send(remaining)?)
}

/// Reads a response's headers of interest and its body (up to the buffered-body limit).
pub fn read_reply(mut response: ureq::http::Response<ureq::Body>) -> Result<Reply, Transport> {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header("content-type").unwrap_or_default();
    let retry_after = header("retry-after");
    let location = header("location");
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_string()
        .map_err(Transport::from)?;
    Ok(Reply {
        status,
        content_type,
        retry_after,
        location,
        body,
    })
}

/// Percent-encodes a query value or a path segment: all but the unreserved characters, so
/// an outside name (a machine id with `/`, `?` or a newline) stays one segment.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A URL for messages: user and password are removed.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let host_part = &url[at + 1..];
            if url[scheme_end + 3..at].contains('/') {
                url.to_string()
            } else {
                format!("{}://{}", &url[..scheme_end], host_part)
            }
        }
        _ => url.to_string(),
    }
}

/// A random number in `[0, bound)`, for retry jitter; std's hasher keys are random per
/// process, which is all jitter needs.
pub fn jitter(bound: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    let nanos = bound.as_nanos().max(1) as u64;
    Duration::from_nanos(h.finish() % nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials_in_urls() {
        assert_eq!(
            redact_url("https://user:pw@prom.example/api"),
            "https://prom.example/api"
        );
        assert_eq!(
            redact_url("https://prom.example/a@b"),
            "https://prom.example/a@b"
        );
        assert_eq!(redact_url("http://h:1"), "http://h:1");
    }

    #[test]
    fn excerpt_prefers_the_html_title() {
        let r = Reply {
            status: 502,
            content_type: "text/html".into(),
            body: "<html><head><title>502 Bad\n Gateway</title></head><body>x</body></html>".into(),
            ..Reply::default()
        };
        assert_eq!(r.excerpt(), "\"502 Bad Gateway\"");
        let long = Reply {
            body: "x".repeat(500),
            ..r
        };
        assert!(long.excerpt().chars().count() < 130);
    }

    #[test]
    fn query_values_and_path_segments_are_percent_encoded() {
        assert_eq!(percent_encode("my-org_1.x~"), "my-org_1.x~");
        assert_eq!(percent_encode("a b&c=\"d\""), "a%20b%26c%3D%22d%22");
        assert_eq!(percent_encode("../x?k=1\n"), "..%2Fx%3Fk%3D1%0A");
    }

    #[test]
    fn a_timeout_while_reading_a_body_is_a_timeout() {
        let through_read = std::io::Error::other(ureq::Error::Timeout(ureq::Timeout::Global));
        assert_eq!(Transport::from_io(through_read), Transport::Timeout);
    }

    #[test]
    fn an_answer_over_the_limit_is_named_as_such() {
        let through_read = std::io::Error::other(ureq::Error::BodyExceedsLimit(16 << 20));
        for t in [
            Transport::from(ureq::Error::BodyExceedsLimit(16 << 20)),
            Transport::from_io(through_read),
        ] {
            assert_eq!(t, Transport::TooLarge(16 << 20));
            assert_eq!(
                t.to_string(),
                "the answer is larger than 16 MiB, more than any valid answer; refused"
            );
        }
    }

    #[test]
    fn deadline_in_the_past_has_nothing_left() {
        let d = Deadline::after(Duration::ZERO);
        assert_eq!(d.remaining(), None);
        assert!(
            Deadline::after(Duration::from_secs(5))
                .remaining()
                .is_some()
        );
        assert!(jitter(Duration::from_millis(10)) < Duration::from_millis(10));
    }
}
