//! MS-PCHC hosted cache server: the offer endpoints and the pull queue.
//!
//! ```text
//! client ──POST /0131501b-…  (v2, HTTP)──▶ ┐
//! client ──POST /C574AC30-…  (v1, HTTPS)─▶ ┴ OfferService ── decode (proto::pchc)
//!                                              │ rate limit per client IP
//!                                              │ verify SEGMENT_INFO
//!                                              ▼
//!                                  PullQueue (bounded, deduplicated)
//!                                              ▼
//!                            Puller (PCCRR client → store), ≤ N at once
//! ```
//!
//! Each listener serves only its own version's URL (case-insensitive, with or
//! without a trailing slash); a message of the other version is rejected with
//! 400. Pulls connect only to the offering client's source address on the
//! port it advertised. The PCCRR server the hosted cache also runs, and the
//! store, live elsewhere and plug in through [`SegmentCatalog`] and [`Puller`];
//! [`StorePuller`] and the `SegmentCatalog` impl for [`crate::store::Store`]
//! are the production pair (v1 pulls with the PCCRR client into the store).
//! [`OfferClient`] is the offering side, for branch nodes using a hosted cache.

mod client;
mod offerer;
mod offers;
mod puller;
mod queue;
pub mod replay;
pub mod tls;

pub use client::{OfferClient, OfferClientError, OFFER_TIMEOUT};
pub use offerer::{
    describe_v1, describe_v2, Offerer, OffererConfig, OFFER_ORIGIN_FRACTION, OFFER_QUEUE_CAPACITY,
};
pub use offers::{
    Holding, OfferReject, OfferService, RateLimit, SegmentCatalog, MAX_TRACKED_CLIENTS,
};
pub use puller::{CacheHoldings, StorePuller};
pub use queue::{Enqueue, PullError, PullJob, PullKind, PullQueue, Puller, PULL_TIMEOUT};
pub use replay::ReplayStore;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{header, Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::net::{full, Body};
use crate::proto::pchc::{path_version, Major, MAX_REQUEST_LEN};

/// Default bound on queued pulls: a few big offers' worth of segments.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
/// Default concurrent pulls: enough to keep a branch LAN busy without letting
/// offers turn the hosted cache into a connection flood.
pub const DEFAULT_MAX_CONCURRENT_PULLS: usize = 16;
/// Default sustained offer messages per second per client IP.
pub const DEFAULT_OFFER_RATE: f64 = 20.0;
/// Default offer burst per client IP: a v1 client sends two messages per
/// segment, so this covers a ~3 GiB file offered at once.
pub const DEFAULT_OFFER_BURST: f64 = 200.0;
/// Longest a client may take to send one request body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// `Retry-After` seconds sent with a rate-limited answer.
const RETRY_AFTER_SECS: &str = "1";

/// Where and how the hosted cache listens.
#[derive(Clone)]
pub struct HostedCacheOptions {
    /// PCHC v2 over plain HTTP; `None` disables it.
    pub listen_http: Option<SocketAddr>,
    /// PCHC v1 over HTTPS with this TLS configuration; `None` disables it.
    pub listen_https: Option<(SocketAddr, Arc<rustls::ServerConfig>)>,
    /// Most pulls waiting to start.
    pub queue_capacity: usize,
    /// Most pulls running at once.
    pub max_concurrent_pulls: usize,
    /// Per-client-IP offer rate limit.
    pub rate_limit: RateLimit,
    /// The MS-PCCRR server answering on the HTTP listener beside PCHC v2
    /// (clients fetch what the cache holds there); `None`: PCHC only.
    pub retrieval: Option<Arc<crate::retrieval::RetrievalServer>>,
}

impl std::fmt::Debug for HostedCacheOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostedCacheOptions")
            .field("listen_http", &self.listen_http)
            .field("listen_https", &self.listen_https.as_ref().map(|(a, _)| a))
            .field("queue_capacity", &self.queue_capacity)
            .field("max_concurrent_pulls", &self.max_concurrent_pulls)
            .field("rate_limit", &self.rate_limit)
            .field("retrieval", &self.retrieval.is_some())
            .finish()
    }
}

impl Default for HostedCacheOptions {
    fn default() -> Self {
        HostedCacheOptions {
            listen_http: None,
            listen_https: None,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_concurrent_pulls: DEFAULT_MAX_CONCURRENT_PULLS,
            rate_limit: RateLimit {
                per_second: DEFAULT_OFFER_RATE,
                burst: DEFAULT_OFFER_BURST,
            },
            retrieval: None,
        }
    }
}

/// A running hosted cache: bound listeners, the offer logic and the pull queue.
#[derive(Debug)]
pub struct HostedCacheServer {
    http_addr: Option<SocketAddr>,
    https_addr: Option<SocketAddr>,
    queue: PullQueue,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl HostedCacheServer {
    /// Bind the configured listeners and start serving offers and pulling.
    /// Everything stops when `shutdown` fires; [`join`](Self::join) waits for it.
    pub async fn bind<C: SegmentCatalog, P: Puller>(
        options: HostedCacheOptions,
        catalog: Arc<C>,
        puller: Arc<P>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> io::Result<HostedCacheServer> {
        let http = match options.listen_http {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let https = match &options.listen_https {
            Some((addr, tls)) => Some((TcpListener::bind(addr).await?, tls.clone())),
            None => None,
        };
        let (queue, pull_task) = PullQueue::start(
            options.queue_capacity,
            options.max_concurrent_pulls,
            puller,
            metrics.clone(),
            shutdown.clone(),
        );
        let service = Arc::new(OfferService::new(
            catalog,
            queue.clone(),
            options.rate_limit,
            metrics,
        ));
        let mut tasks = vec![pull_task];
        let mut http_addr = None;
        if let Some(listener) = http {
            http_addr = Some(listener.local_addr()?);
            let service = service.clone();
            let retrieval = options.retrieval.clone();
            tasks.push(tokio::spawn(crate::net::serve(
                listener,
                move |req: Request<Incoming>, peer| {
                    let service = service.clone();
                    let retrieval = retrieval.clone();
                    async move {
                        match retrieval {
                            Some(r)
                                if crate::retrieval::server::is_retrieval_path(
                                    req.uri().path(),
                                ) =>
                            {
                                r.handle(req, peer).await
                            }
                            _ => handle(req, peer, Major::V2, service).await,
                        }
                    }
                },
                shutdown.clone(),
            )));
        }
        let mut https_addr = None;
        if let Some((listener, tls)) = https {
            https_addr = Some(listener.local_addr()?);
            let service = service.clone();
            tasks.push(tokio::spawn(async move {
                crate::net::serve_on(
                    listener,
                    crate::net::Front::Tls(tokio_rustls::TlsAcceptor::from(tls)),
                    move |req, peer| handle(req, peer, Major::V1, service.clone()),
                    crate::net::Limits::default(),
                    shutdown,
                    crate::net::DRAIN_TIMEOUT,
                )
                .await;
            }));
        }
        Ok(HostedCacheServer {
            http_addr,
            https_addr,
            queue,
            tasks,
        })
    }

    /// The bound PCHC v2 (HTTP) address.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The bound PCHC v1 (HTTPS) address.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }

    /// The pull queue (for status pages and tests).
    pub fn queue(&self) -> &PullQueue {
        &self.queue
    }

    /// Wait until every task has stopped (after the shutdown token fired).
    pub async fn join(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

fn status(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(full(code.canonical_reason().unwrap_or("").to_owned()));
    *r.status_mut() = code;
    r
}

/// One HTTP exchange on the listener serving `listener` version.
async fn handle<C: SegmentCatalog>(
    req: Request<Incoming>,
    peer: SocketAddr,
    listener: Major,
    service: Arc<OfferService<C>>,
) -> Response<Body> {
    // SPEC(MS-PCHC §2.1): the URL alone selects the version; v1 lives on the
    // HTTPS listener and v2 on the HTTP one, so the other GUID is a 404 here.
    if path_version(req.uri().path()) != Some(listener) {
        return status(StatusCode::NOT_FOUND);
    }
    if req.method() != Method::POST {
        let mut r = status(StatusCode::METHOD_NOT_ALLOWED);
        r.headers_mut()
            .insert(header::ALLOW, http::HeaderValue::from_static("POST"));
        return r;
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_LEN as u64) {
        return status(StatusCode::PAYLOAD_TOO_LARGE);
    }
    let collected = tokio::time::timeout(
        BODY_TIMEOUT,
        Limited::new(req.into_body(), MAX_REQUEST_LEN).collect(),
    )
    .await;
    let body = match collected {
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return status(StatusCode::PAYLOAD_TOO_LARGE)
        }
        Ok(Err(_)) => return status(StatusCode::BAD_REQUEST),
        Err(_) => return status(StatusCode::REQUEST_TIMEOUT),
    };
    match service.handle(listener, peer, &body, Instant::now()) {
        Ok(r) => Response::new(full(r.encode().to_vec())),
        Err(OfferReject::RateLimited) => {
            let mut r = status(StatusCode::SERVICE_UNAVAILABLE);
            r.headers_mut().insert(
                header::RETRY_AFTER,
                http::HeaderValue::from_static(RETRY_AFTER_SECS),
            );
            r
        }
        Err(e) => {
            tracing::debug!(%peer, error = %e, "pchc request rejected");
            status(StatusCode::BAD_REQUEST)
        }
    }
}

#[cfg(test)]
mod tests;
