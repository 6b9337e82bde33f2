//! Every metric the daemon exports, with its help text, in one place.
//!
//! Rendered as Prometheus text at the admin listener's `/metrics`. Names are
//! documented in `docs/METRICS.md`; a test keeps the two in step.

use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// One-label set, e.g. `[("outcome", "hit")]`; values are static names.
pub type Label = [(&'static str, &'static str); 1];

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
    /// `branchcache_proxy_requests_total{outcome}`: finished proxy requests by cache outcome.
    pub proxy_requests: Family<Label, Counter>,
    /// `branchcache_proxy_served_bytes_total{source}`: body bytes sent to clients by source.
    pub proxy_served_bytes: Family<Label, Counter>,
    /// `branchcache_proxy_wan_bytes_total{kind}`: bytes received from origins
    /// (`body`: range fetches, `content_information`, `passthrough`).
    pub proxy_wan_bytes: Family<Label, Counter>,
    /// `branchcache_proxy_origin_errors_total{kind}`: failed origin exchanges.
    pub proxy_origin_errors: Family<Label, Counter>,
    /// `branchcache_proxy_requests_in_flight`: proxy requests currently being answered.
    pub proxy_in_flight: Gauge,
    /// `branchcache_proxy_request_duration_seconds`: time from request to end of body.
    pub proxy_request_duration: Histogram,
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
        let proxy_requests = Family::<Label, Counter>::default();
        registry.register(
            "proxy_requests",
            "Finished proxy requests by cache outcome (hit, partial, miss, bypass, error)",
            proxy_requests.clone(),
        );
        let proxy_served_bytes = Family::<Label, Counter>::default();
        registry.register(
            "proxy_served_bytes",
            "Body bytes sent to proxy clients by source (store, peer, hosted_cache, origin)",
            proxy_served_bytes.clone(),
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
        Metrics {
            registry: Mutex::new(registry),
            build_info,
            admin_requests,
            proxy_requests,
            proxy_served_bytes,
            proxy_wan_bytes,
            proxy_origin_errors,
            proxy_in_flight,
            proxy_request_duration,
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
