//! Bounded in-memory activity for `/status` and the status page: body bytes
//! served by source per minute over the last hour, and the most recent proxy
//! requests with where their bytes came from.
//!
//! Both rings are fixed-size ([`HISTORY_MINUTES`], [`RECENT_REQUESTS`]) and
//! live in [`Metrics`](crate::metrics::Metrics) so every role that counts
//! served bytes records activity without extra wiring. Nothing here is
//! persisted: a restart starts an empty hour.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::fetch::SourceKind;

/// Minutes of per-minute byte samples kept (the status page charts the last hour).
pub const HISTORY_MINUTES: usize = 60;
/// Most recent proxy requests kept for the status page.
pub const RECENT_REQUESTS: usize = 50;
/// Longest request target kept in the recent-requests ring (longer ones are cut).
pub const MAX_TARGET_LEN: usize = 200;
/// Length of one history sample.
const MINUTE_SECS: u64 = 60;

/// Bytes by source: where served body bytes came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceBytes {
    /// The local block store.
    pub store: u64,
    /// Peers (MS-PCCRR).
    pub peer: u64,
    /// The hosted cache.
    pub hosted_cache: u64,
    /// The origin, over the WAN.
    pub origin: u64,
}

impl SourceBytes {
    /// Add `n` bytes to `source`.
    pub fn add(&mut self, source: SourceKind, n: u64) {
        let slot = match source {
            SourceKind::Store => &mut self.store,
            SourceKind::Peer => &mut self.peer,
            SourceKind::HostedCache => &mut self.hosted_cache,
            SourceKind::Origin => &mut self.origin,
        };
        *slot = slot.saturating_add(n);
    }

    /// Sum over every source.
    pub fn total(&self) -> u64 {
        self.store
            .saturating_add(self.peer)
            .saturating_add(self.hosted_cache)
            .saturating_add(self.origin)
    }

    /// Bytes that did not come from the origin.
    pub fn local(&self) -> u64 {
        self.total().saturating_sub(self.origin)
    }
}

/// One minute of the history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinuteSample {
    /// How many whole minutes before the current one (0 = the minute in progress).
    pub minutes_ago: u32,
    /// Bytes served in that minute, by source.
    pub bytes: SourceBytes,
}

/// One finished proxy request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentRequest {
    /// When it finished, milliseconds since the Unix epoch.
    pub finished_unix_ms: u64,
    /// HTTP method (borrowed for the standard ones: no allocation per request).
    pub method: Cow<'static, str>,
    /// Target without query string (queries may carry tokens), at most
    /// [`MAX_TARGET_LEN`] bytes.
    pub target: String,
    /// Cache outcome (`hit`, `partial`, `miss`, `bypass`, `error`).
    pub outcome: Cow<'static, str>,
    /// Body bytes sent to the client, by source.
    pub bytes: SourceBytes,
    /// Time from request to end of body, milliseconds.
    pub duration_ms: u64,
}

/// The two bounded rings. Cheap to record into (one short mutex hold).
#[derive(Debug)]
pub struct Activity {
    origin: Instant,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// (minute number since `origin`, bytes), oldest first, at most HISTORY_MINUTES.
    minutes: VecDeque<(u64, SourceBytes)>,
    /// Newest last, at most RECENT_REQUESTS.
    recent: VecDeque<RecentRequest>,
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl Activity {
    /// Empty rings; minute boundaries count from now.
    pub fn new() -> Self {
        Activity {
            origin: Instant::now(),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn minute_of(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_secs() / MINUTE_SECS
    }

    /// Count `n` bytes served from `source` now.
    pub fn record_bytes(&self, source: SourceKind, n: u64) {
        self.record_bytes_at(Instant::now(), source, n);
    }

    /// Count `n` bytes served from `source` at `at`.
    pub fn record_bytes_at(&self, at: Instant, source: SourceKind, n: u64) {
        let minute = self.minute_of(at);
        let mut inner = self.lock();
        match inner.minutes.back_mut() {
            Some((m, bytes)) if *m == minute => bytes.add(source, n),
            // A late record for a minute already closed: count it in the newest.
            Some((m, bytes)) if *m > minute => bytes.add(source, n),
            _ => {
                let mut bytes = SourceBytes::default();
                bytes.add(source, n);
                inner.minutes.push_back((minute, bytes));
                while inner.minutes.len() > HISTORY_MINUTES {
                    inner.minutes.pop_front();
                }
            }
        }
    }

    /// The last hour as exactly [`HISTORY_MINUTES`] samples, oldest first,
    /// minutes without traffic as zeros.
    pub fn history(&self) -> Vec<MinuteSample> {
        self.history_at(Instant::now())
    }

    /// [`history`](Self::history) as seen at `at`.
    pub fn history_at(&self, at: Instant) -> Vec<MinuteSample> {
        let now = self.minute_of(at);
        let mut out: Vec<MinuteSample> = (0..HISTORY_MINUTES as u32)
            .rev()
            .map(|ago| MinuteSample {
                minutes_ago: ago,
                bytes: SourceBytes::default(),
            })
            .collect();
        for (m, bytes) in &self.lock().minutes {
            let Some(ago) = now.checked_sub(*m) else {
                continue;
            };
            let Ok(ago) = usize::try_from(ago) else {
                continue;
            };
            if ago < HISTORY_MINUTES {
                out[HISTORY_MINUTES - 1 - ago].bytes = *bytes;
            }
        }
        out
    }

    /// Remember a finished request (the oldest is dropped past [`RECENT_REQUESTS`]).
    pub fn record_request(&self, req: RecentRequest) {
        let mut inner = self.lock();
        inner.recent.push_back(req);
        while inner.recent.len() > RECENT_REQUESTS {
            inner.recent.pop_front();
        }
    }

    /// Recent requests, newest first.
    pub fn recent(&self) -> Vec<RecentRequest> {
        self.lock().recent.iter().rev().cloned().collect()
    }
}

/// A request target fit for display: scheme, authority and path only (a
/// query may carry credentials or signed tokens), cut to [`MAX_TARGET_LEN`].
pub fn display_target(uri: &http::Uri) -> String {
    let mut s = String::new();
    if let Some(scheme) = uri.scheme_str() {
        s.push_str(scheme);
        s.push_str("://");
    }
    if let Some(auth) = uri.authority() {
        // Drop `user:password@`.
        let host = auth.as_str().rsplit('@').next().unwrap_or("");
        s.push_str(host);
    }
    if uri.path_and_query().is_some() {
        s.push_str(uri.path());
    }
    if s.len() > MAX_TARGET_LEN {
        let mut cut = MAX_TARGET_LEN;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn history_buckets_by_minute_and_keeps_one_hour() {
        let a = Activity::new();
        let t0 = a.origin;
        a.record_bytes_at(t0, SourceKind::Store, 10);
        a.record_bytes_at(t0 + Duration::from_secs(30), SourceKind::Origin, 5);
        a.record_bytes_at(t0 + Duration::from_secs(61), SourceKind::Peer, 7);
        let h = a.history_at(t0 + Duration::from_secs(61));
        assert_eq!(h.len(), HISTORY_MINUTES);
        assert_eq!(h[HISTORY_MINUTES - 1].minutes_ago, 0);
        assert_eq!(h[HISTORY_MINUTES - 1].bytes.peer, 7);
        assert_eq!(h[HISTORY_MINUTES - 2].minutes_ago, 1);
        assert_eq!(h[HISTORY_MINUTES - 2].bytes.store, 10);
        assert_eq!(h[HISTORY_MINUTES - 2].bytes.origin, 5);
        assert_eq!(h[0].minutes_ago, HISTORY_MINUTES as u32 - 1);

        // 90 minutes of traffic: the ring never holds more than an hour.
        for m in 0..90u64 {
            a.record_bytes_at(t0 + Duration::from_secs(m * 60), SourceKind::HostedCache, 1);
        }
        assert!(a.lock().minutes.len() <= HISTORY_MINUTES);
        let h = a.history_at(t0 + Duration::from_secs(89 * 60));
        let total: u64 = h.iter().map(|s| s.bytes.hosted_cache).sum();
        assert_eq!(total, HISTORY_MINUTES as u64);
        // An hour later everything has aged out.
        let h = a.history_at(t0 + Duration::from_secs(200 * 60));
        assert!(h.iter().all(|s| s.bytes.total() == 0));
    }

    #[test]
    fn recent_requests_are_bounded_and_newest_first() {
        let a = Activity::new();
        for i in 0..(RECENT_REQUESTS as u64 + 7) {
            a.record_request(RecentRequest {
                finished_unix_ms: i,
                method: "GET".into(),
                target: format!("/{i}"),
                outcome: "hit".into(),
                bytes: SourceBytes::default(),
                duration_ms: 0,
            });
        }
        let r = a.recent();
        assert_eq!(r.len(), RECENT_REQUESTS);
        assert_eq!(r[0].finished_unix_ms, RECENT_REQUESTS as u64 + 6);
        assert_eq!(r[RECENT_REQUESTS - 1].finished_unix_ms, 7);
    }

    #[test]
    fn display_target_drops_query_and_credentials_and_cuts() {
        let u: http::Uri = "http://user:pw@example.com:8080/a/b?token=secret"
            .parse()
            .unwrap();
        assert_eq!(display_target(&u), "http://example.com:8080/a/b");
        let u: http::Uri = "/files/x.iso?sig=abc".parse().unwrap();
        assert_eq!(display_target(&u), "/files/x.iso");
        let u: http::Uri = "example.com:443".parse().unwrap();
        assert_eq!(display_target(&u), "example.com:443");
        let long: http::Uri = format!("/{}", "a".repeat(300)).parse().unwrap();
        let t = display_target(&long);
        assert!(t.len() <= MAX_TARGET_LEN + '…'.len_utf8(), "{}", t.len());
    }

    #[test]
    fn source_bytes_sums() {
        let mut b = SourceBytes::default();
        b.add(SourceKind::Store, 3);
        b.add(SourceKind::Peer, 4);
        b.add(SourceKind::HostedCache, 5);
        b.add(SourceKind::Origin, 6);
        assert_eq!(b.total(), 18);
        assert_eq!(b.local(), 12);
    }
}
