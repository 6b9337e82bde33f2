//! Single-core speed of the v2 chunker and of the SHA-2 primitives (`sha2`
//! and `ring`) the builder uses: `cargo bench --bench chunker`.
//!
//! Prints MB/s (10^6 bytes per second, like `openssl speed`) per CPU-second
//! (comparable to `openssl speed`, which also counts CPU time) and per wall
//! second, best of a few passes over 256 MiB of pseudo-random bytes in memory. The chunker
//! target is ≥ 1.5 GB/s so it never limits v2 hashing; the SHA lines show
//! whether `sha2` picked its SHA-NI (SHA-256) / AVX2 (SHA-512) backends and
//! which SHA-512 crate is faster here (`HashAlgo` picks one per CPU vendor).
//! No criterion: a plain `harness = false` loop keeps the dependency list short.

use std::hint::black_box;
use std::time::Instant;

use branchcache::proto::pccrc::{Chunker, HashAlgo};

/// Bytes per pass: large enough to leave the caches, small enough for a shared box.
const LEN: usize = 256 << 20;
/// Passes per measurement; the best one is reported (least disturbed by neighbours).
const PASSES: usize = 3;

fn data() -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::with_capacity(LEN);
    while out.len() < LEN {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out
}

/// CPU time this thread has run, in seconds (`/proc/thread-self/schedstat`),
/// so a busy shared machine does not distort single-core numbers.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(f64::NAN, |ns| ns as f64 / 1e9)
}

fn best(name: &str, data: &[u8], mut f: impl FnMut(&[u8])) {
    let (mut wall, mut cpu) = (f64::MAX, f64::MAX);
    for _ in 0..PASSES {
        let (t, c) = (Instant::now(), cpu_seconds());
        f(black_box(data));
        wall = wall.min(t.elapsed().as_secs_f64());
        cpu = cpu.min(cpu_seconds() - c);
    }
    let mbs = |secs: f64| data.len() as f64 / secs / 1e6;
    println!(
        "{name:<26} {:>7.0} MB/s per CPU-second {:>7.0} MB/s wall",
        mbs(cpu),
        mbs(wall)
    );
}

fn main() {
    let data = data();
    best("chunker (v2 boundaries)", &data, |d| {
        let mut c = Chunker::new();
        black_box(c.push(d).count());
    });
    // 64 KiB at a time, like v1 blocks and typical v2 segments.
    best("sha256 (HashAlgo, sha2)", &data, |d| {
        for block in d.chunks(65_536) {
            black_box(HashAlgo::Sha256.hash(block));
        }
    });
    best("sha256 (ring crate)", &data, |d| {
        for block in d.chunks(65_536) {
            black_box(ring::digest::digest(&ring::digest::SHA256, block));
        }
    });
    best("sha512 (HashAlgo)", &data, |d| {
        for block in d.chunks(65_536) {
            black_box(HashAlgo::Sha512.hash(block));
        }
    });
    best("sha512 (sha2 crate)", &data, |d| {
        use sha2::Digest as _;
        for block in d.chunks(65_536) {
            black_box(sha2::Sha512::digest(block));
        }
    });
    best("sha512 (ring crate)", &data, |d| {
        for block in d.chunks(65_536) {
            black_box(ring::digest::digest(&ring::digest::SHA512, block));
        }
    });
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = cpu.lines().find(|l| l.starts_with("flags")).unwrap_or("");
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    let model = cpu
        .lines()
        .find(|l| l.starts_with("model name"))
        .unwrap_or("");
    println!(
        "cpu flags: sha_ni={} avx2={} sse4a={} (sse4a: AMD, HashAlgo SHA-512 uses sha2, else ring) {model}",
        has("sha_ni"),
        has("avx2"),
        has("sse4a")
    );
}
