//! SHA-256 of many independent messages at once: 8 messages in the 32-bit
//! lanes of AVX2 registers or 16 in AVX-512 registers, the same scheme as the
//! crate's SHA-512 code (length grouping, scalar finish with
//! [`sha2::compress256`]).
//!
//! Unlike SHA-512, SHA-256 has dedicated instructions (SHA-NI) that `sha2`
//! uses for a single stream, so [`sha256_many`] prefers 8 AVX2 lanes over that
//! only on CPUs without SHA-NI ([`sha256_backend`]); AVX-512 (16 lanes) wins
//! everywhere it was measured.

use crate::Backend;
use sha2::digest::generic_array::GenericArray;

/// FIPS 180-4 SHA-256 round constants.
#[rustfmt::skip]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// SHA-256 initial hash value.
#[rustfmt::skip]
const IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// SHA-256 block size in bytes.
const BLOCK: usize = 64;

/// A SHA-256 digest.
pub type Digest256 = [u8; 32];

/// SHA-256 for the crate's lane scheduler (`grouped`).
pub(crate) struct Sha256;

impl crate::Sha2Fn for Sha256 {
    type State = [u32; 8];
    type Out = Digest256;
    const BLOCK: usize = BLOCK;
    const IV: [u32; 8] = IV;
    const ZERO: Digest256 = [0; 32];
    // A guess by analogy with SHA-512; below it the scalar SHA-NI path is as fast.
    const MIN_BUSY_LANES: usize = 4;
    fn finish(state: [u32; 8], msg: &[u8], done: usize) -> Digest256 {
        finish(state, msg, done)
    }
}

/// The backend [`sha256_many`] uses on this CPU: [`Backend::Avx512`] where
/// available; otherwise [`Backend::Avx2`] only if the CPU lacks the SHA
/// extensions (SHA-NI), else [`Backend::Scalar`] (`sha2`, which uses SHA-NI).
///
/// On the dev box (AVX-512 and SHA-NI, 64 KiB messages) 16 AVX-512 lanes ran
/// 2.3x and 8 AVX2 lanes 1.3x `sha2`'s SHA-NI stream; on CPUs whose SHA-NI is
/// relatively faster (AMD Zen) AVX2 may lose, so it is not preferred over it.
pub fn sha256_backend() -> Backend {
    if Backend::Avx512.is_available() {
        Backend::Avx512
    } else if Backend::Avx2.is_available() && !has_sha_ni() {
        Backend::Avx2
    } else {
        Backend::Scalar
    }
}

#[cfg(target_arch = "x86_64")]
fn has_sha_ni() -> bool {
    is_x86_feature_detected!("sha")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_sha_ni() -> bool {
    false
}

/// SHA-256 of each message, in order, with the fastest backend for this CPU
/// ([`sha256_backend`]).
///
/// Works for any number of messages of any lengths (including empty ones);
/// throughput per core is best with many messages of similar lengths.
pub fn sha256_many(msgs: &[&[u8]]) -> Vec<Digest256> {
    // `sha256_backend` only returns available backends.
    sha256_many_with(sha256_backend(), msgs).unwrap_or_else(|| scalar_many(msgs))
}

/// SHA-256 of each message, in order, with the given backend (8 lanes for
/// [`Backend::Avx2`], 16 for [`Backend::Avx512`]), or `None` if the backend is
/// not [available](Backend::is_available).
pub fn sha256_many_with(backend: Backend, msgs: &[&[u8]]) -> Option<Vec<Digest256>> {
    match backend {
        Backend::Scalar => Some(scalar_many(msgs)),
        Backend::Avx2 => crate::grouped::<Sha256, 8>(msgs, x8::compress),
        Backend::Avx512 => crate::grouped::<Sha256, 16>(msgs, x16::compress),
    }
}

/// One message at a time with `sha2` (SHA-NI where the CPU has it).
fn scalar_many(msgs: &[&[u8]]) -> Vec<Digest256> {
    use sha2::Digest as _;
    msgs.iter()
        .map(|m| sha2::Sha256::digest(m).into())
        .collect()
}

/// Finish SHA-256 of `msg` from `state`, which has absorbed `msg[..done]`
/// (`done` a multiple of the block size): the remaining whole blocks, then
/// the padding.
fn finish(mut state: [u32; 8], msg: &[u8], done: usize) -> Digest256 {
    let rest = msg.get(done..).unwrap_or_default();
    let mut blocks = rest.chunks_exact(BLOCK);
    for b in &mut blocks {
        sha2::compress256(
            &mut state,
            std::slice::from_ref(GenericArray::from_slice(b)),
        );
    }
    let tail = blocks.remainder();
    let mut pad = [0u8; 2 * BLOCK];
    pad[..tail.len()].copy_from_slice(tail);
    pad[tail.len()] = 0x80;
    let n = if tail.len() < BLOCK - 8 {
        BLOCK
    } else {
        2 * BLOCK
    };
    pad[n - 8..n].copy_from_slice(&(msg.len() as u64 * 8).to_be_bytes());
    for b in pad[..n].chunks_exact(BLOCK) {
        sha2::compress256(
            &mut state,
            std::slice::from_ref(GenericArray::from_slice(b)),
        );
    }
    let mut out = [0u8; 32];
    for (o, s) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&s.to_be_bytes());
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod x8 {
    //! 8 messages in the 32-bit lanes of AVX2 registers.
    use super::{BLOCK, K};
    use crate::equal_blocks;
    use std::arch::x86_64::*;

    macro_rules! rotr {
        ($x:expr, $n:literal) => {
            _mm256_or_si256(
                _mm256_srli_epi32::<$n>($x),
                _mm256_slli_epi32::<{ 32 - $n }>($x),
            )
        };
    }

    /// Run the whole blocks of 8 equally long slices into the 8 states.
    /// `false` (and nothing done) without AVX2.
    ///
    /// # Panics
    /// If the slices differ in length or are not whole blocks (a bug in the caller).
    pub(super) fn compress(states: &mut [[u32; 8]; 8], lanes: [&[u8]; 8]) -> bool {
        let nblocks = equal_blocks(&lanes, BLOCK).expect("8 lanes of equal whole blocks");
        if !crate::Backend::Avx2.is_available() {
            return false;
        }
        // SAFETY: AVX2 was detected just above; every pointer is the start of a
        // slice of `nblocks * 64` bytes (checked by `equal_blocks`).
        unsafe { compress_avx2(states, lanes.map(<[u8]>::as_ptr), nblocks) };
        true
    }

    /// Transpose 8 rows of 8 32-bit words (row `l` = 8 words of lane `l`)
    /// into 8 vectors of one word each for all lanes.
    #[target_feature(enable = "avx2")]
    fn transpose(r: [__m256i; 8]) -> [__m256i; 8] {
        // Within 128-bit halves: t0 = r0_0 r1_0 r0_1 r1_1 | r0_4 r1_4 r0_5 r1_5.
        let t: [__m256i; 8] = std::array::from_fn(|i| {
            let (x, y) = (r[i & !1], r[i | 1]);
            if i & 1 == 0 {
                _mm256_unpacklo_epi32(x, y)
            } else {
                _mm256_unpackhi_epi32(x, y)
            }
        });
        // u[4g + j], half k: word 4k + j of rows 4g..4g+4.
        let u: [__m256i; 8] = std::array::from_fn(|i| {
            let (g, j) = (i / 4, i % 4);
            let (x, y) = (t[4 * g + (j >> 1)], t[4 * g + 2 + (j >> 1)]);
            if j & 1 == 0 {
                _mm256_unpacklo_epi64(x, y)
            } else {
                _mm256_unpackhi_epi64(x, y)
            }
        });
        // word 4k + j, half g = u[4g + j] half k.
        std::array::from_fn(|w| {
            let (k, j) = (w / 4, w % 4);
            if k == 0 {
                _mm256_permute2x128_si256::<0x20>(u[j], u[4 + j])
            } else {
                _mm256_permute2x128_si256::<0x31>(u[j], u[4 + j])
            }
        })
    }

    /// # Safety
    /// AVX2 must be available and each pointer valid for reads of
    /// `64 * nblocks` bytes.
    #[target_feature(enable = "avx2")]
    unsafe fn compress_avx2(states: &mut [[u32; 8]; 8], lanes: [*const u8; 8], nblocks: usize) {
        let bswap = _mm256_setr_epi8(
            3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12, 3, 2, 1, 0, 7, 6, 5, 4, 11, 10,
            9, 8, 15, 14, 13, 12,
        );
        let mut st: [__m256i; 8] = std::array::from_fn(|i| {
            let v = [0, 1, 2, 3, 4, 5, 6, 7].map(|l| states[l][i] as i32);
            _mm256_setr_epi32(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7])
        });
        for blk in 0..nblocks {
            let mut w = [_mm256_setzero_si256(); 16];
            for (half, words) in w.chunks_exact_mut(8).enumerate() {
                let off = blk * BLOCK + half * 32;
                // SAFETY: the caller guarantees every lane pointer is valid for
                // `nblocks * 64` bytes; this 32-byte load ends at
                // `blk * 64 + 64 <= nblocks * 64`.
                let rows = lanes.map(|p| unsafe { _mm256_loadu_si256(p.add(off).cast()) });
                for (wt, v) in words.iter_mut().zip(transpose(rows)) {
                    *wt = _mm256_shuffle_epi8(v, bswap);
                }
            }
            let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = st;
            for (t, &k) in K.iter().enumerate() {
                let wt = if t < 16 {
                    w[t]
                } else {
                    let (w2, w15) = (w[(t - 2) & 15], w[(t - 15) & 15]);
                    let s1 = _mm256_xor_si256(
                        _mm256_xor_si256(rotr!(w2, 17), rotr!(w2, 19)),
                        _mm256_srli_epi32::<10>(w2),
                    );
                    let s0 = _mm256_xor_si256(
                        _mm256_xor_si256(rotr!(w15, 7), rotr!(w15, 18)),
                        _mm256_srli_epi32::<3>(w15),
                    );
                    let v = _mm256_add_epi32(
                        _mm256_add_epi32(s1, w[(t - 7) & 15]),
                        _mm256_add_epi32(s0, w[t & 15]),
                    );
                    w[t & 15] = v;
                    v
                };
                let s1 =
                    _mm256_xor_si256(_mm256_xor_si256(rotr!(e, 6), rotr!(e, 11)), rotr!(e, 25));
                let ch = _mm256_xor_si256(_mm256_and_si256(e, f), _mm256_andnot_si256(e, g));
                let t1 = _mm256_add_epi32(
                    _mm256_add_epi32(_mm256_add_epi32(h, s1), _mm256_add_epi32(ch, wt)),
                    _mm256_set1_epi32(k as i32),
                );
                let s0 =
                    _mm256_xor_si256(_mm256_xor_si256(rotr!(a, 2), rotr!(a, 13)), rotr!(a, 22));
                let maj = _mm256_xor_si256(
                    _mm256_and_si256(_mm256_xor_si256(a, b), c),
                    _mm256_and_si256(a, b),
                );
                let t2 = _mm256_add_epi32(s0, maj);
                (h, g, f, e, d, c, b, a) = (
                    g,
                    f,
                    e,
                    _mm256_add_epi32(d, t1),
                    c,
                    b,
                    a,
                    _mm256_add_epi32(t1, t2),
                );
            }
            for (s, n) in st.iter_mut().zip([a, b, c, d, e, f, g, h]) {
                *s = _mm256_add_epi32(*s, n);
            }
        }
        for (i, s) in st.iter().enumerate() {
            let mut v = [0u32; 8];
            // SAFETY: a 32-byte store into the local 32-byte array `v`.
            unsafe { _mm256_storeu_si256(v.as_mut_ptr().cast(), *s) };
            for (state, x) in states.iter_mut().zip(v) {
                state[i] = x;
            }
        }
    }
}

#[cfg(all(target_arch = "x86_64", sha512mb_avx512))]
#[clippy::msrv = "1.89"] // only built by Rust >= 1.89 (build.rs)
mod x16 {
    //! 16 messages in the 32-bit lanes of AVX-512 registers.
    use super::{BLOCK, K};
    use crate::equal_blocks;
    use std::arch::x86_64::*;

    /// Run the whole blocks of 16 equally long slices into the 16 states.
    /// `false` (and nothing done) without AVX-512F/BW.
    ///
    /// # Panics
    /// If the slices differ in length or are not whole blocks (a bug in the caller).
    pub(super) fn compress(states: &mut [[u32; 8]; 16], lanes: [&[u8]; 16]) -> bool {
        let nblocks = equal_blocks(&lanes, BLOCK).expect("16 lanes of equal whole blocks");
        if !crate::Backend::Avx512.is_available() {
            return false;
        }
        // SAFETY: AVX-512F/BW were detected just above; every pointer is the
        // start of a slice of `nblocks * 64` bytes (checked by `equal_blocks`).
        unsafe { compress_avx512(states, lanes.map(<[u8]>::as_ptr), nblocks) };
        true
    }

    /// Transpose 16 rows of 16 32-bit words (row `l` = one block of lane `l`)
    /// into 16 vectors of one word each for all lanes.
    #[target_feature(enable = "avx512f")]
    fn transpose(r: [__m512i; 16]) -> [__m512i; 16] {
        // Within 128-bit lanes: t0 = r0_0 r1_0 r0_1 r1_1 | r0_4 r1_4 … .
        let t: [__m512i; 16] = std::array::from_fn(|i| {
            let (x, y) = (r[i & !1], r[i | 1]);
            if i & 1 == 0 {
                _mm512_unpacklo_epi32(x, y)
            } else {
                _mm512_unpackhi_epi32(x, y)
            }
        });
        // u[4g + j], 128-bit lane k: word 4k + j of rows 4g..4g+4.
        let u: [__m512i; 16] = std::array::from_fn(|i| {
            let (g, j) = (i / 4, i % 4);
            let (x, y) = (t[4 * g + (j >> 1)], t[4 * g + 2 + (j >> 1)]);
            if j & 1 == 0 {
                _mm512_unpacklo_epi64(x, y)
            } else {
                _mm512_unpackhi_epi64(x, y)
            }
        });
        // word 4k + j, 128-bit lane g = u[4g + j] lane k: a 4x4 transpose of
        // 128-bit lanes for each j.
        let mut out = [_mm512_setzero_si512(); 16];
        for j in 0..4 {
            let (a, b, c, d) = (u[j], u[4 + j], u[8 + j], u[12 + j]);
            let ab_lo = _mm512_shuffle_i32x4::<0x44>(a, b); // a0 a1 b0 b1
            let ab_hi = _mm512_shuffle_i32x4::<0xEE>(a, b); // a2 a3 b2 b3
            let cd_lo = _mm512_shuffle_i32x4::<0x44>(c, d);
            let cd_hi = _mm512_shuffle_i32x4::<0xEE>(c, d);
            out[j] = _mm512_shuffle_i32x4::<0x88>(ab_lo, cd_lo); // a0 b0 c0 d0
            out[4 + j] = _mm512_shuffle_i32x4::<0xDD>(ab_lo, cd_lo); // a1 b1 c1 d1
            out[8 + j] = _mm512_shuffle_i32x4::<0x88>(ab_hi, cd_hi);
            out[12 + j] = _mm512_shuffle_i32x4::<0xDD>(ab_hi, cd_hi);
        }
        out
    }

    /// # Safety
    /// AVX-512F/BW must be available and each pointer valid for reads of
    /// `64 * nblocks` bytes.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn compress_avx512(states: &mut [[u32; 8]; 16], lanes: [*const u8; 16], nblocks: usize) {
        let bswap = _mm512_set4_epi32(0x0c0d0e0f, 0x08090a0b, 0x04050607, 0x00010203);
        let mut st: [__m512i; 8] = std::array::from_fn(|i| {
            let v: [u32; 16] = std::array::from_fn(|l| states[l][i]);
            // SAFETY: a 64-byte load from the local 64-byte array `v`.
            unsafe { _mm512_loadu_si512(v.as_ptr().cast()) }
        });
        for blk in 0..nblocks {
            let off = blk * BLOCK;
            // SAFETY: the caller guarantees every lane pointer is valid for
            // `nblocks * 64` bytes; this 64-byte load ends at
            // `blk * 64 + 64 <= nblocks * 64`.
            let rows = lanes.map(|p| unsafe { _mm512_loadu_si512(p.add(off).cast()) });
            let mut w = transpose(rows).map(|v| _mm512_shuffle_epi8(v, bswap));
            let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = st;
            for (t, &k) in K.iter().enumerate() {
                let wt = if t < 16 {
                    w[t]
                } else {
                    let (w2, w15) = (w[(t - 2) & 15], w[(t - 15) & 15]);
                    let s1 = _mm512_ternarylogic_epi32::<0x96>(
                        _mm512_ror_epi32::<17>(w2),
                        _mm512_ror_epi32::<19>(w2),
                        _mm512_srli_epi32::<10>(w2),
                    );
                    let s0 = _mm512_ternarylogic_epi32::<0x96>(
                        _mm512_ror_epi32::<7>(w15),
                        _mm512_ror_epi32::<18>(w15),
                        _mm512_srli_epi32::<3>(w15),
                    );
                    let v = _mm512_add_epi32(
                        _mm512_add_epi32(s1, w[(t - 7) & 15]),
                        _mm512_add_epi32(s0, w[t & 15]),
                    );
                    w[t & 15] = v;
                    v
                };
                let s1 = _mm512_ternarylogic_epi32::<0x96>(
                    _mm512_ror_epi32::<6>(e),
                    _mm512_ror_epi32::<11>(e),
                    _mm512_ror_epi32::<25>(e),
                );
                let ch = _mm512_ternarylogic_epi32::<0xCA>(e, f, g);
                let t1 = _mm512_add_epi32(
                    _mm512_add_epi32(_mm512_add_epi32(h, s1), _mm512_add_epi32(ch, wt)),
                    _mm512_set1_epi32(k as i32),
                );
                let s0 = _mm512_ternarylogic_epi32::<0x96>(
                    _mm512_ror_epi32::<2>(a),
                    _mm512_ror_epi32::<13>(a),
                    _mm512_ror_epi32::<22>(a),
                );
                let maj = _mm512_ternarylogic_epi32::<0xE8>(a, b, c);
                let t2 = _mm512_add_epi32(s0, maj);
                (h, g, f, e, d, c, b, a) = (
                    g,
                    f,
                    e,
                    _mm512_add_epi32(d, t1),
                    c,
                    b,
                    a,
                    _mm512_add_epi32(t1, t2),
                );
            }
            for (s, n) in st.iter_mut().zip([a, b, c, d, e, f, g, h]) {
                *s = _mm512_add_epi32(*s, n);
            }
        }
        for (i, s) in st.iter().enumerate() {
            let mut v = [0u32; 16];
            // SAFETY: a 64-byte store into the local 64-byte array `v`.
            unsafe { _mm512_storeu_si512(v.as_mut_ptr().cast(), *s) };
            for (state, x) in states.iter_mut().zip(v) {
                state[i] = x;
            }
        }
    }
}

/// Stand-in without AVX-512 (older compiler or other architecture).
#[cfg(not(all(target_arch = "x86_64", sha512mb_avx512)))]
mod x16 {
    pub(super) fn compress(_: &mut [[u32; 8]; 16], _: [&[u8]; 16]) -> bool {
        false
    }
}

/// Stand-in off x86-64.
#[cfg(not(target_arch = "x86_64"))]
mod x8 {
    pub(super) fn compress(_: &mut [[u32; 8]; 8], _: [&[u8]; 8]) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to_hex(d: &[u8]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn known_answers() {
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        // FIPS 180-4 example: the 448-bit message (padding needs a second block).
        let two = "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1";
        let long: &[u8] = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        for backend in Backend::ALL.into_iter().filter(|b| b.is_available()) {
            // Enough copies that every message shares a lane group with others.
            let msgs: Vec<&[u8]> = [&b"abc"[..], b"", long].repeat(16);
            let got = sha256_many_with(backend, &msgs).unwrap();
            for (g, m) in got.iter().zip(&msgs) {
                let want = match m.len() {
                    3 => abc,
                    0 => empty,
                    _ => two,
                };
                assert_eq!(to_hex(g), want, "{backend:?}, {} bytes", m.len());
            }
        }
    }

    /// FIPS 180-4 / NIST: one million 'a', long enough for every SIMD path.
    #[test]
    fn million_a() {
        let want = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
        let a = vec![b'a'; 1_000_000];
        let msgs = vec![a.as_slice(); 17];
        for backend in Backend::ALL.into_iter().filter(|b| b.is_available()) {
            for got in sha256_many_with(backend, &msgs).unwrap() {
                assert_eq!(to_hex(&got), want, "{backend:?}");
            }
        }
        assert_eq!(to_hex(&sha256_many(&msgs)[16]), want);
    }

    #[test]
    fn unavailable_backends_say_so() {
        for backend in Backend::ALL {
            let got = sha256_many_with(backend, &[&b"x"[..]; 17]);
            assert_eq!(got.is_some(), backend.is_available(), "{backend:?}");
        }
        assert!(sha256_backend().is_available());
    }

    #[test]
    fn no_messages() {
        for backend in Backend::ALL.into_iter().filter(|b| b.is_available()) {
            assert_eq!(sha256_many_with(backend, &[]), Some(Vec::new()));
        }
    }
}
