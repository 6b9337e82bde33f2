//! Shared HTTP plumbing: serve a hyper service on a bound listener until a
//! cancellation token fires, then drain connections gracefully.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

pub mod direct;
pub mod idle;

use direct::{Prefixed, SharedDirect};

/// The response body type every handler returns.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// A complete body from bytes.
pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// How long in-flight connections get to finish after shutdown is requested.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a client of a TLS listener ([`Front::Tls`]) may take to finish
/// the handshake; stops idle half-open connections from holding slots.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Bounds every listener puts on its clients (request bodies are bounded
/// by each handler: the PCCRR and PCHC handlers read at most their message
/// limits, the proxy and publisher stream bodies through).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time a client gets to send a request's complete header block (also
    /// closes idle keep-alive connections): no slow-loris.
    pub header_read_timeout: Duration,
    /// Largest HTTP/1 read buffer, which bounds the request line and headers.
    pub max_header_bytes: usize,
    /// Open connections at once; further clients wait in the kernel's
    /// accept queue until one closes.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            max_connections: 16_384,
        }
    }
}

/// Accept connections on `listener` and answer each request with `handler`
/// until `shutdown` is cancelled; then stop accepting and give open
/// connections [`DRAIN_TIMEOUT`] to finish. Returns when drained.
/// Clients are held to the default [`Limits`].
pub async fn serve<H, F>(listener: TcpListener, handler: H, shutdown: CancellationToken)
where
    H: Fn(Request<Incoming>, std::net::SocketAddr) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    serve_on(
        listener,
        Front::Plain,
        handler,
        Limits::default(),
        shutdown,
        DRAIN_TIMEOUT,
    )
    .await;
}

/// What stands between an accepted socket and hyper.
#[derive(Clone)]
pub enum Front {
    /// Nothing: hyper serves the connection.
    Plain,
    /// A [`direct`] path gets each connection's requests first and answers
    /// those it can on the socket itself; hyper serves the rest.
    Direct(SharedDirect),
    /// A TLS handshake with this acceptor, within [`HANDSHAKE_TIMEOUT`]
    /// (holding one of the `max_connections` slots meanwhile); then hyper
    /// serves the connection under the same limits as a plain one.
    Tls(TlsAcceptor),
}

impl std::fmt::Debug for Front {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Front::Plain => "Plain",
            Front::Direct(_) => "Direct",
            Front::Tls(_) => "Tls",
        })
    }
}

/// Serve one connection with hyper until it ends (or the drain ends it).
async fn serve_connection<I, S>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    service: S,
    watcher: Watcher,
    peer: std::net::SocketAddr,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "connection ended with error");
    }
}

/// [`serve`] with a [`Front`], explicit [`Limits`] and its own drain time:
/// after `shutdown` fires, open connections get up to `drain` to finish
/// their in-flight requests (a response body being sent is completed;
/// keep-alive ends). Returns the part of `drain` left unused, for
/// follow-up work with the same deadline.
pub async fn serve_on<H, F>(
    listener: TcpListener,
    front: Front,
    handler: H,
    limits: Limits,
    shutdown: CancellationToken,
    drain: Duration,
) -> Duration
where
    H: Fn(Request<Incoming>, std::net::SocketAddr) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let handler = Arc::new(handler);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // never closed
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = hyper::service::service_fn(move |req| {
            let handler = handler.clone();
            async move { Ok::<_, Infallible>(handler(req, peer).await) }
        });
        // Taken now, so the drain below waits for this connection even
        // while the direct path still has it.
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let front = front.clone();
        let token = shutdown.clone();
        tokio::spawn(async move {
            match front {
                Front::Plain => {
                    let io = Prefixed::new(bytes::BytesMut::new(), stream);
                    serve_connection(&builder, io, service, watcher, peer).await;
                }
                Front::Direct(d) => {
                    let Some(io) = direct::serve(stream, peer, d.as_ref(), limits, &token).await
                    else {
                        return drop(permit);
                    };
                    serve_connection(&builder, io, service, watcher, peer).await;
                }
                Front::Tls(acceptor) => {
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    let tls = tokio::select! {
                        _ = token.cancelled() => return drop(permit),
                        r = handshake => match r {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return drop(permit);
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return drop(permit);
                            }
                        },
                    };
                    serve_connection(&builder, tls, service, watcher, peer).await;
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    let started = tokio::time::Instant::now();
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after drain timeout; closing them");
    }
    drain.saturating_sub(started.elapsed())
}

/// Header names that describe one connection and are never forwarded
/// (RFC 9110 §7.6.1), plus the proxy credentials of either direction.
const HOP_BY_HOP: [http::HeaderName; 9] = [
    http::header::CONNECTION,
    http::HeaderName::from_static("keep-alive"),
    http::HeaderName::from_static("proxy-connection"),
    http::header::PROXY_AUTHENTICATE,
    http::header::PROXY_AUTHORIZATION,
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
];

/// Remove hop-by-hop headers, including every name listed in `Connection`
/// (both directions; shared by the proxy and the publisher).
pub fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    let listed: Vec<http::HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| http::HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in listed.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// Every certificate in a PEM file, for trust anchors (`extra_ca_file`,
/// `upstream_ca_file`, `[upstream_hosted_cache] ca_file`). Errors name what
/// went wrong (unreadable, not PEM, no CERTIFICATE block) without the path,
/// which each caller adds to its own error.
pub fn pem_certificates(
    path: &std::path::Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no CERTIFICATE block in the file".into());
    }
    Ok(certs)
}

/// The URL a request for `request` goes to behind the upstream `base`:
/// `base`'s scheme and authority, its path as a prefix of the request's path
/// and query. `None` when `base` lacks a scheme or authority, or the result
/// is not a URL. Shared by the proxy and the publisher.
pub fn upstream_url(base: &http::Uri, request: &http::Uri) -> Option<http::Uri> {
    http::Uri::builder()
        .scheme(base.scheme_str()?)
        .authority(base.authority()?.as_str())
        .path_and_query(upstream_url_text_parts(base, request).concat())
        .build()
        .ok()
}

/// The text of [`upstream_url`]`(base, request)` when that is a URL, written
/// straight into one string (no URL parsed or built: the proxy's freshness
/// key on every hit).
pub fn upstream_url_text(base: &http::Uri, request: &http::Uri) -> String {
    let scheme = base.scheme_str().unwrap_or("");
    let authority = base.authority().map_or("", |a| a.as_str());
    let parts = upstream_url_text_parts(base, request);
    let mut text = String::with_capacity(
        scheme.len() + 3 + authority.len() + parts.iter().map(|p| p.len()).sum::<usize>(),
    );
    text.push_str(scheme);
    text.push_str("://");
    text.push_str(authority);
    for p in parts {
        text.push_str(p);
    }
    text
}

/// The path-and-query of [`upstream_url`] in three pieces: `base`'s path
/// without trailing slashes, a `/` when the request's does not start with
/// one, the request's path and query.
fn upstream_url_text_parts<'a>(base: &'a http::Uri, request: &'a http::Uri) -> [&'a str; 3] {
    let prefix = base.path().trim_end_matches('/');
    let pq = request.path_and_query().map_or("/", |pq| pq.as_str());
    [prefix, if pq.starts_with('/') { "" } else { "/" }, pq]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start(limits: Limits) -> (std::net::SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve_on(
            listener,
            Front::Plain,
            |_req, _peer| async { Response::new(full("ok")) },
            limits,
            stop.clone(),
            DRAIN_TIMEOUT,
        ));
        (addr, stop)
    }

    /// Read until the peer closes (or 10 s pass: a hang fails the test). An
    /// abrupt close (a TLS stream without `close_notify`) counts as closed.
    pub(crate) async fn read_to_close<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "connection not closed by the server");
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn a_client_trickling_headers_is_cut_off() {
        let (addr, stop) = start(Limits {
            header_read_timeout: Duration::from_millis(300),
            ..Limits::default()
        })
        .await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        // Never finishes the header block: the server closes (a 408 or nothing).
        let got = read_to_close(&mut s).await;
        assert!(!got.contains("200 OK"), "{got}");
        stop.cancel();
    }

    #[tokio::test]
    async fn oversized_headers_are_refused() {
        let (addr, stop) = start(Limits::default()).await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let big = "a".repeat(200 * 1024);
        // The server may close before all of it is written.
        let _ = s
            .write_all(format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes())
            .await;
        let got = read_to_close(&mut s).await;
        assert!(!got.contains("200 OK"), "{got}");
        assert!(got.is_empty() || got.starts_with("HTTP/1.1 431"), "{got}");
        // A normal request on a new connection still works.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        assert!(read_to_close(&mut s).await.starts_with("HTTP/1.1 200"));
        stop.cancel();
    }

    /// One keep-alive request on `s`, answered 200; the connection stays open.
    async fn served_and_kept_open<S>(s: &mut S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_wait_for_a_free_slot() {
        let (addr, stop) = start(Limits {
            max_connections: 1,
            ..Limits::default()
        })
        .await;
        let mut first = tokio::net::TcpStream::connect(addr).await.unwrap();
        served_and_kept_open(&mut first).await;
        // The first connection stays open (keep-alive): the second client
        // is accepted by the kernel but not served.
        let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
        second
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        let waited =
            tokio::time::timeout(Duration::from_millis(300), second.read_to_end(&mut out)).await;
        assert!(waited.is_err(), "served beyond the cap: {out:?}");
        drop(first);
        let got = read_to_close(&mut second).await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        stop.cancel();
    }

    /// A TLS listener with a fresh self-signed certificate for `localhost`,
    /// and a client configuration trusting exactly it.
    async fn start_tls(
        limits: Limits,
    ) -> (
        std::net::SocketAddr,
        CancellationToken,
        Arc<rustls::ClientConfig>,
        tempfile::TempDir,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = crate::hosted_cache::tls::self_signed(&["localhost".into()]).unwrap();
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        let server = crate::hosted_cache::tls::server_config(&cert_path, &key_path).unwrap();
        let client = crate::hosted_cache::tls::client_config(Some(&cert_path)).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve_on(
            listener,
            Front::Tls(TlsAcceptor::from(server)),
            |_req, _peer| async { Response::new(full("ok")) },
            limits,
            stop.clone(),
            DRAIN_TIMEOUT,
        ));
        (addr, stop, client, dir)
    }

    async fn tls_connect(
        addr: std::net::SocketAddr,
        client: &Arc<rustls::ClientConfig>,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        tokio_rustls::TlsConnector::from(client.clone())
            .connect(name, tcp)
            .await
    }

    #[tokio::test]
    async fn the_tls_listener_serves_and_cuts_off_trickling_headers() {
        // 1 s, not less: the complete request below must arrive within it
        // even on a loaded machine.
        let (addr, stop, client, _dir) = start_tls(Limits {
            header_read_timeout: Duration::from_secs(1),
            ..Limits::default()
        })
        .await;
        let mut ok = tls_connect(addr, &client).await.unwrap();
        ok.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let got = read_to_close(&mut ok).await;
        assert!(
            got.starts_with("HTTP/1.1 200") && got.ends_with("ok"),
            "{got}"
        );
        let mut slow = tls_connect(addr, &client).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let got = read_to_close(&mut slow).await;
        assert!(!got.contains("200 OK"), "{got}");
        stop.cancel();
    }

    #[tokio::test]
    async fn tls_connections_beyond_the_cap_wait_for_a_free_slot() {
        let (addr, stop, client, _dir) = start_tls(Limits {
            max_connections: 1,
            ..Limits::default()
        })
        .await;
        let mut first = tls_connect(addr, &client).await.unwrap();
        served_and_kept_open(&mut first).await;
        // The first connection stays open (keep-alive): the second client's
        // handshake is not even started while it holds the only slot.
        let second = tokio::spawn(async move {
            let mut s = tls_connect(addr, &client).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            read_to_close(&mut s).await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!second.is_finished(), "served beyond the cap");
        drop(first);
        let got = tokio::time::timeout(Duration::from_secs(10), second)
            .await
            .expect("the second client is served once the slot is free")
            .unwrap();
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        stop.cancel();
    }

    proptest::proptest! {
        /// The text written by hand is exactly the text of the upstream URL
        /// (the proxy's freshness key must match the one its hyper path
        /// stores entries under).
        #[test]
        fn upstream_url_text_is_the_upstream_urls_text(
            base in proptest::sample::select(vec![
                "http://o", "http://o/", "https://o:8443/base", "http://o/base/", "http://u@o:1/a/b//",
            ]),
            path in "\\*|(/[a-zA-Z0-9._~%!$&'()*+,;=:@-]{0,8}){1,4}",
            query in proptest::option::of("[a-zA-Z0-9=&%/?:@-]{0,12}"),
        ) {
            let up: http::Uri = base.parse().unwrap();
            let target = match &query {
                Some(q) if path != "*" => format!("{path}?{q}"),
                _ => path.clone(),
            };
            let uri: http::Uri = target.parse().unwrap();
            let url = upstream_url(&up, &uri);
            proptest::prop_assert!(url.is_some(), "{base} + {target}");
            proptest::prop_assert_eq!(upstream_url_text(&up, &uri), url.unwrap().to_string());
        }
    }

    #[test]
    fn strips_standard_and_connection_listed_headers() {
        use http::header;
        let mut h = http::HeaderMap::new();
        h.insert(
            header::CONNECTION,
            "keep-alive, X-Secret-Hop".parse().unwrap(),
        );
        h.insert("x-secret-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(header::PROXY_AUTHORIZATION, "Basic eDp5".parse().unwrap());
        h.insert(header::PROXY_AUTHENTICATE, "Basic".parse().unwrap());
        h.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h[header::CONTENT_TYPE], "text/plain");
    }

    #[test]
    fn upstream_url_appends_path_and_query_to_the_prefix() {
        let cases = [
            (
                "http://127.0.0.1:8000/files",
                "/a/b.iso?x=1",
                "http://127.0.0.1:8000/files/a/b.iso?x=1",
            ),
            ("https://origin.example/", "/x", "https://origin.example/x"),
            ("http://o/base", "o:80", "http://o/base/"),
            ("http://o/base/", "*", "http://o/base/*"),
        ];
        for (base, req, want) in cases {
            let (base, req): (http::Uri, http::Uri) = (base.parse().unwrap(), req.parse().unwrap());
            assert_eq!(upstream_url(&base, &req).unwrap().to_string(), want);
            assert_eq!(upstream_url_text(&base, &req), want);
        }
        // A base without scheme or authority has no URL.
        assert!(upstream_url(&"/only/path".parse().unwrap(), &"/x".parse().unwrap()).is_none());
    }
}
