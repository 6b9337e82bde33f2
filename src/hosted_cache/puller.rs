//! The production [`Puller`] and [`SegmentCatalog`]: pull v1 segments from
//! the offering client with the PCCRR [`PeerClient`] and keep them in the
//! block [`Store`], which verifies every block against its hash at ingest.
//!
//! v2 offers carry only the segment id, so a v2 hosted cache keeps the
//! encrypted MSG_BLK bytes as received and replays them (PROTOCOL.md §8.6):
//! [`StorePuller`] with a [`ReplayStore`] pulls v2 jobs into it, and
//! [`CacheHoldings`] serves both stores to PCCRR clients.

use bytes::Bytes;
use futures_util::future::BoxFuture;

use super::offers::{Holding, SegmentCatalog};
use super::queue::{PullError, PullJob, PullKind, Puller};
use super::replay::ReplayStore;
use crate::proto::pccrc::{SegmentId, SegmentSecret, BLOCK_SIZE, MAX_BLOCKS_PER_SEGMENT};
use crate::proto::pccrr::BlockRange;
use crate::retrieval::{BlockRequest, PeerClient, RawBlock, RetrievalError};
use crate::store::{SegmentMeta, Store, StoreError};

/// What a hosted cache holds: verified v1 segments (Kp known) in the block
/// [`Store`], and replayable v2 blocks in the [`ReplayStore`].
#[derive(Debug, Clone)]
pub struct CacheHoldings {
    /// Verified blocks with their segment metadata.
    pub store: Store,
    /// Encrypted blocks kept as received.
    pub replay: ReplayStore,
}

impl SegmentCatalog for CacheHoldings {
    fn holding(&self, id: &SegmentId) -> Holding {
        // Replay-only segments report Nothing: the descriptor (not kept)
        // says how many blocks a segment has, and a repeated pull skips the
        // blocks already held without asking the client for them.
        self.store.holding(id)
    }
}

impl crate::retrieval::BlockSource for CacheHoldings {
    fn segment_secret(&self, id: &SegmentId) -> Option<SegmentSecret> {
        crate::retrieval::BlockSource::segment_secret(&self.store, id)
    }

    fn present_ranges(&self, id: &SegmentId, wanted: &[BlockRange]) -> Vec<BlockRange> {
        let mut held = self.store.present_blocks(id);
        held.extend(self.replay.blocks(id));
        held.sort_unstable();
        held.dedup();
        crate::retrieval::server::runs(held.into_iter().filter(|i| {
            wanted
                .iter()
                .any(|r| *i >= r.index && r.end().is_some_and(|end| *i < end))
        }))
    }

    fn has_segment(&self, id: &SegmentId) -> bool {
        !self.store.present_blocks(id).is_empty() || !self.replay.blocks(id).is_empty()
    }

    fn verified_block<'a>(&'a self, id: &'a SegmentId, index: u32) -> BoxFuture<'a, Option<Bytes>> {
        crate::retrieval::BlockSource::verified_block(&self.store, id, index)
    }

    fn replay_block<'a>(
        &'a self,
        id: &'a SegmentId,
        index: u32,
    ) -> BoxFuture<'a, Option<RawBlock>> {
        Box::pin(self.replay.get(id, index))
    }
}

impl SegmentCatalog for Store {
    fn holding(&self, id: &SegmentId) -> Holding {
        match self.meta_arc(id) {
            None => Holding::Nothing,
            Some(meta) => {
                if self.present_blocks(id).len() >= meta.block_count() as usize {
                    Holding::Complete
                } else {
                    Holding::HashInfo
                }
            }
        }
    }
}

/// Pulls segments block by block (MSG_GETBLKS): v1 into a [`Store`]
/// (decrypted and verified), v2 into a [`ReplayStore`] (as received).
#[derive(Debug, Clone)]
pub struct StorePuller {
    client: PeerClient,
    store: Store,
    replay: Option<ReplayStore>,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

impl StorePuller {
    /// A puller fetching with `client` into `store`; without a replay store
    /// v2 jobs are refused as unsupported.
    pub fn new(client: PeerClient, store: Store) -> Self {
        StorePuller {
            client,
            store,
            replay: None,
            metrics: None,
        }
    }

    /// Count pulled bytes in `metrics`.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn count_bytes(&self, version: &'static str, n: usize) {
        if let Some(m) = &self.metrics {
            m.hosted_cache_pulled_bytes
                .get_or_create(&[("version", version)])
                .inc_by(n as u64);
        }
    }

    /// Keep v2 blocks in `replay`.
    pub fn with_replay(mut self, replay: ReplayStore) -> Self {
        self.replay = Some(replay);
        self
    }

    /// v2: every block of the descriptor's segment, kept as received.
    async fn pull_v2(
        &self,
        job: &PullJob,
        d: &crate::proto::pchc::SegmentDescriptor,
    ) -> Result<(), PullError> {
        let Some(replay) = &self.replay else {
            return Err(PullError::Unsupported {
                what: "v2 block replay storage",
            });
        };
        let id = job.id;
        if d.block_size == 0 {
            return Err(PullError::Unsupported {
                what: "BATCHED_OFFER with BlockSize 0",
            });
        }
        let count = d.segment_size.div_ceil(d.block_size);
        if count > MAX_BLOCKS_PER_SEGMENT {
            return Err(PullError::Unsupported {
                what: "BATCHED_OFFER with more than 512 blocks per segment",
            });
        }
        let mut missing = 0u32;
        for index in 0..count {
            if replay.has(&id, index) || self.store.has_block(&id, index) {
                continue;
            }
            let max_plain = (d.segment_size - index * d.block_size).min(d.block_size) as usize;
            match self
                .client
                .fetch_raw_block(job.source, id, index, max_plain)
                .await
            {
                Ok(raw) => {
                    let n = raw.block.len();
                    let kept = replay
                        .put(id, index, raw)
                        .await
                        .map_err(|e| PullError::Store(e.to_string()))?;
                    if kept {
                        self.count_bytes("v2", n);
                    }
                }
                Err(RetrievalError::NotAvailable { .. }) => missing += 1,
                Err(e) => return Err(peer_err(e)),
            }
        }
        if missing > 0 {
            tracing::debug!(segment = %id, source = %job.source, missing, "client lacked some blocks");
        }
        Ok(())
    }
}

fn store_err(e: StoreError) -> PullError {
    PullError::Store(e.to_string())
}

fn peer_err(e: RetrievalError) -> PullError {
    match e {
        RetrievalError::HashMismatch { peer } => PullError::Peer {
            source_addr: peer,
            reason: "block failed its hash check".into(),
        },
        e => PullError::Peer {
            source_addr: e.peer(),
            reason: e.to_string(),
        },
    }
}

impl Puller for StorePuller {
    async fn pull(&self, job: &PullJob) -> Result<(), PullError> {
        let id = job.id;
        match &job.kind {
            PullKind::V1(seg) => {
                if !seg.complete {
                    // SegmentMeta needs every block hash (it re-checks HoD).
                    return Err(PullError::Unsupported {
                        what: "SEGMENT_INFO with a partial block hash list",
                    });
                }
                let meta = SegmentMeta {
                    algo: seg.algo,
                    size: seg.segment_size,
                    block_size: BLOCK_SIZE,
                    hash_of_data: seg.hash_of_data,
                    secret: seg.secret,
                    block_hashes: seg.block_hashes.clone(),
                };
                self.store.put_meta(id, meta).await.map_err(store_err)?;
            }
            PullKind::V1Stored => {}
            PullKind::V2(d) => return self.pull_v2(job, d).await,
        }
        let meta = self
            .store
            .meta_arc(&id)
            .ok_or_else(|| PullError::Store(format!("metadata for {id} vanished")))?;
        let mut missing = 0u32;
        for index in 0..meta.block_count() {
            if self.store.has_block(&id, index) {
                continue;
            }
            let (Some(len), Some(hash)) = (meta.block_len(index), meta.block_hash(index)) else {
                break;
            };
            let want = BlockRequest {
                segment_id: id,
                index,
                kp: meta.secret,
                expected_len: len as usize,
                hash_algo: meta.algo,
                expected_hash: hash,
            };
            match self.client.fetch_block(job.source, &want).await {
                Ok(block) => {
                    let n = block.data.len();
                    self.store
                        .put_block(&id, index, block.data)
                        .await
                        .map_err(store_err)?;
                    self.count_bytes("v1", n);
                }
                // The client may hold only the blocks of the range it read.
                Err(RetrievalError::NotAvailable { .. }) => missing += 1,
                Err(e) => return Err(peer_err(e)),
            }
        }
        if missing > 0 {
            tracing::debug!(segment = %id, source = %job.source, missing, "client lacked some blocks");
        }
        Ok(())
    }
}
