//! The per-segment fetch planner: store → block sources (hosted cache, peers)
//! → origin `Range` GETs, with every block verified against its content
//! information hash before it is stored or sent.
//!
//! - [`SegmentPlan`]: what the planner needs to know about one segment (owned,
//!   built from a parsed content information).
//! - [`BlockSource`]: the ONE trait every source implements (origin ranges,
//!   later PCCRR peers and the hosted cache). Sources return raw blocks; the
//!   planner verifies them.
//! - [`BlockStore`]: the seam to the persistent store.
//! - [`Planner`]: per-segment single-flight (N clients asking for the same cold
//!   segment cause one fetch; waiters stream as blocks land) and the ordered
//!   body stream of an object range ([`Planner::stream`]).

mod flight;
pub mod origin;
mod store;

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;

use crate::proto::pccrc::{
    ContentInfo, Digest, HashAlgo, Segment, SegmentId, SegmentSecret, Version,
};

pub use flight::{BodyChunk, FetchError, Planner, PlannerOptions};
pub use origin::OriginRanges;

/// Told about every segment a planner flight completed, with how many of its
/// bytes came from the origin (the proxy offers such segments to its hosted
/// cache). Called on the flight's task: implementations must not block.
pub trait FetchObserver: Send + Sync + std::fmt::Debug {
    /// `seg` is now complete in the store (every block verified);
    /// `origin_bytes` of it were fetched from the origin by this flight.
    fn segment_fetched(&self, seg: &Arc<SegmentPlan>, origin_bytes: u64);
}

/// Where a block came from (metric label and log field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// The local store.
    Store,
    /// A discovered peer (MS-PCCRR).
    Peer,
    /// The configured hosted cache.
    HostedCache,
    /// The origin, with a `Range` GET.
    Origin,
}

impl SourceKind {
    /// Stable lower-case name for logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            SourceKind::Store => "store",
            SourceKind::Peer => "peer",
            SourceKind::HostedCache => "hosted_cache",
            SourceKind::Origin => "origin",
        }
    }
}

/// One segment as the planner sees it: identity, placement, and the hash of
/// every listed block. For content information v2 the segment is block 0 of
/// itself and its hash is the segment's hash of data.
#[derive(Clone)]
pub struct SegmentPlan {
    /// HoHoDk, the public segment id (store and single-flight key).
    pub id: SegmentId,
    /// Absolute offset of the segment in the resource.
    pub offset: u64,
    /// Full segment length in bytes.
    pub size: u32,
    /// Block size (v1: 65536; v2: the segment size).
    pub block_size: u32,
    /// Algorithm of the block hashes (v2: `Sha512Trunc`).
    pub algo: HashAlgo,
    /// The segment's hash of data (HoD).
    pub hash_of_data: Digest,
    /// The segment secret (Kp) — never logged.
    pub secret: SegmentSecret,
    /// Hash of every listed block, from block 0 (v2: `[hash_of_data]`).
    pub block_hashes: Vec<Digest>,
    /// True for content information v2 (no per-block hash list in the store).
    pub v2: bool,
}

impl std::fmt::Debug for SegmentPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentPlan")
            .field("id", &self.id.to_hex())
            .field("offset", &self.offset)
            .field("size", &self.size)
            .field("block_size", &self.block_size)
            .field("blocks", &self.block_hashes.len())
            .field("secret", &"[redacted]")
            .finish()
    }
}

impl SegmentPlan {
    /// The plan of one parsed segment. v2 segments become one block whose
    /// hash is the segment's hash of data (truncated SHA-512).
    pub fn from_segment(seg: &Segment<'_>, version: Version, algo: HashAlgo) -> SegmentPlan {
        let (algo, v2) = match version {
            Version::V1 => (algo, false),
            Version::V2 => (HashAlgo::Sha512Trunc, true),
        };
        SegmentPlan {
            id: seg.id(),
            offset: seg.offset(),
            size: seg.size(),
            block_size: seg.block_size(),
            algo,
            hash_of_data: seg.hash_of_data(),
            secret: seg.secret(),
            block_hashes: (0..seg.block_count())
                .map_while(|j| seg.block_hash(j))
                .collect(),
            v2,
        }
    }

    /// Number of listed blocks.
    pub fn block_count(&self) -> u32 {
        u32::try_from(self.block_hashes.len()).unwrap_or(u32::MAX)
    }

    /// Absolute byte range of block `j` (the last block of a segment may be short).
    pub fn block_range(&self, j: u32) -> Option<Range<u64>> {
        if j >= self.block_count() || self.block_size == 0 {
            return None;
        }
        let start = u64::from(j) * u64::from(self.block_size);
        let size = u64::from(self.size);
        if start >= size {
            return None;
        }
        let end = (start + u64::from(self.block_size)).min(size);
        Some(self.offset + start..self.offset + end)
    }

    /// Length of block `j` in bytes.
    pub fn block_len(&self, j: u32) -> Option<usize> {
        self.block_range(j)
            .and_then(|r| usize::try_from(r.end - r.start).ok())
    }

    /// Absolute byte range covered by the listed blocks.
    pub fn listed_range(&self) -> Range<u64> {
        let end = self
            .block_count()
            .checked_sub(1)
            .and_then(|last| self.block_range(last))
            .map_or(self.offset, |r| r.end);
        self.offset..end
    }

    /// Whether `data` is block `j`: hashed with the segment's algorithm and
    /// compared with the listed hash.
    pub fn verify(&self, j: u32, data: &[u8]) -> bool {
        let Some(expected) = usize::try_from(j)
            .ok()
            .and_then(|i| self.block_hashes.get(i))
        else {
            return false;
        };
        self.block_len(j) == Some(data.len()) && self.algo.hash(data) == *expected
    }
}

/// Plans for every segment of a parsed content information, in order.
pub fn plan_object(ci: &ContentInfo<'_>) -> Arc<[Arc<SegmentPlan>]> {
    ci.segments()
        .map(|s| Arc::new(SegmentPlan::from_segment(&s, ci.version(), ci.hash_algo())))
        .collect()
}

/// A block as a source delivers it (not yet verified).
#[derive(Debug, Clone)]
pub struct Block {
    /// Block index within its segment.
    pub index: u32,
    /// The block's bytes.
    pub data: Bytes,
}

/// Why a source could not deliver.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    /// No connection could be made.
    #[error("cannot connect to {what}: {detail}")]
    Connect {
        /// Which source.
        what: &'static str,
        /// The underlying error, as text.
        detail: String,
    },
    /// No answer in time.
    #[error("{what} timed out")]
    Timeout {
        /// Which source.
        what: &'static str,
    },
    /// An answer that is not the requested bytes.
    #[error("{what} answered {status} to a range request")]
    Status {
        /// Which source.
        what: &'static str,
        /// HTTP status.
        status: u16,
    },
    /// The body ended or failed before the requested blocks were complete.
    #[error("{what} body ended early: {detail}")]
    Body {
        /// Which source.
        what: &'static str,
        /// The underlying error, as text.
        detail: String,
    },
    /// The source does not hold the block.
    #[error("{what} does not have the block")]
    NotFound {
        /// Which source.
        what: &'static str,
    },
}

impl SourceError {
    /// Short stable name for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceError::Connect { .. } => "connect",
            SourceError::Timeout { .. } => "timeout",
            SourceError::Status { .. } => "status",
            SourceError::Body { .. } => "body",
            SourceError::NotFound { .. } => "not_found",
        }
    }
}

/// A place blocks can come from. Implementations return raw blocks for the
/// requested indices, in any order, possibly fewer than asked (missing ones
/// are asked of the next source); the planner verifies every block.
pub trait BlockSource: Send + Sync + std::fmt::Debug {
    /// Which kind of source this is (metrics, logs).
    fn kind(&self) -> SourceKind;

    /// Fetch `blocks` of `seg`.
    fn fetch(
        &self,
        seg: Arc<SegmentPlan>,
        blocks: Range<u32>,
    ) -> BoxStream<'static, Result<Block, SourceError>>;

    /// True when every block this source yields was already checked against
    /// the [`SegmentPlan`]'s block hash (the PCCRR client must hash each
    /// block to decrypt it): the planner then skips its own hash check
    /// instead of hashing the same bytes twice. Default: false.
    fn yields_verified(&self) -> bool {
        false
    }
}

/// The planner's view of the persistent block store.
pub trait BlockStore: Send + Sync + std::fmt::Debug {
    /// A present, re-checked block, or `None` (absent, corrupt, or IO error).
    fn get(
        &self,
        seg: &SegmentPlan,
        index: u32,
    ) -> futures_util::future::BoxFuture<'static, Option<Bytes>>;

    /// Up to `max` consecutive blocks from `first`, each re-checked: the
    /// present prefix (empty when `first` is absent). Stores that can read a
    /// run at once override this; the default reads `first` alone.
    fn get_run(
        &self,
        seg: &SegmentPlan,
        first: u32,
        max: u32,
    ) -> futures_util::future::BoxFuture<'static, Vec<Bytes>> {
        let _ = max;
        let one = self.get(seg, first);
        Box::pin(async move { one.await.into_iter().collect() })
    }

    /// [`get_run`](Self::get_run) if it can finish on the calling thread
    /// without waiting for IO (a run the page cache holds); `None` when it
    /// cannot, and the caller uses `get_run`. Default: always `None`.
    fn get_run_now(&self, seg: &SegmentPlan, first: u32, max: u32) -> Option<Vec<Bytes>> {
        let _ = (seg, first, max);
        None
    }

    /// Fast presence check (may be stale; [`get`](Self::get) is authoritative).
    fn has(&self, seg: &SegmentPlan, index: u32) -> bool;

    /// Keep a verified block. Failures are the store's to count and log;
    /// the planner serves the block regardless.
    fn put(
        &self,
        seg: &SegmentPlan,
        index: u32,
        data: Bytes,
    ) -> futures_util::future::BoxFuture<'static, ()>;
}

/// A store that keeps nothing (for a proxy without a cache directory, and tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoStore;

impl BlockStore for NoStore {
    fn get(
        &self,
        _seg: &SegmentPlan,
        _index: u32,
    ) -> futures_util::future::BoxFuture<'static, Option<Bytes>> {
        Box::pin(async { None })
    }

    fn has(&self, _seg: &SegmentPlan, _index: u32) -> bool {
        false
    }

    fn put(
        &self,
        _seg: &SegmentPlan,
        _index: u32,
        _data: Bytes,
    ) -> futures_util::future::BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::proto::pccrc::{segment_id, segment_secret, server_secret};

    /// A v1 SHA-256 plan for `data` placed at `offset`, with blocks of `block_size`.
    pub(crate) fn plan_for(data: &[u8], offset: u64, block_size: u32) -> SegmentPlan {
        let algo = HashAlgo::Sha256;
        let block_hashes: Vec<Digest> = data
            .chunks(block_size as usize)
            .map(|c| algo.hash(c))
            .collect();
        let mut all = Vec::new();
        for h in &block_hashes {
            all.extend_from_slice(h.as_bytes());
        }
        let hod = algo.hash(&all);
        let ks = server_secret(algo, b"test key");
        let kp = segment_secret(algo, &ks, &hod);
        SegmentPlan {
            id: segment_id(algo, &kp, &hod),
            offset,
            size: data.len() as u32,
            block_size,
            algo,
            hash_of_data: hod,
            secret: kp,
            block_hashes,
            v2: false,
        }
    }

    #[test]
    fn block_ranges_are_absolute_and_last_block_is_short() {
        let data = vec![7u8; 150_000];
        let p = plan_for(&data, 1000, 65_536);
        assert_eq!(p.block_count(), 3);
        assert_eq!(p.block_range(0), Some(1000..1000 + 65_536));
        assert_eq!(p.block_range(2), Some(1000 + 131_072..1000 + 150_000));
        assert_eq!(p.block_range(3), None);
        assert_eq!(p.listed_range(), 1000..151_000);
    }

    #[test]
    fn verify_rejects_wrong_bytes_and_wrong_length() {
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let p = plan_for(&data, 0, 65_536);
        assert!(p.verify(0, &data[..65_536]));
        assert!(p.verify(1, &data[65_536..]));
        let mut bad = data[..65_536].to_vec();
        bad[5] ^= 1;
        assert!(!p.verify(0, &bad));
        assert!(!p.verify(1, &data[65_535..]));
        assert!(!p.verify(2, &data[..1]));
    }

    #[test]
    fn debug_does_not_print_the_secret() {
        let p = plan_for(b"abc", 0, 65_536);
        let text = format!("{p:?}");
        assert!(text.contains("[redacted]"), "{text}");
        assert!(!text.contains(&hex::encode(p.secret.expose())), "{text}");
    }
}
