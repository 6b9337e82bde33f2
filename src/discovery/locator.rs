//! [`DiscoveryLocator`]: discovery as the fetch planner's
//! [`PeerLocator`]. `peers(id)` answers from a short-lived per-segment cache,
//! joins a query already running for that segment, or starts one.
//!
//! A query returns as soon as it is useful rather than at its deadline: once
//! a peer has answered and [`LocatorOptions::settle`] has passed since the
//! query started (responders back off 1–65 ms, so most replies land by
//! then), the locator hands back what it has, complete holders first. A
//! query that finds nobody runs to the engine's (adaptive) deadline. Results,
//! empty ones included, are cached for a short time, in a table bounded by
//! [`LocatorOptions::capacity`]. Our own PCCRR addresses are never returned
//! (the engine already ignores replies bearing our endpoint; this also
//! covers a second process of ours on the same host answering with our address).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt, Shared};

use super::DiscoveryHandle;
use crate::proto::pccrc::SegmentId;
use crate::proto::pccrd::engine::{Holding, Peer, SegmentLookup};
use crate::proto::pccrd::messages::Availability;
use crate::proto::pccrd::Version;
use crate::retrieval::PeerLocator;

/// Tunables of [`DiscoveryLocator`].
#[derive(Debug, Clone)]
pub struct LocatorOptions {
    /// How long peers found for a segment are reused.
    pub ttl: Duration,
    /// How long "nobody has it" is reused (shorter: a neighbour may be
    /// fetching it right now).
    pub negative_ttl: Duration,
    /// Most segments remembered (running queries included).
    pub capacity: usize,
    /// How long after the Probe went out replies are collected, once at
    /// least one peer has answered (a later first reply is used at once).
    pub settle: Duration,
    /// Probe format. v1 is answered for every segment by every
    /// implementation (including for v2 content), so it is the default.
    pub version: Version,
}

impl Default for LocatorOptions {
    fn default() -> Self {
        LocatorOptions {
            ttl: Duration::from_secs(10),
            negative_ttl: Duration::from_secs(3),
            capacity: 4096,
            // The 65 ms largest responder back-off plus a LAN round trip and
            // scheduling slack.
            settle: Duration::from_millis(100),
            version: Version::V1,
        }
    }
}

type Pending = Shared<BoxFuture<'static, Arc<[SocketAddr]>>>;

enum Entry {
    Ready {
        peers: Arc<[SocketAddr]>,
        expires: Instant,
    },
    Pending(Pending),
}

#[derive(Default)]
struct Cache {
    entries: HashMap<SegmentId, Entry>,
}

impl Cache {
    /// Room for one more entry: drop expired results, then the result that
    /// expires first. False when every entry is a running query.
    fn make_room(&mut self, capacity: usize, now: Instant) -> bool {
        if self.entries.len() < capacity {
            return true;
        }
        self.entries
            .retain(|_, e| !matches!(e, Entry::Ready { expires, .. } if *expires <= now));
        if self.entries.len() < capacity {
            return true;
        }
        let oldest = self
            .entries
            .iter()
            .filter_map(|(id, e)| match e {
                Entry::Ready { expires, .. } => Some((*expires, *id)),
                Entry::Pending(_) => None,
            })
            .min();
        match oldest {
            Some((_, id)) => {
                self.entries.remove(&id);
                true
            }
            None => false,
        }
    }
}

/// Discovery as a [`PeerLocator`]. Cheap to share (`Arc`).
pub struct DiscoveryLocator<L> {
    handle: DiscoveryHandle<L>,
    own: Arc<[SocketAddr]>,
    options: LocatorOptions,
    cache: Arc<Mutex<Cache>>,
}

impl<L> std::fmt::Debug for DiscoveryLocator<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscoveryLocator")
            .field("own", &self.own)
            .field("options", &self.options)
            .field("cached", &lock(&self.cache).entries.len())
            .finish_non_exhaustive()
    }
}

fn lock(m: &Mutex<Cache>) -> MutexGuard<'_, Cache> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<L: SegmentLookup + Send + 'static> DiscoveryLocator<L> {
    /// A locator querying through `handle`; `own` are our PCCRR addresses
    /// (never returned as peers).
    pub fn new(handle: DiscoveryHandle<L>, own: Vec<SocketAddr>, options: LocatorOptions) -> Self {
        DiscoveryLocator {
            handle,
            own: own.into(),
            options: LocatorOptions {
                capacity: options.capacity.max(1),
                ..options
            },
            cache: Arc::new(Mutex::new(Cache::default())),
        }
    }

    /// Peers for `id` (cached, joined or freshly queried).
    pub async fn locate(&self, id: SegmentId) -> Arc<[SocketAddr]> {
        self.lookup(id).await
    }

    fn lookup(&self, id: SegmentId) -> BoxFuture<'static, Arc<[SocketAddr]>> {
        let now = Instant::now();
        let mut cache = lock(&self.cache);
        match cache.entries.get(&id) {
            Some(Entry::Ready { peers, expires }) if *expires > now => {
                let peers = peers.clone();
                return Box::pin(async move { peers });
            }
            Some(Entry::Pending(p)) => return p.clone().boxed(),
            _ => {}
        }
        // The query runs in its own task so it completes (and fills the
        // cache) even if every caller goes away; it ends at the query's
        // deadline at the latest, or when the driver stops.
        let task = tokio::spawn(run_query(
            self.handle.clone(),
            id,
            self.own.clone(),
            self.options.clone(),
            self.cache.clone(),
        ));
        let fut: Pending = async move { task.await.unwrap_or_else(|_| Arc::from([])) }
            .boxed()
            .shared();
        if cache.make_room(self.options.capacity, now) {
            cache.entries.insert(id, Entry::Pending(fut.clone()));
        }
        fut.boxed()
    }
}

impl<L: SegmentLookup + Send + 'static> PeerLocator for DiscoveryLocator<L> {
    fn peers(&self, id: &SegmentId) -> BoxFuture<'static, Vec<SocketAddr>> {
        let fut = self.lookup(*id);
        Box::pin(async move { fut.await.to_vec() })
    }
}

/// Run one query for `id` and record its result in `cache`.
async fn run_query<L: SegmentLookup + Send + 'static>(
    handle: DiscoveryHandle<L>,
    id: SegmentId,
    own: Arc<[SocketAddr]>,
    options: LocatorOptions,
    cache: Arc<Mutex<Cache>>,
) -> Arc<[SocketAddr]> {
    let Some(found) = collect_peers(&handle, id, &options).await else {
        // Not asked (engine busy, driver stopped): nothing learned, so
        // nothing cached; the next lookup tries again.
        let mut cache = lock(&cache);
        if matches!(cache.entries.get(&id), Some(Entry::Pending(_))) {
            cache.entries.remove(&id);
        }
        return Arc::from([]);
    };
    let peers: Arc<[SocketAddr]> = rank(found, &own).into();
    let ttl = if peers.is_empty() {
        options.negative_ttl
    } else {
        options.ttl
    };
    let mut cache = lock(&cache);
    // Replace our own Pending entry (only: it may have been evicted).
    if matches!(cache.entries.get(&id), Some(Entry::Pending(_))) {
        cache.entries.insert(
            id,
            Entry::Ready {
                peers: peers.clone(),
                expires: Instant::now() + ttl,
            },
        );
    }
    peers
}

/// The peers of one query: until one has answered and `settle` has passed,
/// or the query's end. `None` when the query could not run.
async fn collect_peers<L: SegmentLookup + Send + 'static>(
    handle: &DiscoveryHandle<L>,
    id: SegmentId,
    options: &LocatorOptions,
) -> Option<Vec<Peer>> {
    let started = tokio::time::Instant::now();
    let mut query = match handle.start_query(vec![id], options.version).await {
        Ok(q) => q,
        Err(e) => {
            tracing::debug!(segment = %id, error = %e, "discovery query not started");
            return None;
        }
    };
    let mut found = Vec::new();
    match query.next_peer().await {
        Some((_, peer)) => found.push(peer),
        // The query ended (or its event queue overflowed): the full
        // result has everything.
        None => {
            return query
                .finish()
                .await
                .ok()
                .map(|results| results.into_iter().flat_map(|r| r.peers).collect())
        }
    }
    let until = started + options.settle;
    loop {
        tokio::select! {
            next = query.next_peer() => match next {
                Some((_, peer)) => found.push(peer),
                None => {
                    if let Ok(results) = query.finish().await {
                        return Some(results.into_iter().flat_map(|r| r.peers).collect());
                    }
                    break;
                }
            },
            _ = tokio::time::sleep_until(until) => break,
        }
    }
    // Dropping the handle ends the query in the driver.
    Some(found)
}

/// Complete holders first, then by blocks held, then in reply order; our
/// own addresses removed; each address once.
fn rank(mut peers: Vec<Peer>, own: &[SocketAddr]) -> Vec<SocketAddr> {
    fn score(h: &Holding) -> u64 {
        match h {
            Holding::Availability(Availability::Full) => u64::MAX,
            Holding::Availability(_) => 0,
            Holding::Blocks(n) => u64::from(*n),
        }
    }
    // Stable: equal scores keep their arrival order.
    peers.sort_by_key(|p| std::cmp::Reverse(score(&p.holding)));
    let mut out: Vec<SocketAddr> = Vec::new();
    for addr in peers.into_iter().flat_map(|p| p.addrs) {
        if !own.contains(&addr) && !out.contains(&addr) {
            out.push(addr);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::pccrd::messages::Uri;

    fn peer(n: u8, holding: Holding) -> Peer {
        let addr = SocketAddr::from(([192, 0, 2, n], 8082));
        Peer {
            endpoint: Uri::new(&format!("urn:uuid:{n}")).unwrap(),
            addrs: vec![addr],
            source: addr,
            holding,
        }
    }

    fn a(n: u8) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, n], 8082))
    }

    #[test]
    fn rank_puts_complete_holders_first_and_drops_self_and_duplicates() {
        let peers = vec![
            peer(1, Holding::Blocks(3)),
            peer(2, Holding::Blocks(10)),
            peer(3, Holding::Availability(Availability::Partial)),
            peer(4, Holding::Availability(Availability::Full)),
            peer(5, Holding::Blocks(10)),
            peer(2, Holding::Blocks(10)),
        ];
        assert_eq!(rank(peers, &[a(5)]), vec![a(4), a(2), a(1), a(3)]);
    }

    fn ready(peers: &[SocketAddr], expires: Instant) -> Entry {
        Entry::Ready {
            peers: peers.into(),
            expires,
        }
    }

    fn seg(n: u8) -> SegmentId {
        SegmentId::from_slice(&[n; 32]).unwrap()
    }

    #[test]
    fn cache_evicts_expired_then_soonest_expiring_and_never_running_queries() {
        let now = Instant::now();
        let later = |s| now + Duration::from_secs(s);
        let mut c = Cache::default();
        c.entries.insert(seg(1), ready(&[a(1)], now)); // expired
        c.entries.insert(seg(2), ready(&[a(2)], later(5)));
        c.entries.insert(seg(3), ready(&[], later(2)));
        assert!(c.make_room(3, now));
        assert!(!c.entries.contains_key(&seg(1)));
        assert_eq!(c.entries.len(), 2);
        assert!(c.make_room(2, now));
        assert!(!c.entries.contains_key(&seg(3)), "soonest to expire goes");
        assert!(c.entries.contains_key(&seg(2)));

        let mut c = Cache::default();
        let pending: Pending = async { Arc::from([]) }.boxed().shared();
        c.entries.insert(seg(9), Entry::Pending(pending));
        assert!(!c.make_room(1, now), "a running query is never evicted");
        assert_eq!(c.entries.len(), 1);
    }
}
