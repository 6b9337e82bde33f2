//! Multi-buffer SHA-2 against single streams: `cargo bench --bench sha512_multibuffer`.
//!
//! v2 spends most of its CPU in SHA-512 of ~64 KiB segments and v1 in SHA-256
//! of 64 KiB blocks. One stream is bound by its serial rounds; segments and
//! blocks are independent, so `crates/sha512-multibuffer` runs 4/8 (SHA-512) or
//! 8/16 (SHA-256) of them side by side in the lanes of AVX2/AVX-512 registers.
//! This bench hashes 64 KiB messages with `ring` and `sha2` one at a time and
//! with the crate's `sha512_many_with` / `sha256_many_with` for every backend
//! the CPU has (each checked against `sha2` first), and prints MB/s per
//! CPU-second (best of a few passes, like `benches/chunker.rs`).
//! `docs/PERFORMANCE.md` has the numbers. (The first prototype's lane code
//! lived here; it is now the crate.)

use std::hint::black_box;

use sha512_multibuffer::Backend;

/// Bytes per message (a typical v2 segment, a v1 block) and per pass.
const MSG: usize = 64 * 1024;
const LEN: usize = 64 << 20;
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

/// CPU time of this thread in seconds (`/proc/thread-self/schedstat`).
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(f64::NAN, |ns| ns as f64 / 1e9)
}

fn best(name: &str, data: &[u8], mut f: impl FnMut(&[u8])) {
    let mut cpu = f64::MAX;
    for _ in 0..PASSES {
        let c = cpu_seconds();
        f(black_box(data));
        cpu = cpu.min(cpu_seconds() - c);
    }
    println!(
        "{name:<30} {:>7.0} MB/s per CPU-second",
        data.len() as f64 / cpu / 1e6
    );
}

/// A group of equal messages.
fn msgs(group: &[u8]) -> Vec<&[u8]> {
    group.chunks(MSG).collect()
}

fn sha2_512(m: &[u8]) -> [u8; 64] {
    use sha2::Digest as _;
    sha2::Sha512::digest(m).into()
}

fn main() {
    use sha2::Digest as _;
    let data = data();
    best("sha512 ring, 1 stream", &data, |d| {
        for m in d.chunks(MSG) {
            black_box(ring::digest::digest(&ring::digest::SHA512, m));
        }
    });
    best("sha512 sha2, 1 stream", &data, |d| {
        for m in d.chunks(MSG) {
            black_box(sha2_512(m));
        }
    });
    let sample = &data[..16 * MSG];
    for backend in Backend::ALL {
        let Some(got) = sha512_multibuffer::sha512_many_with(backend, &msgs(sample)) else {
            continue;
        };
        for (g, m) in got.iter().zip(sample.chunks(MSG)) {
            assert_eq!(g, &sha2_512(m), "sha512_many differs from sha2");
        }
        best(&format!("sha512_many_with({backend:?})"), &data, |d| {
            black_box(sha512_multibuffer::sha512_many_with(backend, &msgs(d)));
        });
    }
    println!("(sha512_many picks {:?})", Backend::detect());
    // v1: SHA-256 of 64 KiB blocks, single stream (SHA-NI) against the lanes.
    best("sha256 sha2, 1 stream", &data, |d| {
        for m in d.chunks(MSG) {
            black_box(sha2::Sha256::digest(m));
        }
    });
    for backend in Backend::ALL {
        let Some(got) = sha512_multibuffer::sha256_many_with(backend, &msgs(sample)) else {
            continue;
        };
        for (g, m) in got.iter().zip(sample.chunks(MSG)) {
            assert_eq!(
                g[..],
                sha2::Sha256::digest(m)[..],
                "sha256_many differs from sha2"
            );
        }
        best(&format!("sha256_many_with({backend:?})"), &data, |d| {
            black_box(sha512_multibuffer::sha256_many_with(backend, &msgs(d)));
        });
    }
    println!(
        "(sha256_many picks {:?}; messages of {MSG} bytes; every digest checked against sha2)",
        sha512_multibuffer::sha256_backend()
    );
}
