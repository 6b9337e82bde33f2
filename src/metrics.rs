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
        Metrics {
            registry: Mutex::new(registry),
            build_info,
            admin_requests,
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
