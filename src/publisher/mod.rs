//! The publisher role (HQ side): a reverse proxy in front of a plain HTTP(S)
//! origin that answers `Accept-Encoding: peerdist` requests with content
//! information (MS-PCCRC) and passes everything else through unchanged.
//!
//! ## One peerdist request
//! 1. [`negotiate::decide`] on the request headers (method, `Accept-Encoding`,
//!    `X-P2P-PeerDist[Ex]`, conditionals, `Range`).
//! 2. A *flight* per (URL, CI version, credentials) collapses concurrent
//!    requests: the leader sends one GET to the origin — conditional
//!    (`If-None-Match` / `If-Modified-Since`) when a CI for that URL is cached.
//!    `304` → the cached CI is still valid (warm path: one small round trip to
//!    the origin, which stays the authority on freshness and access). `200` →
//!    the body streams into [`ParallelHasher`] (segments hashed on all
//!    cores, bounded memory), never held whole; the CI is cached
//!    under the response's validator (strong `ETag`, else `Last-Modified` +
//!    length), replacing any entry for an older validator. A body without
//!    `Content-Length` (chunked, close-delimited) qualifies once `min_size`
//!    bytes arrived (those are held until then) and its length is the
//!    number of bytes hashed ([`negotiate::BodyBounds`] decides as it streams).
//! 3. Every waiter then answers with the CI (whole, or encoded for its single
//!    `Range`) — carrying the origin answer's `Cache-Control` / `Expires` /
//!    `Date` / `Age` so a branch proxy applies the origin's freshness policy
//!    to it — or — when the origin's answer does not qualify (small, not 200,
//!    no validator and large, already encoded) — with the origin's answer: the
//!    leader's response (rebuilt with a `Content-Length` from the held bytes
//!    when a body of unknown length ended below `min_size`) is handed to one
//!    waiter, the others re-request; all re-request when the leader stopped
//!    reading (no validator, past `max_unvalidated_size`).
//!
//! Everything else is streamed to the origin and back with hop-by-hop headers
//! removed. [`error::PublisherError::to_response`] is the one place that
//! turns failures into 502 / 504.

pub mod cache;
pub mod error;
pub mod origin;
pub mod secret;

use std::hash::{Hash, Hasher as _};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use dashmap::DashMap;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::PublisherConfig;
use crate::hashing::{HashPool, ParallelHasher};
use crate::metrics::Metrics;
use crate::net::idle::IdleTimeout;
use crate::net::{full, Body};
use crate::proto::negotiate::{
    self, BodyVerdict, ByteRange, CiVersion, Decision, EncodingVersion, IdentityReason,
    ServerPolicy,
};
use crate::proto::pccrc::{server_secret, HashAlgo, ServerSecret};

use cache::{CiCache, CiEntry, Validator};
use error::PublisherError;
use origin::OriginClient;
use secret::{SecretError, SecretKey};

/// (upstream URL, CI version, fingerprint of the caller's credentials).
type FlightKey = (String, CiVersion, u64);
type Flight = Shared<BoxFuture<'static, Arc<Outcome>>>;

/// What a flight produced, shared by every request that joined it.
enum Outcome {
    /// A CI; `from_cache` when the origin confirmed a cached one (304).
    Ci {
        entry: Arc<CiEntry>,
        from_cache: bool,
        /// The origin answer's freshness headers (see [`FRESHNESS_HEADERS`]),
        /// from the 200 or the 304 that confirmed the entry.
        freshness: HeaderMap,
    },
    /// The origin's answer does not qualify; the response (ready to relay)
    /// goes to the first waiter that can use it as is. `None` (its body was
    /// partly read and dropped) or taken: the waiter asks the origin itself.
    Identity {
        reason: IdentityReason,
        response: Mutex<Option<Response<Body>>>,
    },
    /// The origin failed.
    Failed(PublisherError),
}

/// Why the publisher could not start.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The server secret file.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The upstream TLS trust configuration.
    #[error(transparent)]
    Tls(#[from] origin::TlsSetupError),
    /// The hashing threads could not be started.
    #[error("cannot start the publisher's hashing threads: {0}")]
    HashThreads(#[source] std::io::Error),
}

/// The publisher: configuration, origin client, server secrets, CI cache and
/// in-flight CI computations.
pub struct Publisher {
    cfg: PublisherConfig,
    /// The origin base URL; replaced by [`Publisher::set_upstream`] on reload
    /// (`cfg.upstream` keeps the one it started with).
    upstream: std::sync::RwLock<http::Uri>,
    client: OriginClient,
    ks_v1: ServerSecret,
    ks_v2: ServerSecret,
    cache: CiCache,
    flights: DashMap<FlightKey, Flight>,
    /// The hashing threads (`hash_threads` of them); they exit when the
    /// publisher is dropped.
    hash_pool: Arc<HashPool>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("upstream", &self.upstream())
            .field("cached", &self.cache.len())
            .field("in_flight", &self.flights.len())
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// Load (or create) the server secret and build the publisher.
    pub fn new(cfg: PublisherConfig, metrics: Arc<Metrics>) -> Result<Self, InitError> {
        let (key, created) = secret::load_or_create(&cfg.secret_file)?;
        if created {
            tracing::info!(path = %cfg.secret_file.display(), "generated a new server secret");
        }
        Self::with_key(cfg, &key, metrics)
    }

    /// Build the publisher with a given server secret key.
    pub fn with_key(
        cfg: PublisherConfig,
        key: &SecretKey,
        metrics: Arc<Metrics>,
    ) -> Result<Self, InitError> {
        Ok(Publisher {
            client: origin::client(cfg.connect_timeout, cfg.upstream_ca_file.as_deref())?,
            ks_v1: server_secret(cfg.hash, key.expose()),
            ks_v2: server_secret(HashAlgo::Sha512Trunc, key.expose()),
            cache: CiCache::new(cfg.cache_size),
            flights: DashMap::new(),
            hash_pool: HashPool::new(cfg.hash_threads).map_err(InitError::HashThreads)?,
            metrics,
            upstream: std::sync::RwLock::new(cfg.upstream.clone()),
            cfg,
        })
    }

    /// The origin base URL requests go to now.
    pub fn upstream(&self) -> http::Uri {
        self.upstream
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Change the content-information cache bound (configuration reload).
    pub fn set_cache_size(&self, bytes: u64) {
        self.cache.set_limit(bytes);
    }

    /// Send later requests to `upstream` (configuration reload). Cached
    /// content information is keyed by full URL, so the old origin's
    /// entries are never served for the new one.
    pub fn set_upstream(&self, upstream: http::Uri) {
        *self.upstream.write().unwrap_or_else(|p| p.into_inner()) = upstream;
    }

    /// Serve on `listener` until `shutdown` fires (then drain).
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        crate::net::serve(
            listener,
            move |req, peer| self.clone().handle(req, peer),
            shutdown,
        )
        .await
    }

    /// Answer one request.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let Some(url) = crate::net::upstream_url(&self.upstream(), &parts.uri) else {
            return self.fail(PublisherError::BadTarget);
        };
        let policy = ServerPolicy {
            preferred: self.cfg.content_version,
        };
        match negotiate::decide(&parts.method, &parts.headers, policy) {
            Decision::PeerDist {
                ci_version,
                encoding_version,
                range,
                ..
            } => {
                self.serve_peerdist(parts, body, url, ci_version, encoding_version, range)
                    .await
            }
            Decision::Identity(reason) => {
                tracing::trace!(%peer, %url, reason = reason.as_str(), "pass through");
                self.pass_through(parts, body, url).await
            }
        }
    }

    async fn serve_peerdist(
        self: Arc<Self>,
        parts: http::request::Parts,
        body: Incoming,
        url: Uri,
        version: CiVersion,
        encoding: EncodingVersion,
        range: Option<ByteRange>,
    ) -> Response<Body> {
        let key = (url.to_string(), version, credentials(&parts.headers));
        let flight = self.join_flight(key, url.clone(), &parts.headers);
        let outcome = flight.await;
        match &*outcome {
            Outcome::Ci {
                entry,
                from_cache,
                freshness,
            } => {
                if *from_cache {
                    self.metrics.publisher_ci_cache_hits.inc();
                }
                match self.peerdist_response(entry, freshness, encoding, range) {
                    Ok(Some(resp)) => resp,
                    // Unsatisfiable range: the origin produces the proper 416.
                    Ok(None) => self.pass_through(parts, body, url).await,
                    Err(e) => self.fail(e),
                }
            }
            Outcome::Identity { reason, response } => {
                tracing::debug!(%url, reason = reason.as_str(), "peerdist request answered with identity");
                if range.is_none() {
                    let taken = response.lock().unwrap_or_else(|e| e.into_inner()).take();
                    if let Some(resp) = taken {
                        self.metrics.publisher_passthrough.inc();
                        return resp;
                    }
                }
                self.pass_through(parts, body, url).await
            }
            Outcome::Failed(e) => {
                tracing::warn!(%url, error = %e, kind = e.kind(), "content information request failed");
                e.to_response()
            }
        }
    }

    /// Join the flight for `key`, or start it.
    fn join_flight(self: &Arc<Self>, key: FlightKey, url: Uri, headers: &HeaderMap) -> Flight {
        use dashmap::mapref::entry::Entry;
        match self.flights.entry(key.clone()) {
            Entry::Occupied(e) => e.get().clone(),
            Entry::Vacant(v) => {
                let this = self.clone();
                let headers = origin_headers(headers);
                // A task, not just a shared future: the work finishes (and the
                // CI is cached) even if every waiting client goes away.
                let task = tokio::spawn(async move {
                    let out = this.clone().fetch_ci(url, key.1, headers).await;
                    this.flights.remove(&key);
                    Arc::new(out)
                });
                let flight = async move {
                    task.await.unwrap_or_else(|e| {
                        Arc::new(Outcome::Failed(PublisherError::Hashing(e.to_string())))
                    })
                }
                .boxed()
                .shared();
                v.insert(flight.clone());
                flight
            }
        }
    }

    /// The leader's work: revalidate or fetch, and hash.
    async fn fetch_ci(
        self: Arc<Self>,
        url: Uri,
        version: CiVersion,
        headers: HeaderMap,
    ) -> Outcome {
        let url_s = url.to_string();
        let cached = self.cache.get(&url_s, version);
        let validator = cached.as_ref().and_then(|e| e.validator.as_ref());
        let resp = match self.origin_get(&url, headers, validator).await {
            Ok(r) => r,
            Err(e) => return self.failed(e),
        };
        if resp.status() == StatusCode::NOT_MODIFIED {
            if let Some(entry) = cached {
                return Outcome::Ci {
                    entry,
                    from_cache: true,
                    freshness: freshness_headers(resp.headers()),
                };
            }
        }
        match self.hash_response(&url, version, resp).await {
            Ok(o) => o,
            Err(e) => self.failed(e),
        }
    }

    fn failed(&self, e: PublisherError) -> Outcome {
        if e.is_origin() {
            self.metrics.publisher_origin_errors.inc();
        }
        Outcome::Failed(e)
    }

    /// GET `url` from the origin (conditional on `validator`), within `origin_timeout`.
    async fn origin_get(
        &self,
        url: &Uri,
        mut headers: HeaderMap,
        validator: Option<&Validator>,
    ) -> Result<Response<Incoming>, PublisherError> {
        match validator {
            Some(Validator::ETag(tag)) => {
                headers.insert(header::IF_NONE_MATCH, tag.clone());
            }
            Some(Validator::LastModified(lm, _)) => {
                headers.insert(header::IF_MODIFIED_SINCE, lm.clone());
            }
            None => {}
        }
        let mut req = Request::new(origin::empty());
        *req.method_mut() = Method::GET;
        *req.uri_mut() = url.clone();
        *req.headers_mut() = headers;
        self.send(req).await
    }

    async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, PublisherError> {
        let url = req.uri().to_string();
        match tokio::time::timeout(self.cfg.origin_timeout, self.client.request(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(source)) => Err(PublisherError::Origin { url, source }),
            Err(_) => Err(PublisherError::OriginTimeout {
                url,
                secs: self.cfg.origin_timeout.as_secs(),
            }),
        }
    }

    /// Check the origin's answer and hash its body into a CI.
    ///
    /// An answer without a `Content-Length` (chunked or close-delimited) is
    /// only known to qualify once `min_size` bytes arrived: until then its
    /// frames are held (at most `min_size` bytes plus one frame); a body that
    /// ends sooner is answered with identity from those bytes. Without a
    /// validator its body is hashed up to `max_unvalidated_size`; beyond, the
    /// flight gives up and every waiter asks the origin itself.
    async fn hash_response(
        &self,
        url: &Uri,
        version: CiVersion,
        resp: Response<Incoming>,
    ) -> Result<Outcome, PublisherError> {
        let identity = |reason, resp| Outcome::Identity {
            reason,
            response: Mutex::new(Some(resp)),
        };
        let h = resp.headers();
        let freshness = freshness_headers(h);
        if h.get(header::CONTENT_ENCODING)
            .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
        {
            return Ok(identity(
                IdentityReason::ContentEncoded,
                self.relay(resp, url),
            ));
        }
        // The length the body's framing announces (hyper's view: exact for
        // Content-Length, none for chunked or close-delimited bodies).
        let announced = http_body::Body::size_hint(resp.body()).exact();
        let etag = h.get(header::ETAG).cloned();
        let last_modified = h.get(header::LAST_MODIFIED).cloned();
        let strong_etag = etag
            .as_ref()
            .filter(|tag| !tag.as_bytes().starts_with(b"W/"))
            .cloned();
        let has_validator = strong_etag.is_some() || last_modified.is_some();
        let bounds = match negotiate::response_eligible(
            resp.status().as_u16(),
            has_validator,
            announced,
            self.cfg.min_size.max(1),
            self.cfg.max_unvalidated_size,
        ) {
            Ok(bounds) => bounds,
            Err(reason) => return Ok(identity(reason, self.relay(resp, url))),
        };
        let content_type = h.get(header::CONTENT_TYPE).cloned();
        let (algo, ks) = match version {
            CiVersion::V1 => (self.cfg.hash, self.ks_v1),
            CiVersion::V2 => (HashAlgo::Sha512Trunc, self.ks_v2),
        };
        let mut hasher = ParallelHasher::new(&self.hash_pool, version, algo, ks);
        let (head, body) = resp.into_parts();
        // Frames held while the verdict is undecided (unknown length, fewer
        // than min_size bytes so far); `None` once hashing started.
        let mut held: Option<Vec<Bytes>> = Some(Vec::new());
        let mut got: u64 = 0;
        let body_err = |reason: String| PublisherError::OriginBody {
            url: url.to_string(),
            reason,
        };
        // The same idle bound as relayed bodies: one timer re-armed per wait.
        let mut body = IdleTimeout::new(body, self.cfg.body_idle_timeout);
        loop {
            let frame = match body.frame().await {
                Some(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Err(body_err("stalled".into()))
                }
                Some(Err(e)) => return Err(body_err(e.to_string())),
                Some(Ok(frame)) => Some(frame),
                None => None,
            };
            let Some(frame) = frame else {
                match (bounds.check(got, true), held.take()) {
                    (BodyVerdict::Identity(reason), Some(held)) => {
                        return Ok(identity(reason, identity_from(head, held)));
                    }
                    (BodyVerdict::Identity(reason), None) => {
                        return Ok(Outcome::Identity {
                            reason,
                            response: Mutex::new(None),
                        });
                    }
                    (_, held) => {
                        for data in held.into_iter().flatten() {
                            hasher.push(data).await;
                        }
                        break;
                    }
                }
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            got += data.len() as u64;
            if announced.is_some_and(|len| got > len) {
                break;
            }
            match bounds.check(got, false) {
                BodyVerdict::Undecided => {
                    if let Some(held) = &mut held {
                        held.push(data);
                    }
                }
                BodyVerdict::Eligible => {
                    for data in held.take().into_iter().flatten() {
                        hasher.push(data).await;
                    }
                    hasher.push(data).await;
                }
                BodyVerdict::Identity(reason) => {
                    // Too large to hash without a validator: the body read
                    // so far is dropped, each waiter asks the origin itself.
                    tracing::debug!(%url, bytes = got, "unvalidated body of unknown length too large to hash");
                    return Ok(Outcome::Identity {
                        reason,
                        response: Mutex::new(None),
                    });
                }
            }
        }
        if let Some(expected) = announced.filter(|&len| len != got) {
            return Err(PublisherError::OriginLength {
                url: url.to_string(),
                expected,
                got,
            });
        }
        let hashes = hasher.finish().await;
        self.metrics.publisher_bytes_hashed.inc_by(got);
        self.metrics.publisher_ci_generated.inc();
        let full = Bytes::from(hashes.encode(None)?);
        // The validator: a strong ETag, else Last-Modified plus the length
        // actually received.
        let validator = match (strong_etag, &last_modified) {
            (Some(tag), _) => Some(Validator::ETag(tag)),
            (None, Some(lm)) => Some(Validator::LastModified(lm.clone(), got)),
            (None, None) => None,
        };
        let cacheable = validator.is_some();
        let entry = Arc::new(CiEntry::new(
            validator,
            hashes,
            full,
            content_type,
            etag,
            last_modified,
        ));
        let url_s = url.to_string();
        if cacheable {
            self.cache.insert(&url_s, version, entry.clone());
        } else {
            self.cache.remove(&url_s, version);
        }
        tracing::debug!(%url, version = %version, bytes = got, ci = entry.full.len(), "content information generated");
        Ok(Outcome::Ci {
            entry,
            from_cache: false,
            freshness,
        })
    }

    /// The peerdist answer for `entry`; `Ok(None)` when `range` is unsatisfiable.
    fn peerdist_response(
        &self,
        entry: &CiEntry,
        freshness: &HeaderMap,
        encoding: EncodingVersion,
        range: Option<ByteRange>,
    ) -> Result<Option<Response<Body>>, PublisherError> {
        let total = entry.entity_len();
        let ci = match range {
            None => entry.full.clone(),
            Some(r) => match r.resolve(total) {
                None => return Ok(None),
                Some(r) if r == (0..total) => entry.full.clone(),
                Some(r) => Bytes::from(entry.hashes.encode(Some(r))?),
            },
        };
        let mut b = Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_ENCODING, negotiate::PEERDIST_TOKEN)
            .header(header::CONTENT_LENGTH, ci.len())
            .header(header::ACCEPT_RANGES, "bytes")
            .header(header::VARY, "Accept-Encoding")
            .header(
                negotiate::X_P2P_PEERDIST,
                negotiate::response_peerdist_value(encoding, total),
            );
        for (name, value) in [
            (header::CONTENT_TYPE, &entry.content_type),
            (header::ETAG, &entry.etag),
            (header::LAST_MODIFIED, &entry.last_modified),
        ] {
            if let Some(v) = value {
                b = b.header(name, v);
            }
        }
        for (name, value) in freshness {
            b = b.header(name, value);
        }
        self.metrics.publisher_ci_served.inc();
        Ok(Some(b.body(full(ci)).expect("headers are valid")))
    }

    /// Stream the request to the origin and the answer back, unchanged but for
    /// hop-by-hop headers.
    async fn pass_through(
        &self,
        parts: http::request::Parts,
        body: Incoming,
        url: Uri,
    ) -> Response<Body> {
        self.metrics.publisher_passthrough.inc();
        let req = origin::forward_request(url.clone(), parts, body);
        match self.send(req).await {
            Ok(resp) => self.relay(resp, &url),
            Err(e) => {
                self.metrics.publisher_origin_errors.inc();
                self.fail(e)
            }
        }
    }

    /// An origin answer for our client, its body bounded by `body_idle_timeout`.
    fn relay(&self, resp: Response<Incoming>, url: &Uri) -> Response<Body> {
        origin::relay(
            resp,
            url,
            self.cfg.body_idle_timeout,
            self.metrics.publisher_origin_errors.clone(),
        )
    }

    fn fail(&self, e: PublisherError) -> Response<Body> {
        tracing::warn!(error = %e, kind = e.kind(), "publisher request failed");
        e.to_response()
    }

    /// Number of cached content information entries (tests, `/status`).
    pub fn cached_entries(&self) -> usize {
        self.cache.len()
    }
}

/// The identity answer for a whole body held in `frames`: the origin's
/// status and end-to-end headers, with the length now known.
fn identity_from(mut head: http::response::Parts, frames: Vec<Bytes>) -> Response<Body> {
    crate::net::strip_hop_by_hop(&mut head.headers);
    let body = match <[Bytes; 1]>::try_from(frames) {
        Ok([one]) => one,
        Err(frames) => Bytes::from(frames.concat()),
    };
    head.headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    Response::from_parts(head, full(body))
}

/// Origin response headers that tell caches how long the answer stays fresh
/// (RFC 9111): relayed on the peerdist answer so a branch proxy applies the
/// origin's policy to the content information, as it would to the body.
const FRESHNESS_HEADERS: [header::HeaderName; 4] = [
    header::CACHE_CONTROL,
    header::EXPIRES,
    header::DATE,
    header::AGE,
];

/// The [`FRESHNESS_HEADERS`] of an origin answer.
fn freshness_headers(origin: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in FRESHNESS_HEADERS {
        for v in origin.get_all(&name) {
            out.append(name.clone(), v.clone());
        }
    }
    out
}

/// Headers for the CI fetch: the client's end-to-end headers minus PeerDist,
/// range and conditional ones, asking for identity bytes (those are hashed).
fn origin_headers(client: &HeaderMap) -> HeaderMap {
    let mut h = client.clone();
    crate::net::strip_hop_by_hop(&mut h);
    for name in [
        header::HOST,
        header::ACCEPT_ENCODING,
        header::RANGE,
        header::IF_RANGE,
        header::IF_MATCH,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_UNMODIFIED_SINCE,
        header::CONTENT_LENGTH,
    ] {
        h.remove(name);
    }
    h.remove(negotiate::X_P2P_PEERDIST);
    h.remove(negotiate::X_P2P_PEERDIST_EX);
    h.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    h
}

/// Requests with different credentials never share a flight: the origin
/// decides access for each of them.
fn credentials(h: &HeaderMap) -> u64 {
    let mut s = std::collections::hash_map::DefaultHasher::new();
    for name in [header::AUTHORIZATION, header::COOKIE] {
        for v in h.get_all(name) {
            v.as_bytes().hash(&mut s);
        }
    }
    s.finish()
}
