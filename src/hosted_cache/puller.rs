//! The production [`Puller`] and [`SegmentCatalog`]: pull v1 segments from
//! the offering client with the PCCRR [`PeerClient`] and keep them in the
//! block [`Store`], which verifies every block against its hash at ingest.
//!
//! v2 offers carry only the segment id, so a v2 hosted cache must keep the
//! encrypted MSG_BLK bytes as received and replay them (PROTOCOL.md §8.6);
//! the store holds verified plaintext only, so v2 jobs are refused here as
//! `unsupported` until a replay store exists.

use super::offers::{Holding, SegmentCatalog};
use super::queue::{PullError, PullJob, PullKind, Puller};
use crate::proto::pccrc::{SegmentId, BLOCK_SIZE};
use crate::retrieval::{BlockRequest, PeerClient, RetrievalError};
use crate::store::{SegmentMeta, Store, StoreError};

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

/// Pulls v1 segments block by block (MSG_GETBLKS) into a [`Store`].
#[derive(Debug, Clone)]
pub struct StorePuller {
    client: PeerClient,
    store: Store,
}

impl StorePuller {
    /// A puller fetching with `client` into `store`.
    pub fn new(client: PeerClient, store: Store) -> Self {
        StorePuller { client, store }
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
            PullKind::V2(_) => {
                return Err(PullError::Unsupported {
                    what: "v2 block replay storage",
                })
            }
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
                    self.store
                        .put_block(&id, index, block.data)
                        .await
                        .map_err(store_err)?;
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
