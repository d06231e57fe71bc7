//! The HTTP endpoint: `GET /metrics` (text format 0.0.4) and `GET /healthz` (200 while the
//! scheduler loop is alive), on one tiny_http thread. Unlike the Go program it serves no
//! profiling endpoints, and a port that cannot be bound is a start-up error.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tiny_http::{Header, Response, Server};

use super::Telemetry;

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub struct MetricsServer {
    server: Arc<Server>,
    thread: Option<JoinHandle<()>>,
    addr: String,
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
        let server = Server::http(&bind).map(Arc::new).map_err(|e| {
            format!("cannot listen on metrics-addr {addr:?} (FAS_METRICS_ADDR): {e}")
        })?;
        let local = server
            .server_addr()
            .to_ip()
            .map_or_else(|| bind.clone(), |a| a.to_string());
        let serving = Arc::clone(&server);
        let thread = std::thread::Builder::new()
            .name("metrics-http".into())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    let path = request.url().split('?').next().unwrap_or("");
                    let response = match (request.method(), path) {
                        (tiny_http::Method::Get, "/metrics") => {
                            text(200, telemetry.render(), CONTENT_TYPE)
                        }
                        (tiny_http::Method::Get, "/healthz")
                            if telemetry.is_alive(health_max_age) =>
                        {
                            text(200, "ok\n".into(), "text/plain; charset=utf-8")
                        }
                        (tiny_http::Method::Get, "/healthz") => text(
                            503,
                            "scheduler stalled\n".into(),
                            "text/plain; charset=utf-8",
                        ),
                        _ => text(
                            404,
                            "404 page not found\n".into(),
                            "text/plain; charset=utf-8",
                        ),
                    };
                    let _ = request.respond(response);
                }
            })
            .map_err(|e| format!("cannot start the metrics thread: {e}"))?;
        Ok(MetricsServer {
            server,
            thread: Some(thread),
            addr: local,
        })
    }

    /// The bound address, e.g. `0.0.0.0:9090`.
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn text(status: u16, body: String, content_type: &str) -> Response<std::io::Cursor<Vec<u8>>> {
    let header = Header::from_bytes("Content-Type", content_type).expect("static header is valid");
    Response::from_string(body)
        .with_status_code(status)
        .with_header(header)
}
