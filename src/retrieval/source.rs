//! PCCRR peers (or a hosted cache) as a [`fetch::BlockSource`]: for each
//! requested block, ask the known peers in turn with MSG_GETBLKS, decrypt and
//! verify, and yield the block from the first peer that has it.
//!
//! The blocks of a run are hash-checked [`VERIFY_BATCH`] at a time, in one
//! multi-buffer SHA-256 pass ([`PeerClient::verify_blocks`]); nothing is
//! yielded before its check. A block that fails it is asked of the next
//! peer, one by one, as before.
//!
//! A peer that times out, answers garbage or sends a block whose hash does
//! not match is put in a penalty box for [`PEER_PENALTY`] and skipped. When
//! no peer delivers a block the stream ends early: the planner asks the next
//! source (finally the origin) for what is left. Errors are never yielded
//! for a single missing block, because an error ends the planner's run.
//!
//! A run of at least [`GETBLKLIST_MIN_RUN`] blocks starts with MSG_GETBLKLIST
//! to each peer (as Windows does); only blocks some peer lists are requested,
//! and the others stay pending for the next source. Shorter runs go straight
//! to GETBLKS and end at the first block no peer has.
//! Blocks of a run are requested [`BLOCKS_IN_FLIGHT_PER_RUN`] at a time and
//! yielded in order (one GETBLKS per block is a round trip each; a window
//! hides the latency), and at most [`MAX_REQUESTS_PER_PEER`] requests go to
//! one peer at once across all runs (Windows answers a client over its
//! limit with empty blocks, which would look like "not available").
//!
//! [`fetch::BlockSource`]: crate::fetch::BlockSource

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, StreamExt};

use super::book::PeerRole;
use super::client::{BlockRequest, PeerClient, RetrievalError, Unverified};
use crate::fetch::{Block, BlockSource, SegmentPlan, SourceError, SourceKind};
use crate::metrics::Metrics;
use crate::proto::pccrc::SegmentId;

/// How long a misbehaving peer is skipped: long enough not to pay its
/// timeout on every block, short enough that a transient hiccup heals.
pub const PEER_PENALTY: Duration = Duration::from_secs(60);
/// Most peers asked for one block: bounds the worst case (all slow) to this
/// many request timeouts per block.
pub const MAX_PEERS_PER_BLOCK: usize = 4;
/// Runs at least this long first ask each peer which blocks it holds
/// (MSG_GETBLKLIST), as Windows does; shorter runs go straight to GETBLKS.
pub const GETBLKLIST_MIN_RUN: u32 = 4;
/// GETBLKS requests one run keeps in flight (ordered window).
pub const BLOCKS_IN_FLIGHT_PER_RUN: usize = 16;
/// Blocks of a run hash-checked together: SHA-256 runs in 16 AVX-512 lanes
/// ([`PeerClient::verify_blocks`]), so a batch of 16 costs about half the
/// CPU of 16 single passes.
pub const VERIFY_BATCH: usize = 16;
/// Concurrent requests to one peer across every run of this source: well
/// under a Windows peer's per-client limit (64).
pub const MAX_REQUESTS_PER_PEER: usize = 32;

/// Where the peers holding a segment are (discovery, or a fixed hosted cache).
pub trait PeerLocator: Send + Sync + std::fmt::Debug {
    /// Peers that may hold `id`, best first.
    fn peers(&self, id: &SegmentId) -> BoxFuture<'static, Vec<SocketAddr>>;
}

/// A fixed list of peers for every segment (a configured hosted cache).
#[derive(Debug, Clone)]
pub struct StaticPeers(pub Vec<SocketAddr>);

impl PeerLocator for StaticPeers {
    fn peers(&self, _id: &SegmentId) -> BoxFuture<'static, Vec<SocketAddr>> {
        let peers = self.0.clone();
        Box::pin(async move { peers })
    }
}

/// A fixed peer list that a configuration reload can replace
/// (`[proxy] peers`, the `[upstream_hosted_cache]` address).
#[derive(Debug, Clone)]
pub struct SharedPeers(Arc<std::sync::RwLock<Arc<[SocketAddr]>>>);

impl SharedPeers {
    /// A list holding `peers`.
    pub fn new(peers: Vec<SocketAddr>) -> Self {
        SharedPeers(Arc::new(std::sync::RwLock::new(peers.into())))
    }

    /// Replace the list; fetches already running keep the old one.
    pub fn set(&self, peers: Vec<SocketAddr>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = peers.into();
    }

    /// The current list.
    pub fn get(&self) -> Arc<[SocketAddr]> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl PeerLocator for SharedPeers {
    fn peers(&self, _id: &SegmentId) -> BoxFuture<'static, Vec<SocketAddr>> {
        let peers = self.get().to_vec();
        Box::pin(async move { peers })
    }
}

/// PCCRR peers as a block source for the fetch planner.
#[derive(Debug, Clone)]
pub struct PeerSource {
    kind: SourceKind,
    locator: Arc<dyn PeerLocator>,
    client: PeerClient,
    penalised: Arc<DashMap<SocketAddr, Instant>>,
    per_peer: Arc<DashMap<SocketAddr, Arc<tokio::sync::Semaphore>>>,
    metrics: Option<Arc<Metrics>>,
}

impl PeerSource {
    /// A source of `kind` ([`SourceKind::Peer`] or [`SourceKind::HostedCache`])
    /// asking the peers `locator` names.
    pub fn new(kind: SourceKind, locator: Arc<dyn PeerLocator>, client: PeerClient) -> Self {
        PeerSource {
            kind,
            locator,
            client,
            penalised: Arc::new(DashMap::new()),
            per_peer: Arc::new(DashMap::new()),
            metrics: None,
        }
    }

    /// Record every exchange in `metrics`' [peer book](super::PeerBook)
    /// (for `/status`).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn role(&self) -> PeerRole {
        match self.kind {
            SourceKind::HostedCache => PeerRole::HostedCache,
            _ => PeerRole::Peer,
        }
    }

    /// Book an exchange's outcome; `bytes` of a delivered block.
    fn book(&self, peer: SocketAddr, outcome: Result<Option<u64>, &RetrievalError>) {
        let Some(m) = &self.metrics else { return };
        match outcome {
            Ok(bytes) => m.peers.success(self.role(), peer, bytes),
            // "Not held" is an answer: the peer is reachable.
            Err(e) if !e.penalise() => m.peers.success(self.role(), peer, None),
            Err(e) => m
                .peers
                .failure(self.role(), peer, e.kind(), Some(PEER_PENALTY)),
        }
    }

    /// Whether `peer` is currently being skipped.
    pub fn is_penalised(&self, peer: &SocketAddr) -> bool {
        match self.penalised.get(peer).map(|until| *until) {
            Some(until) if until > Instant::now() => true,
            Some(_) => {
                self.penalised.remove(peer);
                false
            }
            None => false,
        }
    }

    /// Skip `peer` for [`PEER_PENALTY`]; counted once per penalty (not for
    /// requests that were already in flight when it was imposed).
    fn penalise(&self, peer: SocketAddr, reason: &'static str) {
        let now = Instant::now();
        let before = self.penalised.insert(peer, now + PEER_PENALTY);
        if before.is_some_and(|until| until > now) {
            return;
        }
        if let Some(m) = self.client.metrics() {
            m.retrieval_peer_penalties
                .get_or_create(&[("source", self.kind.as_str()), ("reason", reason)])
                .inc();
        }
    }

    /// For each block of `blocks`, the peers (of the first
    /// [`MAX_PEERS_PER_BLOCK`] usable ones) whose BLKLIST says they hold it.
    async fn holders(
        &self,
        seg: &SegmentPlan,
        peers: &[SocketAddr],
        blocks: &Range<u32>,
    ) -> Vec<(u32, Vec<SocketAddr>)> {
        let wanted = vec![crate::proto::pccrr::BlockRange {
            index: blocks.start,
            count: blocks.end - blocks.start,
        }];
        let mut lists = Vec::new();
        for &peer in peers
            .iter()
            .filter(|p| !self.is_penalised(p))
            .take(MAX_PEERS_PER_BLOCK)
        {
            let res = self.client.block_list(peer, seg.id, wanted.clone()).await;
            self.book(peer, res.as_ref().map(|_| None));
            match res {
                Ok(list) => lists.push((peer, list.ranges)),
                Err(e) if e.penalise() => {
                    tracing::debug!(%peer, segment = %seg.id, error = %e, "peer penalised");
                    self.penalise(peer, e.kind());
                }
                Err(_) => {}
            }
        }
        blocks
            .clone()
            .filter_map(|i| {
                let who: Vec<SocketAddr> = lists
                    .iter()
                    .filter(|(_, ranges)| {
                        ranges
                            .iter()
                            .any(|r| i >= r.index && r.end().is_some_and(|end| i < end))
                    })
                    .map(|(p, _)| *p)
                    .collect();
                (!who.is_empty()).then_some((i, who))
            })
            .collect()
    }

    /// The plan's request for block `index`; `None` when the plan does not
    /// list it.
    fn request(seg: &SegmentPlan, index: u32) -> Option<BlockRequest> {
        Some(BlockRequest {
            segment_id: seg.id,
            index,
            kp: seg.secret,
            expected_len: seg.block_len(index)?,
            hash_algo: seg.algo,
            expected_hash: *seg.block_hashes.get(usize::try_from(index).ok()?)?,
        })
    }

    /// Block `index` decrypted (not yet hash-checked) from the first peer
    /// that sends one, and the peers after it (to ask should its hash be
    /// wrong).
    async fn first_unverified(
        &self,
        seg: &SegmentPlan,
        peers: &[SocketAddr],
        index: u32,
    ) -> Option<(Unverified, Vec<SocketAddr>)> {
        let want = Self::request(seg, index)?;
        let candidates: Vec<SocketAddr> = peers
            .iter()
            .filter(|p| !self.is_penalised(p))
            .take(MAX_PEERS_PER_BLOCK)
            .copied()
            .collect();
        for (n, &peer) in candidates.iter().enumerate() {
            let Ok(_permit) = self.permit(peer).acquire_owned().await else {
                continue;
            };
            match self.client.fetch_unverified(peer, &want).await {
                Ok(b) => return Some((b, candidates.get(n + 1..).unwrap_or_default().to_vec())),
                Err(e) => self.failed(seg, peer, index, &e),
            }
        }
        None
    }

    /// Hash-check a batch of blocks from [`first_unverified`] together (one
    /// multi-buffer SHA-256 pass); a block that fails is asked of the
    /// remaining peers one by one ([`one_block`]), its sender penalised.
    /// In the batch's order; `None` for a block no peer delivered.
    async fn verify_batch(
        &self,
        seg: &SegmentPlan,
        batch: Vec<Option<(Unverified, Vec<SocketAddr>)>>,
    ) -> Vec<Option<Block>> {
        let mut fetched = Vec::with_capacity(batch.len());
        // Per batch position: (index, sender, other peers), or `None` for a
        // block no peer sent (kept in place: a short run ends there).
        let mut slots = Vec::with_capacity(batch.len());
        for item in batch {
            slots.push(item.map(|(b, others)| {
                let slot = (b.index(), b.peer, others);
                fetched.push(b);
                slot
            }));
        }
        let mut verdicts = self.client.verify_blocks(fetched).into_iter();
        let mut out = Vec::with_capacity(slots.len());
        for slot in slots {
            let Some((index, peer, others)) = slot else {
                out.push(None);
                continue;
            };
            match verdicts.next() {
                Some(Ok(b)) => {
                    self.book(peer, Ok(Some(b.data.len() as u64)));
                    out.push(Some(Block {
                        index,
                        data: b.data,
                    }));
                }
                Some(Err(e)) => {
                    self.failed(seg, peer, index, &e);
                    out.push(self.one_block(seg, &others, index).await);
                }
                // verify_blocks answers every block; never reached.
                None => out.push(None),
            }
        }
        out
    }

    /// Book a failed exchange and penalise the peer when it misbehaved.
    fn failed(&self, seg: &SegmentPlan, peer: SocketAddr, index: u32, e: &RetrievalError) {
        self.book(peer, Err(e));
        if e.penalise() {
            tracing::debug!(%peer, segment = %seg.id, block = index, error = %e, "peer penalised");
            self.penalise(peer, e.kind());
        }
    }

    /// The limit on requests in flight to `peer`.
    fn permit(&self, peer: SocketAddr) -> Arc<tokio::sync::Semaphore> {
        self.per_peer
            .entry(peer)
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(MAX_REQUESTS_PER_PEER)))
            .clone()
    }

    /// The blocks `wanted` names, each with the peers to ask in order, in
    /// that order: at most [`BLOCKS_IN_FLIGHT_PER_RUN`] exchanges at once,
    /// hash-checked [`VERIFY_BATCH`] at a time. `None` for a block no peer
    /// delivered verified.
    fn fetch_verified<W, P>(
        &self,
        seg: Arc<SegmentPlan>,
        wanted: W,
    ) -> BoxStream<'static, Option<Block>>
    where
        W: IntoIterator<Item = (u32, P)>,
        W::IntoIter: Send + 'static,
        P: AsRef<[SocketAddr]> + Send + 'static,
    {
        let this = self.clone();
        let verify = (self.clone(), seg.clone());
        stream::iter(wanted)
            .map(move |(index, who)| {
                let this = this.clone();
                let seg = seg.clone();
                async move { this.first_unverified(&seg, who.as_ref(), index).await }
            })
            .buffered(BLOCKS_IN_FLIGHT_PER_RUN)
            .chunks(VERIFY_BATCH)
            .then(move |batch| {
                let (this, seg) = verify.clone();
                async move { this.verify_batch(&seg, batch).await }
            })
            .flat_map(stream::iter)
            .boxed()
    }

    /// Block `index` from the first peer that delivers it verified.
    async fn one_block(
        &self,
        seg: &SegmentPlan,
        peers: &[SocketAddr],
        index: u32,
    ) -> Option<Block> {
        let want = Self::request(seg, index)?;
        let candidates = peers
            .iter()
            .filter(|p| !self.is_penalised(p))
            .take(MAX_PEERS_PER_BLOCK);
        for &peer in candidates {
            let Ok(_permit) = self.permit(peer).acquire_owned().await else {
                continue;
            };
            match self.client.fetch_block(peer, &want).await {
                Ok(b) => {
                    self.book(peer, Ok(Some(b.data.len() as u64)));
                    return Some(Block {
                        index,
                        data: b.data,
                    });
                }
                // Not available there, or penalised: try the next peer.
                Err(e) => self.failed(seg, peer, index, &e),
            }
        }
        None
    }
}

impl BlockSource for PeerSource {
    fn kind(&self) -> SourceKind {
        self.kind
    }

    /// [`PeerClient::fetch_block`] returns only blocks whose hash matched
    /// the plan's (`one_block` asks for `seg.block_hashes[index]`).
    fn yields_verified(&self) -> bool {
        true
    }

    fn fetch(
        &self,
        seg: Arc<SegmentPlan>,
        blocks: Range<u32>,
    ) -> BoxStream<'static, Result<Block, SourceError>> {
        let this = self.clone();
        let peers = self.locator.peers(&seg.id);
        stream::once(peers)
            .flat_map(move |peers| {
                let this = this.clone();
                let seg = seg.clone();
                let blocks = blocks.clone();
                if peers.is_empty() {
                    return stream::empty().boxed();
                }
                if let Some(m) = &this.metrics {
                    for p in &peers {
                        m.peers.seen(this.role(), *p);
                    }
                }
                if blocks.end.saturating_sub(blocks.start) >= GETBLKLIST_MIN_RUN {
                    // Ask who holds what, then fetch only held blocks; a block
                    // nobody holds stays pending for the next source.
                    let listed = {
                        let this = this.clone();
                        let seg = seg.clone();
                        async move { this.holders(&seg, &peers, &blocks).await }
                    };
                    return stream::once(listed)
                        .flat_map(move |held| this.fetch_verified(seg.clone(), held))
                        .filter_map(|b| std::future::ready(b.map(Ok)))
                        .boxed();
                }
                let peers: Arc<[SocketAddr]> = peers.into();
                this.fetch_verified(seg, blocks.map(move |index| (index, peers.clone())))
                    // The first block no peer has ends a short run: the
                    // planner takes the rest from the next source.
                    .take_while(|b| std::future::ready(b.is_some()))
                    .filter_map(|b| std::future::ready(b.map(Ok)))
                    .boxed()
            })
            .boxed()
    }
}
