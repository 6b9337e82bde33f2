//! The publisher in front of a real in-process origin, both on 127.0.0.1:0.
//!
//! The origin serves generated files (with and without ETag), honours single
//! ranges and conditional GETs, and counts what it served; the publisher runs
//! via `App::start`. Hashes are recomputed here with sha2/hmac directly.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256, Sha512};

use branchcache::app::App;
use branchcache::config::Config;
use branchcache::proto::pccrc::{ContentInfo, HashAlgo, Version};

const SECRET: &[u8] = b"publisher integration test secret";

// ---------------------------------------------------------------- test origin

#[derive(Clone)]
struct File {
    data: Bytes,
    etag: Option<String>,
    last_modified: Option<String>,
    framing: Framing,
}

/// How the origin sends a file's body.
#[derive(Clone, Copy, PartialEq)]
enum Framing {
    /// `Content-Length`.
    Length,
    /// `Transfer-Encoding: chunked`, in pieces of various sizes.
    Chunked,
    /// Chunked; sends the first `n` bytes, then nothing ever again.
    StallAfter(usize),
}

type OriginBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn whole(data: Bytes) -> OriginBody {
    Full::new(data).boxed()
}

/// A chunked body: `data` in pieces of 1, 1000, 17 000 and 70 001 bytes
/// (cycling), so frames straddle every block and segment boundary; stops
/// sending after `stall_after` bytes.
fn pieces(data: Bytes, stall_after: Option<usize>) -> OriginBody {
    const SIZES: [usize; 4] = [1, 1000, 17_000, 70_001];
    let end = stall_after.unwrap_or(data.len()).min(data.len());
    let mut frames = Vec::new();
    let mut at = 0;
    for size in SIZES.iter().cycle() {
        if at >= end {
            break;
        }
        let next = (at + size).min(end);
        frames.push(Ok(hyper::body::Frame::data(data.slice(at..next))));
        at = next;
    }
    let sent = futures_util::stream::iter(frames);
    match stall_after {
        None => BodyExt::boxed(http_body_util::StreamBody::new(sent)),
        Some(_) => BodyExt::boxed(http_body_util::StreamBody::new(
            sent.chain(futures_util::stream::pending()),
        )),
    }
}

#[derive(Default)]
struct Origin {
    files: Mutex<HashMap<String, File>>,
    /// Requests per (method, path).
    requests: Mutex<HashMap<(String, String), u64>>,
    /// 200/206 GETs per path (a "read" of the object).
    reads: Mutex<HashMap<String, u64>>,
    not_modified: AtomicU64,
    body_bytes: AtomicU64,
    /// Delay before answering, to make concurrent requests overlap.
    delay_ms: AtomicU64,
}

impl Origin {
    fn put(&self, path: &str, data: Vec<u8>, etag: Option<&str>, lm: Option<&str>) {
        self.put_framed(path, data, etag, lm, Framing::Length);
    }
    /// A file sent without `Content-Length` (chunked).
    fn put_chunked(&self, path: &str, data: Vec<u8>, etag: Option<&str>, lm: Option<&str>) {
        self.put_framed(path, data, etag, lm, Framing::Chunked);
    }
    fn put_framed(
        &self,
        path: &str,
        data: Vec<u8>,
        etag: Option<&str>,
        lm: Option<&str>,
        framing: Framing,
    ) {
        self.files.lock().unwrap().insert(
            path.to_string(),
            File {
                data: data.into(),
                etag: etag.map(str::to_string),
                last_modified: lm.map(str::to_string),
                framing,
            },
        );
    }
    fn reads(&self, path: &str) -> u64 {
        *self.reads.lock().unwrap().get(path).unwrap_or(&0)
    }
    fn requests(&self, method: &str, path: &str) -> u64 {
        *self
            .requests
            .lock()
            .unwrap()
            .get(&(method.to_string(), path.to_string()))
            .unwrap_or(&0)
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<OriginBody> {
        let delay = self.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let path = req.uri().path().to_string();
        *self
            .requests
            .lock()
            .unwrap()
            .entry((req.method().to_string(), path.clone()))
            .or_default() += 1;
        let (parts, body) = req.into_parts();
        let posted = body.collect().await.unwrap().to_bytes();
        if parts.method == Method::POST {
            // Echo: proves bodies and methods pass through.
            return Response::builder()
                .header("x-echo-len", posted.len())
                .body(whole(posted))
                .unwrap();
        }
        let Some(file) = self.files.lock().unwrap().get(&path).cloned() else {
            return Response::builder()
                .status(404)
                .body(whole(Bytes::from_static(b"no such file\n")))
                .unwrap();
        };
        let mut b = Response::builder()
            .header("content-type", "application/octet-stream")
            .header("accept-ranges", "bytes");
        if let Some(e) = &file.etag {
            b = b.header("etag", e);
        }
        if let Some(lm) = &file.last_modified {
            b = b.header("last-modified", lm);
        }
        let inm = parts.headers.get("if-none-match");
        let ims = parts.headers.get("if-modified-since");
        let fresh = match (inm, ims, &file.etag, &file.last_modified) {
            (Some(v), _, Some(e), _) => v.as_bytes() == e.as_bytes(),
            (None, Some(v), _, Some(lm)) => v.as_bytes() == lm.as_bytes(),
            _ => false,
        };
        if fresh {
            self.not_modified.fetch_add(1, Ordering::Relaxed);
            return b.status(304).body(whole(Bytes::new())).unwrap();
        }
        let len = file.data.len() as u64;
        let range = parts
            .headers
            .get("range")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("bytes="))
            .and_then(|v| v.split_once('-'))
            .map(|(a, b)| {
                let a: u64 = a.parse().unwrap();
                let b: u64 = if b.is_empty() {
                    len - 1
                } else {
                    b.parse::<u64>().unwrap().min(len - 1)
                };
                (a, b)
            });
        if parts.method == Method::GET {
            *self.reads.lock().unwrap().entry(path).or_default() += 1;
        }
        let (status, data) = match range {
            Some((first, last)) => {
                b = b.header("content-range", format!("bytes {first}-{last}/{len}"));
                (206, file.data.slice(first as usize..=last as usize))
            }
            None => (200, file.data.clone()),
        };
        if parts.method == Method::HEAD {
            return b
                .status(status)
                .header("content-length", data.len())
                .body(whole(Bytes::new()))
                .unwrap();
        }
        self.body_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        let body = match file.framing {
            Framing::Length => whole(data),
            Framing::Chunked => pieces(data, None),
            Framing::StallAfter(n) => pieces(data, Some(n)),
        };
        b.status(status).body(body).unwrap()
    }
}

async fn start_origin() -> (Arc<Origin>, SocketAddr) {
    let origin = Arc::new(Origin::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let o = origin.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let o = o.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let o = o.clone();
                    async move { Ok::<_, Infallible>(o.handle(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (origin, addr)
}

/// The same origin behind TLS (self-signed for 127.0.0.1); returns the cert PEM.
async fn start_origin_tls() -> (Arc<Origin>, SocketAddr, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let pem = ck.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
    let cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let origin = Arc::new(Origin::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let o = origin.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (o, acceptor) = (o.clone(), acceptor.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req| {
                    let o = o.clone();
                    async move { Ok::<_, Infallible>(o.handle(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (origin, addr, pem)
}

// ---------------------------------------------------------------- publisher

struct Setup {
    app: App,
    origin: Arc<Origin>,
    publisher: SocketAddr,
    _dir: tempfile::TempDir,
}

async fn start(extra: &str) -> Setup {
    let (origin, origin_addr) = start_origin().await;
    start_with_upstream(origin, &format!("http://{origin_addr}"), extra).await
}

async fn start_with_upstream(origin: Arc<Origin>, upstream: &str, extra: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let toml = format!(
        "[store]\npath = {:?}\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [publisher]\nlisten = \"127.0.0.1:0\"\nupstream = \"{upstream}\"\n\
         secret_file = {:?}\n{extra}\n",
        dir.path().join("store"),
        secret,
    );
    let config = Config::from_toml(&toml, "test").unwrap();
    let app = App::start(config).await.unwrap();
    let publisher = app.publisher_addr.unwrap();
    Setup {
        app,
        origin,
        publisher,
        _dir: dir,
    }
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

fn client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new())
}

struct Got {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

async fn request(addr: SocketAddr, method: Method, path: &str, headers: &[(&str, &str)]) -> Got {
    request_body(addr, method, path, headers, Bytes::new()).await
}

async fn request_body(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Got {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    let resp = client()
        .request(b.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    Got {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

const PD_V1: &[(&str, &str)] = &[
    ("accept-encoding", "gzip, peerdist"),
    ("x-p2p-peerdist", "Version=1.1"),
];
const PD_V2: &[(&str, &str)] = &[
    ("accept-encoding", "peerdist"),
    ("x-p2p-peerdist", "Version=1.1"),
    (
        "x-p2p-peerdistex",
        "MinContentInformation=1.0, MaxContentInformation=2.0",
    ),
];

async fn peerdist(addr: SocketAddr, path: &str) -> Got {
    request(addr, Method::GET, path, PD_V1).await
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    // Cheap, non-repeating pattern (so segments/blocks differ).
    let mut x: u32 = 0x9e37_79b9 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

fn header<'a>(g: &'a Got, name: &str) -> &'a str {
    g.headers
        .get(name)
        .unwrap_or_else(|| panic!("missing {name}: {:?}", g.headers))
        .to_str()
        .unwrap()
}

fn hmac256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

fn hmac512_32(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha512> as Mac>::new_from_slice(key).unwrap();
    m.update(msg);
    m.finalize().into_bytes()[..32].to_vec()
}

/// Check a v1 SHA-256 CI against the origin bytes, block by block.
fn assert_v1_matches(ci: &[u8], content: &[u8]) {
    let info = ContentInfo::parse(ci).unwrap();
    assert_eq!(info.version(), Version::V1);
    assert_eq!(info.hash_algo(), HashAlgo::Sha256);
    let ks = Sha256::digest(SECRET);
    for seg in info.segments() {
        let mut block_hashes = Vec::new();
        for j in 0..seg.block_count() {
            let r = seg.block_range(j).unwrap();
            let expect = Sha256::digest(&content[r.start as usize..r.end as usize]);
            assert_eq!(
                seg.block_hash(j).unwrap().as_bytes(),
                expect.as_slice(),
                "segment {} block {j}",
                seg.index()
            );
            block_hashes.extend_from_slice(&expect);
        }
        // HoD is checkable only when the CI lists the segment's whole block list.
        if u64::from(seg.block_count()) == u64::from(seg.size()).div_ceil(65536) {
            let hod = Sha256::digest(&block_hashes);
            assert_eq!(seg.hash_of_data().as_bytes(), hod.as_slice());
            assert_eq!(seg.secret().expose(), hmac256(&ks, &hod).as_slice());
        }
    }
}

/// Check a whole-entity v2 CI against the origin bytes, segment by segment.
fn assert_v2_matches(ci: &[u8], content: &[u8]) {
    let info = ContentInfo::parse(ci).unwrap();
    assert_eq!(info.version(), Version::V2);
    assert_eq!(info.range(), 0..content.len() as u64);
    let ks = &Sha512::digest(SECRET)[..32];
    let mut next = 0u64;
    for seg in info.segments() {
        let r = seg.range();
        assert_eq!(r.start, next);
        assert!(seg.size() <= 131_072);
        next = r.end;
        let hod = &Sha512::digest(&content[r.start as usize..r.end as usize])[..32];
        assert_eq!(seg.hash_of_data().as_bytes(), hod);
        assert_eq!(seg.secret().expose(), hmac512_32(ks, hod).as_slice());
    }
    assert_eq!(next, content.len() as u64);
}

async fn metric(app: &App, name: &str) -> u64 {
    let g = request(app.admin_addr, Method::GET, "/metrics", &[]).await;
    let text = String::from_utf8(g.body.to_vec()).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} not in metrics"))
        .trim()
        .parse()
        .unwrap()
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn peerdist_request_gets_ci_matching_origin_bytes_and_inspect_decodes_it() {
    let s = start("").await;
    let content = data(200 * 1024, 1);
    s.origin.put(
        "/f.bin",
        content.clone(),
        Some("\"v1\""),
        Some("Wed, 21 Oct 2015 07:28:00 GMT"),
    );
    let g = peerdist(s.publisher, "/f.bin").await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(header(&g, "content-encoding"), "peerdist");
    assert_eq!(header(&g, "content-length"), g.body.len().to_string());
    assert_eq!(
        header(&g, "x-p2p-peerdist"),
        "Version=1.1, ContentLength=204800"
    );
    assert_eq!(header(&g, "etag"), "\"v1\"");
    assert_eq!(header(&g, "last-modified"), "Wed, 21 Oct 2015 07:28:00 GMT");
    assert_eq!(header(&g, "content-type"), "application/octet-stream");
    assert_eq!(header(&g, "accept-ranges"), "bytes");
    assert_eq!(header(&g, "vary"), "Accept-Encoding");
    // 18 + 1 × (16 + 64) + 4 + 4 blocks × 32
    assert_eq!(g.body.len(), 18 + 80 + 4 + 4 * 32);
    assert_v1_matches(&g.body, &content);
    assert_eq!(ContentInfo::parse(&g.body).unwrap().range(), 0..204_800);

    // The real binary decodes it.
    let file = s._dir.path().join("ci.bin");
    std::fs::write(&file, &g.body).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_branchcache"))
        .args(["inspect", "--json"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["version"], "1");
    assert_eq!(v["range"]["end"], 204_800);
    assert_eq!(v["segments"][0]["blocks"].as_array().unwrap().len(), 4);

    assert_eq!(
        metric(&s.app, "branchcache_publisher_ci_served_total").await,
        1
    );
    assert_eq!(
        metric(&s.app, "branchcache_publisher_ci_generated_total").await,
        1
    );
    assert_eq!(
        metric(&s.app, "branchcache_publisher_bytes_hashed_total").await,
        204_800
    );
    s.app.shutdown().await;
}

#[tokio::test]
async fn multi_segment_v1_ci_covers_every_block() {
    let s = start("").await;
    let content = data(40 * 1024 * 1024 + 12345, 2);
    s.origin
        .put("/big.iso", content.clone(), Some("\"big\""), None);
    let g = peerdist(s.publisher, "/big.iso").await;
    assert_eq!(header(&g, "content-encoding"), "peerdist");
    let info = ContentInfo::parse(&g.body).unwrap();
    assert_eq!(info.segment_count(), 2);
    assert_eq!(info.range(), 0..content.len() as u64);
    assert_v1_matches(&g.body, &content);
    assert_eq!(s.origin.reads("/big.iso"), 1);
    s.app.shutdown().await;
}

#[tokio::test]
async fn ranged_peerdist_request_gets_ci_for_exactly_that_range() {
    let s = start("").await;
    let content = data(200 * 1024, 3);
    s.origin.put("/r.bin", content.clone(), Some("\"r\""), None);
    let mut h = PD_V1.to_vec();
    h.push(("range", "bytes=100000-150000"));
    let g = request(s.publisher, Method::GET, "/r.bin", &h).await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(header(&g, "content-encoding"), "peerdist");
    assert_eq!(
        header(&g, "x-p2p-peerdist"),
        "Version=1.1, ContentLength=204800"
    );
    let info = ContentInfo::parse(&g.body).unwrap();
    assert_eq!(info.range(), 100_000..150_001);
    assert_v1_matches(&g.body, &content);
    // The origin was asked for the whole object (hashing needs it), not the range.
    assert_eq!(s.origin.reads("/r.bin"), 1);
    // A second range is served from the cached hashes after a 304.
    let mut h = PD_V1.to_vec();
    h.push(("range", "bytes=-10"));
    let g = request(s.publisher, Method::GET, "/r.bin", &h).await;
    assert_eq!(
        ContentInfo::parse(&g.body).unwrap().range(),
        204_790..204_800
    );
    assert_eq!(s.origin.reads("/r.bin"), 1);
    s.app.shutdown().await;
}

#[tokio::test]
async fn plain_range_head_and_post_requests_are_byte_identical_to_origin() {
    let s = start("").await;
    let content = data(300 * 1024, 4);
    s.origin.put("/p.bin", content.clone(), Some("\"p\""), None);

    let g = request(s.publisher, Method::GET, "/p.bin", &[]).await;
    assert_eq!(g.status, StatusCode::OK);
    assert!(g.headers.get("content-encoding").is_none());
    assert_eq!(&g.body[..], &content[..]);
    assert_eq!(header(&g, "etag"), "\"p\"");

    // A branch proxy's missing-data request: Range without peerdist.
    let g = request(
        s.publisher,
        Method::GET,
        "/p.bin",
        &[
            ("range", "bytes=65536-131071"),
            ("x-p2p-peerdist", "Version=1.1, MissingDataRequest=true"),
        ],
    )
    .await;
    assert_eq!(g.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&g.body[..], &content[65536..131072]);
    assert_eq!(header(&g, "content-range"), "bytes 65536-131071/307200");

    let g = request(s.publisher, Method::HEAD, "/p.bin", PD_V1).await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(header(&g, "content-length"), "307200");
    assert!(g.body.is_empty());

    let g = request_body(
        s.publisher,
        Method::POST,
        "/upload",
        &[],
        Bytes::from_static(b"hello origin"),
    )
    .await;
    assert_eq!(&g.body[..], b"hello origin");
    assert_eq!(header(&g, "x-echo-len"), "12");
    assert_eq!(s.origin.requests("POST", "/upload"), 1);

    let g = request(s.publisher, Method::GET, "/missing", PD_V1).await;
    assert_eq!(g.status, StatusCode::NOT_FOUND);
    assert_eq!(&g.body[..], b"no such file\n");
    assert!(metric(&s.app, "branchcache_publisher_passthrough_total").await >= 4);
    assert_eq!(
        metric(&s.app, "branchcache_publisher_ci_served_total").await,
        0
    );
    s.app.shutdown().await;
}

#[tokio::test]
async fn small_responses_pass_through_unchanged() {
    let s = start("").await;
    let content = data(1000, 5);
    s.origin.put("/tiny", content.clone(), Some("\"t\""), None);
    let g = peerdist(s.publisher, "/tiny").await;
    assert_eq!(g.status, StatusCode::OK);
    assert!(g.headers.get("content-encoding").is_none());
    assert_eq!(&g.body[..], &content[..]);
    // The leader's origin response itself was relayed: one origin read.
    assert_eq!(s.origin.reads("/tiny"), 1);
    s.app.shutdown().await;
}

#[tokio::test]
async fn warm_request_revalidates_with_304_and_changed_etag_gives_new_ci() {
    let s = start("").await;
    let a = data(200 * 1024, 6);
    s.origin.put("/c.bin", a.clone(), Some("\"a\""), None);
    let first = peerdist(s.publisher, "/c.bin").await;
    assert_v1_matches(&first.body, &a);

    let warm = peerdist(s.publisher, "/c.bin").await;
    assert_eq!(warm.body, first.body);
    assert_eq!(s.origin.not_modified.load(Ordering::Relaxed), 1);
    assert_eq!(s.origin.reads("/c.bin"), 1);
    assert_eq!(
        metric(&s.app, "branchcache_publisher_ci_cache_hits_total").await,
        1
    );

    let b = data(200 * 1024, 7);
    s.origin.put("/c.bin", b.clone(), Some("\"b\""), None);
    let changed = peerdist(s.publisher, "/c.bin").await;
    assert_ne!(changed.body, first.body);
    assert_eq!(header(&changed, "etag"), "\"b\"");
    assert_v1_matches(&changed.body, &b);
    assert_eq!(s.origin.reads("/c.bin"), 2);
    assert_eq!(
        metric(&s.app, "branchcache_publisher_ci_generated_total").await,
        2
    );
    s.app.shutdown().await;
}

#[tokio::test]
async fn last_modified_alone_is_a_usable_validator() {
    let s = start("").await;
    let content = data(100 * 1024, 8);
    let lm = "Thu, 01 Jan 2026 00:00:00 GMT";
    s.origin.put("/lm.bin", content.clone(), None, Some(lm));
    let g = peerdist(s.publisher, "/lm.bin").await;
    assert_v1_matches(&g.body, &content);
    let g2 = peerdist(s.publisher, "/lm.bin").await;
    assert_eq!(g2.body, g.body);
    assert_eq!(s.origin.not_modified.load(Ordering::Relaxed), 1);
    s.app.shutdown().await;
}

#[tokio::test]
async fn sixteen_concurrent_peerdist_requests_cause_one_origin_read() {
    sixteen_concurrent_requests_read_the_origin_once("/hot.bin", Framing::Length).await;
}

/// 16 peerdist requests for a 3 MiB object arrive while the origin holds its
/// answer: all join one flight, so the object is read once and hashed once.
async fn sixteen_concurrent_requests_read_the_origin_once(path: &str, framing: Framing) {
    let s = start("").await;
    let content = data(3 * 1024 * 1024 + 3, 9);
    s.origin
        .put_framed(path, content.clone(), Some("\"hot\""), None, framing);
    // Hold the origin's answer so every request joins the same flight.
    s.origin.delay_ms.store(300, Ordering::Relaxed);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let addr = s.publisher;
        let path = path.to_string();
        tasks.push(tokio::spawn(async move { peerdist(addr, &path).await }));
    }
    let mut bodies = Vec::new();
    for t in tasks {
        let g = t.await.unwrap();
        assert_eq!(header(&g, "content-encoding"), "peerdist");
        bodies.push(g.body);
    }
    assert!(bodies.iter().all(|b| *b == bodies[0]));
    assert_v1_matches(&bodies[0], &content);
    // One read of the object; a request delayed past the flight (loaded
    // machine) may only add a bodiless 304 revalidation.
    assert_eq!(s.origin.reads(path), 1);
    assert_eq!(
        s.origin.body_bytes.load(Ordering::Relaxed),
        content.len() as u64
    );
    assert_eq!(
        metric(&s.app, "branchcache_publisher_ci_generated_total").await,
        1
    );
    assert_eq!(
        metric(&s.app, "branchcache_publisher_ci_served_total").await,
        16
    );
    s.app.shutdown().await;
}

#[tokio::test]
async fn v2_when_peerdistex_allows_and_configured() {
    let s = start("content_version = 2").await;
    let content = data(500 * 1024, 10);
    s.origin
        .put("/v2.bin", content.clone(), Some("\"v2\""), None);
    let g = request(s.publisher, Method::GET, "/v2.bin", PD_V2).await;
    assert_eq!(header(&g, "content-encoding"), "peerdist");
    assert_eq!(&g.body[..2], &[0x00, 0x02]);
    assert_v2_matches(&g.body, &content);

    // The same publisher still answers v1 to a client without PeerDistEx.
    let g1 = peerdist(s.publisher, "/v2.bin").await;
    assert_eq!(&g1.body[..2], &[0x00, 0x01]);
    assert_v1_matches(&g1.body, &content);

    // And a v1-configured publisher answers v1 even when v2 is allowed.
    let s1 = start("").await;
    s1.origin
        .put("/v2.bin", content.clone(), Some("\"v2\""), None);
    let g = request(s1.publisher, Method::GET, "/v2.bin", PD_V2).await;
    assert_eq!(&g.body[..2], &[0x00, 0x01]);
    s.app.shutdown().await;
    s1.app.shutdown().await;
}

#[tokio::test]
async fn unvalidated_objects_are_hashed_per_request_or_passed_through_when_large() {
    let s = start("max_unvalidated_size = \"256 KiB\"").await;
    let small = data(100 * 1024, 11);
    let large = data(400 * 1024, 12);
    s.origin.put("/nv-small", small.clone(), None, None);
    s.origin.put("/nv-large", large.clone(), None, None);
    for _ in 0..2 {
        let g = peerdist(s.publisher, "/nv-small").await;
        assert_eq!(header(&g, "content-encoding"), "peerdist");
        assert_v1_matches(&g.body, &small);
    }
    assert_eq!(s.origin.reads("/nv-small"), 2, "no validator: never cached");
    let g = peerdist(s.publisher, "/nv-large").await;
    assert!(g.headers.get("content-encoding").is_none());
    assert_eq!(&g.body[..], &large[..]);
    s.app.shutdown().await;
}

#[tokio::test]
async fn garbage_peerdist_headers_get_identity() {
    let s = start("").await;
    let content = data(100 * 1024, 13);
    s.origin.put("/g.bin", content.clone(), Some("\"g\""), None);
    for pd in ["Version=999.999", "Version=1.0, MissingDataRequest=maybe"] {
        let g = request(
            s.publisher,
            Method::GET,
            "/g.bin",
            &[("accept-encoding", "peerdist"), ("x-p2p-peerdist", pd)],
        )
        .await;
        assert!(g.headers.get("content-encoding").is_none(), "{pd}");
        assert_eq!(&g.body[..], &content[..], "{pd}");
    }
    s.app.shutdown().await;
}

#[tokio::test]
async fn origin_down_is_502_and_slow_origin_is_504() {
    // A port with nothing listening.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let s = start_with_upstream(Arc::new(Origin::default()), &format!("http://{dead}"), "").await;
    let g = peerdist(s.publisher, "/x").await;
    assert_eq!(g.status, StatusCode::BAD_GATEWAY);
    let g = request(s.publisher, Method::GET, "/x", &[]).await;
    assert_eq!(g.status, StatusCode::BAD_GATEWAY);
    assert!(metric(&s.app, "branchcache_publisher_origin_errors_total").await >= 2);
    s.app.shutdown().await;

    let s = start("origin_timeout = \"200ms\"").await;
    s.origin
        .put("/slow", data(100 * 1024, 14), Some("\"s\""), None);
    s.origin.delay_ms.store(2000, Ordering::Relaxed);
    let g = peerdist(s.publisher, "/slow").await;
    assert_eq!(g.status, StatusCode::GATEWAY_TIMEOUT);
    let g = request(s.publisher, Method::GET, "/slow", &[]).await;
    assert_eq!(g.status, StatusCode::GATEWAY_TIMEOUT);
    s.app.shutdown().await;
}

#[tokio::test]
async fn generated_secret_file_is_used_and_kept() {
    let (origin, addr) = start_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("keys/server-secret");
    let toml = format!(
        "[store]\npath = {:?}\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [publisher]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://{addr}\"\nsecret_file = {:?}\n",
        dir.path().join("store"),
        secret
    );
    let content = data(100 * 1024, 15);
    origin.put("/k.bin", content.clone(), Some("\"k\""), None);
    let app = App::start(Config::from_toml(&toml, "t").unwrap())
        .await
        .unwrap();
    let g = peerdist(app.publisher_addr.unwrap(), "/k.bin").await;
    app.shutdown().await;
    let key = std::fs::read(&secret).unwrap();
    assert_eq!(key.len(), 32);
    let info = ContentInfo::parse(&g.body).unwrap();
    let seg = info.segment(0).unwrap();
    let ks = Sha256::digest(&key);
    assert_eq!(
        seg.secret().expose(),
        hmac256(&ks, seg.hash_of_data().as_bytes()).as_slice()
    );
    // Restart: same key, same CI.
    let app = App::start(Config::from_toml(&toml, "t").unwrap())
        .await
        .unwrap();
    let g2 = peerdist(app.publisher_addr.unwrap(), "/k.bin").await;
    assert_eq!(g2.body, g.body);
    app.shutdown().await;
}

#[tokio::test]
async fn https_upstream_with_private_ca_works_and_untrusted_cert_is_502() {
    let (origin, addr, pem) = start_origin_tls().await;
    let content = data(100 * 1024, 16);
    origin.put("/tls.bin", content.clone(), Some("\"tls\""), None);
    let ca_dir = tempfile::tempdir().unwrap();
    let ca = ca_dir.path().join("ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let s = start_with_upstream(
        origin.clone(),
        &format!("https://{addr}"),
        &format!("upstream_ca_file = {ca:?}"),
    )
    .await;
    let g = peerdist(s.publisher, "/tls.bin").await;
    assert_eq!(header(&g, "content-encoding"), "peerdist");
    assert_v1_matches(&g.body, &content);
    let g = request(s.publisher, Method::GET, "/tls.bin", &[]).await;
    assert_eq!(&g.body[..], &content[..]);
    s.app.shutdown().await;

    // Public roots only: the self-signed origin is not trusted.
    let s = start_with_upstream(origin, &format!("https://{addr}"), "").await;
    let g = peerdist(s.publisher, "/tls.bin").await;
    assert_eq!(g.status, StatusCode::BAD_GATEWAY);
    s.app.shutdown().await;
}

// ------------------------------------------ bodies without Content-Length

/// Generous bound on a test that must merely finish.
const FINISH: Duration = Duration::from_secs(60);

#[tokio::test]
async fn chunked_object_with_strong_etag_gets_ci_of_the_bytes_received() {
    let s = start("content_version = 2").await;
    let content = data(5 * 1024 * 1024 + 777, 20);
    s.origin
        .put_chunked("/chunked.bin", content.clone(), Some("\"ch\""), None);
    let g = peerdist(s.publisher, "/chunked.bin").await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(header(&g, "content-encoding"), "peerdist");
    assert_eq!(
        header(&g, "x-p2p-peerdist"),
        format!("Version=1.1, ContentLength={}", content.len())
    );
    assert_eq!(header(&g, "etag"), "\"ch\"");
    assert_eq!(
        ContentInfo::parse(&g.body).unwrap().range(),
        0..content.len() as u64
    );
    assert_v1_matches(&g.body, &content);
    assert_eq!(
        metric(&s.app, "branchcache_publisher_bytes_hashed_total").await,
        content.len() as u64
    );
    // A range CI from the cached hashes after a 304, and v2 for the same object.
    let mut h = PD_V1.to_vec();
    h.push(("range", "bytes=1000000-3000000"));
    let g = request(s.publisher, Method::GET, "/chunked.bin", &h).await;
    assert_eq!(
        ContentInfo::parse(&g.body).unwrap().range(),
        1_000_000..3_000_001
    );
    assert_v1_matches(&g.body, &content);
    assert_eq!(s.origin.not_modified.load(Ordering::Relaxed), 1);
    let g = request(s.publisher, Method::GET, "/chunked.bin", PD_V2).await;
    assert_eq!(
        header(&g, "x-p2p-peerdist"),
        format!("Version=1.1, ContentLength={}", content.len())
    );
    assert_v2_matches(&g.body, &content);
    assert_eq!(s.origin.reads("/chunked.bin"), 2, "one read per CI version");
    // The origin really announced no length (a plain GET relays its framing).
    let g = request(s.publisher, Method::GET, "/chunked.bin", &[]).await;
    assert!(g.headers.get("content-length").is_none(), "{:?}", g.headers);
    assert_eq!(&g.body[..], &content[..]);
    s.app.shutdown().await;
}

#[tokio::test]
async fn chunked_object_below_min_size_is_identity_with_exact_bytes() {
    let s = start("").await;
    let small = data(64 * 1024 - 1, 21);
    let exact = data(64 * 1024, 22);
    s.origin
        .put_chunked("/small", small.clone(), Some("\"s\""), None);
    s.origin
        .put_chunked("/exact", exact.clone(), Some("\"e\""), None);
    let g = peerdist(s.publisher, "/small").await;
    assert_eq!(g.status, StatusCode::OK);
    assert!(g.headers.get("content-encoding").is_none());
    assert!(g.headers.get("transfer-encoding").is_none());
    assert_eq!(header(&g, "content-length"), small.len().to_string());
    assert_eq!(header(&g, "etag"), "\"s\"");
    assert_eq!(header(&g, "content-type"), "application/octet-stream");
    assert_eq!(&g.body[..], &small[..]);
    // The leader's buffered answer was handed over: one origin read.
    assert_eq!(s.origin.reads("/small"), 1);
    assert_eq!(
        metric(&s.app, "branchcache_publisher_ci_generated_total").await,
        0
    );

    // Exactly min_size bytes qualify.
    let g = peerdist(s.publisher, "/exact").await;
    assert_eq!(header(&g, "content-encoding"), "peerdist");
    assert_eq!(
        header(&g, "x-p2p-peerdist"),
        "Version=1.1, ContentLength=65536"
    );
    assert_v1_matches(&g.body, &exact);
    s.app.shutdown().await;
}

#[tokio::test]
async fn chunked_unvalidated_objects_are_hashed_or_passed_through_when_they_grow_too_large() {
    let s = start("max_unvalidated_size = \"256 KiB\"").await;
    let small = data(256 * 1024, 23);
    let large = data(256 * 1024 + 1, 24);
    s.origin.put_chunked("/nv-small", small.clone(), None, None);
    s.origin.put_chunked("/nv-large", large.clone(), None, None);
    for _ in 0..2 {
        let g = peerdist(s.publisher, "/nv-small").await;
        assert_eq!(header(&g, "content-encoding"), "peerdist");
        assert_eq!(
            header(&g, "x-p2p-peerdist"),
            format!("Version=1.1, ContentLength={}", small.len())
        );
        assert_v1_matches(&g.body, &small);
    }
    assert_eq!(s.origin.reads("/nv-small"), 2, "no validator: never cached");

    let passed = metric(&s.app, "branchcache_publisher_passthrough_total").await;
    let g = peerdist(s.publisher, "/nv-large").await;
    assert_eq!(g.status, StatusCode::OK);
    assert!(g.headers.get("content-encoding").is_none());
    assert_eq!(&g.body[..], &large[..]);
    // The hashing read stopped past the bound; the answer is a fresh pass-through.
    assert_eq!(s.origin.reads("/nv-large"), 2);
    assert_eq!(
        metric(&s.app, "branchcache_publisher_passthrough_total").await,
        passed + 1
    );
    assert_eq!(
        metric(&s.app, "branchcache_publisher_ci_generated_total").await,
        2
    );
    s.app.shutdown().await;
}

#[tokio::test]
async fn chunked_object_with_last_modified_only_is_cached_and_revalidated() {
    let s = start("").await;
    let content = data(300 * 1024 + 5, 25);
    let lm = "Fri, 02 Jan 2026 00:00:00 GMT";
    s.origin
        .put_chunked("/lm-chunked", content.clone(), None, Some(lm));
    let first = peerdist(s.publisher, "/lm-chunked").await;
    assert_eq!(header(&first, "content-encoding"), "peerdist");
    assert_eq!(header(&first, "last-modified"), lm);
    assert_v1_matches(&first.body, &content);

    let warm = peerdist(s.publisher, "/lm-chunked").await;
    assert_eq!(warm.body, first.body);
    assert_eq!(
        header(&warm, "x-p2p-peerdist"),
        format!("Version=1.1, ContentLength={}", content.len())
    );
    assert_eq!(s.origin.not_modified.load(Ordering::Relaxed), 1);
    assert_eq!(s.origin.reads("/lm-chunked"), 1);
    assert_eq!(
        metric(&s.app, "branchcache_publisher_ci_cache_hits_total").await,
        1
    );

    // A newer object (other length): the origin answers 200, a new CI.
    let changed = data(200 * 1024, 26);
    let lm2 = "Sat, 03 Jan 2026 00:00:00 GMT";
    s.origin
        .put_chunked("/lm-chunked", changed.clone(), None, Some(lm2));
    let g = peerdist(s.publisher, "/lm-chunked").await;
    assert_eq!(header(&g, "last-modified"), lm2);
    assert_v1_matches(&g.body, &changed);
    assert_eq!(s.origin.reads("/lm-chunked"), 2);
    s.app.shutdown().await;
}

#[tokio::test]
async fn sixteen_concurrent_peerdist_requests_for_a_chunked_object_cause_one_origin_read() {
    sixteen_concurrent_requests_read_the_origin_once("/hot-chunked", Framing::Chunked).await;
}

/// An origin speaking raw HTTP/1.1 that answers every request with `head`
/// and `body`, then closes: a close-delimited body when `head` has no length.
async fn start_raw_origin(head: String, body: Vec<u8>) -> (SocketAddr, Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicU64::new(0));
    let counter = served.clone();
    let body = Arc::new(body);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let (head, body, counter) = (head.clone(), body.clone(), counter.clone());
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::Relaxed);
                let _ = stream.write_all(head.as_bytes()).await;
                for piece in body.chunks(50_000) {
                    if stream.write_all(piece).await.is_err() {
                        return;
                    }
                }
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, served)
}

#[tokio::test]
async fn close_delimited_object_with_etag_gets_ci() {
    let content = data(2 * 1024 * 1024 + 99, 28);
    let head = "HTTP/1.1 200 OK\r\netag: \"cd\"\r\ncontent-type: application/x-test\r\n\
                connection: close\r\n\r\n"
        .to_string();
    let (addr, served) = start_raw_origin(head, content.clone()).await;
    let s = start_with_upstream(Arc::new(Origin::default()), &format!("http://{addr}"), "").await;
    let g = tokio::time::timeout(FINISH, peerdist(s.publisher, "/cd.bin"))
        .await
        .unwrap();
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(header(&g, "content-encoding"), "peerdist");
    assert_eq!(header(&g, "content-type"), "application/x-test");
    assert_eq!(
        header(&g, "x-p2p-peerdist"),
        format!("Version=1.1, ContentLength={}", content.len())
    );
    assert_v1_matches(&g.body, &content);
    assert_eq!(served.load(Ordering::Relaxed), 1);

    // Plain GETs relay the close-delimited body unchanged.
    let g = tokio::time::timeout(FINISH, request(s.publisher, Method::GET, "/cd.bin", &[]))
        .await
        .unwrap();
    assert_eq!(&g.body[..], &content[..]);
    s.app.shutdown().await;
}

#[tokio::test]
async fn stalled_origin_bodies_are_cut_off_after_body_idle_timeout() {
    // 1 s, not less: on a CPU-starved CI machine the origin's frames of the
    // first 300 KiB can be hundreds of milliseconds apart without a stall.
    let s = start("body_idle_timeout = \"1s\"").await;
    let content = data(1024 * 1024, 29);
    s.origin.put_framed(
        "/stall",
        content.clone(),
        Some("\"st\""),
        None,
        Framing::StallAfter(300 * 1024),
    );
    assert_eq!(
        metric(&s.app, "branchcache_publisher_origin_errors_total").await,
        0
    );

    // Pass-through: the head and the first bytes arrive, then the body is aborted.
    let resp = tokio::time::timeout(
        FINISH,
        client().request(
            Request::get(format!("http://{}/stall", s.publisher))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut received = 0usize;
    let ended = tokio::time::timeout(FINISH, async {
        loop {
            match body.frame().await {
                Some(Ok(f)) => received += f.into_data().map_or(0, |d| d.len()),
                Some(Err(e)) => break Err(e),
                None => break Ok(()),
            }
        }
    })
    .await
    .expect("the stalled body was not cut off");
    assert!(ended.is_err(), "a truncated body must not end cleanly");
    assert_eq!(received, 300 * 1024);
    assert_eq!(
        metric(&s.app, "branchcache_publisher_origin_errors_total").await,
        1
    );

    // Hashing for a peerdist request stalls the same way: 502.
    let g = tokio::time::timeout(FINISH, peerdist(s.publisher, "/stall"))
        .await
        .unwrap();
    assert_eq!(g.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        metric(&s.app, "branchcache_publisher_origin_errors_total").await,
        2
    );
    s.app.shutdown().await;
}
