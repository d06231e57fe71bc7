//! A real NATS server (Debian's `nats-server`, 2.9) with JetStream and the monitoring port on
//! free loopback ports, and the few client calls the tests need, in the NATS text protocol
//! over one TCP connection: create a stream and a pull consumer, publish (with JetStream
//! acks), fetch and acknowledge. Dropping it stops it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::{Value, json};

use super::process::{TempDir, file_tail, find_tool, http_get, start_server, terminate};

/// See the module docs.
pub struct Nats {
    child: Child,
    client_port: u16,
    monitor_port: u16,
    log: PathBuf,
    _dir: TempDir,
}

impl Nats {
    pub fn start() -> Nats {
        let bin = find_tool("NATS_SERVER_BIN", "nats-server");
        let dir = TempDir::new("nats");
        let log = dir.path().join("nats.log");
        let store = dir.path().join("jetstream");
        let (child, ports) = start_server(
            &log,
            2,
            |ports| {
                let mut cmd = Command::new(&bin);
                cmd.args(["-a", "127.0.0.1", "-p", &ports[0].to_string()])
                    .args(["-m", &ports[1].to_string(), "-js"])
                    .arg("-sd")
                    .arg(&store);
                cmd
            },
            |ports| {
                let url = format!("http://127.0.0.1:{}/healthz", ports[1]);
                matches!(
                    http_get(&url, &[("js-enabled", "true")], Duration::from_secs(2)),
                    Ok((200, _))
                )
            },
        );
        Nats {
            child,
            client_port: ports[0],
            monitor_port: ports[1],
            log,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT`, the monitoring endpoint (`/jsz`, `/varz`, …).
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    /// A connection to the client port, past `CONNECT`.
    pub fn connect(&self) -> NatsClient {
        NatsClient::connect(self.client_port)
            .unwrap_or_else(|e| panic!("nats client: {e}\n{}", file_tail(&self.log, 20)))
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(10));
    }
}

/// One client connection; every call waits for the server's answer (30 s at most).
pub struct NatsClient {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    next_sid: u32,
}

/// A message received: its reply subject and payload.
struct Msg {
    reply: String,
    payload: Vec<u8>,
}

impl NatsClient {
    fn connect(port: u16) -> std::io::Result<NatsClient> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut client = NatsClient {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
            next_sid: 1,
        };
        let mut info = String::new();
        client.reader.read_line(&mut info)?;
        client.send(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true}\r\nPING\r\n");
        client.until_pong();
        Ok(client)
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write to nats");
    }

    /// Reads protocol lines until `PONG`, answering the server's `PING`s.
    fn until_pong(&mut self) {
        loop {
            let line = self.line();
            match line.as_str() {
                "PONG" => return,
                "PING" => self.send(b"PONG\r\n"),
                l if l.starts_with("-ERR") => panic!("nats: {l}"),
                _ => {}
            }
        }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("read from nats");
        assert!(n > 0, "nats closed the connection");
        line.trim_end().to_string()
    }

    /// The next `MSG`/`HMSG` (headers dropped), answering `PING`s on the way.
    fn next_msg(&mut self) -> Msg {
        loop {
            let line = self.line();
            let parts: Vec<&str> = line.split(' ').collect();
            match parts[0] {
                "PING" => self.send(b"PONG\r\n"),
                "MSG" | "HMSG" => {
                    // MSG subject sid [reply] len / HMSG subject sid [reply] hlen len
                    let sizes = if parts[0] == "MSG" { 1 } else { 2 };
                    let reply = if parts.len() == 3 + sizes + 1 {
                        parts[3]
                    } else {
                        ""
                    };
                    let len: usize = parts[parts.len() - 1].parse().expect("message size");
                    let headers: usize = if sizes == 2 {
                        parts[parts.len() - 2].parse().expect("header size")
                    } else {
                        0
                    };
                    let mut body = vec![0u8; len + 2];
                    self.reader.read_exact(&mut body).expect("read message");
                    body.truncate(len);
                    return Msg {
                        reply: reply.to_string(),
                        payload: body[headers..].to_vec(),
                    };
                }
                l if l.starts_with("-ERR") => panic!("nats: {l}"),
                _ => {}
            }
        }
    }

    /// A request to the JetStream API; panics if it answers with an error.
    fn api(&mut self, subject: &str, request: &Value) -> Value {
        let inbox = format!("_INBOX.fas.{}", self.next_sid);
        let sid = self.subscribe(&inbox);
        let body = request.to_string();
        self.send(format!("PUB {subject} {inbox} {}\r\n{body}\r\n", body.len()).as_bytes());
        let msg = self.next_msg();
        self.send(format!("UNSUB {sid}\r\n").as_bytes());
        let answer: Value = serde_json::from_slice(&msg.payload).expect("JetStream API JSON");
        assert!(answer.get("error").is_none(), "{subject}: {answer}");
        answer
    }

    fn subscribe(&mut self, subject: &str) -> u32 {
        let sid = self.next_sid;
        self.next_sid += 1;
        self.send(format!("SUB {subject} {sid}\r\n").as_bytes());
        sid
    }

    /// A stream `name` (memory storage) on `subjects`.
    pub fn create_stream(&mut self, name: &str, subjects: &[&str]) {
        self.api(
            &format!("$JS.API.STREAM.CREATE.{name}"),
            &json!({"name": name, "subjects": subjects, "storage": "memory"}),
        );
    }

    /// A durable pull consumer `name` on `stream` with explicit acks.
    pub fn create_consumer(&mut self, stream: &str, name: &str) {
        self.api(
            &format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{name}"),
            &json!({"stream_name": stream, "config": {"durable_name": name, "ack_policy": "explicit"}}),
        );
    }

    /// Publishes `n` messages to `subject`, each acknowledged by JetStream (stored).
    pub fn publish(&mut self, subject: &str, n: usize) {
        let inbox = format!("_INBOX.pub.{}", self.next_sid);
        let sid = self.subscribe(&inbox);
        for i in 0..n {
            let body = format!("job {i}");
            self.send(format!("PUB {subject} {inbox} {}\r\n{body}\r\n", body.len()).as_bytes());
        }
        for _ in 0..n {
            let ack: Value = serde_json::from_slice(&self.next_msg().payload).expect("ack JSON");
            assert!(ack.get("error").is_none(), "publish: {ack}");
        }
        self.send(format!("UNSUB {sid}\r\n").as_bytes());
    }

    /// Fetches `n` messages (there must be as many) from a pull consumer and acks each.
    pub fn consume(&mut self, stream: &str, consumer: &str, n: usize) {
        let inbox = format!("_INBOX.fetch.{}", self.next_sid);
        let sid = self.subscribe(&inbox);
        let request = json!({"batch": n, "expires": 10_000_000_000u64}).to_string();
        self.send(
            format!(
                "PUB $JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer} {inbox} {}\r\n{request}\r\n",
                request.len()
            )
            .as_bytes(),
        );
        let mut got = 0;
        while got < n {
            let msg = self.next_msg();
            if msg.reply.starts_with("$JS.ACK.") {
                self.send(format!("PUB {} 0\r\n\r\n", msg.reply).as_bytes());
                got += 1;
            }
        }
        self.send(format!("UNSUB {sid}\r\nPING\r\n").as_bytes());
        self.until_pong();
    }
}
