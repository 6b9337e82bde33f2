//! SHA-512 of many independent messages at once ("multi-buffer" hashing).
//!
//! One SHA-512 stream is bound by its 80 serial rounds per 128-byte block, so
//! even the best single-stream code (OpenSSL, `ring`) leaves most of a modern
//! core's vector width unused. When there are several independent messages, as
//! the segments of PeerDist v2 content information, the same rounds can run for
//! 4 messages side by side in the 64-bit lanes of AVX2 registers, or for 8 in
//! AVX-512 registers (whose rotate and three-input logic instructions also
//! shorten each round).
//!
//! [`sha512_many`] takes messages of any lengths: it sorts them by length,
//! hashes groups of neighbours in the lanes over their common whole blocks, and
//! finishes each message's remaining blocks and padding from its lane's state
//! with [`sha2::compress512`]. The result is plain FIPS 180-4 SHA-512, byte for
//! byte. The instruction set is picked at run time ([`Backend::detect`]); the
//! scalar [`Backend::Scalar`] works everywhere (also off x86-64).
//!
//! The AVX-512 path needs Rust ≥ 1.89 (where its intrinsics are stable); the
//! build script leaves it out on older compilers.
//!
//! [`sha256_many`] does the same for SHA-256 (8 AVX2 or 16 AVX-512 lanes of
//! 32-bit words), for PeerDist v1; it takes the AVX2 path only on CPUs
//! without SHA-NI ([`sha256_backend`]).
//!
//! This crate holds all of `branchcache`'s `unsafe` code (the main crate
//! forbids it): the calls into `#[target_feature]` functions, made only after
//! the feature was detected, and unaligned vector loads from slices whose
//! lengths were checked first.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

use sha2::digest::generic_array::GenericArray;

mod sha256;
pub use sha256::{sha256_backend, sha256_many, sha256_many_with, Digest256};

/// FIPS 180-4 SHA-512 round constants.
#[rustfmt::skip]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
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

/// SHA-512 block size in bytes.
const BLOCK: usize = 128;

/// A SHA-512 digest.
pub type Digest = [u8; 64];

/// Which implementation hashes the lanes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// One message at a time with [`sha2::compress512`]; available everywhere.
    Scalar,
    /// 4 messages in the lanes of AVX2 registers (x86-64 with AVX2).
    Avx2,
    /// 8 messages in the lanes of AVX-512 registers (x86-64 with AVX-512F and
    /// AVX-512BW, built with Rust ≥ 1.89).
    Avx512,
}

impl Backend {
    /// Every backend, widest last.
    pub const ALL: [Backend; 3] = [Backend::Scalar, Backend::Avx2, Backend::Avx512];

    /// The widest backend this CPU (and this build) supports.
    pub fn detect() -> Backend {
        if Backend::Avx512.is_available() {
            Backend::Avx512
        } else if Backend::Avx2.is_available() {
            Backend::Avx2
        } else {
            Backend::Scalar
        }
    }

    /// Whether this CPU and build can run the backend.
    pub fn is_available(self) -> bool {
        match self {
            Backend::Scalar => true,
            Backend::Avx2 => x4::available(),
            Backend::Avx512 => x8::available(),
        }
    }

    /// Messages hashed side by side (1 for [`Backend::Scalar`]).
    pub const fn lanes(self) -> usize {
        match self {
            Backend::Scalar => 1,
            Backend::Avx2 => 4,
            Backend::Avx512 => 8,
        }
    }
}

/// SHA-512 of each message, in order, with the widest available backend.
///
/// Works for any number of messages of any lengths (including empty ones);
/// throughput per core is best with many messages of similar lengths.
pub fn sha512_many(msgs: &[&[u8]]) -> Vec<Digest> {
    // `detect` only returns available backends, so this falls back only in theory.
    sha512_many_with(Backend::detect(), msgs).unwrap_or_else(|| scalar_many(msgs))
}

/// SHA-512 of each message, in order, with the given backend, or `None` if
/// the backend is not [available](Backend::is_available).
pub fn sha512_many_with(backend: Backend, msgs: &[&[u8]]) -> Option<Vec<Digest>> {
    match backend {
        Backend::Scalar => Some(scalar_many(msgs)),
        Backend::Avx2 => grouped::<Sha512, 4>(msgs, x4::compress),
        Backend::Avx512 => grouped::<Sha512, 8>(msgs, x8::compress),
    }
}

/// Runs the whole blocks of `L` equally long slices into `L` states of `H`;
/// `false` (nothing done) if its instruction set is missing.
type CompressLanes<H, const L: usize> = fn(&mut [<H as Sha2Fn>::State; L], [&[u8]; L]) -> bool;

/// One SHA-2 function as the lane scheduler ([`grouped`]) sees it.
trait Sha2Fn {
    /// The chaining state (8 words).
    type State: Copy;
    /// The digest.
    type Out: Copy;
    /// Bytes per block.
    const BLOCK: usize;
    /// The initial state.
    const IV: Self::State;
    /// A placeholder digest (overwritten for every message).
    const ZERO: Self::Out;
    /// A vector step pays off from this many busy lanes on.
    const MIN_BUSY_LANES: usize;
    /// Finish `msg` from `state`, which has absorbed `msg[..done]` (`done` a
    /// multiple of [`Self::BLOCK`]): the remaining whole blocks, then the padding.
    fn finish(state: Self::State, msg: &[u8], done: usize) -> Self::Out;
}

/// SHA-512 for [`grouped`].
struct Sha512;

impl Sha2Fn for Sha512 {
    type State = [u64; 8];
    type Out = Digest;
    const BLOCK: usize = BLOCK;
    const IV: [u64; 8] = IV;
    const ZERO: Digest = [0; 64];
    // 8 AVX-512 lanes cost about as much as 2 scalar streams, 4 AVX2 lanes
    // about as much as 2.2.
    const MIN_BUSY_LANES: usize = 3;
    fn finish(state: [u64; 8], msg: &[u8], done: usize) -> Digest {
        finish(state, msg, done)
    }
}

fn scalar_many(msgs: &[&[u8]]) -> Vec<Digest> {
    msgs.iter().map(|m| finish(IV, m, 0)).collect()
}

/// Hash `msgs` in groups of `L` lanes with `compress`; `None` if its
/// instruction set is missing. Shared by SHA-512 and SHA-256.
///
/// Messages are sorted by length and taken `L` at a time. A group runs in
/// steps: each step takes every lane still busy up to the whole blocks of its
/// shortest message, which then leaves the group; the lanes of messages that
/// left (and unused lanes) re-read the longest message and their results are
/// dropped. Once fewer than `H::MIN_BUSY_LANES` remain, the rest is scalar.
fn grouped<H: Sha2Fn, const L: usize>(
    msgs: &[&[u8]],
    compress: CompressLanes<H, L>,
) -> Option<Vec<H::Out>> {
    let mut order: Vec<usize> = (0..msgs.len()).collect();
    order.sort_by_key(|&i| msgs[i].len());
    let mut out = vec![H::ZERO; msgs.len()];
    for group in order.chunks(L) {
        let Some(&longest) = group.last() else {
            continue;
        };
        let mut states = [H::IV; L];
        // Bytes every busy lane has absorbed (a multiple of the block size).
        let mut done = 0;
        for (k, &i) in group.iter().enumerate() {
            // Sorted: lanes k.. are busy and each of their messages (and the
            // longest) holds at least `end` bytes.
            let end = msgs[i].len() / H::BLOCK * H::BLOCK;
            if end > done && group.len() - k >= H::MIN_BUSY_LANES {
                let lanes: [&[u8]; L] = std::array::from_fn(|l| {
                    let m = if l >= k { group.get(l).copied() } else { None };
                    &msgs[m.unwrap_or(longest)][done..end]
                });
                let mut next = states;
                if !compress(&mut next, lanes) {
                    return None;
                }
                states[k..].copy_from_slice(&next[k..]);
                done = end;
            }
            out[i] = H::finish(states[k], msgs[i], done);
        }
    }
    Some(out)
}

/// Finish SHA-512 of `msg` from `state`, which has absorbed `msg[..done]`
/// (`done` a multiple of the block size): the remaining whole blocks, then
/// the padding.
fn finish(mut state: [u64; 8], msg: &[u8], done: usize) -> Digest {
    let rest = msg.get(done..).unwrap_or_default();
    let mut blocks = rest.chunks_exact(BLOCK);
    for b in &mut blocks {
        sha2::compress512(
            &mut state,
            std::slice::from_ref(GenericArray::from_slice(b)),
        );
    }
    let tail = blocks.remainder();
    let mut pad = [0u8; 2 * BLOCK];
    pad[..tail.len()].copy_from_slice(tail);
    pad[tail.len()] = 0x80;
    let n = if tail.len() < BLOCK - 16 {
        BLOCK
    } else {
        2 * BLOCK
    };
    pad[n - 16..n].copy_from_slice(&(msg.len() as u128 * 8).to_be_bytes());
    for b in pad[..n].chunks_exact(BLOCK) {
        sha2::compress512(
            &mut state,
            std::slice::from_ref(GenericArray::from_slice(b)),
        );
    }
    let mut out = [0u8; 64];
    for (o, s) in out.chunks_exact_mut(8).zip(state) {
        o.copy_from_slice(&s.to_be_bytes());
    }
    out
}

/// The lane slices' common length in whole blocks of `block` bytes, if they
/// all have the same length and it is a multiple of `block`.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn equal_blocks(lanes: &[&[u8]], block: usize) -> Option<usize> {
    let len = lanes.first()?.len();
    (len % block == 0 && lanes.iter().all(|l| l.len() == len)).then_some(len / block)
}

#[cfg(target_arch = "x86_64")]
mod x4 {
    //! 4 messages in the 64-bit lanes of AVX2 registers.
    use super::{BLOCK, K};
    use crate::equal_blocks;
    use std::arch::x86_64::*;

    macro_rules! rotr {
        ($x:expr, $n:literal) => {
            _mm256_or_si256(
                _mm256_srli_epi64::<$n>($x),
                _mm256_slli_epi64::<{ 64 - $n }>($x),
            )
        };
    }

    pub(super) fn available() -> bool {
        is_x86_feature_detected!("avx2")
    }

    /// Run the whole blocks of 4 equally long slices into the 4 states.
    /// `false` (and nothing done) without AVX2.
    ///
    /// # Panics
    /// If the slices differ in length or are not whole blocks (a bug in the caller).
    pub(super) fn compress(states: &mut [[u64; 8]; 4], lanes: [&[u8]; 4]) -> bool {
        let nblocks = equal_blocks(&lanes, BLOCK).expect("4 lanes of equal whole blocks");
        if !available() {
            return false;
        }
        // SAFETY: AVX2 was detected just above; every pointer is the start of a
        // slice of `nblocks * 128` bytes (checked by `equal_blocks`).
        unsafe { compress_avx2(states, lanes.map(<[u8]>::as_ptr), nblocks) };
        true
    }

    /// # Safety
    /// AVX2 must be available and each pointer valid for reads of
    /// `128 * nblocks` bytes.
    #[target_feature(enable = "avx2")]
    unsafe fn compress_avx2(states: &mut [[u64; 8]; 4], lanes: [*const u8; 4], nblocks: usize) {
        // SAFETY: the caller guarantees AVX2 and that every load below, at most
        // `blk * 128 + 96 + 32 <= nblocks * 128` bytes past a lane's pointer,
        // stays within that lane's slice. Stores go to local arrays.
        unsafe {
            let bswap = _mm256_setr_epi8(
                7, 6, 5, 4, 3, 2, 1, 0, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 15,
                14, 13, 12, 11, 10, 9, 8,
            );
            let mut st: [__m256i; 8] = std::array::from_fn(|i| {
                let v = [0, 1, 2, 3].map(|l| states[l][i] as i64);
                _mm256_loadu_si256(v.as_ptr().cast())
            });
            for blk in 0..nblocks {
                let mut w = [_mm256_setzero_si256(); 16];
                for (q, quad) in w.chunks_exact_mut(4).enumerate() {
                    let off = blk * BLOCK + q * 32;
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
                let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = st;
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
                    let s1 = _mm256_xor_si256(
                        _mm256_xor_si256(rotr!(e, 14), rotr!(e, 18)),
                        rotr!(e, 41),
                    );
                    let ch = _mm256_xor_si256(_mm256_and_si256(e, f), _mm256_andnot_si256(e, g));
                    let t1 = _mm256_add_epi64(
                        _mm256_add_epi64(_mm256_add_epi64(h, s1), _mm256_add_epi64(ch, wt)),
                        _mm256_set1_epi64x(k as i64),
                    );
                    let s0 = _mm256_xor_si256(
                        _mm256_xor_si256(rotr!(a, 28), rotr!(a, 34)),
                        rotr!(a, 39),
                    );
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
            for (i, s) in st.iter().enumerate() {
                let mut v = [0u64; 4];
                _mm256_storeu_si256(v.as_mut_ptr().cast(), *s);
                for (state, x) in states.iter_mut().zip(v) {
                    state[i] = x;
                }
            }
        }
    }
}

#[cfg(all(target_arch = "x86_64", sha512mb_avx512))]
#[clippy::msrv = "1.89"] // only built by Rust >= 1.89 (build.rs)
mod x8 {
    //! 8 messages in the 64-bit lanes of AVX-512 registers.
    use super::{BLOCK, K};
    use crate::equal_blocks;
    use std::arch::x86_64::*;

    pub(super) fn available() -> bool {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")
    }

    /// Run the whole blocks of 8 equally long slices into the 8 states.
    /// `false` (and nothing done) without AVX-512F/BW.
    ///
    /// # Panics
    /// If the slices differ in length or are not whole blocks (a bug in the caller).
    pub(super) fn compress(states: &mut [[u64; 8]; 8], lanes: [&[u8]; 8]) -> bool {
        let nblocks = equal_blocks(&lanes, BLOCK).expect("8 lanes of equal whole blocks");
        if !available() {
            return false;
        }
        // SAFETY: AVX-512F/BW were detected just above; every pointer is the
        // start of a slice of `nblocks * 128` bytes (checked by `equal_blocks`).
        unsafe { compress_avx512(states, lanes.map(<[u8]>::as_ptr), nblocks) };
        true
    }

    /// Transpose 8 rows of 8 64-bit words (row `l` = 8 words of lane `l`) into
    /// 8 vectors of one word each for all lanes.
    #[target_feature(enable = "avx512f")]
    fn transpose(r: [__m512i; 8]) -> [__m512i; 8] {
        // Pairs of rows within 128-bit lanes: a0 = r0_0 r1_0 | r0_2 r1_2 | …
        let a0 = _mm512_unpacklo_epi64(r[0], r[1]);
        let a1 = _mm512_unpackhi_epi64(r[0], r[1]);
        let a2 = _mm512_unpacklo_epi64(r[2], r[3]);
        let a3 = _mm512_unpackhi_epi64(r[2], r[3]);
        let a4 = _mm512_unpacklo_epi64(r[4], r[5]);
        let a5 = _mm512_unpackhi_epi64(r[4], r[5]);
        let a6 = _mm512_unpacklo_epi64(r[6], r[7]);
        let a7 = _mm512_unpackhi_epi64(r[6], r[7]);
        // 128-bit lanes: 0x88 takes lanes 0, 2 of each input, 0xDD lanes 1, 3.
        let b0 = _mm512_shuffle_i64x2::<0x88>(a0, a2); // words 0, 4 of rows 0-3
        let b1 = _mm512_shuffle_i64x2::<0xDD>(a0, a2); // words 2, 6
        let b2 = _mm512_shuffle_i64x2::<0x88>(a1, a3); // words 1, 5
        let b3 = _mm512_shuffle_i64x2::<0xDD>(a1, a3); // words 3, 7
        let b4 = _mm512_shuffle_i64x2::<0x88>(a4, a6); // the same for rows 4-7
        let b5 = _mm512_shuffle_i64x2::<0xDD>(a4, a6);
        let b6 = _mm512_shuffle_i64x2::<0x88>(a5, a7);
        let b7 = _mm512_shuffle_i64x2::<0xDD>(a5, a7);
        [
            _mm512_shuffle_i64x2::<0x88>(b0, b4),
            _mm512_shuffle_i64x2::<0x88>(b2, b6),
            _mm512_shuffle_i64x2::<0x88>(b1, b5),
            _mm512_shuffle_i64x2::<0x88>(b3, b7),
            _mm512_shuffle_i64x2::<0xDD>(b0, b4),
            _mm512_shuffle_i64x2::<0xDD>(b2, b6),
            _mm512_shuffle_i64x2::<0xDD>(b1, b5),
            _mm512_shuffle_i64x2::<0xDD>(b3, b7),
        ]
    }

    /// # Safety
    /// AVX-512F/BW must be available and each pointer valid for reads of
    /// `128 * nblocks` bytes.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn compress_avx512(states: &mut [[u64; 8]; 8], lanes: [*const u8; 8], nblocks: usize) {
        let bswap = _mm512_set4_epi64(
            0x08090a0b0c0d0e0f,
            0x0001020304050607,
            0x08090a0b0c0d0e0f,
            0x0001020304050607,
        );
        let mut st: [__m512i; 8] = std::array::from_fn(|i| {
            let v = [0, 1, 2, 3, 4, 5, 6, 7].map(|l| states[l][i] as i64);
            _mm512_set_epi64(v[7], v[6], v[5], v[4], v[3], v[2], v[1], v[0])
        });
        for blk in 0..nblocks {
            let mut w = [_mm512_setzero_si512(); 16];
            for (half, words) in w.chunks_exact_mut(8).enumerate() {
                let off = blk * BLOCK + half * 64;
                // SAFETY: the caller guarantees every lane pointer is valid for
                // `nblocks * 128` bytes; this 64-byte load ends at
                // `blk * 128 + 128 <= nblocks * 128`.
                let rows = lanes.map(|p| unsafe { _mm512_loadu_si512(p.add(off).cast()) });
                for (wt, v) in words.iter_mut().zip(transpose(rows)) {
                    *wt = _mm512_shuffle_epi8(v, bswap);
                }
            }
            let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = st;
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
        for (i, s) in st.iter().enumerate() {
            let mut v = [0i64; 8];
            // SAFETY: a 64-byte store into the local 64-byte array `v`.
            unsafe { _mm512_storeu_epi64(v.as_mut_ptr(), *s) };
            for (state, x) in states.iter_mut().zip(v) {
                state[i] = x as u64;
            }
        }
    }
}

/// Stand-in without AVX-512 (older compiler or other architecture).
#[cfg(not(all(target_arch = "x86_64", sha512mb_avx512)))]
mod x8 {
    pub(super) fn available() -> bool {
        false
    }

    pub(super) fn compress(_: &mut [[u64; 8]; 8], _: [&[u8]; 8]) -> bool {
        false
    }
}

/// Stand-in off x86-64.
#[cfg(not(target_arch = "x86_64"))]
mod x4 {
    pub(super) fn available() -> bool {
        false
    }

    pub(super) fn compress(_: &mut [[u64; 8]; 4], _: [&[u8]; 4]) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        let abc = "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
                   2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f";
        let empty = "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce\
                     47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e";
        // FIPS 180-4 example C.2: the 896-bit (two-block padding) message.
        let two = "8e959b75dae313da8cf4f72814fc143f8f7779c6eb9f7fa17299aeadb6889018\
                   501d289e4900f7e4331b99dec4b5433ac7d329eeb6dd26545e96e55b874be909";
        let long: &[u8] = b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn\
                            hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
        for backend in Backend::ALL.into_iter().filter(|b| b.is_available()) {
            // Enough copies that every message shares a lane group with others.
            let msgs: Vec<&[u8]> = [&b"abc"[..], b"", long].repeat(8);
            let got = sha512_many_with(backend, &msgs).unwrap();
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
        let want = "e718483d0ce769644e2e42c7bc15b4638e1f98b13b2044285632a803afa973eb\
                    de0ff244877ea60a4cb0432ce577c31beb009c5c2c49aa2e4eadb217ad8cc09b";
        let a = vec![b'a'; 1_000_000];
        let msgs = vec![a.as_slice(); 9];
        for backend in Backend::ALL.into_iter().filter(|b| b.is_available()) {
            for got in sha512_many_with(backend, &msgs).unwrap() {
                assert_eq!(to_hex(&got), want, "{backend:?}");
            }
        }
    }

    #[test]
    fn unavailable_backends_say_so() {
        for backend in Backend::ALL {
            let got = sha512_many_with(backend, &[&b"x"[..]; 9]);
            assert_eq!(got.is_some(), backend.is_available(), "{backend:?}");
        }
        assert!(Backend::detect().is_available());
    }

    #[test]
    fn no_messages() {
        for backend in Backend::ALL.into_iter().filter(|b| b.is_available()) {
            assert_eq!(sha512_many_with(backend, &[]), Some(Vec::new()));
        }
    }

    fn to_hex(d: &[u8]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }
}
