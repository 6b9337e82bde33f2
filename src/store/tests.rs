//! Store behaviour tests: in-memory, on real files, and with injected faults.

use super::meta::tests::{v1_segment, v2_segment};
use super::*;
use std::sync::atomic::AtomicU64;

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

fn block(data: &[u8], meta: &SegmentMeta, index: u32) -> Bytes {
    let start = meta.block_offset(index) as usize;
    let len = meta.block_len(index).unwrap() as usize;
    Bytes::copy_from_slice(&data[start..start + len])
}

/// `n` one-block segments of 1000 bytes (contents seeded from `seed`), and
/// the bytes each one accounts for in the store.
fn one_block_segments(seed: u8, n: u8) -> (Vec<(SegmentId, SegmentMeta, Vec<u8>)>, u64) {
    let seg_len = 1000usize;
    let segs: Vec<_> = (0..n)
        .map(|i| {
            let d = pattern(seed + i, seg_len);
            let (id, m) = v1_segment(&d);
            (id, m, d)
        })
        .collect();
    let one = record_bytes(&segs[0].1) + seg_len as u64;
    (segs, one)
}

/// Store `n` one-block v1 segments of `pattern(first_seed + i, len)`, in
/// order; their ids.
async fn put_one_block_segments(
    store: &Store,
    first_seed: u8,
    n: u8,
    len: usize,
) -> Vec<SegmentId> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(put_one_block(store, first_seed + i, len).await);
    }
    ids
}

/// Store a one-block v1 segment of `pattern(seed, len)` (`len` ≤ 64 KiB)
/// with its block; its id.
async fn put_one_block(store: &Store, seed: u8, len: usize) -> SegmentId {
    let data = pattern(seed, len);
    let (id, meta) = v1_segment(&data);
    store.put_meta(id, meta).await.unwrap();
    store.put_block(&id, 0, Bytes::from(data)).await.unwrap();
    id
}

#[tokio::test]
async fn put_then_get_returns_the_block() {
    let store = Store::open_in_memory(1 << 30);
    let data = pattern(1, 150_000);
    let (id, meta) = v1_segment(&data);
    store.put_meta(id, meta.clone()).await.unwrap();
    assert_eq!(store.meta(&id).await, Some(meta.clone()));
    assert!(!store.has_block(&id, 1));
    store
        .put_block(&id, 1, block(&data, &meta, 1))
        .await
        .unwrap();
    assert!(store.has_block(&id, 1));
    assert_eq!(store.present_blocks(&id), vec![1]);
    assert_eq!(
        store.get_block(&id, 1).await.unwrap(),
        Some(block(&data, &meta, 1))
    );
    assert_eq!(store.get_block(&id, 0).await.unwrap(), None);
    let s = store.stats();
    assert_eq!((s.segments, s.blocks), (1, 1));
    assert_eq!(s.used_bytes, record_bytes(&meta) + 65_536);
}

#[tokio::test]
async fn v2_segment_is_stored_as_block_zero() {
    let store = Store::open_in_memory(1 << 30);
    let data = pattern(2, 100_000);
    let (id, meta) = v2_segment(&data);
    store.put_meta(id, meta).await.unwrap();
    store
        .put_block(&id, 0, Bytes::from(data.clone()))
        .await
        .unwrap();
    assert_eq!(store.get_block(&id, 0).await.unwrap().unwrap(), data);
}

#[tokio::test]
async fn hash_mismatch_is_rejected_and_never_stored() {
    let store = Store::open_in_memory(1 << 30);
    let data = pattern(3, 70_000);
    let (id, meta) = v1_segment(&data);
    store.put_meta(id, meta.clone()).await.unwrap();
    let mut bad = block(&data, &meta, 0).to_vec();
    bad[100] ^= 1;
    let err = store.put_block(&id, 0, Bytes::from(bad)).await.unwrap_err();
    assert!(
        matches!(err, StoreError::HashMismatch { index: 0, .. }),
        "{err}"
    );
    assert!(err.is_bad_input());
    assert!(!store.has_block(&id, 0));
    assert_eq!(store.get_block(&id, 0).await.unwrap(), None);
}

#[tokio::test]
async fn put_verified_block_stores_without_rehash_but_checks_the_claimed_hash() {
    let store = Store::open_in_memory(1 << 30);
    let data = pattern(5, 150_000);
    let (id, meta) = v1_segment(&data);
    let other = v1_segment(&pattern(6, 150_000)).1;
    store.put_meta(id, meta.clone()).await.unwrap();
    let hash0 = meta.block_hash(0).unwrap();
    // A hash that is not this block's (another segment's, or another
    // block's) is refused and nothing is stored.
    for wrong in [other.block_hash(0).unwrap(), meta.block_hash(2).unwrap()] {
        let err = store
            .put_verified_block(&id, 0, block(&data, &meta, 0), &wrong)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::HashMismatch { index: 0, .. }),
            "{err}"
        );
    }
    assert!(!store.has_block(&id, 0));
    let err = store
        .put_verified_block(&id, 0, Bytes::from_static(b"short"), &hash0)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "bad_length");
    let err = store
        .put_verified_block(&id, 9, block(&data, &meta, 0), &hash0)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "block_out_of_range");
    // The right claim: stored, and read back through the CRC check.
    store
        .put_verified_block(&id, 0, block(&data, &meta, 0), &hash0)
        .await
        .unwrap();
    assert_eq!(
        store.get_block(&id, 0).await.unwrap(),
        Some(block(&data, &meta, 0))
    );
    // v2: the one block's hash is the segment's HoD.
    let data2 = pattern(7, 100_000);
    let (id2, meta2) = v2_segment(&data2);
    store.put_meta(id2, meta2.clone()).await.unwrap();
    store
        .put_verified_block(&id2, 0, Bytes::from(data2.clone()), &meta2.hash_of_data)
        .await
        .unwrap();
    assert_eq!(store.get_block(&id2, 0).await.unwrap().unwrap(), data2);
    store.assert_consistent();
}

#[tokio::test]
async fn rejects_wrong_length_unknown_segment_and_out_of_range_block() {
    let store = Store::open_in_memory(1 << 30);
    let data = pattern(4, 70_000);
    let (id, meta) = v1_segment(&data);
    let err = store.put_block(&id, 0, Bytes::new()).await.unwrap_err();
    assert_eq!(err.kind(), "unknown_segment");
    store.put_meta(id, meta.clone()).await.unwrap();
    let err = store.put_block(&id, 0, Bytes::new()).await.unwrap_err();
    assert_eq!(err.kind(), "bad_length");
    let err = store.put_block(&id, 2, Bytes::new()).await.unwrap_err();
    assert_eq!(err.kind(), "block_out_of_range");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_put_meta_then_put_block_always_finds_the_segment() {
    // Two writers race to record the same new segment and then store a block
    // each; whichever put_meta loses must not return before the segment is
    // published (it once did when both landed in one writer batch, and the
    // following put_block failed with UnknownSegment).
    for round in 0..200u32 {
        let store = Store::open_in_memory(1 << 30);
        let data = pattern(round as u8, 3 * 65_536);
        let (id, meta) = v1_segment(&data);
        let tasks: Vec<_> = (0..3u32)
            .map(|index| {
                let store = store.clone();
                let meta = meta.clone();
                let b = block(&data, &meta, index);
                tokio::spawn(async move {
                    store.put_meta(id, meta).await.unwrap();
                    store.put_block(&id, index, b).await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(store.present_blocks(&id), vec![0, 1, 2], "round {round}");
    }
}

#[tokio::test]
async fn put_meta_rejects_meta_not_deriving_the_id_and_is_idempotent() {
    let store = Store::open_in_memory(1 << 30);
    let (id, meta) = v1_segment(b"one");
    let (other, _) = v1_segment(b"two");
    let err = store.put_meta(other, meta.clone()).await.unwrap_err();
    assert_eq!(err.kind(), "invalid_meta");
    assert_eq!(store.meta(&other).await, None);
    store.put_meta(id, meta.clone()).await.unwrap();
    store.put_meta(id, meta.clone()).await.unwrap();
    assert_eq!(store.stats().segments, 1);
    // Different (invalid) metadata under a known id is still rejected.
    let mut wrong = meta;
    wrong.block_hashes.clear();
    assert_eq!(
        store.put_meta(id, wrong).await.unwrap_err().kind(),
        "invalid_meta"
    );
}

/// An in-memory store holding every block of a v1 segment over `data`.
async fn store_with_segment(data: &[u8]) -> (Arc<MemBackend>, Store, SegmentId, SegmentMeta) {
    let mem = Arc::new(MemBackend::new());
    let store = Store::open_with_backend(mem.clone(), 1 << 30)
        .await
        .unwrap();
    let (id, meta) = v1_segment(data);
    store.put_meta(id, meta.clone()).await.unwrap();
    for i in 0..meta.block_count() {
        store
            .put_block(&id, i, block(data, &meta, i))
            .await
            .unwrap();
    }
    (mem, store, id, meta)
}

#[tokio::test]
async fn corrupt_data_is_detected_on_read_evicted_and_counted() {
    let data = pattern(5, 140_000);
    let (mem, store, id, meta) = store_with_segment(&data).await;
    assert!(mem.corrupt(&data_file_name(&id), 65_536 + 10, b"XX"));
    assert_eq!(store.get_block(&id, 1).await.unwrap(), None);
    assert!(!store.has_block(&id, 1));
    assert_eq!(store.stats().verify_failures, 1);
    // The neighbours are unaffected, and the block can be fetched again.
    assert!(store.get_block(&id, 0).await.unwrap().is_some());
    assert!(store.get_block(&id, 2).await.unwrap().is_some());
    store
        .put_block(&id, 1, block(&data, &meta, 1))
        .await
        .unwrap();
    assert_eq!(
        store.get_block(&id, 1).await.unwrap(),
        Some(block(&data, &meta, 1))
    );
    assert_eq!(store.stats().verify_failures, 1);
}

#[tokio::test]
async fn small_blocks_are_served_from_memory_once_read_and_only_while_current() {
    // One 64 KiB block and a 4 464-byte tail: only the tail is kept hot.
    let data = pattern(9, 70_000);
    let (mem, store, id, meta) = store_with_segment(&data).await;
    for i in 0..2 {
        assert_eq!(
            store.get_block(&id, i).await.unwrap(),
            Some(block(&data, &meta, i))
        );
    }
    let name = data_file_name(&id);
    assert!(mem.corrupt(&name, 10, b"XX"));
    assert!(mem.corrupt(&name, 65_536 + 10, b"XX"));
    // The full block is read from disk again: caught.
    assert_eq!(store.get_block(&id, 0).await.unwrap(), None);
    assert_eq!(store.stats().verify_failures, 1);
    // The tail comes from memory, checked when it was read: right bytes,
    // through every read path.
    assert_eq!(
        store.get_block(&id, 1).await.unwrap(),
        Some(block(&data, &meta, 1))
    );
    assert_eq!(
        store.get_blocks(&id, 1, 4).await.unwrap(),
        vec![block(&data, &meta, 1)]
    );
    assert_eq!(
        store.get_blocks_cached(&id, 1, 4),
        Some(vec![block(&data, &meta, 1)])
    );
    // `verify` reads the disk: the damage is found and the block evicted,
    // after which the memory copy is no longer used.
    let r = store.verify_all(|_| {}).await;
    assert_eq!(r.bad, 1);
    assert!(!store.has_block(&id, 1));
    assert_eq!(store.get_block(&id, 1).await.unwrap(), None);
    assert_eq!(store.get_blocks_cached(&id, 1, 4), Some(vec![]));
    // Fetched again: served (and kept hot) afresh.
    store
        .put_block(&id, 1, block(&data, &meta, 1))
        .await
        .unwrap();
    assert_eq!(
        store.get_block(&id, 1).await.unwrap(),
        Some(block(&data, &meta, 1))
    );
}

#[test]
fn hot_blocks_stay_within_their_bound_and_drop_the_least_recently_used() {
    let mut hot = HotBlocks::default();
    let id = |n: usize| {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&(n as u64).to_le_bytes());
        SegmentId::from_slice(&b).unwrap()
    };
    let per = HOT_BLOCK_MAX;
    let fit = HOT_BYTES / per;
    for n in 0..fit {
        hot.insert((id(n), 0), &vec![n as u8; per], 1, 7);
    }
    assert_eq!(hot.bytes, fit * per);
    // Use the first; the next insert drops the second (least recent).
    assert!(hot.get(&(id(0), 0)).is_some());
    hot.insert((id(fit), 0), &vec![1; per], 1, 7);
    assert!(hot.bytes <= HOT_BYTES);
    assert!(hot.get(&(id(0), 0)).is_some());
    assert!(hot.get(&(id(1), 0)).is_none());
    assert!(hot.get(&(id(fit), 0)).is_some());
    // Too large to keep.
    hot.insert((id(fit + 1), 0), &vec![1; per + 1], 1, 7);
    assert!(hot.get(&(id(fit + 1), 0)).is_none());
    assert_eq!(hot.map.len(), hot.order.len());
    assert_eq!(
        hot.bytes,
        hot.map.values().map(|e| e.data.len()).sum::<usize>()
    );
}

#[tokio::test]
async fn get_blocks_reads_a_run_stops_at_gaps_and_corruption() {
    let mem = Arc::new(MemBackend::new());
    let store = Store::open_with_backend(mem.clone(), 1 << 30)
        .await
        .unwrap();
    let data = pattern(9, 6 * 65_536 + 1000);
    let (id, meta) = v1_segment(&data);
    store.put_meta(id, meta.clone()).await.unwrap();
    // Blocks 0..4 and 5..7 present; 4 missing.
    for i in (0..4).chain(5..7) {
        store
            .put_block(&id, i, block(&data, &meta, i))
            .await
            .unwrap();
    }
    let run = store.get_blocks(&id, 1, 8).await.unwrap();
    assert_eq!(run.len(), 3, "the run ends before the missing block");
    for (n, b) in run.iter().enumerate() {
        assert_eq!(*b, block(&data, &meta, 1 + n as u32));
    }
    // The short last block, and the bound on the run length.
    let tail = store.get_blocks(&id, 5, 8).await.unwrap();
    assert_eq!(tail.len(), 2);
    assert_eq!(tail[1], block(&data, &meta, 6));
    assert_eq!(store.get_blocks(&id, 0, 2).await.unwrap().len(), 2);
    assert!(store.get_blocks(&id, 4, 8).await.unwrap().is_empty());
    // A corrupt block ends the run and is evicted and counted.
    assert!(mem.corrupt(&data_file_name(&id), 2 * 65_536 + 5, b"XX"));
    let run = store.get_blocks(&id, 0, 4).await.unwrap();
    assert_eq!(run.len(), 2);
    assert!(!store.has_block(&id, 2));
    assert!(store.has_block(&id, 3));
    assert_eq!(store.stats().verify_failures, 1);
}

#[tokio::test]
async fn eviction_removes_least_recently_used_segments_first_and_respects_the_bound() {
    // Room for two small segments, not three.
    let (segs, one) = one_block_segments(10, 3);
    let store = Store::open_in_memory(2 * one + one / 2);
    for (id, m, d) in &segs[..2] {
        store.put_meta(*id, m.clone()).await.unwrap();
        store
            .put_block(id, 0, Bytes::from(d.clone()))
            .await
            .unwrap();
    }
    // Touch segment 0, so segment 1 is now the least recently used.
    assert!(store.get_block(&segs[0].0, 0).await.unwrap().is_some());
    let (id2, m2, d2) = &segs[2];
    store.put_meta(*id2, m2.clone()).await.unwrap();
    store
        .put_block(id2, 0, Bytes::from(d2.clone()))
        .await
        .unwrap();
    let s = store.stats();
    assert!(s.used_bytes <= s.max_bytes, "{s:?}");
    assert_eq!(s.evictions, 1);
    assert!(
        store.meta(&segs[1].0).await.is_none(),
        "LRU segment evicted"
    );
    assert!(store.has_block(&segs[0].0, 0));
    assert!(store.has_block(id2, 0));
    store.assert_consistent();
}

#[tokio::test]
async fn lowering_the_bound_at_run_time_evicts_the_least_recently_used() {
    let (segs, one) = one_block_segments(40, 3);
    let store = Store::open_in_memory(1 << 30);
    for (id, m, d) in &segs {
        store.put_meta(*id, m.clone()).await.unwrap();
        store
            .put_block(id, 0, Bytes::from(d.clone()))
            .await
            .unwrap();
    }
    // Segment 0 becomes the most recently used: 1 then 2 are the victims.
    assert!(store.get_block(&segs[0].0, 0).await.unwrap().is_some());
    store.set_max_size(one + one / 2).await.unwrap();
    let s = store.stats();
    assert_eq!(s.max_bytes, one + one / 2);
    assert!(s.used_bytes <= s.max_bytes, "{s:?}");
    assert_eq!((s.segments, s.evictions), (1, 2), "{s:?}");
    assert!(store.has_block(&segs[0].0, 0));
    // Raising it again evicts nothing and lets new segments in.
    store.set_max_size(1 << 30).await.unwrap();
    let (id, m, d) = &segs[1];
    store.put_meta(*id, m.clone()).await.unwrap();
    store
        .put_block(id, 0, Bytes::from(d.clone()))
        .await
        .unwrap();
    assert_eq!(store.stats().segments, 2);
}

#[tokio::test]
async fn restart_keeps_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let data = pattern(20, 200_000);
    let (id, meta) = v1_segment(&data);
    let (id2, meta2) = v2_segment(&data[..5000]);
    {
        let store = Store::open(&dir, 1 << 30).await.unwrap();
        store.put_meta(id, meta.clone()).await.unwrap();
        store.put_meta(id2, meta2).await.unwrap();
        for i in [0, 3] {
            store
                .put_block(&id, i, block(&data, &meta, i))
                .await
                .unwrap();
        }
        store
            .put_block(&id2, 0, Bytes::copy_from_slice(&data[..5000]))
            .await
            .unwrap();
        store.close().await.unwrap();
        let err = store
            .put_block(&id, 1, block(&data, &meta, 1))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "closed");
    }
    let store = Store::open(&dir, 1 << 30).await.unwrap();
    assert_eq!(store.meta(&id).await, Some(meta.clone()));
    assert_eq!(store.present_blocks(&id), vec![0, 3]);
    assert_eq!(
        store.get_block(&id, 3).await.unwrap(),
        Some(block(&data, &meta, 3))
    );
    assert_eq!(
        store.get_block(&id2, 0).await.unwrap().unwrap(),
        &data[..5000]
    );
    assert_eq!(store.stats().blocks, 3);
    store.close().await.unwrap();
}

/// A store over a `FaultyBackend` wrapping memory, with one valid 3-block segment registered.
async fn faulty_store(
    op: FaultOp,
    n: u64,
) -> (Store, Arc<FaultyBackend>, SegmentId, SegmentMeta, Vec<u8>) {
    let faulty = Arc::new(FaultyBackend::new(
        Arc::new(MemBackend::new()),
        op,
        n,
        false,
    ));
    let store = Store::open_with_backend(faulty.clone(), 1 << 30)
        .await
        .unwrap();
    let data = pattern(30, 140_000);
    let (id, meta) = v1_segment(&data);
    store.put_meta(id, meta.clone()).await.unwrap();
    (store, faulty, id, meta, data)
}

#[tokio::test]
async fn write_error_is_returned_counted_and_other_blocks_keep_serving() {
    let (store, faulty, id, meta, data) = faulty_store(FaultOp::Write, 2).await;
    store
        .put_block(&id, 0, block(&data, &meta, 0))
        .await
        .unwrap();
    let err = store
        .put_block(&id, 1, block(&data, &meta, 1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "io");
    assert!(!err.is_bad_input());
    assert_eq!(faulty.failures(), 1);
    assert_eq!(store.stats().io_errors, 1);
    assert!(!store.has_block(&id, 1));
    assert_eq!(store.get_block(&id, 1).await.unwrap(), None);
    assert_eq!(
        store.get_block(&id, 0).await.unwrap(),
        Some(block(&data, &meta, 0))
    );
    // The fault was transient: the same block can be stored afterwards.
    store
        .put_block(&id, 1, block(&data, &meta, 1))
        .await
        .unwrap();
    assert!(store.get_block(&id, 1).await.unwrap().is_some());
}

#[tokio::test]
async fn sync_error_leaves_the_block_unpublished() {
    let (store, _faulty, id, meta, data) = faulty_store(FaultOp::Sync, 1).await;
    let err = store
        .put_block(&id, 2, block(&data, &meta, 2))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Io { op: "sync", .. }), "{err}");
    assert!(!store.has_block(&id, 2));
    assert_eq!(store.stats().io_errors, 1);
    assert_eq!(store.stats().blocks, 0);
    store
        .put_block(&id, 2, block(&data, &meta, 2))
        .await
        .unwrap();
    assert_eq!(store.present_blocks(&id), vec![2]);
}

#[tokio::test]
async fn read_error_is_returned_and_counted_without_evicting() {
    let (store, _faulty, id, meta, data) = faulty_store(FaultOp::Read, 1).await;
    store
        .put_block(&id, 0, block(&data, &meta, 0))
        .await
        .unwrap();
    let err = store.get_block(&id, 0).await.unwrap_err();
    assert_eq!(err.kind(), "io");
    assert_eq!(store.stats().io_errors, 1);
    assert_eq!(store.stats().verify_failures, 0);
    // Still present; the next read succeeds.
    assert!(store.has_block(&id, 0));
    assert!(store.get_block(&id, 0).await.unwrap().is_some());
}

#[tokio::test]
async fn concurrent_writers_and_readers_agree() {
    let store = Store::open_in_memory(1 << 30);
    let mut tasks = Vec::new();
    for s in 0..8u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let data = pattern(40 + s, 200_000);
            let (id, meta) = v1_segment(&data);
            store.put_meta(id, meta.clone()).await.unwrap();
            for i in (0..meta.block_count()).rev() {
                store
                    .put_block(&id, i, block(&data, &meta, i))
                    .await
                    .unwrap();
                assert_eq!(
                    store.get_block(&id, i).await.unwrap(),
                    Some(block(&data, &meta, i))
                );
            }
            id
        }));
    }
    for t in tasks {
        let id = t.await.unwrap();
        assert_eq!(store.present_blocks(&id), vec![0, 1, 2, 3]);
    }
    assert_eq!(store.stats().blocks, 32);
    store.assert_consistent();
    assert_eq!(store.segment_ids().len(), 8);
}

#[tokio::test]
async fn verify_all_finds_and_evicts_corrupt_blocks() {
    let mem = Arc::new(MemBackend::new());
    let store = Store::open_with_backend(mem.clone(), 1 << 30)
        .await
        .unwrap();
    let data = pattern(50, 140_000);
    let (id, meta) = v1_segment(&data);
    store.put_meta(id, meta.clone()).await.unwrap();
    for i in 0..3 {
        store
            .put_block(&id, i, block(&data, &meta, i))
            .await
            .unwrap();
    }
    assert!(mem.corrupt(&data_file_name(&id), 0, b"zz"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let report = store.verify_all(move |p| lock(&seen2).push(p)).await;
    assert_eq!(
        (report.segments, report.good, report.bad, report.unreadable),
        (1, 2, 1, 0)
    );
    assert_eq!(store.present_blocks(&id), vec![1, 2]);
    assert_eq!(store.stats().verify_failures, 1);
    let seen = lock(&seen);
    assert_eq!(
        seen.last().map(|p| (p.blocks_done, p.blocks_total)),
        Some((3, 3))
    );
}

#[tokio::test]
async fn evicted_corrupt_block_stays_gone_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let data = pattern(60, 70_000);
    let (id, meta) = v1_segment(&data);
    let store = Store::open(&dir, 1 << 30).await.unwrap();
    store.put_meta(id, meta.clone()).await.unwrap();
    store
        .put_block(&id, 0, block(&data, &meta, 0))
        .await
        .unwrap();
    store
        .put_block(&id, 1, block(&data, &meta, 1))
        .await
        .unwrap();
    // Flip a byte in the data file behind the store's back.
    let path = dir.join(DATA_DIR).join(data_file_name(&id));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[5] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    assert_eq!(store.get_block(&id, 0).await.unwrap(), None);
    store.close().await.unwrap();
    let store = Store::open(&dir, 1 << 30).await.unwrap();
    assert_eq!(store.present_blocks(&id), vec![1]);
    store.close().await.unwrap();
}

#[tokio::test]
async fn reopening_with_a_smaller_bound_evicts_and_orphan_files_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::open(&dir, 1 << 30).await.unwrap();
    let ids = put_one_block_segments(&store, 70, 4, 60_000).await;
    // The most recently used segment must survive the smaller bound.
    assert!(store.get_block(&ids[0], 0).await.unwrap().is_some());
    store.close().await.unwrap();
    std::fs::write(dir.join(DATA_DIR).join("stray.seg"), b"junk").unwrap();
    let store = Store::open(&dir, 130_000).await.unwrap();
    store.flush().await.unwrap();
    store.assert_consistent();
    let s = store.stats();
    assert!(s.used_bytes <= 130_000, "{s:?}");
    assert_eq!(s.segments, 2);
    assert!(store.has_block(&ids[0], 0));
    assert!(!dir.join(DATA_DIR).join("stray.seg").exists());
    store.close().await.unwrap();
}

#[tokio::test]
async fn restart_without_persisted_access_ticks_keeps_lru_consistent() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::open(&dir, 1 << 30).await.unwrap();
    put_one_block_segments(&store, 90, 5, 20_000).await;
    store.close().await.unwrap();
    // Simulate a crash before any tick was persisted: every tick reads as 0.
    {
        let db = redb::Database::create(dir.join(INDEX_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(index::ACCESS)
            .unwrap()
            .retain(|_, _| false)
            .unwrap();
        txn.commit().unwrap();
    }
    let store = Store::open(&dir, 1 << 30).await.unwrap();
    store.assert_consistent();
    assert_eq!(store.segment_ids().len(), 5);
    let id = put_one_block(&store, 99, 20_000).await;
    store.assert_consistent();
    assert_eq!(
        store.segment_ids().first(),
        Some(&id),
        "newest is most recent"
    );
    store.close().await.unwrap();
}

/// A redb storage backend over a real file whose `sync_data` number
/// `fail_at` (shared, counted across re-opens) fails once with ENOSPC.
#[derive(Debug)]
struct FaultyIndexFile {
    inner: redb::backends::FileBackend,
    syncs: Arc<AtomicU64>,
    fail_at: Arc<AtomicU64>,
}

impl redb::StorageBackend for FaultyIndexFile {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }
    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, io::Error> {
        self.inner.read(offset, len)
    }
    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.inner.set_len(len)
    }
    fn sync_data(&self, eventual: bool) -> Result<(), io::Error> {
        let n = self.syncs.fetch_add(1, Ordering::SeqCst) + 1;
        if self
            .fail_at
            .compare_exchange(n, u64::MAX, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return Err(io::Error::from_raw_os_error(28));
        }
        self.inner.sync_data(eventual)
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.inner.write(offset, data)
    }
}

#[tokio::test]
async fn index_commit_failure_is_reported_and_the_index_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("index.redb");
    let syncs = Arc::new(AtomicU64::new(0));
    let fail_at = Arc::new(AtomicU64::new(u64::MAX));
    let opener: IndexOpener = {
        let (path, syncs, fail_at) = (path.clone(), syncs.clone(), fail_at.clone());
        Box::new(move || {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| io_err("open", &path, e))?;
            let backend = FaultyIndexFile {
                inner: redb::backends::FileBackend::new(file)?,
                syncs: syncs.clone(),
                fail_at: fail_at.clone(),
            };
            Ok(redb::Database::builder().create_with_backend(backend)?)
        })
    };
    let store = Store::open_with(Some(opener), Arc::new(MemBackend::new()), 1 << 30)
        .await
        .unwrap();
    let data = pattern(80, 140_000);
    let (id, meta) = v1_segment(&data);
    store.put_meta(id, meta.clone()).await.unwrap();
    store
        .put_block(&id, 0, block(&data, &meta, 0))
        .await
        .unwrap();

    // The next index fsync fails.
    fail_at.store(syncs.load(Ordering::SeqCst) + 1, Ordering::SeqCst);
    let err = store
        .put_block(&id, 1, block(&data, &meta, 1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "io", "{err}");
    assert_eq!(fail_at.load(Ordering::SeqCst), u64::MAX, "the fault fired");
    assert!(
        !store.has_block(&id, 1),
        "not published after a failed commit"
    );
    assert!(store.stats().io_errors >= 1);
    // Reads keep working, and the index is re-opened for the next write.
    assert!(store.get_block(&id, 0).await.unwrap().is_some());
    store
        .put_block(&id, 1, block(&data, &meta, 1))
        .await
        .unwrap();
    assert!(store.has_block(&id, 1));
    store.close().await.unwrap();

    // Everything committed is in the index after a restart. (The data lived
    // in a MemBackend and is gone: such blocks are dropped, never served.)
    let store = Store::open_with(
        Some(file_opener(path)),
        Arc::new(MemBackend::new()),
        1 << 30,
    )
    .await
    .unwrap();
    assert_eq!(store.present_blocks(&id), vec![0, 1]);
    assert_eq!(store.get_block(&id, 1).await.unwrap(), None);
    assert_eq!(store.present_blocks(&id), vec![0]);
    assert_eq!(store.stats().verify_failures, 1);
    store.close().await.unwrap();
}

#[test]
fn io_errors_are_all_counted_but_logged_once_per_interval() {
    let log = IoLog::new();
    let m = StoreMetrics::default();
    let err = || StoreError::Io {
        op: "write",
        file: "x".into(),
        source: io::Error::from_raw_os_error(28),
    };
    assert!(log.report(&m, &err()));
    assert!(!log.report(&m, &err()));
    assert!(!log.report(&m, &err()));
    assert_eq!(m.io_errors.get(), 3);
    assert_eq!(log.suppressed.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn debug_shows_stats_not_contents() {
    let store = Store::open_in_memory(1000);
    let (id, meta) = v2_segment(b"abc");
    store.put_meta(id, meta).await.unwrap();
    let dbg = format!("{store:?}");
    assert!(dbg.contains("segments: 1"), "{dbg}");
    assert!(!dbg.contains(&id.to_hex()), "{dbg}");
}

mod model {
    //! Random operation sequences against the real store (in memory): it
    //! never serves wrong bytes, its bookkeeping stays consistent, and it
    //! stays within its bound.
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        PutMeta(usize),
        PutBlock { seg: usize, index: u32, bad: bool },
        Get { seg: usize, index: u32 },
        Corrupt { seg: usize, index: u32 },
        Verify,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..4usize).prop_map(Op::PutMeta),
            (0..4usize, 0..3u32, proptest::bool::weighted(0.2))
                .prop_map(|(seg, index, bad)| Op::PutBlock { seg, index, bad }),
            (0..4usize, 0..3u32).prop_map(|(seg, index)| Op::Get { seg, index }),
            (0..4usize, 0..3u32).prop_map(|(seg, index)| Op::Corrupt { seg, index }),
            Just(Op::Verify),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn store_never_serves_wrong_bytes(ops in proptest::collection::vec(op(), 1..40)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let segs: Vec<(SegmentId, SegmentMeta, Vec<u8>)> = (0..4u8)
                    .map(|s| {
                        let d = pattern(100 + s, 140_000);
                        let (id, m) = v1_segment(&d);
                        (id, m, d)
                    })
                    .collect();
                let one = record_bytes(&segs[0].1) + 140_000;
                let mem = Arc::new(MemBackend::new());
                let store = Store::open_with_backend(mem.clone(), 2 * one + 1000).await.unwrap();
                // Blocks damaged on disk while a copy was hot in memory.
                let mut lingering = 0;
                for op in ops {
                    match op {
                        Op::PutMeta(s) => {
                            let (id, m, _) = &segs[s];
                            store.put_meta(*id, m.clone()).await.unwrap();
                            assert!(store.meta_arc(id).is_some());
                        }
                        Op::PutBlock { seg, index, bad } => {
                            let (id, m, d) = &segs[seg];
                            let mut b = block(d, m, index).to_vec();
                            if bad {
                                b[0] ^= 1;
                            }
                            let known = store.meta_arc(id).is_some();
                            match store.put_block(id, index, Bytes::from(b)).await {
                                Ok(()) => {
                                    assert!(known && !bad);
                                    assert!(store.has_block(id, index));
                                }
                                Err(StoreError::HashMismatch { .. }) => assert!(bad),
                                Err(StoreError::UnknownSegment { .. }) => assert!(!known),
                                Err(e) => panic!("unexpected {e}"),
                            }
                        }
                        Op::Get { seg, index } => {
                            let (id, m, d) = &segs[seg];
                            let had = store.has_block(id, index);
                            let got = store.get_block(id, index).await.unwrap();
                            if let Some(b) = &got {
                                assert_eq!(b, &block(d, m, index));
                            }
                            assert!(got.is_none() || had);
                        }
                        Op::Corrupt { seg, index } => {
                            let (id, m, d) = &segs[seg];
                            let before = store.stats().verify_failures;
                            if store.has_block(id, index)
                                && mem.corrupt(&data_file_name(id), m.block_offset(index) + 7, b"!!")
                            {
                                match store.get_block(id, index).await.unwrap() {
                                    // Read from disk: caught, evicted, counted.
                                    None => {
                                        assert!(!store.has_block(id, index));
                                        assert_eq!(store.stats().verify_failures, before + 1);
                                    }
                                    // A small block read before is served from
                                    // memory (checked when it was read): still
                                    // the right bytes; `verify_all` finds the
                                    // damage on disk.
                                    Some(b) => {
                                        assert!(b.len() <= HOT_BLOCK_MAX);
                                        assert_eq!(b, block(d, m, index));
                                        lingering += 1;
                                    }
                                }
                            }
                        }
                        Op::Verify => {
                            let r = store.verify_all(|_| {}).await;
                            assert!(r.bad <= lingering, "{} bad, {lingering} known", r.bad);
                            lingering = 0;
                        }
                    }
                    store.flush().await.unwrap();
                    store.assert_consistent();
                    let s = store.stats();
                    assert!(s.used_bytes <= s.max_bytes, "{s:?}");
                }
            });
        }
    }
}

#[tokio::test]
async fn restart_keeps_the_order_of_last_use_and_evicts_by_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::open(&dir, 1 << 30).await.unwrap();
    let ids = put_one_block_segments(&store, 110, 5, 20_000).await;
    // Used (reads, hot-block hits included) in this order, some twice: the
    // last use of each counts, least recently used first: 3, 0, 4, 1, 2.
    for i in [1, 3, 2, 0, 4, 4, 1, 2] {
        assert!(store.get_block(&ids[i], 0).await.unwrap().is_some());
    }
    let by_last_use: Vec<SegmentId> = [2, 1, 4, 0, 3].iter().map(|&i| ids[i]).collect();
    assert_eq!(store.segment_ids(), by_last_use);
    store.assert_consistent();
    let one = store.stats().used_bytes / 5;
    store.close().await.unwrap();

    let store = Store::open(&dir, 1 << 30).await.unwrap();
    store.assert_consistent();
    assert_eq!(store.segment_ids(), by_last_use, "order persisted");
    store.close().await.unwrap();

    // Room for two: the two most recently used stay.
    let store = Store::open(&dir, 2 * one + one / 2).await.unwrap();
    store.flush().await.unwrap();
    store.assert_consistent();
    assert_eq!(store.segment_ids(), by_last_use[..2].to_vec());
    store.close().await.unwrap();
}
