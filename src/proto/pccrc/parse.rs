//! Content information parser (MS-PCCRC §2.3 v1, §2.4 v2): lazy views over the raw bytes.
//!
//! [`ContentInfo::parse`] validates the whole structure in one pass — header, every segment
//! description, every block list, the trimmed range — and remembers where each segment's
//! fields live. [`ContentInfo::segment`] hands out a [`Segment`] view that borrows the block
//! hashes from the original bytes (HoD and Kp are copied into inline, heap-free digests).
//!
//! The only allocation is a small per-segment index (positions and offsets) so that
//! `segment(i)` is O(1) even though v1 block lists and v2 segment offsets can only be found by
//! walking everything before them. Its length is capped by the input length before anything is
//! allocated (every listed segment costs at least [`V2_SEGMENT_DESC_LEN`] input bytes).
//!
//! v1 integers are little-endian, v2 integers big-endian (PROTOCOL.md §2, §3).

use std::fmt;
use std::ops::Range;

use super::crypto::{segment_id, Digest, HashAlgo, SegmentId, SegmentSecret};
use super::{BLOCK_SIZE, MAX_BLOCKS_PER_SEGMENT, V1_SEGMENT_SIZE, V2_MAX_SEGMENT_SIZE};
use crate::proto::codec::{DecodeError, Reader};

/// Length of the v1 fixed header (Version … cSegments).
pub const V1_HEADER_LEN: usize = 18;
/// Length of the v2 fixed header (bMinorVersion … ullLengthOfRange).
pub const V2_HEADER_LEN: usize = 31;
/// Length of a v2 chunk header (bChunkType, dwChunkDataLength).
pub const V2_CHUNK_HEADER_LEN: usize = 5;
/// Length of one v2 segment description (cbSegment, HoD, Kp).
pub const V2_SEGMENT_DESC_LEN: usize = 68;
/// Digest length of the only v2 algorithm (truncated SHA-512).
const V2_DIGEST_LEN: usize = 32;
/// v2 `bHashAlgo` for truncated SHA-512, the only value MS-PCCRC §2.4 allows.
const V2_HASH_ALGO_SHA512_TRUNC: u8 = 0x04;
/// v2 `bChunkType` for a segment description chunk, the only defined type.
const V2_CHUNK_TYPE_SEGMENT_INFO: u8 = 0x00;
/// The version field read as a little-endian u16: `00 01` on the wire.
const WIRE_VERSION_1: u16 = 0x0100;
/// The version bytes (minor, major) read as a little-endian u16: `00 02` on the wire.
const WIRE_VERSION_2: u16 = 0x0200;

/// Which content information format a buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// MS-PCCRC §2.3: 32 MiB segments of 64 KiB blocks, SHA-256/384/512, little-endian.
    V1,
    /// MS-PCCRC §2.4: variable segments ≤ 128 KiB, truncated SHA-512, big-endian.
    V2,
}

impl Version {
    /// `"1"` or `"2"`, for logs, metric labels and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Version::V1 => "1",
            Version::V2 => "2",
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one validated segment lives in the buffer.
#[derive(Clone, Copy)]
struct Entry {
    /// Absolute offset of the segment in the resource.
    offset: u64,
    /// Index of the segment in the whole resource.
    index: u64,
    /// Position of `SegmentHashOfData` in the buffer (`SegmentSecret` follows it).
    hod_pos: usize,
    /// Position of the first block hash (v1); unused for v2.
    blocks_pos: usize,
    /// `cbSegment`.
    size: u32,
    /// `cBlocks` (v1); 1 for v2.
    block_count: u32,
}

/// A validated content information structure (v1 or v2), borrowing the raw bytes.
///
/// `Debug` prints the header only; no segment secrets.
#[derive(Clone)]
pub struct ContentInfo<'a> {
    buf: &'a [u8],
    version: Version,
    algo: HashAlgo,
    range: Range<u64>,
    entries: Vec<Entry>,
}

impl fmt::Debug for ContentInfo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContentInfo")
            .field("version", &self.version)
            .field("hash_algo", &self.algo)
            .field("range", &self.range)
            .field("segments", &self.entries.len())
            .field("len", &self.buf.len())
            .finish()
    }
}

impl<'a> ContentInfo<'a> {
    /// Validate `buf` as a complete v1 or v2 content information structure.
    ///
    /// The whole buffer must be the structure: trailing bytes are an error.
    pub fn parse(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf);
        // SPEC(MS-PCCRC §2.3, §2.4): both versions start minor byte first (`00 01`, `00 02`);
        // v1 calls it a little-endian u16, v2 two separate bytes — same bytes either way.
        let version = r.u16_le("content information version")?;
        match version {
            WIRE_VERSION_1 => parse_v1(buf, r),
            WIRE_VERSION_2 => parse_v2(buf, r),
            other => Err(DecodeError::Unsupported {
                what: "content information version",
                value: u64::from(other),
            }),
        }
    }

    /// The format version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The hash algorithm of every digest in the structure.
    pub fn hash_algo(&self) -> HashAlgo {
        self.algo
    }

    /// The content bytes described, trimmed by the range fields; end exclusive, never empty.
    pub fn range(&self) -> Range<u64> {
        self.range.clone()
    }

    /// How many segments are listed (at least 1).
    pub fn segment_count(&self) -> usize {
        self.entries.len()
    }

    /// The `i`-th listed segment (0-based within this structure, not the resource).
    pub fn segment(&self, i: usize) -> Option<Segment<'a>> {
        let e = *self.entries.get(i)?;
        let d = self.algo.digest_len();
        let hod = self.buf.get(e.hod_pos..e.hod_pos.checked_add(d)?)?;
        let secret_end = e.hod_pos.checked_add(2 * d)?;
        let secret = self.buf.get(e.hod_pos.checked_add(d)?..secret_end)?;
        let blocks = match self.version {
            Version::V1 => {
                let len = (e.block_count as usize).checked_mul(d)?;
                self.buf.get(e.blocks_pos..e.blocks_pos.checked_add(len)?)?
            }
            Version::V2 => &[],
        };
        Some(Segment {
            version: self.version,
            algo: self.algo,
            index: e.index,
            offset: e.offset,
            size: e.size,
            block_count: e.block_count,
            hod: Digest::from_slice(hod)?,
            secret: SegmentSecret::from_slice(secret)?,
            blocks,
        })
    }

    /// Every listed segment, in order.
    pub fn segments(&self) -> impl Iterator<Item = Segment<'a>> + '_ {
        (0..self.entries.len()).filter_map(move |i| self.segment(i))
    }

    /// The listed segment (position `i` as for [`segment`](Self::segment)) containing the
    /// absolute resource offset `pos`, if any.
    pub fn segment_index_at(&self, pos: u64) -> Option<usize> {
        let i = self
            .entries
            .partition_point(|e| e.offset <= pos)
            .checked_sub(1)?;
        let e = self.entries.get(i)?;
        (pos - e.offset < u64::from(e.size)).then_some(i)
    }

    /// The raw bytes this view was parsed from.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
}

/// One listed segment: a view into the content information bytes.
///
/// `Debug` redacts the segment secret.
#[derive(Clone)]
pub struct Segment<'a> {
    version: Version,
    algo: HashAlgo,
    index: u64,
    offset: u64,
    size: u32,
    block_count: u32,
    hod: Digest,
    secret: SegmentSecret,
    /// v1: `block_count` concatenated block hashes; v2: empty.
    blocks: &'a [u8],
}

impl fmt::Debug for Segment<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segment")
            .field("version", &self.version)
            .field("index", &self.index)
            .field("offset", &self.offset)
            .field("size", &self.size)
            .field("block_count", &self.block_count)
            .field("hash_of_data", &self.hod)
            .field("secret", &self.secret)
            .finish()
    }
}

impl Segment<'_> {
    /// The format of the structure this segment was listed in.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Index of the segment in the whole resource (v1: offset / 32 MiB; v2:
    /// `ullIndexOfFirstSegment` + position in the list). PCCRD/PCCRR use the segment id, but
    /// the proxy and store key segments of one resource by this.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Absolute offset of the segment's first byte in the resource.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// `cbSegment`: the full segment length, even when the range covers only part of it.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Absolute bytes of the whole segment in the resource.
    pub fn range(&self) -> Range<u64> {
        // Cannot overflow: parse checked offset + size for every segment.
        self.offset..self.offset.saturating_add(u64::from(self.size))
    }

    /// Block size: 65536 for v1; the segment size for v2 (a v2 segment is one block).
    pub fn block_size(&self) -> u32 {
        match self.version {
            Version::V1 => BLOCK_SIZE,
            Version::V2 => self.size,
        }
    }

    /// `SegmentHashOfData` (HoD).
    pub fn hash_of_data(&self) -> Digest {
        self.hod
    }

    /// `SegmentSecret` (Kp). Never log it.
    pub fn secret(&self) -> SegmentSecret {
        self.secret
    }

    /// The public segment id `HoHoDk = HMAC(Kp, HoD ‖ C2)`, computed on each call.
    pub fn id(&self) -> SegmentId {
        segment_id(self.algo, &self.secret, &self.hod)
    }

    /// Blocks with a hash in this structure: v1 `cBlocks` (counted from block 0 of the
    /// segment, possibly fewer than the segment has when the range ends early); v2 always 1.
    pub fn block_count(&self) -> u32 {
        self.block_count
    }

    /// Hash of block `j` (v1 block hash; v2: `j == 0` gives HoD, the hash of the whole segment).
    pub fn block_hash(&self, j: u32) -> Option<Digest> {
        match self.version {
            Version::V1 => {
                let d = self.algo.digest_len();
                let start = (j as usize).checked_mul(d)?;
                Digest::from_slice(self.blocks.get(start..start.checked_add(d)?)?)
            }
            Version::V2 => (j == 0).then_some(self.hod),
        }
    }

    /// Absolute bytes of block `j` in the resource (the segment's last block may be short);
    /// `None` when `j >= block_count()`.
    pub fn block_range(&self, j: u32) -> Option<Range<u64>> {
        if j >= self.block_count {
            return None;
        }
        let bs = u64::from(self.block_size());
        let seg_end = self.offset.checked_add(u64::from(self.size))?;
        let start = self.offset.checked_add(u64::from(j).checked_mul(bs)?)?;
        // Saturating: near u64::MAX a full block past `start` may overflow although the
        // segment end (checked at parse time) does not.
        let end = start.saturating_add(bs).min(seg_end);
        (start < end).then_some(start..end)
    }
}

/// Validate a v1 structure; `r` is positioned after the version field.
fn parse_v1<'a>(buf: &'a [u8], mut r: Reader<'a>) -> Result<ContentInfo<'a>, DecodeError> {
    let algo_id = r.u32_le("v1 dwHashAlgo")?;
    let algo = HashAlgo::from_v1_id(algo_id).ok_or(DecodeError::Unsupported {
        what: "v1 hash algorithm",
        value: u64::from(algo_id),
    })?;
    let offset_in_first = r.u32_le("v1 dwOffsetInFirstSegment")?;
    let read_in_last = r.u32_le("v1 dwReadBytesInLastSegment")?;
    let count = r.u32_le("v1 cSegments")?;
    if count == 0 {
        return Err(DecodeError::Invalid {
            what: "v1 cSegments is zero",
        });
    }
    let d = algo.digest_len();
    let desc_len = 16 + 2 * d;
    // Every segment costs its description and a cBlocks field: cap the count by the input
    // before allocating the index.
    let min_per_segment = desc_len + 4;
    let count = count as usize;
    if count > r.remaining() / min_per_segment {
        return Err(DecodeError::Truncated {
            what: "v1 segment table",
        });
    }
    let descs_pos = r.position();
    let mut descs = r.sub(count * desc_len, "v1 segment descriptions")?;
    let mut entries = Vec::with_capacity(count);
    let mut expected_offset: Option<u64> = None;
    for i in 0..count {
        let offset = descs.u64_le("v1 ullOffsetInContent")?;
        let size = descs.u32_le("v1 cbSegment")?;
        let block_size = descs.u32_le("v1 cbBlockSize")?;
        descs.skip(2 * d, "v1 segment hashes")?;
        if size == 0 {
            return Err(DecodeError::Invalid {
                what: "v1 cbSegment is zero",
            });
        }
        if size > V1_SEGMENT_SIZE {
            return Err(DecodeError::LimitExceeded {
                what: "v1 cbSegment",
                max: u64::from(V1_SEGMENT_SIZE),
            });
        }
        if block_size != BLOCK_SIZE {
            return Err(DecodeError::Unsupported {
                what: "v1 cbBlockSize",
                value: u64::from(block_size),
            });
        }
        // SPEC(MS-PCCRC §2.3): every segment but the resource's last is exactly 32 MiB, so
        // offsets are multiples of 32 MiB; we require it so `index()` is exact.
        if offset % u64::from(V1_SEGMENT_SIZE) != 0 {
            return Err(DecodeError::Invalid {
                what: "v1 ullOffsetInContent not a multiple of 32 MiB",
            });
        }
        if let Some(expected) = expected_offset {
            if offset != expected {
                return Err(DecodeError::Invalid {
                    what: "v1 segments not contiguous",
                });
            }
        }
        let end = offset
            .checked_add(u64::from(size))
            .ok_or(DecodeError::Invalid {
                what: "v1 segment end overflows u64",
            })?;
        expected_offset = Some(end);

        // SPEC(MS-PCCRC §2.3): all descriptions come first, then all block lists in the same
        // order, so block list i is found by walking lists 0..i-1 (done once, here).
        let block_count = r.u32_le("v1 cBlocks")?;
        if block_count == 0 {
            return Err(DecodeError::Invalid {
                what: "v1 cBlocks is zero",
            });
        }
        if block_count > MAX_BLOCKS_PER_SEGMENT {
            return Err(DecodeError::LimitExceeded {
                what: "v1 cBlocks",
                max: u64::from(MAX_BLOCKS_PER_SEGMENT),
            });
        }
        if block_count > size.div_ceil(BLOCK_SIZE) {
            return Err(DecodeError::Invalid {
                what: "v1 cBlocks exceeds the blocks of its segment",
            });
        }
        let blocks_pos = r.position();
        r.skip(block_count as usize * d, "v1 block hashes")?;
        entries.push(Entry {
            offset,
            index: offset / u64::from(V1_SEGMENT_SIZE),
            hod_pos: descs_pos + i * desc_len + 16,
            blocks_pos,
            size,
            block_count,
        });
    }
    r.expect_empty("v1 content information")?;

    let (first, last) = match (entries.first(), entries.last()) {
        (Some(f), Some(l)) => (*f, *l),
        _ => {
            return Err(DecodeError::Invalid {
                what: "v1 cSegments is zero",
            })
        }
    };
    if offset_in_first >= first.size {
        return Err(DecodeError::Invalid {
            what: "v1 dwOffsetInFirstSegment past the first segment",
        });
    }
    // Cannot overflow: offset + size was checked above and offset_in_first < size.
    let start = first.offset + u64::from(offset_in_first);
    let last_end = last.offset + u64::from(last.size);
    // SPEC(MS-PCCRC §2.3.1.1): 0 means "to the end of the last segment"; with a single
    // segment a non-zero count is measured from the range start, otherwise from the start of
    // the last segment.
    let end = if read_in_last == 0 {
        last_end
    } else if entries.len() == 1 {
        start.saturating_add(u64::from(read_in_last))
    } else {
        last.offset.saturating_add(u64::from(read_in_last))
    };
    if end > last_end {
        return Err(DecodeError::Invalid {
            what: "v1 dwReadBytesInLastSegment past the last segment",
        });
    }
    // SPEC(MS-PCCRC §3.3, §3.5): block lists start at block 0 and are cut only at the end;
    // they must still reach every block the range touches.
    for e in &entries {
        let covered = u64::from(e.block_count) * u64::from(BLOCK_SIZE);
        let covered_end = e.offset + covered.min(u64::from(e.size));
        let needed_end = end.min(e.offset + u64::from(e.size));
        if covered_end < needed_end {
            return Err(DecodeError::Invalid {
                what: "v1 block list does not cover the range",
            });
        }
    }
    Ok(ContentInfo {
        buf,
        version: Version::V1,
        algo,
        range: start..end,
        entries,
    })
}

/// Validate a v2 structure; `r` is positioned after the two version bytes.
fn parse_v2<'a>(buf: &'a [u8], mut r: Reader<'a>) -> Result<ContentInfo<'a>, DecodeError> {
    let algo_id = r.u8("v2 bHashAlgo")?;
    if algo_id != V2_HASH_ALGO_SHA512_TRUNC {
        // SPEC(MS-PCCRC §3.7): the example prints bHashAlgo 0x01; only 0x04 is defined.
        return Err(DecodeError::Unsupported {
            what: "v2 hash algorithm",
            value: u64::from(algo_id),
        });
    }
    let start_in_content = r.u64_be("v2 ullStartInContent")?;
    let first_index = r.u64_be("v2 ullIndexOfFirstSegment")?;
    let offset_in_first = r.u32_be("v2 dwOffsetInFirstSegment")?;
    let length = r.u64_be("v2 ullLengthOfRange")?;

    let mut entries = Vec::new();
    let mut cursor = start_in_content;
    while !r.is_empty() {
        let chunk_type = r.u8("v2 bChunkType")?;
        if chunk_type != V2_CHUNK_TYPE_SEGMENT_INFO {
            return Err(DecodeError::Unsupported {
                what: "v2 chunk type",
                value: u64::from(chunk_type),
            });
        }
        let chunk_len = r.u32_be("v2 dwChunkDataLength")?;
        if chunk_len == 0 {
            return Err(DecodeError::Invalid {
                what: "v2 dwChunkDataLength is zero",
            });
        }
        if chunk_len as usize % V2_SEGMENT_DESC_LEN != 0 {
            return Err(DecodeError::Invalid {
                what: "v2 dwChunkDataLength not a multiple of 68",
            });
        }
        let chunk_pos = r.position();
        let mut chunk = r.sub(chunk_len as usize, "v2 chunk data")?;
        while !chunk.is_empty() {
            let desc_pos = chunk_pos + chunk.position();
            let size = chunk.u32_be("v2 cbSegment")?;
            chunk.skip(2 * V2_DIGEST_LEN, "v2 segment hashes")?;
            if size == 0 {
                return Err(DecodeError::Invalid {
                    what: "v2 cbSegment is zero",
                });
            }
            if size > V2_MAX_SEGMENT_SIZE {
                return Err(DecodeError::LimitExceeded {
                    what: "v2 cbSegment",
                    max: u64::from(V2_MAX_SEGMENT_SIZE),
                });
            }
            let index = u64::try_from(entries.len())
                .ok()
                .and_then(|n| first_index.checked_add(n))
                .ok_or(DecodeError::Invalid {
                    what: "v2 segment index overflows u64",
                })?;
            let end = cursor
                .checked_add(u64::from(size))
                .ok_or(DecodeError::Invalid {
                    what: "v2 segment end overflows u64",
                })?;
            // Bounded by the input: each entry consumed 68 bytes of it.
            entries.push(Entry {
                offset: cursor,
                index,
                hod_pos: desc_pos + 4,
                blocks_pos: 0,
                size,
                block_count: 1,
            });
            cursor = end;
        }
    }
    let first = *entries.first().ok_or(DecodeError::Invalid {
        what: "v2 lists no segments",
    })?;
    if offset_in_first >= first.size {
        return Err(DecodeError::Invalid {
            what: "v2 dwOffsetInFirstSegment past the first segment",
        });
    }
    // Cannot overflow: start_in_content + Σ sizes was checked and offset_in_first < size.
    let start = start_in_content + u64::from(offset_in_first);
    // SPEC(MS-PCCRC §2.4, §3.7): ullLengthOfRange is a length (not an end offset, as iPXE
    // reads it); 0 means "to the end of the listed segments".
    let end = if length == 0 {
        cursor
    } else {
        match start.checked_add(length) {
            Some(end) if end <= cursor => end,
            _ => {
                return Err(DecodeError::Invalid {
                    what: "v2 ullLengthOfRange past the listed segments",
                })
            }
        }
    };
    // Every listed segment must intersect the range (as in v1, where it holds by
    // construction): a consumer walks the listed segments and fetches each.
    if entries.last().is_some_and(|l| end <= l.offset) {
        return Err(DecodeError::Invalid {
            what: "v2 range ends before the last listed segment",
        });
    }
    Ok(ContentInfo {
        buf,
        version: Version::V2,
        algo: HashAlgo::Sha512Trunc,
        range: start..end,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::codec::Writer;
    use crate::proto::pccrc::crypto::segment_secret;
    use crate::proto::pccrc::server_secret;

    const MIB: u64 = 1024 * 1024;

    /// A v1 segment for hand-built test inputs: hashes are fill patterns, not real hashes.
    struct V1Seg {
        offset: u64,
        size: u32,
        block_size: u32,
        blocks: u32,
    }

    fn seg(offset: u64, size: u32, blocks: u32) -> V1Seg {
        V1Seg {
            offset,
            size,
            block_size: BLOCK_SIZE,
            blocks,
        }
    }

    fn v1(algo: u32, d: usize, off: u32, read: u32, segs: &[V1Seg]) -> Vec<u8> {
        let mut w = Writer::new();
        w.u16_le(0x0100).u32_le(algo).u32_le(off).u32_le(read);
        w.u32_le(segs.len() as u32);
        for (i, s) in segs.iter().enumerate() {
            w.u64_le(s.offset).u32_le(s.size).u32_le(s.block_size);
            w.bytes(&vec![0x10 + i as u8; d])
                .bytes(&vec![0x20 + i as u8; d]);
        }
        for (i, s) in segs.iter().enumerate() {
            w.u32_le(s.blocks);
            for j in 0..s.blocks {
                w.bytes(&vec![(i * 16 + j as usize) as u8; d]);
            }
        }
        w.finish()
    }

    fn v1_256(off: u32, read: u32, segs: &[V1Seg]) -> Vec<u8> {
        v1(0x800C, 32, off, read, segs)
    }

    fn v2(start: u64, index: u64, off: u32, len: u64, chunks: &[&[u32]]) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(0)
            .u8(2)
            .u8(4)
            .u64_be(start)
            .u64_be(index)
            .u32_be(off)
            .u64_be(len);
        let mut n = 0u8;
        for sizes in chunks {
            w.u8(0).u32_be(68 * sizes.len() as u32);
            for &s in sizes.iter() {
                w.u32_be(s).bytes(&[0x30 + n; 32]).bytes(&[0x40 + n; 32]);
                n += 1;
            }
        }
        w.finish()
    }

    fn err(buf: &[u8]) -> DecodeError {
        ContentInfo::parse(buf).expect_err("input must be rejected")
    }

    fn invalid(what: &'static str) -> DecodeError {
        DecodeError::Invalid { what }
    }

    #[test]
    fn parses_v1_whole_file_layout_of_spec_3_2() {
        let buf = v1_256(0, 0, &[seg(0, 128_000, 2)]);
        assert_eq!(buf.len(), 166);
        let ci = ContentInfo::parse(&buf).unwrap();
        assert_eq!(ci.version(), Version::V1);
        assert_eq!(ci.hash_algo(), HashAlgo::Sha256);
        assert_eq!(ci.range(), 0..128_000);
        assert_eq!(ci.segment_count(), 1);
        let s = ci.segment(0).unwrap();
        assert_eq!((s.index(), s.offset(), s.size()), (0, 0, 128_000));
        assert_eq!(s.block_size(), 65_536);
        assert_eq!(s.hash_of_data().as_bytes(), &[0x10; 32]);
        assert_eq!(s.secret().expose(), &[0x20; 32]);
        assert_eq!(s.block_count(), 2);
        assert_eq!(s.block_hash(1).unwrap().as_bytes(), &[1; 32]);
        assert_eq!(s.block_hash(2), None);
        assert_eq!(s.block_range(0), Some(0..65_536));
        assert_eq!(s.block_range(1), Some(65_536..128_000));
        assert_eq!(s.block_range(2), None);
        assert!(ci.segment(1).is_none());
        assert_eq!(ci.as_bytes(), &buf[..]);
    }

    #[test]
    fn v1_explicit_read_bytes_equals_zero_encoding() {
        let zero = v1_256(0, 0, &[seg(0, 128_000, 2)]);
        let explicit = v1_256(0, 128_000, &[seg(0, 128_000, 2)]);
        assert_eq!(
            ContentInfo::parse(&zero).unwrap().range(),
            ContentInfo::parse(&explicit).unwrap().range()
        );
    }

    #[test]
    fn v1_single_segment_read_bytes_count_from_range_start() {
        let buf = v1_256(102_400, 20_000, &[seg(0, 128_000, 2)]);
        assert_eq!(ContentInfo::parse(&buf).unwrap().range(), 102_400..122_400);
        let past = v1_256(102_400, 25_601, &[seg(0, 128_000, 2)]);
        assert_eq!(
            err(&past),
            invalid("v1 dwReadBytesInLastSegment past the last segment")
        );
    }

    #[test]
    fn v1_multi_segment_read_bytes_count_from_last_segment_start() {
        let s = V1_SEGMENT_SIZE;
        let buf = v1_256(65_536, 70_000, &[seg(0, s, 512), seg(32 * MIB, s, 2)]);
        let ci = ContentInfo::parse(&buf).unwrap();
        assert_eq!(ci.range(), 65_536..32 * MIB + 70_000);
        let s1 = ci.segment(1).unwrap();
        assert_eq!(s1.index(), 1);
        assert_eq!(
            s1.block_range(1),
            Some(32 * MIB + 65_536..32 * MIB + 131_072)
        );
        assert_eq!(ci.segment_index_at(32 * MIB - 1), Some(0));
        assert_eq!(ci.segment_index_at(32 * MIB), Some(1));
        assert_eq!(ci.segment_index_at(64 * MIB), None);
    }

    #[test]
    fn rejects_v1_block_list_short_of_range() {
        let s = V1_SEGMENT_SIZE;
        // Range runs to the end of segment 1 but only 2 of its 512 blocks are listed.
        let buf = v1_256(0, 0, &[seg(0, s, 512), seg(32 * MIB, s, 2)]);
        assert_eq!(err(&buf), invalid("v1 block list does not cover the range"));
        // A non-final segment must list every block.
        let buf = v1_256(0, 10, &[seg(0, s, 511), seg(32 * MIB, s, 1)]);
        assert_eq!(err(&buf), invalid("v1 block list does not cover the range"));
    }

    #[test]
    fn parses_v1_sha384_and_sha512_digest_sizes() {
        for (id, algo, d) in [
            (0x800D, HashAlgo::Sha384, 48),
            (0x800E, HashAlgo::Sha512, 64),
        ] {
            let buf = v1(id, d, 0, 0, &[seg(0, 100, 1)]);
            assert_eq!(buf.len(), 18 + 16 + 2 * d + 4 + d);
            let ci = ContentInfo::parse(&buf).unwrap();
            assert_eq!(ci.hash_algo(), algo);
            let s = ci.segment(0).unwrap();
            assert_eq!(s.block_hash(0).unwrap().as_bytes().len(), d);
            assert_eq!(s.id().as_bytes().len(), d);
        }
    }

    #[test]
    fn segment_id_is_derived_from_hod_and_secret() {
        let algo = HashAlgo::Sha256;
        let hod = algo.hash(b"segment");
        let kp = segment_secret(algo, &server_secret(algo, b"key"), &hod);
        let mut buf = v1_256(0, 0, &[seg(0, 100, 1)]);
        buf[34..66].copy_from_slice(hod.as_bytes());
        buf[66..98].copy_from_slice(kp.expose());
        let s = ContentInfo::parse(&buf).unwrap().segment(0).unwrap();
        assert_eq!(s.id(), segment_id(algo, &kp, &hod));
    }

    #[test]
    fn debug_output_never_shows_the_segment_secret() {
        let buf = v1_256(0, 0, &[seg(0, 100, 1)]);
        let ci = ContentInfo::parse(&buf).unwrap();
        let secret_hex = hex::encode([0x20u8; 32]);
        let shown = format!("{ci:?} {:?}", ci.segment(0).unwrap());
        assert!(shown.contains("[redacted]"), "{shown}");
        assert!(!shown.contains(&secret_hex), "{shown}");
    }

    #[test]
    fn rejects_truncated_and_trailing_input() {
        let buf = v1_256(0, 0, &[seg(0, 128_000, 2)]);
        for cut in 0..buf.len() {
            assert!(
                matches!(err(&buf[..cut]), DecodeError::Truncated { .. }),
                "cut at {cut}: {:?}",
                err(&buf[..cut])
            );
        }
        let mut long = buf.clone();
        long.push(0);
        assert_eq!(
            err(&long),
            DecodeError::TrailingBytes {
                what: "v1 content information"
            }
        );
    }

    #[test]
    fn rejects_unknown_version_and_hash_algorithms() {
        assert_eq!(
            err(&[0x00, 0x03, 0, 0]),
            DecodeError::Unsupported {
                what: "content information version",
                value: 0x0300
            }
        );
        let buf = v1(0x8004, 32, 0, 0, &[seg(0, 100, 1)]);
        assert_eq!(
            err(&buf),
            DecodeError::Unsupported {
                what: "v1 hash algorithm",
                value: 0x8004
            }
        );
        let mut buf = v2(0, 0, 0, 0, &[&[100]]);
        buf[2] = 0x01;
        assert_eq!(
            err(&buf),
            DecodeError::Unsupported {
                what: "v2 hash algorithm",
                value: 1
            }
        );
    }

    #[test]
    fn rejects_v1_segment_count_zero_and_oversized_count() {
        assert_eq!(err(&v1_256(0, 0, &[])), invalid("v1 cSegments is zero"));
        let mut buf = v1_256(0, 0, &[seg(0, 100, 1)]);
        buf[14..18].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            err(&buf),
            DecodeError::Truncated {
                what: "v1 segment table"
            }
        );
    }

    #[test]
    fn rejects_bad_v1_segment_fields() {
        assert_eq!(
            err(&v1_256(0, 0, &[seg(0, 0, 1)])),
            invalid("v1 cbSegment is zero")
        );
        assert_eq!(
            err(&v1_256(0, 0, &[seg(0, V1_SEGMENT_SIZE + 1, 1)])),
            DecodeError::LimitExceeded {
                what: "v1 cbSegment",
                max: 32 * MIB
            }
        );
        let mut odd = seg(0, 100, 1);
        odd.block_size = 4096;
        assert_eq!(
            err(&v1_256(0, 0, &[odd])),
            DecodeError::Unsupported {
                what: "v1 cbBlockSize",
                value: 4096
            }
        );
        assert_eq!(
            err(&v1_256(0, 0, &[seg(4096, 100, 1)])),
            invalid("v1 ullOffsetInContent not a multiple of 32 MiB")
        );
        let s = V1_SEGMENT_SIZE;
        assert_eq!(
            err(&v1_256(0, 0, &[seg(0, s, 512), seg(64 * MIB, 100, 1)])),
            invalid("v1 segments not contiguous")
        );
        assert_eq!(
            err(&v1_256(0, 0, &[seg(0, 100, 1), seg(32 * MIB, 100, 1)])),
            invalid("v1 segments not contiguous")
        );
        let top = u64::MAX - (u64::MAX % (32 * MIB));
        assert_eq!(
            err(&v1_256(0, 0, &[seg(top, s, 512)])),
            invalid("v1 segment end overflows u64")
        );
    }

    #[test]
    fn rejects_bad_v1_block_counts() {
        assert_eq!(
            err(&v1_256(0, 0, &[seg(0, 100, 0)])),
            invalid("v1 cBlocks is zero")
        );
        assert_eq!(
            err(&v1_256(0, 0, &[seg(0, V1_SEGMENT_SIZE, 513)])),
            DecodeError::LimitExceeded {
                what: "v1 cBlocks",
                max: 512
            }
        );
        // 65537 bytes are two blocks; three hashes do not fit.
        assert_eq!(
            err(&v1_256(0, 0, &[seg(0, 65_537, 3)])),
            invalid("v1 cBlocks exceeds the blocks of its segment")
        );
        assert!(ContentInfo::parse(&v1_256(0, 0, &[seg(0, 65_537, 2)])).is_ok());
    }

    #[test]
    fn block_ranges_work_for_a_segment_ending_just_below_u64_max() {
        let top = u64::MAX - (u64::MAX % (32 * MIB));
        let size = V1_SEGMENT_SIZE - 5;
        let buf = v1_256(0, 0, &[seg(top, size, 512)]);
        let s = ContentInfo::parse(&buf).unwrap().segment(0).unwrap();
        assert_eq!(
            s.block_range(511),
            Some(top + 511 * 65_536..top + u64::from(size))
        );
    }

    #[test]
    fn rejects_v1_offset_in_first_segment_past_it() {
        assert_eq!(
            err(&v1_256(100, 0, &[seg(0, 100, 1)])),
            invalid("v1 dwOffsetInFirstSegment past the first segment")
        );
        assert_eq!(
            ContentInfo::parse(&v1_256(99, 0, &[seg(0, 100, 1)]))
                .unwrap()
                .range(),
            99..100
        );
    }

    #[test]
    fn parses_v2_whole_file_layout_of_spec_3_6() {
        for len in [0, 0x2F400] {
            let buf = v2(0, 0, 0, len, &[&[0xF000, 0x15400, 0xB000]]);
            assert_eq!(buf.len(), 240);
            let ci = ContentInfo::parse(&buf).unwrap();
            assert_eq!(ci.version(), Version::V2);
            assert_eq!(ci.hash_algo(), HashAlgo::Sha512Trunc);
            assert_eq!(ci.range(), 0..193_536);
            let offsets: Vec<_> = ci.segments().map(|s| (s.index(), s.offset())).collect();
            assert_eq!(offsets, [(0, 0), (1, 0xF000), (2, 0xF000 + 0x15400)]);
            let s = ci.segment(1).unwrap();
            assert_eq!(s.block_size(), 0x15400);
            assert_eq!(s.block_count(), 1);
            assert_eq!(s.block_hash(0), Some(s.hash_of_data()));
            assert_eq!(s.block_hash(1), None);
            assert_eq!(s.block_range(0), Some(0xF000..0xF000 + 0x15400));
            assert_eq!(s.block_range(1), None);
            assert_eq!(s.hash_of_data().as_bytes(), &[0x31; 32]);
            assert_eq!(s.secret().expose(), &[0x41; 32]);
        }
    }

    #[test]
    fn v2_range_length_is_a_length_not_an_end_spec_3_7() {
        let buf = v2(0xF000, 1, 0xA000, 0x2800, &[&[0x15400]]);
        assert_eq!(buf.len(), 104);
        let ci = ContentInfo::parse(&buf).unwrap();
        assert_eq!(ci.range(), 102_400..112_640);
        assert_eq!(ci.segment(0).unwrap().index(), 1);
    }

    #[test]
    fn v2_segments_span_several_chunks() {
        let buf = v2(0, 5, 0, 0, &[&[100], &[200, 300]]);
        let ci = ContentInfo::parse(&buf).unwrap();
        let got: Vec<_> = ci
            .segments()
            .map(|s| (s.index(), s.offset(), s.size()))
            .collect();
        assert_eq!(got, [(5, 0, 100), (6, 100, 200), (7, 300, 300)]);
        assert_eq!(
            ci.segment(2).unwrap().hash_of_data().as_bytes(),
            &[0x32; 32]
        );
    }

    #[test]
    fn rejects_bad_v2_chunks() {
        let good = v2(0, 0, 0, 0, &[&[100]]);
        let mut t = good.clone();
        t[31] = 1;
        assert_eq!(
            err(&t),
            DecodeError::Unsupported {
                what: "v2 chunk type",
                value: 1
            }
        );
        let mut z = good[..31].to_vec();
        z.extend_from_slice(&[0, 0, 0, 0, 0]);
        assert_eq!(err(&z), invalid("v2 dwChunkDataLength is zero"));
        let mut m = good.clone();
        m[32..36].copy_from_slice(&67u32.to_be_bytes());
        assert_eq!(
            err(&m),
            invalid("v2 dwChunkDataLength not a multiple of 68")
        );
        let mut long = good.clone();
        long[32..36].copy_from_slice(&136u32.to_be_bytes());
        assert_eq!(
            err(&long),
            DecodeError::Truncated {
                what: "v2 chunk data"
            }
        );
        assert_eq!(
            err(&good[..33]),
            DecodeError::Truncated {
                what: "v2 dwChunkDataLength"
            }
        );
        assert_eq!(err(&good[..31]), invalid("v2 lists no segments"));
        assert!(matches!(err(&good[..30]), DecodeError::Truncated { .. }));
    }

    #[test]
    fn rejects_bad_v2_segment_sizes_and_ranges() {
        assert_eq!(
            err(&v2(0, 0, 0, 0, &[&[0]])),
            invalid("v2 cbSegment is zero")
        );
        assert_eq!(
            err(&v2(0, 0, 0, 0, &[&[131_073]])),
            DecodeError::LimitExceeded {
                what: "v2 cbSegment",
                max: 131_072
            }
        );
        assert!(ContentInfo::parse(&v2(0, 0, 0, 0, &[&[131_072]])).is_ok());
        assert_eq!(
            err(&v2(0, 0, 100, 0, &[&[100]])),
            invalid("v2 dwOffsetInFirstSegment past the first segment")
        );
        assert_eq!(
            err(&v2(0, 0, 10, 91, &[&[100]])),
            invalid("v2 ullLengthOfRange past the listed segments")
        );
        assert_eq!(
            err(&v2(0, 0, 10, 90, &[&[100, 100]])),
            invalid("v2 range ends before the last listed segment")
        );
        assert!(ContentInfo::parse(&v2(0, 0, 10, 91, &[&[100, 100]])).is_ok());
        assert_eq!(
            err(&v2(0, 0, 10, u64::MAX, &[&[100]])),
            invalid("v2 ullLengthOfRange past the listed segments")
        );
        assert_eq!(
            ContentInfo::parse(&v2(0, 0, 10, 90, &[&[100]]))
                .unwrap()
                .range(),
            10..100
        );
        assert_eq!(
            err(&v2(u64::MAX - 150, 0, 0, 0, &[&[100, 100]])),
            invalid("v2 segment end overflows u64")
        );
        assert_eq!(
            err(&v2(0, u64::MAX, 0, 0, &[&[100, 100]])),
            invalid("v2 segment index overflows u64")
        );
    }
}
