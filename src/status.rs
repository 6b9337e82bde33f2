//! The `/status` report: what a running daemon is doing, in one JSON object.
//!
//! Built by the admin listener from the shared [`Metrics`] and [`Store`]
//! (no counter of its own), fetched by `branchcache status` and rendered
//! there as a table ([`render_table`]), and embedded in the status page at
//! `/`. The same [`StatusReport`] type serializes and deserializes, so the
//! CLI and the daemon cannot drift apart.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::activity::{MinuteSample, RecentRequest, SourceBytes};
use crate::fetch::SourceKind;
use crate::metrics::Metrics;
use crate::retrieval::{PeerRole, PeerStatus};
use crate::store::Store;

/// Everything `/status` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Daemon version.
    pub version: String,
    /// Roles running in this process (`admin`, `proxy`, `peer`, `publisher`, …).
    pub roles: Vec<String>,
    /// Bound address of each listener, by role.
    pub listeners: BTreeMap<String, String>,
    /// Seconds since the daemon started.
    pub uptime_seconds: u64,
    /// Every listener bound and the store open.
    pub ready: bool,
    /// The block store.
    pub store: StoreStatus,
    /// Branch proxy requests by outcome.
    pub requests: RequestCounts,
    /// Body bytes sent to proxy clients since start, by where they came from.
    pub bytes_by_source: SourceBytes,
    /// Sum of `bytes_by_source`.
    pub bytes_served: u64,
    /// Share of served bytes that did not cross the WAN (store, peers, hosted
    /// cache over all sources); `None` before the first byte.
    pub hit_ratio: Option<f64>,
    /// Bytes received from origins and what the cache saved.
    pub wan: WanStatus,
    /// Blocks this node served to peers (PCCRR), when the peer role runs.
    pub served_to_peers: PeerServing,
    /// Bytes served per minute over the last hour, oldest first.
    pub history: Vec<MinuteSample>,
    /// The most recent proxy requests, newest first.
    pub recent_requests: Vec<RecentRequest>,
    /// PCCRR peers configured or seen (discovery), with how exchanges went.
    #[serde(default)]
    pub peers: Vec<PeerStatus>,
    /// The configured `[upstream_hosted_cache]` and whether it answers.
    #[serde(default)]
    pub hosted_cache: Option<PeerStatus>,
}

/// Store size and health.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StoreStatus {
    /// Bytes used (block data and metadata records).
    pub used_bytes: u64,
    /// Configured bound.
    pub max_bytes: u64,
    /// `used_bytes / max_bytes` (0 when the bound is 0).
    pub fill_ratio: f64,
    /// Segments held.
    pub segments: u64,
    /// Blocks held.
    pub blocks: u64,
    /// Block reads answered.
    pub hits: u64,
    /// Block reads not answered.
    pub misses: u64,
    /// Segments evicted for space.
    pub evictions: u64,
    /// Stored blocks found corrupt (evicted).
    pub verify_failures: u64,
    /// IO errors on the store's files.
    pub io_errors: u64,
}

/// Finished proxy requests by cache outcome, and those in flight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    /// Every block from the local store.
    pub hit: u64,
    /// Some blocks from the store.
    pub partial: u64,
    /// No block from the store.
    pub miss: u64,
    /// Passed through without the segment machinery.
    pub bypass: u64,
    /// Answered with an error or an aborted body.
    pub error: u64,
    /// Being answered now.
    pub in_flight: u64,
}

/// WAN accounting of the branch proxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WanStatus {
    /// Origin `Range` GET bodies.
    pub body: u64,
    /// Content information bodies.
    pub content_information: u64,
    /// Pass-through bodies.
    pub passthrough: u64,
    /// Sum of the three.
    pub total: u64,
    /// Bytes served to clients minus bytes received from origins (never
    /// below 0): what the cache kept off the WAN.
    pub saved: u64,
}

/// What this node served to peers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerServing {
    /// Blocks sent in MSG_BLK.
    pub blocks: u64,
    /// Plaintext bytes of those blocks.
    pub bytes: u64,
}

/// Inputs of [`build`] that are not counters.
#[derive(Debug)]
pub struct StatusInputs<'a> {
    /// Roles running.
    pub roles: &'a [&'static str],
    /// Listener addresses by role.
    pub listeners: &'a [(&'static str, SocketAddr)],
    /// Time since start.
    pub uptime: Duration,
    /// Readiness.
    pub ready: bool,
}

/// Assemble the report from the live counters.
pub fn build(inputs: &StatusInputs<'_>, metrics: &Metrics, store: &Store) -> StatusReport {
    let s = store.stats();
    let sm = store.metrics();
    let fill_ratio = if s.max_bytes == 0 {
        0.0
    } else {
        s.used_bytes as f64 / s.max_bytes as f64
    };
    let outcome = |o: &'static str| metrics.proxy_requests.get(o);
    let requests = RequestCounts {
        hit: outcome("hit"),
        partial: outcome("partial"),
        miss: outcome("miss"),
        bypass: outcome("bypass"),
        error: outcome("error"),
        in_flight: u64::try_from(metrics.proxy_in_flight.get()).unwrap_or(0),
    };
    let mut bytes_by_source = SourceBytes::default();
    for kind in [
        SourceKind::Store,
        SourceKind::Peer,
        SourceKind::HostedCache,
        SourceKind::Origin,
    ] {
        let n = metrics.proxy_served_bytes.get(kind.as_str());
        bytes_by_source.add(kind, n);
    }
    let wan_kind = |k: &'static str| metrics.proxy_wan_bytes.get_or_create(&[("kind", k)]).get();
    let (body, content_information, passthrough) = (
        wan_kind("body"),
        wan_kind("content_information"),
        wan_kind("passthrough"),
    );
    let total = body
        .saturating_add(content_information)
        .saturating_add(passthrough);
    let bytes_served = bytes_by_source.total();
    let book = metrics.peers.snapshot();
    StatusReport {
        version: env!("CARGO_PKG_VERSION").to_string(),
        roles: inputs.roles.iter().map(|r| r.to_string()).collect(),
        listeners: inputs
            .listeners
            .iter()
            .map(|(role, addr)| (role.to_string(), addr.to_string()))
            .collect(),
        uptime_seconds: inputs.uptime.as_secs(),
        ready: inputs.ready,
        store: StoreStatus {
            used_bytes: s.used_bytes,
            max_bytes: s.max_bytes,
            fill_ratio,
            segments: s.segments,
            blocks: s.blocks,
            hits: sm.hits.get(),
            misses: sm.misses.get(),
            evictions: s.evictions,
            verify_failures: s.verify_failures,
            io_errors: s.io_errors,
        },
        requests,
        bytes_by_source,
        bytes_served,
        hit_ratio: (bytes_served > 0).then(|| bytes_by_source.local() as f64 / bytes_served as f64),
        wan: WanStatus {
            body,
            content_information,
            passthrough,
            total,
            saved: bytes_served.saturating_sub(total),
        },
        served_to_peers: PeerServing {
            blocks: metrics.retrieval_blocks_served.get(),
            bytes: metrics.retrieval_bytes_served.get(),
        },
        history: metrics.activity.history(),
        recent_requests: metrics.activity.recent(),
        hosted_cache: book
            .iter()
            .find(|p| p.role == PeerRole::HostedCache && p.configured)
            .cloned(),
        peers: book
            .into_iter()
            .filter(|p| p.role == PeerRole::Peer)
            .collect(),
    }
}

/// A peer's reachability in words: `reachable`, `unreachable (timeout)`, `not contacted yet`.
pub fn reachability(p: &PeerStatus) -> String {
    match (p.reachable, &p.last_error) {
        (Some(true), _) => "reachable".to_string(),
        (Some(false), Some(e)) => format!("unreachable ({e})"),
        (Some(false), None) => "unreachable".to_string(),
        (None, _) => "not contacted yet".to_string(),
    }
}

/// Human size, IEC units (`1.5 GiB`).
pub fn human_bytes(n: u64) -> String {
    bytesize::ByteSize(n).display().iec().to_string()
}

/// A ratio as a percentage with one decimal (`83.4 %`).
pub fn percent(r: f64) -> String {
    format!("{:.1} %", r * 100.0)
}

/// The readable table `branchcache status` prints.
pub fn render_table(r: &StatusReport) -> String {
    let mut out = String::new();
    let uptime = humantime::format_duration(Duration::from_secs(r.uptime_seconds));
    let _ = writeln!(
        out,
        "branchcache {}  up {}  {}",
        r.version,
        uptime,
        if r.ready { "ready" } else { "starting" }
    );
    let _ = writeln!(out, "{:<16}{}", "roles", r.roles.join(", "));
    for (i, (role, addr)) in r.listeners.iter().enumerate() {
        let label = if i == 0 { "listeners" } else { "" };
        let _ = writeln!(out, "{label:<16}{role:<14}{addr}");
    }
    let s = &r.store;
    let _ = writeln!(
        out,
        "{:<16}{} of {} ({}), {} segments, {} blocks",
        "store",
        human_bytes(s.used_bytes),
        human_bytes(s.max_bytes),
        percent(s.fill_ratio),
        s.segments,
        s.blocks
    );
    if s.verify_failures > 0 || s.io_errors > 0 {
        let _ = writeln!(
            out,
            "{:<16}{} verification failures, {} IO errors",
            "store health", s.verify_failures, s.io_errors
        );
    }
    let _ = writeln!(
        out,
        "{:<16}{} of {} served",
        "hit ratio",
        r.hit_ratio.map_or_else(|| "-".to_string(), percent),
        human_bytes(r.bytes_served)
    );
    let b = &r.bytes_by_source;
    for (i, (name, n)) in [
        ("store", b.store),
        ("peer", b.peer),
        ("hosted_cache", b.hosted_cache),
        ("origin", b.origin),
    ]
    .into_iter()
    .enumerate()
    {
        let label = if i == 0 { "bytes by source" } else { "" };
        let _ = writeln!(out, "{label:<16}{name:<14}{}", human_bytes(n));
    }
    let _ = writeln!(
        out,
        "{:<16}{} received, {} saved",
        "WAN",
        human_bytes(r.wan.total),
        human_bytes(r.wan.saved)
    );
    let q = &r.requests;
    let _ = writeln!(
        out,
        "{:<16}hit {}  partial {}  miss {}  bypass {}  error {}  in flight {}",
        "requests", q.hit, q.partial, q.miss, q.bypass, q.error, q.in_flight
    );
    if r.served_to_peers.blocks > 0 {
        let _ = writeln!(
            out,
            "{:<16}{} blocks, {}",
            "served to peers",
            r.served_to_peers.blocks,
            human_bytes(r.served_to_peers.bytes)
        );
    }
    if let Some(h) = &r.hosted_cache {
        let _ = writeln!(
            out,
            "{:<16}{:<22}{}{}",
            "hosted cache",
            h.address,
            reachability(h),
            if h.blocks > 0 {
                format!(", {} blocks received", h.blocks)
            } else {
                String::new()
            }
        );
    }
    for (i, p) in r.peers.iter().enumerate() {
        let label = if i == 0 { "peers" } else { "" };
        let _ = writeln!(
            out,
            "{label:<16}{:<22}{:<11}{}, {} blocks ({}), {} failures{}",
            p.address,
            if p.configured {
                "configured"
            } else {
                "discovered"
            },
            reachability(p),
            p.blocks,
            human_bytes(p.bytes),
            p.failures,
            if p.penalised { ", skipped for now" } else { "" }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn report_reads_live_counters() {
        let metrics = Metrics::new();
        let store = Store::open_in_memory(1000);
        metrics.register_store(store.metrics());
        metrics.proxy_served(SourceKind::Store, 300);
        metrics.proxy_served(SourceKind::Origin, 100);
        metrics
            .proxy_wan_bytes
            .get_or_create(&[("kind", "body")])
            .inc_by(100);
        metrics
            .proxy_wan_bytes
            .get_or_create(&[("kind", "content_information")])
            .inc_by(20);
        metrics.proxy_requests.inc("hit");
        let hc: SocketAddr = "10.0.0.9:80".parse().unwrap();
        let peer: SocketAddr = "10.0.0.5:8082".parse().unwrap();
        metrics.peers.configure(PeerRole::HostedCache, &[hc]);
        metrics
            .peers
            .failure(PeerRole::HostedCache, hc, "timeout", None);
        metrics.peers.configure(PeerRole::Peer, &[peer]);
        metrics.peers.success(PeerRole::Peer, peer, Some(4096));
        let addr: SocketAddr = "127.0.0.1:9090".parse().unwrap();
        let r = build(
            &StatusInputs {
                roles: &["admin", "proxy"],
                listeners: &[("admin", addr)],
                uptime: Duration::from_secs(3),
                ready: true,
            },
            &metrics,
            &store,
        );
        assert_eq!(r.bytes_by_source.store, 300);
        assert_eq!(r.bytes_by_source.origin, 100);
        assert_eq!(r.bytes_served, 400);
        assert_eq!(r.hit_ratio, Some(0.75));
        assert_eq!(r.wan.total, 120);
        assert_eq!(r.wan.saved, 280);
        assert_eq!(r.requests.hit, 1);
        assert_eq!(r.store.max_bytes, 1000);
        assert_eq!(r.listeners["admin"], "127.0.0.1:9090");
        let h: u64 = r.history.iter().map(|s| s.bytes.total()).sum();
        assert_eq!(h, 400);

        // Round-trips through JSON (the CLI parses what the daemon sends).
        let json = serde_json::to_string(&r).unwrap();
        let back: StatusReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);

        let table = render_table(&r);
        assert!(table.contains("75.0 % of 400 B served"), "{table}");
        assert!(table.contains("280 B saved"), "{table}");
        assert!(table.contains("admin, proxy"), "{table}");
        let h = r.hosted_cache.as_ref().unwrap();
        assert_eq!(
            (h.address.as_str(), h.reachable),
            ("10.0.0.9:80", Some(false))
        );
        assert_eq!(r.peers.len(), 1);
        assert_eq!((r.peers[0].blocks, r.peers[0].bytes), (1, 4096));
        assert!(
            table.contains("hosted cache    10.0.0.9:80           unreachable (timeout)"),
            "{table}"
        );
        assert!(
            table.contains("peers           10.0.0.5:8082         configured reachable, 1 blocks (4.0 KiB), 0 failures"),
            "{table}"
        );
    }

    #[test]
    fn nothing_served_has_no_hit_ratio() {
        let metrics = Metrics::new();
        let store = Store::open_in_memory(0);
        let r = build(
            &StatusInputs {
                roles: &["admin"],
                listeners: &[],
                uptime: Duration::ZERO,
                ready: false,
            },
            &metrics,
            &store,
        );
        assert_eq!(r.hit_ratio, None);
        assert_eq!(r.store.fill_ratio, 0.0);
        assert!(render_table(&r).contains("hit ratio       - of 0 B served"));
    }
}
