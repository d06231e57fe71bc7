//! The rustls client configuration of a gRPC channel: ALPN `h2`, server certificates checked
//! against the bundled webpki roots (or only against `ca-data`), and an optional client
//! certificate for mTLS. Errors name the config key and never quote PEM content.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::secret::Secret;

/// PEM text from the config: client certificate chain and key (both or neither), and CA
/// certificates that replace the bundled roots.
pub struct TlsFiles<'a> {
    pub cert_pem: &'a str,
    pub key_pem: &'a Secret,
    pub ca_pem: &'a str,
}

pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    if files.ca_pem.trim().is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    } else {
        for cert in certificates(files.ca_pem, "ca-data")? {
            roots
                .add(cert)
                .map_err(|e| format!("ca-data holds a certificate rustls cannot use: {e}"))?;
        }
    }
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots);
    let mut config = if files.cert_pem.is_empty() && files.key_pem.is_empty() {
        builder.with_no_client_auth()
    } else {
        let chain = certificates(files.cert_pem, "cert-data")?;
        // The parser's error would quote the input: never show it, it is key material.
        let key =
            PrivateKeyDer::from_pem_slice(files.key_pem.expose().as_bytes()).map_err(|_| {
                "key-data holds no PEM private key (expected -----BEGIN ... PRIVATE KEY-----)"
                    .to_string()
            })?;
        builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("cert-data and key-data cannot be used together: {e}"))?
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

pub fn certificates(pem: &str, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| {
            format!(
                "{key} is not valid PEM (expected -----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----)"
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "{key} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_files_means_bundled_roots_and_alpn_h2() {
        let config = client_config(&TlsFiles {
            cert_pem: "",
            key_pem: &Secret::default(),
            ca_pem: "",
        })
        .unwrap();
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
    }

    #[test]
    fn bad_pem_names_the_key_and_hides_the_content() {
        let err = client_config(&TlsFiles {
            cert_pem: "",
            key_pem: &Secret::default(),
            ca_pem: "not pem",
        })
        .err()
        .unwrap();
        assert!(err.starts_with("ca-data holds no PEM certificate"), "{err}");
        let err = client_config(&TlsFiles {
            cert_pem: "-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n",
            key_pem: &Secret::new("-----BEGIN EC PRIVATE KEY-----secretstuff"),
            ca_pem: "",
        })
        .err()
        .unwrap();
        assert!(err.starts_with("key-data"), "{err}");
        assert!(!err.contains("secretstuff"));
    }
}
