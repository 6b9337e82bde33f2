//! The admin listener: `/metrics`, `/healthz`, `/readyz`, `/status`, and at
//! `/` a self-contained status page (inline HTML, CSS and JS; no external
//! asset, so it works on a branch box without internet). The page embeds the
//! current `/status` report, renders it at load and refreshes it every 5 s.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use hyper::{Method, Request, Response, StatusCode};

use crate::metrics::Metrics;
use crate::net::{full, Body};
use crate::status::{StatusInputs, StatusReport};
use crate::store::Store;

/// State the admin endpoints read.
#[derive(Debug)]
pub struct AdminState {
    /// Metric registry.
    pub metrics: Arc<Metrics>,
    /// Set once every listener is bound and the store is open.
    pub ready: AtomicBool,
    /// Roles running in this process (for `/status`).
    pub roles: Vec<&'static str>,
    /// When the daemon started.
    pub started: Instant,
    /// Bound address of each listener, by role (for `/status`).
    pub listeners: Vec<(&'static str, SocketAddr)>,
    /// The shared block store (size and fill for `/status`).
    pub store: Store,
}

impl AdminState {
    /// The current `/status` report.
    pub fn status(&self) -> StatusReport {
        crate::status::build(
            &StatusInputs {
                roles: &self.roles,
                listeners: &self.listeners,
                uptime: self.started.elapsed(),
                ready: self.ready.load(Ordering::Acquire),
            },
            &self.metrics,
            &self.store,
        )
    }
}

/// Answer one admin request.
pub async fn handle<B>(state: Arc<AdminState>, req: Request<B>) -> Response<Body> {
    state.metrics.admin_requests.inc();
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    }
    match req.uri().path() {
        "/" => Response::builder()
            .header("content-type", "text/html; charset=utf-8")
            .header("cache-control", "no-store")
            .header("content-security-policy", PAGE_CSP)
            .header("x-content-type-options", "nosniff")
            .body(full(status_page(&state.status())))
            .expect("static headers are valid"),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if state.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "starting\n")
            }
        }
        "/metrics" => Response::builder()
            .header(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(full(state.metrics.render()))
            .expect("static headers are valid"),
        "/status" => {
            let body = serde_json::to_string(&state.status())
                .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
            Response::builder()
                .header("content-type", "application/json")
                .header("cache-control", "no-store")
                .body(full(body))
                .expect("static headers are valid")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// The status page template; `/*STATUS_JSON*/` is replaced by the report.
const PAGE_TEMPLATE: &str = include_str!("status_page.html");
/// Where the report goes in [`PAGE_TEMPLATE`].
const PAGE_PLACEHOLDER: &str = "/*STATUS_JSON*/";
/// The page may load nothing from anywhere and talk only to this listener.
const PAGE_CSP: &str =
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The status page with `report` embedded as JSON. `<` is escaped so no
/// string in the report (request targets come from clients) can close the
/// `<script>` element; the page's script inserts them as text, never as HTML.
pub fn status_page(report: &StatusReport) -> String {
    let json = serde_json::to_string(report)
        .unwrap_or_else(|_| "null".to_string())
        .replace('<', "\\u003c");
    PAGE_TEMPLATE.replacen(PAGE_PLACEHOLDER, &json, 1)
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(full(body))
        .expect("static headers are valid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activity::{RecentRequest, SourceBytes};

    #[test]
    fn status_page_embeds_the_report_and_escapes_script_end_tags() {
        let metrics = Metrics::new();
        let evil = "/x</script><script>alert(1)</script>";
        metrics.activity.record_request(RecentRequest {
            finished_unix_ms: 1,
            method: "GET".into(),
            target: evil.into(),
            outcome: "miss".into(),
            bytes: SourceBytes::default(),
            duration_ms: 2,
        });
        let store = Store::open_in_memory(100);
        let report = crate::status::build(
            &StatusInputs {
                roles: &["admin"],
                listeners: &[],
                uptime: std::time::Duration::ZERO,
                ready: true,
            },
            &metrics,
            &store,
        );
        let page = status_page(&report);
        assert!(!page.contains(PAGE_PLACEHOLDER));
        assert!(
            !page.contains("<script>alert"),
            "raw target leaked into the page"
        );
        assert_eq!(
            page.matches("</script>").count(),
            2,
            "only the page's own script ends"
        );
        let start = page.find("type=\"application/json\">").unwrap() + 24;
        let end = start + page[start..].find("</script>").unwrap();
        let back: StatusReport = serde_json::from_str(&page[start..end]).unwrap();
        assert_eq!(back.recent_requests[0].target, evil);
        // No external asset: nothing is fetched from another origin.
        for needle in ["src=\"http", "href=\"http", "url(http", "@import"] {
            assert!(!page.contains(needle), "{needle}");
        }
    }
}
