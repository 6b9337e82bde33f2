//! The sans-IO discovery engine: prober and responder in one state machine.
//!
//! Inputs are datagrams, the passage of time and commands; outputs are
//! datagrams to send and discovery events. The engine never sleeps, reads a
//! clock or draws random numbers itself: time is a [`Duration`] since an epoch
//! the driver chooses (monotonic), randomness comes from an [`Entropy`] the
//! caller supplies, and what this host holds comes from a [`SegmentLookup`].
//!
//! ```text
//! driver ── start_query / handle_datagram / handle_timeout ──▶ Engine
//!        ◀──────────── poll_output / poll_timeout ─────────────┘
//! ```
//!
//! Prober: a query splits its segment ids into Probes of at most
//! [`V1_IDS_PER_PROBE`] / [`V2_IDS_PER_PROBE`] ids, multicasts each
//! [`EngineConfig::transmissions`] times [`EngineConfig::retransmit_interval`]
//! apart (the same MessageID each time, as SOAP-over-UDP repeats are), collects
//! ProbeMatches by `RelatesTo`, reports every new peer at once and finishes at
//! its deadline (or early once every segment has
//! [`EngineConfig::target_peers`]). The wait is adaptive, as in iPXE: it starts
//! at [`EngineConfig::initial_wait`], drops by [`EngineConfig::wait_step`] for
//! every segment a query found no peer for (never below
//! [`EngineConfig::min_wait`]) and is reset by any reply.
//!
//! Responder: per-source token-bucket rate limit, MessageID dedup (bounded
//! LRU; our own looped-back Probes land there too), lookup, Windows 7 style
//! reply suppression, a random 1..=65 ms back-off, then a unicast ProbeMatch
//! with the next AppSequence number. Every table is bounded.

use core::net::{IpAddr, SocketAddr};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use super::ages::{age_units, SegmentAge, SegmentAges};
use super::messages::{
    AppSequence, Availability, AvailabilityBitmap, MatchBody, Message, Probe, ProbeMatch, Uri,
    Uuid, V1Scope, Version,
};
use crate::proto::pccrc::crypto::SegmentId;

/// v1 ids per Probe: ~750 bytes of envelope + 65 per id keeps a Probe under a
/// 1400-byte path MTU (PROTOCOL.md §6.1).
pub const V1_IDS_PER_PROBE: usize = 10;

/// v2 ids per Probe: base64 of 3 + 32·n bytes; 14 ids keep a Probe under 1400 bytes.
pub const V2_IDS_PER_PROBE: usize = 14;

/// Most segments in one query (a 2 GiB v1 file has 64 segments; this is generous).
pub const MAX_SEGMENTS_PER_QUERY: usize = 1024;

/// Outputs queued before further datagrams to send are dropped: a driver
/// drains after every input, so this only trips if it stops doing so.
const MAX_QUEUED_OUTPUTS: usize = 4096;

/// A point on the driver's monotonic clock, as time since its chosen epoch.
pub type Time = Duration;

/// Random numbers, supplied by the caller (a CSPRNG in the daemon, a seeded
/// generator in tests).
pub trait Entropy {
    /// The next uniformly distributed 64-bit value.
    fn next_u64(&mut self) -> u64;
}

impl<F: FnMut() -> u64> Entropy for F {
    fn next_u64(&mut self) -> u64 {
        self()
    }
}

/// What this host holds of one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalSegment {
    /// Blocks held (v1 BlockCount); 0 means "nothing to offer".
    pub block_count: u32,
    /// True when every block of the segment is held.
    pub complete: bool,
    /// How long ago the segment was obtained, if known (v2 SegmentAges).
    pub age: Option<Duration>,
}

/// Which segments this host can serve; implemented by the store.
pub trait SegmentLookup {
    /// What is held of `id`, or `None`.
    fn lookup(&self, id: &SegmentId) -> Option<LocalSegment>;
}

impl<T: SegmentLookup + ?Sized> SegmentLookup for Arc<T> {
    fn lookup(&self, id: &SegmentId) -> Option<LocalSegment> {
        (**self).lookup(id)
    }
}

/// An in-memory [`SegmentLookup`] (tests, small deployments).
#[derive(Debug, Default, Clone)]
pub struct LocalSegments {
    map: HashMap<SegmentId, LocalSegment>,
}

impl LocalSegments {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Record (or replace) what is held of `id`.
    pub fn insert(&mut self, id: SegmentId, seg: LocalSegment) {
        self.map.insert(id, seg);
    }

    /// Forget `id`.
    pub fn remove(&mut self, id: &SegmentId) {
        self.map.remove(id);
    }

    /// Number of segments held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl SegmentLookup for LocalSegments {
    fn lookup(&self, id: &SegmentId) -> Option<LocalSegment> {
        self.map.get(id).copied()
    }
}

/// An IP network (`addr/prefix`), for the source allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    /// Any address inside the network.
    pub addr: IpAddr,
    /// Prefix length in bits (clamped to 32 / 128).
    pub prefix: u8,
}

impl IpNet {
    /// True when `ip` is inside this network (same family only).
    pub fn contains(&self, ip: IpAddr) -> bool {
        fn masked(bits: u128, width: u32, prefix: u8) -> u128 {
            let keep = u32::from(prefix).min(width);
            if keep == 0 {
                0
            } else {
                bits >> (width - keep)
            }
        }
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                masked(u32::from(n).into(), 32, self.prefix)
                    == masked(u32::from(a).into(), 32, self.prefix)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                masked(u128::from(n), 128, self.prefix) == masked(u128::from(a), 128, self.prefix)
            }
            _ => false,
        }
    }
}

/// Tunables; [`Default`] gives the documented protocol values.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This service's stable endpoint UUID (`wsa:Address` of our ProbeMatches).
    pub endpoint: Uuid,
    /// AppSequence InstanceId: must change on every restart (Windows 7 uses
    /// the boot time in Unix seconds).
    pub instance_id: u64,
    /// Where we serve MS-PCCRR, advertised in XAddrs.
    pub xaddrs: Vec<SocketAddr>,
    /// Answer other hosts' Probes.
    pub respond: bool,
    /// Accept datagrams only from these networks (the local subnets; the
    /// spec wants off-subnet Probes and ProbeMatches ignored). Empty: accept
    /// every source (multicast with TTL 1 already keeps to the link).
    pub allowed_sources: Vec<IpNet>,
    /// Largest responder back-off; the delay is uniform in 1 ms..=this
    /// (MS-PCCRD APP_MAX_DELAY: 65 ms).
    pub max_backoff: Duration,
    /// Transmissions of each Probe (iPXE: 2).
    pub transmissions: u32,
    /// Gap between transmissions (iPXE: 1 s).
    pub retransmit_interval: Duration,
    /// Query wait when replies have been seen recently (iPXE: 2 s).
    pub initial_wait: Duration,
    /// Wait reduction per segment a query found no peer for (iPXE: 1 s).
    pub wait_step: Duration,
    /// Shortest wait: never below the largest responder back-off plus a
    /// round trip (Windows 7 waits 300 ms in total).
    pub min_wait: Duration,
    /// A query ends early once every segment has this many peers.
    pub target_peers: usize,
    /// Most peers remembered per segment of a query.
    pub max_peers_per_segment: usize,
    /// Most concurrent queries.
    pub max_queries: usize,
    /// MessageIDs remembered for duplicate suppression.
    pub dedup_capacity: usize,
    /// Replies waiting for their back-off to expire.
    pub max_pending_replies: usize,
    /// Per-source burst of datagrams accepted.
    pub rate_burst: u32,
    /// Per-source sustained datagrams per second.
    pub rate_per_second: u32,
    /// Sources tracked by the rate limiter (least recently seen evicted).
    pub rate_sources: usize,
    /// Windows 7 suppression: after our own query for a segment saw this many
    /// replies, we answer for it rarely (or never, if that many were full).
    pub suppression_threshold: u32,
    /// Chance, in percent, of still answering a suppressed segment (Windows 7: 33).
    pub suppression_answer_percent: u8,
    /// Segments whose reply counts are remembered for suppression.
    pub suppression_capacity: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            endpoint: Uuid([0; 16]),
            instance_id: 0,
            xaddrs: Vec::new(),
            respond: true,
            allowed_sources: Vec::new(),
            max_backoff: Duration::from_millis(65),
            transmissions: 2,
            retransmit_interval: Duration::from_secs(1),
            initial_wait: Duration::from_secs(2),
            wait_step: Duration::from_secs(1),
            min_wait: Duration::from_millis(300),
            target_peers: 4,
            max_peers_per_segment: 16,
            max_queries: 64,
            dedup_capacity: 1024,
            max_pending_replies: 256,
            rate_burst: 32,
            rate_per_second: 16,
            rate_sources: 1024,
            suppression_threshold: 10,
            suppression_answer_percent: 33,
            suppression_capacity: 4096,
        }
    }
}

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// The discovery multicast group(s) the driver is configured for.
    Multicast,
    /// One host (ProbeMatches go back to the Probe's source).
    Unicast(SocketAddr),
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub destination: Destination,
    /// The encoded SOAP envelope.
    pub payload: Vec<u8>,
}

/// Identifies one query of this engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueryId(pub u64);

/// What a peer said it holds of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    /// v1 reply: this many blocks.
    Blocks(u32),
    /// v2 reply: partial or full.
    Availability(Availability),
}

/// A peer that answered for a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The peer's stable endpoint address.
    pub endpoint: Uri,
    /// Where it serves MS-PCCRR (from XAddrs).
    pub addrs: Vec<SocketAddr>,
    /// The datagram's source address.
    pub source: SocketAddr,
    /// What it holds.
    pub holding: Holding,
}

/// The peers found for one segment of a finished query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentPeers {
    /// The segment.
    pub segment: SegmentId,
    /// Peers in the order their replies arrived.
    pub peers: Vec<Peer>,
}

/// Something for the driver to do or report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send a datagram.
    Transmit(Transmit),
    /// A new peer for one segment of a running query (reported at once so a
    /// fetch can start before the query ends).
    PeerFound {
        /// The query.
        query: QueryId,
        /// The segment.
        segment: SegmentId,
        /// The peer.
        peer: Peer,
    },
    /// A query ended (deadline, enough peers, or cancelled); results in
    /// request order.
    QueryFinished {
        /// The query.
        query: QueryId,
        /// Per requested segment, the peers found.
        results: Vec<SegmentPeers>,
    },
}

/// Why a query could not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// No segment ids were given.
    #[error("query has no segment ids")]
    Empty,
    /// More than [`MAX_SEGMENTS_PER_QUERY`] ids.
    #[error("query has {count} segment ids, limit {max}")]
    TooManySegments {
        /// Ids given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// [`EngineConfig::max_queries`] queries are running.
    #[error("{max} discovery queries already running")]
    TooManyQueries {
        /// The limit.
        max: usize,
    },
    /// v2 Probes carry 32-byte ids only.
    #[error("v2 discovery needs 32-byte segment ids, got {len}")]
    BadIdLength {
        /// Length of the offending id.
        len: usize,
    },
}

impl QueryError {
    /// A short, stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            QueryError::Empty => "empty",
            QueryError::TooManySegments { .. } => "too_many_segments",
            QueryError::TooManyQueries { .. } => "too_many_queries",
            QueryError::BadIdLength { .. } => "bad_id_length",
        }
    }
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Datagrams that did not decode.
    pub malformed: u64,
    /// Datagrams dropped by the per-source rate limit.
    pub rate_limited: u64,
    /// Probes received and accepted for processing.
    pub probes_received: u64,
    /// Probes dropped as duplicates (or our own, looped back).
    pub probes_duplicate: u64,
    /// ProbeMatches scheduled.
    pub replies_scheduled: u64,
    /// ProbeMatches sent.
    pub replies_sent: u64,
    /// Segments left out of a reply by suppression.
    pub segments_suppressed: u64,
    /// Replies dropped because the pending table was full.
    pub replies_dropped: u64,
    /// Probes sent (each transmission counts).
    pub probes_sent: u64,
    /// ProbeMatches relating to no running query.
    pub matches_unsolicited: u64,
    /// Peers reported.
    pub peers_found: u64,
    /// Queries started.
    pub queries_started: u64,
    /// Queries finished.
    pub queries_finished: u64,
    /// Transmits dropped because the output queue was full.
    pub outputs_dropped: u64,
    /// Replies whose XAddrs named none of the sender's addresses (we use the
    /// sender's address with the advertised port instead).
    pub xaddrs_rewritten: u64,
    /// Datagrams from outside [`EngineConfig::allowed_sources`].
    pub off_subnet: u64,
}

impl EngineStats {
    /// Every counter with a stable snake_case name (metric label values).
    pub fn counters(&self) -> [(&'static str, u64); 16] {
        [
            ("malformed", self.malformed),
            ("rate_limited", self.rate_limited),
            ("probes_received", self.probes_received),
            ("probes_duplicate", self.probes_duplicate),
            ("replies_scheduled", self.replies_scheduled),
            ("replies_sent", self.replies_sent),
            ("segments_suppressed", self.segments_suppressed),
            ("replies_dropped", self.replies_dropped),
            ("probes_sent", self.probes_sent),
            ("matches_unsolicited", self.matches_unsolicited),
            ("peers_found", self.peers_found),
            ("queries_started", self.queries_started),
            ("queries_finished", self.queries_finished),
            ("outputs_dropped", self.outputs_dropped),
            ("xaddrs_rewritten", self.xaddrs_rewritten),
            ("off_subnet", self.off_subnet),
        ]
    }
}

#[derive(Debug)]
struct ProbeState {
    message_id: Uri,
    /// Index of the first id of this Probe in the query's segment list.
    offset: usize,
    /// The ids of this Probe.
    ids: Vec<SegmentId>,
    payload: Vec<u8>,
}

#[derive(Debug)]
struct Query {
    segments: Vec<SegmentId>,
    peers: Vec<Vec<Peer>>,
    probes: Vec<ProbeState>,
    sends_done: u32,
    next_send: Option<Time>,
    deadline: Time,
}

#[derive(Debug)]
struct PendingReply {
    at: Time,
    to: SocketAddr,
    payload: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens in millionths.
    micro_tokens: u64,
    last: Time,
}

#[derive(Debug, Clone, Copy, Default)]
struct ReplyStats {
    replies: u32,
    full: u32,
}

/// A bounded set that forgets its oldest member first.
#[derive(Debug)]
struct Lru<K> {
    order: VecDeque<K>,
    set: HashSet<K>,
    cap: usize,
}

impl<K: Clone + Eq + std::hash::Hash> Lru<K> {
    fn new(cap: usize) -> Self {
        Lru {
            order: VecDeque::new(),
            set: HashSet::new(),
            cap: cap.max(1),
        }
    }

    /// Insert; false if already present.
    fn insert(&mut self, k: K) -> bool {
        if self.set.contains(&k) {
            return false;
        }
        if self.order.len() >= self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.order.push_back(k.clone());
        self.set.insert(k);
        true
    }
}

/// Where to reach a responder: its XAddrs that name the datagram's source
/// IP (keeping the source's IPv6 scope id, which XAddrs cannot carry), else
/// the source IP with the first advertised port. A reply can therefore never
/// point us at a third host. The flag is true when nothing matched.
// SPEC(MS-PCCRD §2.2.3.8): XAddrs is free-form "address and port"; the
// spec also requires the prober to check replies come from its subnet
// (PROTOCOL.md §6.1), so trusting a foreign address there would defeat it.
fn peer_addrs(xaddrs: &[SocketAddr], source: SocketAddr) -> (Vec<SocketAddr>, bool) {
    let with_scope = |a: &SocketAddr| match (a, source) {
        (SocketAddr::V6(x), SocketAddr::V6(s)) if x.scope_id() == 0 => {
            let mut x = *x;
            x.set_scope_id(s.scope_id());
            SocketAddr::V6(x)
        }
        _ => *a,
    };
    let same: Vec<SocketAddr> = xaddrs
        .iter()
        .filter(|a| a.ip() == source.ip())
        .map(with_scope)
        .collect();
    if !same.is_empty() {
        return (same, false);
    }
    let port = xaddrs.first().map_or(0, SocketAddr::port);
    let mut fallback = source;
    fallback.set_port(port);
    (vec![fallback], true)
}

/// The discovery state machine. See the module docs.
pub struct Engine<L> {
    config: EngineConfig,
    endpoint: Uri,
    lookup: L,
    entropy: Box<dyn Entropy + Send>,
    outputs: VecDeque<Output>,
    stats: EngineStats,
    // prober
    queries: BTreeMap<QueryId, Query>,
    probe_index: HashMap<Uri, (QueryId, usize)>,
    next_query: u64,
    wait: Duration,
    // responder
    seen: Lru<Uri>,
    pending: Vec<PendingReply>,
    buckets: HashMap<IpAddr, Bucket>,
    message_number: u64,
    reply_stats: HashMap<SegmentId, ReplyStats>,
    reply_stats_order: VecDeque<SegmentId>,
}

impl<L> std::fmt::Debug for Engine<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("endpoint", &self.endpoint)
            .field("queries", &self.queries.len())
            .field("pending_replies", &self.pending.len())
            .field("wait", &self.wait)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<L: SegmentLookup> Engine<L> {
    /// A new engine.
    pub fn new(config: EngineConfig, lookup: L, entropy: Box<dyn Entropy + Send>) -> Self {
        let endpoint = config.endpoint.to_uri();
        Engine {
            endpoint,
            lookup,
            entropy,
            outputs: VecDeque::new(),
            stats: EngineStats::default(),
            queries: BTreeMap::new(),
            probe_index: HashMap::new(),
            next_query: 1,
            wait: config.initial_wait,
            seen: Lru::new(config.dedup_capacity),
            pending: Vec::new(),
            buckets: HashMap::new(),
            message_number: 0,
            reply_stats: HashMap::new(),
            reply_stats_order: VecDeque::new(),
            config,
        }
    }

    /// The segment lookup.
    pub fn lookup(&self) -> &L {
        &self.lookup
    }

    /// The segment lookup, mutably (e.g. to insert into [`LocalSegments`]).
    pub fn lookup_mut(&mut self) -> &mut L {
        &mut self.lookup
    }

    /// Counters.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// The wait the next query will get (adaptive).
    pub fn current_wait(&self) -> Duration {
        self.wait
    }

    /// Number of running queries.
    pub fn active_queries(&self) -> usize {
        self.queries.len()
    }

    fn uuid(&mut self) -> Uuid {
        let a = self.entropy.next_u64().to_le_bytes();
        let b = self.entropy.next_u64().to_le_bytes();
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&a);
        bytes[8..].copy_from_slice(&b);
        Uuid::new_v4(bytes)
    }

    fn push_transmit(&mut self, destination: Destination, payload: Vec<u8>) {
        if self.outputs.len() >= MAX_QUEUED_OUTPUTS {
            self.stats.outputs_dropped += 1;
            return;
        }
        self.outputs.push_back(Output::Transmit(Transmit {
            destination,
            payload,
        }));
    }

    /// Start looking for peers holding `segments` (request order is kept in
    /// the results). The first Probes are queued at once. Use
    /// [`Version::V2`] for v2 content information (32-byte ids), else V1.
    pub fn start_query(
        &mut self,
        segments: &[SegmentId],
        version: Version,
        now: Time,
    ) -> Result<QueryId, QueryError> {
        if segments.is_empty() {
            return Err(QueryError::Empty);
        }
        if segments.len() > MAX_SEGMENTS_PER_QUERY {
            return Err(QueryError::TooManySegments {
                count: segments.len(),
                max: MAX_SEGMENTS_PER_QUERY,
            });
        }
        if self.queries.len() >= self.config.max_queries {
            return Err(QueryError::TooManyQueries {
                max: self.config.max_queries,
            });
        }
        if version == Version::V2 {
            if let Some(bad) = segments.iter().find(|s| s.as_bytes().len() != 32) {
                return Err(QueryError::BadIdLength {
                    len: bad.as_bytes().len(),
                });
            }
        }
        let id = QueryId(self.next_query);
        self.next_query += 1;
        let per_probe = match version {
            Version::V1 => V1_IDS_PER_PROBE,
            Version::V2 => V2_IDS_PER_PROBE,
        };
        let mut probes = Vec::new();
        for (n, chunk) in segments.chunks(per_probe).enumerate() {
            let message_id = self.uuid().to_uri();
            let probe = Probe {
                message_id: message_id.clone(),
                version,
                segment_ids: chunk.to_vec(),
            };
            // Our own Probe comes back through multicast loopback: make the
            // responder side treat it as already seen.
            self.seen.insert(message_id.clone());
            self.probe_index.insert(message_id.clone(), (id, n));
            probes.push(ProbeState {
                message_id,
                offset: n * per_probe,
                ids: chunk.to_vec(),
                payload: probe.encode(),
            });
        }
        let wait = self.wait.max(self.config.min_wait);
        let query = Query {
            segments: segments.to_vec(),
            peers: vec![Vec::new(); segments.len()],
            probes,
            sends_done: 0,
            next_send: Some(now),
            deadline: now.saturating_add(wait),
        };
        self.queries.insert(id, query);
        self.stats.queries_started += 1;
        self.send_due_probes(now);
        Ok(id)
    }

    /// Stop a query now; its `QueryFinished` is queued. False if unknown.
    pub fn cancel_query(&mut self, query: QueryId) -> bool {
        self.finish_query(query)
    }

    /// Feed one received datagram.
    pub fn handle_datagram(&mut self, from: SocketAddr, bytes: &[u8], now: Time) {
        // SPEC(MS-PCCRD §3): discovery is subnet-local; off-subnet Probes
        // are ignored and a prober checks replies come from its subnet.
        let allowed = &self.config.allowed_sources;
        if !allowed.is_empty() && !allowed.iter().any(|n| n.contains(from.ip())) {
            self.stats.off_subnet += 1;
            return;
        }
        if !self.admit(from.ip(), now) {
            self.stats.rate_limited += 1;
            return;
        }
        match Message::decode(bytes) {
            Ok(Message::Probe(p)) => self.on_probe(from, p, now),
            Ok(Message::ProbeMatch(m)) => self.on_match(from, m),
            Err(_) => self.stats.malformed += 1,
        }
    }

    /// Advance timers: send due replies and retransmissions, end queries
    /// whose deadline passed. Call when [`Engine::poll_timeout`] is reached
    /// (calling earlier or more often is harmless).
    pub fn handle_timeout(&mut self, now: Time) {
        let mut due = Vec::new();
        self.pending.retain_mut(|p| {
            if p.at <= now {
                due.push((p.at, p.to, std::mem::take(&mut p.payload)));
                false
            } else {
                true
            }
        });
        due.sort_by_key(|d| d.0);
        for (_, to, payload) in due {
            self.stats.replies_sent += 1;
            self.push_transmit(Destination::Unicast(to), payload);
        }
        self.send_due_probes(now);
        let expired: Vec<QueryId> = self
            .queries
            .iter()
            .filter(|(_, q)| q.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.finish_query(id);
        }
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Engine::handle_timeout`] must next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Time> {
        let replies = self.pending.iter().map(|p| p.at);
        let queries = self
            .queries
            .values()
            .flat_map(|q| q.next_send.into_iter().chain([q.deadline]));
        replies.chain(queries).min()
    }

    fn send_due_probes(&mut self, now: Time) {
        let mut sends = Vec::new();
        for q in self.queries.values_mut() {
            let Some(at) = q.next_send else { continue };
            if at > now {
                continue;
            }
            for p in &q.probes {
                sends.push(p.payload.clone());
            }
            q.sends_done += 1;
            let next = now.saturating_add(self.config.retransmit_interval);
            q.next_send =
                (q.sends_done < self.config.transmissions && next < q.deadline).then_some(next);
        }
        for payload in sends {
            self.stats.probes_sent += 1;
            self.push_transmit(Destination::Multicast, payload);
        }
    }

    fn finish_query(&mut self, id: QueryId) -> bool {
        let Some(q) = self.queries.remove(&id) else {
            return false;
        };
        for p in &q.probes {
            self.probe_index.remove(&p.message_id);
        }
        let empty = q.peers.iter().filter(|p| p.is_empty()).count();
        let step = self
            .config
            .wait_step
            .saturating_mul(u32::try_from(empty).unwrap_or(u32::MAX));
        self.wait = self.wait.saturating_sub(step).max(self.config.min_wait);
        let results = q
            .segments
            .into_iter()
            .zip(q.peers)
            .map(|(segment, peers)| SegmentPeers { segment, peers })
            .collect();
        self.stats.queries_finished += 1;
        self.outputs
            .push_back(Output::QueryFinished { query: id, results });
        true
    }

    /// Token bucket per source IP; the least recently seen source is evicted
    /// when the table is full.
    fn admit(&mut self, ip: IpAddr, now: Time) -> bool {
        const MICRO: u64 = 1_000_000;
        let cap = u64::from(self.config.rate_burst).saturating_mul(MICRO);
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= self.config.rate_sources {
            if let Some(oldest) = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.last)
                .map(|(k, _)| *k)
            {
                self.buckets.remove(&oldest);
            }
        }
        let b = self.buckets.entry(ip).or_insert(Bucket {
            micro_tokens: cap,
            last: now,
        });
        let elapsed = now.saturating_sub(b.last).as_micros();
        let refill = u64::try_from(elapsed)
            .unwrap_or(u64::MAX)
            .saturating_mul(u64::from(self.config.rate_per_second));
        b.micro_tokens = b.micro_tokens.saturating_add(refill).min(cap);
        b.last = b.last.max(now);
        if b.micro_tokens >= MICRO {
            b.micro_tokens -= MICRO;
            true
        } else {
            false
        }
    }

    fn on_probe(&mut self, from: SocketAddr, probe: Probe, now: Time) {
        if !self.config.respond {
            return;
        }
        if !self.seen.insert(probe.message_id.clone()) {
            self.stats.probes_duplicate += 1;
            return;
        }
        self.stats.probes_received += 1;
        let mut held: Vec<Option<LocalSegment>> = Vec::with_capacity(probe.segment_ids.len());
        for id in &probe.segment_ids {
            let local = self.lookup.lookup(id).filter(|l| l.block_count > 0);
            let local = match local {
                Some(_) if self.suppressed(id) => {
                    self.stats.segments_suppressed += 1;
                    None
                }
                other => other,
            };
            held.push(local);
        }
        if held.iter().all(Option::is_none) {
            // SPEC(MS-PCCRD §2.2.2.2): no negative replies.
            return;
        }
        let body = match probe.version {
            Version::V1 => MatchBody::V1(
                probe
                    .segment_ids
                    .iter()
                    .zip(&held)
                    .filter_map(|(id, h)| {
                        h.map(|l| V1Scope {
                            id: *id,
                            block_count: l.block_count,
                        })
                    })
                    .collect(),
            ),
            Version::V2 => {
                let entries: Vec<Availability> = held
                    .iter()
                    .map(|h| match h {
                        None => Availability::None,
                        Some(l) if l.complete => Availability::Full,
                        Some(_) => Availability::Partial,
                    })
                    .collect();
                let ages = held
                    .iter()
                    .enumerate()
                    .filter_map(|(i, h)| {
                        let age = h.as_ref()?.age?;
                        Some(SegmentAge {
                            segment_index: u8::try_from(i).ok()?,
                            age: u32::try_from(age.as_millis() / 10).unwrap_or(u32::MAX),
                        })
                    })
                    .collect();
                MatchBody::V2 {
                    availability: AvailabilityBitmap::from_entries(&entries),
                    ages: Some(SegmentAges {
                        units: age_units::CENTISECONDS,
                        ages,
                    }),
                }
            }
        };
        if self.pending.len() >= self.config.max_pending_replies {
            self.stats.replies_dropped += 1;
            return;
        }
        self.message_number += 1;
        let reply = ProbeMatch {
            message_id: self.uuid().to_uri(),
            relates_to: probe.message_id,
            app_sequence: AppSequence {
                instance_id: self.config.instance_id,
                message_number: self.message_number,
            },
            endpoint: self.endpoint.clone(),
            xaddrs: self.config.xaddrs.clone(),
            body,
        };
        let max_ms = u64::try_from(self.config.max_backoff.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let delay = Duration::from_millis(1 + self.entropy.next_u64() % max_ms);
        self.pending.push(PendingReply {
            at: now.saturating_add(delay),
            to: from,
            payload: reply.encode(),
        });
        self.stats.replies_scheduled += 1;
    }

    /// Windows 7 suppression (PROTOCOL.md §6.5): if our own query for `id`
    /// saw ≥ threshold replies, stay silent when that many were full, else
    /// answer with the configured probability.
    fn suppressed(&mut self, id: &SegmentId) -> bool {
        let Some(s) = self.reply_stats.get(id).copied() else {
            return false;
        };
        let t = self.config.suppression_threshold;
        if s.full >= t {
            return true;
        }
        if s.replies >= t {
            let roll = self.entropy.next_u64() % 100;
            return roll >= u64::from(self.config.suppression_answer_percent);
        }
        false
    }

    fn note_reply(&mut self, id: SegmentId, full: bool) {
        if !self.reply_stats.contains_key(&id) {
            if self.reply_stats_order.len() >= self.config.suppression_capacity.max(1) {
                if let Some(old) = self.reply_stats_order.pop_front() {
                    self.reply_stats.remove(&old);
                }
            }
            self.reply_stats_order.push_back(id);
        }
        let s = self.reply_stats.entry(id).or_default();
        s.replies = s.replies.saturating_add(1);
        if full {
            s.full = s.full.saturating_add(1);
        }
    }

    fn on_match(&mut self, from: SocketAddr, m: ProbeMatch) {
        let Some(&(qid, probe_idx)) = self.probe_index.get(&m.relates_to) else {
            self.stats.matches_unsolicited += 1;
            return;
        };
        if m.endpoint == self.endpoint {
            return;
        }
        let Some(q) = self.queries.get_mut(&qid) else {
            self.stats.matches_unsolicited += 1;
            return;
        };
        let Some(probe) = q.probes.get(probe_idx) else {
            return;
        };
        // (index into the query's segments, holding)
        let mut hits: Vec<(usize, Holding)> = Vec::new();
        match &m.body {
            MatchBody::V1(scopes) => {
                for s in scopes {
                    // SPEC(MS-PCCRD §2.2.3.9, iPXE): a zero count means "none".
                    if s.block_count == 0 {
                        continue;
                    }
                    if let Some(i) = probe.ids.iter().position(|id| *id == s.id) {
                        hits.push((probe.offset + i, Holding::Blocks(s.block_count)));
                    }
                }
            }
            MatchBody::V2 { availability, .. } => {
                for i in 0..probe.ids.len() {
                    let a = availability.get(i);
                    if a != Availability::None {
                        hits.push((probe.offset + i, Holding::Availability(a)));
                    }
                }
            }
        }
        if hits.is_empty() || m.xaddrs.is_empty() {
            return;
        }
        let (addrs, rewritten) = peer_addrs(&m.xaddrs, from);
        if rewritten {
            self.stats.xaddrs_rewritten += 1;
        }
        // Any reply resets the adaptive wait (iPXE).
        self.wait = self.config.initial_wait;
        let mut found = Vec::new();
        let mut noted = Vec::new();
        for (i, holding) in hits {
            let (Some(peers), Some(segment)) = (q.peers.get_mut(i), q.segments.get(i)) else {
                continue;
            };
            if peers.iter().any(|p| p.endpoint == m.endpoint) {
                continue;
            }
            noted.push((
                *segment,
                holding == Holding::Availability(Availability::Full),
            ));
            if peers.len() >= self.config.max_peers_per_segment {
                continue;
            }
            let peer = Peer {
                endpoint: m.endpoint.clone(),
                addrs: addrs.clone(),
                source: from,
                holding,
            };
            peers.push(peer.clone());
            found.push((*segment, peer));
        }
        let target = self.config.target_peers.max(1);
        let satisfied = q.peers.iter().all(|p| p.len() >= target);
        for (segment, full) in noted {
            self.note_reply(segment, full);
        }
        for (segment, peer) in found {
            self.stats.peers_found += 1;
            self.outputs.push_back(Output::PeerFound {
                query: qid,
                segment,
                peer,
            });
        }
        if satisfied {
            self.finish_query(qid);
        }
    }
}

#[cfg(test)]
mod tests {
    //! Deterministic simulations: a virtual clock, a seeded LAN with loss,
    //! duplication and reordering, N engines. Replay a failure with its seed.

    use super::*;
    use std::collections::BTreeMap;

    /// splitmix64: tiny, seedable, good enough for simulations.
    #[derive(Clone)]
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn percent(&mut self, p: u64) -> bool {
            self.next_u64() % 100 < p
        }
    }

    fn entropy(seed: u64) -> Box<dyn Entropy + Send> {
        let mut r = Rng(seed);
        Box::new(move || r.next_u64())
    }

    fn seg(n: u8) -> SegmentId {
        SegmentId::from_slice(&[n; 32]).unwrap()
    }

    fn addr(i: usize) -> SocketAddr {
        SocketAddr::new(IpAddr::from([10, 0, 0, 1 + i as u8]), 3702)
    }

    fn pccrr_addr(i: usize) -> SocketAddr {
        SocketAddr::new(IpAddr::from([10, 0, 0, 1 + i as u8]), 8082)
    }

    fn full(blocks: u32) -> LocalSegment {
        LocalSegment {
            block_count: blocks,
            complete: true,
            age: Some(Duration::from_secs(600)),
        }
    }

    fn partial(blocks: u32) -> LocalSegment {
        LocalSegment {
            block_count: blocks,
            complete: false,
            age: None,
        }
    }

    fn config(i: usize) -> EngineConfig {
        EngineConfig {
            endpoint: Uuid::new_v4([i as u8 + 1; 16]),
            instance_id: 1000 + i as u64,
            xaddrs: vec![pccrr_addr(i)],
            ..EngineConfig::default()
        }
    }

    struct Node {
        engine: Engine<LocalSegments>,
        /// Outputs of a dead node never reach the wire.
        dead: bool,
        /// Non-transmit outputs with the time they were polled.
        events: Vec<(Time, Output)>,
        /// (time sent, destination, payload)
        sent: Vec<(Time, Destination, Vec<u8>)>,
        /// (time received, source, payload)
        received: Vec<(Time, SocketAddr, Vec<u8>)>,
    }

    struct Lan {
        nodes: Vec<Node>,
        now: Time,
        queue: BTreeMap<(Time, u64), (SocketAddr, usize, Vec<u8>)>,
        seq: u64,
        rng: Rng,
        loss_percent: u64,
        dup_percent: u64,
        max_latency_us: u64,
        drop_first_multicasts: usize,
    }

    impl Lan {
        fn new(n: usize, seed: u64) -> Self {
            Self::with_configs((0..n).map(config).collect(), seed)
        }

        fn with_configs(configs: Vec<EngineConfig>, seed: u64) -> Self {
            let nodes = configs
                .into_iter()
                .enumerate()
                .map(|(i, c)| Node {
                    engine: Engine::new(
                        c,
                        LocalSegments::new(),
                        entropy(seed ^ (i as u64 + 1) << 32),
                    ),
                    dead: false,
                    events: Vec::new(),
                    sent: Vec::new(),
                    received: Vec::new(),
                })
                .collect();
            Lan {
                nodes,
                now: Duration::ZERO,
                queue: BTreeMap::new(),
                seq: 0,
                rng: Rng(seed),
                loss_percent: 0,
                dup_percent: 0,
                max_latency_us: 500,
                drop_first_multicasts: 0,
            }
        }

        fn hold(&mut self, node: usize, id: SegmentId, l: LocalSegment) {
            self.nodes[node].engine.lookup_mut().insert(id, l);
        }

        fn enqueue(&mut self, from: SocketAddr, to: usize, payload: &[u8]) {
            if self.rng.percent(self.loss_percent) {
                return;
            }
            let copies = if self.rng.percent(self.dup_percent) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let latency =
                    Duration::from_micros(self.rng.next_u64() % (self.max_latency_us + 1));
                self.seq += 1;
                self.queue
                    .insert((self.now + latency, self.seq), (from, to, payload.to_vec()));
            }
        }

        fn drain(&mut self) {
            for i in 0..self.nodes.len() {
                while let Some(o) = self.nodes[i].engine.poll_output() {
                    match o {
                        Output::Transmit(t) => {
                            let now = self.now;
                            self.nodes[i]
                                .sent
                                .push((now, t.destination, t.payload.clone()));
                            if self.nodes[i].dead {
                                continue;
                            }
                            match t.destination {
                                Destination::Multicast => {
                                    if self.drop_first_multicasts > 0 {
                                        self.drop_first_multicasts -= 1;
                                        continue;
                                    }
                                    // Multicast loops back to the sender too.
                                    for to in 0..self.nodes.len() {
                                        self.enqueue(addr(i), to, &t.payload);
                                    }
                                }
                                Destination::Unicast(a) => {
                                    if let Some(to) = (0..self.nodes.len()).find(|&j| addr(j) == a)
                                    {
                                        self.enqueue(addr(i), to, &t.payload);
                                    }
                                }
                            }
                        }
                        other => {
                            let now = self.now;
                            self.nodes[i].events.push((now, other));
                        }
                    }
                }
            }
        }

        fn run_until(&mut self, end: Time) {
            loop {
                self.drain();
                let next_net = self.queue.keys().next().map(|k| k.0);
                let next_timer = self
                    .nodes
                    .iter()
                    .filter_map(|n| n.engine.poll_timeout())
                    .min();
                let next = match (next_net, next_timer) {
                    (Some(a), Some(b)) => a.min(b),
                    (a, b) => match a.or(b) {
                        Some(t) => t,
                        None => break,
                    },
                };
                if next > end {
                    break;
                }
                self.now = self.now.max(next);
                while let Some(entry) = self.queue.first_entry() {
                    if entry.key().0 > self.now {
                        break;
                    }
                    let (from, to, payload) = entry.remove();
                    let now = self.now;
                    self.nodes[to].received.push((now, from, payload.clone()));
                    self.nodes[to].engine.handle_datagram(from, &payload, now);
                }
                for n in &mut self.nodes {
                    if n.engine.poll_timeout().is_some_and(|t| t <= self.now) {
                        n.engine.handle_timeout(self.now);
                    }
                }
            }
            self.now = self.now.max(end);
        }

        fn query(&mut self, node: usize, ids: &[SegmentId], v: Version) -> QueryId {
            let now = self.now;
            self.nodes[node].engine.start_query(ids, v, now).unwrap()
        }

        fn finished(&self, node: usize, q: QueryId) -> Vec<(Time, Vec<SegmentPeers>)> {
            self.nodes[node]
                .events
                .iter()
                .filter_map(|(t, o)| match o {
                    Output::QueryFinished { query, results } if *query == q => {
                        Some((*t, results.clone()))
                    }
                    _ => None,
                })
                .collect()
        }

        fn found(&self, node: usize, q: QueryId) -> Vec<(SegmentId, Peer)> {
            self.nodes[node]
                .events
                .iter()
                .filter_map(|(_, o)| match o {
                    Output::PeerFound {
                        query,
                        segment,
                        peer,
                    } if *query == q => Some((*segment, peer.clone())),
                    _ => None,
                })
                .collect()
        }

        fn replies_sent(&self, node: usize) -> Vec<ProbeMatch> {
            self.nodes[node]
                .sent
                .iter()
                .filter(|(_, d, _)| matches!(d, Destination::Unicast(_)))
                .map(|(_, _, p)| ProbeMatch::decode(p).unwrap())
                .collect()
        }
    }

    fn peer_nodes(peers: &[Peer]) -> Vec<usize> {
        let mut v: Vec<usize> = peers
            .iter()
            .map(|p| (0..64).find(|&i| p.addrs == vec![pccrr_addr(i)]).unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn query_finds_every_holder_on_a_clean_lan_v1() {
        let mut lan = Lan::new(5, 1);
        lan.hold(1, seg(1), full(42));
        lan.hold(2, seg(1), full(42));
        lan.hold(3, seg(2), partial(7));
        lan.hold(4, seg(9), full(1));
        let q = lan.query(0, &[seg(1), seg(2), seg(3)], Version::V1);
        lan.run_until(Duration::from_secs(5));
        let fin = lan.finished(0, q);
        assert_eq!(fin.len(), 1);
        let (at, results) = &fin[0];
        assert_eq!(*at, Duration::from_secs(2), "ends at the initial wait");
        assert_eq!(peer_nodes(&results[0].peers), vec![1, 2]);
        assert_eq!(peer_nodes(&results[1].peers), vec![3]);
        assert!(results[2].peers.is_empty());
        assert_eq!(results[1].peers[0].holding, Holding::Blocks(7));
        assert_eq!(results[1].peers[0].source, addr(3));
        assert_eq!(lan.found(0, q).len(), 3);
        // Two transmissions, 1 s apart, of one Probe.
        let probes: Vec<Time> = lan.nodes[0]
            .sent
            .iter()
            .filter(|s| s.1 == Destination::Multicast)
            .map(|s| s.0)
            .collect();
        assert_eq!(probes, vec![Duration::ZERO, Duration::from_secs(1)]);
        // One empty segment: the next wait is 1 s shorter.
        assert_eq!(lan.nodes[0].engine.current_wait(), Duration::from_secs(1));
    }

    #[test]
    fn query_finds_every_holder_on_a_clean_lan_v2_with_availability() {
        let mut lan = Lan::new(4, 2);
        lan.hold(1, seg(1), full(4));
        lan.hold(2, seg(1), partial(2));
        lan.hold(2, seg(2), full(3));
        let q = lan.query(0, &[seg(1), seg(2)], Version::V2);
        lan.run_until(Duration::from_secs(5));
        let (_, results) = &lan.finished(0, q)[0];
        assert_eq!(peer_nodes(&results[0].peers), vec![1, 2]);
        let by_node = |r: &SegmentPeers, n: usize| {
            r.peers
                .iter()
                .find(|p| p.addrs == vec![pccrr_addr(n)])
                .unwrap()
                .holding
        };
        assert_eq!(
            by_node(&results[0], 1),
            Holding::Availability(Availability::Full)
        );
        assert_eq!(
            by_node(&results[0], 2),
            Holding::Availability(Availability::Partial)
        );
        assert_eq!(peer_nodes(&results[1].peers), vec![2]);
        // Node 1's reply carries its segment age in centiseconds.
        match &lan.replies_sent(1)[0].body {
            MatchBody::V2 { ages, .. } => assert_eq!(
                ages.as_ref().unwrap().ages,
                vec![SegmentAge {
                    segment_index: 0,
                    age: 60_000
                }]
            ),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn responder_answers_v1_probe_for_v2_content() {
        // iPXE probes v2 content with v1 Probes: answer in v1 form.
        let mut lan = Lan::new(2, 3);
        lan.hold(1, seg(5), full(1));
        let q = lan.query(0, &[seg(5)], Version::V1);
        lan.run_until(Duration::from_secs(3));
        assert_eq!(lan.found(0, q).len(), 1);
        assert!(matches!(lan.replies_sent(1)[0].body, MatchBody::V1(_)));
    }

    #[test]
    fn reply_backoff_is_between_1_and_65_ms() {
        for seed in 0..20 {
            let mut lan = Lan::new(2, seed);
            lan.max_latency_us = 0;
            lan.hold(1, seg(1), full(1));
            lan.query(0, &[seg(1)], Version::V1);
            lan.run_until(Duration::from_secs(3));
            let got = lan.nodes[1].received[0].0;
            let sent = lan.nodes[1]
                .sent
                .iter()
                .find(|s| matches!(s.1, Destination::Unicast(_)))
                .unwrap()
                .0;
            let d = sent - got;
            assert!(
                d >= Duration::from_millis(1) && d <= Duration::from_millis(65),
                "seed {seed}: {d:?}"
            );
        }
    }

    #[test]
    fn reply_goes_unicast_to_the_probe_source() {
        let mut lan = Lan::new(3, 4);
        lan.hold(2, seg(1), full(1));
        lan.query(0, &[seg(1)], Version::V1);
        lan.run_until(Duration::from_secs(3));
        let dests: Vec<Destination> = lan.nodes[2].sent.iter().map(|s| s.1).collect();
        assert_eq!(dests, vec![Destination::Unicast(addr(0))]);
    }

    #[test]
    fn lossy_duplicating_reordering_lan_never_reports_false_or_duplicate_peers() {
        for seed in 0..24 {
            let mut lan = Lan::new(8, seed);
            lan.loss_percent = 30;
            lan.dup_percent = 20;
            lan.max_latency_us = 20_000;
            for n in 1..=6 {
                lan.hold(n, seg(1), full(10));
            }
            lan.hold(7, seg(2), partial(1));
            let q = lan.query(0, &[seg(1), seg(3)], Version::V2);
            lan.run_until(Duration::from_secs(10));
            let fin = lan.finished(0, q);
            assert_eq!(fin.len(), 1, "seed {seed}: finished exactly once");
            let results = &fin[0].1;
            let a = peer_nodes(&results[0].peers);
            assert!(!a.is_empty(), "seed {seed}: no holder found");
            assert!(a.iter().all(|n| (1..=6).contains(n)), "seed {seed}: {a:?}");
            let mut dedup = a.clone();
            dedup.dedup();
            assert_eq!(dedup, a, "seed {seed}: duplicate peer");
            assert!(results[1].peers.is_empty(), "seed {seed}");
            let found = lan.found(0, q);
            assert_eq!(found.len(), a.len(), "seed {seed}");
        }
    }

    #[test]
    fn retransmission_recovers_a_lost_first_probe() {
        let mut lan = Lan::new(2, 5);
        lan.hold(1, seg(1), full(1));
        lan.drop_first_multicasts = 1;
        let q = lan.query(0, &[seg(1)], Version::V1);
        lan.run_until(Duration::from_secs(3));
        let found = lan.found(0, q);
        assert_eq!(found.len(), 1);
        assert!(lan.nodes[1].received[0].0 >= Duration::from_secs(1));
    }

    #[test]
    fn silent_peer_ends_query_at_deadline_and_wait_adapts() {
        let mut lan = Lan::new(3, 6);
        lan.hold(1, seg(1), full(1));
        lan.nodes[1].dead = true;
        let mut starts = Vec::new();
        let mut ends = Vec::new();
        for _ in 0..3 {
            starts.push(lan.now);
            let q = lan.query(0, &[seg(1)], Version::V1);
            lan.run_until(lan.now + Duration::from_secs(5));
            let fin = lan.finished(0, q);
            assert!(fin[0].1[0].peers.is_empty());
            ends.push(fin[0].0);
        }
        let waits: Vec<Duration> = starts.iter().zip(&ends).map(|(s, e)| *e - *s).collect();
        assert_eq!(
            waits,
            vec![
                Duration::from_secs(2),
                Duration::from_secs(1),
                Duration::from_millis(300)
            ]
        );
        // With a 300 ms wait the second transmission (at 1 s) is skipped.
        // A live holder appears: its reply resets the wait to 2 s.
        lan.hold(2, seg(1), full(1));
        let q = lan.query(0, &[seg(1)], Version::V1);
        lan.run_until(lan.now + Duration::from_secs(5));
        assert_eq!(lan.found(0, q).len(), 1);
        assert_eq!(lan.nodes[0].engine.current_wait(), Duration::from_secs(2));
    }

    #[test]
    fn query_ends_early_once_every_segment_has_target_peers() {
        let mut configs: Vec<EngineConfig> = (0..4).map(config).collect();
        configs[0].target_peers = 2;
        let mut lan = Lan::with_configs(configs, 7);
        for n in 1..4 {
            lan.hold(n, seg(1), full(1));
        }
        let q = lan.query(0, &[seg(1)], Version::V1);
        lan.run_until(Duration::from_secs(5));
        let fin = lan.finished(0, q);
        assert!(fin[0].0 < Duration::from_millis(100), "{:?}", fin[0].0);
        assert_eq!(fin[0].1[0].peers.len(), 2);
        // The late third reply is unsolicited and not reported.
        assert_eq!(lan.found(0, q).len(), 2);
        assert_eq!(lan.nodes[0].engine.stats().matches_unsolicited, 1);
    }

    #[test]
    fn own_probe_looped_back_is_not_answered_and_self_is_not_a_peer() {
        let mut lan = Lan::new(2, 8);
        lan.hold(0, seg(1), full(1));
        lan.hold(1, seg(1), full(1));
        let q = lan.query(0, &[seg(1)], Version::V1);
        lan.run_until(Duration::from_secs(3));
        assert!(lan.replies_sent(0).is_empty());
        assert!(lan.nodes[0].engine.stats().probes_duplicate >= 1);
        assert_eq!(peer_nodes(&lan.finished(0, q)[0].1[0].peers), vec![1]);
    }

    #[test]
    fn duplicate_probe_is_answered_once() {
        let mut lan = Lan::new(2, 9);
        lan.dup_percent = 100;
        lan.hold(1, seg(1), full(1));
        lan.query(0, &[seg(1)], Version::V1);
        lan.run_until(Duration::from_secs(3));
        // 2 transmissions × 2 copies received, one answer.
        assert_eq!(lan.nodes[1].received.len(), 4);
        assert_eq!(lan.replies_sent(1).len(), 1);
        assert_eq!(lan.nodes[1].engine.stats().probes_duplicate, 3);
    }

    #[test]
    fn app_sequence_counts_up_from_one_with_configured_instance() {
        let mut lan = Lan::new(2, 10);
        lan.hold(1, seg(1), full(1));
        for _ in 0..3 {
            lan.query(0, &[seg(1)], Version::V1);
            lan.run_until(lan.now + Duration::from_secs(3));
        }
        let seqs: Vec<AppSequence> = lan.replies_sent(1).iter().map(|m| m.app_sequence).collect();
        assert_eq!(
            seqs,
            (1..=3)
                .map(|n| AppSequence {
                    instance_id: 1001,
                    message_number: n
                })
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn probe_flood_from_one_source_is_rate_limited() {
        let cfg = config(1);
        let burst = cfg.rate_burst as u64;
        let per_second = cfg.rate_per_second as u64;
        let mut lookup = LocalSegments::new();
        lookup.insert(seg(1), full(1));
        let mut e = Engine::new(cfg, lookup, entropy(11));
        let attacker = addr(50);
        let mut r = Rng(99);
        let probe = |r: &mut Rng| {
            let b: [u8; 16] = core::array::from_fn(|_| r.next_u64() as u8);
            Probe {
                message_id: Uuid::new_v4(b).to_uri(),
                version: Version::V1,
                segment_ids: vec![seg(1)],
            }
            .encode()
        };
        for _ in 0..1000 {
            e.handle_datagram(attacker, &probe(&mut r), Duration::ZERO);
        }
        let s = e.stats();
        assert_eq!(s.replies_scheduled, burst);
        assert_eq!(s.rate_limited, 1000 - burst);
        // Another source is unaffected.
        e.handle_datagram(addr(51), &probe(&mut r), Duration::ZERO);
        assert_eq!(e.stats().replies_scheduled, burst + 1);
        // One second later the attacker has refilled rate_per_second tokens.
        for _ in 0..100 {
            e.handle_datagram(attacker, &probe(&mut r), Duration::from_secs(1));
        }
        assert_eq!(e.stats().replies_scheduled, burst + 1 + per_second);
        // Pending replies stay bounded.
        assert!(e.pending.len() <= e.config.max_pending_replies);
    }

    #[test]
    fn rate_limiter_table_is_bounded() {
        let cfg = EngineConfig {
            rate_sources: 8,
            ..config(0)
        };
        let mut e = Engine::new(cfg, LocalSegments::new(), entropy(12));
        for i in 0..100u8 {
            let from = SocketAddr::new(IpAddr::from([192, 168, 0, i]), 3702);
            e.handle_datagram(from, b"junk", Duration::from_millis(u64::from(i)));
        }
        assert_eq!(e.buckets.len(), 8);
        assert_eq!(e.stats().malformed, 100);
    }

    #[test]
    fn dedup_table_is_bounded() {
        let cfg = EngineConfig {
            dedup_capacity: 16,
            rate_burst: 10_000,
            ..config(0)
        };
        let mut e = Engine::new(cfg, LocalSegments::new(), entropy(13));
        for i in 0..100u8 {
            let p = Probe {
                message_id: Uuid::new_v4([i; 16]).to_uri(),
                version: Version::V1,
                segment_ids: vec![seg(1)],
            };
            e.handle_datagram(addr(1), &p.encode(), Duration::ZERO);
        }
        assert_eq!(e.seen.set.len(), 16);
        assert_eq!(e.seen.order.len(), 16);
    }

    #[test]
    fn segment_with_ten_full_replies_is_suppressed_afterwards() {
        let n = 12;
        let mut configs: Vec<EngineConfig> = (0..n).map(config).collect();
        configs[0].target_peers = 100;
        let mut lan = Lan::with_configs(configs, 14);
        for i in 1..=10 {
            lan.hold(i, seg(1), full(3));
        }
        let q = lan.query(0, &[seg(1)], Version::V2);
        lan.run_until(Duration::from_secs(3));
        assert_eq!(lan.found(0, q).len(), 10);
        // Node 0 now holds the segment itself; node 11 asks for it.
        lan.hold(0, seg(1), full(3));
        let q2 = lan.query(11, &[seg(1)], Version::V2);
        lan.run_until(lan.now + Duration::from_secs(3));
        assert!(lan.replies_sent(0).is_empty());
        assert_eq!(lan.nodes[0].engine.stats().segments_suppressed, 1);
        let found = lan.found(11, q2);
        assert_eq!(found.len(), 4, "target_peers reached by the others");
        assert!(found.iter().all(|(_, p)| p.addrs != vec![pccrr_addr(0)]));
    }

    #[test]
    fn start_query_rejects_bad_input() {
        let mut e = Engine::new(
            EngineConfig {
                max_queries: 1,
                ..config(0)
            },
            LocalSegments::new(),
            entropy(15),
        );
        let now = Duration::ZERO;
        assert_eq!(e.start_query(&[], Version::V1, now), Err(QueryError::Empty));
        let many = vec![seg(1); MAX_SEGMENTS_PER_QUERY + 1];
        assert!(matches!(
            e.start_query(&many, Version::V1, now),
            Err(QueryError::TooManySegments { .. })
        ));
        let long = SegmentId::from_slice(&[1; 48]).unwrap();
        assert_eq!(
            e.start_query(&[long], Version::V2, now),
            Err(QueryError::BadIdLength { len: 48 })
        );
        assert!(e.start_query(&[long], Version::V1, now).is_ok());
        assert_eq!(
            e.start_query(&[seg(1)], Version::V1, now),
            Err(QueryError::TooManyQueries { max: 1 })
        );
    }

    #[test]
    fn large_query_is_split_into_mtu_sized_probes() {
        for (version, per) in [
            (Version::V1, V1_IDS_PER_PROBE),
            (Version::V2, V2_IDS_PER_PROBE),
        ] {
            let mut e = Engine::new(config(0), LocalSegments::new(), entropy(16));
            let ids: Vec<SegmentId> = (0..25).map(seg).collect();
            e.start_query(&ids, version, Duration::ZERO).unwrap();
            let mut seen = Vec::new();
            while let Some(o) = e.poll_output() {
                let Output::Transmit(t) = o else { continue };
                assert!(t.payload.len() <= 1400, "{} bytes", t.payload.len());
                let p = Probe::decode(&t.payload).unwrap();
                assert!(p.segment_ids.len() <= per);
                assert_eq!(p.version, version);
                seen.extend(p.segment_ids);
            }
            assert_eq!(seen, ids);
        }
    }

    #[test]
    fn cancel_reports_partial_results_and_forgets_the_query() {
        let mut lan = Lan::new(2, 17);
        lan.hold(1, seg(1), full(1));
        let q = lan.query(0, &[seg(1)], Version::V1);
        lan.run_until(Duration::from_millis(500));
        assert!(lan.nodes[0].engine.cancel_query(q));
        assert!(!lan.nodes[0].engine.cancel_query(q));
        lan.drain();
        let fin = lan.finished(0, q);
        assert_eq!(fin.len(), 1);
        assert_eq!(fin[0].1[0].peers.len(), 1);
        assert_eq!(lan.nodes[0].engine.active_queries(), 0);
        assert_eq!(lan.nodes[0].engine.poll_timeout(), None);
    }

    #[test]
    fn peer_addresses_never_point_away_from_the_sender() {
        let src: SocketAddr = "10.0.0.5:3702".parse().unwrap();
        let own: SocketAddr = "10.0.0.5:8082".parse().unwrap();
        let other: SocketAddr = "192.0.2.9:80".parse().unwrap();
        assert_eq!(peer_addrs(&[other, own], src), (vec![own], false));
        assert_eq!(
            peer_addrs(&[other], src),
            (vec!["10.0.0.5:80".parse().unwrap()], true)
        );
        let v6src: SocketAddr = "[fe80::1%3]:3702".parse().unwrap();
        let v6x: SocketAddr = "[fe80::1]:8082".parse().unwrap();
        let (addrs, rewritten) = peer_addrs(&[v6x], v6src);
        assert!(!rewritten);
        match addrs[0] {
            SocketAddr::V6(a) => assert_eq!((a.scope_id(), a.port()), (3, 8082)),
            SocketAddr::V4(_) => panic!("v4"),
        }
    }

    #[test]
    fn reply_advertising_a_third_host_is_pinned_to_the_sender() {
        let mut configs: Vec<EngineConfig> = (0..2).map(config).collect();
        configs[1].xaddrs = vec!["192.0.2.77:8082".parse().unwrap()];
        let mut lan = Lan::with_configs(configs, 19);
        lan.hold(1, seg(1), full(1));
        let q = lan.query(0, &[seg(1)], Version::V1);
        lan.run_until(Duration::from_secs(3));
        let found = lan.found(0, q);
        assert_eq!(found[0].1.addrs, vec![pccrr_addr(1)]);
        assert_eq!(lan.nodes[0].engine.stats().xaddrs_rewritten, 1);
    }

    #[test]
    fn ip_net_matches_by_prefix_and_family() {
        let net = IpNet {
            addr: IpAddr::from([10, 0, 0, 77]),
            prefix: 24,
        };
        assert!(net.contains(IpAddr::from([10, 0, 0, 1])));
        assert!(!net.contains(IpAddr::from([10, 0, 1, 1])));
        assert!(!net.contains("::ffff:10.0.0.1".parse().unwrap()));
        let all = IpNet {
            addr: IpAddr::from([0, 0, 0, 0]),
            prefix: 0,
        };
        assert!(all.contains(IpAddr::from([192, 0, 2, 1])));
        let v6 = IpNet {
            addr: "fe80::".parse().unwrap(),
            prefix: 200,
        };
        assert!(v6.contains("fe80::".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
    }

    #[test]
    fn off_subnet_datagrams_are_ignored() {
        let mut configs: Vec<EngineConfig> = (0..3).map(config).collect();
        // Node 1 accepts 10.0.0.0/31 only: node 0 (10.0.0.1) is inside,
        // node 2 (10.0.0.3) outside.
        configs[1].allowed_sources = vec![IpNet {
            addr: IpAddr::from([10, 0, 0, 0]),
            prefix: 31,
        }];
        let mut lan = Lan::with_configs(configs, 20);
        lan.hold(1, seg(1), full(1));
        let inside = lan.query(0, &[seg(1)], Version::V1);
        let outside = lan.query(2, &[seg(1)], Version::V1);
        lan.run_until(Duration::from_secs(3));
        assert_eq!(lan.found(0, inside).len(), 1);
        assert!(lan.found(2, outside).is_empty());
        assert_eq!(
            lan.nodes[1].engine.stats().off_subnet,
            2,
            "two transmissions"
        );
    }

    #[test]
    fn non_responder_stays_silent() {
        let mut configs: Vec<EngineConfig> = (0..2).map(config).collect();
        configs[1].respond = false;
        let mut lan = Lan::with_configs(configs, 18);
        lan.hold(1, seg(1), full(1));
        let q = lan.query(0, &[seg(1)], Version::V1);
        lan.run_until(Duration::from_secs(3));
        assert!(lan.found(0, q).is_empty());
        assert!(lan.replies_sent(1).is_empty());
    }

    mod props {
        //! Random operation sequences against one engine: bounds, timer
        //! discipline, liveness and output validity hold whatever arrives.

        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Garbage(u8, Vec<u8>),
            ProbeFor(u8, Vec<u8>, bool),
            MatchFor(u8, usize, Vec<u8>, bool),
            Start(Vec<u8>, bool),
            Advance(u64),
            Cancel(u64),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..64))
                    .prop_map(|(f, b)| Op::Garbage(f, b)),
                (
                    any::<u8>(),
                    proptest::collection::vec(0u8..6, 1..5),
                    any::<bool>()
                )
                    .prop_map(|(f, ids, v2)| Op::ProbeFor(f, ids, v2)),
                (
                    any::<u8>(),
                    any::<usize>(),
                    proptest::collection::vec(0u8..6, 0..5),
                    any::<bool>()
                )
                    .prop_map(|(f, i, ids, v2)| Op::MatchFor(f, i, ids, v2)),
                (proptest::collection::vec(0u8..6, 1..30), any::<bool>())
                    .prop_map(|(ids, v2)| Op::Start(ids, v2)),
                (0u64..3000).prop_map(Op::Advance),
                (0u64..8).prop_map(Op::Cancel),
            ]
        }

        fn source(f: u8) -> SocketAddr {
            SocketAddr::new(IpAddr::from([10, 1, 0, f % 4]), 3702)
        }

        proptest! {
            #[test]
            fn engine_invariants_hold_under_random_operations(
                ops in proptest::collection::vec(op(), 1..60),
                seed in any::<u64>(),
            ) {
                let cfg = EngineConfig {
                    max_queries: 3,
                    max_pending_replies: 4,
                    dedup_capacity: 8,
                    rate_sources: 2,
                    max_peers_per_segment: 3,
                    ..config(0)
                };
                let (dedup_cap, pending_cap, sources_cap, peers_cap) = (8, 4, 2, 3);
                let mut lookup = LocalSegments::new();
                lookup.insert(seg(1), full(2));
                lookup.insert(seg(2), partial(1));
                let mut e = Engine::new(cfg, lookup, entropy(seed));
                let mut rng = Rng(seed);
                let mut now = Duration::ZERO;
                let mut probe_ids: Vec<Uri> = Vec::new();
                let mut started: Vec<QueryId> = Vec::new();
                let mut finished: Vec<QueryId> = Vec::new();
                let mut query_ids: HashMap<QueryId, Vec<SegmentId>> = HashMap::new();
                for op in ops {
                    match op {
                        Op::Garbage(f, b) => e.handle_datagram(source(f), &b, now),
                        Op::ProbeFor(f, ids, v2) => {
                            let b: [u8; 16] = core::array::from_fn(|_| rng.next_u64() as u8);
                            let p = Probe {
                                message_id: Uuid::new_v4(b).to_uri(),
                                version: if v2 { Version::V2 } else { Version::V1 },
                                segment_ids: ids.into_iter().map(seg).collect(),
                            };
                            e.handle_datagram(source(f), &p.encode(), now);
                        }
                        Op::MatchFor(f, i, ids, v2) => {
                            if probe_ids.is_empty() {
                                continue;
                            }
                            let relates_to = probe_ids[i % probe_ids.len()].clone();
                            let b: [u8; 16] = core::array::from_fn(|_| rng.next_u64() as u8);
                            let body = if v2 {
                                let a: Vec<Availability> = ids
                                    .iter()
                                    .map(|n| if n % 2 == 0 { Availability::Full } else { Availability::None })
                                    .collect();
                                MatchBody::V2 {
                                    availability: AvailabilityBitmap::from_entries(&a),
                                    ages: None,
                                }
                            } else {
                                MatchBody::V1(
                                    ids.iter()
                                        .map(|n| V1Scope { id: seg(*n), block_count: u32::from(*n) })
                                        .collect(),
                                )
                            };
                            let m = ProbeMatch {
                                message_id: Uuid::new_v4(b).to_uri(),
                                relates_to,
                                app_sequence: AppSequence { instance_id: 1, message_number: 1 },
                                endpoint: Uuid::new_v4([f; 16]).to_uri(),
                                xaddrs: vec![SocketAddr::new(source(f).ip(), 8082)],
                                body,
                            };
                            e.handle_datagram(source(f), &m.encode(), now);
                        }
                        Op::Start(ids, v2) => {
                            let ids: Vec<SegmentId> = ids.into_iter().map(seg).collect();
                            let v = if v2 { Version::V2 } else { Version::V1 };
                            if let Ok(q) = e.start_query(&ids, v, now) {
                                started.push(q);
                                query_ids.insert(q, ids);
                            }
                        }
                        Op::Advance(ms) => {
                            now += Duration::from_millis(ms);
                            e.handle_timeout(now);
                            // Timer discipline: nothing is left overdue.
                            if let Some(t) = e.poll_timeout() {
                                prop_assert!(t > now, "{t:?} <= {now:?}");
                            }
                        }
                        Op::Cancel(q) => {
                            e.cancel_query(QueryId(q));
                        }
                    }
                    while let Some(o) = e.poll_output() {
                        match o {
                            Output::Transmit(t) => match Message::decode(&t.payload) {
                                Ok(Message::Probe(p)) => {
                                    prop_assert_eq!(t.destination, Destination::Multicast);
                                    probe_ids.push(p.message_id);
                                }
                                Ok(Message::ProbeMatch(m)) => {
                                    prop_assert!(matches!(t.destination, Destination::Unicast(_)));
                                    prop_assert_eq!(m.endpoint, e.endpoint.clone());
                                }
                                Err(err) => prop_assert!(false, "undecodable output: {err}"),
                            },
                            Output::PeerFound { query, segment, .. } => {
                                prop_assert!(query_ids[&query].contains(&segment));
                            }
                            Output::QueryFinished { query, results } => {
                                prop_assert!(!finished.contains(&query), "finished twice");
                                finished.push(query);
                                let ids: Vec<SegmentId> = results.iter().map(|r| r.segment).collect();
                                prop_assert_eq!(&ids, &query_ids[&query]);
                                prop_assert!(results.iter().all(|r| r.peers.len() <= peers_cap));
                            }
                        }
                    }
                    prop_assert!(e.active_queries() <= 3);
                    prop_assert!(e.pending.len() <= pending_cap);
                    prop_assert!(e.seen.set.len() <= dedup_cap);
                    prop_assert!(e.buckets.len() <= sources_cap);
                }
                // Liveness: every query ends once its deadline has passed.
                now += Duration::from_secs(10);
                e.handle_timeout(now);
                while let Some(o) = e.poll_output() {
                    if let Output::QueryFinished { query, .. } = o {
                        finished.push(query);
                    }
                }
                started.sort();
                finished.sort();
                prop_assert_eq!(started, finished);
                prop_assert_eq!(e.poll_timeout(), None);
            }
        }
    }
}
