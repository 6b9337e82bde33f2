//! What multi-buffer SHA-512 would buy v2 hashing: `cargo bench --bench sha512_multibuffer`.
//!
//! **The prototype** of `crates/sha512-multibuffer`, which v2 hashing now uses
//! (`sha512_many`, any message lengths); kept to compare the lane code with
//! `ring` and `sha2` in isolation. v2 spent ~90 % of its CPU in SHA-512 of
//! ~64 KiB segments, and one SHA-512 stream is bound by its serial rounds: the best
//! single-stream code (`ring`, OpenSSL) runs at ~0.8 GB/s per core on the dev box.
//! v2 segments are independent, so 4 (AVX2) or 8 (AVX-512) segments can run their
//! rounds side by side in the lanes of one vector register. This bench hashes
//! 64 KiB messages that way with the plain FIPS 180-4 round function written in
//! `core::arch` intrinsics, checks every digest against `sha2`, and prints MB/s per
//! CPU-second next to `ring` and `sha2` (best of a few passes, like
//! `benches/chunker.rs`), and the crate's `sha512_many` on the same messages. It
//! needs `unsafe` (raw-pointer loads and the call into `#[target_feature]` code),
//! which the library forbids, hence the separate crate. `docs/PERFORMANCE.md` has
//! the numbers.
//!
//! It also prints v1's primitive, SHA-256 of the same 64 KiB messages: `sha2`'s single
//! stream (SHA-NI) against the crate's `sha256_many_with` for each available backend.
//!
//! The AVX-512 intrinsics need Rust ≥ 1.89 (this bench only).

use std::hint::black_box;

/// Bytes per message (a typical v2 segment) and per pass.
const MSG: usize = 64 * 1024;
const LEN: usize = 64 << 20;
const PASSES: usize = 3;

/// FIPS 180-4 SHA-512 round constants.
#[rustfmt::skip]
const K: [u64; 80] = [
    0x428a2f98d728ae22, 0x7137449123ef65cd, 0xb5c0fbcfec4d3b2f, 0xe9b5dba58189dbbc,
    0x3956c25bf348b538, 0x59f111f1b605d019, 0x923f82a4af194f9b, 0xab1c5ed5da6d8118,
    0xd807aa98a3030242, 0x12835b0145706fbe, 0x243185be4ee4b28c, 0x550c7dc3d5ffb4e2,
    0x72be5d74f27b896f, 0x80deb1fe3b1696b1, 0x9bdc06a725c71235, 0xc19bf174cf692694,
    0xe49b69c19ef14ad2, 0xefbe4786384f25e3, 0x0fc19dc68b8cd5b5, 0x240ca1cc77ac9c65,
    0x2de92c6f592b0275, 0x4a7484aa6ea6e483, 0x5cb0a9dcbd41fbd4, 0x76f988da831153b5,
    0x983e5152ee66dfab, 0xa831c66d2db43210, 0xb00327c898fb213f, 0xbf597fc7beef0ee4,
    0xc6e00bf33da88fc2, 0xd5a79147930aa725, 0x06ca6351e003826f, 0x142929670a0e6e70,
    0x27b70a8546d22ffc, 0x2e1b21385c26c926, 0x4d2c6dfc5ac42aed, 0x53380d139d95b3df,
    0x650a73548baf63de, 0x766a0abb3c77b2a8, 0x81c2c92e47edaee6, 0x92722c851482353b,
    0xa2bfe8a14cf10364, 0xa81a664bbc423001, 0xc24b8b70d0f89791, 0xc76c51a30654be30,
    0xd192e819d6ef5218, 0xd69906245565a910, 0xf40e35855771202a, 0x106aa07032bbd1b8,
    0x19a4c116b8d2d0c8, 0x1e376c085141ab53, 0x2748774cdf8eeb99, 0x34b0bcb5e19b48a8,
    0x391c0cb3c5c95a63, 0x4ed8aa4ae3418acb, 0x5b9cca4f7763e373, 0x682e6ff3d6b2b8a3,
    0x748f82ee5defb2fc, 0x78a5636f43172f60, 0x84c87814a1f0ab72, 0x8cc702081a6439ec,
    0x90befffa23631e28, 0xa4506cebde82bde9, 0xbef9a3f7b2c67915, 0xc67178f2e372532b,
    0xca273eceea26619c, 0xd186b8c721c0c207, 0xeada7dd6cde0eb1e, 0xf57d4f7fee6ed178,
    0x06f067aa72176fba, 0x0a637dc5a2c898a6, 0x113f9804bef90dae, 0x1b710b35131c471b,
    0x28db77f523047d84, 0x32caab7b40c72493, 0x3c9ebe0a15c9bebc, 0x431d67c49c100d4c,
    0x4cc5d4becb3e42b6, 0x597f299cfc657e2a, 0x5fcb6fab3ad6faec, 0x6c44198c4a475817,
];
/// SHA-512 initial hash value.
#[rustfmt::skip]
const IV: [u64; 8] = [
    0x6a09e667f3bcc908, 0xbb67ae8584caa73b, 0x3c6ef372fe94f82b, 0xa54ff53a5f1d36f1,
    0x510e527fade682d1, 0x9b05688c2b3e6c1f, 0x1f83d9abfb41bd6b, 0x5be0cd19137e2179,
];

/// The final block of a message of `len` bytes, `len` a multiple of 128.
fn padding(len: usize) -> [u8; 128] {
    let mut pad = [0u8; 128];
    pad[0] = 0x80;
    pad[120..].copy_from_slice(&(len as u64 * 8).to_be_bytes());
    pad
}

#[cfg(target_arch = "x86_64")]
mod x4 {
    //! 4 messages in the 64-bit lanes of AVX2 registers.
    use super::{padding, IV, K};
    use std::arch::x86_64::*;

    macro_rules! rotr {
        ($x:expr, $n:literal) => {
            _mm256_or_si256(
                _mm256_srli_epi64::<$n>($x),
                _mm256_slli_epi64::<{ 64 - $n }>($x),
            )
        };
    }

    /// `nblocks` 128-byte blocks from each lane's pointer into the lanes of `st`.
    ///
    /// # Safety
    /// AVX2 must be available and each pointer valid for `128 * nblocks` bytes.
    #[target_feature(enable = "avx2")]
    unsafe fn compress(st: &mut [__m256i; 8], lanes: [*const u8; 4], nblocks: usize) {
        let bswap = _mm256_setr_epi8(
            7, 6, 5, 4, 3, 2, 1, 0, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 15, 14,
            13, 12, 11, 10, 9, 8,
        );
        for blk in 0..nblocks {
            let mut w = [_mm256_setzero_si256(); 16];
            for (q, quad) in w.chunks_exact_mut(4).enumerate() {
                let off = blk * 128 + q * 32;
                let row = |l: usize| _mm256_loadu_si256(lanes[l].add(off).cast());
                let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
                // 4x4 transpose of 64-bit words, then big-endian to native.
                let t0 = _mm256_unpacklo_epi64(r0, r1);
                let t1 = _mm256_unpackhi_epi64(r0, r1);
                let t2 = _mm256_unpacklo_epi64(r2, r3);
                let t3 = _mm256_unpackhi_epi64(r2, r3);
                quad[0] = _mm256_shuffle_epi8(_mm256_permute2x128_si256::<0x20>(t0, t2), bswap);
                quad[1] = _mm256_shuffle_epi8(_mm256_permute2x128_si256::<0x20>(t1, t3), bswap);
                quad[2] = _mm256_shuffle_epi8(_mm256_permute2x128_si256::<0x31>(t0, t2), bswap);
                quad[3] = _mm256_shuffle_epi8(_mm256_permute2x128_si256::<0x31>(t1, t3), bswap);
            }
            let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *st;
            for (t, &k) in K.iter().enumerate() {
                let wt = if t < 16 {
                    w[t]
                } else {
                    let (w2, w15) = (w[(t - 2) & 15], w[(t - 15) & 15]);
                    let s1 = _mm256_xor_si256(
                        _mm256_xor_si256(rotr!(w2, 19), rotr!(w2, 61)),
                        _mm256_srli_epi64::<6>(w2),
                    );
                    let s0 = _mm256_xor_si256(
                        _mm256_xor_si256(rotr!(w15, 1), rotr!(w15, 8)),
                        _mm256_srli_epi64::<7>(w15),
                    );
                    let v = _mm256_add_epi64(
                        _mm256_add_epi64(s1, w[(t - 7) & 15]),
                        _mm256_add_epi64(s0, w[t & 15]),
                    );
                    w[t & 15] = v;
                    v
                };
                let s1 =
                    _mm256_xor_si256(_mm256_xor_si256(rotr!(e, 14), rotr!(e, 18)), rotr!(e, 41));
                let ch = _mm256_xor_si256(_mm256_and_si256(e, f), _mm256_andnot_si256(e, g));
                let t1 = _mm256_add_epi64(
                    _mm256_add_epi64(_mm256_add_epi64(h, s1), _mm256_add_epi64(ch, wt)),
                    _mm256_set1_epi64x(k as i64),
                );
                let s0 =
                    _mm256_xor_si256(_mm256_xor_si256(rotr!(a, 28), rotr!(a, 34)), rotr!(a, 39));
                let maj = _mm256_xor_si256(
                    _mm256_and_si256(_mm256_xor_si256(a, b), c),
                    _mm256_and_si256(a, b),
                );
                let t2 = _mm256_add_epi64(s0, maj);
                (h, g, f, e, d, c, b, a) = (
                    g,
                    f,
                    e,
                    _mm256_add_epi64(d, t1),
                    c,
                    b,
                    a,
                    _mm256_add_epi64(t1, t2),
                );
            }
            for (s, n) in st.iter_mut().zip([a, b, c, d, e, f, g, h]) {
                *s = _mm256_add_epi64(*s, n);
            }
        }
    }

    /// SHA-512 of 4 messages of equal length (a multiple of 128 bytes), or
    /// `None` without AVX2.
    pub fn sha512(msgs: [&[u8]; 4]) -> Option<[[u8; 64]; 4]> {
        let len = msgs[0].len();
        assert!(msgs.iter().all(|m| m.len() == len) && len & 127 == 0);
        if !is_x86_feature_detected!("avx2") {
            return None;
        }
        let pad = padding(len);
        let mut out = [[0u8; 64]; 4];
        // SAFETY: AVX2 was detected; each message holds len / 128 blocks, `pad` one.
        unsafe {
            let mut st = IV.map(|v| _mm256_set1_epi64x(v as i64));
            compress(&mut st, msgs.map(<[u8]>::as_ptr), len / 128);
            compress(&mut st, [pad.as_ptr(); 4], 1);
            for (i, s) in st.iter().enumerate() {
                let mut v = [0u64; 4];
                _mm256_storeu_si256(v.as_mut_ptr().cast(), *s);
                for (o, x) in out.iter_mut().zip(v) {
                    o[i * 8..i * 8 + 8].copy_from_slice(&x.to_be_bytes());
                }
            }
        }
        Some(out)
    }
}

#[cfg(target_arch = "x86_64")]
#[clippy::msrv = "1.89"] // AVX-512 intrinsics; this bench only
mod x8 {
    //! 8 messages in the 64-bit lanes of AVX-512 registers (rotate and
    //! three-input logic instructions shorten each round).
    use super::{padding, IV, K};
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX-512F/BW must be available and each pointer valid for `128 * nblocks` bytes.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn compress(st: &mut [__m512i; 8], lanes: [*const u8; 8], nblocks: usize) {
        let bswap = _mm512_set4_epi64(
            0x08090a0b0c0d0e0f,
            0x0001020304050607,
            0x08090a0b0c0d0e0f,
            0x0001020304050607,
        );
        let addrs = lanes.map(|p| p as i64);
        let base = _mm512_loadu_si512(addrs.as_ptr().cast());
        for blk in 0..nblocks {
            let mut w = [_mm512_setzero_si512(); 16];
            for (t, wt) in w.iter_mut().enumerate() {
                let idx = _mm512_add_epi64(base, _mm512_set1_epi64((blk * 128 + t * 8) as i64));
                // Absolute addresses as indexes from a null base.
                let v = _mm512_i64gather_epi64::<1>(idx, std::ptr::null());
                *wt = _mm512_shuffle_epi8(v, bswap);
            }
            let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *st;
            for (t, &k) in K.iter().enumerate() {
                let wt = if t < 16 {
                    w[t]
                } else {
                    let (w2, w15) = (w[(t - 2) & 15], w[(t - 15) & 15]);
                    let s1 = _mm512_ternarylogic_epi64::<0x96>(
                        _mm512_ror_epi64::<19>(w2),
                        _mm512_ror_epi64::<61>(w2),
                        _mm512_srli_epi64::<6>(w2),
                    );
                    let s0 = _mm512_ternarylogic_epi64::<0x96>(
                        _mm512_ror_epi64::<1>(w15),
                        _mm512_ror_epi64::<8>(w15),
                        _mm512_srli_epi64::<7>(w15),
                    );
                    let v = _mm512_add_epi64(
                        _mm512_add_epi64(s1, w[(t - 7) & 15]),
                        _mm512_add_epi64(s0, w[t & 15]),
                    );
                    w[t & 15] = v;
                    v
                };
                let s1 = _mm512_ternarylogic_epi64::<0x96>(
                    _mm512_ror_epi64::<14>(e),
                    _mm512_ror_epi64::<18>(e),
                    _mm512_ror_epi64::<41>(e),
                );
                let ch = _mm512_ternarylogic_epi64::<0xCA>(e, f, g);
                let t1 = _mm512_add_epi64(
                    _mm512_add_epi64(_mm512_add_epi64(h, s1), _mm512_add_epi64(ch, wt)),
                    _mm512_set1_epi64(k as i64),
                );
                let s0 = _mm512_ternarylogic_epi64::<0x96>(
                    _mm512_ror_epi64::<28>(a),
                    _mm512_ror_epi64::<34>(a),
                    _mm512_ror_epi64::<39>(a),
                );
                let maj = _mm512_ternarylogic_epi64::<0xE8>(a, b, c);
                let t2 = _mm512_add_epi64(s0, maj);
                (h, g, f, e, d, c, b, a) = (
                    g,
                    f,
                    e,
                    _mm512_add_epi64(d, t1),
                    c,
                    b,
                    a,
                    _mm512_add_epi64(t1, t2),
                );
            }
            for (s, n) in st.iter_mut().zip([a, b, c, d, e, f, g, h]) {
                *s = _mm512_add_epi64(*s, n);
            }
        }
    }

    /// SHA-512 of 8 messages of equal length (a multiple of 128 bytes), or
    /// `None` without AVX-512F/BW.
    pub fn sha512(msgs: [&[u8]; 8]) -> Option<[[u8; 64]; 8]> {
        let len = msgs[0].len();
        assert!(msgs.iter().all(|m| m.len() == len) && len & 127 == 0);
        if !(is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")) {
            return None;
        }
        let pad = padding(len);
        let mut out = [[0u8; 64]; 8];
        // SAFETY: AVX-512F/BW were detected; each message holds len / 128 blocks, `pad` one.
        unsafe {
            let mut st = IV.map(|v| _mm512_set1_epi64(v as i64));
            compress(&mut st, msgs.map(<[u8]>::as_ptr), len / 128);
            compress(&mut st, [pad.as_ptr(); 8], 1);
            for (i, s) in st.iter().enumerate() {
                let mut v = [0u64; 8];
                _mm512_storeu_si512(v.as_mut_ptr().cast(), *s);
                for (o, x) in out.iter_mut().zip(v) {
                    o[i * 8..i * 8 + 8].copy_from_slice(&x.to_be_bytes());
                }
            }
        }
        Some(out)
    }
}

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
    #[cfg(target_arch = "x86_64")]
    {
        // Every lane's digest must equal sha2's before any speed is printed.
        let check = |got: &[[u8; 64]], group: &[u8]| {
            for (g, m) in got.iter().zip(group.chunks(MSG)) {
                assert_eq!(g, &sha2_512(m), "multi-buffer digest differs from sha2");
            }
        };
        let four = |g: &[u8]| x4::sha512(msgs(g).try_into().expect("4 messages"));
        let eight = |g: &[u8]| x8::sha512(msgs(g).try_into().expect("8 messages"));
        if let Some(got) = four(&data[..4 * MSG]) {
            check(&got, &data[..4 * MSG]);
            best("sha512 AVX2, 4 lanes", &data, |d| {
                d.chunks(4 * MSG).for_each(|g| {
                    black_box(four(g));
                })
            });
        }
        if let Some(got) = eight(&data[..8 * MSG]) {
            check(&got, &data[..8 * MSG]);
            best("sha512 AVX-512, 8 lanes", &data, |d| {
                d.chunks(8 * MSG).for_each(|g| {
                    black_box(eight(g));
                })
            });
        }
    }
    let backend = sha512_multibuffer::Backend::detect();
    best(&format!("sha512_many ({backend:?})"), &data, |d| {
        black_box(sha512_multibuffer::sha512_many(&msgs(d)));
    });
    // v1: SHA-256 of 64 KiB blocks, single stream (SHA-NI) against the lanes.
    use sha2::Digest as _;
    best("sha256 sha2, 1 stream", &data, |d| {
        for m in d.chunks(MSG) {
            black_box(sha2::Sha256::digest(m));
        }
    });
    for backend in sha512_multibuffer::Backend::ALL {
        let Some(got) = sha512_multibuffer::sha256_many_with(backend, &msgs(&data[..16 * MSG]))
        else {
            continue;
        };
        for (g, m) in got.iter().zip(data.chunks(MSG)) {
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
    println!("(messages of {MSG} bytes; multi-buffer digests checked against sha2)");
}
