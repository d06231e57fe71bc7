//! A raw HTTP/1.1 client for the self-tests: one request per connection, nothing followed or
//! retried, so a dropped connection shows as "no answer" and a redirect as itself.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The `error` field of an API error body.
    pub(crate) fn error(&self) -> String {
        let v = self.json();
        v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field: {v}"))
            .to_string()
    }
}

/// A request to `base` (`http://host:port`) with the given headers and body (sent as is
/// when the headers say `Transfer-Encoding`); `Err` when the server closes the connection
/// without a complete answer, or after `timeout`.
pub(crate) fn send(
    base: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
    timeout: Duration,
) -> io::Result<Answer> {
    let host = base.trim_start_matches("http://");
    let mut conn = TcpStream::connect(host)?;
    conn.set_read_timeout(Some(timeout))?;
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let chunked = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"));
    if let Some(b) = body.filter(|_| !chunked) {
        head.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    conn.write_all(format!("{head}\r\n{}", body.unwrap_or("")).as_bytes())?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let closed = || io::Error::new(io::ErrorKind::UnexpectedEof, "closed without an answer");
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(closed)?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1)?.parse().ok())
        .ok_or_else(closed)?;
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body: body.to_string(),
    })
}

/// [`send`] without headers, panicking on a transport error.
pub(crate) fn call(base: &str, method: &str, target: &str, body: Option<&str>) -> Answer {
    send(base, method, target, &[], body, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{method} {target}: {e}"))
}
