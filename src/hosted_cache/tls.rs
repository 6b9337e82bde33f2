//! TLS for PCHC v1: the listener's certificate chain and key (PEM), lab
//! certificates, and the offering client's trust anchors. The listener
//! itself is [`crate::net::serve_on`] with [`crate::net::Front::Tls`]: the limits of every other one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is missing or not PEM.
    #[error("certificate file {path}: {reason}")]
    Cert {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The key file is missing or not a PEM private key.
    #[error("key file {path}: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What went wrong (never the key material).
        reason: String,
    },
    /// The CA file for a v1 offer client is missing or holds no certificate.
    #[error("CA file {path}: {reason}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the pair (e.g. key does not match certificate).
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A self-signed certificate and its private key, both PEM, for lab hosted
/// caches (`branchcache gen-cert`). `names` become subject alternative names:
/// DNS names, or IP addresses when they parse as one. The key is secret.
pub fn self_signed(names: &[String]) -> Result<(String, String), rcgen::Error> {
    let cert = rcgen::generate_simple_self_signed(names.to_vec())?;
    Ok((cert.cert.pem(), cert.signing_key.serialize_pem()))
}

/// A rustls server configuration from PEM files (chain first in `cert`),
/// ring provider, TLS 1.2 and 1.3, ALPN `http/1.1`, no client certificates.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let cert_err = |reason: String| TlsError::Cert {
        path: cert.to_path_buf(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_err("no CERTIFICATE block".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key_der)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A rustls client configuration for PCHC v1 offers: trust exactly the
/// certificates in `ca_file` (a lab or enterprise CA, or the hosted cache's
/// self-signed certificate), or the built-in public roots when `None`.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let err = |reason: String| TlsError::Ca {
                path: path.to_path_buf(),
                reason,
            };
            for cert in crate::net::pem_certificates(path).map_err(err)? {
                roots.add(cert).map_err(|e| err(e.to_string()))?;
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}
