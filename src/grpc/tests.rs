//! The client against a tiny in-process HTTP/2 server that each test scripts frame by frame.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use loona_hpack::{Decoder, Encoder};

use super::frame::{self, Head};
use super::*;

const WAIT: Duration = Duration::from_secs(5);
const PATH: &str = "/pkg.Service/Method";

/// The server side of one connection.
struct Peer {
    s: TcpStream,
    enc: Encoder<'static>,
    dec: Decoder<'static>,
    /// Frames seen by `read_request` that were not part of the request.
    others: Vec<(Head, Vec<u8>)>,
}

struct Req {
    stream: u32,
    headers: Vec<(String, String)>,
    block: Vec<u8>,
    body: Vec<u8>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Peer {
    /// Accepts a connection, checks the preface and the client's SETTINGS, sends ours.
    fn accept(listener: &TcpListener, settings: &[(u16, u32)]) -> Peer {
        let (s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut p = Peer {
            s,
            enc: Encoder::new(),
            dec: Decoder::new(),
            others: Vec::new(),
        };
        let mut preface = [0u8; 24];
        p.s.read_exact(&mut preface).unwrap();
        assert_eq!(&preface[..], frame::PREFACE);
        let (head, payload) = p.read_frame();
        assert_eq!(head.kind, frame::SETTINGS);
        let got = frame::settings(&payload).unwrap();
        assert!(got.contains(&(frame::SETTINGS_ENABLE_PUSH, 0)), "{got:?}");
        let mut out = Vec::new();
        frame::put_settings(&mut out, settings);
        p.s.write_all(&out).unwrap();
        p
    }

    fn read_frame(&mut self) -> (Head, Vec<u8>) {
        let mut raw = [0u8; 9];
        self.s.read_exact(&mut raw).unwrap();
        let head = Head::parse(&raw);
        let mut payload = vec![0; head.len];
        self.s.read_exact(&mut payload).unwrap();
        (head, payload)
    }

    /// Reads frames until a request stream ends.
    fn read_request(&mut self) -> Req {
        let mut req = Req {
            stream: 0,
            headers: Vec::new(),
            block: Vec::new(),
            body: Vec::new(),
        };
        loop {
            let (head, payload) = self.read_frame();
            match head.kind {
                frame::HEADERS | frame::CONTINUATION => {
                    req.stream = head.stream;
                    req.block.extend_from_slice(&payload);
                    if head.has(frame::FLAG_END_HEADERS) {
                        let block = req.block.clone();
                        for (n, v) in self.dec.decode(&block).unwrap() {
                            req.headers.push((
                                String::from_utf8(n).unwrap(),
                                String::from_utf8(v).unwrap(),
                            ));
                        }
                    }
                }
                frame::DATA => {
                    req.body.extend_from_slice(&payload);
                    if head.has(frame::FLAG_END_STREAM) {
                        return req;
                    }
                }
                _ => self.others.push((head, payload)),
            }
        }
    }

    fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let mut out = Vec::new();
        frame::put(&mut out, kind, flags, stream, payload);
        self.s.write_all(&out).unwrap();
    }

    fn block(&mut self, fields: &[(&str, &str)]) -> Vec<u8> {
        self.enc
            .encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
    }

    fn send_headers(&mut self, stream: u32, fields: &[(&str, &str)], end_stream: bool) {
        let block = self.block(fields);
        let flags = frame::FLAG_END_HEADERS
            | if end_stream {
                frame::FLAG_END_STREAM
            } else {
                0
            };
        self.send(frame::HEADERS, flags, stream, &block);
    }

    fn send_message(&mut self, stream: u32, message: &[u8]) {
        let mut data = vec![0];
        data.extend_from_slice(&(message.len() as u32).to_be_bytes());
        data.extend_from_slice(message);
        self.send(frame::DATA, 0, stream, &data);
    }

    fn respond(&mut self, stream: u32, message: &[u8]) {
        self.send_headers(
            stream,
            &[(":status", "200"), ("content-type", "application/grpc")],
            false,
        );
        self.send_message(stream, message);
        self.send_headers(stream, &[("grpc-status", "0")], true);
    }

    /// Closes the connection cleanly (FIN, not RST): first reads what the client sends
    /// unasked (its SETTINGS ACK), so nothing unread is left behind.
    fn close(mut self) {
        while !self
            .others
            .iter()
            .any(|(h, _)| h.kind == frame::SETTINGS && h.has(frame::FLAG_ACK))
        {
            let f = self.read_frame();
            self.others.push(f);
        }
        let _ = self.s.shutdown(std::net::Shutdown::Both);
    }

    /// Reads until the client closes the connection.
    fn drain(&mut self) {
        let mut buf = [0u8; 4096];
        while matches!(self.s.read(&mut buf), Ok(n) if n > 0) {}
    }
}

/// A server thread running `script` with the listener; join it to see its panics.
fn fake_server(script: impl FnOnce(TcpListener) + Send + 'static) -> (Channel, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = thread::spawn(move || script(listener));
    let target = Target {
        host: "127.0.0.1".into(),
        port,
    };
    (Channel::new(target, None, "fas-test"), handle)
}

fn deadline() -> Deadline {
    Deadline::after(WAIT)
}

fn call(channel: &Channel, metadata: &[(&str, &str)], message: &[u8]) -> Result<Vec<u8>, Status> {
    channel.unary(PATH, metadata, message, deadline())
}

#[test]
fn a_unary_call_sends_grpc_headers_and_reads_one_message() {
    let (channel, server) = fake_server(|l| {
        let mut p = Peer::accept(&l, &[]);
        let req = p.read_request();
        assert_eq!(req.stream, 1);
        assert_eq!(req.header(":method"), Some("POST"));
        assert_eq!(req.header(":scheme"), Some("http"));
        assert_eq!(req.header(":path"), Some(PATH));
        assert!(req.header(":authority").unwrap().starts_with("127.0.0.1:"));
        assert_eq!(req.header("content-type"), Some("application/grpc"));
        assert_eq!(req.header("te"), Some("trailers"));
        assert_eq!(req.header("user-agent"), Some("fas-test"));
        let timeout = req.header("grpc-timeout").unwrap();
        assert!(timeout.ends_with('u') && timeout.len() <= 9, "{timeout}");
        assert_eq!(req.header("temporal-namespace"), Some("ns"));
        assert_eq!(req.header("authorization"), Some("Bearer k"));
        // authorization is a literal never indexed (0001xxxx), name index 23.
        let i = req
            .block
            .windows(2)
            .position(|w| w == [0x1f, 0x08])
            .unwrap();
        assert_eq!(&req.block[i + 2..i + 11], b"\x08Bearer k");
        assert_eq!(req.body, b"\x00\x00\x00\x00\x03abc");
        p.respond(req.stream, b"xyz");
        p.drain();
    });
    let reply = call(
        &channel,
        &[("temporal-namespace", "ns"), ("authorization", "Bearer k")],
        b"abc",
    );
    assert_eq!(reply.unwrap(), b"xyz");
    assert_eq!(channel.idle_connections(), 1);
    drop(channel);
    server.join().unwrap();
}

#[test]
fn a_connection_is_kept_and_reused_with_its_hpack_state() {
    let (channel, server) = fake_server(|l| {
        let mut p = Peer::accept(&l, &[(frame::SETTINGS_HEADER_TABLE_SIZE, 0)]);
        let first = p.read_request();
        p.respond(first.stream, b"1");
        let second = p.read_request();
        assert_eq!(second.stream, 3);
        // The table size we set arrived before the second block: it opens with a size update.
        assert_eq!(second.block[0], 0x20);
        assert_eq!(second.header(":path"), Some(PATH));
        assert_eq!(second.header("x-a"), Some("b"));
        p.respond(second.stream, b"2");
        p.drain();
    });
    assert_eq!(call(&channel, &[("x-a", "b")], b"").unwrap(), b"1");
    assert_eq!(call(&channel, &[("x-a", "b")], b"").unwrap(), b"2");
    drop(channel);
    server.join().unwrap();
}

#[test]
fn trailers_only_statuses_are_decoded_to_one_line() {
    let (channel, server) = fake_server(|l| {
        let mut p = Peer::accept(&l, &[]);
        let req = p.read_request();
        p.send_headers(
            req.stream,
            &[
                (":status", "200"),
                ("content-type", "application/grpc"),
                ("grpc-status", "5"),
                (
                    "grpc-message",
                    "Namespace%20x%20is%20not%20found.%0Asecond line %zz",
                ),
            ],
            true,
        );
        let req = p.read_request();
        p.send_headers(
            req.stream,
            &[
                (":status", "200"),
                ("content-type", "application/grpc"),
                ("grpc-status", "99"),
            ],
            true,
        );
        let req = p.read_request();
        p.send_headers(
            req.stream,
            &[(":status", "503"), ("content-type", "text/plain")],
            true,
        );
        let req = p.read_request();
        p.send_headers(
            req.stream,
            &[(":status", "200"), ("content-type", "text/html")],
            false,
        );
        p.send(frame::DATA, frame::FLAG_END_STREAM, req.stream, b"<html>");
        p.drain();
    });
    let err = call(&channel, &[], b"").unwrap_err();
    assert_eq!(err.code, Code::NotFound);
    assert_eq!(err.message, "Namespace x is not found.\\nsecond line %zz");
    assert_eq!(
        err.to_string(),
        "NOT_FOUND: Namespace x is not found.\\nsecond line %zz"
    );
    let err = call(&channel, &[], b"").unwrap_err();
    assert_eq!(err.code, Code::Unknown, "{err}");
    let err = call(&channel, &[], b"").unwrap_err();
    assert_eq!(err.code, Code::Unavailable, "{err}");
    assert!(
        err.message.starts_with("HTTP 503 without a grpc-status"),
        "{err}"
    );
    let err = call(&channel, &[], b"").unwrap_err();
    assert_eq!(err.code, Code::Unknown, "{err}");
    assert!(err.message.contains("not a gRPC response"), "{err}");
    drop(channel);
    server.join().unwrap();
}

#[test]
fn response_headers_may_continue_in_continuation_frames() {
    let (channel, server) = fake_server(|l| {
        let mut p = Peer::accept(&l, &[]);
        let req = p.read_request();
        let block = p.block(&[
            (":status", "200"),
            ("content-type", "application/grpc"),
            ("x-long", &"v".repeat(100)),
        ]);
        let (a, rest) = block.split_at(10);
        let (b, c) = rest.split_at(50);
        p.send(frame::HEADERS, 0, req.stream, a);
        p.send(frame::CONTINUATION, 0, req.stream, b);
        p.send(frame::CONTINUATION, frame::FLAG_END_HEADERS, req.stream, c);
        p.send_message(req.stream, b"ok");
        // Padded trailers.
        let trailers = p.block(&[("grpc-status", "0")]);
        let mut padded = vec![3];
        padded.extend_from_slice(&trailers);
        padded.extend_from_slice(&[0, 0, 0]);
        p.send(
            frame::HEADERS,
            frame::FLAG_END_HEADERS | frame::FLAG_END_STREAM | frame::FLAG_PADDED,
            req.stream,
            &padded,
        );
        p.drain();
    });
    assert_eq!(call(&channel, &[], b"").unwrap(), b"ok");
    drop(channel);
    server.join().unwrap();
}

#[test]
fn pings_are_acknowledged_and_settings_too() {
    let (channel, server) = fake_server(|l| {
        let mut p = Peer::accept(&l, &[]);
        let req = p.read_request();
        p.send(frame::PING, 0, 0, b"12345678");
        // An unknown frame type and a PRIORITY frame are ignored.
        p.send(0x42, 0, 0, b"?");
        p.send(0x2, 0, req.stream, &[0, 0, 0, 0, 16]);
        let mut settings_ack = p
            .others
            .iter()
            .any(|(h, _)| h.kind == frame::SETTINGS && h.has(frame::FLAG_ACK));
        loop {
            let (head, payload) = p.read_frame();
            settings_ack |= head.kind == frame::SETTINGS && head.has(frame::FLAG_ACK);
            if head.kind == frame::PING {
                assert!(head.has(frame::FLAG_ACK));
                assert_eq!(payload, b"12345678");
                break;
            }
        }
        assert!(
            settings_ack,
            "our SETTINGS were acknowledged before the PING"
        );
        p.respond(req.stream, b"pong");
        p.drain();
    });
    assert_eq!(call(&channel, &[], b"").unwrap(), b"pong");
    drop(channel);
    server.join().unwrap();
}

#[test]
fn a_large_response_in_many_data_frames_gets_window_updates() {
    let message: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    let expected = message.clone();
    let (channel, server) = fake_server(move |l| {
        let mut p = Peer::accept(&l, &[]);
        let req = p.read_request();
        p.send_headers(
            req.stream,
            &[(":status", "200"), ("content-type", "application/grpc")],
            false,
        );
        let mut data = vec![0];
        data.extend_from_slice(&(message.len() as u32).to_be_bytes());
        data.extend_from_slice(&message);
        let (mut conn_window, mut stream_window) = (65_535i64, 65_535i64);
        let mut sent = 0;
        while sent < data.len() {
            while conn_window <= 0 || stream_window <= 0 {
                let (head, payload) = p.read_frame();
                if head.kind == frame::WINDOW_UPDATE {
                    let inc = i64::from(frame::u32_at(&payload, 0).unwrap());
                    if head.stream == 0 {
                        conn_window += inc;
                    } else {
                        assert_eq!(head.stream, req.stream);
                        stream_window += inc;
                    }
                }
            }
            let n = (conn_window.min(stream_window) as usize)
                .min(16_384)
                .min(data.len() - sent);
            p.send(frame::DATA, 0, req.stream, &data[sent..sent + n]);
            sent += n;
            conn_window -= n as i64;
            stream_window -= n as i64;
        }
        p.send_headers(req.stream, &[("grpc-status", "0")], true);
        p.drain();
    });
    assert_eq!(call(&channel, &[], b"").unwrap(), expected);
    drop(channel);
    server.join().unwrap();
}

#[test]
fn a_large_request_waits_for_the_servers_window() {
    let message = vec![7u8; 150_000];
    let (channel, server) = fake_server(|l| {
        let mut p = Peer::accept(&l, &[]);
        let mut allowed = 65_535usize;
        let mut got = 0usize;
        let mut stream = 0;
        loop {
            let (head, payload) = p.read_frame();
            match head.kind {
                frame::HEADERS => stream = head.stream,
                frame::DATA => {
                    got += payload.len();
                    assert!(
                        got <= allowed,
                        "the client sent {got} bytes, {allowed} allowed"
                    );
                    if head.has(frame::FLAG_END_STREAM) {
                        break;
                    }
                    if got == allowed {
                        let mut out = Vec::new();
                        frame::put_window_update(&mut out, 0, 65_535);
                        frame::put_window_update(&mut out, stream, 65_535);
                        p.s.write_all(&out).unwrap();
                        allowed += 65_535;
                    }
                }
                _ => {}
            }
        }
        assert_eq!(got, 150_005);
        p.respond(stream, b"done");
        p.drain();
    });
    assert_eq!(call(&channel, &[], &message).unwrap(), b"done");
    drop(channel);
    server.join().unwrap();
}

#[test]
fn goaway_before_the_call_is_retried_on_a_new_connection() {
    let (channel, server) = fake_server(|l| {
        let mut first = Peer::accept(&l, &[]);
        let req = first.read_request();
        first.respond(req.stream, b"a");
        // Graceful shutdown: stream 1 was handled, stream 3 will not be.
        let mut out = Vec::new();
        frame::put_goaway(&mut out, 1, frame::NO_ERROR);
        first.s.write_all(&out).unwrap();
        let late = first.read_request();
        assert_eq!(late.stream, 3);
        drop(first);
        let mut second = Peer::accept(&l, &[]);
        let req = second.read_request();
        assert_eq!(req.stream, 1);
        second.respond(req.stream, b"b");
        second.drain();
    });
    assert_eq!(call(&channel, &[], b"").unwrap(), b"a");
    assert_eq!(call(&channel, &[], b"").unwrap(), b"b");
    drop(channel);
    server.join().unwrap();
}

#[test]
fn goaway_after_the_call_was_taken_lets_it_finish_but_drops_the_connection() {
    let (channel, server) = fake_server(|l| {
        let mut p = Peer::accept(&l, &[]);
        let req = p.read_request();
        let mut out = Vec::new();
        frame::put_goaway(&mut out, req.stream, frame::NO_ERROR);
        p.s.write_all(&out).unwrap();
        p.respond(req.stream, b"last");
        p.drain();
    });
    assert_eq!(call(&channel, &[], b"").unwrap(), b"last");
    assert_eq!(channel.idle_connections(), 0);
    drop(channel);
    server.join().unwrap();
}

#[test]
fn a_connection_closed_while_idle_is_replaced() {
    let (channel, server) = fake_server(|l| {
        let mut first = Peer::accept(&l, &[]);
        let req = first.read_request();
        first.respond(req.stream, b"a");
        first.close();
        let mut second = Peer::accept(&l, &[]);
        let req = second.read_request();
        second.respond(req.stream, b"b");
        second.drain();
    });
    assert_eq!(call(&channel, &[], b"").unwrap(), b"a");
    assert_eq!(call(&channel, &[], b"").unwrap(), b"b");
    drop(channel);
    server.join().unwrap();
}

#[test]
fn rst_stream_ends_the_call_and_refused_streams_are_sent_again() {
    let (channel, server) = fake_server(|l| {
        let mut p = Peer::accept(&l, &[]);
        let req = p.read_request();
        p.send(
            frame::RST_STREAM,
            0,
            req.stream,
            &frame::CANCEL.to_be_bytes(),
        );
        let req = p.read_request();
        assert_eq!(req.stream, 3);
        p.send(
            frame::RST_STREAM,
            0,
            req.stream,
            &frame::REFUSED_STREAM.to_be_bytes(),
        );
        // Sent again, on a new connection.
        let mut second = Peer::accept(&l, &[]);
        let again = second.read_request();
        assert_eq!(again.stream, 1);
        second.respond(again.stream, b"ok");
        p.drain();
        second.drain();
    });
    let err = call(&channel, &[], b"").unwrap_err();
    assert_eq!(err.code, Code::Cancelled);
    assert!(err.message.contains("RST_STREAM CANCEL"), "{err}");
    assert_eq!(call(&channel, &[], b"").unwrap(), b"ok");
    drop(channel);
    server.join().unwrap();
}

#[test]
fn what_a_server_sends_is_bounded_and_checked() {
    // (server behaviour, expected code, text in the message)
    type Script = fn(&mut Peer, u32);
    let cases: [(Script, Code, &str); 7] = [
        (
            |p, s| {
                p.send_headers(
                    s,
                    &[(":status", "200"), ("content-type", "application/grpc")],
                    false,
                );
                let mut raw = vec![0, 0x4e, 0x20, frame::DATA, 0, 0, 0, 0, s as u8];
                raw.extend_from_slice(&[0; 100]);
                p.s.write_all(&raw).unwrap();
            },
            Code::Internal,
            "a 20000-byte frame",
        ),
        (
            |p, s| {
                p.send_headers(
                    s,
                    &[(":status", "200"), ("content-type", "application/grpc")],
                    false,
                );
                p.send(frame::DATA, 0, s, &[0, 0, 0x50, 0, 0]);
            },
            Code::ResourceExhausted,
            "5242880 bytes",
        ),
        (
            |p, s| {
                // 4000-byte value in the dynamic table, then referenced 20 times: 80 kB.
                let mut block = vec![0x40, 1, b'x'];
                let _ = loona_hpack::encoder::encode_integer_into(4000, 7, 0, &mut block);
                block.extend_from_slice(&[b'v'; 4000]);
                block.extend_from_slice(&[0x80 | 62; 20]);
                p.send(frame::HEADERS, frame::FLAG_END_HEADERS, s, &block);
            },
            Code::ResourceExhausted,
            "header list larger than 64 KiB",
        ),
        (
            |p, s| {
                p.send(
                    frame::HEADERS,
                    frame::FLAG_END_HEADERS,
                    s,
                    &[0xff, 0xff, 0xff, 0x7f],
                )
            },
            Code::Internal,
            "HPACK",
        ),
        (
            |p, s| {
                p.send_headers(
                    s,
                    &[(":status", "200"), ("content-type", "application/grpc")],
                    false,
                );
                p.send(frame::DATA, 0, s, &[1, 0, 0, 0, 1, 9]);
                p.send_headers(s, &[("grpc-status", "0")], true);
            },
            Code::Internal,
            "compressed",
        ),
        (
            |p, s| {
                p.send_headers(
                    s,
                    &[(":status", "200"), ("content-type", "application/grpc")],
                    false,
                );
                p.send_message(s, b"a");
                p.send_message(s, b"b");
                p.send_headers(s, &[("grpc-status", "0")], true);
            },
            Code::Internal,
            "exactly one",
        ),
        (
            |p, _| {
                p.send(
                    frame::PUSH_PROMISE,
                    frame::FLAG_END_HEADERS,
                    1,
                    &[0, 0, 0, 2],
                )
            },
            Code::Internal,
            "PUSH_PROMISE",
        ),
    ];
    for (script, code, text) in cases {
        let (channel, server) = fake_server(move |l| {
            let mut p = Peer::accept(&l, &[]);
            let req = p.read_request();
            script(&mut p, req.stream);
            p.drain();
        });
        let err = call(&channel, &[], b"").unwrap_err();
        assert_eq!(err.code, code, "{err}");
        assert!(err.message.contains(text), "{err}");
        assert!(!err.message.contains('\n'));
        drop(channel);
        server.join().unwrap();
    }
}

#[test]
fn a_server_that_never_answers_fails_within_the_deadline() {
    let (channel, server) = fake_server(|l| {
        let mut p = Peer::accept(&l, &[]);
        p.read_request();
        p.drain();
    });
    let started = Instant::now();
    let err = channel
        .unary(PATH, &[], b"", Deadline::after(Duration::from_millis(300)))
        .unwrap_err();
    assert_eq!(err.code, Code::DeadlineExceeded, "{err}");
    assert!(
        err.message.starts_with("no answer from 127.0.0.1:"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(channel.idle_connections(), 0);
    drop(channel);
    server.join().unwrap();

    // Accepted by the kernel, never by the program: no SETTINGS ever comes.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let channel = Channel::new(
        Target {
            host: "127.0.0.1".into(),
            port: silent.local_addr().unwrap().port(),
        },
        None,
        "t",
    );
    let started = Instant::now();
    let err = channel
        .unary(PATH, &[], b"", Deadline::after(Duration::from_millis(300)))
        .unwrap_err();
    assert_eq!(err.code, Code::DeadlineExceeded, "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn an_http1_server_or_a_refused_connection_is_unavailable() {
    let (channel, server) = fake_server(|l| {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = [0u8; 24];
        s.read_exact(&mut buf).unwrap();
        s.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            .unwrap();
    });
    let err = call(&channel, &[], b"").unwrap_err();
    assert_eq!(err.code, Code::Unavailable);
    assert!(err.message.contains("answered in HTTP/1.x"), "{err}");
    server.join().unwrap();

    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let closed = Channel::new(
        Target {
            host: "127.0.0.1".into(),
            port,
        },
        None,
        "t",
    );
    let err = call(&closed, &[], b"").unwrap_err();
    assert_eq!(err.code, Code::Unavailable);
    assert!(
        err.message.starts_with("cannot connect to 127.0.0.1:"),
        "{err}"
    );

    // A server that closes at once (a TLS-only port, say) hints at TLS.
    let (channel, server) = fake_server(|l| {
        let (s, _) = l.accept().unwrap();
        drop(s);
    });
    let err = call(&channel, &[], b"").unwrap_err();
    assert_eq!(err.code, Code::Unavailable);
    assert!(err.message.contains("want TLS"), "{err}");
    server.join().unwrap();
}

#[test]
fn addresses_parse_like_grpc_targets() {
    let t = |a: &str| Target::parse(a).map(|t| (t.host, t.port));
    assert_eq!(t("temporal:7233"), Ok(("temporal".into(), 7233)));
    assert_eq!(
        t("dns:///ns.acct.tmprl.cloud:7233"),
        Ok(("ns.acct.tmprl.cloud".into(), 7233))
    );
    assert_eq!(t("[::1]:7233"), Ok(("::1".into(), 7233)));
    assert_eq!(
        Target::parse("[::1]:7233").unwrap().authority(),
        "[::1]:7233"
    );
    for bad in [
        "temporal",
        ":7233",
        "h:0",
        "h:x",
        "h:70000",
        "::1:7233",
        "grpc://h:1",
        "h:1/x",
        "[::1]",
        "[zz]:1",
    ] {
        assert!(Target::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn timeouts_messages_and_codes() {
    assert_eq!(timeout_header(Duration::from_secs(30)), "30000000u");
    assert_eq!(timeout_header(Duration::from_secs(1000)), "1000000m");
    assert_eq!(timeout_header(Duration::from_secs(200_000)), "200000S");
    assert_eq!(timeout_header(Duration::ZERO), "1u");
    assert_eq!(percent_decode(b"a%20b%2"), "a b%2");
    assert_eq!(percent_decode(b"%E2%9C%93"), "✓");
    assert_eq!(one_line("a\nb\r\u{1b}c\td", 100), "a\\nb\\r\\u{1b}c d");
    assert_eq!(one_line(&"x".repeat(10), 4), "xxxx…");
    assert_eq!(Code::from_u32(16), Some(Code::Unauthenticated));
    assert_eq!(Code::from_u32(17), None);
    assert_eq!(Code::PermissionDenied.name(), "PERMISSION_DENIED");
    assert_eq!(Code::from_http(401), Code::Unauthenticated);
    assert_eq!(Code::from_http(502), Code::Unavailable);
    assert_eq!(Code::from_http(500), Code::Unknown);
}
