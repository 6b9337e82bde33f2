//! Hosted cache end to end on loopback: an offering client runs a real PCCRR
//! server (MemorySource); it offers a v1 segment over real TLS (INITIAL_OFFER
//! → INTERESTED, SEGMENT_INFO → OK); the hosted cache pulls every block with
//! the PCCRR client into a real store, verified at ingest.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use branchcache::hosted_cache::{
    tls, Holding, HostedCacheOptions, HostedCacheServer, SegmentCatalog, StorePuller,
};
use branchcache::metrics::Metrics;
use branchcache::net::serve;
use branchcache::proto::pchc::{
    verify_segment_info, Request, RequestBody, Response, V1_PATH, V2_PATH,
};
use branchcache::retrieval::{
    ClientConfig, MemorySource, PeerClient, RetrievalServer, ServerConfig,
};
use branchcache::store::Store;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use sha2::{Digest as _, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const INITIAL_OFFER: &[u8] = include_bytes!("data/pchc/initial_offer.bin");
const SEGMENT_INFO: &[u8] = include_bytes!("data/pchc/segment_info.bin");
const BATCHED_OFFER: &[u8] = include_bytes!("data/pchc/batched_offer.bin");
/// Upper bound on waiting for background pulls; only guards against a hang.
const PATIENCE: Duration = Duration::from_secs(60);

/// The golden vector's content: SHA-256 counter stream seeded `pchc-v1`
/// (see tests/data/pchc/gen_vectors.py), 99710 bytes in two blocks.
fn golden_content() -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0u32;
    while out.len() < 99_710 {
        let mut h = Sha256::new();
        h.update(b"pchc-v1");
        h.update(i.to_be_bytes());
        out.extend_from_slice(&h.finalize());
        i += 1;
    }
    out.truncate(99_710);
    out
}

fn with_port(msg: &[u8], port: u16) -> Vec<u8> {
    let mut m = msg.to_vec();
    m[8..10].copy_from_slice(&port.to_be_bytes());
    m
}

/// The offering client's PCCRR server holding `blocks` of the golden segment.
async fn offering_client(blocks: &[u32], stop: &CancellationToken) -> SocketAddr {
    let RequestBody::SegmentInfo(info) = Request::decode(SEGMENT_INFO).unwrap().body else {
        unreachable!()
    };
    let seg = verify_segment_info(None, &info).unwrap();
    let data = golden_content();
    let source = Arc::new(MemorySource::new());
    for &b in blocks {
        let start = b as usize * 65_536;
        let end = (start + 65_536).min(data.len());
        source.insert(
            seg.id,
            seg.secret,
            b,
            Bytes::copy_from_slice(&data[start..end]),
        );
    }
    let server = RetrievalServer::new(source, ServerConfig::default(), Arc::new(Metrics::new()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(
        listener,
        move |req, peer| server.clone().handle(req, peer),
        stop.clone(),
    ));
    addr
}

struct HostedCache {
    server: HostedCacheServer,
    store: Store,
    metrics: Arc<Metrics>,
    client_tls: Arc<rustls::ClientConfig>,
    _dir: tempfile::TempDir,
}

async fn hosted_cache(stop: &CancellationToken) -> HostedCache {
    let dir = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("hc.crt"), dir.path().join("hc.key"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let client_tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();

    let store = Store::open_in_memory(64 << 20);
    let metrics = Arc::new(Metrics::new());
    let puller = StorePuller::new(
        PeerClient::new(ClientConfig::default(), Some(metrics.clone())),
        store.clone(),
    );
    let options = HostedCacheOptions {
        listen_http: Some("127.0.0.1:0".parse().unwrap()),
        listen_https: Some((
            "127.0.0.1:0".parse().unwrap(),
            tls::server_config(&cert_path, &key_path).unwrap(),
        )),
        ..HostedCacheOptions::default()
    };
    let server = HostedCacheServer::bind(
        options,
        Arc::new(store.clone()),
        Arc::new(puller),
        metrics.clone(),
        stop.clone(),
    )
    .await
    .unwrap();
    HostedCache {
        server,
        store,
        metrics,
        client_tls: Arc::new(client_tls),
        _dir: dir,
    }
}

impl HostedCache {
    async fn offer_v1(&self, body: Vec<u8>) -> Response {
        let stream = TcpStream::connect(self.server.https_addr().unwrap())
            .await
            .unwrap();
        let tls = tokio_rustls::TlsConnector::from(self.client_tls.clone())
            .connect(
                rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                stream,
            )
            .await
            .unwrap();
        post(TokioIo::new(tls), V1_PATH, body).await
    }

    async fn offer_v2(&self, body: Vec<u8>) -> Response {
        let stream = TcpStream::connect(self.server.http_addr().unwrap())
            .await
            .unwrap();
        post(TokioIo::new(stream), V2_PATH, body).await
    }

    /// Wait until the pull queue is idle (bounded by [`PATIENCE`]).
    async fn settle(&self) {
        tokio::time::timeout(PATIENCE, async {
            while self.server.queue().in_flight_len() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("pulls did not finish");
    }
}

async fn post<S>(io: TokioIo<S>, path: &str, body: Vec<u8>) -> Response
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(path)
        .header(http::header::HOST, "hc")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), http::StatusCode::OK);
    Response::decode(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap()
}

#[tokio::test]
async fn v1_offer_is_pulled_verified_and_stored() {
    let stop = CancellationToken::new();
    let client = offering_client(&[0, 1], &stop).await;
    let hc = hosted_cache(&stop).await;
    let RequestBody::InitialOffer(offer) = Request::decode(INITIAL_OFFER).unwrap().body else {
        unreachable!()
    };
    let id = offer.hash;

    let r = hc.offer_v1(with_port(INITIAL_OFFER, client.port())).await;
    assert_eq!(r, Response::INTERESTED);
    let r = hc.offer_v1(with_port(SEGMENT_INFO, client.port())).await;
    assert_eq!(r, Response::OK);
    hc.settle().await;

    assert_eq!(hc.store.holding(&id), Holding::Complete);
    let data = golden_content();
    let b0 = hc.store.get_block(&id, 0).await.unwrap().unwrap();
    let b1 = hc.store.get_block(&id, 1).await.unwrap().unwrap();
    assert_eq!(&b0[..], &data[..65_536]);
    assert_eq!(&b1[..], &data[65_536..]);
    // Known now: the next offer of the same segment is simply OK.
    let r = hc.offer_v1(with_port(INITIAL_OFFER, client.port())).await;
    assert_eq!(r, Response::OK);
    let text = hc.metrics.render();
    assert!(
        text.contains(r#"branchcache_hosted_cache_pulls_total{outcome="ok"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"branchcache_hosted_cache_offers_total{version="v1",message="initial_offer",response="interested"} 1"#),
        "{text}"
    );
    stop.cancel();
    hc.server.join().await;
}

#[tokio::test]
async fn client_holding_part_of_a_segment_leaves_the_rest_missing() {
    let stop = CancellationToken::new();
    let client = offering_client(&[1], &stop).await;
    let hc = hosted_cache(&stop).await;
    let r = hc.offer_v1(with_port(SEGMENT_INFO, client.port())).await;
    assert_eq!(r, Response::OK);
    hc.settle().await;
    let RequestBody::InitialOffer(offer) = Request::decode(INITIAL_OFFER).unwrap().body else {
        unreachable!()
    };
    assert_eq!(hc.store.holding(&offer.hash), Holding::HashInfo);
    assert_eq!(hc.store.present_blocks(&offer.hash), vec![1]);
    stop.cancel();
    hc.server.join().await;
}

#[tokio::test]
async fn v2_offers_are_answered_but_not_pulled_into_the_verified_store() {
    let stop = CancellationToken::new();
    let hc = hosted_cache(&stop).await;
    let r = hc.offer_v2(BATCHED_OFFER.to_vec()).await;
    assert_eq!(r, Response::OK);
    hc.settle().await;
    let text = hc.metrics.render();
    assert!(
        text.contains(r#"branchcache_hosted_cache_pulls_total{outcome="unsupported"} 2"#),
        "{text}"
    );
    stop.cancel();
    hc.server.join().await;
}

#[test]
fn gen_cert_writes_a_pair_the_v1_listener_loads_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("hc.crt"), dir.path().join("hc.key"));
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_branchcache"))
            .arg("gen-cert")
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .args(["--name", "hc.branch.example", "--name", "127.0.0.1"])
            .output()
            .unwrap()
    };
    let out = run();
    assert!(out.status.success(), "{out:?}");
    tls::server_config(&cert, &key).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "key readable by others: {mode:o}");
    }
    let before = std::fs::read(&key).unwrap();
    let again = run();
    assert!(!again.status.success());
    assert_eq!(std::fs::read(&key).unwrap(), before);
}
