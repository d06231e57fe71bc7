//! A TLS front for a plain-HTTP server (the Temporal dev server has no TLS flags), so the
//! Temporal collector's mTLS and API-key paths run against a real Temporal: certificates are
//! made with the `openssl` command, the proxy terminates TLS with rustls, optionally requires
//! a client certificate signed by the test CA, records each request head, and forwards the
//! request to the upstream server with `Connection: close`.
//!
//! With [`Options::alpn_h2`] it fronts a gRPC port instead: it offers ALPN `h2` and tunnels
//! each connection's bytes both ways unchanged, keeping the client's first 64 KiB so a test
//! can read the request headers ([`TlsProxy::h2_request_headers`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection, StreamOwned};

pub use flysim::harness::Pki;

/// The kept client bytes of each tunnelled connection.
type Tunnels = Arc<Mutex<Vec<Arc<Mutex<Vec<u8>>>>>>;

/// The TLS proxy. Dropping it stops it; a connection being served finishes on its own.
pub struct TlsProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    heads: Arc<Mutex<Vec<String>>>,
    tunnels: Tunnels,
    handshakes: Arc<AtomicUsize>,
    accept: Option<JoinHandle<()>>,
}

/// How the front behaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Only clients with a certificate signed by the PKI's CA get through.
    pub require_client_cert: bool,
    /// Offer ALPN `h2` and tunnel bytes (a gRPC upstream) instead of forwarding one HTTP/1
    /// request per connection.
    pub alpn_h2: bool,
}

/// Bytes of each tunnelled connection kept for [`TlsProxy::h2_request_headers`].
const KEEP: usize = 64 * 1024;

impl TlsProxy {
    /// Terminates TLS with the PKI's server certificate and forwards to `upstream`
    /// (`host:port`). With `require_client_cert`, only clients with a certificate signed by
    /// the PKI's CA get through.
    pub fn start(pki: &Pki, upstream: &str, require_client_cert: bool) -> TlsProxy {
        TlsProxy::start_with(
            pki,
            upstream,
            Options {
                require_client_cert,
                alpn_h2: false,
            },
        )
    }

    pub fn start_with(pki: &Pki, upstream: &str, options: Options) -> TlsProxy {
        let require_client_cert = options.require_client_cert;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(pki.pem("server.pem").as_bytes())
                .collect::<Result<_, _>>()
                .expect("server cert");
        let key =
            PrivateKeyDer::from_pem_slice(pki.pem("server.key").as_bytes()).expect("server key");
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .expect("protocol versions");
        let config = if require_client_cert {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(pki.pem("ca.pem").as_bytes()) {
                roots.add(c.expect("ca cert")).expect("add ca");
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("client verifier");
            builder
                .with_client_cert_verifier(verifier)
                .with_single_cert(certs, key)
        } else {
            builder.with_no_client_auth().with_single_cert(certs, key)
        }
        .expect("server config");
        let mut config = config;
        if options.alpn_h2 {
            config.alpn_protocols = vec![b"h2".to_vec()];
        }
        let config = Arc::new(config);

        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let tunnels: Tunnels = Arc::new(Mutex::new(Vec::new()));
        let handshakes = Arc::new(AtomicUsize::new(0));
        let (stop2, heads2, upstream) =
            (Arc::clone(&stop), Arc::clone(&heads), upstream.to_string());
        let (tunnels2, handshakes2) = (Arc::clone(&tunnels), Arc::clone(&handshakes));
        let accept = thread::spawn(move || {
            for tcp in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(tcp) = tcp else { continue };
                let (config, heads, upstream) =
                    (Arc::clone(&config), Arc::clone(&heads2), upstream.clone());
                let (tunnels, handshakes) = (Arc::clone(&tunnels2), Arc::clone(&handshakes2));
                thread::spawn(move || {
                    if options.alpn_h2 {
                        tunnel(tcp, config, &upstream, &tunnels, &handshakes)
                    } else {
                        serve(tcp, config, &upstream, &heads)
                    }
                });
            }
        });
        TlsProxy {
            port,
            stop,
            heads,
            tunnels,
            handshakes,
            accept: Some(accept),
        }
    }

    /// `127.0.0.1:<port>`: the bare address a gRPC client is given.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// TLS handshakes completed in tunnel mode (connections that got through).
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    /// Tunnel mode: every HTTP/2 request header list the clients sent, in order, decoded
    /// from the kept bytes of each connection.
    pub fn h2_request_headers(&self) -> Vec<Vec<(String, String)>> {
        let tunnels = self.tunnels.lock().unwrap().clone();
        tunnels
            .iter()
            .flat_map(|t| h2_header_lists(&t.lock().unwrap()))
            .collect()
    }

    /// `https://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The head (request line and headers) of every request that got through TLS.
    pub fn request_heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept thread, which then sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// One connection: one request, forwarded, answered, closed.
fn serve(
    tcp: TcpStream,
    config: Arc<ServerConfig>,
    upstream: &str,
    heads: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let conn = ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut tls = BufReader::new(StreamOwned::new(conn, tcp));
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if tls.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let end = line == "\r\n";
        let lower = line.to_ascii_lowercase();
        if !lower.starts_with("connection:") {
            head.push_str(&line);
        }
        if end {
            break;
        }
    }
    heads.lock().unwrap().push(head.clone());
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    tls.read_exact(&mut body)?;
    let mut up = TcpStream::connect(upstream)?;
    let request = format!("{}\r\nConnection: close\r\n\r\n", head.trim_end());
    up.write_all(request.as_bytes())?;
    up.write_all(&body)?;
    let mut response = Vec::new();
    up.read_to_end(&mut response)?;
    let tls = tls.get_mut();
    tls.write_all(&response)?;
    tls.flush()?;
    tls.conn.send_close_notify();
    let _ = tls.flush();
    let _ = tls.sock.shutdown(Shutdown::Both);
    Ok(())
}

/// One tunnelled connection: TLS handshake (counted once it completes), then bytes both ways
/// until either side closes. The rustls state is shared by the two directions under a lock
/// that is never held while blocking on a socket.
fn tunnel(
    tcp: TcpStream,
    config: Arc<ServerConfig>,
    upstream: &str,
    tunnels: &Tunnels,
    handshakes: &AtomicUsize,
) -> std::io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut conn = ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut sock = tcp;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    handshakes.fetch_add(1, Ordering::SeqCst);
    sock.set_read_timeout(None)?;
    let kept = Arc::new(Mutex::new(Vec::new()));
    tunnels.lock().unwrap().push(Arc::clone(&kept));
    let up = TcpStream::connect(upstream)?;
    let conn = Arc::new(Mutex::new(conn));

    // Upstream → client.
    let (mut up_read, mut sock_write) = (up.try_clone()?, sock.try_clone()?);
    let conn2 = Arc::clone(&conn);
    let back = thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = up_read.read(&mut buf).unwrap_or(0);
            let mut c = conn2.lock().unwrap();
            if n == 0 {
                c.send_close_notify();
            } else if c.writer().write_all(&buf[..n]).is_err() {
                break;
            }
            while c.wants_write() {
                if c.write_tls(&mut sock_write).is_err() {
                    return;
                }
            }
            if n == 0 {
                break;
            }
        }
        let _ = sock_write.shutdown(Shutdown::Write);
    });

    // Client → upstream.
    let (mut up_write, mut sock_write) = (up.try_clone()?, sock.try_clone()?);
    let mut raw = vec![0u8; 16 * 1024];
    let mut plain = vec![0u8; 16 * 1024];
    'outer: loop {
        let n = match sock.read(&mut raw) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut out = Vec::new();
        {
            let mut c = conn.lock().unwrap();
            let mut rest = &raw[..n];
            while !rest.is_empty() {
                if c.read_tls(&mut rest).is_err() || c.process_new_packets().is_err() {
                    break 'outer;
                }
                loop {
                    match c.reader().read(&mut plain) {
                        Ok(0) => break 'outer,
                        Ok(m) => out.extend_from_slice(&plain[..m]),
                        Err(_) => break,
                    }
                }
            }
            while c.wants_write() {
                if c.write_tls(&mut sock_write).is_err() {
                    break 'outer;
                }
            }
        }
        {
            let mut k = kept.lock().unwrap();
            let room = KEEP.saturating_sub(k.len());
            k.extend_from_slice(&out[..out.len().min(room)]);
        }
        if up_write.write_all(&out).is_err() {
            break;
        }
    }
    let _ = up.shutdown(Shutdown::Both);
    let _ = back.join();
    let _ = sock.shutdown(Shutdown::Both);
    Ok(())
}

/// The header lists of the HEADERS(+CONTINUATION) blocks in a client's HTTP/2 byte stream
/// (after the 24-byte preface), decoded with one HPACK decoder as the server would.
pub fn h2_header_lists(bytes: &[u8]) -> Vec<Vec<(String, String)>> {
    let mut lists = Vec::new();
    let mut decoder = loona_hpack::Decoder::new();
    let mut block = Vec::new();
    let mut at = 24.min(bytes.len());
    while at + 9 <= bytes.len() {
        let len = (usize::from(bytes[at]) << 16)
            | (usize::from(bytes[at + 1]) << 8)
            | usize::from(bytes[at + 2]);
        let (kind, flags) = (bytes[at + 3], bytes[at + 4]);
        let Some(payload) = bytes.get(at + 9..at + 9 + len) else {
            break;
        };
        at += 9 + len;
        if kind == 0x1 || kind == 0x9 {
            block.extend_from_slice(payload);
            if flags & 0x4 != 0 {
                let Ok(list) = decoder.decode(&block) else {
                    break;
                };
                lists.push(
                    list.into_iter()
                        .map(|(n, v)| {
                            (
                                String::from_utf8_lossy(&n).into_owned(),
                                String::from_utf8_lossy(&v).into_owned(),
                            )
                        })
                        .collect(),
                );
                block.clear();
            }
        }
    }
    lists
}
