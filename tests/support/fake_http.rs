//! A scripted HTTP server for error-case tests: Prometheus/Temporal error bodies, HTML 502
//! pages, slow servers, dropped connections.
//!
//! The handler maps each [`RecordedRequest`] to a [`Reply`]. Every connection is served on
//! its own thread, so a delayed reply does not block other requests. Dropping the
//! server returns promptly even while a handler is sleeping (busy threads are detached).
//! Request recording and connection dropping are shared with the Machines API simulator.

use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use super::simulator::RecordedRequest;
use super::simulator::{Handler, HttpServer, Outcome, ServerCtx};

/// What the fake server answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Wait this long before answering (other requests are served meanwhile).
    pub delay: Option<Duration>,
    /// Close the connection without sending any response bytes (after `delay`, if any).
    pub drop_connection: bool,
}

impl Reply {
    /// `Content-Type: application/json` reply.
    pub fn json(status: u16, body: &str) -> Reply {
        Reply::text(status, "application/json", body)
    }

    /// Reply with the given `Content-Type` (e.g. `text/html` for a proxy's 502 page).
    pub fn text(status: u16, content_type: &str, body: &str) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type".to_string(), content_type.to_string())],
            body: body.to_string(),
            delay: None,
            drop_connection: false,
        }
    }

    /// Same reply, sent after `d`.
    pub fn delayed(mut self, d: Duration) -> Reply {
        self.delay = Some(d);
        self
    }

    /// Adds a response header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Closes the connection without answering.
    pub fn dropped() -> Reply {
        Reply {
            status: 0,
            headers: Vec::new(),
            body: String::new(),
            delay: None,
            drop_connection: true,
        }
    }
}

/// The scripted server. Dropping it stops it.
pub struct FakeServer {
    http: HttpServer,
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
}

impl FakeServer {
    /// Starts on `127.0.0.1:0`; every connection is served on its own thread.
    pub fn start(
        handler: impl Fn(&RecordedRequest) -> Reply + Send + Sync + 'static,
    ) -> FakeServer {
        let requests: Arc<Mutex<Vec<RecordedRequest>>> = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&requests);
        let serve: Handler = Arc::new(move |rec: &RecordedRequest, ctx: &ServerCtx| {
            log.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(rec.clone());
            let reply = handler(rec);
            if let Some(d) = reply.delay {
                if !ctx.sleep(d) {
                    return Outcome::Drop;
                }
            }
            if reply.drop_connection {
                Outcome::Drop
            } else {
                Outcome::Respond {
                    status: reply.status,
                    headers: reply.headers,
                    body: reply.body,
                }
            }
        });
        // Threads still busy 200 ms after drop (a handler sleeping by itself) are detached.
        let http = HttpServer::start("127.0.0.1:0", Duration::from_millis(200), serve)
            .expect("bind the fake HTTP server");
        FakeServer { http, requests }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        self.http.url()
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
