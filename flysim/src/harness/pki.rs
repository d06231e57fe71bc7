//! Certificates for TLS tests, made with the `openssl` command.

use std::path::PathBuf;
use std::process::Command;

use super::process::TempDir;

/// A CA and certificates it signed, as PEM files in a temporary directory.
pub struct Pki {
    dir: TempDir,
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
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
        std::fs::read_to_string(self.path(file)).expect("read PEM")
    }

    /// Where `<name>.pem` or `<name>.key` is.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
}
