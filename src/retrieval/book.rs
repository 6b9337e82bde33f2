//! The peer book: which MS-PCCRR peers and hosted caches this node has dealt
//! with, and how that went, for `/status`, `branchcache status` and the
//! status page ("peers seen", "hosted cache reachable").
//!
//! [`PeerSource`](super::PeerSource) records every exchange (a block
//! delivered, a block not held, a failure and the penalty it earned), the
//! daemon records the configured peers and hosted cache (and replaces them
//! on reload), and a probe task negotiates with the configured hosted cache
//! periodically so its reachability is known before the first miss.
//!
//! Bounded: at most [`MAX_DISCOVERED`] peers that were not configured are
//! kept; the one with the oldest activity makes room. Nothing is persisted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Most peers kept that are not in the configuration (found by discovery).
pub const MAX_DISCOVERED: usize = 256;

/// What a peer is to this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerRole {
    /// A PCCRR peer (fixed in `[proxy] peers`, or found by discovery).
    Peer,
    /// The hosted cache of `[upstream_hosted_cache]`.
    HostedCache,
}

impl PeerRole {
    /// Stable lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            PeerRole::Peer => "peer",
            PeerRole::HostedCache => "hosted_cache",
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    configured: bool,
    first_seen: Instant,
    last_ok: Option<Instant>,
    last_error: Option<(Instant, &'static str)>,
    blocks: u64,
    bytes: u64,
    failures: u64,
    penalised_until: Option<Instant>,
}

impl Entry {
    fn new(configured: bool, now: Instant) -> Entry {
        Entry {
            configured,
            first_seen: now,
            last_ok: None,
            last_error: None,
            blocks: 0,
            bytes: 0,
            failures: 0,
            penalised_until: None,
        }
    }

    fn last_activity(&self) -> Instant {
        let mut t = self.first_seen;
        if let Some(ok) = self.last_ok {
            t = t.max(ok);
        }
        if let Some((e, _)) = self.last_error {
            t = t.max(e);
        }
        t
    }
}

/// One peer as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// `IP:port` of its PCCRR listener.
    pub address: String,
    /// Peer or hosted cache.
    pub role: PeerRole,
    /// Named in the configuration (else found by discovery).
    pub configured: bool,
    /// Whether the last exchange succeeded; `None` before any exchange.
    pub reachable: Option<bool>,
    /// Seconds since the last successful exchange.
    pub last_ok_seconds_ago: Option<u64>,
    /// The kind of the last failure (`timeout`, `http`, `hash_mismatch` …).
    pub last_error: Option<String>,
    /// Seconds since that failure.
    pub last_error_seconds_ago: Option<u64>,
    /// Verified blocks received from it.
    pub blocks: u64,
    /// Bytes of those blocks.
    pub bytes: u64,
    /// Failed exchanges (timeouts, garbage, wrong blocks).
    pub failures: u64,
    /// Currently skipped after a failure.
    pub penalised: bool,
}

/// The peer book; shared through [`Metrics`](crate::metrics::Metrics).
#[derive(Debug, Default)]
pub struct PeerBook {
    entries: Mutex<HashMap<(PeerRole, SocketAddr), Entry>>,
}

impl PeerBook {
    /// An empty book.
    pub fn new() -> PeerBook {
        PeerBook::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(PeerRole, SocketAddr), Entry>> {
        // A panic elsewhere while holding the lock leaves plain counters:
        // still fine to read and update.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The configured peers of `role` are now exactly `addrs` (at start and
    /// on reload): others of that role lose their configured mark, and those
    /// never contacted are forgotten.
    pub fn configure(&self, role: PeerRole, addrs: &[SocketAddr]) {
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|(r, a), e| {
            if *r != role || addrs.contains(a) {
                return true;
            }
            e.configured = false;
            e.last_ok.is_some() || e.last_error.is_some()
        });
        for a in addrs {
            map.entry((role, *a))
                .or_insert_with(|| Entry::new(true, now))
                .configured = true;
        }
        Self::bound(&mut map);
    }

    /// `peer` was named by discovery as holding something we want.
    pub fn seen(&self, role: PeerRole, peer: SocketAddr) {
        self.update(role, peer, |_| {});
    }

    /// An exchange with `peer` succeeded; `bytes` of one verified block when
    /// it delivered one (`None`: it answered, e.g. a block list or "not held").
    pub fn success(&self, role: PeerRole, peer: SocketAddr, bytes: Option<u64>) {
        let now = Instant::now();
        self.update(role, peer, |e| {
            e.last_ok = Some(now);
            if let Some(n) = bytes {
                e.blocks += 1;
                e.bytes = e.bytes.saturating_add(n);
            }
        });
    }

    /// An exchange with `peer` failed (`what`: the error kind); `penalty`
    /// when it is now skipped for that long.
    pub fn failure(
        &self,
        role: PeerRole,
        peer: SocketAddr,
        what: &'static str,
        penalty: Option<Duration>,
    ) {
        let now = Instant::now();
        self.update(role, peer, |e| {
            e.last_error = Some((now, what));
            e.failures += 1;
            if let Some(p) = penalty {
                e.penalised_until = Some(now + p);
            }
        });
    }

    fn update(&self, role: PeerRole, peer: SocketAddr, f: impl FnOnce(&mut Entry)) {
        let now = Instant::now();
        let mut map = self.lock();
        let fresh = !map.contains_key(&(role, peer));
        f(map
            .entry((role, peer))
            .or_insert_with(|| Entry::new(false, now)));
        if fresh {
            Self::bound(&mut map);
        }
    }

    /// Drop the least recently active unconfigured entries beyond
    /// [`MAX_DISCOVERED`].
    fn bound(map: &mut HashMap<(PeerRole, SocketAddr), Entry>) {
        loop {
            let discovered = map.values().filter(|e| !e.configured).count();
            if discovered <= MAX_DISCOVERED {
                return;
            }
            let oldest = map
                .iter()
                .filter(|(_, e)| !e.configured)
                .min_by_key(|(_, e)| e.last_activity())
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => {
                    map.remove(&k);
                }
                None => return,
            }
        }
    }

    /// Every entry, configured first, then by address.
    pub fn snapshot(&self) -> Vec<PeerStatus> {
        let now = Instant::now();
        let ago = |t: Instant| now.saturating_duration_since(t).as_secs();
        let mut out: Vec<(bool, SocketAddr, PeerStatus)> = self
            .lock()
            .iter()
            .map(|((role, addr), e)| {
                let reachable = match (e.last_ok, e.last_error) {
                    (None, None) => None,
                    (Some(_), None) => Some(true),
                    (None, Some(_)) => Some(false),
                    (Some(ok), Some((err, _))) => Some(ok >= err),
                };
                let status = PeerStatus {
                    address: addr.to_string(),
                    role: *role,
                    configured: e.configured,
                    reachable,
                    last_ok_seconds_ago: e.last_ok.map(ago),
                    last_error: e.last_error.map(|(_, what)| what.to_string()),
                    last_error_seconds_ago: e.last_error.map(|(t, _)| ago(t)),
                    blocks: e.blocks,
                    bytes: e.bytes,
                    failures: e.failures,
                    penalised: e.penalised_until.is_some_and(|until| until > now),
                };
                (!e.configured, *addr, status)
            })
            .collect();
        out.sort_by_key(|a| (a.0, a.1));
        out.into_iter().map(|(_, _, s)| s).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn reachability_follows_the_latest_exchange() {
        let book = PeerBook::new();
        book.configure(PeerRole::HostedCache, &[addr(1)]);
        let s = book.snapshot();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].reachable, None);
        assert!(s[0].configured);

        book.failure(
            PeerRole::HostedCache,
            addr(1),
            "timeout",
            Some(Duration::from_secs(60)),
        );
        let s = &book.snapshot()[0];
        assert_eq!(s.reachable, Some(false));
        assert_eq!(s.last_error.as_deref(), Some("timeout"));
        assert!(s.penalised);
        assert_eq!(s.failures, 1);

        book.success(PeerRole::HostedCache, addr(1), Some(65536));
        let s = &book.snapshot()[0];
        assert_eq!(s.reachable, Some(true));
        assert_eq!((s.blocks, s.bytes), (1, 65536));
    }

    #[test]
    fn reconfiguring_forgets_untouched_peers_and_keeps_history() {
        let book = PeerBook::new();
        book.configure(PeerRole::Peer, &[addr(1), addr(2)]);
        book.success(PeerRole::Peer, addr(2), None);
        book.configure(PeerRole::Peer, &[addr(3)]);
        let s = book.snapshot();
        let names: Vec<(&str, bool)> = s
            .iter()
            .map(|p| (p.address.as_str(), p.configured))
            .collect();
        assert_eq!(names, vec![("127.0.0.1:3", true), ("127.0.0.1:2", false)]);
    }

    #[test]
    fn discovered_peers_are_bounded_and_configured_ones_stay() {
        let book = PeerBook::new();
        book.configure(PeerRole::Peer, &[addr(1)]);
        for port in 0..(MAX_DISCOVERED as u16 + 50) {
            book.seen(PeerRole::Peer, addr(1000 + port));
        }
        let s = book.snapshot();
        assert_eq!(s.iter().filter(|p| !p.configured).count(), MAX_DISCOVERED);
        assert!(s[0].configured && s[0].address == "127.0.0.1:1");
    }
}
