//! The publisher's side toward the origin: an HTTP(S) client, request URL
//! mapping onto the upstream base, RFC 9110 hop-by-hop header hygiene, and
//! relayed bodies bounded by an idle timeout ([`IdleTimeout`]).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header;
use http::{Request, Response, Uri};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus_client::metrics::counter::Counter;
use tokio::time::Sleep;

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
/// origin's next frame; a stall or a broken origin body is counted in `errors`).
pub fn relay(
    resp: Response<Incoming>,
    url: &Uri,
    idle: Duration,
    errors: Counter,
) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = IdleTimeout::new(body, url.clone(), idle, errors);
    Response::from_parts(parts, body.boxed())
}

/// A relayed origin body that ends with an error when the origin sends no
/// frame for `idle` while we wait for one, so a stalled origin cannot hold
/// the client's connection forever (the client sees an aborted response, as
/// with any proxy). Time the client spends not reading does not count: the
/// timer is armed when a poll finds no frame ready, not when a frame is
/// handed on, and one timer is re-armed (never re-allocated) per wait.
pub struct IdleTimeout<B = Incoming> {
    inner: B,
    sleep: Pin<Box<Sleep>>,
    /// The timer is armed for the current wait.
    waiting: bool,
    idle: Duration,
    url: Uri,
    errors: Counter,
}

impl<B> IdleTimeout<B> {
    /// Wrap `inner`.
    pub fn new(inner: B, url: Uri, idle: Duration, errors: Counter) -> Self {
        IdleTimeout {
            inner,
            sleep: Box::pin(tokio::time::sleep(idle)),
            waiting: false,
            idle,
            url,
            errors,
        }
    }
}

impl<B> std::fmt::Debug for IdleTimeout<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleTimeout")
            .field("url", &self.url)
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

impl<B> http_body::Body for IdleTimeout<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + std::fmt::Display,
{
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        // Every field is Unpin (the timer is boxed, `B: Unpin`).
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting = false;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.errors.inc();
                tracing::warn!(url = %this.url, error = %e, "origin body failed; response cut off");
                Poll::Ready(Some(Err(std::io::Error::other(e))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if !this.waiting {
                    this.waiting = true;
                    let deadline = tokio::time::Instant::now() + this.idle;
                    this.sleep.as_mut().reset(deadline);
                }
                match this.sleep.as_mut().poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(()) => {
                        this.errors.inc();
                        tracing::warn!(
                            url = %this.url,
                            idle_ms = this.idle.as_millis() as u64,
                            "origin body stalled; response cut off"
                        );
                        Poll::Ready(Some(Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("origin sent nothing for {:?}", this.idle),
                        ))))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    /// A body whose next frame is not ready at the first poll (it wakes
    /// itself at once), like an origin connection that was idle because
    /// the client was not reading; `None`: never ready.
    struct Late {
        frame: Option<Bytes>,
        polled: bool,
    }

    impl http_body::Body for Late {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            if self.frame.is_none() {
                return Poll::Pending;
            }
            if !std::mem::replace(&mut self.polled, true) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(self.frame.take().map(|b| Ok(Frame::data(b))))
        }
    }

    fn wrap(frame: Option<&'static [u8]>, errors: &Counter) -> IdleTimeout<Late> {
        let late = Late {
            frame: frame.map(Bytes::from_static),
            polled: false,
        };
        let url = Uri::from_static("http://origin/x");
        IdleTimeout::new(late, url, Duration::from_millis(200), errors.clone())
    }

    #[tokio::test]
    async fn time_the_client_spends_not_reading_does_not_count() {
        let errors = Counter::default();
        let mut body = wrap(Some(b"late"), &errors);
        // The client reads nothing for longer than the idle timeout
        // before asking for the first frame.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "late");
        assert_eq!(errors.get(), 0);
    }

    #[tokio::test]
    async fn a_body_that_sends_nothing_ends_with_an_error_and_is_counted() {
        let errors = Counter::default();
        let mut body = wrap(None, &errors);
        let err = body.frame().await.unwrap().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(errors.get(), 1);
    }
}
