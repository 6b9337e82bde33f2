//! Content information (MS-PCCRC) v1 and v2: hashes, key derivation, parse, build.
//!
//! See `../shared/docs/PROTOCOL.md` §1–§4. v1 is little-endian, v2 big-endian.

pub mod build;
pub mod chunker;
pub mod crypto;
pub mod parse;

pub use build::v1_segment_from_blocks;
pub use build::{
    check_algo, hash_content, hash_segment, hash_v1_blocks, hash_v2_segments, BuildError,
    ContentHashes, SegmentHasher, SegmentHashes, StreamBuilder,
};
pub use chunker::Chunker;
pub use crypto::{
    segment_id, segment_secret, server_secret, Digest, HashAlgo, Hasher, SegmentId, SegmentSecret,
    ServerSecret, C2,
};
pub use parse::{ContentInfo, Segment, Version};

/// v1 block size; the only value the protocol allows.
pub const BLOCK_SIZE: u32 = 65_536;
/// v1 segment size for every segment but the last of a resource (512 blocks).
pub const V1_SEGMENT_SIZE: u32 = 32 * 1024 * 1024;
/// Most blocks a v1 segment can have.
pub const MAX_BLOCKS_PER_SEGMENT: u32 = V1_SEGMENT_SIZE / BLOCK_SIZE;
/// Largest v2 segment (MS-PCCRC §2.4: `cbSegment` ≤ 128 KiB).
pub const V2_MAX_SEGMENT_SIZE: u32 = 131_072;
