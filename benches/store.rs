//! Block store throughput: durable puts and verified hits on a real directory.
//!
//! `cargo bench --bench store` (release) or `cargo bench --profile dev --bench store`.
//! Prints one line per measurement. Not a test: nothing here asserts timing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use branchcache::proto::pccrc::{server_secret, HashAlgo, SegmentId, BLOCK_SIZE};
use branchcache::store::{SegmentMeta, Store};
use bytes::Bytes;

/// Segments written (1 MiB each, 16 blocks of 64 KiB).
const SEGMENTS: u64 = 64;
/// Concurrent tasks in each phase (like concurrent proxy requests).
const TASKS: usize = 8;
/// Block reads per task in the hit phase.
const READS_PER_TASK: usize = 4000;

fn segment(n: u64) -> (SegmentId, SegmentMeta, Vec<u8>) {
    let mut data = Vec::with_capacity(1 << 20);
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while data.len() < 1 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    let algo = HashAlgo::Sha256;
    let (id, meta) = SegmentMeta::hash_v1(algo, &server_secret(algo, b"bench"), &data);
    (id, meta, data)
}

fn line(what: &str, ops: u64, bytes: u64, took: Duration) {
    let s = took.as_secs_f64();
    println!(
        "store {what}: {ops} ops in {:.3} s = {:.0} ops/s, {:.1} MiB/s",
        s,
        ops as f64 / s,
        bytes as f64 / s / (1024.0 * 1024.0)
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 30).await.unwrap();
        let segs: Arc<Vec<_>> = Arc::new((0..SEGMENTS).map(segment).collect());
        for (id, meta, _) in segs.iter() {
            store.put_meta(*id, meta.clone()).await.unwrap();
        }

        // Durable puts: SHA-256 verify + CRC + pwrite + fsync + index commit (batched).
        let start = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let (store, segs) = (store.clone(), segs.clone());
            tasks.push(tokio::spawn(async move {
                for (id, _, data) in segs.iter().skip(t).step_by(TASKS) {
                    for (i, chunk) in data.chunks(BLOCK_SIZE as usize).enumerate() {
                        store
                            .put_block(id, i as u32, Bytes::copy_from_slice(chunk))
                            .await
                            .unwrap();
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let blocks = SEGMENTS * 16;
        line(
            &format!("put_block 64KiB x{TASKS} tasks"),
            blocks,
            blocks * 65_536,
            start.elapsed(),
        );

        // Pipelined puts: every block of a segment in flight at once, as a proxy
        // storing blocks in the background does (bigger batches per commit).
        let more: Arc<Vec<_>> = Arc::new((SEGMENTS..2 * SEGMENTS).map(segment).collect());
        for (id, meta, _) in more.iter() {
            store.put_meta(*id, meta.clone()).await.unwrap();
        }
        let start = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let (store, more) = (store.clone(), more.clone());
            tasks.push(tokio::spawn(async move {
                for (id, _, data) in more.iter().skip(t).step_by(TASKS) {
                    let puts = data
                        .chunks(BLOCK_SIZE as usize)
                        .enumerate()
                        .map(|(i, c)| store.put_block(id, i as u32, Bytes::copy_from_slice(c)));
                    for r in futures_util::future::join_all(puts).await {
                        r.unwrap();
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        line(
            &format!("put_block 64KiB x{TASKS} tasks, 16 in flight each"),
            blocks,
            blocks * 65_536,
            start.elapsed(),
        );

        // Hits: positioned read + CRC32C check, from the page cache.
        let start = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let (store, segs) = (store.clone(), segs.clone());
            tasks.push(tokio::spawn(async move {
                let mut x = t as u64 + 1;
                for _ in 0..READS_PER_TASK {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let (id, _, _) = &segs[(x >> 33) as usize % segs.len()];
                    let b = store.get_block(id, ((x >> 20) % 16) as u32).await.unwrap();
                    assert!(b.is_some());
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let reads = (TASKS * READS_PER_TASK) as u64;
        line(
            &format!("get_block hit 64KiB x{TASKS} tasks"),
            reads,
            reads * 65_536,
            start.elapsed(),
        );

        // Single-task hit latency.
        let (id, _, _) = &segs[0];
        let mut lat: Vec<Duration> = Vec::with_capacity(2000);
        for i in 0..2000u32 {
            let t = Instant::now();
            let b = store.get_block(id, i % 16).await.unwrap();
            lat.push(t.elapsed());
            assert!(b.is_some());
        }
        lat.sort();
        println!(
            "store get_block hit latency (1 task): p50 {:?} p99 {:?}",
            lat[lat.len() / 2],
            lat[lat.len() * 99 / 100]
        );

        let start = Instant::now();
        let mut n = 0u64;
        for _ in 0..100 {
            for (id, _, _) in segs.iter() {
                for i in 0..16 {
                    n += u64::from(store.has_block(id, i));
                }
            }
        }
        line("has_block", n, 0, start.elapsed());
        store.close().await.unwrap();
    });
}
