//! Hash algorithms and the PeerDist key-derivation chain (MS-PCCRC §2.2).
//!
//! `Ks = H(server key)`, `Kp = HMAC(Ks, HoD)`, `HoHoDk = HMAC(Kp, HoD ‖ C2)`.
//! For v2 `H` is SHA-512 and every *output* is cut to 32 bytes after the full
//! HMAC-SHA-512 (never a truncated hash inside the HMAC).

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256, Sha384, Sha512};

/// Largest digest any supported algorithm produces (SHA-512).
pub const MAX_DIGEST_LEN: usize = 64;

/// `C2`: UTF-16LE "MS_P2P_CACHING" plus a UTF-16 NUL, 30 bytes.
// SPEC(MS-PCCRC §2.2): the spec says "null-terminated ASCII"; IIS, iPXE and the
// MS test suite all use UTF-16LE with a two-byte terminator. Explicit bytes so the
// constant is independent of host byte order.
pub const C2: [u8; 30] = [
    b'M', 0, b'S', 0, b'_', 0, b'P', 0, b'2', 0, b'P', 0, b'_', 0, b'C', 0, b'A', 0, b'C', 0, b'H',
    0, b'I', 0, b'N', 0, b'G', 0, 0, 0,
];

/// A hash algorithm a content information structure can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlgo {
    /// v1 `0x800C`.
    Sha256,
    /// v1 `0x800D`.
    Sha384,
    /// v1 `0x800E`.
    Sha512,
    /// v2 `0x04`: SHA-512 with the output truncated to 32 bytes.
    Sha512Trunc,
}

impl HashAlgo {
    /// Digest length in bytes as it appears on the wire.
    pub const fn digest_len(self) -> usize {
        match self {
            HashAlgo::Sha256 | HashAlgo::Sha512Trunc => 32,
            HashAlgo::Sha384 => 48,
            HashAlgo::Sha512 => 64,
        }
    }

    /// The v1 `dwHashAlgo` value, if this algorithm is valid in v1.
    pub const fn v1_id(self) -> Option<u32> {
        match self {
            HashAlgo::Sha256 => Some(0x800C),
            HashAlgo::Sha384 => Some(0x800D),
            HashAlgo::Sha512 => Some(0x800E),
            HashAlgo::Sha512Trunc => None,
        }
    }

    /// Parse a v1 `dwHashAlgo` value.
    pub const fn from_v1_id(id: u32) -> Option<Self> {
        match id {
            0x800C => Some(HashAlgo::Sha256),
            0x800D => Some(HashAlgo::Sha384),
            0x800E => Some(HashAlgo::Sha512),
            _ => None,
        }
    }

    /// Stable lower-case name (`sha256`, …, `sha512-trunc`) for CLI, JSON and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            HashAlgo::Sha256 => "sha256",
            HashAlgo::Sha384 => "sha384",
            HashAlgo::Sha512 => "sha512",
            HashAlgo::Sha512Trunc => "sha512-trunc",
        }
    }

    /// Hash `data` in one call.
    pub fn hash(self, data: &[u8]) -> Digest {
        let mut h = Hasher::new(self);
        h.update(data);
        h.finalize()
    }

    /// HMAC with this algorithm's full hash function; output truncated to
    /// [`digest_len`](Self::digest_len) (only matters for `Sha512Trunc`).
    pub fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Digest {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key)
                .expect("HMAC accepts keys of any length");
            for p in parts {
                mac.update(p);
            }
            mac.finalize().into_bytes().to_vec()
        }
        let full = match self {
            HashAlgo::Sha256 => run::<Hmac<Sha256>>(key, parts),
            HashAlgo::Sha384 => run::<Hmac<Sha384>>(key, parts),
            HashAlgo::Sha512 | HashAlgo::Sha512Trunc => run::<Hmac<Sha512>>(key, parts),
        };
        Digest::from_slice(&full[..self.digest_len()]).expect("digest length within bounds")
    }
}

impl fmt::Display for HashAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Incremental hasher for one of the [`HashAlgo`]s.
#[derive(Clone)]
pub struct Hasher {
    algo: HashAlgo,
    state: State,
}

#[derive(Clone)]
enum State {
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
    /// SHA-512 from `ring` (BoringSSL assembly) where it is the faster of the
    /// two; see [`ring_sha512_is_faster`].
    RingSha512(ring::digest::Context),
}

/// Whether `ring` hashes SHA-512 faster than `sha2` on this CPU. v2 spends
/// almost all its CPU in SHA-512 of the content, so this decides its speed.
///
/// - x86_64: `ring` runs its AVX assembly only on Intel CPUs and its generic
///   assembly elsewhere; `sha2` 0.10 has an AVX2 path on every vendor. Measured
///   (`docs/PERFORMANCE.md`): on Intel Xeon `ring` is ~5 % faster, on AMD EPYC
///   ~4 % slower. `sse4a` exists on AMD (and AMD-derived Hygon) CPUs only, so
///   it tells the two apart without reading the vendor string.
/// - other architectures: `sha2` 0.10 has only portable Rust for SHA-512
///   there (its aarch64 code needs a C toolchain feature), `ring` has
///   assembly (aarch64 with the SHA-512 extension: hardware instructions).
///
/// Both produce the same digests; only speed differs.
fn ring_sha512_is_faster() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        !std::is_x86_feature_detected!("sse4a")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        true
    }
}

impl Hasher {
    /// A fresh state.
    pub fn new(algo: HashAlgo) -> Self {
        let state = match algo {
            HashAlgo::Sha256 => State::Sha256(Sha256::new()),
            HashAlgo::Sha384 => State::Sha384(Sha384::new()),
            HashAlgo::Sha512 | HashAlgo::Sha512Trunc => {
                return Self::sha512(algo, ring_sha512_is_faster());
            }
        };
        Hasher { algo, state }
    }

    /// A SHA-512 state (for `Sha512` or `Sha512Trunc`) from `ring` or `sha2`.
    fn sha512(algo: HashAlgo, ring: bool) -> Self {
        let state = if ring {
            State::RingSha512(ring::digest::Context::new(&ring::digest::SHA512))
        } else {
            State::Sha512(Sha512::new())
        };
        Hasher { algo, state }
    }

    /// Feed bytes.
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.state {
            State::Sha256(h) => h.update(data),
            State::Sha384(h) => h.update(data),
            State::Sha512(h) => h.update(data),
            State::RingSha512(h) => h.update(data),
        }
    }

    /// The digest, truncated as the algorithm requires.
    pub fn finalize(self) -> Digest {
        let len = self.algo.digest_len();
        let full = match self.state {
            State::Sha256(h) => Digest::from_slice(&h.finalize()),
            State::Sha384(h) => Digest::from_slice(&h.finalize()),
            State::Sha512(h) => Digest::from_slice(&h.finalize()[..len]),
            State::RingSha512(h) => Digest::from_slice(&h.finish().as_ref()[..len]),
        };
        full.expect("digest length within bounds")
    }
}

/// A digest of 32, 48 or 64 bytes, stored inline (`Copy`, no allocation).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    len: u8,
    bytes: [u8; MAX_DIGEST_LEN],
}

impl Digest {
    /// Copy `b` if it is 1..=64 bytes long.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        if b.is_empty() || b.len() > MAX_DIGEST_LEN {
            return None;
        }
        let mut bytes = [0u8; MAX_DIGEST_LEN];
        bytes[..b.len()].copy_from_slice(b);
        Some(Digest {
            len: b.len() as u8,
            bytes,
        })
    }

    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.as_bytes())
    }
}

impl AsRef<[u8]> for Digest {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The public segment identifier `HoHoDk`, used by discovery, retrieval,
/// the hosted cache and as the store key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentId(pub Digest);

impl SegmentId {
    /// Identifier bytes (32, 48 or 64).
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        self.0.to_hex()
    }

    /// Wrap raw id bytes (1..=64 bytes).
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        Digest::from_slice(b).map(SegmentId)
    }
}

impl fmt::Debug for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SegmentId({})", self.to_hex())
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

macro_rules! secret {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq)]
        pub struct $name(Digest);

        impl $name {
            /// Wrap secret bytes (1..=64 bytes).
            pub fn from_slice(b: &[u8]) -> Option<Self> {
                Digest::from_slice(b).map($name)
            }

            /// The secret bytes. Never log them.
            pub fn expose(&self) -> &[u8] {
                self.0.as_bytes()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }
    };
}

secret!(
    /// `Ks`, the server secret: `H(server secret key)`. `Debug` is redacted.
    ServerSecret
);
secret!(
    /// `Kp`, the per-segment secret shipped in content information and used
    /// as AES key material by PCCRR. `Debug` is redacted.
    SegmentSecret
);

/// `Ks = H(key)` (truncated SHA-512 for v2).
// SPEC(MS-PCCRC §2.2): Ks is itself a hash of the configured key, so the same key
// yields different Ks for v1 (SHA-256) and v2 (truncated SHA-512).
pub fn server_secret(algo: HashAlgo, key: &[u8]) -> ServerSecret {
    ServerSecret(algo.hash(key))
}

/// `Kp = HMAC(Ks, HoD)`.
// SPEC(MS-PCCRC §2.3.1.1): the prose says Hash(HoD + ServerSecret); IIS uses HMAC.
pub fn segment_secret(algo: HashAlgo, ks: &ServerSecret, hod: &Digest) -> SegmentSecret {
    SegmentSecret(algo.hmac(ks.expose(), &[hod.as_bytes()]))
}

/// `HoHoDk = HMAC(Kp, HoD ‖ C2)`.
pub fn segment_id(algo: HashAlgo, kp: &SegmentSecret, hod: &Digest) -> SegmentId {
    SegmentId(algo.hmac(kp.expose(), &[hod.as_bytes(), &C2]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sha512_backends_give_the_same_digests() {
        // FIPS 180-2 "abc" vector, then every length around the 128-byte block
        // and a few large inputs fed in uneven pieces.
        let abc = "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
                   2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f";
        for ring in [false, true] {
            let mut h = Hasher::sha512(HashAlgo::Sha512, ring);
            h.update(b"abc");
            assert_eq!(h.finalize().to_hex(), abc, "ring: {ring}");
        }
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let lens = (0..=260).chain([1000, 65_536, 131_071, 300_000]);
        for len in lens {
            for algo in [HashAlgo::Sha512, HashAlgo::Sha512Trunc] {
                let digests: Vec<Digest> = [false, true]
                    .into_iter()
                    .map(|ring| {
                        let mut h = Hasher::sha512(algo, ring);
                        for piece in data[..len].chunks(1 + len / 3) {
                            h.update(piece);
                        }
                        h.finalize()
                    })
                    .collect();
                assert_eq!(digests[0], digests[1], "{algo} of {len} bytes");
                assert_eq!(digests[0], algo.hash(&data[..len]), "{algo} of {len} bytes");
                assert_eq!(digests[0].as_bytes().len(), algo.digest_len());
            }
        }
    }

    #[test]
    fn c2_is_utf16le_with_nul() {
        let expected: Vec<u8> = "MS_P2P_CACHING\0"
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .collect();
        assert_eq!(&C2[..], &expected[..]);
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let ks = server_secret(HashAlgo::Sha256, b"key");
        assert_eq!(format!("{ks:?}"), "ServerSecret([redacted])");
        let kp = segment_secret(HashAlgo::Sha256, &ks, &HashAlgo::Sha256.hash(b"x"));
        assert_eq!(format!("{kp:?}"), "SegmentSecret([redacted])");
    }

    #[test]
    fn truncated_sha512_cuts_after_hmac() {
        let full = HashAlgo::Sha512.hmac(b"k", &[b"m"]);
        let trunc = HashAlgo::Sha512Trunc.hmac(b"k", &[b"m"]);
        assert_eq!(&full.as_bytes()[..32], trunc.as_bytes());
    }

    #[test]
    fn digest_lengths() {
        for (a, n) in [
            (HashAlgo::Sha256, 32),
            (HashAlgo::Sha384, 48),
            (HashAlgo::Sha512, 64),
            (HashAlgo::Sha512Trunc, 32),
        ] {
            assert_eq!(a.hash(b"abc").as_bytes().len(), n);
            assert_eq!(a.digest_len(), n);
        }
    }
}
