//! Content information builder (MS-PCCRC §2.3 v1, §2.4 v2): hash content into
//! segments, then encode whole-object or range content information.
//!
//! - [`hash_segment`] hashes one segment held in memory;
//! - [`hash_v2_segments`] hashes a batch of v2 segments, several at once in
//!   SIMD lanes where the CPU has them; [`hash_v1_blocks`] does the same for
//!   v1 block hashes;
//! - [`SegmentHasher`] does the same incrementally (bytes may arrive in pieces);
//! - [`StreamBuilder`] hashes a whole resource sequentially with bounded
//!   memory (no content is buffered: v1 keeps one block hash per 64 KiB, v2
//!   runs the [`Chunker`] and a running SHA-512);
//! - [`ContentHashes::encode`] writes the wire format, trimmed to a range.
//!
//! Parallel hashing of many segments lives outside the pure core
//! (`crate::hashing`); it produces the same [`ContentHashes`].

use std::ops::Range;

use super::chunker::Chunker;
use super::crypto::{segment_id, segment_secret, Digest, HashAlgo, Hasher};
use super::{
    SegmentId, SegmentSecret, ServerSecret, Version, BLOCK_SIZE, V1_SEGMENT_SIZE,
    V2_MAX_SEGMENT_SIZE,
};
use crate::proto::codec::Writer;

/// v1 `Version` field (u16 LE 0x0100).
const V1_VERSION: u16 = 0x0100;
/// v2 `bMinorVersion`, `bMajorVersion`.
const V2_VERSION: [u8; 2] = [0x00, 0x02];
/// v2 `bHashAlgo` for truncated SHA-512, the only value v2 allows.
const V2_HASH_ALGO: u8 = 0x04;
/// v2 chunk type of a segment-description chunk (the only defined type).
const V2_CHUNK_TYPE: u8 = 0x00;
/// Bytes of one v2 `SegmentDescription` (cbSegment + HoD + Kp).
const V2_SEGMENT_DESCRIPTION_LEN: usize = 4 + 32 + 32;
/// Most segment descriptions one v2 chunk can hold (`dwChunkDataLength` is a u32).
const V2_MAX_SEGMENTS_PER_CHUNK: usize = u32::MAX as usize / V2_SEGMENT_DESCRIPTION_LEN;

/// Why content information could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// A 0-byte object has no segments, and content information needs ≥ 1.
    #[error("empty content: content information needs at least one segment")]
    EmptyContent,
    /// The hash algorithm cannot be used with this content information version.
    #[error("hash algorithm {algo} is not valid for content information v{version}")]
    AlgoNotAllowed {
        /// The version requested.
        version: Version,
        /// The algorithm requested.
        algo: HashAlgo,
    },
    /// The requested range is empty or reaches past the end of the content.
    #[error("range {start}..{end} is empty or outside the content (length {total_len})")]
    RangeOutOfBounds {
        /// First byte of the range.
        start: u64,
        /// One past the last byte of the range.
        end: u64,
        /// Length of the content.
        total_len: u64,
    },
    /// The segment list does not describe the content consistently (sizes,
    /// offsets, block lists or digest lengths); only possible when the
    /// [`ContentHashes`] were assembled by hand.
    #[error("inconsistent segment {index}: {what}")]
    InconsistentSegment {
        /// Index of the offending segment.
        index: usize,
        /// The rule that was broken.
        what: &'static str,
    },
}

impl BuildError {
    /// A short, stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            BuildError::EmptyContent => "empty",
            BuildError::AlgoNotAllowed { .. } => "algo",
            BuildError::RangeOutOfBounds { .. } => "range",
            BuildError::InconsistentSegment { .. } => "inconsistent",
        }
    }
}

/// Check that `algo` may be used with `version` (v1: SHA-256/384/512; v2:
/// truncated SHA-512 only). Call it before hashing a large object.
pub fn check_algo(version: Version, algo: HashAlgo) -> Result<(), BuildError> {
    let ok = match version {
        Version::V1 => algo.v1_id().is_some(),
        Version::V2 => algo == HashAlgo::Sha512Trunc,
    };
    if ok {
        Ok(())
    } else {
        Err(BuildError::AlgoNotAllowed { version, algo })
    }
}

/// The hashes of one segment, everything content information carries for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentHashes {
    /// Absolute offset of the segment in the resource.
    pub offset: u64,
    /// Segment length in bytes.
    pub size: u32,
    /// `HoD`: v1 hash of the block hashes, v2 hash of the segment bytes.
    pub hash_of_data: Digest,
    /// `Kp = HMAC(Ks, HoD)`. `Debug` is redacted.
    pub secret: SegmentSecret,
    /// v1: one hash per 64 KiB block (the last may cover fewer bytes); v2: empty.
    pub block_hashes: Vec<Digest>,
}

impl SegmentHashes {
    /// The public segment id `HoHoDk = HMAC(Kp, HoD ‖ C2)`.
    pub fn id(&self, algo: HashAlgo) -> SegmentId {
        segment_id(algo, &self.secret, &self.hash_of_data)
    }

    /// Byte range of the segment in the resource.
    pub fn range(&self) -> Range<u64> {
        self.offset..self.end()
    }

    fn end(&self) -> u64 {
        self.offset + u64::from(self.size)
    }
}

/// Incremental hasher for one segment whose bytes arrive in pieces.
///
/// The caller decides where the segment ends (32 MiB for v1, the chunker for
/// v2); nothing here buffers content.
#[derive(Clone)]
pub struct SegmentHasher {
    version: Version,
    algo: HashAlgo,
    offset: u64,
    len: u64,
    /// v1: the block in progress; v2: the whole segment.
    current: Hasher,
    /// v1: bytes in the block in progress.
    block_fill: u32,
    block_hashes: Vec<Digest>,
}

impl std::fmt::Debug for SegmentHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentHasher")
            .field("version", &self.version)
            .field("algo", &self.algo)
            .field("offset", &self.offset)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl SegmentHasher {
    /// Start a segment at absolute `offset`.
    pub fn new(version: Version, algo: HashAlgo, offset: u64) -> Self {
        SegmentHasher {
            version,
            algo,
            offset,
            len: 0,
            current: Hasher::new(algo),
            block_fill: 0,
            block_hashes: Vec::new(),
        }
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True before any byte was fed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Feed the next bytes of the segment.
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.version == Version::V2 {
            self.current.update(data);
            return;
        }
        while !data.is_empty() {
            let room = (BLOCK_SIZE - self.block_fill) as usize;
            let (head, tail) = data.split_at(room.min(data.len()));
            self.current.update(head);
            self.block_fill += head.len() as u32; // ≤ BLOCK_SIZE
            data = tail;
            if self.block_fill == BLOCK_SIZE {
                self.finish_block();
            }
        }
    }

    fn finish_block(&mut self) {
        let done = std::mem::replace(&mut self.current, Hasher::new(self.algo));
        self.block_hashes.push(done.finalize());
        self.block_fill = 0;
    }

    /// Finish the segment: compute `HoD` and `Kp` with the server secret `ks`.
    ///
    /// A segment longer than `u32::MAX` bytes reports `size == u32::MAX`, which
    /// [`ContentHashes::encode`] rejects (segments are ≤ 32 MiB).
    pub fn finish(self, ks: &ServerSecret) -> SegmentHashes {
        let size = u32::try_from(self.len).unwrap_or(u32::MAX);
        match self.version {
            Version::V1 => {
                let (algo, offset) = (self.algo, self.offset);
                v1_segment_from_blocks(algo, ks, offset, size, self.into_block_hashes())
            }
            Version::V2 => {
                let hash_of_data = self.current.finalize();
                SegmentHashes {
                    offset: self.offset,
                    size,
                    hash_of_data,
                    secret: segment_secret(self.algo, ks, &hash_of_data),
                    block_hashes: Vec::new(),
                }
            }
        }
    }

    /// v1: finish the last (possibly short) block and return the hashes of all
    /// blocks fed, without computing `HoD`. Lets a driver hash runs of blocks of
    /// one segment in parallel and join them with [`v1_segment_from_blocks`].
    /// v2 has no blocks: returns an empty list.
    pub fn into_block_hashes(mut self) -> Vec<Digest> {
        if self.version == Version::V1 && self.block_fill > 0 {
            self.finish_block();
        }
        self.block_hashes
    }
}

/// v1: a segment from its block hashes (all of them, in order):
/// `HoD = H(block hashes)`, `Kp = HMAC(Ks, HoD)`.
pub fn v1_segment_from_blocks(
    algo: HashAlgo,
    ks: &ServerSecret,
    offset: u64,
    size: u32,
    block_hashes: Vec<Digest>,
) -> SegmentHashes {
    let mut h = Hasher::new(algo);
    for b in &block_hashes {
        h.update(b.as_bytes());
    }
    let hash_of_data = h.finalize();
    SegmentHashes {
        offset,
        size,
        hash_of_data,
        secret: segment_secret(algo, ks, &hash_of_data),
        block_hashes,
    }
}

/// v1: the hash of each block, in order; every slice is one whole block of
/// content (64 KiB, or less for the last block of the content). The same
/// result as feeding the blocks to a [`SegmentHasher`].
///
/// For SHA-256 on a CPU with AVX-512 the blocks are hashed side by side in
/// vector lanes ([`sha512_multibuffer::sha256_many`]), which costs less CPU per
/// byte than one SHA-NI stream; callers should pass 16 or more blocks at once.
pub fn hash_v1_blocks(algo: HashAlgo, blocks: &[&[u8]]) -> Vec<Digest> {
    if algo == HashAlgo::Sha256 {
        return sha512_multibuffer::sha256_many(blocks)
            .iter()
            .map(|d| Digest::from_slice(d).expect("a SHA-256 digest is 32 bytes"))
            .collect();
    }
    blocks
        .iter()
        .map(|b| {
            let mut h = Hasher::new(algo);
            h.update(b);
            h.finalize()
        })
        .collect()
}

/// Hash one segment held in memory. `data` must be the whole segment: for v1
/// ≤ 32 MiB (exactly 32 MiB unless it is the last), for v2 1..=128 KiB; a
/// segment breaking those rules is reported by [`ContentHashes::encode`].
pub fn hash_segment(
    version: Version,
    algo: HashAlgo,
    ks: &ServerSecret,
    offset: u64,
    data: &[u8],
) -> SegmentHashes {
    let mut h = SegmentHasher::new(version, algo, offset);
    h.update(data);
    h.finish(ks)
}

/// v2: hash several whole segments held in memory, given as `(offset, bytes)`;
/// the same result as [`hash_segment`] on each, in order.
///
/// For truncated SHA-512 on a CPU with AVX2 or AVX-512 the segments' `HoD`s
/// are computed side by side in vector lanes ([`sha512_multibuffer`]); the
/// lanes cost less CPU per byte than one stream, so callers should pass a
/// batch (a dozen or more segments). Elsewhere each segment is hashed alone.
pub fn hash_v2_segments(
    algo: HashAlgo,
    ks: &ServerSecret,
    segments: &[(u64, &[u8])],
) -> Vec<SegmentHashes> {
    let multibuffer = algo == HashAlgo::Sha512Trunc
        && sha512_multibuffer::Backend::detect() != sha512_multibuffer::Backend::Scalar;
    if !multibuffer {
        return segments
            .iter()
            .map(|&(offset, data)| hash_segment(Version::V2, algo, ks, offset, data))
            .collect();
    }
    let msgs: Vec<&[u8]> = segments.iter().map(|&(_, data)| data).collect();
    let digests = sha512_multibuffer::sha512_many(&msgs);
    segments
        .iter()
        .zip(digests)
        .map(|(&(offset, data), full)| {
            // Sha512Trunc: the first 32 of the 64 bytes (1..=64 is always valid).
            let hash_of_data = Digest::from_slice(&full[..algo.digest_len()])
                .expect("digest length within bounds");
            SegmentHashes {
                offset,
                size: u32::try_from(data.len()).unwrap_or(u32::MAX),
                hash_of_data,
                secret: segment_secret(algo, ks, &hash_of_data),
                block_hashes: Vec::new(),
            }
        })
        .collect()
}

/// All segment hashes of one resource: the input of [`encode`](Self::encode).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentHashes {
    /// Content information version.
    pub version: Version,
    /// Hash algorithm (v2: always [`HashAlgo::Sha512Trunc`]).
    pub algo: HashAlgo,
    /// Length of the resource in bytes.
    pub total_len: u64,
    /// Segments in order; they tile `0..total_len`.
    pub segments: Vec<SegmentHashes>,
}

impl ContentHashes {
    /// Segment ids (`HoHoDk`) in order.
    pub fn segment_ids(&self) -> impl Iterator<Item = SegmentId> + '_ {
        self.segments.iter().map(|s| s.id(self.algo))
    }

    /// Encode content information.
    ///
    /// Whole object (`None`) → offset 0 / read-bytes 0 (v1) / length 0 (v2),
    /// as IIS does. `Some(range)` (end exclusive) → exactly the segments
    /// touching the range with the range fields set (v1 block lists from
    /// block 0 up to the last block intersecting the range; v2
    /// `ullIndexOfFirstSegment` etc.). A range that ends where the last listed
    /// segment ends is encoded with read-bytes / length 0 ("to the end"), so
    /// `encode(Some(0..total_len)) == encode(None)`.
    pub fn encode(&self, range: Option<Range<u64>>) -> Result<Vec<u8>, BuildError> {
        check_algo(self.version, self.algo)?;
        self.validate()?;
        let (first, last, range) = match range {
            None => (0, self.segments.len() - 1, None),
            Some(r) => {
                if r.start >= r.end || r.end > self.total_len {
                    return Err(BuildError::RangeOutOfBounds {
                        start: r.start,
                        end: r.end,
                        total_len: self.total_len,
                    });
                }
                // Segments are contiguous and sorted (validated), so search by end.
                let first = self.segments.partition_point(|s| s.end() <= r.start);
                let last = self.segments.partition_point(|s| s.end() < r.end);
                (first, last, Some(r))
            }
        };
        let segments = self
            .segments
            .get(first..=last)
            .ok_or(BuildError::InconsistentSegment {
                index: last,
                what: "range search left the segment list",
            })?;
        Ok(match self.version {
            Version::V1 => encode_v1(self.algo, segments, range),
            Version::V2 => encode_v2(first as u64, segments, range),
        })
    }

    /// Check that the segments tile the content and obey the version's size
    /// rules, and that every digest has the algorithm's length.
    fn validate(&self) -> Result<(), BuildError> {
        if self.segments.is_empty() {
            return Err(BuildError::EmptyContent);
        }
        let dlen = self.algo.digest_len();
        let n = self.segments.len();
        let mut expected_offset = 0u64;
        for (index, s) in self.segments.iter().enumerate() {
            let bad = |what| Err(BuildError::InconsistentSegment { index, what });
            let is_last = index + 1 == n;
            if s.offset != expected_offset {
                return bad("segment does not start where the previous one ended");
            }
            if s.size == 0 {
                return bad("segment is empty");
            }
            if s.hash_of_data.as_bytes().len() != dlen || s.secret.expose().len() != dlen {
                return bad("digest length does not match the hash algorithm");
            }
            match self.version {
                Version::V1 => {
                    if s.size > V1_SEGMENT_SIZE || (!is_last && s.size != V1_SEGMENT_SIZE) {
                        return bad("v1 segments are 32 MiB except the last");
                    }
                    if s.block_hashes.len() != s.size.div_ceil(BLOCK_SIZE) as usize {
                        return bad("block hash count does not match the segment size");
                    }
                    if s.block_hashes.iter().any(|b| b.as_bytes().len() != dlen) {
                        return bad("block hash length does not match the hash algorithm");
                    }
                }
                Version::V2 => {
                    if s.size > V2_MAX_SEGMENT_SIZE {
                        return bad("v2 segments are at most 128 KiB");
                    }
                    if !s.block_hashes.is_empty() {
                        return bad("v2 segments have no block hashes");
                    }
                }
            }
            expected_offset = s.end();
        }
        if expected_offset != self.total_len {
            return Err(BuildError::InconsistentSegment {
                index: n - 1,
                what: "segments do not add up to the content length",
            });
        }
        Ok(())
    }
}

/// v1 wire format; `segments` and `range` are validated, `range` lies within
/// the listed segments and touches the first and the last.
fn encode_v1(algo: HashAlgo, segments: &[SegmentHashes], range: Option<Range<u64>>) -> Vec<u8> {
    let dlen = algo.digest_len();
    let (first, last) = match (segments.first(), segments.last()) {
        (Some(f), Some(l)) => (f, l),
        _ => return Vec::new(), // unreachable: validated non-empty
    };
    // Per listed segment: how many block hashes to list.
    let block_count = |s: &SegmentHashes| -> usize {
        match &range {
            // SPEC(MS-PCCRC §2.3.1.2, §3.3/§3.5): block lists start at block 0 of the
            // segment and stop at the last block intersecting the range.
            Some(r) if s.end() > r.end => {
                ((r.end - 1 - s.offset) / u64::from(BLOCK_SIZE) + 1) as usize
            }
            _ => s.block_hashes.len(),
        }
    };
    let (offset_in_first, read_in_last) = match &range {
        None => (0, 0),
        Some(r) => {
            // SPEC(MS-PCCRC §2.3.1.1): with a single segment the read count is
            // measured from the range start, otherwise from the last segment's start.
            // A range running to the end of the last listed segment is written as 0
            // ("whole last segment"), as in the spec's §3.3 example and IIS output.
            let read = if r.end == last.end() {
                0
            } else if segments.len() == 1 {
                r.end - r.start
            } else {
                r.end - last.offset
            };
            ((r.start - first.offset) as u32, read as u32)
        }
    };
    let blocks: usize = segments.iter().map(block_count).sum();
    let mut w = Writer::with_capacity(18 + segments.len() * (20 + 2 * dlen) + blocks * dlen);
    w.u16_le(V1_VERSION)
        .u32_le(algo.v1_id().unwrap_or(0))
        .u32_le(offset_in_first)
        .u32_le(read_in_last)
        .u32_le(segments.len() as u32);
    for s in segments {
        w.u64_le(s.offset)
            .u32_le(s.size)
            .u32_le(BLOCK_SIZE)
            .bytes(s.hash_of_data.as_bytes())
            .bytes(s.secret.expose());
    }
    for s in segments {
        let n = block_count(s);
        w.u32_le(n as u32);
        for b in s.block_hashes.iter().take(n) {
            w.bytes(b.as_bytes());
        }
    }
    w.finish()
}

/// v2 wire format; same preconditions as [`encode_v1`]. `first_index` is the
/// index of `segments[0]` in the resource.
fn encode_v2(first_index: u64, segments: &[SegmentHashes], range: Option<Range<u64>>) -> Vec<u8> {
    let (Some(first), Some(last)) = (segments.first(), segments.last()) else {
        return Vec::new(); // unreachable: validated non-empty
    };
    let (start, index, offset_in_first, length) = match &range {
        None => (0, 0, 0, 0),
        Some(r) => (
            first.offset,
            first_index,
            (r.start - first.offset) as u32,
            // SPEC(MS-PCCRC §2.4.1): ullLengthOfRange is a length; 0 means "to the end
            // of the last listed segment". We write 0 whenever that is exact: it is
            // what IIS sends, and iPXE (which reads the field as an absolute end)
            // then still gets the right range.
            if r.end == last.end() {
                0
            } else {
                r.end - r.start
            },
        ),
    };
    let chunks = segments.len().div_ceil(V2_MAX_SEGMENTS_PER_CHUNK);
    let mut w =
        Writer::with_capacity(31 + 5 * chunks + V2_SEGMENT_DESCRIPTION_LEN * segments.len());
    w.bytes(&V2_VERSION)
        .u8(V2_HASH_ALGO)
        .u64_be(start)
        .u64_be(index)
        .u32_be(offset_in_first)
        .u64_be(length);
    // IIS uses a single chunk; only resources of > 8 TB need more.
    for chunk in segments.chunks(V2_MAX_SEGMENTS_PER_CHUNK) {
        w.u8(V2_CHUNK_TYPE)
            .u32_be((chunk.len() * V2_SEGMENT_DESCRIPTION_LEN) as u32);
        for s in chunk {
            w.u32_be(s.size)
                .bytes(s.hash_of_data.as_bytes())
                .bytes(s.secret.expose());
        }
    }
    w.finish()
}

/// Sequential whole-resource hasher with bounded memory.
///
/// Feed the resource in order with [`update`](Self::update) (any split), then
/// [`finish`](Self::finish). Memory: the hashes of finished segments plus one
/// hash state; no content is buffered.
#[derive(Debug)]
pub struct StreamBuilder {
    version: Version,
    algo: HashAlgo,
    ks: ServerSecret,
    chunker: Chunker,
    current: SegmentHasher,
    total_len: u64,
    segments: Vec<SegmentHashes>,
}

impl StreamBuilder {
    /// Start a resource. `ks` is the server secret for this version's
    /// algorithm (`server_secret(algo, key)`).
    pub fn new(version: Version, algo: HashAlgo, ks: &ServerSecret) -> Self {
        StreamBuilder {
            version,
            algo,
            ks: *ks,
            chunker: Chunker::new(),
            current: SegmentHasher::new(version, algo, 0),
            total_len: 0,
            segments: Vec::new(),
        }
    }

    /// Bytes fed so far.
    pub fn total_len(&self) -> u64 {
        self.total_len
    }

    /// Feed the next bytes of the resource.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let cut = match self.version {
                Version::V1 => {
                    let room = u64::from(V1_SEGMENT_SIZE) - self.current.len();
                    let n = usize::try_from(room).map_or(data.len(), |r| r.min(data.len()));
                    (n as u64 == room).then_some(n).ok_or(n)
                }
                Version::V2 => self.chunker.next_cut(data).ok_or(data.len()),
            };
            let n = match cut {
                Ok(n) | Err(n) => n,
            };
            let (head, tail) = data.split_at(n);
            self.current.update(head);
            self.total_len += n as u64;
            data = tail;
            if cut.is_ok() {
                self.cut();
            }
        }
    }

    fn cut(&mut self) {
        let next = SegmentHasher::new(self.version, self.algo, self.total_len);
        let done = std::mem::replace(&mut self.current, next);
        self.segments.push(done.finish(&self.ks));
    }

    /// Finish the resource. A 0-byte resource yields no segments (and
    /// [`ContentHashes::encode`] then reports [`BuildError::EmptyContent`]).
    pub fn finish(mut self) -> ContentHashes {
        if !self.current.is_empty() {
            self.cut();
        }
        ContentHashes {
            version: self.version,
            algo: self.algo,
            total_len: self.total_len,
            segments: self.segments,
        }
    }
}

/// Hash a whole in-memory resource (convenience over [`StreamBuilder`]).
pub fn hash_content(
    version: Version,
    algo: HashAlgo,
    ks: &ServerSecret,
    data: &[u8],
) -> ContentHashes {
    let mut b = StreamBuilder::new(version, algo, ks);
    b.update(data);
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::pccrc::server_secret;
    use proptest::prelude::*;

    const MIB: u64 = 1024 * 1024;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 7) as u8).collect()
    }

    fn ks(algo: HashAlgo) -> ServerSecret {
        server_secret(algo, b"branchcache test key")
    }

    /// Hand-made hashes with the right shapes, for layout tests of big objects.
    fn fake(version: Version, algo: HashAlgo, sizes: &[u32]) -> ContentHashes {
        let d = Digest::from_slice(&vec![0xAB; algo.digest_len()]).unwrap();
        let mut offset = 0;
        let segments = sizes
            .iter()
            .map(|&size| {
                let s = SegmentHashes {
                    offset,
                    size,
                    hash_of_data: d,
                    secret: SegmentSecret::from_slice(d.as_bytes()).unwrap(),
                    block_hashes: match version {
                        Version::V1 => vec![d; size.div_ceil(BLOCK_SIZE) as usize],
                        Version::V2 => Vec::new(),
                    },
                };
                offset += u64::from(size);
                s
            })
            .collect();
        ContentHashes {
            version,
            algo,
            total_len: offset,
            segments,
        }
    }

    fn u32_le_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn v1_segment_hashes_follow_the_derivation_chain() {
        let algo = HashAlgo::Sha256;
        let bytes = data(99_710);
        let s = hash_segment(Version::V1, algo, &ks(algo), 0, &bytes);
        assert_eq!(s.size, 99_710);
        assert_eq!(
            s.block_hashes,
            vec![algo.hash(&bytes[..65_536]), algo.hash(&bytes[65_536..])]
        );
        let mut cat = Vec::new();
        for b in &s.block_hashes {
            cat.extend_from_slice(b.as_bytes());
        }
        assert_eq!(s.hash_of_data, algo.hash(&cat));
        assert_eq!(s.secret, segment_secret(algo, &ks(algo), &s.hash_of_data));
        assert_eq!(s.id(algo), segment_id(algo, &s.secret, &s.hash_of_data));
    }

    #[test]
    fn v2_hash_of_data_covers_the_segment_bytes() {
        let algo = HashAlgo::Sha512Trunc;
        let bytes = data(39_390);
        let s = hash_segment(Version::V2, algo, &ks(algo), 7, &bytes);
        assert_eq!(s.hash_of_data, algo.hash(&bytes));
        assert_eq!(s.hash_of_data.as_bytes().len(), 32);
        assert!(s.block_hashes.is_empty());
        assert_eq!(s.range(), 7..39_397);
    }

    proptest! {
        /// The batch (SIMD lanes where the CPU has them) equals one segment at a time.
        #[test]
        fn v2_batch_equals_one_segment_at_a_time(
            sizes in prop::collection::vec(
                prop_oneof![Just(1usize), Just(111), Just(128), Just(131_072), 1usize..=131_072],
                0..24,
            ),
        ) {
            let algo = HashAlgo::Sha512Trunc;
            let bytes = data(sizes.iter().sum());
            let mut segs = Vec::new();
            let mut offset = 0;
            for &len in &sizes {
                segs.push((offset as u64, &bytes[offset..offset + len]));
                offset += len;
            }
            let want: Vec<SegmentHashes> = segs
                .iter()
                .map(|&(off, d)| hash_segment(Version::V2, algo, &ks(algo), off, d))
                .collect();
            prop_assert_eq!(hash_v2_segments(algo, &ks(algo), &segs), want);
        }

        /// v1 block hashes in a batch (SIMD lanes for SHA-256 where the CPU
        /// has them) equal those of a `SegmentHasher` fed the same bytes.
        #[test]
        fn v1_block_batch_equals_segment_hasher(
            len in prop_oneof![
                Just(0usize),
                Just(65_536),
                Just(16 * 65_536),
                Just(16 * 65_536 + 1),
                Just(17 * 65_536 - 1),
                0usize..=20 * 65_536,
            ],
            algo_pick in 0usize..3,
        ) {
            let algo = [HashAlgo::Sha256, HashAlgo::Sha384, HashAlgo::Sha512][algo_pick];
            let bytes = data(len);
            let mut h = SegmentHasher::new(Version::V1, algo, 0);
            h.update(&bytes);
            let blocks: Vec<&[u8]> = bytes.chunks(BLOCK_SIZE as usize).collect();
            prop_assert_eq!(hash_v1_blocks(algo, &blocks), h.into_block_hashes());
        }
    }

    #[test]
    fn segment_hashes_debug_redacts_the_secret() {
        let algo = HashAlgo::Sha256;
        let s = hash_segment(Version::V1, algo, &ks(algo), 0, b"abc");
        let dbg = format!("{s:?}");
        assert!(dbg.contains("SegmentSecret([redacted])"), "{dbg}");
        assert!(!dbg.contains(&hex::encode(s.secret.expose())));
    }

    #[test]
    fn v1_whole_file_matches_the_spec_layout() {
        // MS-PCCRC §3.2: 128000 bytes → 166 bytes, 1 segment, 2 blocks.
        let algo = HashAlgo::Sha256;
        let bytes = data(128_000);
        let ci = hash_content(Version::V1, algo, &ks(algo), &bytes)
            .encode(None)
            .unwrap();
        assert_eq!(ci.len(), 166);
        assert_eq!(
            &ci[..18],
            &hex::decode("00010c800000000000000000000001000000").unwrap()[..]
        );
        assert_eq!(u32_le_at(&ci, 26), 128_000);
        assert_eq!(u32_le_at(&ci, 30), 65_536);
        assert_eq!(u32_le_at(&ci, 98), 2);
        assert_eq!(&ci[102..134], algo.hash(&bytes[..65_536]).as_bytes());
        assert_eq!(&ci[134..166], algo.hash(&bytes[65_536..]).as_bytes());
    }

    #[test]
    fn v1_range_keeps_block_lists_from_block_zero() {
        // MS-PCCRC §3.3: range [102400,128000) → offset 102400, cBlocks still 2.
        let algo = HashAlgo::Sha256;
        let h = hash_content(Version::V1, algo, &ks(algo), &data(128_000));
        let ci = h.encode(Some(102_400..128_000)).unwrap();
        assert_eq!(ci.len(), 166);
        assert_eq!(u32_le_at(&ci, 6), 102_400);
        assert_eq!(u32_le_at(&ci, 10), 0); // the range runs to the end of the segment
        assert_eq!(u32_le_at(&ci, 98), 2);
        let ci = h.encode(Some(102_400..122_400)).unwrap();
        assert_eq!(u32_le_at(&ci, 10), 20_000); // single segment: counted from the range start
                                                // A range inside block 0 lists only block 0.
        let ci = h.encode(Some(10..20)).unwrap();
        assert_eq!(u32_le_at(&ci, 98), 1);
        assert_eq!(ci.len(), 134);
    }

    #[test]
    fn v1_multi_segment_layout_matches_the_spec() {
        // MS-PCCRC §3.4/§3.5: 131072000 bytes, 4 segments.
        let h = fake(
            Version::V1,
            HashAlgo::Sha256,
            &[
                V1_SEGMENT_SIZE,
                V1_SEGMENT_SIZE,
                V1_SEGMENT_SIZE,
                0x01D0_0000,
            ],
        );
        let ci = h.encode(None).unwrap();
        assert_eq!(ci.len(), 64_354);
        assert_eq!(u32_le_at(&ci, 14), 4);
        assert_eq!(&ci[98..106], &0x0200_0000u64.to_le_bytes());
        assert_eq!(u32_le_at(&ci, 338), 512);
        assert_eq!(u32_le_at(&ci, 49_502), 464);
        let ci = h.encode(Some(102_400..130_023_424)).unwrap();
        assert_eq!(u32_le_at(&ci, 6), 102_400);
        assert_eq!(u32_le_at(&ci, 10), 0x01C0_0000);
        assert_eq!(u32_le_at(&ci, 14), 4);
        assert_eq!(u32_le_at(&ci, 49_502), 448);
        assert_eq!(ci.len(), 49_506 + 448 * 32);
        // A range inside segment 2 lists only segment 2.
        let ci = h
            .encode(Some(2 * 32 * MIB + 5..2 * 32 * MIB + 70_000))
            .unwrap();
        assert_eq!(u32_le_at(&ci, 14), 1);
        assert_eq!(&ci[18..26], &(2 * 32 * MIB).to_le_bytes());
        assert_eq!(u32_le_at(&ci, 6), 5);
        assert_eq!(u32_le_at(&ci, 10), 70_000 - 5);
        assert_eq!(u32_le_at(&ci, 98), 2);
    }

    #[test]
    fn v2_whole_file_and_range_match_the_spec_layout() {
        // MS-PCCRC §3.6/§3.7: segments 0xF000, 0x15400, 0xB000.
        let h = fake(
            Version::V2,
            HashAlgo::Sha512Trunc,
            &[0xF000, 0x15400, 0xB000],
        );
        let ci = h.encode(None).unwrap();
        assert_eq!(ci.len(), 240);
        let mut header = vec![0x00, 0x02, 0x04];
        header.extend_from_slice(&[0; 28]); // start, index, offset, length: all 0
        header.extend_from_slice(&[0x00, 0x00, 0x00, 0x00, 0xcc]); // chunk type, 204 bytes
        assert_eq!(&ci[..36], &header[..]);
        assert_eq!(&ci[36..40], &0xF000u32.to_be_bytes());
        assert_eq!(&ci[104..108], &0x15400u32.to_be_bytes());
        assert_eq!(&ci[172..176], &0xB000u32.to_be_bytes());
        let ci = h.encode(Some(102_400..112_640)).unwrap();
        assert_eq!(ci.len(), 104);
        assert_eq!(
            hex::encode(&ci[..40]),
            "000204000000000000f0000000000000000001 0000a000 0000000000002800 00 00000044 00015400"
                .replace(' ', "")
        );
    }

    #[test]
    fn full_range_encodes_like_the_whole_object() {
        for (version, algo) in [
            (Version::V1, HashAlgo::Sha256),
            (Version::V2, HashAlgo::Sha512Trunc),
        ] {
            let h = hash_content(version, algo, &ks(algo), &data(300_000));
            assert_eq!(h.encode(Some(0..300_000)).unwrap(), h.encode(None).unwrap());
            assert_ne!(h.encode(Some(0..299_999)).unwrap(), h.encode(None).unwrap());
        }
    }

    #[test]
    fn rejects_empty_content_bad_ranges_and_bad_algorithms() {
        let algo = HashAlgo::Sha256;
        let empty = hash_content(Version::V1, algo, &ks(algo), &[]);
        assert!(empty.segments.is_empty());
        assert_eq!(empty.encode(None), Err(BuildError::EmptyContent));
        let h = hash_content(Version::V1, algo, &ks(algo), &data(1000));
        #[allow(clippy::reversed_empty_ranges)]
        let bad = [0..0, 5..5, 6..5, 0..1001, 1000..1001];
        for r in bad {
            assert!(matches!(
                h.encode(Some(r)),
                Err(BuildError::RangeOutOfBounds { .. })
            ));
        }
        assert!(h.encode(Some(999..1000)).is_ok());
        let mut v2 = h.clone();
        v2.version = Version::V2;
        assert_eq!(
            v2.encode(None),
            Err(BuildError::AlgoNotAllowed {
                version: Version::V2,
                algo
            })
        );
        assert!(check_algo(Version::V1, HashAlgo::Sha512Trunc).is_err());
        assert!(check_algo(Version::V2, HashAlgo::Sha512Trunc).is_ok());
    }

    #[test]
    fn rejects_inconsistent_hand_made_segments() {
        let mut h = fake(Version::V1, HashAlgo::Sha256, &[V1_SEGMENT_SIZE, 10]);
        h.segments[0].size = 1000; // v1 middle segments must be 32 MiB
        assert!(matches!(
            h.encode(None),
            Err(BuildError::InconsistentSegment { index: 0, .. })
        ));
        let mut h = fake(
            Version::V2,
            HashAlgo::Sha512Trunc,
            &[V2_MAX_SEGMENT_SIZE + 1],
        );
        assert!(h.encode(None).is_err());
        h = fake(Version::V2, HashAlgo::Sha512Trunc, &[100, 200]);
        h.total_len += 1;
        assert!(h.encode(None).is_err());
        h.total_len -= 1;
        h.segments[1].offset += 1;
        assert!(h.encode(None).is_err());
    }

    #[test]
    fn v1_splits_at_32_mib() {
        let algo = HashAlgo::Sha256;
        let len = 32 * MIB as usize + 65_537;
        let h = hash_content(Version::V1, algo, &ks(algo), &data(len));
        let sizes: Vec<u32> = h.segments.iter().map(|s| s.size).collect();
        assert_eq!(sizes, [V1_SEGMENT_SIZE, 65_537]);
        assert_eq!(h.segments[0].block_hashes.len(), 512);
        assert_eq!(h.segments[1].block_hashes.len(), 2);
        assert_eq!(h.segments[1].offset, 32 * MIB);
        let ci = h.encode(Some(32 * MIB - 1..32 * MIB + 1)).unwrap();
        assert_eq!(u32_le_at(&ci, 14), 2);
        assert_eq!(u32_le_at(&ci, 6), V1_SEGMENT_SIZE - 1);
        assert_eq!(u32_le_at(&ci, 10), 1);
    }

    #[test]
    fn v2_segments_come_from_the_chunker() {
        let algo = HashAlgo::Sha512Trunc;
        let bytes = data(500_000);
        let h = hash_content(Version::V2, algo, &ks(algo), &bytes);
        let lens: Vec<u32> = h.segments.iter().map(|s| s.size).collect();
        assert_eq!(lens, crate::proto::pccrc::chunker::segment_lengths(&bytes));
        for s in &h.segments {
            let r = s.offset as usize..s.offset as usize + s.size as usize;
            assert_eq!(
                *s,
                hash_segment(Version::V2, algo, &ks(algo), s.offset, &bytes[r])
            );
        }
    }

    /// Encode `h` over `range`, parse it back and check every field.
    fn assert_round_trip(h: &ContentHashes, range: Option<Range<u64>>) {
        let ci = h.encode(range.clone()).unwrap();
        let info = crate::proto::pccrc::ContentInfo::parse(&ci).unwrap();
        assert_eq!(info.version(), h.version);
        assert_eq!(info.hash_algo(), h.algo);
        let want = range.clone().unwrap_or(0..h.total_len);
        assert_eq!(info.range(), want);
        let listed: Vec<&SegmentHashes> = h
            .segments
            .iter()
            .filter(|s| s.offset < want.end && s.end() > want.start)
            .collect();
        assert_eq!(info.segment_count(), listed.len());
        for (seg, want_seg) in info.segments().zip(&listed) {
            let index = h.segments.iter().position(|s| s == *want_seg).unwrap() as u64;
            assert_eq!(seg.index(), index);
            assert_eq!(seg.offset(), want_seg.offset);
            assert_eq!(seg.size(), want_seg.size);
            assert_eq!(seg.hash_of_data(), want_seg.hash_of_data);
            assert_eq!(seg.secret(), want_seg.secret);
            assert_eq!(seg.id(), want_seg.id(h.algo));
            match h.version {
                Version::V1 => {
                    let n = seg.block_count();
                    let last_needed = (want.end.min(want_seg.end()) - 1 - want_seg.offset)
                        / u64::from(BLOCK_SIZE);
                    assert_eq!(u64::from(n), last_needed + 1);
                    for j in 0..n {
                        assert_eq!(seg.block_hash(j), Some(want_seg.block_hashes[j as usize]));
                    }
                }
                Version::V2 => assert_eq!(seg.block_count(), 1),
            }
        }
    }

    #[test]
    fn v1_round_trips_across_the_segment_boundary() {
        for algo in [HashAlgo::Sha256, HashAlgo::Sha384, HashAlgo::Sha512] {
            let len = 32 * MIB + 1;
            let h = fake(Version::V1, algo, &[V1_SEGMENT_SIZE, 1]);
            for r in [
                None,
                Some(0..len),
                Some(32 * MIB - 1..len),
                Some(32 * MIB..len),
                Some(5..32 * MIB),
            ] {
                assert_round_trip(&h, r);
            }
        }
        let algo = HashAlgo::Sha256;
        let h = hash_content(Version::V1, algo, &ks(algo), &data(64 * MIB as usize + 3));
        assert_eq!(h.segments.len(), 3);
        for r in [
            None,
            Some(1..64 * MIB + 3),
            Some(32 * MIB - 65_536..64 * MIB + 1),
        ] {
            assert_round_trip(&h, r);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn streaming_in_random_pieces_equals_one_shot(
            v2 in any::<bool>(),
            len in prop_oneof![0usize..3, 65_530usize..65_542, 0usize..400_000],
            pieces in proptest::collection::vec(1usize..100_000, 1..16),
        ) {
            let (version, algo) = if v2 { (Version::V2, HashAlgo::Sha512Trunc) } else { (Version::V1, HashAlgo::Sha256) };
            let bytes = data(len);
            let whole = hash_content(version, algo, &ks(algo), &bytes);
            let mut b = StreamBuilder::new(version, algo, &ks(algo));
            let (mut pos, mut i) = (0, 0);
            while pos < len {
                let n = pieces[i % pieces.len()].min(len - pos);
                b.update(&bytes[pos..pos + n]);
                pos += n;
                i += 1;
            }
            prop_assert_eq!(b.finish(), whole);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn build_then_parse_round_trips(
            v2 in any::<bool>(),
            algo_pick in 0usize..3,
            len in prop_oneof![1usize..3, 65_535usize..65_538, 131_071usize..131_074, 1usize..700_000],
            a in any::<u64>(),
            b in any::<u64>(),
            whole in any::<bool>(),
        ) {
            let (version, algo) = if v2 {
                (Version::V2, HashAlgo::Sha512Trunc)
            } else {
                (Version::V1, [HashAlgo::Sha256, HashAlgo::Sha384, HashAlgo::Sha512][algo_pick])
            };
            let h = hash_content(version, algo, &ks(algo), &data(len));
            let len = len as u64;
            let (x, y) = (a % len, b % len);
            let range = (!whole).then(|| x.min(y)..x.max(y) + 1);
            assert_round_trip(&h, range);
        }
    }
}
