//! The HTTP endpoint: `GET /metrics` (text format 0.0.4) and `GET /healthz`.
//!
//! A small std server rather than tiny_http, which cannot be made safe here: its accept loop
//! ends for good on the first accept error (so one burst of file-descriptor exhaustion,
//! EMFILE, kills `/metrics` and `/healthz` until restart), it spawns a thread per connection
//! without bound, and it has no read timeout or header limit. This one has one accept thread
//! that backs off and keeps going on errors, a fixed number of handler threads behind a
//! bounded queue (connections beyond it are closed at once), a deadline for reading a request,
//! a 16 KiB request-head limit (431), and `Connection: close` after every answer.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Telemetry;
use crate::queue::WorkQueue;

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const HANDLERS: usize = 4;
/// Accepted connections waiting for a handler; more are closed unanswered.
const WAITING: usize = 64;
const MAX_HEAD: usize = 16 * 1024;
/// For reading a whole request head, and for writing an answer.
const IO_DEADLINE: Duration = Duration::from_secs(3);
/// Wait after a failed accept (e.g. EMFILE) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

pub struct MetricsServer {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    queue: Arc<WorkQueue<(TcpStream, Instant)>>,
    threads: Vec<JoinHandle<()>>,
}

impl MetricsServer {
    /// Listens on `addr` (`:9090` means every interface, as in Go). `/healthz` fails once
    /// the scheduler has not beaten for `health_max_age`.
    pub fn start(
        addr: &str,
        telemetry: Arc<Telemetry>,
        health_max_age: Duration,
    ) -> Result<MetricsServer, String> {
        let bind = if addr.starts_with(':') {
            format!("0.0.0.0{addr}")
        } else {
            addr.to_string()
        };
        let listener = TcpListener::bind(&bind).map_err(|e| {
            format!("cannot listen on metrics-addr {addr:?} (FAS_METRICS_ADDR): {e}")
        })?;
        let local = listener
            .local_addr()
            .map_err(|e| format!("cannot listen on metrics-addr {addr:?}: {e}"))?;
        let stopping = Arc::new(AtomicBool::new(false));
        let queue = Arc::new(WorkQueue::new(WAITING));
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name)
                .spawn(f)
                .map_err(|e| format!("cannot start the metrics threads: {e}"))
        };
        let mut threads = Vec::with_capacity(HANDLERS + 1);
        {
            let (queue, stopping) = (Arc::clone(&queue), Arc::clone(&stopping));
            threads.push(spawn(
                "metrics-accept".into(),
                Box::new(move || accept_loop(&listener, &queue, &stopping)),
            )?);
        }
        for i in 0..HANDLERS {
            let (queue, telemetry) = (Arc::clone(&queue), Arc::clone(&telemetry));
            threads.push(spawn(
                format!("metrics-http-{i}"),
                Box::new(move || {
                    while let Some((stream, accepted)) = queue.pop() {
                        serve(stream, accepted + IO_DEADLINE, &telemetry, health_max_age);
                    }
                }),
            )?);
        }
        Ok(MetricsServer {
            addr: local,
            stopping,
            queue,
            threads,
        })
    }

    /// The bound address, e.g. `0.0.0.0:9090` (the real port when `:0` was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.queue.close();
        // Wake the accept thread; an unspecified bind address is reached over loopback.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    queue: &WorkQueue<(TcpStream, Instant)>,
    stopping: &AtomicBool,
) {
    let mut last_warning: Option<Instant> = None;
    while !stopping.load(Ordering::SeqCst) {
        match listener.accept() {
            // A full queue drops (closes) the connection: the caller retries later.
            Ok((stream, _)) => drop(queue.push((stream, Instant::now()))),
            Err(e) => {
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    log::warn!("metrics endpoint cannot accept connections, retrying: {e}");
                    last_warning = Some(Instant::now());
                }
                std::thread::sleep(ACCEPT_BACKOFF);
            }
        }
    }
}

fn serve(
    mut stream: TcpStream,
    deadline: Instant,
    telemetry: &Telemetry,
    health_max_age: Duration,
) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(IO_DEADLINE));
    let (status, body, content_type) = match read_head(&mut stream, deadline) {
        Ok(head) => {
            let mut parts = head.split(' ');
            let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let path = target.split('?').next().unwrap_or("");
            match (method, path) {
                ("GET", "/metrics") => (200, telemetry.render(), CONTENT_TYPE),
                // Leader and standby are both healthy: a standby is ready to take over.
                ("GET", "/healthz") if telemetry.is_alive(health_max_age) => {
                    let body = match telemetry.role() {
                        Some(role) => format!("ok {role}\n"),
                        None => "ok\n".to_string(),
                    };
                    (200, body, "text/plain; charset=utf-8")
                }
                ("GET", "/healthz") => (
                    503,
                    "scheduler stalled\n".to_string(),
                    "text/plain; charset=utf-8",
                ),
                _ => (
                    404,
                    "404 page not found\n".to_string(),
                    "text/plain; charset=utf-8",
                ),
            }
        }
        Err(HeadError::TooLarge) => (
            431,
            "request header fields too large\n".to_string(),
            "text/plain; charset=utf-8",
        ),
        Err(HeadError::Io) => return,
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body.as_bytes()));
}

enum HeadError {
    TooLarge,
    /// Timed out, closed, or not HTTP: nothing is answered.
    Io,
}

/// Reads up to the end of the request head by `deadline` (counted from accept, so idle
/// connections that waited in the queue are cleared at once); returns the request line.
fn read_head(stream: &mut TcpStream, deadline: Instant) -> Result<String, HeadError> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        // Past the deadline, only what has already arrived is read, once.
        let left = deadline.checked_duration_since(Instant::now());
        let late = left.is_none();
        let left = left.unwrap_or_default().max(Duration::from_millis(1));
        stream
            .set_read_timeout(Some(left))
            .map_err(|_| HeadError::Io)?;
        let n = match stream.read(&mut chunk) {
            Ok(0) => return Err(HeadError::Io),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(HeadError::Io),
        };
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            if end > MAX_HEAD {
                return Err(HeadError::TooLarge);
            }
            let line_end = head.iter().position(|&b| b == b'\r').unwrap_or(end);
            return Ok(String::from_utf8_lossy(&head[..line_end]).into_owned());
        }
        if head.len() > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        if late {
            return Err(HeadError::Io);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(addr: SocketAddr, raw: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(raw);
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    fn server() -> MetricsServer {
        let t = Arc::new(Telemetry::new());
        t.heartbeat();
        MetricsServer::start("127.0.0.1:0", t, Duration::from_secs(60)).unwrap()
    }

    #[test]
    fn serves_metrics_health_and_404() {
        let s = server();
        let metrics = request(s.addr(), b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n"), "{metrics}");
        assert!(metrics.contains("fas_reconcile_count{status=\"no_scale\"} 0"));
        assert!(metrics.contains("Connection: close"));
        let health = request(s.addr(), b"GET /healthz HTTP/1.0\r\n\r\n");
        assert!(health.starts_with("HTTP/1.1 200 OK") && health.ends_with("ok\n"));
        let other = request(s.addr(), b"POST /metrics HTTP/1.1\r\n\r\n");
        assert!(other.starts_with("HTTP/1.1 404"));
    }

    // Issue 9, defect 9: a huge header line is refused without being kept.
    #[test]
    fn oversized_heads_get_431() {
        let s = server();
        let mut raw = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
        raw.extend(std::iter::repeat_n(b'a', 64 * 1024));
        raw.extend_from_slice(b"\r\n\r\n");
        let answer = request(s.addr(), &raw);
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
        assert!(request(s.addr(), b"GET /healthz HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
    }

    // Issue 9, defect 8: idle connections neither pile up threads nor lock others out for
    // long: each is closed at the read deadline, and the server keeps answering.
    #[test]
    fn idle_connections_are_closed_and_others_still_served() {
        let s = server();
        let idle: Vec<TcpStream> = (0..(HANDLERS + WAITING + 10))
            .map(|_| TcpStream::connect(s.addr()).unwrap())
            .collect();
        let started = Instant::now();
        let answer = request(s.addr(), b"GET /healthz HTTP/1.1\r\n\r\n");
        // Either served after the idle ones timed out, or closed unanswered because the queue
        // was full; then a retry after the deadline is served.
        if !answer.starts_with("HTTP/1.1 200") {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let retry = request(s.addr(), b"GET /healthz HTTP/1.1\r\n\r\n");
                if retry.starts_with("HTTP/1.1 200") {
                    break;
                }
                assert!(Instant::now() < deadline, "never served again");
            }
        }
        assert!(started.elapsed() < Duration::from_secs(30));
        let mut first = &idle[0];
        let mut buf = [0u8; 1];
        first
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        assert_eq!(
            first.read(&mut buf).unwrap_or(0),
            0,
            "idle connection closed"
        );
    }

    #[test]
    fn drop_stops_every_thread() {
        let s = server();
        let addr = s.addr();
        drop(s);
        assert!(TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err());
    }
}
