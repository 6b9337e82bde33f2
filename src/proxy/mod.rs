//! The branch proxy: a hyper service in front of origins.
//!
//! Per request ([`Proxy::handle`]):
//! 1. `CONNECT` (forward mode) → an uncached TCP tunnel.
//! 2. Requests the proxy must not transform (not GET, `Cache-Control:
//!    no-transform`, a client speaking PeerDist itself, multi-range or
//!    `If-Range`, upgrades) pass through unchanged.
//! 3. Otherwise, unless [`freshness`] has a fresh entry for the URL (then no
//!    origin contact at all), the request goes to the origin with
//!    `Accept-Encoding: peerdist, <the client's codings>` and the PeerDist
//!    headers — conditional on the entry's validators when a stale one is
//!    remembered (`304` → the entry is reused). An identity answer streams through;
//!    a content-information answer is parsed and the body is rebuilt by the
//!    [`fetch::Planner`](crate::fetch::Planner) from the store, other sources
//!    and origin `Range` GETs — every block verified — and streamed with the
//!    original length, type and validators (206 for a single client range).
//! 4. If the content information is unusable, or the first block cannot be
//!    produced, the client gets a plain GET from the origin instead: correct
//!    bytes or an error, never wrong bytes. A failure after the headers went
//!    out aborts the response (the client sees a short body, not bad data).
//!
//! Errors map to statuses in one place, [`error`].

mod direct;
pub mod error;
pub mod freshness;
pub mod headers;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::config::ProxyConfig;
use crate::fetch::origin::{empty_body, ClientError, OriginBody, OriginClient, UpstreamBody};
use crate::fetch::{
    plan_object, BodyChunk, FetchError, OriginRanges, Planner, SegmentPlan, SourceKind,
};
use crate::metrics::Metrics;
use crate::net::{full, strip_hop_by_hop, Body};
use crate::proto::pccrc::ContentInfo;

pub use direct::DirectHits;
pub use error::{Blame, ProxyError};
use freshness::{Entry, FreshnessCache};
use headers::{
    add_via, lists_token, peerdist_content_length, ByteRange, PEERDIST_ACCEPT_ENCODING,
    PEERDIST_EX, PEERDIST_VERSION,
};

/// Why a request was not served from the segment machinery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BypassReason {
    /// Not a GET.
    Method,
    /// `Cache-Control: no-transform`.
    NoTransform,
    /// The client negotiates PeerDist itself.
    ClientPeerDist,
    /// A `Range` the proxy does not serve itself (multi-range, `If-Range`).
    Range,
    /// Connection upgrade (WebSocket …).
    Upgrade,
    /// The origin answered without content information.
    Identity,
    /// Content information unusable or its blocks unavailable: plain GET.
    Fallback,
    /// A `CONNECT` tunnel.
    Connect,
}

impl BypassReason {
    /// Stable lower-case name for logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            BypassReason::Method => "method",
            BypassReason::NoTransform => "no_transform",
            BypassReason::ClientPeerDist => "client_peerdist",
            BypassReason::Range => "range",
            BypassReason::Upgrade => "upgrade",
            BypassReason::Identity => "identity",
            BypassReason::Fallback => "fallback",
            BypassReason::Connect => "connect",
        }
    }
}

/// How a proxy request was served (metric label `outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Every block came from the local store.
    Hit,
    /// Some blocks from the store, the rest fetched.
    Partial,
    /// No block from the store.
    Miss,
    /// Not served through the segment machinery.
    Bypass(BypassReason),
    /// The client got an error status or an aborted body.
    Error,
}

impl CacheOutcome {
    /// Stable lower-case name for logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Partial => "partial",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Bypass(_) => "bypass",
            CacheOutcome::Error => "error",
        }
    }
}

/// The proxy service; cheap to clone.
#[derive(Debug, Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Replaced by [`Proxy::set_upstream`] on configuration reload.
    upstream: std::sync::RwLock<Option<Uri>>,
    forward: bool,
    max_content_info: u64,
    client: OriginClient,
    planner: Planner,
    metrics: Arc<Metrics>,
    /// Remembered content information (`None` when `freshness = false`).
    fresh: Option<FreshnessCache>,
}

impl Proxy {
    /// A proxy for `config`, rebuilding bodies with `planner`.
    pub fn new(
        config: &ProxyConfig,
        planner: Planner,
        metrics: Arc<Metrics>,
    ) -> Result<Proxy, ClientError> {
        let client = OriginClient::new(
            config.extra_ca_file.as_deref(),
            config.connect_timeout,
            config.response_timeout,
            config.body_idle_timeout,
        )?;
        Ok(Proxy {
            inner: Arc::new(Inner {
                upstream: std::sync::RwLock::new(config.upstream.clone()),
                forward: config.forward,
                max_content_info: config.max_content_info,
                client,
                planner,
                metrics,
                fresh: config.freshness.then(|| {
                    FreshnessCache::new(config.freshness_max_entries, config.freshness_max_size)
                }),
            }),
        })
    }

    /// Send later requests to `upstream` (configuration reload); requests
    /// already running finish against the old origin.
    pub fn set_upstream(&self, upstream: Option<Uri>) {
        *self
            .inner
            .upstream
            .write()
            .unwrap_or_else(|p| p.into_inner()) = upstream;
    }

    /// Answer one client request.
    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let guard = Guard::new(
            self.inner.metrics.clone(),
            req.method().clone(),
            peer,
            crate::activity::display_target(req.uri()),
        );
        if req.method() == Method::CONNECT {
            return self.connect(req, guard).await;
        }
        let (mut parts, body) = req.into_parts();
        if let Err(e) = self.upstream_request(&mut parts) {
            return guard.fail(e);
        }
        if let Some(reason) = bypass_reason(&parts) {
            let mut guard = guard;
            guard.outcome = CacheOutcome::Bypass(reason);
            let req = Request::from_parts(parts, body.boxed());
            return self.pass(req, guard).await;
        }
        drop(body);
        self.peerdist_get(parts, guard).await
    }

    /// Turn a client request head into the one sent upstream: the target
    /// URL, no hop-by-hop headers, `Via` added, `Host` left to the client.
    fn upstream_request(&self, parts: &mut Parts) -> Result<(), ProxyError> {
        let target = self.target(&parts.uri)?;
        to_upstream(parts, target);
        Ok(())
    }

    /// Where a request goes: absolute-form (forward mode) or `upstream` + path.
    fn target(&self, uri: &Uri) -> Result<Uri, ProxyError> {
        if uri.scheme().is_some() && self.inner.forward {
            return match uri.scheme_str() {
                Some("http") | Some("https") if uri.authority().is_some() => Ok(uri.clone()),
                _ => Err(ProxyError::BadRequest("only http and https targets")),
            };
        }
        let up = self
            .inner
            .upstream
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(up) = up else {
            return Err(if uri.scheme().is_some() {
                ProxyError::ForwardDisabled
            } else {
                ProxyError::NoUpstream
            });
        };
        crate::net::upstream_url(&up, uri)
            .ok_or(ProxyError::BadRequest("request target does not form a URL"))
    }

    /// The freshness key of a request for `uri`: the text of its upstream
    /// URL, `target(uri)?.to_string()`, built without making the URL (one
    /// allocation instead of several on the direct path's every hit). `None`
    /// when there is no upstream for it.
    fn fresh_key(&self, uri: &Uri) -> Option<String> {
        if uri.scheme().is_some() && self.inner.forward {
            return self.target(uri).ok().map(|t| t.to_string());
        }
        let up = self
            .inner
            .upstream
            .read()
            .unwrap_or_else(|p| p.into_inner());
        Some(crate::net::upstream_url_text(up.as_ref()?, uri))
    }

    /// Forward `req` unchanged and stream the answer back.
    async fn pass(&self, req: Request<UpstreamBody>, guard: Guard) -> Response<Body> {
        match self.inner.client.send(req).await {
            Ok(resp) => self.respond_pass(resp, guard),
            Err(e) => guard.fail(ProxyError::Origin(e)),
        }
    }

    fn respond_pass(&self, resp: Response<OriginBody>, guard: Guard) -> Response<Body> {
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        add_via(&mut parts.headers);
        parts.version = Version::HTTP_11;
        let body = PassBody { inner: body, guard };
        Response::from_parts(parts, body.boxed())
    }

    /// A plain GET of the original request (no PeerDist), streamed through.
    async fn fallback(&self, parts: Parts, mut guard: Guard) -> Response<Body> {
        guard.outcome = CacheOutcome::Bypass(BypassReason::Fallback);
        self.pass(Request::from_parts(parts, empty_body()), guard)
            .await
    }

    /// The request that asks the origin for content information: the
    /// client's end-to-end headers, no `Range` (the proxy trims itself),
    /// `peerdist` first in `Accept-Encoding`, and — when revalidating a
    /// remembered entry — its validators instead of the client's conditionals.
    fn ci_request(&self, parts: &Parts, revalidate: Option<&Entry>) -> Request<UpstreamBody> {
        let mut req = Request::new(empty_body());
        *req.method_mut() = Method::GET;
        *req.uri_mut() = parts.uri.clone();
        *req.headers_mut() = parts.headers.clone();
        let h = req.headers_mut();
        // SPEC(MS-PCCRTP): content information is asked for the whole object;
        // the proxy trims to the client's range itself (IIS's answer to a
        // peerdist Range request is undocumented).
        h.remove(header::RANGE);
        let accept = ci_accept_encoding(h);
        h.insert(header::ACCEPT_ENCODING, accept);
        h.insert("x-p2p-peerdist", HeaderValue::from_static(PEERDIST_VERSION));
        h.insert("x-p2p-peerdistex", HeaderValue::from_static(PEERDIST_EX));
        if let Some(entry) = revalidate {
            for name in CLIENT_CONDITIONALS {
                h.remove(name);
            }
            for (name, value) in entry.conditional_headers() {
                h.insert(name, value);
            }
        }
        req
    }

    /// Ask the origin for content information (unless a fresh one is
    /// remembered); serve from segments if it comes.
    async fn peerdist_get(&self, parts: Parts, mut guard: Guard) -> Response<Body> {
        let client_range = parts
            .headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(ByteRange::parse);
        let key = parts.uri.to_string();
        let fresh = self.inner.fresh.as_ref();
        let remembered = fresh.and_then(|c| c.get(&key));
        if let Some(entry) = &remembered {
            let now = SystemTime::now();
            if entry.is_fresh(&parts.headers, now) {
                self.freshness("fresh");
                return self
                    .serve_entry(parts, entry.clone(), client_range, now, guard)
                    .await;
            }
        }
        let request_time = SystemTime::now();
        let req = self.ci_request(&parts, remembered.as_deref());
        let mut resp = match self.inner.client.send(req).await {
            Ok(r) => r,
            Err(e) => return guard.fail(ProxyError::Origin(e)),
        };
        let response_time = SystemTime::now();
        if let (Some(entry), Some(cache)) = (&remembered, fresh) {
            if resp.status() == StatusCode::NOT_MODIFIED {
                self.freshness("revalidated");
                let entry = Arc::new(entry.freshened(resp.headers(), request_time, response_time));
                match freshness::storable(&parts.headers, &entry.headers) {
                    Ok(()) => cache.insert(&key, entry.clone()),
                    Err(_) => cache.remove(&key),
                }
                self.update_entries();
                return self
                    .serve_entry(parts, entry, client_range, response_time, guard)
                    .await;
            }
            // A different object, or an error: the entry is no longer usable.
            cache.remove(&key);
            self.update_entries();
            if resp.status() == StatusCode::OK {
                self.freshness("changed");
                if !is_peerdist(&resp) {
                    // A conditional request is answered in identity by a
                    // publisher (it leaves conditionals to the origin): ask
                    // again without conditionals to get the new content
                    // information.
                    drop(resp);
                    let req = self.ci_request(&parts, None);
                    resp = match self.inner.client.send(req).await {
                        Ok(r) => r,
                        Err(e) => return guard.fail(ProxyError::Origin(e)),
                    };
                }
            }
        }
        if !is_peerdist(&resp) {
            if client_range.is_some() && resp.status() == StatusCode::OK {
                // A full identity body for a range request: ask again with the range.
                drop(resp);
                guard.outcome = CacheOutcome::Bypass(BypassReason::Range);
                return self
                    .pass(Request::from_parts(parts, empty_body()), guard)
                    .await;
            }
            guard.outcome = CacheOutcome::Bypass(BypassReason::Identity);
            return self.respond_pass(resp, guard);
        }
        self.serve_planned(
            parts,
            resp,
            client_range,
            (request_time, response_time),
            guard,
        )
        .await
    }

    fn freshness(&self, result: &'static str) {
        self.inner.metrics.proxy_freshness.inc(result);
    }

    fn update_entries(&self) {
        if let Some(c) = &self.inner.fresh {
            self.inner
                .metrics
                .proxy_freshness_entries
                .set(i64::try_from(c.len()).unwrap_or(i64::MAX));
        }
    }

    /// Answer from a remembered entry: `304` to a client conditional it
    /// satisfies, else the body rebuilt from its segments, with `Age`.
    async fn serve_entry(
        &self,
        parts: Parts,
        entry: Arc<Entry>,
        client_range: Option<ByteRange>,
        now: SystemTime,
        mut guard: Guard,
    ) -> Response<Body> {
        let age = entry.age(now).as_secs();
        if entry.not_modified_for(&parts.headers) {
            guard.outcome = CacheOutcome::Hit;
            let mut resp = Response::new(full(Bytes::new()));
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            *resp.headers_mut() = not_modified_headers(&entry, age);
            return resp;
        }
        let mut headers = entry.headers.clone();
        headers.insert(header::AGE, HeaderValue::from(age));
        self.serve_segments(
            parts,
            entry.segments.clone(),
            entry.total,
            headers,
            client_range,
            guard,
        )
        .await
    }

    async fn serve_planned(
        &self,
        parts: Parts,
        resp: Response<OriginBody>,
        client_range: Option<ByteRange>,
        (request_time, response_time): (SystemTime, SystemTime),
        guard: Guard,
    ) -> Response<Body> {
        let metrics = &self.inner.metrics;
        let (rparts, rbody) = resp.into_parts();
        let max = self.inner.max_content_info;
        let announced = rparts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(len) = announced.filter(|&l| l > max) {
            tracing::warn!(uri = %parts.uri, len, max, "content information too large; plain GET");
            return self.fallback(parts, guard).await;
        }
        let limit = usize::try_from(max).unwrap_or(usize::MAX);
        let ci_bytes = match Limited::new(rbody, limit).collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) => {
                tracing::warn!(uri = %parts.uri, error = %e, "cannot read content information; plain GET");
                return self.fallback(parts, guard).await;
            }
        };
        metrics
            .proxy_wan_bytes
            .get_or_create(&[("kind", "content_information")])
            .inc_by(ci_bytes.len() as u64);
        let ci = match ContentInfo::parse(&ci_bytes) {
            Ok(ci) => ci,
            Err(e) => {
                tracing::warn!(uri = %parts.uri, error = %e, "content information does not parse; plain GET");
                return self.fallback(parts, guard).await;
            }
        };
        let total = peerdist_content_length(&rparts.headers).unwrap_or(ci.range().end);
        if ci.range() != (0..total) {
            tracing::warn!(uri = %parts.uri, range = ?ci.range(), total, "content information does not describe the whole object; plain GET");
            return self.fallback(parts, guard).await;
        }
        let segments = plan_object(&ci);
        let mut headers = rparts.headers;
        strip_hop_by_hop(&mut headers);
        if let Some(cache) = &self.inner.fresh {
            let key = parts.uri.to_string();
            match freshness::storable(&parts.headers, &headers) {
                Ok(()) => {
                    let entry = Entry::new(
                        segments.clone(),
                        total,
                        headers.clone(),
                        request_time,
                        response_time,
                    );
                    cache.insert(&key, Arc::new(entry));
                    self.freshness("stored");
                }
                Err(why) => {
                    tracing::debug!(uri = %parts.uri, reason = ?why, "content information not remembered");
                    cache.remove(&key);
                    self.freshness("uncacheable");
                }
            }
            self.update_entries();
        }
        self.serve_segments(parts, segments, total, headers, client_range, guard)
            .await
    }

    /// Serve `client_range` (or all) of the object described by `segments`
    /// with the peerdist answer's `headers` turned into identity ones.
    async fn serve_segments(
        &self,
        parts: Parts,
        segments: Arc<[Arc<SegmentPlan>]>,
        total: u64,
        headers: HeaderMap,
        client_range: Option<ByteRange>,
        mut guard: Guard,
    ) -> Response<Body> {
        match self
            .prepare_body(&parts, segments, total, headers, client_range)
            .await
        {
            Ok(p) => {
                guard.planned = true;
                let body = PlannedBody {
                    first: p.first,
                    rest: std::sync::Mutex::new(p.rest),
                    remaining: p.len,
                    guard,
                };
                let mut resp = Response::new(body.boxed());
                *resp.status_mut() = p.status;
                *resp.headers_mut() = p.headers;
                resp
            }
            Err(Unprepared::Fail(e)) => guard.fail(e),
            Err(Unprepared::Fallback) => self.fallback(parts, guard).await,
        }
    }

    /// The status, identity headers and body stream for `client_range` (or
    /// all) of the object described by `segments`, with the first chunk
    /// already produced: a lying or broken origin can still be answered
    /// with a plain GET before a status is committed.
    async fn prepare_body(
        &self,
        parts: &Parts,
        segments: Arc<[Arc<SegmentPlan>]>,
        total: u64,
        mut headers: HeaderMap,
        client_range: Option<ByteRange>,
    ) -> Result<PreparedBody, Unprepared> {
        let metrics = &self.inner.metrics;
        let (status, range) = match client_range {
            None => (StatusCode::OK, 0..total),
            Some(r) => match r.resolve(total) {
                Some(range) => (StatusCode::PARTIAL_CONTENT, range),
                None => {
                    return Err(Unprepared::Fail(ProxyError::RangeNotSatisfiable {
                        len: total,
                    }))
                }
            },
        };
        let validator = headers
            .get(header::ETAG)
            .filter(|v| !v.as_bytes().starts_with(b"W/"))
            .or_else(|| headers.get(header::LAST_MODIFIED))
            .cloned();
        let origin = OriginRanges::new(
            self.inner.client.clone(),
            parts.uri.clone(),
            parts.headers.clone(),
            validator,
            metrics.clone(),
        );
        let mut stream = self
            .inner
            .planner
            .stream(segments, Arc::new(origin), range.clone());
        let first = if range.is_empty() {
            None
        } else {
            match stream.next().await {
                Some(Ok(chunk)) => Some(chunk),
                Some(Err(e)) => {
                    tracing::warn!(uri = %parts.uri, error = %e, "cannot build body from segments; plain GET");
                    return Err(Unprepared::Fallback);
                }
                None => {
                    tracing::warn!(uri = %parts.uri, "segment stream ended early; plain GET");
                    return Err(Unprepared::Fallback);
                }
            }
        };
        identity_headers(&mut headers, status, &range, total);
        Ok(PreparedBody {
            status,
            headers,
            first,
            rest: stream,
            len: range.end - range.start,
        })
    }

    /// `CONNECT host:port`: an uncached tunnel (forward mode only).
    async fn connect(&self, req: Request<Incoming>, mut guard: Guard) -> Response<Body> {
        guard.outcome = CacheOutcome::Bypass(BypassReason::Connect);
        if !self.inner.forward {
            return guard.fail(ProxyError::ForwardDisabled);
        }
        let Some(authority) = req.uri().authority().cloned() else {
            return guard.fail(ProxyError::BadRequest("CONNECT needs host:port"));
        };
        let Some(port) = authority.port_u16() else {
            return guard.fail(ProxyError::BadRequest("CONNECT needs host:port"));
        };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let mut upstream = match tokio::net::TcpStream::connect((host.as_str(), port)).await {
            Ok(s) => s,
            Err(e) => {
                return guard.fail(ProxyError::Tunnel {
                    target: authority.to_string(),
                    detail: e.to_string(),
                })
            }
        };
        tokio::spawn(async move {
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => {
                    let mut client = hyper_util::rt::TokioIo::new(upgraded);
                    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await
                    {
                        tracing::debug!(error = %e, "tunnel ended with error");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
            }
            drop(guard);
        });
        Response::new(full(Bytes::new()))
    }
}

/// Client conditionals replaced by the entry's validators when revalidating.
const CLIENT_CONDITIONALS: [HeaderName; 4] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
];

/// Headers a `304` answered from a remembered entry carries (RFC 9110 §15.4.5).
const NOT_MODIFIED_HEADERS: [HeaderName; 7] = [
    header::CACHE_CONTROL,
    header::CONTENT_LOCATION,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::VARY,
    header::LAST_MODIFIED,
];

/// Whether an origin answer carries content information.
/// A response body ready to send ([`Proxy::prepare_body`]).
struct PreparedBody {
    status: StatusCode,
    headers: HeaderMap,
    first: Option<BodyChunk>,
    rest: BoxStream<'static, Result<BodyChunk, FetchError>>,
    /// Body length, the first chunk included.
    len: u64,
}

/// Why [`Proxy::prepare_body`] produced no body.
enum Unprepared {
    /// Answer with this error.
    Fail(ProxyError),
    /// Answer with a plain GET of the original request.
    Fallback,
}

/// Turn the peerdist answer's `headers` into those of the identity answer
/// with `status` for `range` of an object of `total` bytes.
fn identity_headers(
    headers: &mut HeaderMap,
    status: StatusCode,
    range: &std::ops::Range<u64>,
    total: u64,
) {
    for name in [
        header::CONTENT_ENCODING,
        header::CONTENT_LENGTH,
        header::CONTENT_RANGE,
    ] {
        headers.remove(name);
    }
    headers.remove("x-p2p-peerdist");
    headers.remove("x-p2p-peerdistex");
    headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(range.end - range.start),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT {
        let v = format!("bytes {}-{}/{total}", range.start, range.end - 1);
        if let Ok(v) = HeaderValue::from_str(&v) {
            headers.insert(header::CONTENT_RANGE, v);
        }
    }
    add_via(headers);
}

/// Make a client request head the one sent to `target`: no hop-by-hop
/// headers, `Via` added, `Host` left to the client (set from the URL).
fn to_upstream(parts: &mut Parts, target: Uri) {
    strip_hop_by_hop(&mut parts.headers);
    add_via(&mut parts.headers);
    parts.headers.remove(header::HOST);
    parts.uri = target;
    parts.version = Version::HTTP_11;
}

/// The headers of a `304` answered from a remembered entry.
fn not_modified_headers(entry: &Entry, age: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for name in NOT_MODIFIED_HEADERS {
        for v in entry.headers.get_all(&name) {
            headers.append(name.clone(), v.clone());
        }
    }
    headers.insert(header::AGE, HeaderValue::from(age));
    add_via(&mut headers);
    headers
}

fn is_peerdist<B>(resp: &Response<B>) -> bool {
    resp.status() == StatusCode::OK
        && lists_token(resp.headers(), &header::CONTENT_ENCODING, "peerdist")
}

/// `Accept-Encoding` toward the origin: `peerdist` first, then the client's
/// own codings, so an origin without PeerDist can still compress for the
/// client (the answer then streams through unchanged).
fn ci_accept_encoding(client: &HeaderMap) -> HeaderValue {
    let theirs: Vec<&str> = client
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    if theirs.is_empty() {
        return HeaderValue::from_static(PEERDIST_ACCEPT_ENCODING);
    }
    HeaderValue::from_str(&format!(
        "{PEERDIST_ACCEPT_ENCODING}, {}",
        theirs.join(", ")
    ))
    .unwrap_or(HeaderValue::from_static(PEERDIST_ACCEPT_ENCODING))
}

/// Why a request must pass through untouched, if it must.
fn bypass_reason(parts: &Parts) -> Option<BypassReason> {
    let h = &parts.headers;
    if parts.method != Method::GET {
        return Some(BypassReason::Method);
    }
    if lists_token(h, &header::CACHE_CONTROL, "no-transform") {
        return Some(BypassReason::NoTransform);
    }
    if lists_token(h, &header::ACCEPT_ENCODING, "peerdist")
        || h.contains_key("x-p2p-peerdist")
        || h.contains_key("x-p2p-peerdistex")
    {
        return Some(BypassReason::ClientPeerDist);
    }
    if let Some(r) = h.get(header::RANGE) {
        let single = r.to_str().ok().and_then(ByteRange::parse).is_some();
        if !single || h.contains_key(header::IF_RANGE) {
            return Some(BypassReason::Range);
        }
    }
    if h.contains_key(header::UPGRADE) {
        return Some(BypassReason::Upgrade);
    }
    None
}

/// Per-request accounting: in-flight gauge, outcome, bytes by source and
/// duration, recorded when the response body is finished or dropped.
struct Guard {
    metrics: Arc<Metrics>,
    start: Instant,
    method: Method,
    peer: SocketAddr,
    /// Display form of the request target (no query), for the recent-requests ring.
    target: String,
    outcome: CacheOutcome,
    planned: bool,
    by_source: crate::activity::SourceBytes,
    from_store: u64,
    fetched: u64,
    failed: bool,
}

impl Guard {
    fn new(metrics: Arc<Metrics>, method: Method, peer: SocketAddr, target: String) -> Guard {
        metrics.proxy_in_flight.inc();
        Guard {
            metrics,
            start: Instant::now(),
            method,
            peer,
            target,
            outcome: CacheOutcome::Miss,
            planned: false,
            by_source: Default::default(),
            from_store: 0,
            fetched: 0,
            failed: false,
        }
    }

    fn served(&mut self, source: SourceKind, n: usize) {
        let n = n as u64;
        if source == SourceKind::Store {
            self.from_store += n;
        } else {
            self.fetched += n;
        }
        self.by_source.add(source, n);
        self.metrics.proxy_served(source, n);
    }

    fn fail(mut self, e: ProxyError) -> Response<Body> {
        self.failed = true;
        if e.blame() == Blame::Origin {
            self.metrics
                .proxy_origin_errors
                .get_or_create(&[("kind", e.kind())])
                .inc();
        }
        tracing::info!(peer = %self.peer, method = %self.method, error = %e, "proxy request failed");
        e.into_response()
    }

    /// The body stream failed after the head was sent: count it; the
    /// response is cut off.
    fn body_failed(&mut self, e: &FetchError) {
        self.failed = true;
        self.metrics
            .proxy_origin_errors
            .get_or_create(&[("kind", e.kind())])
            .inc();
        tracing::warn!(peer = %self.peer, error = %e, "aborting response mid-body");
    }

    fn outcome(&self) -> CacheOutcome {
        if self.failed {
            CacheOutcome::Error
        } else if !self.planned {
            self.outcome
        } else if self.fetched == 0 {
            CacheOutcome::Hit
        } else if self.from_store == 0 {
            CacheOutcome::Miss
        } else {
            CacheOutcome::Partial
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let outcome = self.outcome();
        self.metrics.proxy_in_flight.dec();
        let elapsed = self.start.elapsed();
        self.metrics
            .proxy_request_duration
            .observe(elapsed.as_secs_f64());
        self.metrics.proxy_requests.inc(outcome.as_str());
        let reason = match outcome {
            CacheOutcome::Bypass(r) => r.as_str(),
            _ => "",
        };
        // The access log line: one per request, bytes by source, never the query string.
        tracing::info!(
            peer = %self.peer,
            method = %self.method,
            target = %self.target,
            outcome = outcome.as_str(),
            reason,
            store_bytes = self.by_source.store,
            peer_bytes = self.by_source.peer,
            hosted_cache_bytes = self.by_source.hosted_cache,
            origin_bytes = self.by_source.origin,
            duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            "proxy request"
        );
        self.metrics
            .activity
            .record_request(crate::activity::RecentRequest {
                finished_unix_ms: crate::activity::unix_ms_now(),
                method: method_name(&self.method),
                target: std::mem::take(&mut self.target),
                outcome: outcome.as_str().into(),
                bytes: self.by_source,
                duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            });
    }
}

/// A method's name for the recent-requests ring: borrowed for the standard
/// methods, an owned copy (at most 16 characters) for extension methods.
fn method_name(m: &Method) -> std::borrow::Cow<'static, str> {
    use std::borrow::Cow::Borrowed;
    match m.as_str() {
        "GET" => Borrowed("GET"),
        "HEAD" => Borrowed("HEAD"),
        "POST" => Borrowed("POST"),
        "PUT" => Borrowed("PUT"),
        "DELETE" => Borrowed("DELETE"),
        "OPTIONS" => Borrowed("OPTIONS"),
        "CONNECT" => Borrowed("CONNECT"),
        "PATCH" => Borrowed("PATCH"),
        "TRACE" => Borrowed("TRACE"),
        other => other.chars().take(16).collect::<String>().into(),
    }
}

/// An origin body streamed through unchanged.
struct PassBody {
    inner: OriginBody,
    guard: Guard,
}

impl HttpBody for PassBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.guard.served(SourceKind::Origin, data.len());
                    this.guard
                        .metrics
                        .proxy_wan_bytes
                        .get_or_create(&[("kind", "passthrough")])
                        .inc_by(data.len() as u64);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                // Broken, or silent for `body_idle_timeout`: the response is
                // cut off.
                this.guard.failed = true;
                let kind = if e.kind() == std::io::ErrorKind::TimedOut {
                    "timeout"
                } else {
                    "body"
                };
                this.guard
                    .metrics
                    .proxy_origin_errors
                    .get_or_create(&[("kind", kind)])
                    .inc();
                tracing::warn!(peer = %this.guard.peer, error = %e, "origin body failed; pass-through cut off");
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body rebuilt from verified blocks.
struct PlannedBody {
    first: Option<BodyChunk>,
    // Mutex only to make the body `Sync` (hyper's boxed body requires it);
    // accessed through `get_mut`, never locked.
    rest: std::sync::Mutex<BoxStream<'static, Result<BodyChunk, FetchError>>>,
    remaining: u64,
    guard: Guard,
}

impl PlannedBody {
    fn emit(&mut self, chunk: BodyChunk) -> Frame<Bytes> {
        self.guard.served(chunk.source, chunk.data.len());
        self.remaining = self.remaining.saturating_sub(chunk.data.len() as u64);
        Frame::data(chunk.data)
    }
}

impl HttpBody for PlannedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        if let Some(chunk) = this.first.take() {
            return Poll::Ready(Some(Ok(this.emit(chunk))));
        }
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let rest = this.rest.get_mut().unwrap_or_else(|e| e.into_inner());
        match rest.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(chunk))) => Poll::Ready(Some(Ok(this.emit(chunk)))),
            Poll::Ready(Some(Err(e))) => {
                this.guard.body_failed(&e);
                Poll::Ready(Some(Err(std::io::Error::other(e))))
            }
            Poll::Ready(None) => {
                if this.remaining > 0 {
                    this.guard.failed = true;
                    return Poll::Ready(Some(Err(std::io::Error::other(
                        "segment stream ended before the announced length",
                    ))));
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
