//! TLS for the PCHC v1 listener: load a PEM certificate chain and key, and
//! serve hyper over tokio-rustls with the same graceful drain as `net::serve`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::net::{Body, DRAIN_TIMEOUT};

/// Longest a client may take to finish the TLS handshake; stops idle
/// half-open connections from holding sockets.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Like `net::serve`, with a TLS handshake (bounded by [`HANDSHAKE_TIMEOUT`])
/// before HTTP. Returns after `shutdown` fires and connections drained.
pub async fn serve_tls<H, F>(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handler: H,
    shutdown: CancellationToken,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let handler = Arc::new(handler);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (acceptor, handler, watcher) = (acceptor.clone(), handler.clone(), graceful.watcher());
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let tls = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => match r {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
            };
            let service = hyper::service::service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler(req, peer).await) }
            });
            let conn = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "TLS connection ended with error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("TLS connections still open after drain timeout; closing them");
    }
}
