//! A faithful, stateful simulator of the Fly.io Machines REST API (plus the small part of the
//! Fly GraphQL API that fly-autoscaler uses), served over real HTTP on loopback.
//!
//! The wire format follows `/work/shared/reference/machines-api.md` (paths under `/v1`, query
//! parameters, `200` for create with `state: "created"`, `host_status`, `image_ref` objects,
//! `{"error": ...}` bodies, GraphQL `data`/`errors` envelopes, ...).
//!
//! This file depends only on `std` and `serde_json` so it can be compiled both as
//! `tests/support/simulator.rs` (inside every integration-test binary) and from
//! `examples/flysim.rs` via `#[path]`. The HTTP transport ([`HttpServer`]) is a small
//! std-only HTTP/1.1 server with one thread per connection (see the note above it for why it
//! is not `tiny_http`); `fake_http.rs` reuses it.
//!
//! # Modelling choices
//!
//! * **State changes are immediate.** The real platform boots and stops machines
//!   asynchronously (a create answers `state: "created"` and the machine becomes `started`
//!   a few seconds later; a destroy passes through `destroying`). The simulator applies every
//!   transition before it answers, so the very next list/get already shows the final state
//!   (`started`, `stopped`, `suspended`, destroyed machines gone from the default list). The
//!   only exception is the create *response* itself, which reports `state: "created"` like
//!   the real API (reference §3.3, gotcha G6) while the stored machine is already `started`
//!   (or the `skip_launch` end state, see [`Simulator::set_skip_launch_state`] and G7).
//! * **Invalid transitions** answer `412 Precondition Failed` with a gRPC-style
//!   `failed_precondition: ...` message, as the real API does:
//!   * start of a `started` machine → `failed_precondition: machine still active, refusing to
//!     start`; start of any other non-startable state (e.g. `destroying`) →
//!     `failed_precondition: unable to start machine from current state: '<state>'`.
//!     Source: 412 responses with exactly these bodies recorded from the live API in several
//!     public repositories found with the code search (e.g. logs quoted as
//!     `POST /machines/<id>/start failed with 412: {"error":"failed_precondition: machine still
//!     active, refusing to start"}` and `412 failed_precondition: unable to start machine from
//!     current state: 'created'`). The simulator still allows starting `created` machines
//!     (they are never "still booting" here, because transitions are immediate).
//!   * destroy of a machine that is not `stopped`, `suspended`, `created` or `failed` without
//!     `kill=true`/`force=true` → `412 {"error": "failed_precondition: unable to destroy
//!     machine, not currently stopped"}`. Source: that body is quoted verbatim from the live API
//!     in a code comment in `tailscale/tb` (found with the code search); older `superfly/docs`
//!     examples show the same message (without the prefix) with status `409`, and a third-party
//!     Fly mock notes "real flaps ... answers a bare DELETE with 412". `suspended` machines may
//!     be destroyed without force since flyctl PR #3771 ("we've made it so that they can be
//!     destroyed (without force-destroying) in the Machines API").
//!   * stop of a machine that is not `started` or `suspended`, and suspend of a machine that
//!     is not `started`, answer `412 failed_precondition: unable to stop/suspend machine from
//!     current state: '<state>'`. **No source was found for these two**; the message mirrors
//!     the start message. (Stopping a suspended machine is allowed: DOCS say it discards the
//!     snapshot.)
//! * Not found: unknown app → `404 {"error": "app not found"}`, unknown or destroyed machine →
//!   `404 {"error": "machine not found"}` (flyctl surfaces the latter text, flyctl PR #1177).
//! * Leases are not modelled (a `lease_ttl` on create only yields a `nonce` in the create
//!   response); machine names are not checked for uniqueness; regions are not validated.
//! * The optional token check ([`Simulator::set_token`]) applies to every endpoint. A REST
//!   request with a wrong/missing `Authorization` gets `401 {"error": "unauthorized"}`; a
//!   GraphQL request gets `200` with an `UNAUTHORIZED` GraphQL error (the GraphQL API reports
//!   errors in the body; the message is the one flyctl users see).

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------------------------
// Shared HTTP plumbing (also used by `fake_http.rs`)
// ---------------------------------------------------------------------------------------------
//
// A small HTTP/1.1 server on `std::net`, one thread per connection. It replaces `tiny_http`
// here for three reasons found while building this file:
// * `tiny_http` 0.12 hands accepted connections to an internal task pool whose "is a thread
//   idle?" check races with bursts of new connections: several connections get queued behind
//   4 busy threads (measured: 8 concurrent clients, `max_in_flight` 4), and a queued
//   connection waits until some keep-alive connection closes. Concurrency tests would lie.
// * It cannot close a connection without answering (dropping a request sends a 500), which the
//   `Drop` fault needs.
// * It writes headers and body separately, so without `TCP_NODELAY` every response larger
//   than its 1 KiB buffer costs ~40 ms (Nagle + delayed ACK).

/// One HTTP request as received by a test server.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path without the query string, e.g. `/v1/apps/my-app/machines`.
    pub path: String,
    /// Raw query string without the leading `?` (empty if none).
    pub query: String,
    /// Header names as sent by the client, in order.
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// When the request line was received.
    pub at: Instant,
}

impl RecordedRequest {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON, if it is valid JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }

    /// Decoded query parameters in order (`+` and `%XX` decoded).
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        parse_query(&self.query)
    }

    /// First decoded query parameter with this name.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_pairs()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

/// What a server handler wants done with a request.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Send this response (`Content-Length`, `Date` and, when closing, `Connection: close` are
    /// added; such headers given here are ignored).
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Close the connection without sending a single response byte.
    Drop,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Context handed to request handlers of an [`HttpServer`].
#[derive(Clone)]
pub struct ServerCtx {
    pub addr: SocketAddr,
    pub shutdown: Arc<AtomicBool>,
}

impl ServerCtx {
    /// Sleeps for `d` unless the server shuts down first. Returns `false` if interrupted.
    pub fn sleep(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        loop {
            if self.is_shutting_down() {
                return false;
            }
            let now = Instant::now();
            if now >= end {
                return true;
            }
            std::thread::sleep((end - now).min(Duration::from_millis(10)));
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }
}

/// Request handler of an [`HttpServer`]; runs on the connection's own thread.
pub type Handler = Arc<dyn Fn(&RecordedRequest, &ServerCtx) -> Outcome + Send + Sync>;

#[derive(Default)]
struct Registry {
    next_id: u64,
    /// Clones of the open connections, to shut them down on drop.
    streams: HashMap<u64, TcpStream>,
    threads: Vec<JoinHandle<()>>,
}

/// Largest accepted request head (request line + headers) and body.
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 16 * 1024 * 1024;

/// HTTP/1.1 server: an accept thread plus one thread per connection (keep-alive supported),
/// so concurrent requests are handled concurrently without any fixed limit.
pub struct HttpServer {
    ctx: ServerCtx,
    registry: Arc<Mutex<Registry>>,
    accept: Option<JoinHandle<()>>,
    /// On drop, threads still busy after this long are detached instead of joined.
    join_timeout: Duration,
}

impl HttpServer {
    pub fn start(addr: &str, join_timeout: Duration, handler: Handler) -> io::Result<HttpServer> {
        let listener = TcpListener::bind(addr)?;
        let local = listener.local_addr()?;
        let ctx = ServerCtx {
            addr: local,
            shutdown: Arc::new(AtomicBool::new(false)),
        };
        let registry = Arc::new(Mutex::new(Registry::default()));
        let accept = {
            let ctx = ctx.clone();
            let registry = Arc::clone(&registry);
            std::thread::Builder::new()
                .name(format!("http-accept-{}", local.port()))
                .spawn(move || accept_loop(listener, ctx, registry, handler))?
        };
        Ok(HttpServer {
            ctx,
            registry,
            accept: Some(accept),
            join_timeout,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.ctx.addr
    }

    /// `http://IP:PORT` (an unspecified bind address is shown as `127.0.0.1`).
    pub fn url(&self) -> String {
        format!("http://{}", connectable(self.ctx.addr))
    }
}

fn connectable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let ip = if addr.is_ipv4() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        };
        SocketAddr::new(ip, addr.port())
    } else {
        addr
    }
}

fn accept_loop(
    listener: TcpListener,
    ctx: ServerCtx,
    registry: Arc<Mutex<Registry>>,
    handler: Handler,
) {
    for conn in listener.incoming() {
        if ctx.is_shutting_down() {
            break;
        }
        let stream = match conn {
            Ok(s) => s,
            Err(_) => {
                // E.g. out of file descriptors: back off a little.
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let mut reg = lock(&registry);
        reg.threads.retain(|h| !h.is_finished());
        let id = reg.next_id;
        reg.next_id += 1;
        if let Ok(clone) = stream.try_clone() {
            reg.streams.insert(id, clone);
        }
        let (ctx2, reg2, handler2) = (ctx.clone(), Arc::clone(&registry), Arc::clone(&handler));
        let spawned = std::thread::Builder::new()
            .name(format!("http-conn-{}-{id}", ctx.addr.port()))
            .stack_size(512 * 1024)
            .spawn(move || {
                serve_connection(stream, &ctx2, &handler2);
                lock(&reg2).streams.remove(&id);
            });
        match spawned {
            Ok(h) => reg.threads.push(h),
            Err(_) => {
                reg.streams.remove(&id);
            }
        }
    }
}

fn join_until(handle: JoinHandle<()>, deadline: Instant) {
    while !handle.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    if handle.is_finished() {
        let _ = handle.join();
    }
    // Otherwise the thread is detached; it ends when its handler returns.
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.ctx.shutdown.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + self.join_timeout;
        // Wake the accept thread with a throwaway connection.
        let _ = TcpStream::connect_timeout(&connectable(self.ctx.addr), Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            join_until(h, deadline);
        }
        let (streams, threads) = {
            let mut reg = lock(&self.registry);
            (
                std::mem::take(&mut reg.streams),
                std::mem::take(&mut reg.threads),
            )
        };
        // Unblocks connection threads waiting for the next request on keep-alive connections.
        for s in streams.values() {
            let _ = s.shutdown(Shutdown::Both);
        }
        for h in threads {
            join_until(h, deadline);
        }
    }
}

enum ReadError {
    /// Connection closed or broken: just close.
    Io,
    /// Protocol error: answer `status` with a JSON error, then close.
    Bad(u16, &'static str),
}

struct Incoming {
    rec: RecordedRequest,
    keep_alive: bool,
}

fn serve_connection(stream: TcpStream, ctx: &ServerCtx, handler: &Handler) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    loop {
        if ctx.is_shutting_down() {
            break;
        }
        let incoming = match read_request(&mut reader, &mut writer) {
            Ok(Some(r)) => r,
            Ok(None) | Err(ReadError::Io) => break,
            Err(ReadError::Bad(status, msg)) => {
                let headers = [("Content-Type".to_string(), "application/json".to_string())];
                let body = json!({ "error": msg }).to_string();
                let _ = write_response(&mut writer, status, &headers, &body, true, false);
                break;
            }
        };
        let head_only = incoming.rec.method == "HEAD";
        match handler(&incoming.rec, ctx) {
            Outcome::Drop => break,
            Outcome::Respond {
                status,
                headers,
                body,
            } => {
                let close = !incoming.keep_alive || ctx.is_shutting_down();
                let written =
                    write_response(&mut writer, status, &headers, &body, close, head_only);
                if written.is_err() || close {
                    break;
                }
            }
        }
    }
    let _ = writer.shutdown(Shutdown::Both);
}

/// Reads one line (without CRLF), charging it to `budget`. `Ok(None)` on EOF before any byte.
fn read_line(
    reader: &mut BufReader<TcpStream>,
    budget: &mut usize,
) -> Result<Option<String>, ReadError> {
    let mut buf = Vec::new();
    let n = reader
        .by_ref()
        .take(*budget as u64 + 1)
        .read_until(b'\n', &mut buf)
        .map_err(|_| ReadError::Io)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(if n > *budget {
            ReadError::Bad(431, "request header fields too large")
        } else {
            ReadError::Io
        });
    }
    *budget = budget.saturating_sub(n);
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

fn read_request(
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
) -> Result<Option<Incoming>, ReadError> {
    let mut budget = MAX_HEAD;
    // RFC 9112 §2.2: ignore empty lines before the request line.
    let line = loop {
        match read_line(reader, &mut budget)? {
            None => return Ok(None),
            Some(l) if l.is_empty() => continue,
            Some(l) => break l,
        }
    };
    let at = Instant::now();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Bad(400, "malformed request line"));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) || target.is_empty() {
        return Err(ReadError::Bad(400, "malformed request line"));
    }
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(ReadError::Bad(505, "HTTP version not supported")),
    };
    let mut headers = Vec::new();
    loop {
        let Some(line) = read_line(reader, &mut budget)? else {
            return Err(ReadError::Io);
        };
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(ReadError::Bad(400, "malformed header line"));
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(ReadError::Bad(400, "malformed header line"));
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let connection = header("connection").map(|c| c.to_ascii_lowercase());
    let keep_alive = match connection {
        Some(c) if c.contains("close") => false,
        Some(c) if c.contains("keep-alive") => true,
        _ => !http10,
    };
    if header("expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue")) {
        writer
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .map_err(|_| ReadError::Io)?;
    }
    let chunked =
        header("transfer-encoding").is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        read_chunked(reader)?
    } else if let Some(len) = header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| ReadError::Bad(400, "invalid Content-Length"))?;
        if len > MAX_BODY {
            return Err(ReadError::Bad(413, "request body too large"));
        }
        let mut buf = vec![0; len];
        reader.read_exact(&mut buf).map_err(|_| ReadError::Io)?;
        buf
    } else {
        Vec::new()
    };
    // Absolute-form targets (`http://host/path`) are reduced to their path.
    let target = match target.split_once("://") {
        Some((_, rest)) if !target.starts_with('/') => match rest.find('/') {
            Some(i) => &rest[i..],
            None => "/",
        },
        _ => target,
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.to_string(), String::new()),
    };
    Ok(Some(Incoming {
        rec: RecordedRequest {
            method: method.to_string(),
            path,
            query,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            at,
        },
        keep_alive,
    }))
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    let mut budget = MAX_HEAD;
    loop {
        let Some(line) = read_line(reader, &mut budget)? else {
            return Err(ReadError::Io);
        };
        let size_str = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_str, 16)
            .map_err(|_| ReadError::Bad(400, "invalid chunk size"))?;
        if size == 0 {
            // Trailer section up to the final empty line.
            loop {
                match read_line(reader, &mut budget)? {
                    Some(l) if !l.is_empty() => continue,
                    Some(_) => return Ok(body),
                    None => return Err(ReadError::Io),
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Err(ReadError::Bad(413, "request body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader
            .read_exact(&mut body[start..])
            .map_err(|_| ReadError::Io)?;
        match read_line(reader, &mut budget)? {
            Some(l) if l.is_empty() => {}
            _ => return Err(ReadError::Bad(400, "malformed chunk")),
        }
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}

/// Writes a complete response in one `write_all` (no Nagle stalls).
fn write_response(
    w: &mut TcpStream,
    status: u16,
    headers: &[(String, String)],
    body: &str,
    close: bool,
    head_only: bool,
) -> io::Result<()> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    for (k, v) in headers {
        let reserved = ["content-length", "connection", "transfer-encoding", "date"]
            .iter()
            .any(|r| k.eq_ignore_ascii_case(r));
        if !reserved && !k.contains(['\r', '\n', ':']) && !v.contains(['\r', '\n']) {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    out.push_str(&format!("Date: {}\r\n", http_date(now_ms())));
    out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(body.as_bytes());
    }
    w.write_all(&bytes)?;
    w.flush()
}

/// Parses `a=1&b=x%20y` into decoded pairs (a key without `=` gets an empty value).
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(pair), String::new()),
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Public simulator API
// ---------------------------------------------------------------------------------------------

/// A canned failure injected in front of the simulator's normal handling.
#[derive(Debug, Clone)]
pub struct FaultRule {
    /// HTTP method to match (case-insensitive); `None` matches every method.
    pub method: Option<String>,
    /// Substring that must occur in the request target (path plus `?query`); `None` matches all.
    pub path_contains: Option<String>,
    /// The rule applies to at most this many matching requests.
    pub times: usize,
    pub fault: Fault,
}

impl FaultRule {
    pub fn new(
        method: Option<&str>,
        path_contains: Option<&str>,
        times: usize,
        fault: Fault,
    ) -> Self {
        FaultRule {
            method: method.map(str::to_string),
            path_contains: path_contains.map(str::to_string),
            times,
            fault,
        }
    }

    fn matches(&self, rq: &RecordedRequest) -> bool {
        if let Some(m) = &self.method {
            if !m.eq_ignore_ascii_case(&rq.method) {
                return false;
            }
        }
        if let Some(p) = &self.path_contains {
            let target = if rq.query.is_empty() {
                rq.path.clone()
            } else {
                format!("{}?{}", rq.path, rq.query)
            };
            if !target.contains(p.as_str()) {
                return false;
            }
        }
        true
    }
}

#[derive(Debug, Clone)]
pub enum Fault {
    /// Canned response. `Content-Type` is `application/json` when the body looks like JSON,
    /// `text/plain` otherwise; `retry_after` adds a `Retry-After` header.
    Status {
        code: u16,
        body: String,
        retry_after: Option<String>,
    },
    /// `200` with a truncated, invalid JSON body.
    MalformedJson,
    /// Sleep this long, then handle the request normally (state changes do happen).
    Hang(Duration),
    /// Close the connection without sending any response bytes.
    Drop,
}

impl Fault {
    pub fn status(code: u16, body: &str) -> Fault {
        Fault::Status {
            code,
            body: body.to_string(),
            retry_after: None,
        }
    }
}

/// A machine to seed into the simulator with [`Simulator::add_machine`].
#[derive(Debug, Clone)]
pub struct MachineSpec {
    pub state: String,
    pub region: String,
    pub process_group: Option<String>,
    pub host_status: Option<String>,
    /// Full image reference, parsed into `image_ref`.
    pub image: String,
    /// Replaces the whole config; `None` builds a realistic config like the fixtures with
    /// `metadata.fly_process_group = process_group` (omitted when `None`) and `image`.
    pub config: Option<Value>,
}

/// Digest-pinned image used by the fixtures.
pub const DEFAULT_IMAGE: &str = "registry.fly.io/my-app:deployment-01J8ZK0A7Q5X2N4W6R8T0Y1M3P@sha256:6a0e2dbc75177ccbbf7e46eacf0988c848879877e8f2f6df9300b0882ea433e3";

impl MachineSpec {
    /// Region `iad`, group `app`, `host_status: "ok"`, [`DEFAULT_IMAGE`].
    pub fn new(state: &str) -> Self {
        MachineSpec {
            state: state.to_string(),
            region: "iad".to_string(),
            process_group: Some("app".to_string()),
            host_status: Some("ok".to_string()),
            image: DEFAULT_IMAGE.to_string(),
            config: None,
        }
    }

    pub fn region(mut self, region: &str) -> Self {
        self.region = region.to_string();
        self
    }

    pub fn group(mut self, group: Option<&str>) -> Self {
        self.process_group = group.map(str::to_string);
        self
    }

    pub fn host_status(mut self, host_status: Option<&str>) -> Self {
        self.host_status = host_status.map(str::to_string);
        self
    }

    pub fn image(mut self, image: &str) -> Self {
        self.image = image.to_string();
        self
    }

    pub fn config(mut self, config: Value) -> Self {
        self.config = Some(config);
        self
    }
}

/// Snapshot of one machine.
#[derive(Debug, Clone, PartialEq)]
pub struct SimMachine {
    pub id: String,
    pub state: String,
    pub region: String,
    /// `metadata.fly_process_group`, else the legacy `metadata.process_group`, else `None`.
    pub process_group: Option<String>,
    /// The stored config (`Value::Null` if the machine has none).
    pub config: Value,
    /// Whether the machine was created through the API with `skip_launch: true`.
    pub skip_launch: bool,
}

/// The simulator. Dropping it stops the server and joins its threads.
pub struct Simulator {
    shared: Arc<Shared>,
    http: HttpServer,
}

impl Simulator {
    /// Starts on `127.0.0.1:0` (ephemeral port).
    pub fn start() -> Simulator {
        Simulator::start_on("127.0.0.1:0").expect("bind the Fly Machines API simulator")
    }

    /// Starts on the given address (e.g. `127.0.0.1:4280`).
    pub fn start_on(addr: &str) -> io::Result<Simulator> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            request_seq: AtomicUsize::new(0),
        });
        let s = Arc::clone(&shared);
        let handler: Handler = Arc::new(move |rq, ctx| s.handle(rq, ctx));
        let http = HttpServer::start(addr, Duration::from_secs(5), handler)?;
        Ok(Simulator { shared, http })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        self.http.url()
    }

    pub fn addr(&self) -> SocketAddr {
        self.http.addr()
    }

    /// `None` (default): accept any request. `Some(v)`: the `Authorization` header must equal
    /// `v` exactly, on every endpoint (GraphQL too unless [`Self::set_graphql_token`] is used).
    pub fn set_token(&self, expected_authorization_header: Option<&str>) {
        self.state().token = expected_authorization_header.map(str::to_string);
    }

    /// Overrides the expected `Authorization` header for `/graphql` only (fly-go's GraphQL
    /// header can differ from the Machines API one). `None` reverts to [`Self::set_token`].
    pub fn set_graphql_token(&self, expected_authorization_header: Option<&str>) {
        self.state().graphql_token = expected_authorization_header.map(str::to_string);
    }

    /// Adds an app to an organisation (the organisation is created on first use). The app's
    /// current release starts as `complete`.
    pub fn add_app(&self, org_slug: &str, app: &str) {
        self.state().ensure_app(org_slug, app);
    }

    /// Removes an app and all its machines; later requests for it get 404.
    pub fn remove_app(&self, app: &str) {
        self.state().apps.retain(|a| a.name != app);
    }

    /// Seeds a machine (the app is created in org `personal` if unknown). Returns its id:
    /// 14 lowercase hex chars, increasing in insertion order across the whole simulator.
    pub fn add_machine(&self, app: &str, spec: MachineSpec) -> String {
        let mut st = self.state();
        if st.app_index(app).is_none() {
            st.ensure_app("personal", app);
        }
        let config = spec.config.clone().unwrap_or_else(|| {
            default_config(&spec.image, spec.process_group.as_deref(), &spec.region)
        });
        let mut m = st.new_machine(&spec.region, None, Some(config), &spec.image);
        m.host_status = spec.host_status.clone();
        m.seed_events(&spec.state);
        m.state = spec.state.clone();
        let id = m.id.clone();
        if let Some(i) = st.app_index(app) {
            st.apps[i].machines.push(m);
        }
        id
    }

    /// Snapshot in API list order (insertion order), excluding destroyed machines.
    pub fn machines(&self, app: &str) -> Vec<SimMachine> {
        let st = self.state();
        let Some(i) = st.app_index(app) else {
            return Vec::new();
        };
        st.apps[i]
            .machines
            .iter()
            .filter(|m| m.state != "destroyed")
            .map(|m| SimMachine {
                id: m.id.clone(),
                state: m.state.clone(),
                region: m.region.clone(),
                process_group: m.config.as_ref().and_then(process_group_of),
                config: m.config.clone().unwrap_or(Value::Null),
                skip_launch: m.skip_launch,
            })
            .collect()
    }

    /// Exactly what `GET /v1/apps/{app}/machines/{id}` would return (`None` → 404).
    pub fn machine_json(&self, app: &str, id: &str) -> Option<Value> {
        let st = self.state();
        let i = st.app_index(app)?;
        st.apps[i]
            .machines
            .iter()
            .find(|m| m.id == id && m.state != "destroyed")
            .map(|m| m.to_json(false))
    }

    /// Sets a machine's state directly (e.g. to simulate an out-of-band stop). Returns whether
    /// the machine exists.
    pub fn set_machine_state(&self, app: &str, id: &str, state: &str) -> bool {
        self.with_machine(app, id, |m| m.transition(state, "flyd"))
    }

    /// Sets (or removes) a machine's `host_status`. Returns whether the machine exists.
    pub fn set_host_status(&self, app: &str, id: &str, host_status: Option<&str>) -> bool {
        self.with_machine(app, id, |m| m.host_status = host_status.map(str::to_string))
    }

    fn with_machine(&self, app: &str, id: &str, f: impl FnOnce(&mut Machine)) -> bool {
        let mut st = self.state();
        let Some(i) = st.app_index(app) else {
            return false;
        };
        match st.apps[i].machines.iter_mut().find(|m| m.id == id) {
            Some(m) => {
                f(m);
                true
            }
            None => false,
        }
    }

    /// Names of all apps, in insertion order.
    pub fn apps(&self) -> Vec<String> {
        self.state().apps.iter().map(|a| a.name.clone()).collect()
    }

    /// Every request received (GraphQL included), in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state().requests.clone()
    }

    /// Like [`Self::requests`], then clears the log.
    pub fn take_requests(&self) -> Vec<RecordedRequest> {
        std::mem::take(&mut self.state().requests)
    }

    /// Delay added before handling every request (faulted ones too).
    pub fn set_latency(&self, d: Duration) {
        self.state().latency = d;
    }

    /// Adds a fault rule; rules are checked in insertion order.
    pub fn inject(&self, rule: FaultRule) {
        self.state().faults.push(rule);
    }

    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    /// Requests currently being handled.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// Highest number of requests handled at the same time since start / the last reset.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn reset_max_in_flight(&self) {
        let now = self.in_flight();
        self.shared.max_in_flight.store(now, Ordering::SeqCst);
    }

    /// GraphQL current release status of an app; `None` = the app has no release (`null`).
    pub fn set_release_status(&self, app: &str, status: Option<&str>) {
        let mut st = self.state();
        if let Some(i) = st.app_index(app) {
            st.apps[i].release_status = status.map(str::to_string);
        }
    }

    /// State a machine created with `skip_launch: true` ends in: `"stopped"` (default,
    /// flyctl's view) or `"created"` (the docs' view). See gotcha G7.
    pub fn set_skip_launch_state(&self, state: &str) {
        self.state().skip_launch_state = state.to_string();
    }

    /// Token bucket per (action, id): capacity 3, refill 1/s (get machine: 10, 5/s); an
    /// empty bucket answers `429 {"error":"rate limit exceeded"}`. Off by default.
    pub fn set_rate_limit(&self, enabled: bool) {
        let mut st = self.state();
        st.rate_limit = enabled;
        st.buckets.clear();
    }

    /// Forces the page size of the GraphQL `apps(...)` query (default: its `first:` argument).
    pub fn set_graphql_apps_page_size(&self, size: Option<usize>) {
        self.state().apps_page_size = size;
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }
}

// ---------------------------------------------------------------------------------------------
// Internal state
// ---------------------------------------------------------------------------------------------

struct Shared {
    state: Mutex<State>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    request_seq: AtomicUsize,
}

struct Org {
    slug: String,
    id: String,
    numeric_id: u64,
    name: String,
}

struct App {
    id: String,
    name: String,
    org_slug: String,
    machines: Vec<Machine>,
    release_status: Option<String>,
    release_created_at: String,
}

struct Machine {
    id: String,
    name: String,
    state: String,
    region: String,
    instance_id: String,
    private_ip: String,
    created_at: String,
    updated_at: String,
    config: Option<Value>,
    image_ref: Value,
    host_status: Option<String>,
    /// Newest first, like the API.
    events: Vec<Value>,
    skip_launch: bool,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

struct State {
    token: Option<String>,
    graphql_token: Option<String>,
    orgs: Vec<Org>,
    apps: Vec<App>,
    requests: Vec<RecordedRequest>,
    latency: Duration,
    faults: Vec<FaultRule>,
    skip_launch_state: String,
    rate_limit: bool,
    buckets: HashMap<(String, String), Bucket>,
    apps_page_size: Option<usize>,
    counter: u64,
    machine_counter: u64,
    rng: u64,
}

impl State {
    fn new() -> State {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        State {
            token: None,
            graphql_token: None,
            orgs: Vec::new(),
            apps: Vec::new(),
            requests: Vec::new(),
            latency: Duration::ZERO,
            faults: Vec::new(),
            skip_launch_state: "stopped".to_string(),
            rate_limit: false,
            buckets: HashMap::new(),
            apps_page_size: None,
            counter: 0,
            machine_counter: 0,
            rng: seed | 1,
        }
    }

    fn next_counter(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn random(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn app_index(&self, app: &str) -> Option<usize> {
        self.apps.iter().position(|a| a.name == app)
    }

    fn org(&self, slug: &str) -> Option<&Org> {
        self.orgs.iter().find(|o| o.slug == slug)
    }

    fn ensure_app(&mut self, org_slug: &str, app: &str) {
        if self.org(org_slug).is_none() {
            let n = self.next_counter();
            let id = base36(fnv1a(org_slug.as_bytes(), n), 10);
            self.orgs.push(Org {
                slug: org_slug.to_string(),
                id,
                numeric_id: 100_000 + n,
                name: title_case(org_slug),
            });
        }
        if self.app_index(app).is_none() {
            let n = self.next_counter();
            let id = base36(fnv1a(app.as_bytes(), n), 16);
            self.apps.push(App {
                id,
                name: app.to_string(),
                org_slug: org_slug.to_string(),
                machines: Vec::new(),
                release_status: Some("complete".to_string()),
                release_created_at: rfc3339(now_ms()),
            });
        }
    }

    fn new_machine(
        &mut self,
        region: &str,
        name: Option<&str>,
        config: Option<Value>,
        image: &str,
    ) -> Machine {
        self.machine_counter += 1;
        let n = self.machine_counter;
        let r = self.random();
        let now = now_ms();
        let name = match name {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => {
                const ADJ: [&str; 8] = [
                    "frosty", "quiet", "bold", "late", "green", "old", "dark", "cold",
                ];
                const NOUN: [&str; 8] = [
                    "meadow", "river", "sun", "forest", "hill", "dust", "cloud", "wave",
                ];
                format!(
                    "{}-{}-{}",
                    ADJ[(r % 8) as usize],
                    NOUN[((r >> 8) % 8) as usize],
                    1000 + (r >> 16) % 9000
                )
            }
        };
        let r2 = self.random();
        Machine {
            id: format!("7814{n:010x}"),
            name,
            state: "created".to_string(),
            region: region.to_string(),
            instance_id: ulid(now, ((r as u128) << 64) | r2 as u128),
            private_ip: format!(
                "fdaa:9:1c2d:a7b:{:x}:{:x}:{:x}:2",
                0x100 + (n & 0xfff),
                (r >> 20) & 0xffff,
                (r >> 36) & 0xffff
            ),
            created_at: rfc3339(now),
            updated_at: rfc3339(now),
            config,
            image_ref: parse_image_ref(image),
            host_status: Some("ok".to_string()),
            events: Vec::new(),
            skip_launch: false,
        }
    }

    /// Takes one use of the first matching fault rule.
    fn take_fault(&mut self, rq: &RecordedRequest) -> Option<Fault> {
        let rule = self
            .faults
            .iter_mut()
            .find(|r| r.times > 0 && r.matches(rq))?;
        rule.times -= 1;
        Some(rule.fault.clone())
    }

    /// Consumes a rate-limit token; `false` when the bucket is empty.
    fn rate_ok(&mut self, action: &str, id: &str) -> bool {
        if !self.rate_limit {
            return true;
        }
        let (capacity, per_sec) = if action == "get" {
            (10.0, 5.0)
        } else {
            (3.0, 1.0)
        };
        let now = Instant::now();
        let b = self
            .buckets
            .entry((action.to_string(), id.to_string()))
            .or_insert(Bucket {
                tokens: capacity,
                last: now,
            });
        let elapsed = now.duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * per_sec).min(capacity);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Machine {
    fn push_event(&mut self, kind: &str, status: &str, source: &str) {
        let ts = now_ms();
        self.events.insert(
            0,
            json!({"type": kind, "status": status, "source": source, "timestamp": ts}),
        );
        self.events.truncate(10);
        self.updated_at = rfc3339(ts);
    }

    /// Events a machine seeded in `state` plausibly has.
    fn seed_events(&mut self, state: &str) {
        self.push_event("launch", "created", "user");
        match state {
            "started" => self.push_event("start", "started", "flyd"),
            "stopped" => {
                self.push_event("start", "started", "flyd");
                self.push_event("stop", "stopping", "user");
                self.push_event("exit", "stopped", "flyd");
            }
            "suspended" => {
                self.push_event("start", "started", "flyd");
                self.push_event("suspend", "suspending", "user");
                self.push_event("suspend", "suspended", "flyd");
            }
            "destroying" | "destroyed" => self.push_event("destroy", state, "user"),
            _ => {}
        }
    }

    /// Applies a transition immediately, recording the events the platform would emit.
    fn transition(&mut self, to: &str, source: &str) {
        match to {
            "started" => self.push_event("start", "started", "flyd"),
            "stopped" => {
                self.push_event("stop", "stopping", source);
                self.push_event("exit", "stopped", "flyd");
            }
            "suspended" => {
                self.push_event("suspend", "suspending", source);
                self.push_event("suspend", "suspended", "flyd");
            }
            "destroyed" => {
                self.push_event("destroy", "destroying", source);
                self.push_event("destroy", "destroyed", "flyd");
            }
            other => self.push_event("update", other, source),
        }
        self.state = to.to_string();
    }

    fn checks(&self) -> Option<Value> {
        if self.state != "started" && self.state != "stopped" {
            return None;
        }
        let services = self.config.as_ref()?.get("services")?.as_array()?;
        let mut out = Vec::new();
        for (i, svc) in services.iter().enumerate() {
            let Some(checks) = svc.get("checks").and_then(Value::as_array) else {
                continue;
            };
            let port = svc
                .get("internal_port")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            for c in checks {
                let kind = c.get("type").and_then(Value::as_str).unwrap_or("tcp");
                let (status, output) = if self.state == "started" {
                    ("passing", "Success")
                } else {
                    ("warning", "the machine hasn't started")
                };
                out.push(json!({
                    "name": format!("servicecheck-{i:02}-{kind}-{port}"),
                    "status": status,
                    "output": output,
                    "updated_at": self.updated_at,
                }));
            }
        }
        if out.is_empty() {
            None
        } else {
            Some(Value::Array(out))
        }
    }

    fn to_json(&self, summary: bool) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("name".into(), json!(self.name));
        m.insert("state".into(), json!(self.state));
        m.insert("region".into(), json!(self.region));
        m.insert("image_ref".into(), self.image_ref.clone());
        m.insert("instance_id".into(), json!(self.instance_id));
        m.insert("version".into(), json!(self.instance_id));
        m.insert("private_ip".into(), json!(self.private_ip));
        m.insert("created_at".into(), json!(self.created_at));
        m.insert("updated_at".into(), json!(self.updated_at));
        if !summary {
            let unreachable = self.host_status.as_deref() == Some("unreachable");
            match (&self.config, unreachable) {
                (Some(cfg), false) => {
                    m.insert("config".into(), cfg.clone());
                }
                (Some(cfg), true) => {
                    // Unreachable host: only a partial config rebuilt from other sources
                    // (reference §4.7, fixture machine 148e3d1c2f0b78).
                    let mut partial = Map::new();
                    for key in ["image", "metadata", "guest"] {
                        if let Some(v) = cfg.get(key) {
                            partial.insert(key.into(), v.clone());
                        }
                    }
                    m.insert("incomplete_config".into(), Value::Object(partial));
                }
                (None, _) => {}
            }
            if !unreachable {
                m.insert("events".into(), Value::Array(self.events.clone()));
                if let Some(checks) = self.checks() {
                    m.insert("checks".into(), checks);
                }
            }
            if let Some(h) = &self.host_status {
                m.insert("host_status".into(), json!(h));
            }
        }
        Value::Object(m)
    }
}

fn process_group_of(config: &Value) -> Option<String> {
    let md = config.get("metadata")?;
    for key in ["fly_process_group", "process_group"] {
        if let Some(g) = md.get(key).and_then(Value::as_str) {
            if !g.is_empty() {
                return Some(g.to_string());
            }
        }
    }
    None
}

/// A realistic machine config shaped like `fixtures/list-machines-response.json`.
pub fn default_config(image: &str, group: Option<&str>, region: &str) -> Value {
    let mut metadata = json!({
        "fly_flyctl_version": "0.3.10",
        "fly_platform_version": "v2",
        "fly_release_id": "Qz8rLmNoPqRsTuVwXyZ0aB1c",
        "fly_release_version": "42"
    });
    if let (Some(g), Some(obj)) = (group, metadata.as_object_mut()) {
        obj.insert("fly_process_group".into(), json!(g));
    }
    json!({
        "env": {"PRIMARY_REGION": region},
        "init": {},
        "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 512},
        "metadata": metadata,
        "services": [{
            "protocol": "tcp",
            "internal_port": 8080,
            "autostop": true,
            "autostart": true,
            "min_machines_running": 0,
            "ports": [
                {"port": 80, "handlers": ["http"], "force_https": true},
                {"port": 443, "handlers": ["tls", "http"]}
            ],
            "checks": [{
                "type": "http", "interval": "15s", "timeout": "2s", "grace_period": "5s",
                "method": "GET", "path": "/healthz", "protocol": "http"
            }],
            "concurrency": {"type": "requests", "hard_limit": 25, "soft_limit": 20},
            "force_instance_key": null
        }],
        "metrics": {"port": 9091, "path": "/metrics"},
        "image": image,
        "restart": {"policy": "on-failure", "max_retries": 10},
        "dns": {},
        "stop_config": {"timeout": "30s", "signal": "SIGINT"}
    })
}

/// Splits a full image reference into the API's `image_ref` object. A reference without a
/// digest gets a deterministic synthetic `sha256:` digest, as the platform always resolves one.
pub fn parse_image_ref(image: &str) -> Value {
    let (name_tag, digest) = match image.split_once('@') {
        Some((a, d)) => (a, Some(d.to_string())),
        None => (image, None),
    };
    let last_slash = name_tag.rfind('/');
    let (name, tag) = match name_tag.rfind(':') {
        Some(i) if last_slash.is_none_or(|s| i > s) => (&name_tag[..i], Some(&name_tag[i + 1..])),
        _ => (name_tag, None),
    };
    let (registry, repository) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_string(), rest.to_string())
        }
        Some(_) => ("registry-1.docker.io".to_string(), name.to_string()),
        None => (
            "registry-1.docker.io".to_string(),
            format!("library/{name}"),
        ),
    };
    let digest = digest.unwrap_or_else(|| {
        let mut hex = String::from("sha256:");
        for seed in 0..4u64 {
            hex.push_str(&format!("{:016x}", fnv1a(image.as_bytes(), seed)));
        }
        hex
    });
    let mut m = Map::new();
    m.insert("registry".into(), json!(registry));
    m.insert("repository".into(), json!(repository));
    if let Some(t) = tag {
        m.insert("tag".into(), json!(t));
    }
    m.insert("digest".into(), json!(digest));
    m.insert("labels".into(), json!({}));
    Value::Object(m)
}

// ---------------------------------------------------------------------------------------------
// Request handling
// ---------------------------------------------------------------------------------------------

struct Resp {
    status: u16,
    body: String,
    headers: Vec<(String, String)>,
}

/// A request body that must be a JSON object, or the API's 400 answer.
fn json_object(body: &str) -> Result<serde_json::Map<String, Value>, Resp> {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(_) => Err(Resp::error(
            400,
            "invalid_argument: request body must be a JSON object",
        )),
        Err(e) => Err(Resp::error(
            400,
            &format!("invalid_argument: invalid JSON body: {e}"),
        )),
    }
}

impl Resp {
    fn json(status: u16, v: &Value) -> Resp {
        Resp {
            status,
            body: v.to_string(),
            headers: vec![("Content-Type".into(), "application/json".into())],
        }
    }

    fn error(status: u16, msg: &str) -> Resp {
        Resp::json(status, &json!({ "error": msg }))
    }

    fn ok() -> Resp {
        Resp::json(200, &json!({"ok": true}))
    }
}

enum Route<'a> {
    ListApps,
    GetApp(&'a str),
    ListMachines(&'a str),
    CreateMachine(&'a str),
    GetMachine(&'a str, &'a str),
    UpdateMachine(&'a str, &'a str),
    DestroyMachine(&'a str, &'a str),
    Action(&'a str, &'a str, &'a str),
    Wait(&'a str, &'a str),
    GraphQl,
    MethodNotAllowed(&'static str),
    NotFound,
}

fn route<'a>(method: &str, path: &'a str) -> Route<'a> {
    let trimmed = path.trim_end_matches('/');
    let segs: Vec<&str> = trimmed.split('/').skip(1).collect();
    let m = method;
    match segs.as_slice() {
        ["graphql"] => match m {
            "POST" => Route::GraphQl,
            _ => Route::MethodNotAllowed("POST"),
        },
        ["v1", "apps"] => match m {
            "GET" => Route::ListApps,
            _ => Route::MethodNotAllowed("GET"),
        },
        ["v1", "apps", app] => match m {
            "GET" => Route::GetApp(app),
            _ => Route::MethodNotAllowed("GET"),
        },
        ["v1", "apps", app, "machines"] => match m {
            "GET" => Route::ListMachines(app),
            "POST" => Route::CreateMachine(app),
            _ => Route::MethodNotAllowed("GET, POST"),
        },
        ["v1", "apps", app, "machines", id] => match m {
            "GET" => Route::GetMachine(app, id),
            "POST" => Route::UpdateMachine(app, id),
            "DELETE" => Route::DestroyMachine(app, id),
            _ => Route::MethodNotAllowed("GET, POST, DELETE"),
        },
        [
            "v1",
            "apps",
            app,
            "machines",
            id,
            action @ ("start" | "stop" | "suspend"),
        ] => match m {
            "POST" => Route::Action(app, id, action),
            _ => Route::MethodNotAllowed("POST"),
        },
        ["v1", "apps", app, "machines", id, "wait"] => match m {
            "GET" => Route::Wait(app, id),
            _ => Route::MethodNotAllowed("GET"),
        },
        _ => Route::NotFound,
    }
}

/// Rate-limit bucket key of a route: per action, per machine id or app/org name.
fn rate_key(route: &Route<'_>, org: &str) -> Option<(&'static str, String)> {
    Some(match route {
        Route::ListApps => ("list_apps", org.to_string()),
        Route::GetApp(app) => ("get_app", app.to_string()),
        Route::ListMachines(app) => ("list", app.to_string()),
        Route::CreateMachine(app) => ("create", app.to_string()),
        Route::GetMachine(_, id) => ("get", id.to_string()),
        Route::UpdateMachine(_, id) => ("update", id.to_string()),
        Route::DestroyMachine(_, id) => ("destroy", id.to_string()),
        Route::Action(_, id, "start") => ("start", id.to_string()),
        Route::Action(_, id, "stop") => ("stop", id.to_string()),
        Route::Action(_, id, _) => ("suspend", id.to_string()),
        Route::Wait(_, id) => ("wait", id.to_string()),
        Route::GraphQl | Route::MethodNotAllowed(_) | Route::NotFound => return None,
    })
}

struct InFlight<'a>(&'a Shared);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shared {
    fn handle(&self, rec: &RecordedRequest, ctx: &ServerCtx) -> Outcome {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let _guard = InFlight(self);

        let latency = {
            let mut st = lock(&self.state);
            st.requests.push(rec.clone());
            st.latency
        };
        if !latency.is_zero() && !ctx.sleep(latency) {
            return Outcome::Drop;
        }
        let fault = lock(&self.state).take_fault(rec);
        match fault {
            Some(Fault::Status {
                code,
                body,
                retry_after,
            }) => {
                let trimmed = body.trim_start();
                let ct = if trimmed.starts_with('{') || trimmed.starts_with('[') {
                    "application/json"
                } else {
                    "text/plain; charset=utf-8"
                };
                let mut headers = vec![("Content-Type".to_string(), ct.to_string())];
                if let Some(ra) = retry_after {
                    headers.push(("Retry-After".to_string(), ra));
                }
                return Outcome::Respond {
                    status: code,
                    headers,
                    body,
                };
            }
            Some(Fault::MalformedJson) => {
                return Outcome::Respond {
                    status: 200,
                    headers: vec![("Content-Type".to_string(), "application/json".to_string())],
                    body: r#"{"id": "7814000000, "state": "star"#.to_string(),
                };
            }
            Some(Fault::Drop) => return Outcome::Drop,
            // Hang: sleep, then fall through to normal handling.
            Some(Fault::Hang(d)) if !ctx.sleep(d) => return Outcome::Drop,
            Some(Fault::Hang(_)) | None => {}
        }
        let mut resp = self.dispatch(rec, ctx);
        let seq = self.request_seq.fetch_add(1, Ordering::SeqCst);
        resp.headers.push((
            "fly-request-id".to_string(),
            format!("01sim{:011x}{seq:06x}", now_ms()),
        ));
        Outcome::Respond {
            status: resp.status,
            headers: resp.headers,
            body: resp.body,
        }
    }

    fn dispatch(&self, rq: &RecordedRequest, ctx: &ServerCtx) -> Resp {
        let route = route(&rq.method, &rq.path);
        let params = parse_query(&rq.query);
        let param = |name: &str| -> Option<&str> {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };

        // Authentication.
        {
            let st = lock(&self.state);
            let is_graphql = matches!(route, Route::GraphQl);
            let expected = if is_graphql {
                st.graphql_token.as_ref().or(st.token.as_ref())
            } else {
                st.token.as_ref()
            };
            if let Some(expected) = expected {
                if rq.header("authorization") != Some(expected.as_str()) {
                    return if is_graphql {
                        Resp::json(
                            200,
                            &json!({"data": null, "errors": [{
                                "message": "You must be authenticated to view this.",
                                "extensions": {"code": "UNAUTHORIZED"}
                            }]}),
                        )
                    } else {
                        Resp::error(401, "unauthorized")
                    };
                }
            }
        }

        // Rate limiting.
        if let Some((action, id)) = rate_key(&route, param("org_slug").unwrap_or("")) {
            if !lock(&self.state).rate_ok(action, &id) {
                return Resp::error(429, "rate limit exceeded");
            }
        }

        match route {
            Route::NotFound => Resp::error(404, "not found"),
            Route::MethodNotAllowed(allow) => {
                let mut r = Resp::error(405, "method not allowed");
                r.headers.push(("Allow".into(), allow.into()));
                r
            }
            Route::GraphQl => self.graphql(rq),
            Route::ListApps => self.list_apps(param("org_slug")),
            Route::GetApp(app) => self.get_app(app),
            Route::ListMachines(app) => self.list_machines(app, &params),
            Route::CreateMachine(app) => self.create_machine(app, &rq.body),
            Route::GetMachine(app, id) => self.get_machine(app, id),
            Route::UpdateMachine(app, id) => self.update_machine(app, id, &rq.body),
            Route::DestroyMachine(app, id) => {
                let mut force = false;
                for key in ["kill", "force"] {
                    if let Some(v) = param(key) {
                        match parse_go_bool(v) {
                            Some(b) => force |= b,
                            None => {
                                return Resp::error(
                                    400,
                                    &format!("invalid_argument: invalid value for {key}: {v:?}"),
                                );
                            }
                        }
                    }
                }
                self.destroy_machine(app, id, force)
            }
            Route::Action(app, id, "start") => self.start_machine(app, id),
            Route::Action(app, id, "stop") => self.stop_machine(app, id, &rq.body),
            Route::Action(app, id, _) => self.suspend_machine(app, id),
            Route::Wait(app, id) => self.wait_machine(app, id, &params, ctx),
        }
    }

    /// Runs `f` on a live (not destroyed) machine, or answers the right 404.
    fn with_machine(&self, app: &str, id: &str, f: impl FnOnce(&mut Machine) -> Resp) -> Resp {
        let mut st = lock(&self.state);
        let Some(i) = st.app_index(app) else {
            return Resp::error(404, "app not found");
        };
        match st.apps[i]
            .machines
            .iter_mut()
            .find(|m| m.id == id && m.state != "destroyed")
        {
            Some(m) => f(m),
            None => Resp::error(404, "machine not found"),
        }
    }

    fn list_apps(&self, org_slug: Option<&str>) -> Resp {
        let Some(slug) = org_slug.filter(|s| !s.is_empty()) else {
            return Resp::error(400, "invalid_argument: org_slug is required");
        };
        let st = lock(&self.state);
        if st.org(slug).is_none() {
            return Resp::error(404, "organization not found");
        }
        let apps: Vec<Value> = st
            .apps
            .iter()
            .filter(|a| a.org_slug == slug)
            .map(|a| {
                json!({
                    "id": a.id,
                    "name": a.name,
                    "machine_count": a.machines.iter().filter(|m| m.state != "destroyed").count(),
                    "volume_count": 0,
                    "network": "default",
                })
            })
            .collect();
        Resp::json(200, &json!({"total_apps": apps.len(), "apps": apps}))
    }

    fn get_app(&self, app: &str) -> Resp {
        let st = lock(&self.state);
        let Some(i) = st.app_index(app) else {
            return Resp::error(404, "app not found");
        };
        let a = &st.apps[i];
        let org_name = st
            .org(&a.org_slug)
            .map(|o| o.name.clone())
            .unwrap_or_default();
        Resp::json(
            200,
            &json!({
                "id": a.id,
                "name": a.name,
                "status": if a.release_status.is_some() { "deployed" } else { "pending" },
                "organization": {"name": org_name, "slug": a.org_slug},
            }),
        )
    }

    fn list_machines(&self, app: &str, params: &[(String, String)]) -> Resp {
        let mut include_deleted = false;
        let mut summary = false;
        let mut region: Option<&str> = None;
        let mut states: Option<Vec<&str>> = None;
        let mut metadata: Vec<(&str, &str)> = Vec::new();
        for (k, v) in params {
            match k.as_str() {
                "include_deleted" | "summary" => {
                    let Some(b) = parse_go_bool(v) else {
                        return Resp::error(
                            400,
                            &format!("invalid_argument: invalid value for {k}: {v:?}"),
                        );
                    };
                    if k == "summary" {
                        summary = b;
                    } else {
                        include_deleted = b;
                    }
                }
                "region" => region = Some(v.as_str()),
                "state" => {
                    let list: Vec<&str> = v
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .collect();
                    states = Some(list);
                }
                _ => {
                    if let Some(key) = k.strip_prefix("metadata.") {
                        metadata.push((key, v.as_str()));
                    }
                    // Anything else (e.g. fly-go's valueless `?started`) is ignored.
                }
            }
        }
        let st = lock(&self.state);
        let Some(i) = st.app_index(app) else {
            return Resp::error(404, "app not found");
        };
        let list: Vec<Value> = st.apps[i]
            .machines
            .iter()
            .filter(|m| include_deleted || m.state != "destroyed")
            .filter(|m| region.is_none_or(|r| m.region == r))
            .filter(|m| {
                states
                    .as_ref()
                    .is_none_or(|s| s.contains(&m.state.as_str()))
            })
            .filter(|m| {
                metadata.iter().all(|(k, v)| {
                    m.config
                        .as_ref()
                        .and_then(|c| c.get("metadata"))
                        .and_then(|md| md.get(*k))
                        .and_then(Value::as_str)
                        == Some(*v)
                })
            })
            .map(|m| m.to_json(summary))
            .collect();
        Resp::json(200, &Value::Array(list))
    }

    fn get_machine(&self, app: &str, id: &str) -> Resp {
        self.with_machine(app, id, |m| Resp::json(200, &m.to_json(false)))
    }

    fn create_machine(&self, app: &str, body: &str) -> Resp {
        let obj = match json_object(body) {
            Ok(obj) => obj,
            Err(resp) => return resp,
        };
        let config = match obj.get("config") {
            Some(c @ Value::Object(_)) => c.clone(),
            _ => {
                return Resp::error(
                    400,
                    "invalid_argument: config is required and must be an object",
                );
            }
        };
        let image = match config.get("image") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            _ => return Resp::error(400, "invalid_argument: config.image is required"),
        };
        let region = match obj.get("region") {
            None | Some(Value::Null) => "iad".to_string(),
            Some(Value::String(s)) if s.is_empty() => "iad".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Resp::error(400, "invalid_argument: region must be a string"),
        };
        let name = match obj.get("name") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Resp::error(400, "invalid_argument: name must be a string"),
        };
        let mut bools = [false; 2];
        for (slot, key) in ["skip_launch", "skip_service_registration"]
            .iter()
            .enumerate()
        {
            match obj.get(*key) {
                None | Some(Value::Null) => {}
                Some(Value::Bool(b)) => bools[slot] = *b,
                Some(_) => {
                    return Resp::error(400, &format!("invalid_argument: {key} must be a boolean"));
                }
            }
        }
        let skip_launch = bools[0];
        let lease = match obj.get("lease_ttl") {
            None | Some(Value::Null) => false,
            Some(v) if v.as_u64().is_some() => true,
            Some(_) => return Resp::error(400, "invalid_argument: lease_ttl must be an integer"),
        };

        let mut st = lock(&self.state);
        let Some(i) = st.app_index(app) else {
            return Resp::error(404, "app not found");
        };
        let mut m = st.new_machine(&region, name.as_deref(), Some(config), &image);
        m.skip_launch = skip_launch;
        m.push_event("launch", "created", "user");
        let mut response = m.to_json(false);
        if lease {
            let nonce = format!("{:016x}", st.random());
            if let Some(o) = response.as_object_mut() {
                o.insert("nonce".into(), json!(nonce));
            }
        }
        if skip_launch {
            let end = st.skip_launch_state.clone();
            if end != "created" {
                m.transition(&end, "user");
            }
        } else {
            m.transition("started", "flyd");
        }
        st.apps[i].machines.push(m);
        Resp::json(200, &response)
    }

    fn update_machine(&self, app: &str, id: &str, body: &str) -> Resp {
        let req = match json_object(body) {
            Ok(obj) => obj,
            Err(resp) => return resp,
        };
        let config = match req.get("config") {
            Some(c @ Value::Object(_)) => c.clone(),
            _ => {
                return Resp::error(
                    400,
                    "invalid_argument: config is required and must be an object",
                );
            }
        };
        let Some(image) = config
            .get("image")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return Resp::error(400, "invalid_argument: config.image is required");
        };
        let instance = {
            let mut st = lock(&self.state);
            let (a, b) = (st.random(), st.random());
            ulid(now_ms(), ((a as u128) << 64) | b as u128)
        };
        self.with_machine(app, id, |m| {
            m.config = Some(config);
            m.image_ref = parse_image_ref(&image);
            m.instance_id = instance;
            m.push_event("update", "replacing", "user");
            if m.state == "started" {
                m.push_event("start", "started", "flyd");
            }
            Resp::json(200, &m.to_json(false))
        })
    }

    fn start_machine(&self, app: &str, id: &str) -> Resp {
        self.with_machine(app, id, |m| match m.state.as_str() {
            "stopped" | "created" | "suspended" | "failed" => {
                let previous = m.state.clone();
                m.transition("started", "user");
                Resp::json(
                    200,
                    &json!({"previous_state": previous, "migrated": false, "new_host": ""}),
                )
            }
            "started" => Resp::error(
                412,
                "failed_precondition: machine still active, refusing to start",
            ),
            "replacing" => Resp::error(
                412,
                "failed_precondition: machine getting replaced, refusing to start",
            ),
            other => Resp::error(
                412,
                &format!(
                    "failed_precondition: unable to start machine from current state: '{other}'"
                ),
            ),
        })
    }

    fn stop_machine(&self, app: &str, id: &str, body: &str) -> Resp {
        if !body.trim().is_empty() {
            let obj = match json_object(body) {
                Ok(obj) => obj,
                Err(resp) => return resp,
            };
            for key in ["id", "signal"] {
                match obj.get(key) {
                    None | Some(Value::Null) | Some(Value::String(_)) => {}
                    Some(_) => {
                        return Resp::error(
                            400,
                            &format!("invalid_argument: {key} must be a string"),
                        );
                    }
                }
            }
            match obj.get("timeout") {
                None | Some(Value::Null) | Some(Value::Number(_)) => {}
                Some(Value::String(s)) if parse_go_duration(s).is_some() => {}
                Some(other) => {
                    return Resp::error(
                        400,
                        &format!("invalid_argument: invalid stop timeout: {other}"),
                    );
                }
            }
        }
        self.with_machine(app, id, |m| match m.state.as_str() {
            "started" | "suspended" => {
                m.transition("stopped", "user");
                Resp::ok()
            }
            other => Resp::error(
                412,
                &format!(
                    "failed_precondition: unable to stop machine from current state: '{other}'"
                ),
            ),
        })
    }

    fn suspend_machine(&self, app: &str, id: &str) -> Resp {
        self.with_machine(app, id, |m| match m.state.as_str() {
            "started" => {
                m.transition("suspended", "user");
                Resp::ok()
            }
            other => Resp::error(
                412,
                &format!(
                    "failed_precondition: unable to suspend machine from current state: '{other}'"
                ),
            ),
        })
    }

    fn destroy_machine(&self, app: &str, id: &str, force: bool) -> Resp {
        self.with_machine(app, id, |m| {
            let destroyable = matches!(
                m.state.as_str(),
                "stopped" | "suspended" | "created" | "failed"
            );
            if !force && !destroyable {
                return Resp::error(
                    412,
                    "failed_precondition: unable to destroy machine, not currently stopped",
                );
            }
            m.transition("destroyed", "user");
            Resp::ok()
        })
    }

    fn wait_machine(
        &self,
        app: &str,
        id: &str,
        params: &[(String, String)],
        ctx: &ServerCtx,
    ) -> Resp {
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let want = get("state").unwrap_or("started");
        if !matches!(want, "started" | "stopped" | "suspended" | "destroyed") {
            return Resp::error(400, &format!("invalid_argument: invalid state {want:?}"));
        }
        let timeout = match get("timeout") {
            None => 60,
            Some(t) => match t.parse::<u64>() {
                Ok(n) => n.clamp(1, 60),
                Err(_) => {
                    return Resp::error(400, &format!("invalid_argument: invalid timeout {t:?}"));
                }
            },
        };
        let deadline = Instant::now() + Duration::from_secs(timeout);
        loop {
            let current = {
                let st = lock(&self.state);
                let Some(i) = st.app_index(app) else {
                    return Resp::error(404, "app not found");
                };
                match st.apps[i].machines.iter().find(|m| m.id == id) {
                    Some(m) => m.state.clone(),
                    None => return Resp::error(404, "machine not found"),
                }
            };
            if current == want {
                return Resp::ok();
            }
            if current == "destroyed" {
                return Resp::error(404, "machine not found");
            }
            if Instant::now() >= deadline || !ctx.sleep(Duration::from_millis(10)) {
                return Resp::error(
                    408,
                    &format!(
                        "deadline_exceeded: machine failed to reach desired state, {want}, currently {current}"
                    ),
                );
            }
        }
    }

    // ----- GraphQL --------------------------------------------------------------------------

    fn graphql(&self, rq: &RecordedRequest) -> Resp {
        let req: Value = match serde_json::from_str(&rq.body) {
            Ok(v) => v,
            Err(e) => {
                return Resp::json(
                    400,
                    &json!({"errors": [{"message": format!("invalid JSON body: {e}")}]}),
                );
            }
        };
        let Some(query) = req.get("query").and_then(Value::as_str) else {
            return Resp::json(
                400,
                &json!({"errors": [{"message": "No query string was present"}]}),
            );
        };
        let vars = req.get("variables").cloned().unwrap_or(Value::Null);
        let compact: String = query.chars().filter(|c| !c.is_whitespace()).collect();
        let var = |names: &[&str]| -> Option<String> {
            names
                .iter()
                .find_map(|n| vars.get(*n).and_then(Value::as_str).map(str::to_string))
        };

        if compact.contains("currentReleaseUnprocessed") {
            let key = alias_of(&compact, "currentReleaseUnprocessed");
            let app = var(&["appName", "name", "app"]).unwrap_or_default();
            let st = lock(&self.state);
            let Some(i) = st.app_index(&app) else {
                return gql_not_found("app", "Could not find App");
            };
            let a = &st.apps[i];
            let release = match &a.release_status {
                None => Value::Null,
                Some(status) => {
                    let image = a
                        .machines
                        .iter()
                        .find_map(|m| {
                            m.config
                                .as_ref()?
                                .get("image")?
                                .as_str()
                                .map(str::to_string)
                        })
                        .unwrap_or_else(|| DEFAULT_IMAGE.to_string());
                    json!({
                        "id": "Qz8rLmNoPqRsTuVwXyZ0aB1c",
                        "version": 42,
                        "description": format!("Deploy image {image}"),
                        "reason": "deploy",
                        "status": status,
                        "imageRef": image,
                        "stable": status == "complete",
                        "user": {"id": "Dq1wE2rT3yU4", "email": "ops@example.com", "name": "Ops Bot"},
                        "createdAt": a.release_created_at,
                    })
                }
            };
            let mut app_obj = Map::new();
            app_obj.insert(key, release);
            return Resp::json(200, &json!({"data": {"app": Value::Object(app_obj)}}));
        }

        if compact.contains("apps(") {
            let st = lock(&self.state);
            let org_filter = var(&["org", "organizationId"]).filter(|s| !s.is_empty());
            let slug_filter = match &org_filter {
                Some(id) => match st.orgs.iter().find(|o| &o.id == id) {
                    Some(o) => Some(o.slug.clone()),
                    None => return gql_not_found("apps", "Could not find Organization"),
                },
                None => None,
            };
            let all: Vec<&App> = st
                .apps
                .iter()
                .filter(|a| slug_filter.as_ref().is_none_or(|s| &a.org_slug == s))
                .collect();
            let start = match var(&["after"]).filter(|s| !s.is_empty()) {
                None => 0,
                Some(c) => match base64_decode(&c).and_then(|s| s.parse::<usize>().ok()) {
                    Some(n) => n,
                    None => {
                        return Resp::json(
                            200,
                            &json!({"data": null, "errors": [{
                                "message": "Invalid cursor", "extensions": {"code": "INVALID"}
                            }]}),
                        );
                    }
                },
            };
            let page = st
                .apps_page_size
                .or_else(|| first_arg(&compact))
                .unwrap_or(200)
                .max(1);
            let end = (start + page).min(all.len());
            let nodes: Vec<Value> = all
                .get(start.min(all.len())..end)
                .unwrap_or(&[])
                .iter()
                .map(|a| {
                    let org_name = st.org(&a.org_slug).map(|o| o.name.clone()).unwrap_or_default();
                    let release = match &a.release_status {
                        Some(s) => json!({"createdAt": a.release_created_at, "status": s}),
                        None => Value::Null,
                    };
                    json!({
                        "id": a.name,
                        "name": a.name,
                        "deployed": a.release_status.is_some(),
                        "hostname": format!("{}.fly.dev", a.name),
                        "platformVersion": if a.release_status.is_some() { json!("machines") } else { Value::Null },
                        "organization": {"slug": a.org_slug, "name": org_name},
                        "currentRelease": release,
                        "status": if a.release_status.is_some() { "deployed" } else { "pending" },
                    })
                })
                .collect();
            return Resp::json(
                200,
                &json!({"data": {"apps": {
                    "pageInfo": {"hasNextPage": end < all.len(), "endCursor": base64_encode(&end.to_string())},
                    "nodes": nodes,
                }}}),
            );
        }

        if compact.contains("organization(") {
            let slug = var(&["slug", "orgSlug"]).unwrap_or_default();
            let st = lock(&self.state);
            let Some(o) = st.org(&slug) else {
                return gql_not_found("organization", "Could not find Organization");
            };
            return Resp::json(
                200,
                &json!({"data": {"organization": {
                    "id": o.id,
                    "internalNumericId": o.numeric_id.to_string(),
                    "slug": o.slug,
                    "rawSlug": o.slug,
                    "name": o.name,
                    "type": if o.slug == "personal" { "PERSONAL" } else { "SHARED" },
                    "billable": true,
                    "limitedAccessTokens": {"nodes": []},
                }}}),
            );
        }

        Resp::json(
            200,
            &json!({"data": null, "errors": [{
                "message": "query not supported by the simulator",
                "extensions": {"code": "INVALID"}
            }]}),
        )
    }
}

fn gql_not_found(field: &str, message: &str) -> Resp {
    Resp::json(
        200,
        &json!({
            "data": {field: null},
            "errors": [{"message": message, "path": [field], "extensions": {"code": "NOT_FOUND"}}]
        }),
    )
}

/// Response key of `field` in a whitespace-free query: its alias (`alias:field`) or the field.
fn alias_of(compact: &str, field: &str) -> String {
    if let Some(pos) = compact.find(field) {
        let before = &compact[..pos];
        if let Some(rest) = before.strip_suffix(':') {
            let alias: String = rest
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            if !alias.is_empty() {
                return alias;
            }
        }
    }
    field.to_string()
}

/// The `first:N` argument of a whitespace-free query.
fn first_arg(compact: &str) -> Option<usize> {
    let pos = compact.find("first:")?;
    let digits: String = compact[pos + 6..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `time.ParseDuration` (returns seconds): `"0s"`, `"1m0s"`, `"1.5h"`, `"300ms"`, `"0"`.
pub fn parse_go_duration(s: &str) -> Option<f64> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0.0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * factor;
        rest = &rest[unit_len..];
    }
    Some(if neg { -total } else { total })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// RFC 3339 UTC timestamp (second precision) for milliseconds since the epoch.
fn rfc3339(ms: u64) -> String {
    let (y, m, d, rem) = civil(ms);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// IMF-fixdate for the `Date` header, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(ms: u64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, m, d, rem) = civil(ms);
    let weekday = DAYS[((ms / 1000 / 86_400 + 4) % 7) as usize];
    format!(
        "{weekday}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        MONTHS[(m as usize).saturating_sub(1) % 12],
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// (year, month, day, seconds into the day) for milliseconds since the epoch.
fn civil(ms: u64) -> (i64, i64, i64, u64) {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem)
}

/// ULID-like id: 48-bit millisecond timestamp + 80 random bits, Crockford base32.
fn ulid(ms: u64, random: u128) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let v: u128 = ((ms as u128 & 0xffff_ffff_ffff) << 80) | (random & ((1u128 << 80) - 1));
    (0..26)
        .map(|i| ALPHABET[((v >> (125 - 5 * i)) & 31) as usize] as char)
        .collect()
}

fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x1000_0000_01b3);
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x1000_0000_01b3);
    }
    h
}

fn base36(mut n: u64, len: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::with_capacity(len);
    for _ in 0..len {
        out.push(DIGITS[(n % 36) as usize]);
        n = n / 36 + n.rotate_left(17) % 7;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn title_case(slug: &str) -> String {
    slug.split(['-', '_'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 without padding (GraphQL cursors look like `Mw`).
fn base64_encode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn base64_decode(s: &str) -> Option<String> {
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut out = Vec::new();
    for c in s.trim_end_matches('=').bytes() {
        let v = B64.iter().position(|&x| x == c)? as u32;
        bits = (bits << 6) | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push(((bits >> nbits) & 0xff) as u8);
        }
    }
    String::from_utf8(out).ok()
}
