//! Shared integration-test parts: a test origin that speaks PeerDist
//! (content information built with `pccrc::build`, or lies on purpose), an
//! in-process daemon started with `App::start`, and real HTTP clients.
#![allow(dead_code)] // each test crate uses its own subset

pub use std::collections::HashMap;
pub use std::convert::Infallible;
pub use std::net::SocketAddr;
pub use std::sync::atomic::{AtomicU64, Ordering};
pub use std::sync::{Arc, Mutex};

pub use branchcache::app::App;
pub use branchcache::config::Config;
pub use branchcache::proto::pccrc::{hash_content, server_secret, HashAlgo, Version};
pub use bytes::Bytes;
pub use http::header;
pub use http::{Method, Request, Response, StatusCode};
pub use http_body_util::{BodyExt, Full};
pub use hyper::body::Incoming;
pub use hyper_util::rt::{TokioExecutor, TokioIo};
pub use tokio::net::TcpListener;
pub use tokio::sync::Notify;

/// Deterministic, non-periodic content (xorshift64), so misplaced or
/// deduplicated blocks cannot look right by accident.
pub fn content(len: usize, seed: u8) -> Bytes {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out.into()
}

#[derive(Clone)]
pub struct Object {
    pub data: Bytes,
    /// Content information sent to peerdist requests (None: plain origin).
    pub ci: Option<Bytes>,
}

impl Object {
    pub fn peerdist(data: Bytes) -> Object {
        let ks = server_secret(HashAlgo::Sha256, b"origin key");
        let ci = hash_content(Version::V1, HashAlgo::Sha256, &ks, &data)
            .encode(None)
            .unwrap();
        Object {
            data,
            ci: Some(ci.into()),
        }
    }

    pub fn v2(data: Bytes) -> Object {
        let ks = server_secret(HashAlgo::Sha512Trunc, b"origin key");
        let ci = hash_content(Version::V2, HashAlgo::Sha512Trunc, &ks, &data)
            .encode(None)
            .unwrap();
        Object {
            data,
            ci: Some(ci.into()),
        }
    }

    /// Content information of `claimed`, body bytes of `actual`.
    pub fn lying(claimed: Bytes, actual: Bytes) -> Object {
        let mut o = Object::peerdist(claimed);
        o.data = actual;
        o
    }
}

#[derive(Default)]
pub struct OriginState {
    pub objects: Mutex<HashMap<String, Object>>,
    /// Identity body bytes sent (full GETs and ranges).
    pub body_bytes: AtomicU64,
    /// Content-information bytes sent.
    pub ci_bytes: AtomicU64,
    /// Requests carrying `Range`.
    pub range_requests: AtomicU64,
    /// Requests asking for content information.
    pub ci_requests: AtomicU64,
    /// Hold range answers until this many CI requests arrived (0: never hold).
    pub hold_ranges_until: AtomicU64,
    pub ci_arrived: Notify,
    /// Last request headers seen for a range request.
    pub last_range_headers: Mutex<Option<http::HeaderMap>>,
    /// Every request answered (any method, any status).
    pub requests: AtomicU64,
    /// Headers of the last request of any kind.
    pub last_headers: Mutex<Option<http::HeaderMap>>,
    /// Extra response headers per path (e.g. `Cache-Control`), on every answer.
    pub extra_headers: Mutex<HashMap<String, Vec<(String, String)>>>,
    /// `ETag` per path (default `"v1"`).
    pub etags: Mutex<HashMap<String, String>>,
    /// Answer `If-None-Match` with the current `ETag` by `304` (off by default).
    pub honour_conditionals: std::sync::atomic::AtomicBool,
    /// `304` answers sent.
    pub not_modified: AtomicU64,
    /// Delay before answering a range request, in milliseconds (0: none).
    pub range_delay_ms: AtomicU64,
}

pub struct Origin {
    pub addr: SocketAddr,
    pub state: Arc<OriginState>,
}

impl Origin {
    pub async fn start() -> Origin {
        Origin::start_with(None).await
    }

    /// The same origin behind TLS with a self-signed certificate for
    /// 127.0.0.1; returns the certificate PEM.
    pub async fn start_tls() -> (Origin, String) {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let pem = ck.cert.pem();
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
        let cfg = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![ck.cert.der().clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        (Origin::start_with(Some(acceptor)).await, pem)
    }

    pub async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(OriginState::default());
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(origin_handle(st, req).await) }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                        }
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
            }
        });
        Origin { addr, state }
    }

    pub fn put(&self, path: &str, obj: Object) {
        self.state
            .objects
            .lock()
            .unwrap()
            .insert(path.to_string(), obj);
    }

    pub fn body_bytes(&self) -> u64 {
        self.state.body_bytes.load(Ordering::SeqCst)
    }

    pub fn ci_bytes(&self) -> u64 {
        self.state.ci_bytes.load(Ordering::SeqCst)
    }
}

pub async fn origin_handle(st: Arc<OriginState>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    if req.method() == Method::POST {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        return Response::builder()
            .header("x-echo", "1")
            .body(Full::new(body))
            .unwrap();
    }
    let Some(obj) = st.objects.lock().unwrap().get(&path).cloned() else {
        return Response::builder()
            .status(404)
            .body(Full::new(Bytes::from_static(b"nope")))
            .unwrap();
    };
    let h = req.headers();
    st.requests.fetch_add(1, Ordering::SeqCst);
    *st.last_headers.lock().unwrap() = Some(h.clone());
    let etag = st
        .etags
        .lock()
        .unwrap()
        .get(&path)
        .cloned()
        .unwrap_or_else(|| "\"v1\"".to_string());
    let mut base = Response::builder()
        .header(header::ETAG, etag.as_str())
        .header(header::CONTENT_TYPE, "application/x-test")
        .header(header::ACCEPT_RANGES, "bytes");
    for (k, v) in st
        .extra_headers
        .lock()
        .unwrap()
        .get(&path)
        .cloned()
        .unwrap_or_default()
    {
        base = base.header(k, v);
    }
    if st.honour_conditionals.load(Ordering::SeqCst)
        && h.get(header::IF_NONE_MATCH)
            .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        st.not_modified.fetch_add(1, Ordering::SeqCst);
        return base.status(304).body(Full::new(Bytes::new())).unwrap();
    }
    let wants_peerdist = h
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("peerdist"))
        && h.contains_key("x-p2p-peerdist");
    if wants_peerdist && !h.contains_key(header::RANGE) {
        if let Some(ci) = obj.ci {
            st.ci_requests.fetch_add(1, Ordering::SeqCst);
            st.ci_arrived.notify_waiters();
            st.ci_bytes.fetch_add(ci.len() as u64, Ordering::SeqCst);
            return base
                .header(header::CONTENT_ENCODING, "peerdist")
                .header(
                    "x-p2p-peerdist",
                    format!("Version=1.1, ContentLength={}", obj.data.len()),
                )
                .body(Full::new(ci))
                .unwrap();
        }
    }
    if let Some(range) = h.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        st.range_requests.fetch_add(1, Ordering::SeqCst);
        *st.last_range_headers.lock().unwrap() = Some(h.clone());
        let delay = st.range_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        let hold = st.hold_ranges_until.load(Ordering::SeqCst);
        while hold > 0 && st.ci_requests.load(Ordering::SeqCst) < hold {
            let notified = st.ci_arrived.notified();
            if st.ci_requests.load(Ordering::SeqCst) >= hold {
                break;
            }
            notified.await;
        }
        let spec = range.trim_start_matches("bytes=");
        let (a, b) = spec.split_once('-').unwrap();
        let len = obj.data.len() as u64;
        let a: u64 = a.parse().unwrap();
        let b: u64 = if b.is_empty() {
            len - 1
        } else {
            b.parse::<u64>().unwrap().min(len - 1)
        };
        let part = obj.data.slice(a as usize..=b as usize);
        if req.method() == Method::GET {
            st.body_bytes.fetch_add(part.len() as u64, Ordering::SeqCst);
        }
        return base
            .status(206)
            .header(header::CONTENT_RANGE, format!("bytes {a}-{b}/{len}"))
            .body(Full::new(part))
            .unwrap();
    }
    if req.method() == Method::HEAD {
        return base
            .header(header::CONTENT_LENGTH, obj.data.len())
            .body(Full::new(Bytes::new()))
            .unwrap();
    }
    st.body_bytes
        .fetch_add(obj.data.len() as u64, Ordering::SeqCst);
    base.body(Full::new(obj.data)).unwrap()
}

pub struct Proxy {
    pub app: App,
    pub _dir: tempfile::TempDir,
}

impl Proxy {
    pub async fn start(extra: &str) -> Proxy {
        Proxy::start_in(tempfile::tempdir().unwrap(), extra).await
    }

    /// A proxy whose store lives in `dir` (reuse it to restart with a warm store).
    pub async fn start_in(dir: tempfile::TempDir, extra: &str) -> Proxy {
        let toml = format!(
            "[store]\npath = {:?}\n[admin]\nlisten = \"127.0.0.1:0\"\n[proxy]\nlisten = \"127.0.0.1:0\"\n{extra}\n",
            dir.path().join("store")
        );
        let config = Config::from_toml(&toml, "test").unwrap();
        let app = App::start(config).await.unwrap();
        Proxy { app, _dir: dir }
    }

    /// Stop the daemon and hand back its store directory.
    pub async fn stop(self) -> tempfile::TempDir {
        self.app.shutdown().await;
        self._dir
    }

    pub async fn reverse(origin: &Origin) -> Proxy {
        Proxy::start(&format!("upstream = \"http://{}\"", origin.addr)).await
    }

    pub fn addr(&self) -> SocketAddr {
        self.app.proxy_addr.unwrap()
    }

    pub fn metrics(&self) -> String {
        self.app.metrics.render()
    }
}

/// One request over a fresh HTTP/1.1 connection to `addr`; returns status, headers, body.
pub async fn send(
    addr: SocketAddr,
    req: Request<Full<Bytes>>,
) -> Result<(StatusCode, http::HeaderMap, Bytes), String> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((parts.status, parts.headers, body))
}

pub fn get(path: &str) -> http::request::Builder {
    Request::builder()
        .uri(path)
        .header(header::HOST, "branch.test")
}

pub async fn fetch(addr: SocketAddr, path: &str) -> (StatusCode, http::HeaderMap, Bytes) {
    send(addr, get(path).body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap()
}

pub fn metric(text: &str, name_and_labels: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels))
        .and_then(|rest| rest.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

pub const MIB: usize = 1024 * 1024;

/// Wait until the daemon's store holds the blocks of a `len`-byte v1 object.
pub async fn wait_stored(proxy: &Proxy, len: usize) {
    let want = len.div_ceil(65_536) as u64;
    for _ in 0..500 {
        if proxy.app.store.stats().blocks >= want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("store never reached {want} blocks");
}

/// A `branchcache` process; killed (SIGKILL) and reaped on drop.
pub struct Daemon(pub std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Daemon {
    /// `branchcache run --config <cfg>` as a process, its output discarded.
    pub fn run(cfg: &std::path::Path) -> Daemon {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_branchcache"))
            .args(["run", "--config"])
            .arg(cfg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Daemon(child)
    }
}

/// Loopback ports for daemons started as processes.
#[path = "../support/ports.rs"]
mod ports;

/// A loopback port that was free a moment ago, below the ephemeral range
/// ([`ports`]): for daemons started as processes.
pub fn free_port() -> u16 {
    ports::free_port()
}
