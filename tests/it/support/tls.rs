//! A TLS front for a plain-HTTP server (the Temporal dev server has no TLS flags), so the
//! Temporal collector's mTLS and API-key paths run against a real Temporal: certificates are
//! made with the `openssl` command, the proxy terminates TLS with rustls, optionally requires
//! a client certificate signed by the test CA, records each request head, and forwards the
//! request to the upstream server with `Connection: close`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection, StreamOwned};

use flysim::harness::TempDir;

/// A CA and certificates it signed, as PEM files in a temporary directory.
pub struct Pki {
    dir: TempDir,
}

impl Pki {
    /// A CA (`ca`), a server certificate for 127.0.0.1/localhost (`server`) and a client
    /// certificate (`client`); `other_client` is signed by a different CA.
    pub fn new() -> Pki {
        let dir = TempDir::new("pki");
        let sh = |script: &str| {
            let out = Command::new("sh")
                .arg("-ec")
                .arg(script)
                .current_dir(dir.path())
                .output()
                .expect("run openssl (is the openssl package installed? run .ci/deps)");
            assert!(
                out.status.success(),
                "openssl failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        sh(&format!(
            "openssl req -x509 {key} -keyout ca.key -out ca.pem -days 2 -subj /CN=fas-test-ca 2>/dev/null
             openssl req -x509 {key} -keyout other-ca.key -out other-ca.pem -days 2 -subj /CN=other-ca 2>/dev/null
             sign() {{ # name ca extensions
               openssl req {key} -keyout $1.key -out $1.csr -subj /CN=$1 2>/dev/null
               printf '%s\\n' \"$3\" > $1.ext
               openssl x509 -req -in $1.csr -CA $2.pem -CAkey $2.key -CAcreateserial -out $1.pem -days 2 -extfile $1.ext 2>/dev/null
             }}
             sign server ca 'subjectAltName=IP:127.0.0.1,DNS:localhost'
             sign client ca 'extendedKeyUsage=clientAuth'
             sign other_client other-ca 'extendedKeyUsage=clientAuth'"
        ));
        Pki { dir }
    }

    /// The PEM text of `<name>.pem` or `<name>.key`.
    pub fn pem(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(file)).expect("read PEM")
    }
}

/// The TLS proxy. Dropping it stops it; a connection being served finishes on its own.
pub struct TlsProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    heads: Arc<Mutex<Vec<String>>>,
    accept: Option<JoinHandle<()>>,
}

impl TlsProxy {
    /// Terminates TLS with the PKI's server certificate and forwards to `upstream`
    /// (`host:port`). With `require_client_cert`, only clients with a certificate signed by
    /// the PKI's CA get through.
    pub fn start(pki: &Pki, upstream: &str, require_client_cert: bool) -> TlsProxy {
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
        let config = Arc::new(config);

        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (stop2, heads2, upstream) =
            (Arc::clone(&stop), Arc::clone(&heads), upstream.to_string());
        let accept = thread::spawn(move || {
            for tcp in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(tcp) = tcp else { continue };
                let (config, heads, upstream) =
                    (Arc::clone(&config), Arc::clone(&heads2), upstream.clone());
                thread::spawn(move || serve(tcp, config, &upstream, &heads));
            }
        });
        TlsProxy {
            port,
            stop,
            heads,
            accept: Some(accept),
        }
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
