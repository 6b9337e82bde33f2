//! Every metric the daemon exports, with its help text, in one place.
//!
//! Rendered as Prometheus text at the admin listener's `/metrics`. Names are
//! documented in `docs/METRICS.md`; a test keeps the two in step.

use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// All metric handles. Cheap to clone handles out of; shared as `Arc<Metrics>`.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// `branchcache_build_info`: always 1; version in the help text.
    pub build_info: Gauge,
    /// `branchcache_admin_requests_total`: requests answered by the admin listener.
    pub admin_requests: Counter,
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
    /// `branchcache_discovery_events_total{event}`: MS-PCCRD engine counters
    /// (`probes_sent`, `replies_sent`, `peers_found`, `malformed`,
    /// `rate_limited`, … — see `proto::pccrd::engine::EngineStats`).
    pub discovery_events: Family<[(&'static str, &'static str); 1], Counter>,
    /// `branchcache_discovery_active_queries`: discovery queries running now.
    pub discovery_active_queries: Gauge,
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
        Metrics {
            registry: Mutex::new(registry),
            build_info,
            admin_requests,
            retrieval_requests,
            retrieval_blocks_served,
            retrieval_bytes_served,
            retrieval_refusals,
            retrieval_client_requests,
            discovery_events,
            discovery_active_queries,
        }
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
}
