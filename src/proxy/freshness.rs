//! HTTP freshness for content information (RFC 9111), as a shared cache.
//!
//! Per URL the proxy remembers what a peerdist answer told it: the segment
//! plans (block hashes), the object length and the response headers with
//! their validators. While such an entry is *fresh* a request is answered
//! without contacting the origin (the blocks come from the store); once
//! *stale* it is revalidated with `If-None-Match` / `If-Modified-Since` and
//! reused on `304`.
//!
//! Policy (conservative, like nginx `proxy_cache` without
//! `proxy_cache_valid`):
//! - lifetime: `s-maxage`, else `max-age`, else `Expires` − `Date`; no
//!   heuristic freshness, so an answer without one is stored (when it has a
//!   validator) but revalidated on every request;
//! - not stored: `no-store`, `private`, `Vary` naming anything but
//!   `Accept-Encoding` (or `*`), request `no-store`, requests with
//!   `Authorization` unless `public` / `s-maxage` / `must-revalidate`
//!   (RFC 9111 §3.5), answers with neither a lifetime nor a validator;
//! - always revalidated: response `no-cache`, request `no-cache` (or
//!   `Pragma: no-cache`), request `max-age` below the entry's age;
//! - age: RFC 9111 §4.2.3 (`Age`, `Date`, request and response times).
//!
//! [`FreshnessCache`] is an LRU bounded by entries and by estimated bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::fetch::SegmentPlan;
use crate::lru::{LruOrder, Stamp, Stamped};

/// Cache-Control directives the proxy acts on (response or request).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Directives {
    /// `no-store`.
    pub no_store: bool,
    /// `no-cache` (also request `Pragma: no-cache` without `Cache-Control`).
    pub no_cache: bool,
    /// `private`.
    pub private: bool,
    /// `public`.
    pub public: bool,
    /// `must-revalidate` or `proxy-revalidate`.
    pub must_revalidate: bool,
    /// `max-age=N` in seconds (a malformed value counts as 0).
    pub max_age: Option<u64>,
    /// `s-maxage=N` in seconds (a malformed value counts as 0).
    pub s_maxage: Option<u64>,
}

impl Directives {
    /// Parse every `Cache-Control` line of `headers` (tokens are
    /// case-insensitive; unknown ones ignored; for a repeated directive the
    /// most restrictive value wins).
    pub fn parse(headers: &HeaderMap) -> Directives {
        let mut d = Directives::default();
        let mut seen = false;
        for item in headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
        {
            seen = true;
            let (name, value) = match item.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (item.trim(), None),
            };
            let secs = || value.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            let min = |old: Option<u64>, new: u64| Some(old.map_or(new, |o| o.min(new)));
            match name.to_ascii_lowercase().as_str() {
                "no-store" => d.no_store = true,
                // `no-cache="field"` restricts fields only; treat it like
                // plain `no-cache` (conservative).
                "no-cache" => d.no_cache = true,
                "private" => d.private = true,
                "public" => d.public = true,
                "must-revalidate" | "proxy-revalidate" => d.must_revalidate = true,
                "max-age" => d.max_age = min(d.max_age, secs()),
                "s-maxage" => d.s_maxage = min(d.s_maxage, secs()),
                _ => {}
            }
        }
        if !seen
            && headers
                .get_all(header::PRAGMA)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| {
                    v.split(',')
                        .any(|t| t.trim().eq_ignore_ascii_case("no-cache"))
                })
        {
            d.no_cache = true;
        }
        d
    }
}

/// Why a peerdist answer is not remembered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uncacheable {
    /// Response or request `no-store`.
    NoStore,
    /// Response `private` (the proxy is a shared cache).
    Private,
    /// `Vary` names a field other than `Accept-Encoding`.
    Vary,
    /// The request carried `Authorization` and the answer does not allow sharing.
    Authorization,
    /// Neither a freshness lifetime nor a validator: nothing to gain.
    Useless,
}

/// Whether `Vary` lists only `Accept-Encoding` (which the proxy always sets
/// itself toward the origin) or nothing.
fn vary_ok(resp: &HeaderMap) -> bool {
    resp.get_all(header::VARY).iter().all(|v| match v.to_str() {
        Ok(v) => v
            .split(',')
            .map(str::trim)
            .all(|t| t.is_empty() || t.eq_ignore_ascii_case("accept-encoding")),
        Err(_) => false,
    })
}

/// The validators of a response: a strong `ETag` and `Last-Modified`.
fn validators(resp: &HeaderMap) -> (Option<HeaderValue>, Option<HeaderValue>) {
    let etag = resp
        .get(header::ETAG)
        .filter(|v| !v.as_bytes().starts_with(b"W/"))
        .cloned();
    (etag, resp.get(header::LAST_MODIFIED).cloned())
}

fn http_date(headers: &HeaderMap, name: &HeaderName) -> Option<SystemTime> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
}

/// Freshness lifetime of a response (RFC 9111 §4.2.1), without heuristics.
pub fn freshness_lifetime(resp: &HeaderMap, response_time: SystemTime) -> Duration {
    let d = Directives::parse(resp);
    if d.no_cache {
        return Duration::ZERO;
    }
    if let Some(s) = d.s_maxage.or(d.max_age) {
        return Duration::from_secs(s);
    }
    if resp.contains_key(header::EXPIRES) {
        // An invalid Expires (e.g. "0") means already expired.
        let Some(expires) = http_date(resp, &header::EXPIRES) else {
            return Duration::ZERO;
        };
        let date = http_date(resp, &header::DATE).unwrap_or(response_time);
        return expires.duration_since(date).unwrap_or(Duration::ZERO);
    }
    Duration::ZERO
}

/// Age of a response when it arrived (RFC 9111 §4.2.3 `corrected_initial_age`).
pub fn initial_age(
    resp: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Duration {
    let age_value = resp
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    let apparent = http_date(resp, &header::DATE)
        .and_then(|date| response_time.duration_since(date).ok())
        .unwrap_or(Duration::ZERO);
    let delay = response_time
        .duration_since(request_time)
        .unwrap_or(Duration::ZERO);
    apparent.max(age_value + delay)
}

/// Whether a peerdist answer with headers `resp` to a request with headers
/// `req` may be stored.
pub fn storable(req: &HeaderMap, resp: &HeaderMap) -> Result<(), Uncacheable> {
    let r = Directives::parse(resp);
    let q = Directives::parse(req);
    if r.no_store || q.no_store {
        return Err(Uncacheable::NoStore);
    }
    if r.private {
        return Err(Uncacheable::Private);
    }
    if !vary_ok(resp) {
        return Err(Uncacheable::Vary);
    }
    if req.contains_key(header::AUTHORIZATION)
        && !(r.public || r.s_maxage.is_some() || r.must_revalidate)
    {
        return Err(Uncacheable::Authorization);
    }
    let (etag, lm) = validators(resp);
    let has_lifetime = r.s_maxage.or(r.max_age).is_some_and(|s| s > 0)
        || (!r.no_cache && resp.contains_key(header::EXPIRES));
    if etag.is_none() && lm.is_none() && !has_lifetime {
        return Err(Uncacheable::Useless);
    }
    Ok(())
}

/// What the proxy remembers about one URL.
#[derive(Debug)]
pub struct Entry {
    /// Segment plans of the object, in order.
    pub segments: Arc<[Arc<SegmentPlan>]>,
    /// Identity length of the object.
    pub total: u64,
    /// The peerdist answer's headers (hop-by-hop removed), freshened by 304s.
    pub headers: HeaderMap,
    lifetime: Duration,
    initial_age: Duration,
    response_time: SystemTime,
    /// The head of the whole object's identity answer, derived from
    /// `headers` once, on first use ([`Entry::whole_answer_head`]).
    whole: std::sync::OnceLock<crate::net::direct::CachedHead>,
}

/// Response headers a `304` does not update (RFC 9111 §3.2: framing and
/// the content coding stay those of the stored answer).
const NOT_FRESHENED: [HeaderName; 4] = [
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::CONTENT_RANGE,
    header::TRANSFER_ENCODING,
];

impl Entry {
    /// An entry for a peerdist answer received at `response_time` to a
    /// request sent at `request_time`.
    pub fn new(
        segments: Arc<[Arc<SegmentPlan>]>,
        total: u64,
        headers: HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
    ) -> Entry {
        Entry {
            lifetime: freshness_lifetime(&headers, response_time),
            initial_age: initial_age(&headers, request_time, response_time),
            response_time,
            segments,
            total,
            headers,
            whole: std::sync::OnceLock::new(),
        }
    }

    /// The head of the whole object's identity answer: `make(headers)`,
    /// computed once per entry (a 304 that freshens it makes a new entry).
    pub fn whole_answer_head(
        &self,
        make: impl FnOnce(&HeaderMap) -> crate::net::direct::CachedHead,
    ) -> &crate::net::direct::CachedHead {
        self.whole.get_or_init(|| make(&self.headers))
    }

    /// The entry after a `304` with headers `not_modified` (RFC 9111 §4.3.4):
    /// stored headers replaced by those in the 304, age and lifetime anew.
    pub fn freshened(
        &self,
        not_modified: &HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
    ) -> Entry {
        let mut headers = self.headers.clone();
        for name in not_modified.keys() {
            if NOT_FRESHENED.contains(name) {
                continue;
            }
            headers.remove(name);
            for v in not_modified.get_all(name) {
                headers.append(name.clone(), v.clone());
            }
        }
        // An Age from the stored answer does not describe the 304.
        if !not_modified.contains_key(header::AGE) {
            headers.remove(header::AGE);
        }
        Entry::new(
            self.segments.clone(),
            self.total,
            headers,
            request_time,
            response_time,
        )
    }

    /// Current age (RFC 9111 §4.2.3).
    pub fn age(&self, now: SystemTime) -> Duration {
        self.initial_age
            + now
                .duration_since(self.response_time)
                .unwrap_or(Duration::ZERO)
    }

    /// Whether the entry may answer a request with headers `req` at `now`
    /// without contacting the origin.
    pub fn is_fresh(&self, req: &HeaderMap, now: SystemTime) -> bool {
        let q = Directives::parse(req);
        if q.no_cache {
            return false;
        }
        let age = self.age(now);
        if q.max_age.is_some_and(|m| age > Duration::from_secs(m)) {
            return false;
        }
        age < self.lifetime
    }

    /// `If-None-Match` / `If-Modified-Since` for revalidating this entry.
    pub fn conditional_headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        let (etag, lm) = validators(&self.headers);
        let mut out = Vec::new();
        if let Some(e) = etag {
            out.push((header::IF_NONE_MATCH, e));
        }
        if let Some(l) = lm {
            out.push((header::IF_MODIFIED_SINCE, l));
        }
        out
    }

    /// Whether a client's own conditional request (`If-None-Match`, else
    /// `If-Modified-Since`; RFC 9110 §13.2.2) is answered `304` by this entry.
    pub fn not_modified_for(&self, req: &HeaderMap) -> bool {
        let inm: Vec<&str> = req
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect();
        if !inm.is_empty() {
            // Weak comparison (RFC 9110 §8.8.3.2).
            let weak = |t: &str| t.strip_prefix("W/").unwrap_or(t).to_string();
            let Some(ours) = self.headers.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
                return false;
            };
            let ours = weak(ours);
            return inm.iter().any(|t| *t == "*" || weak(t) == ours);
        }
        // The request's date first: most requests carry none, and then the
        // entry's Last-Modified need not be parsed.
        let Some(since) = http_date(req, &header::IF_MODIFIED_SINCE) else {
            return false;
        };
        http_date(&self.headers, &header::LAST_MODIFIED).is_some_and(|lm| lm <= since)
    }

    /// Estimated memory held by the entry (plans, hashes, headers).
    pub fn cost(&self) -> u64 {
        let plans: usize = self
            .segments
            .iter()
            .map(|s| {
                std::mem::size_of::<SegmentPlan>()
                    + s.block_hashes.len() * std::mem::size_of::<crate::proto::pccrc::Digest>()
                    + 64
            })
            .sum();
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 64)
            .sum();
        // Twice: the derived whole-answer headers are about the same size.
        (plans + 2 * headers + 256) as u64
    }
}

/// LRU of [`Entry`]s by URL, bounded by entries and estimated bytes.
#[derive(Debug)]
pub struct FreshnessCache {
    max_entries: usize,
    max_bytes: u64,
    inner: Mutex<Lru>,
}

#[derive(Debug, Default)]
struct Lru {
    map: HashMap<String, Slot>,
    order: LruOrder<String>,
    bytes: u64,
}

#[derive(Debug)]
struct Slot {
    entry: Arc<Entry>,
    stamp: Stamp,
}

impl Stamped for Slot {
    fn stamp_mut(&mut self) -> &mut Stamp {
        &mut self.stamp
    }
}

impl Lru {
    fn remove(&mut self, key: &str) -> Option<Arc<Entry>> {
        let slot = self.map.remove(key)?;
        self.order.remove(&slot.stamp);
        self.bytes = self
            .bytes
            .saturating_sub(slot.entry.cost() + key.len() as u64);
        Some(slot.entry)
    }
}

impl FreshnessCache {
    /// An empty cache holding at most `max_entries` entries and about
    /// `max_bytes` bytes.
    pub fn new(max_entries: usize, max_bytes: u64) -> FreshnessCache {
        FreshnessCache {
            max_entries: max_entries.max(1),
            max_bytes,
            inner: Mutex::new(Lru::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entry for `key`, marked most recently used (no allocation, no
    /// tree operation: [`crate::lru`]).
    pub fn get(&self, key: &str) -> Option<Arc<Entry>> {
        let mut guard = self.lock();
        let lru = &mut *guard;
        let slot = lru.map.get_mut(key)?;
        lru.order.touch(&mut slot.stamp);
        Some(slot.entry.clone())
    }

    /// Remember `entry` for `key` (replacing any older one), evicting least
    /// recently used entries over the bounds. An entry larger than the byte
    /// bound is not kept.
    pub fn insert(&self, key: &str, entry: Arc<Entry>) {
        let cost = entry.cost() + key.len() as u64;
        let mut lru = self.lock();
        lru.remove(key);
        if cost > self.max_bytes {
            return;
        }
        while lru.map.len() >= self.max_entries || lru.bytes + cost > self.max_bytes {
            let l = &mut *lru;
            let Some(victim) = l.order.pop_lru(&mut l.map) else {
                break;
            };
            lru.remove(&victim);
        }
        let stamp = lru.order.insert(key.to_string());
        lru.map.insert(key.to_string(), Slot { entry, stamp });
        lru.bytes += cost;
    }

    /// Forget `key`.
    pub fn remove(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn date(secs: u64) -> String {
        httpdate::fmt_http_date(at(secs))
    }

    fn entry(resp: HeaderMap, req_t: u64, resp_t: u64) -> Entry {
        Entry::new(Arc::from(Vec::new()), 0, resp, at(req_t), at(resp_t))
    }

    #[test]
    fn directives_parse_case_insensitively_and_keep_the_smallest_age() {
        let d = Directives::parse(&h(&[
            ("cache-control", "Public, MAX-AGE=600"),
            (
                "cache-control",
                "max-age=60, s-maxage=\"30\", proxy-revalidate",
            ),
        ]));
        assert!(d.public && d.must_revalidate && !d.no_store);
        assert_eq!(d.max_age, Some(60));
        assert_eq!(d.s_maxage, Some(30));
        assert_eq!(
            Directives::parse(&h(&[("cache-control", "max-age=x")])).max_age,
            Some(0)
        );
        assert!(Directives::parse(&h(&[("pragma", "no-cache")])).no_cache);
        assert!(
            !Directives::parse(&h(&[
                ("pragma", "no-cache"),
                ("cache-control", "max-age=5")
            ]))
            .no_cache
        );
    }

    #[test]
    fn lifetime_prefers_s_maxage_then_max_age_then_expires() {
        let t = at(0);
        let both = h(&[("cache-control", "max-age=100, s-maxage=7")]);
        assert_eq!(freshness_lifetime(&both, t), Duration::from_secs(7));
        let ma = h(&[("cache-control", "max-age=100"), ("expires", &date(5))]);
        assert_eq!(freshness_lifetime(&ma, t), Duration::from_secs(100));
        let exp = h(&[("date", &date(0)), ("expires", &date(300))]);
        assert_eq!(freshness_lifetime(&exp, t), Duration::from_secs(300));
        let bad = h(&[("expires", "0")]);
        assert_eq!(freshness_lifetime(&bad, t), Duration::ZERO);
        let nc = h(&[("cache-control", "no-cache, max-age=100")]);
        assert_eq!(freshness_lifetime(&nc, t), Duration::ZERO);
        assert_eq!(
            freshness_lifetime(&h(&[("etag", "\"a\"")]), t),
            Duration::ZERO
        );
    }

    #[test]
    fn age_counts_the_age_header_the_delay_and_the_date() {
        // Origin said Age 10; the round trip took 2 s.
        let r = h(&[("age", "10"), ("date", &date(1))]);
        assert_eq!(initial_age(&r, at(0), at(2)), Duration::from_secs(12));
        // A Date far in the past makes the apparent age win.
        let r = h(&[("date", &date(0))]);
        assert_eq!(initial_age(&r, at(99), at(100)), Duration::from_secs(100));
    }

    #[test]
    fn freshness_follows_lifetime_age_and_request_directives() {
        let e = entry(
            h(&[("cache-control", "max-age=60"), ("date", &date(0))]),
            0,
            0,
        );
        let none = HeaderMap::new();
        assert!(e.is_fresh(&none, at(59)));
        assert!(!e.is_fresh(&none, at(60)));
        assert!(!e.is_fresh(&h(&[("cache-control", "no-cache")]), at(1)));
        assert!(!e.is_fresh(&h(&[("pragma", "no-cache")]), at(1)));
        assert!(!e.is_fresh(&h(&[("cache-control", "max-age=0")]), at(1)));
        assert!(e.is_fresh(&h(&[("cache-control", "max-age=30")]), at(20)));
        assert_eq!(e.age(at(20)), Duration::from_secs(20));
    }

    #[test]
    fn storable_rules() {
        let req = HeaderMap::new();
        let ok = h(&[("cache-control", "max-age=60"), ("vary", "Accept-Encoding")]);
        assert_eq!(storable(&req, &ok), Ok(()));
        assert_eq!(
            storable(
                &req,
                &h(&[("cache-control", "no-store"), ("etag", "\"a\"")])
            ),
            Err(Uncacheable::NoStore)
        );
        assert_eq!(
            storable(&h(&[("cache-control", "no-store")]), &ok),
            Err(Uncacheable::NoStore)
        );
        assert_eq!(
            storable(&req, &h(&[("cache-control", "private, max-age=9")])),
            Err(Uncacheable::Private)
        );
        assert_eq!(
            storable(
                &req,
                &h(&[("cache-control", "max-age=9"), ("vary", "Cookie")])
            ),
            Err(Uncacheable::Vary)
        );
        assert_eq!(
            storable(&req, &h(&[("cache-control", "max-age=9"), ("vary", "*")])),
            Err(Uncacheable::Vary)
        );
        let auth = h(&[("authorization", "Bearer x")]);
        assert_eq!(storable(&auth, &ok), Err(Uncacheable::Authorization));
        assert_eq!(
            storable(&auth, &h(&[("cache-control", "public, max-age=9")])),
            Ok(())
        );
        assert_eq!(storable(&req, &HeaderMap::new()), Err(Uncacheable::Useless));
        // no-cache with a validator: stored, revalidated every time.
        assert_eq!(
            storable(
                &req,
                &h(&[("cache-control", "no-cache"), ("etag", "\"a\"")])
            ),
            Ok(())
        );
    }

    #[test]
    fn freshening_takes_the_304s_headers_but_not_its_framing() {
        let e = entry(
            h(&[
                ("cache-control", "max-age=1"),
                ("etag", "\"a\""),
                ("content-length", "123"),
                ("x-keep", "1"),
            ]),
            0,
            0,
        );
        let nm = h(&[("cache-control", "max-age=600"), ("content-length", "0")]);
        let f = e.freshened(&nm, at(10), at(10));
        assert_eq!(f.headers["cache-control"], "max-age=600");
        assert_eq!(f.headers["content-length"], "123");
        assert_eq!(f.headers["x-keep"], "1");
        assert!(f.is_fresh(&HeaderMap::new(), at(500)));
        assert_eq!(
            e.conditional_headers(),
            vec![(header::IF_NONE_MATCH, HeaderValue::from_static("\"a\""))]
        );
    }

    #[test]
    fn client_conditionals_are_answered_from_the_entry() {
        let e = entry(h(&[("etag", "\"v2\""), ("last-modified", &date(0))]), 0, 0);
        assert!(e.not_modified_for(&h(&[("if-none-match", "\"x\", W/\"v2\"")])));
        assert!(e.not_modified_for(&h(&[("if-none-match", "*")])));
        assert!(!e.not_modified_for(&h(&[("if-none-match", "\"x\"")])));
        // If-None-Match wins over If-Modified-Since.
        assert!(!e.not_modified_for(&h(&[
            ("if-none-match", "\"x\""),
            ("if-modified-since", &date(5))
        ])));
        assert!(e.not_modified_for(&h(&[("if-modified-since", &date(5))])));
        let later = entry(h(&[("last-modified", &date(10))]), 0, 0);
        assert!(!later.not_modified_for(&h(&[("if-modified-since", &date(5))])));
        assert!(!later.not_modified_for(&HeaderMap::new()));
    }

    #[test]
    fn lru_is_bounded_by_entries_and_bytes() {
        let c = FreshnessCache::new(2, 1 << 20);
        let mk = || Arc::new(entry(h(&[("etag", "\"a\"")]), 0, 0));
        c.insert("a", mk());
        c.insert("b", mk());
        assert!(c.get("a").is_some()); // a is now the most recent
        c.insert("c", mk());
        assert!(c.get("b").is_none(), "least recently used goes first");
        assert!(c.get("a").is_some() && c.get("c").is_some());
        assert_eq!(c.len(), 2);
        c.remove("a");
        assert_eq!(c.len(), 1);
        let one = mk().cost() + 1;
        let small = FreshnessCache::new(100, 2 * one + 1);
        for k in ["x", "y", "z"] {
            small.insert(k, mk());
        }
        assert_eq!(small.len(), 2);
        assert!(small.get("x").is_none());
        let tiny = FreshnessCache::new(100, 10);
        tiny.insert("x", mk());
        assert!(tiny.is_empty(), "an entry over the byte bound is not kept");
    }

    #[test]
    fn eviction_is_exact_lru_over_gets_and_replacements() {
        let c = FreshnessCache::new(6, 1 << 20);
        let mk = || Arc::new(entry(h(&[("etag", "\"a\"")]), 0, 0));
        let keys = ["k0", "k1", "k2", "k3", "k4", "k5"];
        for k in keys {
            c.insert(k, mk());
        }
        for k in ["k2", "k0", "k4", "k3", "k5", "k2"] {
            assert!(c.get(k).is_some());
        }
        c.insert("k0", mk());
        for k in ["k5", "k3", "k2"] {
            assert!(c.get(k).is_some());
        }
        // Last uses, oldest first: k1, k4, k0 (its replacement), k5, k3, k2.
        assert_eq!(c.len(), 6);
        for (new, gone) in [("n0", "k1"), ("n1", "k4"), ("n2", "k0")] {
            c.insert(new, mk());
            assert_eq!(c.len(), 6);
            assert!(!c.lock().map.contains_key(gone), "{gone} evicted for {new}");
        }
        for k in ["k5", "k3", "k2", "n0", "n1", "n2"] {
            assert!(c.get(k).is_some(), "{k} kept");
        }
    }
}
