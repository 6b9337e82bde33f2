//! Every metric the daemon exports, with its help text, in one place.
//!
//! Rendered as Prometheus text at the admin listener's `/metrics`. Names are
//! documented in `docs/METRICS.md`; a test keeps the two in step.

use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The block store's metric handles. Owned by the store (which updates them),
/// registered into the daemon's registry with [`Metrics::register_store`].
/// Cloning shares the underlying values.
#[derive(Debug, Clone, Default)]
pub struct StoreMetrics {
    /// `branchcache_store_used_bytes`: bytes accounted (block data + metadata records).
    pub used_bytes: Gauge,
    /// `branchcache_store_max_bytes`: the configured size bound.
    pub max_bytes: Gauge,
    /// `branchcache_store_segments`: segments with metadata.
    pub segments: Gauge,
    /// `branchcache_store_blocks`: blocks present and verified.
    pub blocks: Gauge,
    /// `branchcache_store_blocks_written_total`: blocks made durable.
    pub blocks_written: Counter,
    /// `branchcache_store_hits_total`: block reads answered from the store.
    pub hits: Counter,
    /// `branchcache_store_misses_total`: block reads not answered (absent, evicted or failed).
    pub misses: Counter,
    /// `branchcache_store_evictions_total`: segments evicted to stay under the size bound.
    pub evictions: Counter,
    /// `branchcache_store_verify_failures_total`: stored blocks found corrupt (evicted).
    pub verify_failures: Counter,
    /// `branchcache_store_io_errors_total`: IO errors on data files or the index.
    pub io_errors: Counter,
}
/// One-label set, e.g. `[("outcome", "hit")]`; values are static names.
pub type Label = [(&'static str, &'static str); 1];

/// A one-label counter family whose counters for a fixed set of label values
/// are looked up once. `Family::get_or_create` hashes the label set and takes
/// the family's lock on every call, which showed up as several per cent of a
/// small cache hit's CPU. A value outside the set still works (through the
/// family). Counters appear in the exposition on first use, as with the
/// family alone. Cloning shares the counters.
#[derive(Debug, Clone)]
pub struct LabelCounters<const N: usize> {
    family: Family<Label, Counter>,
    label: &'static str,
    values: [&'static str; N],
    resolved: Arc<[OnceLock<Counter>; N]>,
}

impl<const N: usize> LabelCounters<N> {
    /// Counters labelled `label`, with `values` resolved once each.
    pub fn new(label: &'static str, values: [&'static str; N]) -> Self {
        LabelCounters {
            family: Family::default(),
            label,
            values,
            resolved: Arc::new(std::array::from_fn(|_| OnceLock::new())),
        }
    }

    /// The underlying family (to register it).
    pub fn family(&self) -> &Family<Label, Counter> {
        &self.family
    }

    /// The counter for `value` if it is one of the resolved values.
    fn resolved(&self, value: &'static str) -> Option<&Counter> {
        let i = self.values.iter().position(|v| *v == value)?;
        let slot = self.resolved.get(i)?;
        Some(slot.get_or_init(|| self.family.get_or_create(&[(self.label, value)]).clone()))
    }

    /// The counter for `value`.
    pub fn counter(&self, value: &'static str) -> Counter {
        match self.resolved(value) {
            Some(c) => c.clone(),
            None => self.family.get_or_create(&[(self.label, value)]).clone(),
        }
    }

    /// Add `n` to the counter for `value`.
    pub fn inc_by(&self, value: &'static str, n: u64) {
        match self.resolved(value) {
            Some(c) => {
                c.inc_by(n);
            }
            None => {
                self.family.get_or_create(&[(self.label, value)]).inc_by(n);
            }
        }
    }

    /// Add one to the counter for `value`.
    pub fn inc(&self, value: &'static str) {
        self.inc_by(value, 1);
    }

    /// The current value of the counter for `value`.
    pub fn get(&self, value: &'static str) -> u64 {
        self.counter(value).get()
    }
}

/// Bounds of the proxy request-duration histogram: 1 ms … ~65 s, doubling.
const DURATION_BUCKET_START: f64 = 0.001;
/// Number of duration buckets (1 ms · 2^16 ≈ 65 s covers a WAN download of a large object).
const DURATION_BUCKETS: u16 = 17;

/// All metric handles. Cheap to clone handles out of; shared as `Arc<Metrics>`.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// `branchcache_build_info`: always 1; version in the help text.
    pub build_info: Gauge,
    /// `branchcache_admin_requests_total`: requests answered by the admin listener.
    pub admin_requests: Counter,
    /// `branchcache_publisher_ci_served_total`: Peerdist responses (content information bodies) sent by the publisher.
    pub publisher_ci_served: Counter,
    /// `branchcache_publisher_ci_generated_total`: Content information structures computed from origin bytes.
    pub publisher_ci_generated: Counter,
    /// `branchcache_publisher_ci_cache_hits_total`: Peerdist responses answered from the content information cache.
    pub publisher_ci_cache_hits: Counter,
    /// `branchcache_publisher_bytes_hashed_total`: Origin bytes hashed into content information.
    pub publisher_bytes_hashed: Counter,
    /// `branchcache_publisher_passthrough_total`: Requests the publisher proxied to the origin unchanged.
    pub publisher_passthrough: Counter,
    /// `branchcache_publisher_origin_errors_total`: Origin failures (connect, timeout, protocol,
    /// a relayed body broken or idle past `body_idle_timeout`) seen by the publisher.
    pub publisher_origin_errors: Counter,
    /// `branchcache_hosted_cache_offers_total{version,message,response}`:
    /// PCHC requests by protocol version, message type and how they were answered.
    pub hosted_cache_offers: Family<[(&'static str, &'static str); 3], Counter>,
    /// `branchcache_hosted_cache_offered_segments_total{version,outcome}`:
    /// segments named in accepted offers and what became of them.
    pub hosted_cache_offered_segments: Family<[(&'static str, &'static str); 2], Counter>,
    /// `branchcache_hosted_cache_pulls_total{outcome}`: finished segment pulls.
    pub hosted_cache_pulls: Family<[(&'static str, &'static str); 1], Counter>,
    /// `branchcache_hosted_cache_pull_queue_depth`: pulls queued, not yet started.
    pub hosted_cache_pull_queue_depth: Gauge,
    /// `branchcache_hosted_cache_pulled_bytes_total{version}`: block bytes
    /// pulled from offering clients and kept (v1 plaintext, v2 as received).
    pub hosted_cache_pulled_bytes: Family<[(&'static str, &'static str); 1], Counter>,
    /// `branchcache_hosted_cache_replay_bytes`: bytes held by the v2 replay store.
    pub hosted_cache_replay_bytes: Gauge,
    /// `branchcache_hosted_cache_replay_corrupt_total`: replay records that
    /// failed their checksum and were deleted.
    pub hosted_cache_replay_corrupt: Counter,
    /// `branchcache_upstream_hosted_cache_offers_total{version,outcome}`:
    /// segments this proxy offered to its hosted cache, by outcome.
    pub upstream_hosted_cache_offers: Family<[(&'static str, &'static str); 2], Counter>,
    /// `branchcache_retrieval_requests_total{type,result}`: PCCRR requests
    /// answered by the retrieval server, by message type and outcome.
    pub retrieval_requests: Family<[(&'static str, &'static str); 2], Counter>,
    /// `branchcache_retrieval_blocks_served_total`: blocks sent in MSG_BLK.
    pub retrieval_blocks_served: Counter,
    /// `branchcache_retrieval_bytes_served_total`: plaintext bytes of blocks sent.
    pub retrieval_bytes_served: Counter,
    /// `branchcache_retrieval_refusals_total`: requests answered with an
    /// empty list / block because the client was over its concurrency limit.
    pub retrieval_refusals: Counter,
    /// `branchcache_retrieval_client_requests_total{type,result}`: PCCRR
    /// requests this node sent to peers, by message type and outcome.
    pub retrieval_client_requests: Family<[(&'static str, &'static str); 2], Counter>,
    /// `branchcache_retrieval_peer_penalties_total{source,reason}`: times a
    /// peer or hosted cache was put in the penalty box (skipped for a
    /// back-off period), by source kind and `RetrievalError::kind`.
    pub retrieval_peer_penalties: Family<[(&'static str, &'static str); 2], Counter>,
    /// `branchcache_discovery_events_total{event}`: MS-PCCRD engine counters
    /// (`probes_sent`, `replies_sent`, `peers_found`, `malformed`,
    /// `rate_limited`, … — see `proto::pccrd::engine::EngineStats`).
    pub discovery_events: Family<[(&'static str, &'static str); 1], Counter>,
    /// `branchcache_discovery_active_queries`: discovery queries running now.
    pub discovery_active_queries: Gauge,
    /// `branchcache_proxy_requests_total{outcome}`: finished proxy requests by cache outcome.
    pub proxy_requests: LabelCounters<5>,
    /// `branchcache_proxy_served_bytes_total{source}`: body bytes sent to clients by source.
    pub proxy_served_bytes: LabelCounters<4>,
    /// `branchcache_proxy_wan_bytes_total{kind}`: bytes received from origins
    /// (`body`: range fetches, `content_information`, `passthrough`).
    pub proxy_wan_bytes: Family<Label, Counter>,
    /// `branchcache_proxy_origin_errors_total{kind}`: failed origin exchanges.
    pub proxy_origin_errors: Family<Label, Counter>,
    /// `branchcache_proxy_requests_in_flight`: proxy requests currently being answered.
    pub proxy_in_flight: Gauge,
    /// `branchcache_proxy_request_duration_seconds`: time from request to end of body.
    pub proxy_request_duration: Histogram,
    /// `branchcache_config_reloads_total{result}`: SIGHUP reloads (`ok`,
    /// `restart_needed`: applied but some changes wait for a restart,
    /// `error`: the new file was rejected and the old configuration kept).
    pub config_reloads: Family<Label, Counter>,
    /// `branchcache_proxy_freshness_total{result}`: content-information freshness
    /// decisions (fresh, revalidated, changed, stored, uncacheable).
    pub proxy_freshness: LabelCounters<5>,
    /// `branchcache_proxy_freshness_entries`: URLs whose content information is remembered.
    pub proxy_freshness_entries: Gauge,
    /// `branchcache_proxy_direct_responses_total`: fresh hits written
    /// straight to the socket (`net::direct`) instead of through hyper.
    pub proxy_direct_responses: Counter,
    /// Bounded per-minute history and recent requests for `/status` (not exported).
    pub activity: crate::activity::Activity,
    /// Peers and hosted caches dealt with, for `/status` (not exported).
    pub peers: crate::retrieval::PeerBook,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Register every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("branchcache");
        let build_info = Gauge::default();
        build_info.set(1);
        registry.register(
            "build_info",
            concat!("Always 1; branchcache version ", env!("CARGO_PKG_VERSION")),
            build_info.clone(),
        );
        let admin_requests = Counter::default();
        registry.register(
            "admin_requests",
            "Requests answered by the admin listener",
            admin_requests.clone(),
        );
        let publisher_ci_served = Counter::default();
        registry.register(
            "publisher_ci_served",
            "Peerdist responses (content information bodies) sent by the publisher",
            publisher_ci_served.clone(),
        );
        let publisher_ci_generated = Counter::default();
        registry.register(
            "publisher_ci_generated",
            "Content information structures computed from origin bytes",
            publisher_ci_generated.clone(),
        );
        let publisher_ci_cache_hits = Counter::default();
        registry.register(
            "publisher_ci_cache_hits",
            "Peerdist responses answered from the content information cache",
            publisher_ci_cache_hits.clone(),
        );
        let publisher_bytes_hashed = Counter::default();
        registry.register(
            "publisher_bytes_hashed",
            "Origin bytes hashed into content information",
            publisher_bytes_hashed.clone(),
        );
        let publisher_passthrough = Counter::default();
        registry.register(
            "publisher_passthrough",
            "Requests the publisher proxied to the origin unchanged",
            publisher_passthrough.clone(),
        );
        let publisher_origin_errors = Counter::default();
        registry.register(
            "publisher_origin_errors",
            "Origin failures (connect, timeout, protocol, broken or stalled body) seen by the publisher",
            publisher_origin_errors.clone(),
        );
        let hosted_cache_offers = Family::default();
        registry.register(
            "hosted_cache_offers",
            "PCHC requests by protocol version, message type and response",
            hosted_cache_offers.clone(),
        );
        let hosted_cache_offered_segments = Family::default();
        registry.register(
            "hosted_cache_offered_segments",
            "Segments in accepted PCHC offers by version and outcome (queued, duplicate, present, full)",
            hosted_cache_offered_segments.clone(),
        );
        let hosted_cache_pulls = Family::default();
        registry.register(
            "hosted_cache_pulls",
            "Hosted cache segment pulls by outcome",
            hosted_cache_pulls.clone(),
        );
        let hosted_cache_pull_queue_depth = Gauge::default();
        registry.register(
            "hosted_cache_pull_queue_depth",
            "Hosted cache pulls queued and not yet started",
            hosted_cache_pull_queue_depth.clone(),
        );
        let hosted_cache_pulled_bytes = Family::default();
        registry.register(
            "hosted_cache_pulled_bytes",
            "Block bytes the hosted cache pulled from offering clients and kept, by PCHC version",
            hosted_cache_pulled_bytes.clone(),
        );
        let hosted_cache_replay_bytes = Gauge::default();
        registry.register(
            "hosted_cache_replay_bytes",
            "Bytes held by the hosted cache's v2 replay store",
            hosted_cache_replay_bytes.clone(),
        );
        let hosted_cache_replay_corrupt = Counter::default();
        registry.register(
            "hosted_cache_replay_corrupt",
            "Replay records that failed their checksum and were deleted",
            hosted_cache_replay_corrupt.clone(),
        );
        let upstream_hosted_cache_offers = Family::default();
        registry.register(
            "upstream_hosted_cache_offers",
            "Segments this proxy offered to its hosted cache, by PCHC version and outcome (accepted, known, dropped, skipped, or the error kind)",
            upstream_hosted_cache_offers.clone(),
        );
        let retrieval_requests = Family::<[(&'static str, &'static str); 2], Counter>::default();
        registry.register(
            "retrieval_requests",
            "PCCRR requests answered by the retrieval server, by message type and result",
            retrieval_requests.clone(),
        );
        let retrieval_blocks_served = Counter::default();
        registry.register(
            "retrieval_blocks_served",
            "Blocks sent to peers in MSG_BLK",
            retrieval_blocks_served.clone(),
        );
        let retrieval_bytes_served = Counter::default();
        registry.register(
            "retrieval_bytes_served",
            "Plaintext bytes of blocks sent to peers",
            retrieval_bytes_served.clone(),
        );
        let retrieval_refusals = Counter::default();
        registry.register(
            "retrieval_refusals",
            "PCCRR requests answered empty because the client exceeded its concurrency limit",
            retrieval_refusals.clone(),
        );
        let retrieval_client_requests =
            Family::<[(&'static str, &'static str); 2], Counter>::default();
        registry.register(
            "retrieval_client_requests",
            "PCCRR requests sent to peers, by message type and result",
            retrieval_client_requests.clone(),
        );
        let retrieval_peer_penalties =
            Family::<[(&'static str, &'static str); 2], Counter>::default();
        registry.register(
            "retrieval_peer_penalties",
            "Peers or hosted caches skipped for a back-off period after a failure, by source and reason",
            retrieval_peer_penalties.clone(),
        );
        let discovery_events = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            "discovery_events",
            "MS-PCCRD discovery engine events (probes, replies, peers found, drops), by event",
            discovery_events.clone(),
        );
        let discovery_active_queries = Gauge::default();
        registry.register(
            "discovery_active_queries",
            "MS-PCCRD discovery queries running now",
            discovery_active_queries.clone(),
        );
        let proxy_requests =
            LabelCounters::new("outcome", ["hit", "partial", "miss", "bypass", "error"]);
        registry.register(
            "proxy_requests",
            "Finished proxy requests by cache outcome (hit, partial, miss, bypass, error)",
            proxy_requests.family().clone(),
        );
        let proxy_served_bytes =
            LabelCounters::new("source", ["store", "peer", "hosted_cache", "origin"]);
        registry.register(
            "proxy_served_bytes",
            "Body bytes sent to proxy clients by source (store, peer, hosted_cache, origin)",
            proxy_served_bytes.family().clone(),
        );
        let proxy_wan_bytes = Family::<Label, Counter>::default();
        registry.register(
            "proxy_wan_bytes",
            "Bytes received from origins by kind (body, content_information, passthrough)",
            proxy_wan_bytes.clone(),
        );
        let proxy_origin_errors = Family::<Label, Counter>::default();
        registry.register(
            "proxy_origin_errors",
            "Failed origin exchanges by kind",
            proxy_origin_errors.clone(),
        );
        let config_reloads = Family::<Label, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads (SIGHUP) by result",
            config_reloads.clone(),
        );
        let proxy_in_flight = Gauge::default();
        registry.register(
            "proxy_requests_in_flight",
            "Proxy requests currently being answered",
            proxy_in_flight.clone(),
        );
        let proxy_request_duration = Histogram::new(exponential_buckets(
            DURATION_BUCKET_START,
            2.0,
            DURATION_BUCKETS,
        ));
        registry.register(
            "proxy_request_duration_seconds",
            "Time from proxy request to the end of its response body",
            proxy_request_duration.clone(),
        );
        let proxy_freshness = LabelCounters::new(
            "result",
            ["fresh", "revalidated", "changed", "stored", "uncacheable"],
        );
        registry.register(
            "proxy_freshness",
            "Content-information freshness decisions (fresh = served with no origin contact, revalidated = 304, changed = revalidation got a new object, stored, uncacheable)",
            proxy_freshness.family().clone(),
        );
        let proxy_freshness_entries = Gauge::default();
        registry.register(
            "proxy_freshness_entries",
            "URLs whose content information the proxy remembers for freshness",
            proxy_freshness_entries.clone(),
        );
        let proxy_direct_responses = Counter::default();
        registry.register(
            "proxy_direct_responses",
            "Fresh hits the proxy wrote straight to the socket (its fast path) instead of through the general HTTP stack",
            proxy_direct_responses.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            build_info,
            admin_requests,
            publisher_ci_served,
            publisher_ci_generated,
            publisher_ci_cache_hits,
            publisher_bytes_hashed,
            publisher_passthrough,
            publisher_origin_errors,
            hosted_cache_offers,
            hosted_cache_offered_segments,
            hosted_cache_pulls,
            hosted_cache_pull_queue_depth,
            hosted_cache_pulled_bytes,
            hosted_cache_replay_bytes,
            hosted_cache_replay_corrupt,
            upstream_hosted_cache_offers,
            retrieval_requests,
            retrieval_blocks_served,
            retrieval_bytes_served,
            retrieval_refusals,
            retrieval_client_requests,
            retrieval_peer_penalties,
            discovery_events,
            discovery_active_queries,
            proxy_requests,
            proxy_served_bytes,
            proxy_wan_bytes,
            proxy_origin_errors,
            proxy_in_flight,
            proxy_request_duration,
            config_reloads,
            proxy_freshness,
            proxy_freshness_entries,
            proxy_direct_responses,
            activity: crate::activity::Activity::new(),
            peers: crate::retrieval::PeerBook::new(),
        }
    }

    /// Count `n` body bytes sent to a proxy client from `source`: the
    /// `proxy_served_bytes` counter and the per-minute history.
    pub fn proxy_served(&self, source: crate::fetch::SourceKind, n: u64) {
        self.proxy_served_bytes.inc_by(source.as_str(), n);
        self.activity.record_bytes(source, n);
    }

    /// Count one PCHC request (`version`: v1/v2; `message`: type name or
    /// `malformed`; `response`: ok, interested or the rejection kind).
    pub fn hosted_cache_offer(
        &self,
        version: &'static str,
        message: &'static str,
        response: &'static str,
    ) {
        self.hosted_cache_offers
            .get_or_create(&[
                ("version", version),
                ("message", message),
                ("response", response),
            ])
            .inc();
    }

    /// Count one offered segment by version and outcome.
    pub fn hosted_cache_offered_segment(&self, version: &'static str, outcome: &'static str) {
        self.hosted_cache_offered_segments
            .get_or_create(&[("version", version), ("outcome", outcome)])
            .inc();
    }

    /// Count one finished pull by outcome (`ok` or the error kind).
    pub fn hosted_cache_pull(&self, outcome: &'static str) {
        self.hosted_cache_pulls
            .get_or_create(&[("outcome", outcome)])
            .inc();
    }

    /// Register a store's metric handles (call once per daemon).
    pub fn register_store(&self, m: &StoreMetrics) {
        let mut r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        r.register(
            "store_used_bytes",
            "Bytes used by the block store (block data and metadata records)",
            m.used_bytes.clone(),
        );
        r.register(
            "store_max_bytes",
            "Configured size bound of the block store",
            m.max_bytes.clone(),
        );
        r.register(
            "store_segments",
            "Segments held by the block store",
            m.segments.clone(),
        );
        r.register(
            "store_blocks",
            "Blocks present and verified in the block store",
            m.blocks.clone(),
        );
        r.register(
            "store_blocks_written",
            "Blocks written durably to the block store",
            m.blocks_written.clone(),
        );
        r.register(
            "store_hits",
            "Block reads answered from the block store",
            m.hits.clone(),
        );
        r.register(
            "store_misses",
            "Block reads the block store could not answer",
            m.misses.clone(),
        );
        r.register(
            "store_evictions",
            "Segments evicted to stay under the size bound",
            m.evictions.clone(),
        );
        r.register(
            "store_verify_failures",
            "Stored blocks found corrupt on read or verify (evicted)",
            m.verify_failures.clone(),
        );
        r.register(
            "store_io_errors",
            "IO errors on store data files or index",
            m.io_errors.clone(),
        );
    }

    /// Prometheus text exposition (OpenMetrics text, `# EOF` terminated).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_registered_metrics() {
        let m = Metrics::new();
        m.admin_requests.inc();
        let text = m.render();
        assert!(text.contains("branchcache_build_info 1"), "{text}");
        assert!(
            text.contains("branchcache_admin_requests_total 1"),
            "{text}"
        );
        assert!(text.trim_end().ends_with("# EOF"));
    }

    #[test]
    fn label_counters_resolve_once_and_share_the_family() {
        let m = Metrics::new();
        let text = m.render();
        assert!(
            !text.contains("outcome=\"hit\""),
            "not before first use: {text}"
        );
        m.proxy_requests.inc("hit");
        m.proxy_requests.inc_by("hit", 2);
        // A clone shares the counters; a value outside the set still counts.
        let c = m.proxy_requests.clone();
        c.inc("hit");
        c.inc("unlisted");
        assert_eq!(m.proxy_requests.get("hit"), 4);
        assert_eq!(m.proxy_requests.get("unlisted"), 1);
        assert_eq!(
            m.proxy_requests
                .family()
                .get_or_create(&[("outcome", "hit")])
                .get(),
            4
        );
        let text = m.render();
        assert!(
            text.contains("branchcache_proxy_requests_total{outcome=\"hit\"} 4"),
            "{text}"
        );
        assert!(
            text.contains("branchcache_proxy_requests_total{outcome=\"unlisted\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn renders_store_metrics_once_registered() {
        let m = Metrics::new();
        let s = StoreMetrics::default();
        m.register_store(&s);
        s.verify_failures.inc();
        s.used_bytes.set(42);
        let text = m.render();
        assert!(
            text.contains("branchcache_store_verify_failures_total 1"),
            "{text}"
        );
        assert!(text.contains("branchcache_store_used_bytes 42"), "{text}");
    }

    #[test]
    fn every_store_metric_is_documented() {
        let m = Metrics::new();
        m.register_store(&StoreMetrics::default());
        let doc = include_str!("../docs/METRICS.md");
        let text = m.render();
        let names: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with("branchcache_store_"))
            .collect();
        assert_eq!(names.len(), 10, "{text}");
        for n in names {
            assert!(
                doc.contains(&format!("`{n}`")),
                "{n} missing from docs/METRICS.md"
            );
        }
    }

    #[test]
    fn discovery_metrics_render_and_are_documented() {
        let m = Metrics::new();
        m.discovery_events
            .get_or_create(&[("event", "probes_sent")])
            .inc();
        m.discovery_active_queries.set(2);
        let text = m.render();
        let doc = include_str!("../docs/METRICS.md");
        for (name, sample) in [
            (
                "branchcache_discovery_events_total{event}",
                "branchcache_discovery_events_total{event=\"probes_sent\"} 1",
            ),
            (
                "branchcache_discovery_active_queries",
                "branchcache_discovery_active_queries 2",
            ),
        ] {
            assert!(text.contains(sample), "{text}");
            assert!(doc.contains(&format!("`{name}`")), "{name} undocumented");
        }
    }

    #[test]
    fn hosted_cache_metrics_are_documented() {
        let m = Metrics::new();
        m.hosted_cache_offer("v2", "batched_offer", "ok");
        m.hosted_cache_offered_segment("v2", "queued");
        m.hosted_cache_pull("ok");
        m.upstream_hosted_cache_offers
            .get_or_create(&[("version", "v2"), ("outcome", "accepted")])
            .inc();
        m.hosted_cache_pulled_bytes
            .get_or_create(&[("version", "v1")])
            .inc();
        let doc = include_str!("../docs/METRICS.md");
        let text = m.render();
        let names: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .filter(|n| n.contains("hosted_cache"))
            .collect();
        assert_eq!(names.len(), 8, "{text}");
        for n in names {
            assert!(
                doc.contains(&format!("`{n}`")),
                "{n} missing from docs/METRICS.md"
            );
        }
    }
}
