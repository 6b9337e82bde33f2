//! Hosted cache tests: real hyper servers on 127.0.0.1:0, real TLS with rcgen
//! certificates, a fake catalog and a gated fake puller.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::*;
use crate::proto::pccrc::SegmentId;
use crate::proto::pchc::{
    BatchedOffer, OfferHashAlgo, Request as PchcRequest, RequestBody, Response as PchcResponse,
    SegmentDescriptor, V1_PATH, V2_PATH,
};

const INITIAL_OFFER: &[u8] = include_bytes!("../../tests/data/pchc/initial_offer.bin");
const SEGMENT_INFO: &[u8] = include_bytes!("../../tests/data/pchc/segment_info.bin");
const BATCHED_OFFER: &[u8] = include_bytes!("../../tests/data/pchc/batched_offer.bin");
const GOLDEN_PORT: u16 = 54321;

#[derive(Default)]
struct FakeCatalog(Mutex<HashMap<SegmentId, Holding>>);

impl FakeCatalog {
    fn set(&self, id: SegmentId, h: Holding) {
        self.0.lock().unwrap().insert(id, h);
    }
}

impl SegmentCatalog for FakeCatalog {
    fn holding(&self, id: &SegmentId) -> Holding {
        self.0
            .lock()
            .unwrap()
            .get(id)
            .copied()
            .unwrap_or(Holding::Nothing)
    }
}

/// Records every job; each pull waits for a permit on `gate`.
struct FakePuller {
    jobs: Mutex<Vec<PullJob>>,
    gate: Semaphore,
    started: tokio::sync::Notify,
}

impl FakePuller {
    fn new(open: bool) -> Arc<Self> {
        Arc::new(FakePuller {
            jobs: Mutex::new(Vec::new()),
            gate: Semaphore::new(if open { Semaphore::MAX_PERMITS } else { 0 }),
            started: tokio::sync::Notify::new(),
        })
    }

    fn jobs(&self) -> Vec<PullJob> {
        self.jobs.lock().unwrap().clone()
    }

    async fn wait_for_jobs(&self, n: usize) -> Vec<PullJob> {
        loop {
            let notified = self.started.notified();
            let jobs = self.jobs();
            if jobs.len() >= n {
                return jobs;
            }
            notified.await;
        }
    }
}

impl Puller for FakePuller {
    async fn pull(&self, job: &PullJob) -> Result<(), PullError> {
        self.jobs.lock().unwrap().push(job.clone());
        self.started.notify_waiters();
        let _permit = self.gate.acquire().await;
        Ok(())
    }
}

struct Harness {
    server: HostedCacheServer,
    catalog: Arc<FakeCatalog>,
    puller: Arc<FakePuller>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    client_tls: Arc<rustls::ClientConfig>,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start(open_gate: bool, tweak: impl FnOnce(&mut HostedCacheOptions)) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let (tls, client_tls) = lab_tls(dir.path());
        let mut options = HostedCacheOptions {
            listen_http: Some("127.0.0.1:0".parse().unwrap()),
            listen_https: Some(("127.0.0.1:0".parse().unwrap(), tls)),
            ..HostedCacheOptions::default()
        };
        tweak(&mut options);
        let catalog = Arc::new(FakeCatalog::default());
        let puller = FakePuller::new(open_gate);
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        let server = HostedCacheServer::bind(
            options,
            catalog.clone(),
            puller.clone(),
            metrics.clone(),
            shutdown.clone(),
        )
        .await
        .unwrap();
        Harness {
            server,
            catalog,
            puller,
            metrics,
            shutdown,
            client_tls,
            _dir: dir,
        }
    }

    async fn http(&self, method: Method, path: &str, body: &[u8]) -> (StatusCode, Bytes) {
        let stream = TcpStream::connect(self.server.http_addr().unwrap())
            .await
            .unwrap();
        exchange(stream, method, path, body).await
    }

    async fn https(&self, method: Method, path: &str, body: &[u8]) -> (StatusCode, Bytes) {
        let stream = TcpStream::connect(self.server.https_addr().unwrap())
            .await
            .unwrap();
        let connector = tokio_rustls::TlsConnector::from(self.client_tls.clone());
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, stream).await.unwrap();
        exchange(tls, method, path, body).await
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.server.join().await;
    }
}

/// Self-signed certificate for `localhost`/127.0.0.1 written to PEM files and
/// loaded through [`tls::server_config`], plus a client trusting only it.
fn lab_tls(dir: &std::path::Path) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert_path, key_path) = (dir.join("hc.crt"), dir.join("hc.key"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let server = tls::server_config(&cert_path, &key_path).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    (server, Arc::new(client))
}

async fn exchange<S>(stream: S, method: Method, path: &str, body: &[u8]) -> (StatusCode, Bytes)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "hc")
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, bytes)
}

fn pchc(bytes: &Bytes) -> PchcResponse {
    PchcResponse::decode(bytes).unwrap()
}

fn golden_v1_id() -> SegmentId {
    match PchcRequest::decode(INITIAL_OFFER).unwrap().body {
        RequestBody::InitialOffer(o) => o.hash,
        _ => unreachable!(),
    }
}

fn batch(port: u16, ids: &[u8]) -> Vec<u8> {
    let descriptors = ids
        .iter()
        .map(|&b| SegmentDescriptor {
            block_size: 0x1_0000,
            segment_size: 0x1_0000,
            content_tag: *b"test tag 0123456",
            hash_algorithm: OfferHashAlgo::SHA512_TRUNC,
            hohodk: [b; 32],
        })
        .collect();
    PchcRequest::new(
        port,
        RequestBody::BatchedOffer(BatchedOffer { descriptors }),
    )
    .encode()
}

#[tokio::test]
async fn v2_batched_offer_is_ok_and_pulls_from_the_client_address_and_port() {
    let h = Harness::start(true, |_| {}).await;
    let (code, body) = h.http(Method::POST, V2_PATH, BATCHED_OFFER).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(pchc(&body), PchcResponse::OK);
    let jobs = h.puller.wait_for_jobs(2).await;
    let req = PchcRequest::decode(BATCHED_OFFER).unwrap();
    let RequestBody::BatchedOffer(b) = req.body else {
        unreachable!()
    };
    let mut offered: Vec<_> = b.descriptors.iter().map(|d| d.segment_id()).collect();
    let mut pulled: Vec<_> = jobs.iter().map(|j| j.id).collect();
    offered.sort();
    pulled.sort();
    assert_eq!(offered, pulled);
    for j in &jobs {
        assert_eq!(j.source, SocketAddr::from(([127, 0, 0, 1], GOLDEN_PORT)));
        assert!(matches!(j.kind, PullKind::V2(_)));
    }
    let text = h.metrics.render();
    assert!(
        text.contains(
            r#"branchcache_hosted_cache_offers_total{version="v2",message="batched_offer",response="ok"} 1"#
        ),
        "{text}"
    );
    h.stop().await;
}

#[tokio::test]
async fn segments_in_flight_or_present_are_not_pulled_again() {
    let h = Harness::start(false, |_| {}).await;
    h.catalog
        .set(SegmentId::from_slice(&[3; 32]).unwrap(), Holding::Complete);
    let (code, _) = h
        .http(Method::POST, V2_PATH, &batch(9000, &[1, 2, 3]))
        .await;
    assert_eq!(code, StatusCode::OK);
    h.puller.wait_for_jobs(2).await;
    // Same segments again while their pulls are still running.
    let (code, _) = h
        .http(Method::POST, V2_PATH, &batch(9001, &[1, 2, 3]))
        .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(h.server.queue().in_flight_len(), 2);
    let text = h.metrics.render();
    assert!(
        text.contains(
            r#"branchcache_hosted_cache_offered_segments_total{version="v2",outcome="duplicate"} 2"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"branchcache_hosted_cache_offered_segments_total{version="v2",outcome="present"} 2"#
        ),
        "{text}"
    );
    // Let the pulls finish: the segments leave the in-flight set.
    h.puller.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    while h.server.queue().in_flight_len() != 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(h.puller.jobs().len(), 2);
    assert!(h
        .metrics
        .render()
        .contains(r#"branchcache_hosted_cache_pulls_total{outcome="ok"} 2"#));
    h.stop().await;
}

#[tokio::test]
async fn v1_initial_offer_then_segment_info_over_https() {
    let h = Harness::start(false, |_| {}).await;
    let (code, body) = h.https(Method::POST, V1_PATH, INITIAL_OFFER).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(pchc(&body), PchcResponse::INTERESTED);
    let (code, body) = h.https(Method::POST, V1_PATH, SEGMENT_INFO).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(pchc(&body), PchcResponse::OK);
    let jobs = h.puller.wait_for_jobs(1).await;
    assert_eq!(jobs[0].id, golden_v1_id());
    assert_eq!(
        jobs[0].source,
        SocketAddr::from(([127, 0, 0, 1], GOLDEN_PORT))
    );
    let PullKind::V1(seg) = &jobs[0].kind else {
        panic!("{:?}", jobs[0].kind)
    };
    assert!(seg.complete);
    // The hash information is now known (pull in flight): OK, not INTERESTED.
    let (_, body) = h.https(Method::POST, V1_PATH, INITIAL_OFFER).await;
    assert_eq!(pchc(&body), PchcResponse::OK);
    h.stop().await;
}

#[tokio::test]
async fn v1_initial_offer_for_stored_segments() {
    let h = Harness::start(true, |_| {}).await;
    h.catalog.set(golden_v1_id(), Holding::Complete);
    let (_, body) = h.https(Method::POST, V1_PATH, INITIAL_OFFER).await;
    assert_eq!(pchc(&body), PchcResponse::OK);
    assert_eq!(h.server.queue().in_flight_len(), 0);
    // Hash info but missing blocks: OK, and the hosted cache pulls the rest.
    h.catalog.set(golden_v1_id(), Holding::HashInfo);
    let (_, body) = h.https(Method::POST, V1_PATH, INITIAL_OFFER).await;
    assert_eq!(pchc(&body), PchcResponse::OK);
    let jobs = h.puller.wait_for_jobs(1).await;
    assert!(matches!(jobs[0].kind, PullKind::V1Stored));
    h.stop().await;
}

#[tokio::test]
async fn each_url_rejects_the_other_versions_messages() {
    let h = Harness::start(true, |_| {}).await;
    for msg in [INITIAL_OFFER, SEGMENT_INFO] {
        let (code, _) = h.http(Method::POST, V2_PATH, msg).await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
    }
    let (code, _) = h.https(Method::POST, V1_PATH, BATCHED_OFFER).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    // And each listener serves only its own URL.
    let (code, _) = h.http(Method::POST, V1_PATH, INITIAL_OFFER).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, _) = h.https(Method::POST, V2_PATH, BATCHED_OFFER).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(h.puller.jobs().is_empty());
    let text = h.metrics.render();
    assert!(
        text.contains(r#"{version="v1",message="batched_offer",response="wrong_version"} 1"#),
        "{text}"
    );
    h.stop().await;
}

#[tokio::test]
async fn urls_match_case_insensitively_with_or_without_trailing_slash() {
    let h = Harness::start(true, |_| {}).await;
    for path in [
        V2_PATH.to_string(),
        format!("{V2_PATH}/"),
        V2_PATH.to_uppercase(),
        format!("{}/", V2_PATH.to_uppercase()),
    ] {
        let (code, body) = h.http(Method::POST, &path, &batch(80, &[7])).await;
        assert_eq!(code, StatusCode::OK, "{path}");
        assert_eq!(pchc(&body), PchcResponse::OK);
    }
    for path in [format!("{V1_PATH}/"), V1_PATH.to_lowercase()] {
        let (code, body) = h.https(Method::POST, &path, INITIAL_OFFER).await;
        assert_eq!(code, StatusCode::OK, "{path}");
        assert_eq!(pchc(&body), PchcResponse::INTERESTED);
    }
    let (code, _) = h.http(Method::POST, "/", BATCHED_OFFER).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    h.stop().await;
}

#[tokio::test]
async fn rejects_other_methods_bad_bodies_and_oversized_bodies() {
    let h = Harness::start(true, |_| {}).await;
    let (code, _) = h.http(Method::GET, V2_PATH, b"").await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
    let (code, _) = h.http(Method::POST, V2_PATH, b"\x00\x02\x00\x03").await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (code, _) = h
        .http(Method::POST, V2_PATH, &vec![0u8; MAX_REQUEST_LEN + 1])
        .await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
    // Port 0 leaves nowhere to pull from.
    let (code, _) = h.http(Method::POST, V2_PATH, &batch(0, &[1])).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    // A SEGMENT_INFO whose block hashes do not hash to HoD.
    let mut bad = SEGMENT_INFO.to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let (code, _) = h.https(Method::POST, V1_PATH, &bad).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(h.puller.jobs().is_empty());
    h.stop().await;
}

#[tokio::test]
async fn offers_over_the_rate_limit_get_503_with_retry_after() {
    let h = Harness::start(true, |o| {
        o.rate_limit = RateLimit {
            per_second: 0.0,
            burst: 2.0,
        }
    })
    .await;
    for _ in 0..2 {
        let (code, _) = h.http(Method::POST, V2_PATH, &batch(80, &[1])).await;
        assert_eq!(code, StatusCode::OK);
    }
    let (code, _) = h.http(Method::POST, V2_PATH, &batch(80, &[1])).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    h.stop().await;
}

fn job(id: u8) -> PullJob {
    PullJob {
        source: "127.0.0.1:1".parse().unwrap(),
        id: SegmentId::from_slice(&[id; 32]).unwrap(),
        kind: PullKind::V1Stored,
    }
}

#[tokio::test]
async fn queue_is_bounded_and_deduplicated() {
    // current_thread runtime: the dispatcher cannot run between these calls.
    let puller = FakePuller::new(false);
    let shutdown = CancellationToken::new();
    let (queue, task) = PullQueue::start(
        2,
        1,
        puller.clone(),
        Arc::new(Metrics::new()),
        shutdown.clone(),
    );
    assert_eq!(queue.try_enqueue(job(1)), Enqueue::Queued);
    assert_eq!(queue.try_enqueue(job(1)), Enqueue::Duplicate);
    assert_eq!(queue.try_enqueue(job(2)), Enqueue::Queued);
    assert_eq!(queue.try_enqueue(job(3)), Enqueue::Full);
    assert_eq!(queue.in_flight(&job(3).id), None);
    assert_eq!(queue.in_flight(&job(1).id), Some(true));
    // Only one pull runs at a time; the other waits in the queue.
    puller.wait_for_jobs(1).await;
    tokio::task::yield_now().await;
    assert_eq!(puller.jobs().len(), 1);
    assert_eq!(queue.try_enqueue(job(2)), Enqueue::Duplicate);
    shutdown.cancel();
    task.await.unwrap();
}

#[test]
fn rate_limiter_refills_with_time_and_tracks_clients_separately() {
    use std::net::IpAddr;
    let limiter = offers::Limiter::new(RateLimit {
        per_second: 1.0,
        burst: 2.0,
    });
    let t0 = Instant::now();
    let a: IpAddr = "127.0.0.1".parse().unwrap();
    let b: IpAddr = "127.0.0.2".parse().unwrap();
    assert!(limiter.allow(a, t0));
    assert!(limiter.allow(a, t0));
    assert!(!limiter.allow(a, t0));
    assert!(limiter.allow(b, t0));
    assert!(limiter.allow(a, t0 + Duration::from_secs(1)));
    assert!(!limiter.allow(a, t0 + Duration::from_secs(1)));
}
