//! Every metric the daemon exports, with its help text, in one place.
//!
//! Rendered as Prometheus text at the admin listener's `/metrics`. Names are
//! documented in `docs/METRICS.md`; a test keeps the two in step.

use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

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
    /// `branchcache_publisher_origin_errors_total`: Origin failures (connect, timeout, protocol) seen by the publisher.
    pub publisher_origin_errors: Counter,
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
            "Origin failures (connect, timeout, protocol) seen by the publisher",
            publisher_origin_errors.clone(),
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
