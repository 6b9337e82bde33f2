//! What a hosted cache checks on a SEGMENT_INFO before trusting it (MS-PCHC
//! §3.2.5.2.2, PROTOCOL.md §8.6).
//!
//! The embedded content information is a PCCRC v1 structure (little-endian)
//! that must describe exactly one segment. The segment id the client offered
//! must equal `HMAC(Kp, HoD ‖ C2)` recomputed from the HoD and Kp it sent, and
//! when the block hash list covers the whole segment it must hash to HoD.
//!
//! The structure is read here rather than by `pccrc::ContentInfo::parse`
//! because SEGMENT_INFO gives two header fields a different meaning (see the
//! `SPEC` note in [`verify_segment_info`]); a unit test checks that both
//! readers agree on an ordinary one-segment CI.

use std::fmt;

use super::{SegmentInfo, CONTENT_TAG_LEN};
use crate::proto::codec::{DecodeError, Reader};
use crate::proto::pccrc::{
    segment_id, Digest, HashAlgo, Hasher, SegmentId, SegmentSecret, BLOCK_SIZE,
    MAX_BLOCKS_PER_SEGMENT, V1_SEGMENT_SIZE,
};

/// Why a SEGMENT_INFO was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    /// The embedded content information is malformed.
    #[error("segment info: {0}")]
    Decode(#[from] DecodeError),
    /// The content information does not describe exactly one segment.
    #[error("segment info describes {count} segments, expected exactly 1")]
    SegmentCount {
        /// `cSegments` as sent.
        count: u32,
    },
    /// The id recomputed from HoD and Kp is not the offered id.
    /// (The offered id is the caller's own input and is not repeated here.)
    #[error("segment id mismatch: content information yields {computed}, not the offered id")]
    IdMismatch {
        /// `HMAC(Kp, HoD ‖ C2)` from the content information.
        computed: SegmentId,
    },
    /// The complete block hash list does not hash to the segment's HoD.
    #[error("block hashes of segment {id} do not hash to its HoD")]
    HashOfDataMismatch {
        /// The segment concerned.
        id: SegmentId,
    },
}

impl OfferError {
    /// Short stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            OfferError::Decode(e) => e.kind(),
            OfferError::SegmentCount { .. } => "segment_count",
            OfferError::IdMismatch { .. } => "id_mismatch",
            OfferError::HashOfDataMismatch { .. } => "hod_mismatch",
        }
    }
}

/// A segment whose SEGMENT_INFO passed every check: what a v1 hosted cache
/// needs to pull, verify, store and re-serve its blocks.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifiedSegment {
    /// `HoHoDk`, recomputed (and equal to the offer when one was given).
    pub id: SegmentId,
    /// Hash algorithm of the content.
    pub algo: HashAlgo,
    /// `HoD`.
    pub hash_of_data: Digest,
    /// `Kp`; redacted in `Debug`.
    pub secret: SegmentSecret,
    /// `ullOffsetInContent`: where the segment starts in its resource.
    pub offset_in_content: u64,
    /// `cbSegment`: bytes in the segment.
    pub segment_size: u32,
    /// Hashes of blocks `0..block_hashes.len()` of the segment.
    pub block_hashes: Vec<Digest>,
    /// True when `block_hashes` covers every block of the segment (and was
    /// therefore checked against HoD).
    pub complete: bool,
    /// The SEGMENT_INFO's content tag (statistics only).
    pub content_tag: [u8; CONTENT_TAG_LEN],
}

impl VerifiedSegment {
    /// Number of blocks in the whole segment (not just those listed).
    pub fn block_count(&self) -> u32 {
        self.segment_size.div_ceil(BLOCK_SIZE)
    }

    /// Length of block `index`, or `None` if the segment has no such block.
    pub fn block_len(&self, index: u32) -> Option<u32> {
        let start = index.checked_mul(BLOCK_SIZE)?;
        if start >= self.segment_size {
            return None;
        }
        Some((self.segment_size - start).min(BLOCK_SIZE))
    }
}

impl fmt::Debug for VerifiedSegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedSegment")
            .field("id", &self.id)
            .field("algo", &self.algo)
            .field("hash_of_data", &self.hash_of_data)
            .field("secret", &self.secret)
            .field("offset_in_content", &self.offset_in_content)
            .field("segment_size", &self.segment_size)
            .field("blocks_listed", &self.block_hashes.len())
            .field("complete", &self.complete)
            .finish()
    }
}

/// The content information a SEGMENT_INFO embeds for one v1 segment (the
/// offering side; [`verify_segment_info`] is its reader): a PCCRC v1
/// structure, little-endian, with `cSegments` = 1, the segment's own
/// description (offset in the resource, size, 64 KiB blocks, HoD, Kp) and
/// its whole block hash list. `dwOffsetInFirstSegment` = 0 (the range began
/// at the segment start) and `dwReadBytesInLastSegment` = the segment size,
/// as MS-PCHC §2.2.1.4 describes. `None` when the inputs cannot form a valid
/// one (v2 algorithm, secret or hash lengths not the algorithm's, block
/// count not matching the size, offset not on a 32 MiB boundary).
pub fn encode_segment_info_ci(
    algo: HashAlgo,
    offset_in_content: u64,
    segment_size: u32,
    hash_of_data: &Digest,
    secret: &SegmentSecret,
    block_hashes: &[Digest],
) -> Option<Vec<u8>> {
    let d = algo.digest_len();
    let algo_id = algo.v1_id()?;
    if segment_size == 0
        || segment_size > V1_SEGMENT_SIZE
        || offset_in_content % u64::from(V1_SEGMENT_SIZE) != 0
        || hash_of_data.as_bytes().len() != d
        || secret.expose().len() != d
        || block_hashes.len() != segment_size.div_ceil(BLOCK_SIZE) as usize
        || block_hashes.iter().any(|h| h.as_bytes().len() != d)
    {
        return None;
    }
    let mut out = Vec::with_capacity(18 + 16 + 2 * d + 4 + block_hashes.len() * d);
    out.extend_from_slice(&0x0100u16.to_le_bytes());
    out.extend_from_slice(&algo_id.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&segment_size.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&offset_in_content.to_le_bytes());
    out.extend_from_slice(&segment_size.to_le_bytes());
    out.extend_from_slice(&BLOCK_SIZE.to_le_bytes());
    out.extend_from_slice(hash_of_data.as_bytes());
    out.extend_from_slice(secret.expose());
    out.extend_from_slice(&(block_hashes.len() as u32).to_le_bytes());
    for h in block_hashes {
        out.extend_from_slice(h.as_bytes());
    }
    Some(out)
}

/// Check a SEGMENT_INFO (PROTOCOL.md §8.6) and extract what the hosted cache
/// keeps. With `offered = Some(id)`, the recomputed HoHoDk must equal `id`;
/// with `None` the recomputed id is simply returned.
pub fn verify_segment_info(
    offered: Option<&SegmentId>,
    info: &SegmentInfo<'_>,
) -> Result<VerifiedSegment, OfferError> {
    let mut r = Reader::new(info.content_info);
    // SPEC(MS-PCHC §2.2.1.4): the embedded CI is PCCRC v1 and therefore
    // little-endian, unlike every other PCHC field.
    let version = r.u16_le("pchc SEGMENT_INFO CI Version")?;
    if version != 0x0100 {
        return Err(DecodeError::Unsupported {
            what: "pchc SEGMENT_INFO CI Version",
            value: u64::from(version),
        }
        .into());
    }
    let algo_id = r.u32_le("pchc SEGMENT_INFO CI dwHashAlgo")?;
    let algo = HashAlgo::from_v1_id(algo_id).ok_or(DecodeError::Unsupported {
        what: "pchc SEGMENT_INFO CI dwHashAlgo",
        value: u64::from(algo_id),
    })?;
    let d = algo.digest_len();
    let offset_in_first = r.u32_le("pchc SEGMENT_INFO CI dwOffsetInFirstSegment")?;
    // SPEC(MS-PCHC §2.2.1.4): dwReadBytesInLastSegment is "the total number of
    // bytes in the segment" here, not PCCRC's single-segment "bytes from the
    // range start", so with dwOffsetInFirstSegment > 0 the PCCRC range rule would
    // run past the segment; and the block list may stop where the client's range
    // stopped. Only the upper bounds are checked.
    let read_in_last = r.u32_le("pchc SEGMENT_INFO CI dwReadBytesInLastSegment")?;
    let count = r.u32_le("pchc SEGMENT_INFO CI cSegments")?;
    if count != 1 {
        return Err(OfferError::SegmentCount { count });
    }
    let offset_in_content = r.u64_le("pchc SEGMENT_INFO CI ullOffsetInContent")?;
    let segment_size = r.u32_le("pchc SEGMENT_INFO CI cbSegment")?;
    if segment_size == 0 {
        return Err(DecodeError::Invalid {
            what: "pchc SEGMENT_INFO CI cbSegment is zero",
        }
        .into());
    }
    if segment_size > V1_SEGMENT_SIZE {
        return Err(DecodeError::LimitExceeded {
            what: "pchc SEGMENT_INFO CI cbSegment",
            max: u64::from(V1_SEGMENT_SIZE),
        }
        .into());
    }
    // SPEC(MS-PCCRC §2.3): every v1 segment but the last starts at a multiple
    // of 32 MiB.
    if offset_in_content % u64::from(V1_SEGMENT_SIZE) != 0 {
        return Err(DecodeError::Invalid {
            what: "pchc SEGMENT_INFO CI ullOffsetInContent not a multiple of 32 MiB",
        }
        .into());
    }
    if offset_in_content
        .checked_add(u64::from(segment_size))
        .is_none()
    {
        return Err(DecodeError::Invalid {
            what: "pchc SEGMENT_INFO CI segment end overflows",
        }
        .into());
    }
    if offset_in_first >= segment_size || read_in_last > segment_size {
        return Err(DecodeError::Invalid {
            what: "pchc SEGMENT_INFO CI range outside the segment",
        }
        .into());
    }
    let block_size = r.u32_le("pchc SEGMENT_INFO CI cbBlockSize")?;
    if block_size != BLOCK_SIZE {
        return Err(DecodeError::Unsupported {
            what: "pchc SEGMENT_INFO CI cbBlockSize",
            value: u64::from(block_size),
        }
        .into());
    }
    let hash_of_data = digest(&mut r, d, "pchc SEGMENT_INFO CI SegmentHashOfData")?;
    let secret_bytes = r.take(d, "pchc SEGMENT_INFO CI SegmentSecret")?;
    let secret = SegmentSecret::from_slice(secret_bytes).ok_or(DecodeError::Invalid {
        what: "pchc SEGMENT_INFO CI SegmentSecret length",
    })?;
    let blocks_in_segment = segment_size.div_ceil(BLOCK_SIZE);
    let listed = r.u32_le("pchc SEGMENT_INFO CI cBlocks")?;
    if listed == 0 {
        return Err(DecodeError::Invalid {
            what: "pchc SEGMENT_INFO CI cBlocks is zero",
        }
        .into());
    }
    if listed > blocks_in_segment {
        return Err(DecodeError::LimitExceeded {
            what: "pchc SEGMENT_INFO CI cBlocks (blocks in cbSegment)",
            max: u64::from(blocks_in_segment.min(MAX_BLOCKS_PER_SEGMENT)),
        }
        .into());
    }
    // Capped above by blocks_in_segment ≤ 512, and the bytes must be present
    // before anything is allocated.
    let listed = listed as usize;
    let hashes = r.take(listed.saturating_mul(d), "pchc SEGMENT_INFO CI BlockHashes")?;
    r.expect_empty("pchc SEGMENT_INFO CI")?;

    let id = segment_id(algo, &secret, &hash_of_data);
    if let Some(offered) = offered {
        if *offered != id {
            return Err(OfferError::IdMismatch { computed: id });
        }
    }
    let complete = listed == blocks_in_segment as usize;
    if complete {
        let mut h = Hasher::new(algo);
        h.update(hashes);
        if h.finalize() != hash_of_data {
            return Err(OfferError::HashOfDataMismatch { id });
        }
    }
    let block_hashes = hashes
        .chunks_exact(d)
        .filter_map(Digest::from_slice)
        .collect();
    Ok(VerifiedSegment {
        id,
        algo,
        hash_of_data,
        secret,
        offset_in_content,
        segment_size,
        block_hashes,
        complete,
        content_tag: info.content_tag,
    })
}

fn digest(r: &mut Reader<'_>, len: usize, what: &'static str) -> Result<Digest, DecodeError> {
    Digest::from_slice(r.take(len, what)?).ok_or(DecodeError::Invalid { what })
}
