//! One HTTP/2 connection on a blocking socket, used by one caller at a time for one stream at
//! a time: the unary call is a loop of "send what the flow-control windows allow, flush, read
//! one frame, handle it" until the stream ends.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use loona_hpack::encoder::encode_integer_into;
use loona_hpack::{Decoder, Encoder};
use rustls::{ClientConnection, StreamOwned};

use super::frame::{self, Head};
use super::{
    Code, MAX_HEADER_LIST, MAX_MESSAGE, Status, Target, Tls, one_line, percent_decode, secs,
    timeout_header,
};
use crate::http::Deadline;

/// HPACK's default dynamic table size; we never advertise a larger one, nor use one.
const TABLE_SIZE: usize = 4096;
/// Received bytes are acknowledged with WINDOW_UPDATE once this many have arrived (half the
/// default window, so the server never stalls on a large answer).
const WINDOW_THRESHOLD: u32 = 32_768;
const READ_CHUNK: usize = 16 * 1024;
const MAX_STREAM_ID: u32 = 0x7fff_ffff;
/// `authorization` in HPACK's static table.
const AUTHORIZATION_INDEX: usize = 23;

/// One call's request.
pub(super) struct Request<'a> {
    pub path: &'a str,
    pub authority: &'a str,
    pub user_agent: &'a str,
    pub metadata: &'a [(&'a str, &'a str)],
    pub message: &'a [u8],
}

/// A call that failed; `retry` when it is known (or, on a reused connection, likely) that the
/// server never handled it, so sending it again on a new connection is safe.
#[derive(Debug)]
pub(super) struct Failure {
    pub status: Status,
    pub retry: bool,
}

impl Failure {
    fn new(code: Code, message: impl Into<String>) -> Failure {
        Failure {
            status: Status::new(code, message),
            retry: false,
        }
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Io {
    fn tcp(&self) -> &TcpStream {
        match self {
            Io::Plain(s) => s,
            Io::Tls(s) => &s.sock,
        }
    }

    /// Every blocking read and write gets at most the time that is left.
    fn set_timeouts(&self, left: Duration) -> io::Result<()> {
        self.tcp().set_read_timeout(Some(left))?;
        self.tcp().set_write_timeout(Some(left))
    }
}

impl Read for Io {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Io::Plain(s) => s.read(buf),
            Io::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Io {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Io::Plain(s) => s.write(buf),
            Io::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Io::Plain(s) => s.flush(),
            Io::Tls(s) => s.flush(),
        }
    }
}

/// What the client keeps of a header block: the fields a unary call reads, each cut to a
/// small size (the whole list is limited to `MAX_HEADER_LIST` anyway).
#[derive(Debug, Default, Clone)]
struct Fields {
    status: Option<String>,
    content_type: Option<String>,
    grpc_status: Option<String>,
    grpc_message: Option<Vec<u8>>,
}

impl Fields {
    fn is_grpc(&self) -> bool {
        self.content_type
            .as_deref()
            .is_some_and(|t| t.starts_with("application/grpc"))
    }

    fn keep(&mut self, name: &[u8], value: &[u8]) {
        let text =
            |max: usize| String::from_utf8_lossy(&value[..value.len().min(max)]).into_owned();
        match name {
            b":status" => self.status = Some(text(16)),
            b"content-type" => self.content_type = Some(text(200)),
            b"grpc-status" => self.grpc_status = Some(text(16)),
            b"grpc-message" => self.grpc_message = Some(value[..value.len().min(8192)].to_vec()),
            _ => {}
        }
    }
}

/// The state of the call's stream.
struct Stream {
    id: u32,
    send_window: i64,
    unacked: u32,
    headers: Option<Fields>,
    trailers: Option<Fields>,
    /// The response headers came with END_STREAM: a trailers-only answer.
    trailers_only: bool,
    data: Vec<u8>,
    ended: bool,
    reset: Option<u32>,
    /// Something arrived for this stream (so a failure is no longer "the server never saw it").
    answered: bool,
}

impl Stream {
    fn done(&self) -> bool {
        self.ended || self.reset.is_some()
    }
}

pub(super) struct Conn {
    io: Io,
    tls: bool,
    authority: String,
    inbuf: Vec<u8>,
    pos: usize,
    out: Vec<u8>,
    next_stream: u32,
    encoder: Encoder<'static>,
    encoder_table: usize,
    table_update: Option<usize>,
    decoder: Decoder<'static>,
    send_window: i64,
    peer_initial_window: i64,
    unacked: u32,
    seen_frame: bool,
    goaway: bool,
    broken: bool,
    idle_since: Instant,
}

impl Conn {
    /// TCP (and TLS with ALPN `h2`) to `target`; the preface and our SETTINGS are queued and
    /// go out with the first request.
    pub fn connect(target: &Target, tls: Option<&Tls>, deadline: Deadline) -> Result<Conn, Status> {
        let started = Instant::now();
        let shown = target.authority();
        let addrs: Vec<SocketAddr> = (target.host.as_str(), target.port)
            .to_socket_addrs()
            .map_err(|e| {
                Status::new(
                    Code::Unavailable,
                    format!(
                        "cannot resolve {}: {}",
                        target.host,
                        one_line(&e.to_string(), 200)
                    ),
                )
            })?
            .collect();
        let mut last_error = None;
        let mut tcp = None;
        for addr in &addrs {
            let Some(left) = deadline.remaining() else {
                break;
            };
            match TcpStream::connect_timeout(addr, left) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last_error = Some(e),
            }
        }
        let tcp = match (tcp, last_error) {
            (Some(tcp), _) => tcp,
            (None, Some(e)) if !is_timeout(&e) => {
                return Err(Status::new(
                    Code::Unavailable,
                    format!(
                        "cannot connect to {shown}: {}",
                        one_line(&e.to_string(), 200)
                    ),
                ));
            }
            (None, None) if addrs.is_empty() => {
                return Err(Status::new(
                    Code::Unavailable,
                    format!("cannot resolve {}: no addresses", target.host),
                ));
            }
            (None, _) => {
                return Err(Status::new(
                    Code::DeadlineExceeded,
                    format!("no connection to {shown} within {}", secs(started)),
                ));
            }
        };
        let _ = tcp.set_nodelay(true);
        let io = match tls {
            None => Io::Plain(tcp),
            Some(tls) => {
                let conn = ClientConnection::new(tls.config.clone(), tls.server_name.clone())
                    .map_err(|e| {
                        Status::new(Code::Unavailable, format!("TLS setup failed: {e}"))
                    })?;
                let mut s = StreamOwned::new(conn, tcp);
                while s.conn.is_handshaking() {
                    let Some(left) = deadline.remaining() else {
                        return Err(Status::new(
                            Code::DeadlineExceeded,
                            format!(
                                "TLS handshake with {shown} not done within {}",
                                secs(started)
                            ),
                        ));
                    };
                    let step = s
                        .sock
                        .set_read_timeout(Some(left))
                        .and_then(|_| s.sock.set_write_timeout(Some(left)))
                        .and_then(|_| s.conn.complete_io(&mut s.sock));
                    if let Err(e) = step {
                        return Err(if is_timeout(&e) {
                            Status::new(
                                Code::DeadlineExceeded,
                                format!(
                                    "TLS handshake with {shown} not done within {}",
                                    secs(started)
                                ),
                            )
                        } else {
                            Status::new(
                                Code::Unavailable,
                                format!("TLS handshake with {shown} failed: {}", io_text(&e)),
                            )
                        });
                    }
                }
                if s.conn.alpn_protocol() != Some(b"h2") {
                    return Err(Status::new(
                        Code::Unavailable,
                        format!(
                            "the TLS server at {shown} did not agree to HTTP/2 (ALPN h2), which gRPC needs: is this a gRPC endpoint?"
                        ),
                    ));
                }
                Io::Tls(Box::new(s))
            }
        };
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(frame::PREFACE);
        frame::put_settings(
            &mut out,
            &[
                (frame::SETTINGS_ENABLE_PUSH, 0),
                (frame::SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST as u32),
            ],
        );
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(TABLE_SIZE);
        log::debug!(
            "grpc: connected to {shown} ({}) in {:.1} ms",
            if tls.is_some() { "TLS, h2" } else { "h2c" },
            started.elapsed().as_secs_f64() * 1000.0
        );
        Ok(Conn {
            io,
            tls: tls.is_some(),
            authority: shown,
            inbuf: Vec::new(),
            pos: 0,
            out,
            next_stream: 1,
            encoder: Encoder::new(),
            encoder_table: TABLE_SIZE,
            table_update: None,
            decoder,
            send_window: frame::DEFAULT_WINDOW,
            peer_initial_window: frame::DEFAULT_WINDOW,
            unacked: 0,
            seen_frame: false,
            goaway: false,
            broken: false,
            idle_since: Instant::now(),
        })
    }

    pub fn is_reusable(&self) -> bool {
        !self.broken && !self.goaway && self.next_stream < MAX_STREAM_ID
    }

    pub fn idle_since(&self) -> Instant {
        self.idle_since
    }

    /// One unary call on a new stream. `reused`: the connection served calls before, so an
    /// I/O failure before any answer most likely means the server had closed it.
    pub fn unary(
        &mut self,
        req: &Request,
        deadline: Deadline,
        reused: bool,
    ) -> Result<Vec<u8>, Failure> {
        let started = Instant::now();
        let result = self.call(req, deadline, reused, started);
        self.idle_since = Instant::now();
        if let Err(f) = &result {
            if f.status.code == Code::DeadlineExceeded {
                // The stream is still open at the server; do not reuse a connection in an
                // unknown state.
                self.broken = true;
            }
        }
        result
    }

    fn call(
        &mut self,
        req: &Request,
        deadline: Deadline,
        reused: bool,
        started: Instant,
    ) -> Result<Vec<u8>, Failure> {
        let left = deadline
            .remaining()
            .ok_or_else(|| Failure::new(Code::DeadlineExceeded, "no time left for the call"))?;
        let id = self.next_stream;
        self.next_stream += 2;

        let block = self.header_block(req, left);
        let mut chunks = block.chunks(frame::DEFAULT_MAX_FRAME).peekable();
        let mut kind = frame::HEADERS;
        while let Some(chunk) = chunks.next() {
            let flags = if chunks.peek().is_none() {
                frame::FLAG_END_HEADERS
            } else {
                0
            };
            frame::put(&mut self.out, kind, flags, id, chunk);
            kind = frame::CONTINUATION;
        }

        let mut body = Vec::with_capacity(5 + req.message.len());
        body.push(0);
        body.extend_from_slice(&(req.message.len() as u32).to_be_bytes());
        body.extend_from_slice(req.message);
        let mut sent = 0;
        let mut st = Stream {
            id,
            send_window: self.peer_initial_window,
            unacked: 0,
            headers: None,
            trailers: None,
            trailers_only: false,
            data: Vec::new(),
            ended: false,
            reset: None,
            answered: false,
        };
        loop {
            while sent < body.len() && !st.done() {
                let window = self.send_window.min(st.send_window);
                if window <= 0 {
                    break;
                }
                let n = (window as usize)
                    .min(frame::DEFAULT_MAX_FRAME)
                    .min(body.len() - sent);
                let flags = if sent + n == body.len() {
                    frame::FLAG_END_STREAM
                } else {
                    0
                };
                frame::put(&mut self.out, frame::DATA, flags, id, &body[sent..sent + n]);
                sent += n;
                self.send_window -= n as i64;
                st.send_window -= n as i64;
            }
            let stale = reused && !st.answered;
            self.flush(deadline, started, stale)?;
            if st.done() {
                break;
            }
            let (head, payload) = self.read_frame(deadline, started, stale)?;
            self.handle(head, payload, &mut st, deadline, started)?;
        }
        if sent < body.len() {
            // The server answered before taking the whole request: our side of the stream
            // is still open, so this connection is not used again.
            self.broken = true;
        }
        self.finish(st)
    }

    fn header_block(&mut self, req: &Request, left: Duration) -> Vec<u8> {
        let mut block = Vec::with_capacity(256);
        if let Some(size) = self.table_update.take() {
            let _ = encode_integer_into(size, 5, 0x20, &mut block);
        }
        let timeout = timeout_header(left);
        let scheme = if self.tls { "https" } else { "http" };
        let fields: [(&str, &str); 8] = [
            (":method", "POST"),
            (":scheme", scheme),
            (":path", req.path),
            (":authority", req.authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("user-agent", req.user_agent),
            ("grpc-timeout", &timeout),
        ];
        for (name, value) in fields.iter().chain(req.metadata) {
            if *name == "authorization" {
                // Literal never indexed (RFC 7541 §6.2.3), name from the static table.
                let _ = encode_integer_into(AUTHORIZATION_INDEX, 4, 0x10, &mut block);
                let _ = encode_integer_into(value.len(), 7, 0, &mut block);
                block.extend_from_slice(value.as_bytes());
            } else {
                let _ = self
                    .encoder
                    .encode_header_into((name.as_bytes(), value.as_bytes()), &mut block);
            }
        }
        block
    }

    fn flush(&mut self, deadline: Deadline, started: Instant, stale: bool) -> Result<(), Failure> {
        if self.out.is_empty() {
            return Ok(());
        }
        let Some(left) = deadline.remaining() else {
            self.broken = true;
            return Err(self.timed_out(started));
        };
        let result = self
            .io
            .set_timeouts(left)
            .and_then(|_| self.io.write_all(&self.out))
            .and_then(|_| self.io.flush());
        self.out.clear();
        result.map_err(|e| self.io_failure(e, started, stale))
    }

    /// Reads until `need` unparsed bytes are buffered.
    fn fill(
        &mut self,
        need: usize,
        deadline: Deadline,
        started: Instant,
        stale: bool,
    ) -> Result<(), Failure> {
        while self.inbuf.len() - self.pos < need {
            if self.pos > 0 {
                self.inbuf.drain(..self.pos);
                self.pos = 0;
            }
            let Some(left) = deadline.remaining() else {
                self.broken = true;
                return Err(self.timed_out(started));
            };
            let old = self.inbuf.len();
            self.inbuf.resize(old + READ_CHUNK, 0);
            let result = self
                .io
                .set_timeouts(left)
                .and_then(|_| self.io.read(&mut self.inbuf[old..]));
            match result {
                Ok(0) => {
                    self.inbuf.truncate(old);
                    return Err(self.closed(stale));
                }
                Ok(n) => self.inbuf.truncate(old + n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.inbuf.truncate(old),
                Err(e) => {
                    self.inbuf.truncate(old);
                    return Err(self.io_failure(e, started, stale));
                }
            }
        }
        Ok(())
    }

    fn read_frame(
        &mut self,
        deadline: Deadline,
        started: Instant,
        stale: bool,
    ) -> Result<(Head, Vec<u8>), Failure> {
        self.fill(frame::HEADER_LEN, deadline, started, stale)?;
        let raw = &self.inbuf[self.pos..self.pos + frame::HEADER_LEN];
        if !self.seen_frame && raw.starts_with(b"HTTP/") {
            self.broken = true;
            return Err(Failure::new(
                Code::Unavailable,
                format!(
                    "{} answered in HTTP/1.x, not HTTP/2: it is not a gRPC endpoint (an HTTP API port?)",
                    self.authority
                ),
            ));
        }
        let head = Head::parse(raw.try_into().unwrap_or(&[0; frame::HEADER_LEN]));
        if !self.seen_frame && (head.kind != frame::SETTINGS || head.has(frame::FLAG_ACK)) {
            self.broken = true;
            return Err(Failure::new(
                Code::Unavailable,
                format!(
                    "{} does not speak HTTP/2: its first bytes are not a SETTINGS frame{}",
                    self.authority,
                    if self.tls { "" } else { " (does it want TLS?)" }
                ),
            ));
        }
        if head.len > frame::DEFAULT_MAX_FRAME {
            return Err(self.protocol(format!(
                "a {}-byte frame, more than the {} allowed (FRAME_SIZE_ERROR)",
                head.len,
                frame::DEFAULT_MAX_FRAME
            )));
        }
        self.fill(frame::HEADER_LEN + head.len, deadline, started, stale)?;
        let start = self.pos + frame::HEADER_LEN;
        let payload = self.inbuf[start..start + head.len].to_vec();
        self.pos = start + head.len;
        self.seen_frame = true;
        Ok((head, payload))
    }

    fn handle(
        &mut self,
        head: Head,
        payload: Vec<u8>,
        st: &mut Stream,
        deadline: Deadline,
        started: Instant,
    ) -> Result<(), Failure> {
        match head.kind {
            frame::DATA => {
                if head.stream != st.id || st.ended {
                    return Err(
                        self.protocol(format!("DATA on stream {}, which is not open", head.stream))
                    );
                }
                st.answered = true;
                let len = payload.len() as u32;
                self.unacked += len;
                st.unacked += len;
                let data = frame::unpadded(&head, &payload)
                    .ok_or_else(|| self.protocol("DATA with bad padding"))?;
                let Some(headers) = &st.headers else {
                    return Err(self.protocol("DATA before the response headers"));
                };
                if !headers.is_grpc() {
                    // Not gRPC (an error page): keep a little, for nothing but the check.
                    let room = 1024usize.saturating_sub(st.data.len());
                    st.data.extend_from_slice(&data[..data.len().min(room)]);
                } else if st.data.len() + data.len() > 5 + MAX_MESSAGE {
                    self.broken = true;
                    return Err(Failure::new(
                        Code::ResourceExhausted,
                        format!(
                            "the response is larger than the {} MiB limit",
                            MAX_MESSAGE >> 20
                        ),
                    ));
                } else {
                    st.data.extend_from_slice(data);
                }
                if headers.is_grpc() && st.data.len() >= 5 {
                    let declared =
                        u32::from_be_bytes([st.data[1], st.data[2], st.data[3], st.data[4]]);
                    if declared as usize > MAX_MESSAGE {
                        self.broken = true;
                        return Err(Failure::new(
                            Code::ResourceExhausted,
                            format!(
                                "the response message of {declared} bytes is larger than the {} MiB limit",
                                MAX_MESSAGE >> 20
                            ),
                        ));
                    }
                }
                if head.has(frame::FLAG_END_STREAM) {
                    st.ended = true;
                }
                if self.unacked >= WINDOW_THRESHOLD {
                    frame::put_window_update(&mut self.out, 0, self.unacked);
                    self.unacked = 0;
                }
                if !st.ended && st.unacked >= WINDOW_THRESHOLD {
                    frame::put_window_update(&mut self.out, st.id, st.unacked);
                    st.unacked = 0;
                }
            }
            frame::HEADERS => {
                if head.stream != st.id || st.ended {
                    return Err(self.protocol(format!(
                        "HEADERS on stream {}, which is not open",
                        head.stream
                    )));
                }
                st.answered = true;
                let mut block = frame::unpadded(&head, &payload)
                    .ok_or_else(|| self.protocol("HEADERS with bad padding"))?
                    .to_vec();
                let mut end_headers = head.has(frame::FLAG_END_HEADERS);
                while !end_headers {
                    let (next, more) = self.read_frame(deadline, started, false)?;
                    if next.kind != frame::CONTINUATION || next.stream != st.id {
                        return Err(self.protocol("a header block not continued by CONTINUATION"));
                    }
                    if block.len() + more.len() > MAX_HEADER_LIST {
                        self.broken = true;
                        return Err(Failure::new(
                            Code::ResourceExhausted,
                            format!("a header block larger than {} KiB", MAX_HEADER_LIST >> 10),
                        ));
                    }
                    block.extend_from_slice(&more);
                    end_headers = next.has(frame::FLAG_END_HEADERS);
                }
                let fields = self.decode(&block)?;
                let end_stream = head.has(frame::FLAG_END_STREAM);
                if st.headers.is_none() {
                    st.headers = Some(fields);
                    st.trailers_only = end_stream;
                } else if end_stream {
                    st.trailers = Some(fields);
                } else {
                    return Err(self.protocol("trailers without END_STREAM"));
                }
                st.ended |= end_stream;
            }
            frame::RST_STREAM => {
                let code = frame::u32_at(&payload, 0)
                    .filter(|_| payload.len() == 4)
                    .ok_or_else(|| self.protocol("RST_STREAM of the wrong size"))?;
                if head.stream == 0 {
                    return Err(self.protocol("RST_STREAM on stream 0"));
                }
                if head.stream == st.id {
                    st.answered = true;
                    st.reset = Some(code);
                }
            }
            frame::SETTINGS => {
                if head.stream != 0 {
                    return Err(self.protocol("SETTINGS on a stream"));
                }
                if head.has(frame::FLAG_ACK) {
                    if !payload.is_empty() {
                        return Err(self.protocol("SETTINGS ACK with a payload"));
                    }
                } else {
                    let settings = frame::settings(&payload)
                        .ok_or_else(|| self.protocol("SETTINGS of the wrong size"))?;
                    for (id, value) in settings {
                        self.apply_setting(id, value, st)?;
                    }
                    frame::put(&mut self.out, frame::SETTINGS, frame::FLAG_ACK, 0, &[]);
                }
            }
            frame::PING => {
                if head.stream != 0 || payload.len() != 8 {
                    return Err(self.protocol("PING of the wrong size or on a stream"));
                }
                if !head.has(frame::FLAG_ACK) {
                    frame::put(&mut self.out, frame::PING, frame::FLAG_ACK, 0, &payload);
                }
            }
            frame::GOAWAY => {
                let (Some(last), Some(code)) =
                    (frame::u32_at(&payload, 0), frame::u32_at(&payload, 4))
                else {
                    return Err(self.protocol("GOAWAY of the wrong size"));
                };
                let last = last & 0x7fff_ffff;
                self.goaway = true;
                let debug = String::from_utf8_lossy(&payload[8..]);
                let debug = one_line(&debug, 200);
                log::debug!(
                    "grpc {}: GOAWAY {} (last stream {last}) {debug}",
                    self.authority,
                    frame::error_name(code)
                );
                if st.id > last {
                    self.broken = true;
                    return Err(Failure {
                        status: Status::new(
                            Code::Unavailable,
                            format!(
                                "{} closed the connection (GOAWAY {}{}{}) before taking the call",
                                self.authority,
                                frame::error_name(code),
                                if debug.is_empty() { "" } else { ": " },
                                debug
                            ),
                        ),
                        retry: true,
                    });
                }
            }
            frame::WINDOW_UPDATE => {
                let increment = frame::u32_at(&payload, 0)
                    .filter(|_| payload.len() == 4)
                    .ok_or_else(|| self.protocol("WINDOW_UPDATE of the wrong size"))?
                    & 0x7fff_ffff;
                if increment == 0 {
                    return Err(self.protocol("WINDOW_UPDATE of 0"));
                }
                let window = if head.stream == 0 {
                    &mut self.send_window
                } else if head.stream == st.id {
                    &mut st.send_window
                } else {
                    return Ok(()); // a stream that is already closed
                };
                *window += i64::from(increment);
                if *window > frame::MAX_WINDOW {
                    return Err(
                        self.protocol("a flow-control window above 2^31-1 (FLOW_CONTROL_ERROR)")
                    );
                }
            }
            frame::PUSH_PROMISE => {
                return Err(self.protocol("PUSH_PROMISE, though push is disabled"));
            }
            frame::CONTINUATION => return Err(self.protocol("CONTINUATION without HEADERS")),
            _ => {} // PRIORITY, and frame types this client does not know, are ignored.
        }
        Ok(())
    }

    fn apply_setting(&mut self, id: u16, value: u32, st: &mut Stream) -> Result<(), Failure> {
        match id {
            frame::SETTINGS_HEADER_TABLE_SIZE => {
                let size = (value as usize).min(TABLE_SIZE);
                if size != self.encoder_table {
                    self.encoder.set_max_table_size(size);
                    self.encoder_table = size;
                    self.table_update = Some(size);
                }
            }
            frame::SETTINGS_ENABLE_PUSH if value > 1 => {
                return Err(self.protocol("SETTINGS_ENABLE_PUSH above 1"));
            }
            frame::SETTINGS_INITIAL_WINDOW_SIZE => {
                if i64::from(value) > frame::MAX_WINDOW {
                    return Err(self.protocol("SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1"));
                }
                st.send_window += i64::from(value) - self.peer_initial_window;
                self.peer_initial_window = i64::from(value);
            }
            frame::SETTINGS_MAX_FRAME_SIZE
                if !(frame::DEFAULT_MAX_FRAME as u32..=frame::MAX_FRAME_LIMIT).contains(&value) =>
            {
                return Err(self.protocol("SETTINGS_MAX_FRAME_SIZE out of range"));
            }
            // We send frames of at most 16 KiB, which every peer accepts.
            _ => {}
        }
        Ok(())
    }

    fn decode(&mut self, block: &[u8]) -> Result<Fields, Failure> {
        let mut fields = Fields::default();
        let mut total = 0usize;
        let decoded = self.decoder.decode_with_cb(block, |name, value| {
            total += name.len() + value.len() + 32;
            if total <= MAX_HEADER_LIST {
                fields.keep(&name, &value);
            }
        });
        if let Err(e) = decoded {
            return Err(self.protocol(format!("a header block HPACK cannot decode ({e:?})")));
        }
        if total > MAX_HEADER_LIST {
            self.broken = true;
            return Err(Failure::new(
                Code::ResourceExhausted,
                format!("a header list larger than {} KiB", MAX_HEADER_LIST >> 10),
            ));
        }
        Ok(fields)
    }

    /// The call's result from the finished stream.
    fn finish(&mut self, st: Stream) -> Result<Vec<u8>, Failure> {
        if let Some(code) = st.reset {
            let (status, what) = match code {
                frame::REFUSED_STREAM => (Code::Unavailable, "refused the call"),
                frame::CANCEL => (Code::Cancelled, "cancelled the call"),
                frame::ENHANCE_YOUR_CALM => (Code::ResourceExhausted, "asked to slow down"),
                frame::INADEQUATE_SECURITY => (Code::PermissionDenied, "wants stronger TLS"),
                _ => (Code::Internal, "reset the call"),
            };
            return Err(Failure {
                status: Status::new(
                    status,
                    format!(
                        "{} {what} (RST_STREAM {})",
                        self.authority,
                        frame::error_name(code)
                    ),
                ),
                retry: code == frame::REFUSED_STREAM,
            });
        }
        let Some(headers) = st.headers else {
            return Err(self.protocol("the stream ended without response headers"));
        };
        let trailers = match (&st.trailers, st.trailers_only) {
            (Some(t), _) => Some(t),
            (None, true) => Some(&headers),
            (None, false) => None,
        };
        let http = headers
            .status
            .as_deref()
            .and_then(|s| s.parse::<u16>().ok());
        let content_type = headers.content_type.as_deref().unwrap_or("");
        let is_grpc = content_type.starts_with("application/grpc");
        let Some(raw_status) = trailers.and_then(|t| t.grpc_status.as_deref()) else {
            let shown = one_line(content_type, 80);
            let (code, what) = match http {
                Some(200) if is_grpc => (
                    Code::Internal,
                    "the call ended without a grpc-status".to_string(),
                ),
                Some(200) => (
                    Code::Unknown,
                    format!("not a gRPC response (HTTP 200, content-type {shown:?})"),
                ),
                Some(s) => (
                    Code::from_http(s),
                    format!("HTTP {s} without a grpc-status (content-type {shown:?})"),
                ),
                None => (Code::Internal, "a response without :status".to_string()),
            };
            return Err(Failure::new(code, what));
        };
        let message = trailers
            .and_then(|t| t.grpc_message.as_deref())
            .map(|m| one_line(&percent_decode(m), 300))
            .unwrap_or_default();
        let code = match raw_status
            .trim()
            .parse::<u32>()
            .ok()
            .and_then(Code::from_u32)
        {
            Some(code) => code,
            None => {
                return Err(Failure::new(
                    Code::Unknown,
                    format!(
                        "grpc-status {:?} is not a status code; {message}",
                        one_line(raw_status, 16)
                    ),
                ));
            }
        };
        if code != Code::Ok {
            return Err(Failure::new(code, message));
        }
        if !is_grpc {
            return Err(Failure::new(
                Code::Unknown,
                format!(
                    "not a gRPC response (content-type {:?})",
                    one_line(content_type, 80)
                ),
            ));
        }
        let data = st.data;
        if data.len() < 5 {
            return Err(Failure::new(
                Code::Internal,
                "the server sent no response message",
            ));
        }
        match data[0] {
            0 => {}
            1 => {
                return Err(Failure::new(
                    Code::Internal,
                    "a compressed response message, though no compression was offered",
                ));
            }
            flag => {
                return Err(Failure::new(
                    Code::Internal,
                    format!("a message flag of {flag}"),
                ));
            }
        }
        let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
        if data.len() != 5 + len {
            return Err(Failure::new(
                Code::Internal,
                format!(
                    "{} response bytes for one message of {len}: a unary call has exactly one",
                    data.len() - 5
                ),
            ));
        }
        Ok(data[5..].to_vec())
    }

    /// A protocol violation by the server: the connection is closed.
    fn protocol(&mut self, what: impl AsRef<str>) -> Failure {
        self.broken = true;
        Failure::new(
            Code::Internal,
            format!(
                "HTTP/2 protocol error from {}: {}",
                self.authority,
                what.as_ref()
            ),
        )
    }

    fn timed_out(&self, started: Instant) -> Failure {
        Failure::new(
            Code::DeadlineExceeded,
            format!("no answer from {} within {}", self.authority, secs(started)),
        )
    }

    fn closed(&mut self, stale: bool) -> Failure {
        self.broken = true;
        let hint = if !self.seen_frame && !self.tls {
            " (does it want TLS?)"
        } else {
            ""
        };
        Failure {
            status: Status::new(
                Code::Unavailable,
                format!("{} closed the connection{hint}", self.authority),
            ),
            retry: stale,
        }
    }

    fn io_failure(&mut self, e: io::Error, started: Instant, stale: bool) -> Failure {
        self.broken = true;
        if is_timeout(&e) {
            return self.timed_out(started);
        }
        if matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
        ) && tls_error(&e).is_none()
        {
            return self.closed(stale);
        }
        Failure {
            status: Status::new(
                Code::Unavailable,
                format!("connection to {} failed: {}", self.authority, io_text(&e)),
            ),
            retry: stale,
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn tls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// An I/O error as one line; rustls errors (alerts, certificate problems) as rustls says them.
fn io_text(e: &io::Error) -> String {
    match tls_error(e) {
        Some(t) => one_line(&format!("TLS: {t}"), 200),
        None => one_line(&e.to_string(), 200),
    }
}
