//! The admin listener: `/metrics`, `/healthz`, `/readyz`, `/status`.

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

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(full(body))
        .expect("static headers are valid")
}
