//! A small HTTP/1.1 server on `std::net` with one thread per connection, the request log both
//! test servers keep, and [`FakeServer`], a server whose answers a test scripts.
//!
//! Not `tiny_http`, for three reasons found while building the simulator:
//! * tiny_http 0.12 hands connections to a task pool whose "is a thread idle?" check races
//!   with bursts of new connections, so 8 concurrent clients were served 4 at a time and a
//!   queued connection waited for a keep-alive connection to close: concurrency tests lied;
//! * it cannot close a connection without answering, which the `Drop` faults need;
//! * it writes headers and body separately, so every response over its 1 KiB buffer cost
//!   ~40 ms (Nagle + delayed ACK).

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::wait_until;
use crate::util::{http_date, now_ms, parse_query};

/// One HTTP request as a test server received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path without the query string, e.g. `/v1/apps/my-app/machines`.
    pub path: String,
    /// Raw query string without the leading `?` (empty if none).
    pub query: String,
    /// Headers as the client sent them, in order.
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// When the request line arrived.
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

    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }

    /// A decoded parameter from the query string, else from a form-encoded body (Prometheus
    /// queries come either way).
    pub fn param(&self, name: &str) -> Option<String> {
        let form = self
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
        let body = if form { self.body.as_str() } else { "" };
        [self.query.as_str(), body]
            .into_iter()
            .flat_map(parse_query)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

/// What a handler wants done with a request.
pub(crate) enum Outcome {
    /// Send this response; `Content-Length`, `Date` and `Connection: close` are added.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Close the connection without sending a single byte of response.
    Drop,
}

/// What a handler may ask of the server while it works.
#[derive(Clone)]
pub(crate) struct ServerCtx {
    shutdown: Arc<AtomicBool>,
}

impl ServerCtx {
    /// Sleeps for `d` unless the server shuts down first; `false` if interrupted.
    pub(crate) fn sleep(&self, d: Duration) -> bool {
        !wait_until(d, || self.is_shutting_down())
    }

    fn is_shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }
}

/// Runs on the connection's own thread.
pub(crate) type Handler = Arc<dyn Fn(&RecordedRequest, &ServerCtx) -> Outcome + Send + Sync>;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
struct Connections {
    next_id: u64,
    /// Clones of the open connections, to shut them down on drop.
    streams: HashMap<u64, TcpStream>,
    threads: Vec<JoinHandle<()>>,
}

/// Largest accepted request head (request line + headers) and body.
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 16 * 1024 * 1024;

/// An accept thread plus one thread per connection (keep-alive supported), so concurrent
/// requests are handled concurrently without any fixed limit. Every request is recorded.
/// Dropping it stops it: connection threads still busy after `join_timeout` are detached.
pub(crate) struct HttpServer {
    addr: SocketAddr,
    ctx: ServerCtx,
    connections: Arc<Mutex<Connections>>,
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
    accept: Option<JoinHandle<()>>,
    join_timeout: Duration,
}

impl HttpServer {
    pub(crate) fn start(
        addr: &str,
        join_timeout: Duration,
        handler: Handler,
    ) -> io::Result<HttpServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let ctx = ServerCtx {
            shutdown: Arc::new(AtomicBool::new(false)),
        };
        let connections = Arc::new(Mutex::new(Connections::default()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&requests);
        let recording: Handler = Arc::new(move |rq, ctx| {
            lock(&log).push(rq.clone());
            handler(rq, ctx)
        });
        let accept = {
            let (ctx, connections) = (ctx.clone(), Arc::clone(&connections));
            std::thread::Builder::new()
                .name(format!("http-accept-{}", addr.port()))
                .spawn(move || accept_loop(listener, &ctx, &connections, &recording))?
        };
        Ok(HttpServer {
            addr,
            ctx,
            connections,
            requests,
            accept: Some(accept),
            join_timeout,
        })
    }

    /// Where clients connect (an unspecified bind address is shown as `127.0.0.1`).
    pub(crate) fn addr(&self) -> SocketAddr {
        connectable(self.addr)
    }

    /// `http://IP:PORT`
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.requests).clone()
    }

    pub(crate) fn take_requests(&self) -> Vec<RecordedRequest> {
        std::mem::take(&mut lock(&self.requests))
    }
}

fn connectable(addr: SocketAddr) -> SocketAddr {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    addr
}

fn accept_loop(
    listener: TcpListener,
    ctx: &ServerCtx,
    connections: &Arc<Mutex<Connections>>,
    handler: &Handler,
) {
    for conn in listener.incoming() {
        if ctx.is_shutting_down() {
            break;
        }
        let Ok(stream) = conn else {
            // E.g. out of file descriptors: back off a little.
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let mut open = lock(connections);
        open.threads.retain(|h| !h.is_finished());
        let id = open.next_id;
        open.next_id += 1;
        if let Ok(clone) = stream.try_clone() {
            open.streams.insert(id, clone);
        }
        let (ctx, connections, handler) =
            (ctx.clone(), Arc::clone(connections), Arc::clone(handler));
        let spawned = std::thread::Builder::new()
            .name(format!("http-conn-{id}"))
            .stack_size(512 * 1024)
            .spawn(move || {
                serve_connection(stream, &ctx, &handler);
                lock(&connections).streams.remove(&id);
            });
        match spawned {
            Ok(h) => open.threads.push(h),
            Err(_) => drop(open.streams.remove(&id)),
        }
    }
}

/// Joins `handle` if it finishes before `deadline`; otherwise leaves it detached (it ends
/// when its handler returns).
fn join_until(handle: JoinHandle<()>, deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    if wait_until(left, || handle.is_finished()) {
        let _ = handle.join();
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.ctx.shutdown.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + self.join_timeout;
        // Wakes the accept thread with a throwaway connection.
        let _ = TcpStream::connect_timeout(&connectable(self.addr), Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            join_until(h, deadline);
        }
        let Connections {
            streams, threads, ..
        } = std::mem::take(&mut *lock(&self.connections));
        // Unblocks threads waiting for the next request of a keep-alive connection.
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

fn serve_connection(stream: TcpStream, ctx: &ServerCtx, handler: &Handler) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    while !ctx.is_shutting_down() {
        let (rq, keep_alive) = match read_request(&mut reader) {
            Ok(Some(r)) => r,
            Ok(None) | Err(ReadError::Io) => break,
            Err(ReadError::Bad(status, msg)) => {
                let headers = [("Content-Type".to_string(), "application/json".to_string())];
                let body = json!({ "error": msg }).to_string();
                let _ = write_response(&mut writer, status, &headers, &body, true);
                break;
            }
        };
        let Outcome::Respond {
            status,
            headers,
            body,
        } = handler(&rq, ctx)
        else {
            break;
        };
        let close = !keep_alive || ctx.is_shutting_down();
        if write_response(&mut writer, status, &headers, &body, close).is_err() || close {
            break;
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
    *budget -= n;
    let line = String::from_utf8_lossy(&buf);
    Ok(Some(line.trim_end_matches(['\r', '\n']).to_string()))
}

/// One request and whether the connection stays open after it.
fn read_request(
    reader: &mut BufReader<TcpStream>,
) -> Result<Option<(RecordedRequest, bool)>, ReadError> {
    let mut budget = MAX_HEAD;
    // RFC 9112 §2.2: empty lines before the request line are ignored.
    let line = loop {
        match read_line(reader, &mut budget)? {
            None => return Ok(None),
            Some(l) if l.is_empty() => continue,
            Some(l) => break l,
        }
    };
    let at = Instant::now();
    let bad_line = ReadError::Bad(400, "malformed request line");
    let [method, target, version] = line.split(' ').collect::<Vec<_>>()[..] else {
        return Err(bad_line);
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) || target.is_empty() {
        return Err(bad_line);
    }
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(ReadError::Bad(505, "HTTP version not supported")),
    };
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader, &mut budget)?.ok_or(ReadError::Io)?;
        if line.is_empty() {
            break;
        }
        match line.split_once(':') {
            Some((name, value)) if !name.is_empty() && !name.contains(char::is_whitespace) => {
                headers.push((name.to_string(), value.trim().to_string()));
            }
            _ => return Err(ReadError::Bad(400, "malformed header line")),
        }
    }
    let mut rq = RecordedRequest {
        method: method.to_string(),
        path: String::new(),
        query: String::new(),
        headers,
        body: String::new(),
        at,
    };
    // ureq sends a body-less POST as an empty chunked body.
    let chunked = rq
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
    if chunked {
        rq.body = String::from_utf8_lossy(&read_chunked(reader)?).into_owned();
    } else if let Some(len) = rq.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| ReadError::Bad(400, "invalid Content-Length"))?;
        if len > MAX_BODY {
            return Err(ReadError::Bad(413, "request body too large"));
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body).map_err(|_| ReadError::Io)?;
        rq.body = String::from_utf8_lossy(&body).into_owned();
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    (rq.path, rq.query) = (path.to_string(), query.to_string());
    let keep_alive = match rq.header("connection").map(str::to_ascii_lowercase) {
        Some(c) if c.contains("close") => false,
        Some(c) if c.contains("keep-alive") => true,
        _ => !http10,
    };
    Ok(Some((rq, keep_alive)))
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    let mut budget = MAX_HEAD;
    loop {
        let line = read_line(reader, &mut budget)?.ok_or(ReadError::Io)?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| ReadError::Bad(400, "invalid chunk size"))?;
        if size == 0 {
            // Trailers, up to the final empty line.
            while !read_line(reader, &mut budget)?
                .ok_or(ReadError::Io)?
                .is_empty()
            {}
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(ReadError::Bad(413, "request body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader
            .read_exact(&mut body[start..])
            .map_err(|_| ReadError::Io)?;
        if read_line(reader, &mut budget)? != Some(String::new()) {
            return Err(ReadError::Bad(400, "malformed chunk"));
        }
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}

/// Writes a whole response in one `write_all` (no Nagle stalls).
fn write_response(
    w: &mut TcpStream,
    status: u16,
    headers: &[(String, String)],
    body: &str,
    close: bool,
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Date: {}\r\n", http_date(now_ms())));
    head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    w.write_all(&bytes)?;
    w.flush()
}

/// What a [`FakeServer`] answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Wait this long before answering (other requests are served meanwhile).
    pub delay: Option<Duration>,
}

impl Reply {
    /// A `Content-Type: application/json` reply.
    pub fn json(status: u16, body: &str) -> Reply {
        Reply::text(status, "application/json", body)
    }

    /// A reply with the given `Content-Type` (e.g. `text/html` for a proxy's 502 page).
    pub fn text(status: u16, content_type: &str, body: &str) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type".to_string(), content_type.to_string())],
            body: body.to_string(),
            delay: None,
        }
    }

    /// The same reply, sent after `d`.
    pub fn delayed(mut self, d: Duration) -> Reply {
        self.delay = Some(d);
        self
    }
}

/// An HTTP server on `127.0.0.1:0` whose every answer the test scripts: Prometheus and
/// Temporal stand-ins, HTML 502 pages, slow servers, dropped connections. Dropping it stops
/// it promptly, even while a handler sleeps.
pub struct FakeServer {
    http: HttpServer,
}

impl FakeServer {
    pub fn start(
        handler: impl Fn(&RecordedRequest) -> Reply + Send + Sync + 'static,
    ) -> FakeServer {
        let serve: Handler = Arc::new(move |rq, ctx| {
            let reply = handler(rq);
            if !reply.delay.is_none_or(|d| ctx.sleep(d)) {
                return Outcome::Drop;
            }
            Outcome::Respond {
                status: reply.status,
                headers: reply.headers,
                body: reply.body,
            }
        });
        // A handler that blocks by itself is detached after 200 ms.
        let http = HttpServer::start("127.0.0.1:0", Duration::from_millis(200), serve)
            .expect("bind the fake HTTP server");
        FakeServer { http }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        self.http.url()
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.http.requests()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{FakeServer, Reply};
    use crate::harness::wait_until;
    use crate::test_client::{call, send};

    #[test]
    fn fake_server_scripts_status_body_and_delay() {
        let server = FakeServer::start(|rq| match rq.path.as_str() {
            "/html" => Reply::text(502, "text/html", "<html>502 Bad Gateway</html>"),
            "/slow" => Reply::json(200, r#"{"slow":true}"#).delayed(Duration::from_millis(800)),
            _ => Reply::json(422, r#"{"status":"error"}"#),
        });
        let r = call(&server.url(), "GET", "/api/v1/query?query=up", None);
        assert_eq!(
            (r.status, r.header("content-type")),
            (422, Some("application/json"))
        );
        assert_eq!(r.json()["status"], "error");
        let r = call(&server.url(), "GET", "/html", None);
        assert_eq!(
            (r.status, r.header("content-type")),
            (502, Some("text/html"))
        );
        assert!(r.body.contains("Bad Gateway"));

        // A delayed reply does not hold up another request.
        let url = server.url();
        let slow = std::thread::spawn(move || {
            let t0 = Instant::now();
            (call(&url, "GET", "/slow", None).status, t0.elapsed())
        });
        let slow_seen = || server.requests().iter().any(|r| r.path == "/slow");
        assert!(wait_until(Duration::from_secs(2), slow_seen));
        let t0 = Instant::now();
        assert_eq!(call(&server.url(), "GET", "/fast", None).status, 422);
        assert!(
            t0.elapsed() < Duration::from_millis(400),
            "{:?}",
            t0.elapsed()
        );
        let (status, took) = slow.join().unwrap();
        assert!(
            status == 200 && took >= Duration::from_millis(700),
            "{took:?}"
        );
        let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
        assert_eq!(paths, ["/api/v1/query", "/html", "/slow", "/fast"]);
    }

    #[test]
    fn dropping_a_fake_server_is_prompt_while_a_handler_blocks() {
        let server = FakeServer::start(|_| {
            // A handler that blocks by itself, not through `delayed`.
            std::thread::sleep(Duration::from_millis(1500));
            Reply::json(200, "{}")
        });
        let url = server.url();
        let client = std::thread::spawn(move || {
            send(&url, "GET", "/", &[], None, Duration::from_secs(5)).is_err()
        });
        assert!(wait_until(Duration::from_secs(2), || server
            .requests()
            .len()
            == 1));
        let t0 = Instant::now();
        drop(server);
        assert!(
            t0.elapsed() < Duration::from_millis(800),
            "{:?}",
            t0.elapsed()
        );
        assert!(client.join().unwrap(), "the blocked request gets no answer");
    }
}
