//! [`BlockSource`] for the persistent [`Store`]: the retrieval server serves
//! exactly what the store holds, re-checked (CRC32C) on every read.

use bytes::Bytes;
use futures_util::future::BoxFuture;

use super::server::{runs, BlockSource};
use crate::proto::pccrc::{SegmentId, SegmentSecret};
use crate::proto::pccrr::BlockRange;
use crate::store::Store;

impl BlockSource for Store {
    fn segment_secret(&self, id: &SegmentId) -> Option<SegmentSecret> {
        self.meta_arc(id).map(|m| m.secret)
    }

    fn present_ranges(&self, id: &SegmentId, wanted: &[BlockRange]) -> Vec<BlockRange> {
        // At most 512 held blocks per segment: bounded by what is held.
        runs(self.present_blocks(id).into_iter().filter(|i| {
            wanted
                .iter()
                .any(|r| *i >= r.index && r.end().is_some_and(|end| *i < end))
        }))
    }

    fn next_present_block(&self, id: &SegmentId, after: u32) -> Option<u32> {
        self.present_blocks(id).into_iter().find(|&i| i > after)
    }

    fn has_segment(&self, id: &SegmentId) -> bool {
        !self.present_blocks(id).is_empty()
    }

    fn verified_block<'a>(&'a self, id: &'a SegmentId, index: u32) -> BoxFuture<'a, Option<Bytes>> {
        Box::pin(async move {
            match self.get_block(id, index).await {
                Ok(b) => b,
                Err(e) => {
                    // The store already counted and rate-limit-logged it; the
                    // peer just gets "not available".
                    tracing::debug!(segment = %id, block = index, error = %e, "store read failed");
                    None
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::pccrc::{segment_id, segment_secret, server_secret, HashAlgo};
    use crate::store::SegmentMeta;

    #[tokio::test]
    async fn store_serves_held_blocks_only() {
        let algo = HashAlgo::Sha256;
        let blocks: Vec<Vec<u8>> = vec![vec![1u8; 65_536], vec![2u8; 65_536], vec![3u8; 10]];
        let hashes: Vec<_> = blocks.iter().map(|b| algo.hash(b)).collect();
        let cat: Vec<u8> = hashes.iter().flat_map(|h| h.as_bytes().to_vec()).collect();
        let hod = algo.hash(&cat);
        let kp = segment_secret(algo, &server_secret(algo, b"k"), &hod);
        let id = segment_id(algo, &kp, &hod);
        let store = Store::open_in_memory(64 << 20);
        store
            .put_meta(
                id,
                SegmentMeta {
                    algo,
                    size: 65_536 * 2 + 10,
                    block_size: 65_536,
                    hash_of_data: hod,
                    secret: kp,
                    block_hashes: hashes,
                },
            )
            .await
            .unwrap();
        store
            .put_block(&id, 0, Bytes::from(blocks[0].clone()))
            .await
            .unwrap();
        store
            .put_block(&id, 2, Bytes::from(blocks[2].clone()))
            .await
            .unwrap();

        assert_eq!(store.segment_secret(&id), Some(kp));
        assert_eq!(
            store.present_ranges(&id, &[BlockRange { index: 0, count: 3 }]),
            vec![
                BlockRange { index: 0, count: 1 },
                BlockRange { index: 2, count: 1 }
            ]
        );
        assert_eq!(store.next_present_block(&id, 0), Some(2));
        assert!(store.has_segment(&id));
        assert_eq!(
            store.verified_block(&id, 2).await.as_deref(),
            Some(&blocks[2][..])
        );
        assert_eq!(store.verified_block(&id, 1).await, None);
        let other = SegmentId::from_slice(&[0; 32]).unwrap();
        assert!(!store.has_segment(&other));
        assert_eq!(store.segment_secret(&other), None);
    }
}
