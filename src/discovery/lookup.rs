//! The block [`Store`] as the responder's [`SegmentLookup`]: a Probe is
//! answered from the store's in-memory presence map, so every segment the
//! store holds verified blocks of is answerable the moment they are
//! published, and forgotten when they are evicted, with no copy to keep in
//! sync. The id is looked up as given, so a v1 Probe for a v2 segment (as
//! iPXE sends) is answered too.

use crate::proto::pccrc::SegmentId;
use crate::proto::pccrd::engine::{LocalSegment, SegmentLookup};
use crate::store::Store;

impl SegmentLookup for Store {
    fn lookup(&self, id: &SegmentId) -> Option<LocalSegment> {
        let (present, total) = self.block_presence(id)?;
        (present > 0).then_some(LocalSegment {
            block_count: present,
            complete: present >= total,
            // The store does not record when a segment arrived.
            age: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::pccrc::{server_secret, HashAlgo};
    use crate::store::SegmentMeta;
    use bytes::Bytes;

    #[tokio::test]
    async fn lookup_follows_what_the_store_holds() {
        let store = Store::open_in_memory(1 << 30);
        let data = vec![7u8; 70_000]; // two v1 blocks
        let (id, meta) = SegmentMeta::hash_v1(
            HashAlgo::Sha256,
            &server_secret(HashAlgo::Sha256, b"ks"),
            &data,
        );
        assert_eq!(store.lookup(&id), None);
        store.put_meta(id, meta).await.unwrap();
        assert_eq!(store.lookup(&id), None, "metadata alone offers nothing");
        store
            .put_block(&id, 1, Bytes::copy_from_slice(&data[65536..]))
            .await
            .unwrap();
        assert_eq!(
            store.lookup(&id),
            Some(LocalSegment {
                block_count: 1,
                complete: false,
                age: None
            })
        );
        store
            .put_block(&id, 0, Bytes::copy_from_slice(&data[..65536]))
            .await
            .unwrap();
        assert_eq!(
            store.lookup(&id),
            Some(LocalSegment {
                block_count: 2,
                complete: true,
                age: None
            })
        );
    }
}
