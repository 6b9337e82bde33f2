//! Offer handling without HTTP: decode one PCHC request, apply the hosted
//! cache's rules (PROTOCOL.md §8.5–§8.6) and produce the response, queueing
//! pulls for accepted segments.
//!
//! - The URL fixes the version: a v1 message on the v2 URL (or the reverse)
//!   is rejected.
//! - INITIAL_OFFER → `OK` when the hash information is known (stored or in a
//!   queued v1 job), pulling missing blocks if needed; else `INTERESTED`.
//! - SEGMENT_INFO → verified ([`verify_segment_info`]) → `OK`, pull queued.
//! - BATCHED_OFFER → `OK`, one pull per segment not present or in flight.
//! - Every client IP has a token bucket; an empty bucket rejects the message.
//! - Pulls connect only to the client's source IP and advertised port.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::queue::{Enqueue, PullJob, PullKind, PullQueue};
use crate::metrics::Metrics;
use crate::proto::pccrc::SegmentId;
use crate::proto::pchc::{verify_segment_info, Major, OfferError, Request, RequestBody, Response};
use crate::proto::DecodeError;

/// Most client IPs whose offer rate is tracked at once; bounds the limiter's
/// memory. When full and no idle entry can be dropped, new clients are refused.
pub const MAX_TRACKED_CLIENTS: usize = 4096;

/// What the local cache holds for a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    /// Nothing.
    Nothing,
    /// v1 hash information (HoD, Kp, block hashes) but not every block.
    HashInfo,
    /// Every block (and, for v1, the hash information).
    Complete,
}

/// Read access to what the store holds, as the offer logic needs it.
pub trait SegmentCatalog: Send + Sync + 'static {
    /// What is held for `id`.
    fn holding(&self, id: &SegmentId) -> Holding;
}

/// Why a request was not answered with a PCHC response.
#[derive(Debug, thiserror::Error)]
pub enum OfferReject {
    /// The body is not a valid PCHC request.
    #[error("malformed request: {0}")]
    Malformed(#[from] DecodeError),
    /// The message's version is not the one the URL serves.
    #[error("{message:?} message sent to the {url:?} URL")]
    WrongVersion {
        /// Version the URL serves.
        url: Major,
        /// Version in the message.
        message: Major,
    },
    /// CONNECTION_INFORMATION.Port is 0: nowhere to pull from.
    #[error("connection information port is 0")]
    NoPort,
    /// SEGMENT_INFO failed verification.
    #[error("segment info rejected: {0}")]
    Unverified(#[from] OfferError),
    /// The client exceeded its offer rate.
    #[error("offer rate exceeded")]
    RateLimited,
}

impl OfferReject {
    /// Short stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            OfferReject::Malformed(_) => "malformed",
            OfferReject::WrongVersion { .. } => "wrong_version",
            OfferReject::NoPort => "no_port",
            OfferReject::Unverified(_) => "unverified",
            OfferReject::RateLimited => "rate_limited",
        }
    }
}

/// Offer rate limit: a token bucket per client IP.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    /// Tokens (messages) added per second.
    pub per_second: f64,
    /// Bucket size: messages a client may send in one burst.
    pub burst: f64,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets per client IP, at most [`MAX_TRACKED_CLIENTS`] of them.
pub(super) struct Limiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl Limiter {
    pub(super) fn new(limit: RateLimit) -> Self {
        Limiter {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one token from `ip`'s bucket at time `now`; false when empty.
    pub(super) fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let limit = self.limit;
        let refill = |b: &mut Bucket| {
            let dt = now.saturating_duration_since(b.last).as_secs_f64();
            b.tokens = (b.tokens + dt * limit.per_second).min(limit.burst);
            b.last = now;
        };
        if !buckets.contains_key(&ip) && buckets.len() >= MAX_TRACKED_CLIENTS {
            // Forget clients whose bucket has refilled: they are idle.
            buckets.retain(|_, b| {
                refill(b);
                b.tokens < limit.burst
            });
            if buckets.len() >= MAX_TRACKED_CLIENTS {
                return false;
            }
        }
        let b = buckets.entry(ip).or_insert(Bucket {
            tokens: limit.burst,
            last: now,
        });
        refill(b);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The offer rules, shared by the HTTP and HTTPS listeners.
pub struct OfferService<C> {
    catalog: Arc<C>,
    queue: PullQueue,
    limiter: Limiter,
    metrics: Arc<Metrics>,
}

impl<C> std::fmt::Debug for OfferService<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfferService")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl<C: SegmentCatalog> OfferService<C> {
    /// Offer rules over `catalog`, queueing accepted segments on `queue`.
    pub fn new(catalog: Arc<C>, queue: PullQueue, limit: RateLimit, metrics: Arc<Metrics>) -> Self {
        OfferService {
            catalog,
            queue,
            limiter: Limiter::new(limit),
            metrics,
        }
    }

    /// Handle one request body that arrived on the `url` version's URL from
    /// `client`. Counts it in the metrics either way.
    pub fn handle(
        &self,
        url: Major,
        client: SocketAddr,
        body: &[u8],
        now: Instant,
    ) -> Result<Response, OfferReject> {
        let (message, result) = self.handle_inner(url, client, body, now);
        let response = match &result {
            Ok(r) => r.code.as_str(),
            Err(e) => e.kind(),
        };
        self.metrics
            .hosted_cache_offer(url.as_str(), message, response);
        result
    }

    fn handle_inner(
        &self,
        url: Major,
        client: SocketAddr,
        body: &[u8],
        now: Instant,
    ) -> (&'static str, Result<Response, OfferReject>) {
        if !self.limiter.allow(client.ip(), now) {
            return ("unknown", Err(OfferReject::RateLimited));
        }
        let req = match Request::decode(body) {
            Ok(r) => r,
            Err(e) => return ("malformed", Err(e.into())),
        };
        let message = req.header.msg_type.as_str();
        if req.header.major != url {
            return (
                message,
                Err(OfferReject::WrongVersion {
                    url,
                    message: req.header.major,
                }),
            );
        }
        if req.connection.port == 0 {
            return (message, Err(OfferReject::NoPort));
        }
        // SPEC(MS-PCHC §3.2.5.2.2): pull from the client's own address; the
        // message only contributes the port.
        let source = SocketAddr::new(client.ip(), req.connection.port);
        let version = url.as_str();
        let result = match req.body {
            RequestBody::InitialOffer(offer) => {
                let id = offer.hash;
                let known = match self.catalog.holding(&id) {
                    Holding::Complete => {
                        self.metrics
                            .hosted_cache_offered_segment(version, "present");
                        true
                    }
                    Holding::HashInfo => {
                        self.enqueue(
                            version,
                            PullJob {
                                source,
                                id,
                                kind: PullKind::V1Stored,
                            },
                        );
                        true
                    }
                    Holding::Nothing => self.queue.in_flight(&id) == Some(true),
                };
                Ok(if known {
                    Response::OK
                } else {
                    Response::INTERESTED
                })
            }
            RequestBody::SegmentInfo(info) => match verify_segment_info(None, &info) {
                Ok(segment) => {
                    let id = segment.id;
                    if self.catalog.holding(&id) == Holding::Complete {
                        self.metrics
                            .hosted_cache_offered_segment(version, "present");
                    } else {
                        self.enqueue(
                            version,
                            PullJob {
                                source,
                                id,
                                kind: PullKind::V1(Box::new(segment)),
                            },
                        );
                    }
                    Ok(Response::OK)
                }
                Err(e) => Err(e.into()),
            },
            RequestBody::BatchedOffer(batch) => {
                for d in batch.descriptors {
                    let id = d.segment_id();
                    if self.catalog.holding(&id) == Holding::Complete {
                        self.metrics
                            .hosted_cache_offered_segment(version, "present");
                        continue;
                    }
                    self.enqueue(
                        version,
                        PullJob {
                            source,
                            id,
                            kind: PullKind::V2(d),
                        },
                    );
                }
                Ok(Response::OK)
            }
        };
        (message, result)
    }

    fn enqueue(&self, version: &'static str, job: PullJob) -> Enqueue {
        let outcome = self.queue.try_enqueue(job);
        self.metrics
            .hosted_cache_offered_segment(version, outcome.as_str());
        outcome
    }
}
