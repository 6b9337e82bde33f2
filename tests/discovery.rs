//! The MS-PCCRD driver over real UDP sockets on 127.0.0.1: several drivers
//! whose "multicast" targets are each other's loopback addresses.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use branchcache::discovery::{Discovery, DiscoveryConfig, DiscoveryError, GROUP_V4};
use branchcache::metrics::Metrics;
use branchcache::proto::pccrc::crypto::SegmentId;
use branchcache::proto::pccrd::engine::{EngineConfig, LocalSegment, LocalSegments};
use branchcache::proto::pccrd::{Uuid, Version};
use tokio_util::sync::CancellationToken;

fn seg(n: u8) -> SegmentId {
    SegmentId::from_slice(&[n; 32]).unwrap()
}

fn held(blocks: u32) -> LocalSegment {
    LocalSegment {
        block_count: blocks,
        complete: true,
        age: None,
    }
}

fn xaddr(i: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 18000 + u16::from(i)))
}

fn config(i: u8) -> DiscoveryConfig {
    DiscoveryConfig {
        bind: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        targets: Vec::new(),
        interfaces_v4: Vec::new(),
        interfaces_v6: Vec::new(),
        engine: EngineConfig {
            endpoint: Uuid::new_v4([i; 16]),
            instance_id: u64::from(i),
            xaddrs: vec![xaddr(i)],
            // Short waits keep the test quick; behaviour is the same.
            initial_wait: Duration::from_millis(600),
            retransmit_interval: Duration::from_millis(200),
            ..EngineConfig::default()
        },
    }
}

struct Lan {
    drivers: Vec<Discovery<LocalSegments>>,
    metrics: Vec<Arc<Metrics>>,
    token: CancellationToken,
}

/// `n` drivers on loopback, each targeting all the others.
async fn lan(n: u8) -> Lan {
    lan_with(n, |_| {}).await
}

/// As [`lan`], with each driver's config adjusted by `tweak`.
async fn lan_with(n: u8, tweak: impl Fn(&mut DiscoveryConfig)) -> Lan {
    let token = CancellationToken::new();
    let metrics: Vec<Arc<Metrics>> = (0..n).map(|_| Arc::new(Metrics::new())).collect();
    let drivers: Vec<_> = (0..n)
        .map(|i| {
            let m = metrics[usize::from(i)].clone();
            let mut c = config(i);
            tweak(&mut c);
            Discovery::start(c, LocalSegments::new(), m, token.clone()).unwrap()
        })
        .collect();
    let addrs: Vec<SocketAddr> = drivers.iter().map(|d| d.local_addrs()[0]).collect();
    for (i, d) in drivers.iter().enumerate() {
        let others = addrs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, a)| *a)
            .collect();
        d.handle().set_targets(others).await.unwrap();
    }
    Lan {
        drivers,
        metrics,
        token,
    }
}

impl Lan {
    async fn hold(&self, i: usize, id: SegmentId, l: LocalSegment) {
        self.drivers[i]
            .handle()
            .update_lookup(move |s| s.insert(id, l))
            .await
            .unwrap();
    }

    async fn stop(self) {
        self.token.cancel();
        for d in self.drivers {
            d.join().await;
        }
    }
}

fn addrs_of(peers: &[branchcache::proto::pccrd::engine::Peer]) -> Vec<SocketAddr> {
    let mut v: Vec<SocketAddr> = peers.iter().flat_map(|p| p.addrs.clone()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn drivers_on_loopback_find_each_other() {
    let lan = lan(3).await;
    lan.hold(0, seg(1), held(3)).await;
    lan.hold(1, seg(1), held(3)).await;
    lan.hold(1, seg(2), held(1)).await;
    let results = lan.drivers[2]
        .handle()
        .find_peers(vec![seg(1), seg(2), seg(3)], Version::V1)
        .await
        .unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(addrs_of(&results[0].peers), vec![xaddr(0), xaddr(1)]);
    assert_eq!(addrs_of(&results[1].peers), vec![xaddr(1)]);
    assert!(results[2].peers.is_empty());
    // Replies come from the responders' discovery sockets.
    let sources: Vec<SocketAddr> = results[0].peers.iter().map(|p| p.source).collect();
    for s in sources {
        assert!(lan.drivers[..2].iter().any(|d| d.local_addrs()[0] == s));
    }
    let stats = lan.drivers[0].handle().stats().await.unwrap();
    assert_eq!(
        stats.replies_sent, 1,
        "answered once despite the retransmission"
    );
    lan.stop().await;
}

#[tokio::test]
async fn v2_query_streams_peers_before_finishing() {
    let lan = lan(2).await;
    lan.hold(0, seg(7), held(2)).await;
    let mut q = lan.drivers[1]
        .handle()
        .start_query(vec![seg(7)], Version::V2)
        .await
        .unwrap();
    let (segment, peer) = q.next_peer().await.expect("a peer before the end");
    assert_eq!(segment, seg(7));
    assert_eq!(peer.addrs, vec![xaddr(0)]);
    let results = q.finish().await.unwrap();
    assert_eq!(results[0].peers, vec![peer]);
    lan.stop().await;
}

#[tokio::test]
async fn garbage_datagrams_are_counted_and_service_continues() {
    let lan = lan(2).await;
    lan.hold(0, seg(1), held(1)).await;
    let junk = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target = lan.drivers[0].local_addrs()[0];
    for payload in [&b"\x00\x01garbage"[..], b"<soap:Envelope>", &[0xFF; 2000]] {
        junk.send_to(payload, target).await.unwrap();
    }
    let results = lan.drivers[1]
        .handle()
        .find_peers(vec![seg(1)], Version::V1)
        .await
        .unwrap();
    assert_eq!(addrs_of(&results[0].peers), vec![xaddr(0)]);
    let stats = lan.drivers[0].handle().stats().await.unwrap();
    assert_eq!(stats.malformed, 3);
    let text = lan.metrics[0].render();
    assert!(
        text.contains("branchcache_discovery_events_total{event=\"malformed\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("branchcache_discovery_events_total{event=\"replies_sent\"} 1"),
        "{text}"
    );
    lan.stop().await;
}

#[tokio::test]
async fn shutdown_stops_the_driver_and_handles_report_it() {
    let lan = lan(1).await;
    let handle = lan.drivers[0].handle();
    lan.stop().await;
    let err = handle
        .find_peers(vec![seg(1)], Version::V1)
        .await
        .unwrap_err();
    assert!(matches!(err, DiscoveryError::Stopped), "{err}");
}

#[tokio::test]
async fn dropping_a_query_handle_cancels_the_query() {
    // A one-hour wait: only the cancellation can end this query in time.
    let lan = lan_with(2, |c| c.engine.initial_wait = Duration::from_secs(3600)).await;
    // Nobody holds seg(3): no reply can end the query either.
    let handle = lan.drivers[1].handle();
    let q = handle.start_query(vec![seg(3)], Version::V1).await.unwrap();
    drop(q);
    // The dropped handle tells the driver, which ends the query at once.
    // Poll the counters; the loop bound is only a give-up limit.
    let mut finished = 0;
    for _ in 0..100 {
        finished = handle.stats().await.unwrap().queries_finished;
        if finished == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(finished, 1);
    lan.stop().await;
}

#[tokio::test]
async fn refused_query_reports_the_engine_error() {
    let lan = lan(1).await;
    let err = lan.drivers[0]
        .handle()
        .find_peers(Vec::new(), Version::V1)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "empty");
    lan.stop().await;
}

/// Real multicast on `lo`. Opt-in because the group address is outside
/// 127.0.0.0/8 (the packets stay on `lo`, but the project's tests send only
/// to loopback addresses by default) and because `lo` usually lacks the
/// MULTICAST flag (`ip link set lo multicast on`).
#[tokio::test]
async fn multicast_on_loopback_when_enabled() {
    if std::env::var_os("BRANCHCACHE_MULTICAST_TESTS").is_none() {
        eprintln!(
            "skipped: set BRANCHCACHE_MULTICAST_TESTS=1 (and `ip link set lo multicast on`) to run"
        );
        return;
    }
    let token = CancellationToken::new();
    let port = {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let mk = |i: u8| {
        let mut c = config(i);
        c.bind = vec![SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))];
        c.targets = vec![SocketAddr::from((GROUP_V4, port))];
        c.interfaces_v4 = vec![Ipv4Addr::LOCALHOST];
        c
    };
    let m = Arc::new(Metrics::new());
    let a = match Discovery::start(mk(0), LocalSegments::new(), m.clone(), token.clone()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("skipped: cannot join the group on lo: {e}");
            return;
        }
    };
    let b = Discovery::start(mk(1), LocalSegments::new(), m, token.clone()).unwrap();
    a.handle()
        .update_lookup(|s| s.insert(seg(1), held(1)))
        .await
        .unwrap();
    let results = b
        .handle()
        .find_peers(vec![seg(1)], Version::V1)
        .await
        .unwrap();
    if results[0].peers.is_empty() {
        eprintln!("skipped: no multicast delivery on lo (is the MULTICAST flag set?)");
    } else {
        assert_eq!(addrs_of(&results[0].peers), vec![xaddr(0)]);
    }
    token.cancel();
    a.join().await;
    b.join().await;
}

/// The planner's view: concurrent lookups of one segment share one query,
/// the answer is cached, our own address is never returned, and a segment
/// nobody holds yields no peers.
#[tokio::test]
async fn locator_shares_queries_caches_results_and_skips_itself() {
    use branchcache::discovery::{DiscoveryLocator, LocatorOptions};
    use branchcache::retrieval::PeerLocator;

    let lan = lan(3).await;
    lan.hold(0, seg(1), held(4)).await;
    lan.hold(1, seg(1), held(4)).await;
    let handle = lan.drivers[2].handle();
    // Driver 2 claims driver 1's PCCRR address as its own: it must not be
    // returned. A long settle time lets the query's own deadline end it, so
    // both replies are in whatever the machine's load.
    let options = LocatorOptions {
        settle: Duration::from_secs(30),
        ..LocatorOptions::default()
    };
    let locator = DiscoveryLocator::new(handle.clone(), vec![xaddr(1)], options);
    let (p1, p2) = tokio::join!(locator.peers(&seg(1)), locator.peers(&seg(1)));
    assert_eq!(p1, vec![xaddr(0)]);
    assert_eq!(p2, p1);
    assert_eq!(handle.stats().await.unwrap().queries_started, 1);
    // Within the TTL: from the cache, no new query.
    assert_eq!(locator.peers(&seg(1)).await, vec![xaddr(0)]);
    assert_eq!(handle.stats().await.unwrap().queries_started, 1);
    // Nobody holds seg(2): the query runs to its deadline and finds nothing.
    assert!(locator.peers(&seg(2)).await.is_empty());
    assert_eq!(handle.stats().await.unwrap().queries_started, 2);
    lan.stop().await;
    // After shutdown a lookup of a new segment ends empty instead of hanging.
    assert!(locator.peers(&seg(3)).await.is_empty());
}
