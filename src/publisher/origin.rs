//! The publisher's side toward the origin: an HTTP(S) client, request URL
//! mapping onto the upstream base, RFC 9110 hop-by-hop header hygiene, and
//! relayed bodies bounded by an idle timeout ([`IdleTimeout`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::header;
use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus_client::metrics::counter::Counter;

use crate::net::idle::IdleTimeout;
use crate::net::{strip_hop_by_hop, Body};

/// The client type used toward the origin (http and https).
pub type OriginClient =
    hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

/// Idle pooled origin connections are closed after this long; origins
/// commonly close theirs at 60–75 s, so staying below avoids reusing a dying one.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// Why the origin client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The CA file could not be read or holds no usable certificate.
    #[error("upstream CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Build the origin client (HTTP/1.1; TLS via rustls). `ca_file`: trust only
/// the CA certificates in that PEM file; `None`: the built-in webpki roots.
pub fn client(
    connect_timeout: Duration,
    ca_file: Option<&Path>,
) -> Result<OriginClient, TlsSetupError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match ca_file {
        None => builder.with_webpki_roots(),
        Some(path) => builder.with_tls_config(tls_config_with_roots(path)?),
    };
    let https = builder.https_or_http().enable_http1().wrap_connector(http);
    Ok(
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(https),
    )
}

fn tls_config_with_roots(path: &Path) -> Result<rustls::ClientConfig, TlsSetupError> {
    let err = |reason: String| TlsSetupError::CaFile {
        path: path.to_path_buf(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in crate::net::pem_certificates(path).map_err(err)? {
        roots.add(cert).map_err(|e| err(e.to_string()))?;
    }
    Ok(rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Turn an origin response into one for our client: hop-by-hop headers out,
/// body streamed through under [`IdleTimeout`] (`idle`: longest wait for the
/// origin's next frame; the client then sees an aborted response, as with any
/// proxy). A stall or a broken origin body is logged and counted in `errors`.
pub fn relay(
    resp: Response<Incoming>,
    url: &Uri,
    idle: Duration,
    errors: Counter,
) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let url = url.clone();
    let body = IdleTimeout::new(body, idle).map_err(move |e| {
        errors.inc();
        tracing::warn!(%url, error = %e, "origin body failed or stalled; response cut off");
        e
    });
    Response::from_parts(parts, body.boxed())
}

/// An empty request body.
pub fn empty() -> Body {
    http_body_util::Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// Build the origin request for a pass-through: same method, end-to-end
/// headers and streamed body; `Host` becomes the upstream's.
pub fn forward_request(
    upstream: Uri,
    parts: http::request::Parts,
    body: Incoming,
) -> Request<Body> {
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    let mut req = Request::new(body.map_err(std::io::Error::other).boxed());
    *req.method_mut() = parts.method;
    *req.uri_mut() = upstream;
    *req.headers_mut() = headers;
    req
}
