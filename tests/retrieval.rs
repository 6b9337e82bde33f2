//! PCCRR client ↔ server over real hyper on 127.0.0.1:0: happy path, lying,
//! garbage and silent peers, version negotiation, limits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use branchcache::metrics::Metrics;
use branchcache::net::{full, serve, Body};
use branchcache::proto::pccrc::{
    segment_id, segment_secret, server_secret, HashAlgo, SegmentId, SegmentSecret,
};
use branchcache::proto::pccrr::{
    encrypt_block, Blk, BlockRange, CryptoAlgoId, GetBlks, KeyReading, ProtVer, Request, Response,
    RETRIEVAL_PATH,
};
use branchcache::retrieval::{
    BlockRequest, ClientConfig, MemorySource, PeerClient, RetrievalError, RetrievalServer,
    ServerConfig,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const BLOCK: usize = 65_536;

/// A v1 segment of three blocks (the last one short), with real keys.
struct Segment {
    id: SegmentId,
    kp: SegmentSecret,
    blocks: Vec<Vec<u8>>,
}

fn segment() -> Segment {
    segment_of(&[BLOCK, BLOCK, 1000])
}

/// A v1 segment with blocks of the given lengths.
fn segment_of(lens: &[usize]) -> Segment {
    let blocks: Vec<Vec<u8>> = lens
        .iter()
        .enumerate()
        .map(|(b, &len)| (0..len).map(|i| (i * 31 + b * 7) as u8).collect())
        .collect();
    let algo = HashAlgo::Sha256;
    let mut hashes = Vec::new();
    for b in &blocks {
        hashes.extend_from_slice(algo.hash(b).as_bytes());
    }
    let hod = algo.hash(&hashes);
    let ks = server_secret(algo, b"retrieval test key");
    let kp = segment_secret(algo, &ks, &hod);
    Segment {
        id: segment_id(algo, &kp, &hod),
        kp,
        blocks,
    }
}

impl Segment {
    fn want(&self, index: u32) -> BlockRequest {
        let data = &self.blocks[index as usize];
        BlockRequest {
            segment_id: self.id,
            index,
            kp: self.kp,
            expected_len: data.len(),
            hash_algo: HashAlgo::Sha256,
            expected_hash: HashAlgo::Sha256.hash(data),
        }
    }
}

struct Running {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn spawn<H, F>(handler: H) -> Running
where
    H: Fn(hyper::Request<hyper::body::Incoming>, SocketAddr) -> F + Send + Sync + 'static,
    F: std::future::Future<Output = hyper::Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(serve(listener, handler, stop.clone()));
    Running { addr, stop }
}

async fn spawn_server(source: Arc<MemorySource>, config: ServerConfig) -> (Running, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let server = RetrievalServer::new(source, config, metrics.clone());
    let running = spawn(move |req, peer| server.clone().handle(req, peer)).await;
    (running, metrics)
}

fn source_with(seg: &Segment, indexes: &[u32]) -> Arc<MemorySource> {
    let source = Arc::new(MemorySource::new());
    for &i in indexes {
        source.insert(
            seg.id,
            seg.kp,
            i,
            Bytes::from(seg.blocks[i as usize].clone()),
        );
    }
    source
}

fn client(timeout: Duration) -> PeerClient {
    PeerClient::new(
        ClientConfig {
            request_timeout: timeout,
            ..ClientConfig::default()
        },
        None,
    )
}

/// POST raw bytes, return status and body.
async fn raw_post(addr: SocketAddr, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = hyper::Request::post(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = http.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, body)
}

#[tokio::test]
async fn client_fetches_and_verifies_blocks_from_server() {
    let seg = segment();
    let (srv, metrics) = spawn_server(source_with(&seg, &[0, 2]), ServerConfig::default()).await;
    let c = client(Duration::from_secs(10));

    let got = c.fetch_block(srv.addr, &seg.want(0)).await.unwrap();
    assert_eq!(&got.data[..], &seg.blocks[0][..]);
    assert_eq!(got.key_reading, KeyReading::Truncated);
    assert_eq!(got.next_block_index, 2);

    let last = c.fetch_block(srv.addr, &seg.want(2)).await.unwrap();
    assert_eq!(&last.data[..], &seg.blocks[2][..]);
    assert_eq!(last.next_block_index, 0);

    let err = c.fetch_block(srv.addr, &seg.want(1)).await.unwrap_err();
    assert!(matches!(err, RetrievalError::NotAvailable { .. }), "{err}");
    assert!(!err.penalise());

    let text = metrics.render();
    assert!(
        text.contains("branchcache_retrieval_blocks_served_total 2"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "branchcache_retrieval_bytes_served_total {}",
            BLOCK + 1000
        )),
        "{text}"
    );
    assert!(
        text.contains(r#"branchcache_retrieval_requests_total{type="getblks",result="empty"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn block_list_reports_held_ranges_and_next_index() {
    let seg = segment();
    let (srv, _) = spawn_server(source_with(&seg, &[0, 1, 2]), ServerConfig::default()).await;
    let c = client(Duration::from_secs(10));
    let list = c
        .block_list(srv.addr, seg.id, vec![BlockRange { index: 0, count: 2 }])
        .await
        .unwrap();
    assert_eq!(list.ranges, vec![BlockRange { index: 0, count: 2 }]);
    assert_eq!(list.next_block_index, 2);

    let other = SegmentId::from_slice(&[9; 32]).unwrap();
    let list = c
        .block_list(
            srv.addr,
            other,
            vec![BlockRange {
                index: 0,
                count: 512,
            }],
        )
        .await
        .unwrap();
    assert!(list.ranges.is_empty());
    assert_eq!(list.next_block_index, 0);
}

#[tokio::test]
async fn negotiation_returns_server_range() {
    let (srv, _) = spawn_server(Arc::new(MemorySource::new()), ServerConfig::default()).await;
    let n = client(Duration::from_secs(10))
        .negotiate(srv.addr)
        .await
        .unwrap();
    assert_eq!(
        (n.min_version, n.max_version),
        (ProtVer::V1_0, ProtVer::V2_0)
    );
}

#[tokio::test]
async fn unsupported_major_version_gets_nego_resp() {
    let seg = segment();
    let (srv, _) = spawn_server(source_with(&seg, &[0]), ServerConfig::default()).await;
    let mut req = Request::GetBlks(GetBlks {
        crypto_algo: CryptoAlgoId::AES_128,
        segment_id: seg.id,
        ranges: vec![BlockRange { index: 0, count: 1 }],
        vrf: &[],
    })
    .encode();
    req[..4].copy_from_slice(&ProtVer::new(3, 0).0.to_be_bytes());
    let (status, body) = raw_post(srv.addr, RETRIEVAL_PATH, req).await;
    assert_eq!(status, 200);
    match Response::decode(&body).unwrap() {
        Response::NegoResp(n) => assert_eq!(n.max_version, ProtVer::V2_0),
        other => panic!("expected NEGO_RESP, got {other:?}"),
    }
}

#[tokio::test]
async fn server_rejects_garbage_wrong_path_and_method() {
    let (srv, metrics) = spawn_server(Arc::new(MemorySource::new()), ServerConfig::default()).await;
    let (status, _) = raw_post(srv.addr, RETRIEVAL_PATH, b"not a pccrr message".to_vec()).await;
    assert_eq!(status, 400);
    let (status, _) = raw_post(srv.addr, "/other/", vec![0; 24]).await;
    assert_eq!(status, 404);
    let (status, _) = raw_post(srv.addr, RETRIEVAL_PATH, vec![0; 98_305]).await;
    assert_eq!(status, 413);

    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let resp = http
        .request(
            hyper::Request::get(format!("http://{}{RETRIEVAL_PATH}", srv.addr))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert!(metrics.render().contains("bad_request"));
}

#[tokio::test]
async fn path_matches_case_insensitively_with_or_without_slash() {
    let (srv, _) = spawn_server(Arc::new(MemorySource::new()), ServerConfig::default()).await;
    let nego = Request::NegoReq(branchcache::proto::pccrr::NegoReq {
        crypto_algo: CryptoAlgoId::NONE,
        min_version: ProtVer::V1_0,
        max_version: ProtVer::V2_0,
    })
    .encode();
    for path in [
        "/116B50EB-ECE2-41ac-8429-9F9E963361B7/",
        "/116b50eb-ece2-41ac-8429-9f9e963361b7",
        "/116B50EB-ECE2-41AC-8429-9F9E963361B7",
    ] {
        let (status, body) = raw_post(srv.addr, path, nego.clone()).await;
        assert_eq!(status, 200, "{path}");
        assert!(matches!(
            Response::decode(&body).unwrap(),
            Response::NegoResp(_)
        ));
    }
    let (status, _) = raw_post(
        srv.addr,
        "/116B50EB-ECE2-41ac-8429-9F9E963361B7/x",
        nego.clone(),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn client_over_concurrency_limit_gets_empty_answers() {
    let seg = segment();
    let config = ServerConfig {
        max_active_per_client: 0,
        ..ServerConfig::default()
    };
    let (srv, metrics) = spawn_server(source_with(&seg, &[0, 1]), config).await;
    let c = client(Duration::from_secs(10));
    let err = c.fetch_block(srv.addr, &seg.want(0)).await.unwrap_err();
    assert!(matches!(err, RetrievalError::NotAvailable { .. }), "{err}");
    let list = c
        .block_list(srv.addr, seg.id, vec![BlockRange { index: 0, count: 2 }])
        .await
        .unwrap();
    assert!(list.ranges.is_empty());
    assert!(
        metrics
            .render()
            .contains("branchcache_retrieval_refusals_total 2"),
        "{}",
        metrics.render()
    );
}

#[tokio::test]
async fn lying_server_is_a_hash_mismatch() {
    let seg = segment();
    let source = Arc::new(MemorySource::new());
    let mut wrong = seg.blocks[0].clone();
    wrong[100] ^= 0xFF;
    source.insert(seg.id, seg.kp, 0, Bytes::from(wrong));
    let (srv, _) = spawn_server(source, ServerConfig::default()).await;
    let err = client(Duration::from_secs(10))
        .fetch_block(srv.addr, &seg.want(0))
        .await
        .unwrap_err();
    assert!(matches!(err, RetrievalError::HashMismatch { .. }), "{err}");
    assert!(err.penalise());
    assert_eq!(err.peer(), srv.addr);
}

#[tokio::test]
async fn garbage_answer_is_a_decode_error() {
    let srv = spawn(|_req, _peer| async { hyper::Response::new(full("<html>hello</html>")) }).await;
    let err = client(Duration::from_secs(10))
        .fetch_block(srv.addr, &segment().want(0))
        .await
        .unwrap_err();
    assert!(matches!(err, RetrievalError::Garbage { .. }), "{err}");
    assert!(err.penalise());
}

#[tokio::test]
async fn http_error_status_is_reported() {
    let srv = spawn(|_req, _peer| async {
        let mut r = hyper::Response::new(full(""));
        *r.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
        r
    })
    .await;
    let err = client(Duration::from_secs(10))
        .negotiate(srv.addr)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RetrievalError::Status { status, .. } if status == 503),
        "{err}"
    );
}

#[tokio::test]
async fn silent_peer_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (s, _) = listener.accept().await.unwrap();
            held.push(s);
        }
    });
    let err = client(Duration::from_millis(300))
        .fetch_block(addr, &segment().want(0))
        .await
        .unwrap_err();
    assert!(matches!(err, RetrievalError::Timeout { .. }), "{err}");
    assert_eq!(err.kind(), "timeout");
    holder.abort();
}

#[tokio::test]
async fn client_accepts_full_kp_aes256_reading() {
    let seg = Arc::new(segment());
    let s = seg.clone();
    // A peer that keys AES with all 32 bytes of Kp (the .NET test suite's
    // reading) while labelling the block AES-128.
    let srv = spawn(move |_req, _peer| {
        let s = s.clone();
        async move {
            let iv = [5u8; 16];
            let cipher = encrypt_block(CryptoAlgoId::AES_256, &s.kp, iv, &s.blocks[0]).unwrap();
            aes128_blk(s.id, 0, &iv, &cipher)
        }
    })
    .await;
    let got = client(Duration::from_secs(10))
        .fetch_block(srv.addr, &seg.want(0))
        .await
        .unwrap();
    assert_eq!(got.key_reading, KeyReading::FullKp);
    assert_eq!(&got.data[..], &seg.blocks[0][..]);
}

/// A batch of 20 blocks hashed side by side: good ones pass with the usual
/// reading, one keyed with the full Kp passes with that reading, a corrupt
/// one is a hash mismatch; each verdict is the block's own.
#[tokio::test]
async fn verify_blocks_judges_each_block_of_a_batch() {
    let seg = Arc::new(segment_of(&[BLOCK; 20]));
    let s = seg.clone();
    let srv = spawn(move |req, _peer| {
        let s = s.clone();
        async move {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let Ok(Request::GetBlks(m)) = Request::decode(&body) else {
                panic!("not a GETBLKS");
            };
            let index = m.first_block().unwrap();
            let iv = [index as u8; 16];
            let mut plain = s.blocks[index as usize].clone();
            if index == 13 {
                plain[100] ^= 0x40;
            }
            let algo = if index == 7 {
                CryptoAlgoId::AES_256
            } else {
                CryptoAlgoId::AES_128
            };
            let cipher = encrypt_block(algo, &s.kp, iv, &plain).unwrap();
            aes128_blk(s.id, index, &iv, &cipher)
        }
    })
    .await;
    let c = client(Duration::from_secs(10));
    let mut fetched = Vec::new();
    for i in 0..20 {
        fetched.push(c.fetch_unverified(srv.addr, &seg.want(i)).await.unwrap());
    }
    assert_eq!(fetched[4].index(), 4);
    let verdicts = c.verify_blocks(fetched);
    assert_eq!(verdicts.len(), 20);
    for (i, v) in verdicts.into_iter().enumerate() {
        match i {
            13 => assert!(
                matches!(v, Err(RetrievalError::HashMismatch { .. })),
                "block {i}: {v:?}"
            ),
            _ => {
                let b = v.unwrap();
                assert_eq!(&b.data[..], &seg.blocks[i][..], "block {i}");
                let reading = if i == 7 {
                    KeyReading::FullKp
                } else {
                    KeyReading::Truncated
                };
                assert_eq!(b.key_reading, reading, "block {i}");
            }
        }
    }
}

#[tokio::test]
async fn answer_for_another_block_is_unexpected() {
    let seg = Arc::new(segment());
    let s = seg.clone();
    let srv =
        spawn(move |_req, _peer| {
            let s = s.clone();
            async move {
                hyper::Response::new(full(Response::Blk(Blk::not_available(s.id, 7)).encode()))
            }
        })
        .await;
    let err = client(Duration::from_secs(10))
        .fetch_block(srv.addr, &seg.want(0))
        .await
        .unwrap_err();
    assert!(matches!(err, RetrievalError::Unexpected { .. }), "{err}");
}

#[tokio::test]
async fn plaintext_only_when_allowed() {
    let seg = segment();
    let getblks = Request::GetBlks(GetBlks {
        crypto_algo: CryptoAlgoId::NONE,
        segment_id: seg.id,
        ranges: vec![BlockRange { index: 2, count: 1 }],
        vrf: &[],
    })
    .encode();
    for (allow, expect) in [(false, CryptoAlgoId::AES_128), (true, CryptoAlgoId::NONE)] {
        let config = ServerConfig {
            allow_plaintext: allow,
            ..ServerConfig::default()
        };
        let (srv, _) = spawn_server(source_with(&seg, &[2]), config).await;
        let (status, body) = raw_post(srv.addr, RETRIEVAL_PATH, getblks.clone()).await;
        assert_eq!(status, 200);
        let Response::Blk(b) = Response::decode(&body).unwrap() else {
            panic!("not a BLK")
        };
        assert_eq!(b.crypto_algo, expect);
        if allow {
            assert_eq!(b.block, &seg.blocks[2][..]);
            assert!(b.iv.is_empty());
        } else {
            assert_eq!(b.iv.len(), 16);
            assert_eq!(b.block.len(), 1008);
        }
    }
}

#[tokio::test]
async fn fresh_iv_per_block() {
    let seg = segment();
    let (srv, _) = spawn_server(source_with(&seg, &[2]), ServerConfig::default()).await;
    let getblks = Request::GetBlks(GetBlks {
        crypto_algo: CryptoAlgoId::AES_128,
        segment_id: seg.id,
        ranges: vec![BlockRange { index: 2, count: 1 }],
        vrf: &[],
    })
    .encode();
    let (_, a) = raw_post(srv.addr, RETRIEVAL_PATH, getblks.clone()).await;
    let (_, b) = raw_post(srv.addr, RETRIEVAL_PATH, getblks).await;
    let (Response::Blk(a), Response::Blk(b)) =
        (Response::decode(&a).unwrap(), Response::decode(&b).unwrap())
    else {
        panic!("not BLKs")
    };
    assert_ne!(a.iv, b.iv);
    assert_ne!(a.block, b.block);
}

#[tokio::test]
async fn server_over_the_store_serves_what_it_holds() {
    use branchcache::store::{SegmentMeta, Store};
    let seg = segment();
    let algo = HashAlgo::Sha256;
    let hashes: Vec<_> = seg.blocks.iter().map(|b| algo.hash(b)).collect();
    let cat: Vec<u8> = hashes.iter().flat_map(|h| h.as_bytes().to_vec()).collect();
    let store = Store::open_in_memory(64 << 20);
    store
        .put_meta(
            seg.id,
            SegmentMeta {
                algo,
                size: (2 * BLOCK + 1000) as u32,
                block_size: BLOCK as u32,
                hash_of_data: algo.hash(&cat),
                secret: seg.kp,
                block_hashes: hashes,
            },
        )
        .await
        .unwrap();
    store
        .put_block(&seg.id, 1, Bytes::from(seg.blocks[1].clone()))
        .await
        .unwrap();
    let metrics = Arc::new(Metrics::new());
    let server = RetrievalServer::new(Arc::new(store), ServerConfig::default(), metrics);
    let srv = spawn(move |req, peer| server.clone().handle(req, peer)).await;
    let c = client(Duration::from_secs(10));
    let got = c.fetch_block(srv.addr, &seg.want(1)).await.unwrap();
    assert_eq!(&got.data[..], &seg.blocks[1][..]);
    let err = c.fetch_block(srv.addr, &seg.want(0)).await.unwrap_err();
    assert!(matches!(err, RetrievalError::NotAvailable { .. }), "{err}");
    let list = c
        .block_list(srv.addr, seg.id, vec![BlockRange { index: 0, count: 3 }])
        .await
        .unwrap();
    assert_eq!(list.ranges, vec![BlockRange { index: 1, count: 1 }]);
}

mod peer_source {
    use super::*;
    use branchcache::fetch::{BlockSource, SegmentPlan, SourceKind};
    use branchcache::retrieval::{PeerSource, StaticPeers};
    use futures_util::StreamExt;

    fn plan(seg: &Segment) -> Arc<SegmentPlan> {
        let algo = HashAlgo::Sha256;
        let block_hashes: Vec<_> = seg.blocks.iter().map(|b| algo.hash(b)).collect();
        let cat: Vec<u8> = block_hashes
            .iter()
            .flat_map(|h| h.as_bytes().to_vec())
            .collect();
        Arc::new(SegmentPlan {
            id: seg.id,
            offset: 0,
            size: seg.blocks.iter().map(|b| b.len() as u32).sum(),
            block_size: BLOCK as u32,
            algo,
            hash_of_data: algo.hash(&cat),
            secret: seg.kp,
            block_hashes,
            v2: false,
        })
    }

    fn source(peers: Vec<SocketAddr>) -> PeerSource {
        PeerSource::new(
            SourceKind::Peer,
            Arc::new(StaticPeers(peers)),
            client(Duration::from_secs(10)),
        )
    }

    #[tokio::test]
    async fn skips_and_penalises_a_lying_peer() {
        let seg = segment();
        let liar = Arc::new(MemorySource::new());
        for i in 0..3u32 {
            let mut wrong = seg.blocks[i as usize].clone();
            wrong[0] ^= 1;
            liar.insert(seg.id, seg.kp, i, Bytes::from(wrong));
        }
        let (bad, _) = spawn_server(liar, ServerConfig::default()).await;
        let (good, _) = spawn_server(source_with(&seg, &[0, 1, 2]), ServerConfig::default()).await;
        let src = source(vec![bad.addr, good.addr]);
        let got: Vec<_> = src.fetch(plan(&seg), 0..3).collect().await;
        assert_eq!(got.len(), 3);
        for (i, b) in got.into_iter().enumerate() {
            let b = b.unwrap();
            assert_eq!(b.index, i as u32);
            assert_eq!(&b.data[..], &seg.blocks[i][..]);
        }
        assert!(src.is_penalised(&bad.addr));
        assert!(!src.is_penalised(&good.addr));
    }

    /// A long run (GETBLKLIST, then blocks verified in batches): the one
    /// corrupt block in the middle of a batch comes from the next peer, the
    /// liar is penalised, every other block is kept.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_corrupt_block_inside_a_batch_is_refetched_from_another_peer() {
        let seg = segment_of(&[BLOCK; 40]);
        let liar = Arc::new(MemorySource::new());
        for i in 0..40u32 {
            let mut block = seg.blocks[i as usize].clone();
            if i == 21 {
                block[0] ^= 1;
            }
            liar.insert(seg.id, seg.kp, i, Bytes::from(block));
        }
        let all: Vec<u32> = (0..40).collect();
        let (bad, _) = spawn_server(liar, ServerConfig::default()).await;
        let (good, good_metrics) =
            spawn_server(source_with(&seg, &all), ServerConfig::default()).await;
        let src = source(vec![bad.addr, good.addr]);
        let got: Vec<_> = src.fetch(plan(&seg), 0..40).collect().await;
        assert_eq!(got.len(), 40);
        let mut seen = [false; 40];
        for b in got {
            let b = b.unwrap();
            assert_eq!(&b.data[..], &seg.blocks[b.index as usize][..]);
            seen[b.index as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
        assert!(src.is_penalised(&bad.addr));
        assert!(good_metrics.retrieval_blocks_served.get() >= 1);
    }

    #[tokio::test]
    async fn ends_early_without_error_when_no_peer_has_the_block() {
        let seg = segment();
        let (peer, _) = spawn_server(source_with(&seg, &[0, 2]), ServerConfig::default()).await;
        let got: Vec<_> = source(vec![peer.addr])
            .fetch(plan(&seg), 0..3)
            .collect()
            .await;
        assert_eq!(
            got.len(),
            1,
            "block 1 is missing, so the run ends after block 0"
        );
        assert_eq!(got[0].as_ref().unwrap().index, 0);
    }

    #[tokio::test]
    async fn no_peers_means_an_empty_stream() {
        let seg = segment();
        let got: Vec<_> = source(vec![]).fetch(plan(&seg), 0..3).collect().await;
        assert!(got.is_empty());
    }
}

#[tokio::test]
async fn daemon_peer_role_serves_blocks_from_its_store() {
    use branchcache::app::App;
    use branchcache::config::Config;
    use branchcache::store::SegmentMeta;
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[store]\npath = {:?}\nmax_size = \"64 MiB\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [peer]\nlisten = \"127.0.0.1:0\"\ndiscovery = false\n",
        dir.path().join("cache")
    );
    let app = App::start(Config::from_toml(&toml, "test").unwrap())
        .await
        .unwrap();
    let seg = segment();
    let algo = HashAlgo::Sha256;
    let hashes: Vec<_> = seg.blocks.iter().map(|b| algo.hash(b)).collect();
    let cat: Vec<u8> = hashes.iter().flat_map(|h| h.as_bytes().to_vec()).collect();
    app.store
        .put_meta(
            seg.id,
            SegmentMeta {
                algo,
                size: (2 * BLOCK + 1000) as u32,
                block_size: BLOCK as u32,
                hash_of_data: algo.hash(&cat),
                secret: seg.kp,
                block_hashes: hashes,
            },
        )
        .await
        .unwrap();
    app.store
        .put_block(&seg.id, 2, Bytes::from(seg.blocks[2].clone()))
        .await
        .unwrap();
    let addr = app.peer_addr.unwrap();
    let got = client(Duration::from_secs(10))
        .fetch_block(addr, &seg.want(2))
        .await
        .unwrap();
    assert_eq!(&got.data[..], &seg.blocks[2][..]);
    assert!(app
        .metrics
        .render()
        .contains("branchcache_retrieval_blocks_served_total 1"));
    app.shutdown().await;
}

/// An HTTP answer carrying a MSG_BLK labelled AES-128 (whatever `cipher` was
/// really encrypted with) for block `index` of `id`.
fn aes128_blk(id: SegmentId, index: u32, iv: &[u8], cipher: &[u8]) -> hyper::Response<Body> {
    let resp = Response::Blk(Blk {
        crypto_algo: CryptoAlgoId::AES_128,
        segment_id: id,
        block_index: index,
        next_block_index: 0,
        block: cipher,
        vrf: &[],
        iv,
    });
    hyper::Response::new(full(resp.encode()))
}
