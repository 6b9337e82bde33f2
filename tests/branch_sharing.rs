//! Branch machines sharing what one of them fetched, end to end on loopback
//! with whole daemons (`App::start`): a proxy offers to a hosted cache (PCHC
//! v2 over HTTP, v1 over TLS), the hosted cache pulls and serves a second
//! proxy with zero origin body bytes; a proxy with a fixed peer fetches from
//! that peer's store, and finishes from the origin when the peer goes away.

mod common;

use std::time::Duration;

use common::*;

/// A daemon from TOML text (store in its own temporary directory).
async fn daemon(dir: &tempfile::TempDir, body: &str) -> App {
    let toml = format!(
        "[store]\npath = {:?}\n[admin]\nlisten = \"127.0.0.1:0\"\n{body}\n",
        dir.path().join("store")
    );
    App::start(Config::from_toml(&toml, "test").unwrap())
        .await
        .unwrap()
}

/// `[proxy]` in reverse mode in front of `origin`, listening on port 0.
fn proxy_section(origin: std::net::SocketAddr) -> String {
    format!("[proxy]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://{origin}\"\n")
}

/// `[peer]` on port 0 without discovery (in-process tests must not join the
/// host's real multicast groups).
const PEER_SECTION: &str = "[peer]\nlisten = \"127.0.0.1:0\"\ndiscovery = false\n";

/// Daemon A (proxy + peer) that has downloaded `path` (`data`) once from
/// `origin` and stored every block of it.
async fn warmed_peer(origin: &Origin, path: &str, data: &Bytes) -> (App, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let a = daemon(
        &dir,
        &format!("{}{PEER_SECTION}", proxy_section(origin.addr)),
    )
    .await;
    let (status, _, body) = fetch(a.proxy_addr.unwrap(), path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == *data, "A's body differs");
    wait_blocks(&a, data.len().div_ceil(65_536) as u64).await;
    (a, dir)
}

/// Daemon B: a proxy in front of `origin` with `peer` as its fixed peer.
async fn proxy_with_peer(origin: &Origin, peer: std::net::SocketAddr) -> (App, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let b = daemon(
        &dir,
        &format!("{}peers = [\"{peer}\"]\n", proxy_section(origin.addr)),
    )
    .await;
    (b, dir)
}

/// Poll `app`'s metrics until `name_and_labels` reaches `want` (or panic after ~20 s).
async fn wait_metric(app: &App, name_and_labels: &str, want: u64) {
    for _ in 0..2000 {
        if metric(&app.metrics.render(), name_and_labels) >= want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "{name_and_labels} never reached {want}:\n{}",
        app.metrics.render()
    );
}

/// Sum of every sample of the metric family `name` (all label sets).
fn metric_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Wait until `app`'s store holds `blocks` verified blocks.
async fn wait_blocks(app: &App, blocks: u64) {
    for _ in 0..2000 {
        if app.store.stats().blocks >= blocks {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "store never reached {blocks} blocks: {:?}",
        app.store.stats()
    );
}

/// Segments in an object's content information.
fn segments(obj: &Object) -> u64 {
    let ci = obj.ci.as_ref().unwrap();
    branchcache::proto::pccrc::ContentInfo::parse(ci)
        .unwrap()
        .segment_count() as u64
}

/// A PCCRR server over an in-memory source holding `blocks` (index, bytes)
/// of `plan`'s segment under its id and Kp; stopped by the returned token.
async fn memory_peer(
    plan: &branchcache::fetch::SegmentPlan,
    blocks: impl IntoIterator<Item = (u32, Bytes)>,
) -> (std::net::SocketAddr, tokio_util::sync::CancellationToken) {
    use branchcache::retrieval::{MemorySource, RetrievalServer, ServerConfig};
    let source = std::sync::Arc::new(MemorySource::new());
    for (i, b) in blocks {
        source.insert(plan.id, plan.secret, i, b);
    }
    let server = RetrievalServer::new(source, ServerConfig::default(), Default::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(branchcache::net::serve(
        listener,
        move |req, from| server.clone().handle(req, from),
        stop.clone(),
    ));
    (addr, stop)
}

/// Bytes of block `i` of `plan`'s segment within `data` (the whole object).
fn block_of(plan: &branchcache::fetch::SegmentPlan, data: &Bytes, i: u32) -> Bytes {
    let r = plan.block_range(i).unwrap();
    data.slice((r.start - plan.offset) as usize..(r.end - plan.offset) as usize)
}

struct Tls {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

fn lab_cert(dir: &tempfile::TempDir) -> Tls {
    let (cert, key) =
        branchcache::hosted_cache::tls::self_signed(&["127.0.0.1".to_string()]).unwrap();
    let t = Tls {
        cert: dir.path().join("hc.crt"),
        key: dir.path().join("hc.key"),
    };
    std::fs::write(&t.cert, cert).unwrap();
    std::fs::write(&t.key, key).unwrap();
    t
}

/// Proxy P1 fetches `obj` from the origin and offers it to hosted cache H;
/// once H pulled it, proxy P2 (empty store, H configured) serves the same
/// bytes with no origin body bytes at all.
async fn offer_pull_and_serve(obj: Object, version: u8) {
    let origin = Origin::start().await;
    let data = obj.data.clone();
    let n_segments = segments(&obj);
    origin.put("/big.bin", obj);

    let h_dir = tempfile::tempdir().unwrap();
    let tls = lab_cert(&h_dir);
    let h = daemon(
        &h_dir,
        &format!(
            "[hosted_cache]\nlisten_http = \"127.0.0.1:0\"\nlisten_https = \"127.0.0.1:0\"\ntls_cert = {:?}\ntls_key = {:?}\n",
            tls.cert, tls.key
        ),
    )
    .await;
    let h_http = h.hosted_cache_http_addr.unwrap();
    let h_https = h.hosted_cache_https_addr.unwrap();
    let upstream_hc = format!(
        "[upstream_hosted_cache]\naddress = \"{h_http}\"\nversion = {version}\nhttps_address = \"{h_https}\"\nserver_name = \"127.0.0.1\"\nca_file = {:?}\n",
        tls.cert
    );

    let p1_dir = tempfile::tempdir().unwrap();
    let p1 = daemon(
        &p1_dir,
        &format!("{}{PEER_SECTION}{upstream_hc}", proxy_section(origin.addr)),
    )
    .await;
    let (status, _, body) = fetch(p1.proxy_addr.unwrap(), "/big.bin").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == data, "P1 body differs");
    let wan_once = origin.body_bytes();
    assert_eq!(wan_once, data.len() as u64);

    let v = if version == 1 { "v1" } else { "v2" };
    wait_metric(
        &p1,
        &format!("branchcache_upstream_hosted_cache_offers_total{{version=\"{v}\",outcome=\"accepted\"}}"),
        n_segments,
    )
    .await;
    wait_metric(
        &h,
        "branchcache_hosted_cache_pulls_total{outcome=\"ok\"}",
        n_segments,
    )
    .await;

    let p2_dir = tempfile::tempdir().unwrap();
    let p2 = daemon(
        &p2_dir,
        &format!("{}{upstream_hc}", proxy_section(origin.addr)),
    )
    .await;
    let (status, _, body) = fetch(p2.proxy_addr.unwrap(), "/big.bin").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == data, "P2 body differs");
    assert_eq!(
        origin.body_bytes(),
        wan_once,
        "P2 fetched origin body bytes:\n{}",
        p2.metrics.render()
    );
    let m = p2.metrics.render();
    assert_eq!(
        metric(
            &m,
            "branchcache_proxy_served_bytes_total{source=\"hosted_cache\"}"
        ),
        data.len() as u64,
        "{m}"
    );
    let hm = h.metrics.render();
    let pulled = metric(
        &hm,
        &format!("branchcache_hosted_cache_pulled_bytes_total{{version=\"{v}\"}}"),
    );
    if version == 1 {
        // Verified plaintext, once per block.
        assert_eq!(pulled, data.len() as u64, "{hm}");
    } else {
        // Kept as received: ciphertext with its PKCS#7 padding.
        assert!(pulled >= data.len() as u64, "{hm}");
        assert!(
            metric(&hm, "branchcache_hosted_cache_replay_bytes") > pulled,
            "{hm}"
        );
    }
    assert!(
        metric(&hm, "branchcache_retrieval_blocks_served_total") > 0,
        "{hm}"
    );
    for app in [p2, p1, h] {
        app.shutdown().await;
    }
}

#[tokio::test]
async fn v2_offer_is_pulled_replayed_and_serves_a_second_proxy() {
    offer_pull_and_serve(Object::peerdist(content(2 * MIB + 4321, 51)), 2).await;
}

#[tokio::test]
async fn v2_offer_of_v2_content_is_pulled_replayed_and_serves_a_second_proxy() {
    offer_pull_and_serve(Object::v2(content(MIB + 999, 52)), 2).await;
}

#[tokio::test]
async fn v1_offer_over_tls_is_pulled_verified_and_serves_a_second_proxy() {
    offer_pull_and_serve(Object::peerdist(content(2 * MIB + 17, 53)), 1).await;
}

#[tokio::test]
async fn corrupt_replay_records_on_the_hosted_cache_never_reach_a_client() {
    let origin = Origin::start().await;
    let data = content(MIB, 54);
    origin.put("/x.bin", Object::peerdist(data.clone()));
    let h_dir = tempfile::tempdir().unwrap();
    let h = daemon(&h_dir, "[hosted_cache]\nlisten_http = \"127.0.0.1:0\"\n").await;
    let h_http = h.hosted_cache_http_addr.unwrap();

    let p_dir = tempfile::tempdir().unwrap();
    let p = daemon(
        &p_dir,
        &format!(
            "{}{PEER_SECTION}[upstream_hosted_cache]\naddress = \"{h_http}\"\n",
            proxy_section(origin.addr)
        ),
    )
    .await;
    let (status, _, body) = fetch(p.proxy_addr.unwrap(), "/x.bin").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == data);
    wait_metric(
        &h,
        "branchcache_hosted_cache_pulls_total{outcome=\"ok\"}",
        1,
    )
    .await;
    // What H replays is exactly what P sent: a third proxy decrypts and verifies it.
    let p3_dir = tempfile::tempdir().unwrap();
    let p3 = daemon(
        &p3_dir,
        &format!(
            "{}[upstream_hosted_cache]\naddress = \"{h_http}\"\n",
            proxy_section(origin.addr)
        ),
    )
    .await;
    // Corrupt every replay record on H's disk: P3 must still get the right
    // bytes (from the origin), and H drops the bad records.
    let replay_dir = h_dir.path().join("store").join("replay");
    let mut corrupted = 0;
    for entry in std::fs::read_dir(&replay_dir).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        std::fs::write(&path, bytes).unwrap();
        corrupted += 1;
    }
    assert_eq!(corrupted, data.len().div_ceil(65_536));
    let before = origin.body_bytes();
    let (status, _, body) = fetch(p3.proxy_addr.unwrap(), "/x.bin").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == data, "P3 got wrong bytes");
    assert_eq!(origin.body_bytes() - before, data.len() as u64);
    // The record P3 was refused is gone from H's disk (P3 then took the
    // rest of the segment from the origin without asking H again).
    assert!(std::fs::read_dir(&replay_dir).unwrap().count() < corrupted);
    assert!(
        metric(
            &h.metrics.render(),
            "branchcache_hosted_cache_replay_corrupt_total"
        ) >= 1
    );
    for app in [p3, p, h] {
        app.shutdown().await;
    }
}

#[tokio::test]
async fn a_fixed_peer_serves_a_100_mib_object_with_zero_origin_body_bytes() {
    let origin = Origin::start().await;
    let data = content(100 * MIB, 55);
    origin.put("/large.iso", Object::peerdist(data.clone()));
    let (a, _a_dir) = warmed_peer(&origin, "/large.iso", &data).await;
    let wan_once = origin.body_bytes();
    assert_eq!(wan_once, data.len() as u64);
    let (b, _b_dir) = proxy_with_peer(&origin, a.peer_addr.unwrap()).await;
    let (status, _, body) = fetch(b.proxy_addr.unwrap(), "/large.iso").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == data, "B's body differs");
    assert_eq!(origin.body_bytes(), wan_once, "B used the origin");
    let m = b.metrics.render();
    assert_eq!(
        metric(&m, "branchcache_proxy_served_bytes_total{source=\"peer\"}"),
        data.len() as u64,
        "{m}"
    );
    for app in [b, a] {
        app.shutdown().await;
    }
}

#[tokio::test]
async fn peer_stopped_mid_transfer_the_download_finishes_from_the_origin() {
    let origin = Origin::start().await;
    let data = content(40 * MIB, 56);
    origin.put("/mid.bin", Object::peerdist(data.clone()));
    let (a, _a_dir) = warmed_peer(&origin, "/mid.bin", &data).await;
    let wan_once = origin.body_bytes();
    let (b, _b_dir) = proxy_with_peer(&origin, a.peer_addr.unwrap()).await;
    let b_addr = b.proxy_addr.unwrap();
    let download = tokio::spawn(async move { fetch(b_addr, "/mid.bin").await });
    // Stop A once B has some blocks from it.
    wait_metric(
        &b,
        "branchcache_proxy_served_bytes_total{source=\"peer\"}",
        1,
    )
    .await;
    a.shutdown().await;
    let (status, _, body) = download.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(body == data, "B's body differs after losing its peer");
    let m = b.metrics.render();
    let from_peer = metric(&m, "branchcache_proxy_served_bytes_total{source=\"peer\"}");
    let from_origin = metric(
        &m,
        "branchcache_proxy_served_bytes_total{source=\"origin\"}",
    );
    assert!(from_peer > 0, "{m}");
    assert!(from_origin > 0, "A was stopped before B finished: {m}");
    assert_eq!(from_peer + from_origin, data.len() as u64, "{m}");
    assert_eq!(origin.body_bytes() - wan_once, from_origin);
    b.shutdown().await;
}

/// A v1 client that offers a real segment (valid SEGMENT_INFO) but serves
/// blocks of other content when the cache pulls: the hosted cache verifies
/// every block, stores none of them, counts the failed pull and keeps
/// serving; a client that vanished before the pull fails the same way.
#[tokio::test]
async fn hosted_cache_stores_nothing_from_a_lying_or_vanished_v1_client() {
    use branchcache::fetch::SegmentPlan;
    use branchcache::hosted_cache::{describe_v1, OfferClient};
    use branchcache::proto::pccrc::{ContentInfo, Version as CiVersion};
    let h_dir = tempfile::tempdir().unwrap();
    let tls = lab_cert(&h_dir);
    let h = daemon(
        &h_dir,
        &format!(
            "[hosted_cache]\nlisten_http = \"127.0.0.1:0\"\nlisten_https = \"127.0.0.1:0\"\ntls_cert = {:?}\ntls_key = {:?}\n",
            tls.cert, tls.key
        ),
    )
    .await;
    let offers = OfferClient::new(Some(
        branchcache::hosted_cache::tls::client_config(Some(&tls.cert)).unwrap(),
    ));
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();

    let plan_of = |data: &Bytes| {
        let obj = Object::peerdist(data.clone());
        let ci = ContentInfo::parse(obj.ci.as_ref().unwrap()).unwrap();
        let seg = ci.segments().next().unwrap();
        SegmentPlan::from_segment(&seg, CiVersion::V1, HashAlgo::Sha256)
    };
    let real = content(300_000, 57);
    let plan = plan_of(&real);
    let wrong = content(300_000, 58);

    // The liar: a PCCRR server holding the segment's id and Kp over wrong bytes.
    let (liar, stop) = memory_peer(
        &plan,
        (0..plan.block_count()).map(|i| (i, block_of(&plan, &wrong, i))),
    )
    .await;
    let liar_port = liar.port();

    let ci = describe_v1(&plan).unwrap();
    let h_https = h.hosted_cache_https_addr.unwrap();
    offers
        .offer_v1(h_https, &name, liar_port, plan.id, [0; 16], &ci)
        .await
        .unwrap();
    wait_metric(
        &h,
        "branchcache_hosted_cache_pulls_total{outcome=\"peer\"}",
        1,
    )
    .await;
    assert_eq!(h.store.stats().blocks, 0, "a wrong block was stored");
    stop.cancel();

    // Vanished: offered from a port nobody listens on any more.
    let gone = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone_port = gone.local_addr().unwrap().port();
    drop(gone);
    let plan2 = plan_of(&content(200_000, 59));
    offers
        .offer_v1(
            h_https,
            &name,
            gone_port,
            plan2.id,
            [0; 16],
            &describe_v1(&plan2).unwrap(),
        )
        .await
        .unwrap();
    wait_metric(
        &h,
        "branchcache_hosted_cache_pulls_total{outcome=\"peer\"}",
        2,
    )
    .await;
    assert_eq!(h.store.stats().blocks, 0);

    // A SEGMENT_INFO whose block hashes do not hash to its HoD (tampered
    // hash information, so the id it claims does not match it) is refused
    // (400) and nothing is queued.
    let pulls_before = metric_sum(&h.metrics.render(), "branchcache_hosted_cache_pulls_total");
    assert_eq!(pulls_before, 2, "the lying and the vanished client's pulls");
    let plan3 = plan_of(&content(100_000, 60));
    let mut tampered = describe_v1(&plan3).unwrap();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let err = offers
        .offer_v1(h_https, &name, liar_port, plan3.id, [0; 16], &tampered)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "status", "{err}");
    let hm = h.metrics.render();
    assert!(
        hm.contains(r#"message="segment_info",response="unverified""#),
        "{hm}"
    );
    assert_eq!(
        metric_sum(&hm, "branchcache_hosted_cache_pulls_total"),
        pulls_before
    );
    assert!(h.store.meta_arc(&plan3.id).is_none());

    // Still healthy: an honest v2 offer round trip answers OK.
    let d = branchcache::hosted_cache::describe_v2(&plan).unwrap();
    offers
        .offer_v2(h.hosted_cache_http_addr.unwrap(), gone_port, &[d])
        .await
        .unwrap();
    h.shutdown().await;
}

/// A peer holding only blocks 5..20 of a 40-block segment: B takes exactly
/// those from it (the run starts with GETBLKLIST, so the blocks the peer
/// lacks do not end the run) and the rest from the origin.
#[tokio::test]
async fn a_peer_holding_part_of_a_segment_serves_that_part() {
    use branchcache::fetch::SegmentPlan;
    use branchcache::proto::pccrc::{ContentInfo, Version as CiVersion};
    let origin = Origin::start().await;
    let data = content(40 * 65_536, 63);
    let obj = Object::peerdist(data.clone());
    let ci = ContentInfo::parse(obj.ci.as_ref().unwrap()).unwrap();
    let plan = SegmentPlan::from_segment(
        &ci.segments().next().unwrap(),
        CiVersion::V1,
        HashAlgo::Sha256,
    );
    origin.put("/part.bin", obj);

    let (peer_addr, stop) =
        memory_peer(&plan, (5..20u32).map(|i| (i, block_of(&plan, &data, i)))).await;

    let (b, _b_dir) = proxy_with_peer(&origin, peer_addr).await;
    let (status, _, body) = fetch(b.proxy_addr.unwrap(), "/part.bin").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == data);
    let m = b.metrics.render();
    assert_eq!(
        metric(&m, "branchcache_proxy_served_bytes_total{source=\"peer\"}"),
        15 * 65_536,
        "{m}"
    );
    assert_eq!(origin.body_bytes(), 25 * 65_536);
    assert!(
        m.contains(r#"branchcache_retrieval_client_requests_total{type="getblklist",result="ok"}"#),
        "{m}"
    );
    b.shutdown().await;
    stop.cancel();
}
