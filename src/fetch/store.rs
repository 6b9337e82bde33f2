//! The persistent [`Store`] behind the planner's [`BlockStore`] seam.
//!
//! Metadata is recorded lazily, on the first verified block of a segment.
//! Store failures (disk full, IO errors, metadata the store refuses) are the
//! store's to count and log; the planner serves the verified block anyway.
//! The planner hands over only blocks it (or a `yields_verified` source)
//! has hashed against the plan, so they go in with
//! [`Store::put_verified_block`]: no second hash pass.

use bytes::Bytes;
use futures_util::future::BoxFuture;

use super::{BlockStore, SegmentPlan};
use crate::proto::pccrc::HashAlgo;
use crate::store::{SegmentMeta, Store};

impl SegmentPlan {
    /// The store's metadata record for this segment (v2: no block list).
    pub fn meta(&self) -> SegmentMeta {
        SegmentMeta {
            algo: if self.v2 {
                HashAlgo::Sha512Trunc
            } else {
                self.algo
            },
            size: self.size,
            block_size: self.block_size,
            hash_of_data: self.hash_of_data,
            secret: self.secret,
            block_hashes: if self.v2 {
                Vec::new()
            } else {
                self.block_hashes.clone()
            },
        }
    }
}

impl BlockStore for Store {
    fn get(&self, seg: &SegmentPlan, index: u32) -> BoxFuture<'static, Option<Bytes>> {
        let store = self.clone();
        let id = seg.id;
        Box::pin(async move {
            match store.get_block(&id, index).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!(segment = %id, block = index, error = %e, "store read failed");
                    None
                }
            }
        })
    }

    fn get_run(&self, seg: &SegmentPlan, first: u32, max: u32) -> BoxFuture<'static, Vec<Bytes>> {
        let store = self.clone();
        let id = seg.id;
        Box::pin(async move {
            match store.get_blocks(&id, first, max).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!(segment = %id, block = first, error = %e, "store read failed");
                    Vec::new()
                }
            }
        })
    }

    fn get_run_now(&self, seg: &SegmentPlan, first: u32, max: u32) -> Option<Vec<Bytes>> {
        self.get_blocks_cached(&seg.id, first, max)
    }

    fn has(&self, seg: &SegmentPlan, index: u32) -> bool {
        self.has_block(&seg.id, index)
    }

    fn put(&self, seg: &SegmentPlan, index: u32, data: Bytes) -> BoxFuture<'static, ()> {
        let store = self.clone();
        let id = seg.id;
        let meta = self.meta_arc(&id).is_none().then(|| seg.meta());
        let checked_hash = usize::try_from(index)
            .ok()
            .and_then(|i| seg.block_hashes.get(i))
            .copied();
        Box::pin(async move {
            if let Some(meta) = meta {
                if let Err(e) = store.put_meta(id, meta).await {
                    tracing::debug!(segment = %id, error = %e, "store refused segment metadata");
                    return;
                }
            }
            let put = match checked_hash {
                Some(h) => store.put_verified_block(&id, index, data, &h).await,
                None => store.put_block(&id, index, data).await,
            };
            if let Err(e) = put {
                tracing::debug!(segment = %id, block = index, error = %e, "store write failed");
            }
        })
    }
}
