//! The persistent, verified block store, keyed by segment id (HoHoDk).
//!
//! Each segment has its [`SegmentMeta`] (hash algorithm, sizes, HoD, Kp,
//! block hashes) and its blocks. A block is verified against its protocol
//! hash before it is stored, and against a CRC32C recorded at ingest every
//! time it is read; a mismatch evicts the block and reports a miss.
//!
//! ## Layout
//! - a redb index (`index.redb`): segment records, block records
//!   (`crc32c`, length), lazily persisted last-access ticks;
//! - one data file per segment (`data/<hex id>.seg`), block `i` at offset
//!   `i × block_size`, written through a [`Backend`].
//!
//! ## Concurrency
//! Readers consult an in-memory map (presence + CRC per block, LRU order)
//! under a short mutex and read block bytes with positioned reads through
//! cached read handles — runs of blocks with one read into a recycled buffer
//! ([`Store::get_blocks`]). What the page cache holds is read inline on the
//! caller's thread (`preadv2(RWF_NOWAIT)`, which cannot wait on the disk);
//! only reads that need the disk go to the blocking pool. All mutations go through one writer thread that batches
//! requests: write data → fsync data files → one index commit → publish in
//! memory → reply. The index therefore never names unsynced data, and a
//! block is visible to readers only once it is durable.
//! Eviction (whole segments, least recently used first) runs on the writer
//! thread after each batch; it unpublishes segments from memory first, so
//! readers are never blocked behind it. See `docs/STORE-FORMAT.md`.

mod backend;
mod index;
mod meta;
pub mod package;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

pub use backend::{Backend, FaultOp, FaultyBackend, FsBackend, MemBackend};
pub use index::FORMAT_VERSION;
pub use meta::SegmentMeta;

use crate::bufpool::{BufPool, PooledBuf};
use crate::lru::{LruOrder, Stamp, Stamped};
use crate::metrics::StoreMetrics;
use crate::proto::pccrc::{Digest, SegmentId};

/// Depth of the writer queue: bounds memory held by pending block writes
/// (at most this many blocks of ≤ 128 KiB each).
const WRITE_QUEUE_DEPTH: usize = 256;
/// Most commands folded into one index commit: amortises fsyncs without
/// making the first writer of a batch wait long.
const MAX_BATCH: usize = 128;
/// At most one IO-error log line per this interval (errors are still counted).
const IO_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// redb page cache: the index is small (≈ 16 bytes per block), keep memory bounded.
const INDEX_CACHE_BYTES: usize = 32 * 1024 * 1024;
/// Most threads fsyncing data files of one batch in parallel.
const SYNC_THREADS: usize = 16;
/// Largest single block [`Store::get_block`] reads inline on the async
/// worker when the page cache holds it (`Backend::read_at_cached`): hits skip
/// the blocking-pool hand-off (two thread wake-ups per read). Runs
/// ([`Store::get_blocks`], at most `READ_POOL_BUFFER_BYTES`) are read inline
/// the same way; only reads that would wait for the disk go to the pool.
const INLINE_READ_MAX: usize = 64 * 1024;
/// Most bytes of small blocks kept in memory ([`HotBlocks`]).
const HOT_BYTES: usize = 8 * 1024 * 1024;
/// Largest block [`HotBlocks`] keeps: small objects, whose hits are
/// dominated by per-request costs (a read syscall and a checksum each).
/// Full v1 blocks (64 KiB) of large objects stream from the page cache.
const HOT_BLOCK_MAX: usize = 32 * 1024;
/// Block reads on the blocking pool at once, across all readers. Without a
/// bound, 64 concurrent warm downloads (each with a read in flight and one
/// ahead) grew tokio's blocking pool to ~120 threads, each with its own
/// stack and malloc arena: most of the proxy's 100 MiB anonymous RSS. A
/// few reads at once keep the disk (or page cache) busy on any machine.
const READS_IN_FLIGHT: usize = 16;
/// Read buffers kept for reuse by [`Store::get_blocks`]: enough for every
/// stream's read-ahead under heavy concurrency; more are allocated (and
/// freed) on demand.
const READ_POOL_BUFFERS: usize = 96;
/// Capacity of a pooled read buffer; larger reads get their own allocation.
pub(crate) const READ_POOL_BUFFER_BYTES: usize = 256 * 1024;
/// Wait between attempts to re-open the index after an IO error (re-open runs redb's repair).
const INDEX_REOPEN_BACKOFF: Duration = Duration::from_secs(5);
/// Name of the index file inside the store directory.
const INDEX_FILE: &str = "index.redb";
/// Name of the data directory inside the store directory.
const DATA_DIR: &str = "data";
/// Suffix of data files.
const DATA_SUFFIX: &str = ".seg";

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A data file could not be written, synced or read (disk full, EIO …).
    #[error("store IO error during {op} on {file}: {source}")]
    Io {
        /// `write`, `sync`, `read`, `open` …
        op: &'static str,
        /// The file involved.
        file: String,
        /// The IO error.
        source: io::Error,
    },
    /// The redb index failed.
    #[error("store index error: {0}")]
    Index(Box<redb::Error>),
    /// The store directory holds a format this build does not understand.
    #[error("store format version {found} is not supported (this build reads {supported})")]
    UnsupportedFormat {
        /// Version found on disk.
        found: u64,
        /// Version this build reads and writes.
        supported: u64,
    },
    /// Block bytes do not hash to the block hash from the metadata; nothing was stored.
    #[error("block {index} of segment {id}: data does not match its hash")]
    HashMismatch {
        /// The segment.
        id: SegmentId,
        /// The block.
        index: u32,
    },
    /// Block bytes have the wrong length for that block.
    #[error("block {index} of segment {id}: expected {expected} bytes, got {got}")]
    BadLength {
        /// The segment.
        id: SegmentId,
        /// The block.
        index: u32,
        /// The block's length per metadata.
        expected: u32,
        /// The length given.
        got: usize,
    },
    /// No metadata is stored for the segment (call `put_meta` first).
    #[error("segment {id} is unknown to the store")]
    UnknownSegment {
        /// The segment.
        id: SegmentId,
    },
    /// The block index is past the end of the segment.
    #[error("segment {id} has {count} blocks, block {index} does not exist")]
    BlockOutOfRange {
        /// The segment.
        id: SegmentId,
        /// The block.
        index: u32,
        /// Blocks in the segment.
        count: u32,
    },
    /// Metadata is inconsistent or does not derive the segment id.
    #[error("metadata for segment {id} rejected: {reason}")]
    InvalidMeta {
        /// The segment.
        id: SegmentId,
        /// What is wrong.
        reason: &'static str,
    },
    /// The store was closed.
    #[error("the store is closed")]
    Closed,
}

impl StoreError {
    /// Short stable label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Io { .. } => "io",
            StoreError::Index(_) => "index",
            StoreError::UnsupportedFormat { .. } => "unsupported_format",
            StoreError::HashMismatch { .. } => "hash_mismatch",
            StoreError::BadLength { .. } => "bad_length",
            StoreError::UnknownSegment { .. } => "unknown_segment",
            StoreError::BlockOutOfRange { .. } => "block_out_of_range",
            StoreError::InvalidMeta { .. } => "invalid_meta",
            StoreError::Closed => "closed",
        }
    }

    /// True when the caller handed in bad data (from a peer or origin), as
    /// opposed to a local failure of the store.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            StoreError::HashMismatch { .. }
                | StoreError::BadLength { .. }
                | StoreError::BlockOutOfRange { .. }
                | StoreError::InvalidMeta { .. }
        )
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Index(Box::new(e.into()))
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// A snapshot of the store's size and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Bytes accounted (block data plus metadata records).
    pub used_bytes: u64,
    /// The configured bound.
    pub max_bytes: u64,
    /// Segments with metadata.
    pub segments: u64,
    /// Blocks present and verified.
    pub blocks: u64,
    /// Segments evicted to stay under `max_bytes`.
    pub evictions: u64,
    /// Blocks found not matching their checksum or hash (evicted).
    pub verify_failures: u64,
    /// IO errors on data files or the index.
    pub io_errors: u64,
}

/// Progress of [`Store::verify_all`], passed to its callback after each segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyProgress {
    /// Blocks checked so far.
    pub blocks_done: u64,
    /// Blocks present when the run started.
    pub blocks_total: u64,
    /// Bytes hashed so far.
    pub bytes_done: u64,
}

/// Outcome of [`Store::verify_all`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VerifyReport {
    /// Segments visited.
    pub segments: u64,
    /// Blocks re-hashed and found good.
    pub good: u64,
    /// Blocks whose bytes did not match their hash (evicted).
    pub bad: u64,
    /// Blocks that could not be read (evicted if missing, counted as IO errors otherwise).
    pub unreadable: u64,
    /// Bytes hashed.
    pub bytes: u64,
}

/// The block store. Cheap to clone (an `Arc` inside); all clones share one store.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Cmd>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    backend: Arc<dyn Backend>,
    metrics: StoreMetrics,
    /// The bound; changed by [`Store::set_max_size`] (configuration reload).
    max_size: std::sync::atomic::AtomicU64,
    io_log: IoLog,
    /// Bounds the block reads running on the blocking pool ([`READS_IN_FLIGHT`]).
    read_permits: tokio::sync::Semaphore,
    /// Recently read small blocks.
    hot: Mutex<HotBlocks>,
}

/// Recently read small blocks (at most [`HOT_BLOCK_MAX`] bytes each,
/// [`HOT_BYTES`] in all, least recently used dropped first), as read from
/// disk and checked against their CRC: a hot small object is served with no
/// read and no checksum. An entry is used only while the in-memory state
/// still lists its block with the same generation and CRC, so evictions and
/// re-inserts need no hook here.
#[derive(Debug, Default)]
struct HotBlocks {
    map: HashMap<(SegmentId, u32), HotEntry>,
    order: LruOrder<(SegmentId, u32)>,
    bytes: usize,
}

#[derive(Debug)]
struct HotEntry {
    data: Bytes,
    generation: u64,
    crc: u32,
    stamp: Stamp,
}

impl Stamped for HotEntry {
    fn stamp_mut(&mut self) -> &mut Stamp {
        &mut self.stamp
    }
}

impl HotBlocks {
    /// The entry for `key`, marked most recently used (no tree operation:
    /// [`crate::lru`]).
    fn get(&mut self, key: &(SegmentId, u32)) -> Option<(Bytes, u64, u32)> {
        let e = self.map.get_mut(key)?;
        self.order.touch(&mut e.stamp);
        Some((e.data.clone(), e.generation, e.crc))
    }

    /// Keep a copy of `data` (exactly its size: never a slice pinning a
    /// larger read buffer).
    fn insert(&mut self, key: (SegmentId, u32), data: &[u8], generation: u64, crc: u32) {
        if data.len() > HOT_BLOCK_MAX || self.map.contains_key(&key) {
            return;
        }
        while self.bytes + data.len() > HOT_BYTES {
            let Some(victim) = self.order.pop_lru(&mut self.map) else {
                break;
            };
            if let Some(e) = self.map.remove(&victim) {
                self.bytes -= e.data.len();
            }
        }
        self.bytes += data.len();
        let stamp = self.order.insert(key);
        self.map.insert(
            key,
            HotEntry {
                data: Bytes::copy_from_slice(data),
                generation,
                crc,
                stamp,
            },
        );
    }

    fn remove(&mut self, key: &(SegmentId, u32)) {
        if let Some(e) = self.map.remove(key) {
            self.order.remove(&e.stamp);
            self.bytes -= e.data.len();
        }
    }
}

/// A segment as held in memory.
#[derive(Debug)]
struct SegEntry {
    meta: Arc<SegmentMeta>,
    /// CRC32C per block, `None` when absent.
    crcs: Vec<Option<u32>>,
    /// Bytes accounted for this segment (record + present blocks).
    bytes: u64,
    /// Place in the LRU; `used` is the access tick persisted in the index.
    stamp: Stamp,
    /// Listed in [`State::dirty_access`] (its `used` is not persisted yet).
    access_dirty: bool,
    /// Distinguishes this incarnation from a later re-insert of the same id.
    generation: u64,
}

impl Stamped for SegEntry {
    fn stamp_mut(&mut self) -> &mut Stamp {
        &mut self.stamp
    }
}

#[derive(Debug, Default)]
struct State {
    segs: HashMap<SegmentId, SegEntry>,
    /// Use order of the segments ([`crate::lru`]).
    lru: LruOrder<SegmentId>,
    next_generation: u64,
    used: u64,
    blocks: u64,
    /// Segments whose last use is not persisted yet (exactly those with
    /// [`SegEntry::access_dirty`] set).
    dirty_access: HashSet<SegmentId>,
}

impl State {
    /// Mark `id` used now: no tree operation, and no set insert when its
    /// access tick is already waiting to be persisted.
    fn touch(&mut self, id: &SegmentId) {
        if let Some(e) = self.segs.get_mut(id) {
            self.lru.touch(&mut e.stamp);
            if !e.access_dirty {
                e.access_dirty = true;
                self.dirty_access.insert(*id);
            }
        }
    }

    /// Queue the access tick of `id` for the next index commit.
    fn mark_access_dirty(&mut self, id: &SegmentId) {
        if let Some(e) = self.segs.get_mut(id) {
            if !e.access_dirty {
                e.access_dirty = true;
                self.dirty_access.insert(*id);
            }
        }
    }

    /// Take the segments whose access tick is to be persisted, with that
    /// tick (their last use).
    fn take_dirty_access(&mut self) -> Vec<(SegmentId, u64)> {
        let dirty = std::mem::take(&mut self.dirty_access);
        dirty
            .into_iter()
            .filter_map(|id| {
                let e = self.segs.get_mut(&id)?;
                e.access_dirty = false;
                Some((id, e.stamp.used))
            })
            .collect()
    }

    /// Add a segment as the most recently used one.
    fn insert_segment(&mut self, id: SegmentId, meta: Arc<SegmentMeta>) {
        let stamp = self.lru.insert(id);
        self.add_segment(id, meta, stamp);
        self.mark_access_dirty(&id);
    }

    /// Add a segment last used at `tick` (unique, caller-checked: the
    /// order loaded from the index).
    fn insert_segment_at(&mut self, id: SegmentId, meta: Arc<SegmentMeta>, tick: u64) {
        let stamp = self.lru.insert_at(id, tick);
        self.add_segment(id, meta, stamp);
    }

    fn add_segment(&mut self, id: SegmentId, meta: Arc<SegmentMeta>, stamp: Stamp) {
        let generation = self.next_generation;
        self.next_generation += 1;
        let bytes = record_bytes(&meta);
        let count = meta.block_count() as usize;
        self.used += bytes;
        self.segs.insert(
            id,
            SegEntry {
                meta,
                crcs: vec![None; count],
                bytes,
                stamp,
                access_dirty: false,
                generation,
            },
        );
    }

    fn mark_present(&mut self, id: &SegmentId, index: u32, crc: u32) {
        let Some(e) = self.segs.get_mut(id) else {
            return;
        };
        let len = u64::from(e.meta.block_len(index).unwrap_or(0));
        if let Some(slot) = e.crcs.get_mut(index as usize) {
            if slot.is_none() {
                e.bytes += len;
                self.used += len;
                self.blocks += 1;
            }
            *slot = Some(crc);
        }
    }

    /// Unpublish one block; true if it was present (in the given generation, if any).
    fn mark_absent(&mut self, id: &SegmentId, index: u32, generation: Option<u64>) -> bool {
        let Some(e) = self.segs.get_mut(id) else {
            return false;
        };
        if generation.is_some_and(|g| g != e.generation) {
            return false;
        }
        let len = u64::from(e.meta.block_len(index).unwrap_or(0));
        match e.crcs.get_mut(index as usize) {
            Some(slot @ Some(_)) => {
                *slot = None;
                e.bytes -= len;
                self.used -= len;
                self.blocks -= 1;
                true
            }
            _ => false,
        }
    }

    fn remove_segment(&mut self, id: &SegmentId) -> Option<SegEntry> {
        let e = self.segs.remove(id)?;
        self.lru.remove(&e.stamp);
        self.used -= e.bytes;
        self.blocks -= e.crcs.iter().filter(|c| c.is_some()).count() as u64;
        self.dirty_access.remove(id);
        Some(e)
    }

    fn publish(&self, m: &StoreMetrics) {
        m.used_bytes.set(clamp_i64(self.used));
        m.segments.set(clamp_i64(self.segs.len() as u64));
        m.blocks.set(clamp_i64(self.blocks));
    }
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Bytes a segment record accounts for before any block is stored.
fn record_bytes(meta: &SegmentMeta) -> u64 {
    let dlen = meta.algo.digest_len() as u64;
    16 + dlen * (2 + meta.block_hashes.len() as u64)
}

fn data_file_name(id: &SegmentId) -> String {
    format!("{}{DATA_SUFFIX}", id.to_hex())
}

/// One segment to check in `verify_all`: id, meta, file, generation, present blocks.
type VerifyItem = (SegmentId, Arc<SegmentMeta>, String, u64, Vec<u32>);

/// Rate-limited logging of IO errors.
#[derive(Debug)]
struct IoLog {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl IoLog {
    fn new() -> Self {
        IoLog {
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Count `err`; log it unless another error was logged within [`IO_LOG_INTERVAL`].
    /// Returns whether it was logged.
    fn report(&self, metrics: &StoreMetrics, err: &StoreError) -> bool {
        metrics.io_errors.inc();
        let now = Instant::now();
        let mut last = lock(&self.last);
        if last.is_some_and(|t| now.duration_since(t) < IO_LOG_INTERVAL) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        *last = Some(now);
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        tracing::error!(error = %err, suppressed, "store IO error; serving continues without the store for affected blocks");
        true
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

type Reply = oneshot::Sender<Result<(), StoreError>>;

enum Cmd {
    PutMeta {
        id: SegmentId,
        meta: Arc<SegmentMeta>,
        reply: Reply,
    },
    PutBlock {
        id: SegmentId,
        index: u32,
        data: Bytes,
        crc: u32,
        reply: Reply,
    },
    /// Delete a block record that failed verification (already unpublished).
    DropBlock {
        id: SegmentId,
        index: u32,
    },
    Flush {
        reply: Reply,
    },
    Close {
        reply: Reply,
    },
}

/// Opens (or re-opens, after an index IO error) the index database.
pub type IndexOpener = Box<dyn Fn() -> Result<redb::Database, StoreError> + Send>;

impl Store {
    /// Open (or create) the store in directory `path` (mode 0700), bounded to `max_size` bytes.
    pub async fn open(path: &Path, max_size: u64) -> Result<Store, StoreError> {
        let dir = path.to_path_buf();
        let backend = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || data_backend(&dir))
                .await
                .map_err(|e| io_err("open", path, io::Error::other(e)))??
        };
        let index = dir.join(INDEX_FILE);
        Self::open_with(Some(file_opener(index)), backend, max_size).await
    }

    /// A store whose index and data live in memory (tests; nothing survives a restart).
    pub fn open_in_memory(max_size: u64) -> Store {
        Self::start_sync(None, Arc::new(MemBackend::new()), max_size)
            .expect("in-memory redb and an empty MemBackend cannot fail to open")
    }

    /// A store with an in-memory index and data files on `backend` (tests with fault injection).
    pub async fn open_with_backend(
        backend: Arc<dyn Backend>,
        max_size: u64,
    ) -> Result<Store, StoreError> {
        Self::open_with(None, backend, max_size).await
    }

    /// A store with data files on `backend` and the index from `index`
    /// (`None`: in memory). The opener is called again to re-open the index
    /// after an index IO error (redb refuses further writes until then).
    pub async fn open_with(
        index: Option<IndexOpener>,
        backend: Arc<dyn Backend>,
        max_size: u64,
    ) -> Result<Store, StoreError> {
        tokio::task::spawn_blocking(move || Self::start_sync(index, backend, max_size))
            .await
            .map_err(|e| io_err("open", Path::new("store"), io::Error::other(e)))?
    }

    /// Load the index into memory, remove orphaned data files, start the writer thread.
    fn start_sync(
        opener: Option<IndexOpener>,
        backend: Arc<dyn Backend>,
        max_size: u64,
    ) -> Result<Store, StoreError> {
        let db = match &opener {
            Some(open) => open()?,
            None => memory_index()?,
        };
        let loaded = index::init_and_load(&db)?;
        let metrics = StoreMetrics::default();
        metrics.max_bytes.set(clamp_i64(max_size));
        let mut state = State::default();
        let mut segments = loaded.segments;
        // Stored ticks give the LRU order. A crash can leave ticks unpersisted
        // (read as 0) or equal; ties are broken by key and ticks made unique.
        segments.sort_by_key(|s| (s.tick, s.id));
        let mut prev: Option<u64> = None;
        for seg in segments {
            let id = seg.id;
            let tick = match prev {
                Some(p) if seg.tick <= p => p + 1,
                _ => seg.tick,
            };
            prev = Some(tick);
            state.insert_segment_at(id, Arc::new(seg.meta), tick);
            if tick != seg.tick {
                state.mark_access_dirty(&id);
            }
            for (index, crc) in seg.blocks {
                state.mark_present(&id, index, crc);
            }
        }
        // A data file without a segment record is left over from an eviction
        // or a write interrupted by a crash: nothing can reference it.
        let files = backend
            .list()
            .map_err(|e| io_err("list", Path::new(DATA_DIR), e))?;
        let known: HashSet<String> = state.segs.keys().map(data_file_name).collect();
        let orphans: Vec<String> = files
            .into_iter()
            .filter(|f| !known.contains(f.as_str()))
            .collect();
        for f in &orphans {
            if let Err(e) = backend.remove(f) {
                tracing::warn!(file = %f, error = %e, "cannot remove orphaned store file");
            }
        }
        state.publish(&metrics);
        tracing::info!(
            segments = state.segs.len(),
            blocks = state.blocks,
            used_bytes = state.used,
            orphans_removed = orphans.len(),
            "store opened"
        );
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            backend,
            metrics,
            max_size: std::sync::atomic::AtomicU64::new(max_size),
            io_log: IoLog::new(),
            read_permits: tokio::sync::Semaphore::new(READS_IN_FLIGHT),
            hot: Mutex::new(HotBlocks::default()),
        });
        let (tx, rx) = mpsc::channel(WRITE_QUEUE_DEPTH);
        let writer = Writer {
            db: Some(db),
            opener,
            next_reopen: Instant::now(),
            closed: false,
            shared: shared.clone(),
        };
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| io_err("spawn", Path::new("store-writer"), e))?;
        Ok(Store { shared, tx })
    }

    /// The store's metric handles (register them with `Metrics::register_store`).
    pub fn metrics(&self) -> &StoreMetrics {
        &self.shared.metrics
    }

    /// Store `meta` for `id`. Idempotent. Rejects metadata whose id does not
    /// derive from (HoD, Kp) or whose v1 block hashes do not hash to HoD.
    /// Cheap when the same metadata is already stored (no re-validation), so
    /// callers may call it before every `put_block`.
    pub async fn put_meta(&self, id: SegmentId, meta: SegmentMeta) -> Result<(), StoreError> {
        if self.meta_arc(&id).is_some_and(|m| *m == meta) {
            return Ok(());
        }
        let meta = tokio::task::spawn_blocking(move || {
            meta.validate(&id)
                .map(|()| meta)
                .map_err(|reason| StoreError::InvalidMeta { id, reason })
        })
        .await
        .map_err(|_| StoreError::Closed)??;
        if lock(&self.shared.state).segs.contains_key(&id) {
            return Ok(());
        }
        self.request(|reply| Cmd::PutMeta {
            id,
            meta: Arc::new(meta),
            reply,
        })
        .await
    }

    /// The segment's metadata, if stored.
    pub async fn meta(&self, id: &SegmentId) -> Option<SegmentMeta> {
        self.meta_arc(id).map(|m| (*m).clone())
    }

    /// The segment's metadata without copying it.
    pub fn meta_arc(&self, id: &SegmentId) -> Option<Arc<SegmentMeta>> {
        lock(&self.shared.state)
            .segs
            .get(id)
            .map(|e| e.meta.clone())
    }

    /// Verify `data` against block `index`'s hash and store it durably.
    /// `Err(HashMismatch)` never stores anything (also returned when the block
    /// is already present). Storing a present block again is a no-op.
    pub async fn put_block(
        &self,
        id: &SegmentId,
        index: u32,
        data: Bytes,
    ) -> Result<(), StoreError> {
        let (meta, present, expected) = self.block_slot(id, index, &data)?;
        let id = *id;
        let checked = data.clone();
        let crc = tokio::task::spawn_blocking(move || {
            (meta.algo.hash(&checked) == expected).then(|| crc32c::crc32c(&checked))
        })
        .await
        .map_err(|_| StoreError::Closed)?
        .ok_or(StoreError::HashMismatch { id, index })?;
        // Verified first even when present, so a caller always learns bad data is bad.
        if present {
            return Ok(());
        }
        self.request(|reply| Cmd::PutBlock {
            id,
            index,
            data,
            crc,
            reply,
        })
        .await
    }

    /// Store block `index`, whose bytes the caller has just hashed and found
    /// equal to `checked_hash`, without hashing them again (a peer or origin
    /// block the fetch planner verified: a second SHA-256 pass cost as much
    /// CPU as the AES decryption and the HTTP exchange together).
    ///
    /// The store still refuses the block unless `checked_hash` is the hash
    /// its own metadata lists for that block (`Err(HashMismatch)`, nothing
    /// stored), and unless the length is right; it computes the CRC32C that
    /// every later read is checked against. Use [`put_block`](Self::put_block)
    /// for bytes nobody has verified.
    pub async fn put_verified_block(
        &self,
        id: &SegmentId,
        index: u32,
        data: Bytes,
        checked_hash: &Digest,
    ) -> Result<(), StoreError> {
        let (_, present, expected) = self.block_slot(id, index, &data)?;
        let id = *id;
        if expected != *checked_hash {
            return Err(StoreError::HashMismatch { id, index });
        }
        if present {
            return Ok(());
        }
        // ~3 µs for 64 KiB with SSE4.2: cheaper than a hop to the blocking pool.
        let crc = crc32c::crc32c(&data);
        self.request(|reply| Cmd::PutBlock {
            id,
            index,
            data,
            crc,
            reply,
        })
        .await
    }

    /// For a put of `data` as block `index` of `id`: the segment's metadata,
    /// whether the block is already present, and the block's hash; or why
    /// the block cannot be stored (unknown segment, index or length wrong).
    fn block_slot(
        &self,
        id: &SegmentId,
        index: u32,
        data: &[u8],
    ) -> Result<(Arc<SegmentMeta>, bool, Digest), StoreError> {
        let id = *id;
        let (meta, present) = {
            let st = lock(&self.shared.state);
            let e = st.segs.get(&id).ok_or(StoreError::UnknownSegment { id })?;
            let present = e.crcs.get(index as usize).is_some_and(|c| c.is_some());
            (e.meta.clone(), present)
        };
        let out_of_range = || StoreError::BlockOutOfRange {
            id,
            index,
            count: meta.block_count(),
        };
        let expected_len = meta.block_len(index).ok_or_else(out_of_range)?;
        if data.len() != expected_len as usize {
            return Err(StoreError::BadLength {
                id,
                index,
                expected: expected_len,
                got: data.len(),
            });
        }
        let expected = meta.block_hash(index).ok_or_else(out_of_range)?;
        Ok((meta, present, expected))
    }

    /// Read block `index` of segment `id`. `Ok(None)` when absent, or when its
    /// bytes no longer match the checksum recorded at ingest (then it is
    /// evicted and counted as a verification failure). `Err` only for IO errors.
    pub async fn get_block(&self, id: &SegmentId, index: u32) -> Result<Option<Bytes>, StoreError> {
        let id = *id;
        if let Some(data) = self.hot_block(&id, index) {
            return Ok(Some(data));
        }
        let loc = {
            let mut st = lock(&self.shared.state);
            let loc = st.segs.get(&id).and_then(|e| {
                let crc = (*e.crcs.get(index as usize)?)?;
                Some((
                    data_file_name(&id),
                    e.meta.block_offset(index),
                    e.meta.block_len(index)?,
                    crc,
                    e.generation,
                ))
            });
            if loc.is_some() {
                st.touch(&id);
            }
            loc
        };
        let Some((file, offset, len, crc, generation)) = loc else {
            self.shared.metrics.misses.inc();
            return Ok(None);
        };
        let backend = self.shared.backend.clone();
        let mut inline = None;
        if len as usize <= INLINE_READ_MAX {
            // Recycled: no zero-filling and no fresh pages per block read.
            let mut buf = read_pool().take(len as usize);
            match backend.read_at_cached(&file, offset, &mut buf) {
                Ok(true) => inline = Some(Ok((crc32c::crc32c(&buf) == crc, buf))),
                Ok(false) => {}
                Err(e) => inline = Some(Err(e)),
            }
        }
        let res = match inline {
            Some(res) => res,
            None => {
                let read_file = file.clone();
                let _permit = self.shared.read_permits.acquire().await;
                tokio::task::spawn_blocking(move || {
                    let mut buf = read_pool().take(len as usize);
                    backend
                        .read_at(&read_file, offset, &mut buf)
                        .map(|()| (crc32c::crc32c(&buf) == crc, buf))
                })
                .await
                .map_err(|_| StoreError::Closed)?
            }
        };
        match res {
            Ok((true, buf)) => {
                self.shared.metrics.hits.inc();
                lock(&self.shared.hot).insert((id, index), &buf, generation, crc);
                Ok(Some(Bytes::from_owner(buf)))
            }
            Ok((false, _)) => {
                self.evict_bad_block(id, index, generation, "checksum mismatch on read");
                Ok(None)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::UnexpectedEof
                ) =>
            {
                self.evict_bad_block(id, index, generation, "block data missing on read");
                Ok(None)
            }
            Err(e) => {
                let err = StoreError::Io {
                    op: "read",
                    file: file.to_string(),
                    source: e,
                };
                self.shared.io_log.report(&self.shared.metrics, &err);
                self.shared.metrics.misses.inc();
                Err(err)
            }
        }
    }

    /// Where the run of up to `max` consecutive present blocks of `id` from
    /// `first` lies (touching the segment's LRU tick); `None` when `first`
    /// is absent.
    fn locate_run(&self, id: &SegmentId, first: u32, max: u32) -> Option<RunLoc> {
        let mut st = lock(&self.shared.state);
        let loc = st.segs.get(id).and_then(|e| {
            let mut blocks: Vec<(u32, u32)> = Vec::new();
            let offset = e.meta.block_offset(first);
            let mut next = offset;
            for i in first..first.saturating_add(max) {
                let Some(Some(crc)) = e.crcs.get(i as usize).copied() else {
                    break;
                };
                let Some(len) = e.meta.block_len(i) else {
                    break;
                };
                if e.meta.block_offset(i) != next {
                    break;
                }
                next += u64::from(len);
                blocks.push((crc, len));
            }
            (!blocks.is_empty()).then(|| RunLoc {
                file: data_file_name(id),
                offset,
                blocks,
                generation: e.generation,
            })
        });
        if loc.is_some() {
            st.touch(id);
        }
        loc
    }

    /// Read up to `max` consecutive present blocks of `id` from `first` with
    /// one positioned read, each checked against its ingest CRC32C. Returns
    /// the verified prefix (empty when `first` is absent); a block failing its
    /// check ends the prefix and is evicted as in [`get_block`](Self::get_block).
    /// The blocks are slices of one buffer from a small recycled pool, which
    /// gets it back when the last slice is dropped. A run the page cache
    /// holds is read on the calling thread (no blocking-pool hand-off).
    pub async fn get_blocks(
        &self,
        id: &SegmentId,
        first: u32,
        max: u32,
    ) -> Result<Vec<Bytes>, StoreError> {
        let id = *id;
        if let Some(data) = self.hot_block(&id, first) {
            return Ok(vec![data]);
        }
        let Some(run) = self.locate_run(&id, first, max) else {
            self.shared.metrics.misses.inc();
            return Ok(Vec::new());
        };
        if run.blocks.len() == 1 {
            return Ok(self.get_block(&id, first).await?.into_iter().collect());
        }
        let mut buf = read_pool().take(run.total());
        let res = match self
            .shared
            .backend
            .read_at_cached(&run.file, run.offset, &mut buf)
        {
            Ok(true) => Ok(run.check(buf)),
            Ok(false) => {
                let backend = self.shared.backend.clone();
                let (file, offset, checks) = (run.file.clone(), run.offset, run.blocks.clone());
                let _permit = self.shared.read_permits.acquire().await;
                tokio::task::spawn_blocking(move || {
                    backend.read_at(&file, offset, &mut buf)?;
                    Ok::<_, io::Error>(RunLoc::check_with(&checks, buf))
                })
                .await
                .map_err(|_| StoreError::Closed)?
            }
            Err(e) => Err(e),
        };
        match res {
            Ok(checked) => Ok(self.finish_run(id, first, &run, checked)),
            // A short or missing file, or an IO error: let the one-block read
            // sort out which block is at fault (it evicts and counts).
            Err(_) => Ok(self.get_block(&id, first).await?.into_iter().collect()),
        }
    }

    /// [`get_blocks`](Self::get_blocks) without waiting: `Some` when the run
    /// was read from the page cache on the calling thread (possibly empty:
    /// `first` absent or failing its check), `None` when reading it needs
    /// disk IO (or ran into an error the async read sorts out).
    pub fn get_blocks_cached(&self, id: &SegmentId, first: u32, max: u32) -> Option<Vec<Bytes>> {
        if let Some(data) = self.hot_block(id, first) {
            return Some(vec![data]);
        }
        let Some(run) = self.locate_run(id, first, max) else {
            self.shared.metrics.misses.inc();
            return Some(Vec::new());
        };
        let mut buf = read_pool().take(run.total());
        match self
            .shared
            .backend
            .read_at_cached(&run.file, run.offset, &mut buf)
        {
            Ok(true) => Some(self.finish_run(*id, first, &run, run.check(buf))),
            Ok(false) | Err(_) => None,
        }
    }

    /// Slice a checked run into blocks, count hits, evict a block that failed.
    fn finish_run(
        &self,
        id: SegmentId,
        first: u32,
        run: &RunLoc,
        (buf, good): (PooledBuf, usize),
    ) -> Vec<Bytes> {
        let data = Bytes::from_owner(buf);
        let mut out = Vec::with_capacity(good);
        let mut at = 0usize;
        for (i, &(crc, len)) in run.blocks.iter().take(good).enumerate() {
            let block = data.slice(at..at + len as usize);
            if block.len() <= HOT_BLOCK_MAX {
                lock(&self.shared.hot).insert((id, first + i as u32), &block, run.generation, crc);
            }
            out.push(block);
            at += len as usize;
        }
        self.shared.metrics.hits.inc_by(good as u64);
        if good < run.blocks.len() {
            let bad = first + good as u32;
            self.evict_bad_block(id, bad, run.generation, "checksum mismatch on read");
        }
        out
    }

    /// Block `index` of `id` from [`HotBlocks`] if it is there and the
    /// store still lists it unchanged (then it counts as a hit and touches
    /// the segment, as a read would).
    fn hot_block(&self, id: &SegmentId, index: u32) -> Option<Bytes> {
        let key = (*id, index);
        let (data, generation, crc) = lock(&self.shared.hot).get(&key)?;
        let mut st = lock(&self.shared.state);
        let current = st.segs.get(id).is_some_and(|e| {
            e.generation == generation && e.crcs.get(index as usize).copied().flatten() == Some(crc)
        });
        if current {
            st.touch(id);
            drop(st);
            self.shared.metrics.hits.inc();
            Some(data)
        } else {
            drop(st);
            lock(&self.shared.hot).remove(&key);
            None
        }
    }

    /// Unpublish a block that failed a check, count it, and delete its index record.
    fn evict_bad_block(&self, id: SegmentId, index: u32, generation: u64, why: &'static str) {
        self.shared.metrics.misses.inc();
        let was_present = {
            let mut st = lock(&self.shared.state);
            let p = st.mark_absent(&id, index, Some(generation));
            st.publish(&self.shared.metrics);
            p
        };
        // Not present (any more) in this generation: an eviction or another
        // reader got there first; nothing to count.
        if !was_present {
            return;
        }
        self.shared.metrics.verify_failures.inc();
        tracing::warn!(segment = %id, block = index, reason = why, "evicted corrupt block; it will be fetched again");
        // Best effort: if the queue is full the stale record stays; it cannot be
        // served wrong (its CRC still mismatches) and is retried on the next read after restart.
        let _ = self.tx.try_send(Cmd::DropBlock { id, index });
    }

    /// Is block `index` of `id` present (in-memory, no IO)?
    pub fn has_block(&self, id: &SegmentId, index: u32) -> bool {
        lock(&self.shared.state)
            .segs
            .get(id)
            .and_then(|e| e.crcs.get(index as usize))
            .is_some_and(|c| c.is_some())
    }

    /// Indices of the present blocks of `id`, ascending (empty if unknown).
    pub fn present_blocks(&self, id: &SegmentId) -> Vec<u32> {
        lock(&self.shared.state)
            .segs
            .get(id)
            .map(|e| {
                e.crcs
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.is_some())
                    .map(|(i, _)| i as u32)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `(present, total)` block counts of `id`, or `None` if unknown (in-memory,
    /// no IO, no allocation: cheap enough to answer discovery Probes with).
    pub fn block_presence(&self, id: &SegmentId) -> Option<(u32, u32)> {
        lock(&self.shared.state).segs.get(id).map(|e| {
            let present = e.crcs.iter().filter(|c| c.is_some()).count();
            (
                u32::try_from(present).unwrap_or(u32::MAX),
                e.meta.block_count(),
            )
        })
    }

    /// Ids of every segment with metadata, most recently used first (no IO).
    pub fn segment_ids(&self) -> Vec<SegmentId> {
        let st = lock(&self.shared.state);
        let mut by_use: Vec<(u64, SegmentId)> =
            st.segs.iter().map(|(id, e)| (e.stamp.used, *id)).collect();
        drop(st);
        by_use.sort_unstable_by_key(|&(used, _)| std::cmp::Reverse(used));
        by_use.into_iter().map(|(_, id)| id).collect()
    }

    /// Panic if the in-memory bookkeeping is inconsistent (tests).
    #[cfg(test)]
    pub(crate) fn assert_consistent(&self) {
        let st = lock(&self.shared.state);
        assert_eq!(st.lru.len(), st.segs.len(), "one LRU node per segment");
        for (pos, id) in st.lru.nodes() {
            let stamp = st.segs.get(id).map(|e| e.stamp);
            assert!(
                stamp.is_some_and(|s| s.pos == pos && s.pos <= s.used),
                "LRU node at {pos} of {id:?}: {stamp:?}"
            );
        }
        let dirty: HashSet<SegmentId> = st
            .segs
            .iter()
            .filter(|(_, e)| e.access_dirty)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(dirty, st.dirty_access, "access_dirty flags match the set");
        let used: u64 = st.segs.values().map(|e| e.bytes).sum();
        assert_eq!(used, st.used);
        let blocks: usize = st
            .segs
            .values()
            .map(|e| e.crcs.iter().filter(|c| c.is_some()).count())
            .sum();
        assert_eq!(blocks as u64, st.blocks);
    }

    /// Size and counters.
    pub fn stats(&self) -> StoreStats {
        let (used, segments, blocks) = {
            let st = lock(&self.shared.state);
            (st.used, st.segs.len() as u64, st.blocks)
        };
        let m = &self.shared.metrics;
        StoreStats {
            used_bytes: used,
            max_bytes: self
                .shared
                .max_size
                .load(std::sync::atomic::Ordering::Relaxed),
            segments,
            blocks,
            evictions: m.evictions.get(),
            verify_failures: m.verify_failures.get(),
            io_errors: m.io_errors.get(),
        }
    }

    /// Re-hash every present block with its protocol hash; evict the bad ones.
    /// `progress` is called after each segment.
    pub async fn verify_all<F>(&self, progress: F) -> VerifyReport
    where
        F: FnMut(VerifyProgress) + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.verify_all_blocking(progress))
            .await
            .unwrap_or_default()
    }

    fn verify_all_blocking<F: FnMut(VerifyProgress)>(&self, mut progress: F) -> VerifyReport {
        let snapshot: Vec<VerifyItem> = {
            let st = lock(&self.shared.state);
            st.segs
                .iter()
                .map(|(id, e)| {
                    let present = e
                        .crcs
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| c.is_some())
                        .map(|(i, _)| i as u32)
                        .collect();
                    (
                        *id,
                        e.meta.clone(),
                        data_file_name(id),
                        e.generation,
                        present,
                    )
                })
                .collect()
        };
        let total: u64 = snapshot.iter().map(|s| s.4.len() as u64).sum();
        let mut report = VerifyReport::default();
        let mut done = 0u64;
        for (id, meta, file, generation, blocks) in snapshot {
            report.segments += 1;
            for index in blocks {
                done += 1;
                let (Some(len), Some(hash)) = (meta.block_len(index), meta.block_hash(index))
                else {
                    continue;
                };
                let mut buf = vec![0u8; len as usize];
                match self
                    .shared
                    .backend
                    .read_at(&file, meta.block_offset(index), &mut buf)
                {
                    Ok(()) => {
                        report.bytes += u64::from(len);
                        if meta.algo.hash(&buf) == hash {
                            report.good += 1;
                        } else {
                            report.bad += 1;
                            self.evict_bad_block(id, index, generation, "hash mismatch in verify");
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::NotFound | io::ErrorKind::UnexpectedEof
                        ) =>
                    {
                        report.unreadable += 1;
                        self.evict_bad_block(id, index, generation, "block data missing in verify");
                    }
                    Err(e) => {
                        report.unreadable += 1;
                        let err = io_err("read", Path::new(&*file), e);
                        self.shared.io_log.report(&self.shared.metrics, &err);
                    }
                }
            }
            progress(VerifyProgress {
                blocks_done: done,
                blocks_total: total,
                bytes_done: report.bytes,
            });
        }
        report
    }

    /// Persist lazily kept state (LRU order) and wait for queued writes.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.request(|reply| Cmd::Flush { reply }).await
    }

    /// Change the size bound (configuration reload). A lower bound evicts
    /// least recently used segments before this returns; readers are not
    /// blocked for the deletion (see eviction).
    pub async fn set_max_size(&self, max_size: u64) -> Result<(), StoreError> {
        self.shared
            .max_size
            .store(max_size, std::sync::atomic::Ordering::Relaxed);
        self.shared.metrics.max_bytes.set(clamp_i64(max_size));
        // The writer evicts to fit after every batch, this flush included.
        self.flush().await
    }

    /// Flush, then stop the writer and release the index (another `open` may follow).
    /// Later mutations fail with [`StoreError::Closed`]; reads of present blocks still work.
    pub async fn close(&self) -> Result<(), StoreError> {
        self.request(|reply| Cmd::Close { reply }).await
    }

    async fn request(&self, cmd: impl FnOnce(Reply) -> Cmd) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(cmd(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

fn io_err(op: &'static str, path: &Path, source: io::Error) -> StoreError {
    StoreError::Io {
        op,
        file: path.display().to_string(),
        source,
    }
}

fn memory_index() -> Result<redb::Database, StoreError> {
    let mut b = redb::Database::builder();
    b.set_cache_size(INDEX_CACHE_BYTES);
    Ok(b.create_with_backend(redb::backends::InMemoryBackend::new())?)
}

/// Opener for an index file; creates it with mode 0600 first (it holds segment secrets).
fn file_opener(path: PathBuf) -> IndexOpener {
    Box::new(move || {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_err("create", &path, e))?;
        let mut b = redb::Database::builder();
        b.set_cache_size(INDEX_CACHE_BYTES);
        Ok(b.create(&path)?)
    })
}

fn data_backend(dir: &Path) -> Result<Arc<dyn Backend>, StoreError> {
    backend::create_private_dir(dir).map_err(|e| io_err("create", dir, e))?;
    let data: PathBuf = dir.join(DATA_DIR);
    let backend = FsBackend::new(&data).map_err(|e| io_err("create", &data, e))?;
    Ok(Arc::new(backend))
}

/// One run of present, contiguous blocks in a segment's data file.
struct RunLoc {
    file: String,
    offset: u64,
    /// `(crc32c, len)` of each block, in order.
    blocks: Vec<(u32, u32)>,
    generation: u64,
}

impl RunLoc {
    fn total(&self) -> usize {
        self.blocks.iter().map(|&(_, len)| len as usize).sum()
    }

    /// The buffer and how many leading blocks match their checksums.
    fn check(&self, buf: PooledBuf) -> (PooledBuf, usize) {
        Self::check_with(&self.blocks, buf)
    }

    fn check_with(blocks: &[(u32, u32)], buf: PooledBuf) -> (PooledBuf, usize) {
        let mut at = 0usize;
        let good = blocks
            .iter()
            .take_while(|&&(crc, len)| {
                let ok = buf
                    .get(at..at + len as usize)
                    .is_some_and(|b| crc32c::crc32c(b) == crc);
                at += len as usize;
                ok
            })
            .count();
        (buf, good)
    }
}

/// The store's read buffers, for [`Store::get_blocks`] and
/// [`Store::get_block`]. A run of blocks (or one block) is read into one
/// buffer, handed out as `Bytes` slices (written to sockets without
/// copying), and recycled when the last slice is dropped. Recycling keeps
/// the warm hit path from churning large allocations through the allocator
/// (fresh pages fault in zeroed; glibc's per-thread arenas on the blocking
/// pool let the RSS of 64 concurrent downloads creep up).
fn read_pool() -> &'static Arc<BufPool> {
    static POOL: LazyLock<Arc<BufPool>> =
        LazyLock::new(|| BufPool::new(READ_POOL_BUFFER_BYTES, READ_POOL_BUFFERS));
    &POOL
}

/// The single writer: owns the index database.
struct Writer {
    /// `None` after close, or after an index IO error until re-opened.
    db: Option<redb::Database>,
    /// How to re-open the index; `None` for an in-memory index.
    opener: Option<IndexOpener>,
    /// Earliest time for the next re-open attempt.
    next_reopen: Instant,
    closed: bool,
    shared: Arc<Shared>,
}

/// A block write that reached the commit stage.
struct PendingBlock {
    id: SegmentId,
    index: u32,
    crc: u32,
    len: u32,
    reply: Reply,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        // Enforce the bound once at start (max_size may have been lowered).
        self.evict_to_fit();
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            if self.process(batch) {
                break;
            }
        }
        self.persist_access();
        // Dropping the database here releases the index file for the next open.
        self.db = None;
    }

    /// Handle one batch; true when asked to close.
    fn process(&mut self, batch: Vec<Cmd>) -> bool {
        let mut metas: Vec<(SegmentId, Arc<SegmentMeta>, Reply)> = Vec::new();
        let mut blocks: Vec<PendingBlock> = Vec::new();
        let mut drops: Vec<(SegmentId, u32)> = Vec::new();
        let mut flushes: Vec<Reply> = Vec::new();
        let mut close: Option<Reply> = None;
        let mut new_metas: HashMap<SegmentId, Arc<SegmentMeta>> = HashMap::new();
        let mut dup_metas: Vec<Reply> = Vec::new();
        let mut touched_files: Vec<Arc<str>> = Vec::new();

        for cmd in batch {
            match cmd {
                Cmd::PutMeta { id, meta, reply } => {
                    if lock(&self.shared.state).segs.contains_key(&id) {
                        let _ = reply.send(Ok(()));
                        continue;
                    }
                    match new_metas.entry(id) {
                        // Same segment earlier in this batch: answer only once
                        // it is committed and published, or a put_block right
                        // after this reply would find no segment.
                        std::collections::hash_map::Entry::Occupied(_) => dup_metas.push(reply),
                        std::collections::hash_map::Entry::Vacant(v) => {
                            v.insert(meta.clone());
                            metas.push((id, meta, reply));
                        }
                    }
                }
                Cmd::PutBlock {
                    id,
                    index,
                    data,
                    crc,
                    reply,
                } => {
                    let (meta, present) = {
                        let st = lock(&self.shared.state);
                        match st.segs.get(&id) {
                            Some(e) => (
                                Some(e.meta.clone()),
                                e.crcs.get(index as usize).is_some_and(|c| c.is_some()),
                            ),
                            None => (new_metas.get(&id).cloned(), false),
                        }
                    };
                    let Some(meta) = meta else {
                        let _ = reply.send(Err(StoreError::UnknownSegment { id }));
                        continue;
                    };
                    if present || blocks.iter().any(|b| b.id == id && b.index == index) {
                        let _ = reply.send(Ok(()));
                        continue;
                    }
                    let file: Arc<str> = data_file_name(&id).into();
                    match self
                        .shared
                        .backend
                        .write_at(&file, meta.block_offset(index), &data)
                    {
                        Ok(()) => {
                            if !touched_files.contains(&file) {
                                touched_files.push(file);
                            }
                            blocks.push(PendingBlock {
                                id,
                                index,
                                crc,
                                len: data.len() as u32,
                                reply,
                            });
                        }
                        Err(e) => {
                            let err = io_err("write", Path::new(&*file), e);
                            self.shared.io_log.report(&self.shared.metrics, &err);
                            let _ = reply.send(Err(err));
                        }
                    }
                }
                Cmd::DropBlock { id, index } => drops.push((id, index)),
                Cmd::Flush { reply } => flushes.push(reply),
                Cmd::Close { reply } => {
                    close = Some(reply);
                    break;
                }
            }
        }

        // Data must be durable before the index may point at it.
        let synced = sync_files(&*self.shared.backend, &touched_files);
        for (file, result) in touched_files.iter().zip(synced) {
            if let Err(e) = result {
                let err = io_err("sync", Path::new(&**file), e);
                self.shared.io_log.report(&self.shared.metrics, &err);
                let (failed, kept): (Vec<_>, Vec<_>) = blocks
                    .into_iter()
                    .partition(|b| *data_file_name(&b.id) == **file);
                blocks = kept;
                for b in failed {
                    let _ = b.reply.send(Err(StoreError::Io {
                        op: "sync",
                        file: file.to_string(),
                        source: io::Error::new(err_kind(&err), err.to_string()),
                    }));
                }
            }
        }

        // LRU ticks ride along with every commit (a few bytes per touched segment).
        let access = self.take_dirty_access();
        let needs_commit =
            !metas.is_empty() || !blocks.is_empty() || !drops.is_empty() || !access.is_empty();
        let committed = if needs_commit {
            self.commit(&metas, &blocks, &drops, &access)
        } else {
            Ok(())
        };
        let mut replies: Vec<(Reply, Result<(), StoreError>)> = Vec::new();
        match committed {
            Ok(()) => {
                {
                    let mut st = lock(&self.shared.state);
                    for (id, meta, _) in &metas {
                        st.insert_segment(*id, meta.clone());
                    }
                    for b in &blocks {
                        st.mark_present(&b.id, b.index, b.crc);
                        // A segment being filled is in use: keep it away from eviction.
                        st.touch(&b.id);
                    }
                    st.publish(&self.shared.metrics);
                }
                self.shared
                    .metrics
                    .blocks_written
                    .inc_by(blocks.len() as u64);
                replies.extend(metas.into_iter().map(|(_, _, r)| (r, Ok(()))));
                replies.extend(dup_metas.into_iter().map(|r| (r, Ok(()))));
                replies.extend(blocks.into_iter().map(|b| (b.reply, Ok(()))));
            }
            Err(e) => {
                self.shared.io_log.report(&self.shared.metrics, &e);
                let mut st = lock(&self.shared.state);
                for (id, _) in &access {
                    st.mark_access_dirty(id);
                }
                drop(st);
                let msg = e.to_string();
                replies.extend(
                    metas
                        .into_iter()
                        .map(|(_, _, r)| (r, Err(index_failure(&msg)))),
                );
                replies.extend(dup_metas.into_iter().map(|r| (r, Err(index_failure(&msg)))));
                replies.extend(
                    blocks
                        .into_iter()
                        .map(|b| (b.reply, Err(index_failure(&msg)))),
                );
            }
        }
        // Evict before replying: when a put returns, the store is within its bound.
        self.evict_to_fit();
        for (reply, result) in replies {
            let _ = reply.send(result);
        }
        for reply in flushes {
            let _ = reply.send(Ok(()));
        }
        if let Some(reply) = close {
            self.closed = true;
            self.db = None;
            let _ = reply.send(Ok(()));
            return true;
        }
        false
    }

    fn take_dirty_access(&self) -> Vec<(SegmentId, u64)> {
        lock(&self.shared.state).take_dirty_access()
    }

    fn persist_access(&mut self) {
        if self.closed {
            return;
        }
        let access = self.take_dirty_access();
        if access.is_empty() {
            return;
        }
        if let Err(e) = self.commit(&[], &[], &[], &access) {
            self.shared.io_log.report(&self.shared.metrics, &e);
        }
    }

    /// The index, re-opening it (at most once per [`INDEX_REOPEN_BACKOFF`]) after an IO error.
    fn db(&mut self) -> Result<&redb::Database, StoreError> {
        if self.db.is_none() && !self.closed {
            if let Some(open) = &self.opener {
                let now = Instant::now();
                if now >= self.next_reopen {
                    self.next_reopen = now + INDEX_REOPEN_BACKOFF;
                    self.db = Some(open()?);
                    tracing::info!("store index re-opened after an IO error");
                }
            }
        }
        match &self.db {
            Some(db) => Ok(db),
            None if self.closed => Err(StoreError::Closed),
            None => Err(index_failure("index unavailable after an IO error")),
        }
    }

    /// After an index error redb refuses writes until re-opened: drop it so
    /// the next batch re-opens it (only possible for a file index).
    fn index_failed<T>(&mut self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if matches!(r, Err(StoreError::Index(_))) && self.opener.is_some() {
            self.db = None;
            self.next_reopen = Instant::now();
        }
        r
    }

    fn commit(
        &mut self,
        metas: &[(SegmentId, Arc<SegmentMeta>, Reply)],
        blocks: &[PendingBlock],
        drops: &[(SegmentId, u32)],
        access: &[(SegmentId, u64)],
    ) -> Result<(), StoreError> {
        let r = self.commit_inner(metas, blocks, drops, access);
        self.index_failed(r)
    }

    fn commit_inner(
        &mut self,
        metas: &[(SegmentId, Arc<SegmentMeta>, Reply)],
        blocks: &[PendingBlock],
        drops: &[(SegmentId, u32)],
        access: &[(SegmentId, u64)],
    ) -> Result<(), StoreError> {
        let txn = self.db()?.begin_write()?;
        {
            let mut segs = txn.open_table(index::SEGMENTS)?;
            let mut acc = txn.open_table(index::ACCESS)?;
            let mut blks = txn.open_table(index::BLOCKS)?;
            // Drops first: a re-fetched copy of a dropped block in the same
            // batch must survive.
            for (id, index) in drops {
                let still_present = lock(&self.shared.state)
                    .segs
                    .get(id)
                    .and_then(|e| e.crcs.get(*index as usize))
                    .is_some_and(|c| c.is_some());
                if !still_present {
                    blks.remove(index::block_key(id, *index).as_slice())?;
                }
            }
            for (id, meta, _) in metas {
                let k = index::segment_key(id);
                segs.insert(k.as_slice(), meta.encode().as_slice())?;
            }
            for b in blocks {
                blks.insert(
                    index::block_key(&b.id, b.index).as_slice(),
                    index::block_value(b.crc, b.len).as_slice(),
                )?;
            }
            for (id, tick) in access {
                acc.insert(index::segment_key(id).as_slice(), *tick)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Evict least recently used segments until the store fits `max_size`.
    /// Victims are unpublished from memory first, so readers never wait on the deletion.
    fn evict_to_fit(&mut self) {
        let victims: Vec<(SegmentId, SegEntry)> = {
            let mut st = lock(&self.shared.state);
            let mut v = Vec::new();
            let max = self
                .shared
                .max_size
                .load(std::sync::atomic::Ordering::Relaxed);
            while st.used > max {
                let state = &mut *st;
                let Some(id) = state.lru.pop_lru(&mut state.segs) else {
                    break;
                };
                if let Some(e) = st.remove_segment(&id) {
                    v.push((id, e));
                }
            }
            st.publish(&self.shared.metrics);
            v
        };
        if victims.is_empty() {
            return;
        }
        self.shared.metrics.evictions.inc_by(victims.len() as u64);
        let ids: Vec<SegmentId> = victims.iter().map(|(id, _)| *id).collect();
        if let Err(e) = self.delete_segments(&ids) {
            // The records come back at the next open and are evicted then.
            self.shared.io_log.report(&self.shared.metrics, &e);
            return;
        }
        for (id, _) in &victims {
            let file = data_file_name(id);
            if let Err(err) = self.shared.backend.remove(&file) {
                tracing::warn!(file = %file, error = %err, "cannot remove evicted segment file; removed at next open");
            }
        }
    }

    fn delete_segments(&mut self, ids: &[SegmentId]) -> Result<(), StoreError> {
        let r = self.delete_segments_inner(ids);
        self.index_failed(r)
    }

    fn delete_segments_inner(&mut self, ids: &[SegmentId]) -> Result<(), StoreError> {
        let txn = self.db()?.begin_write()?;
        {
            let mut segs = txn.open_table(index::SEGMENTS)?;
            let mut acc = txn.open_table(index::ACCESS)?;
            let mut blks = txn.open_table(index::BLOCKS)?;
            for id in ids {
                let k = index::segment_key(id);
                segs.remove(k.as_slice())?;
                acc.remove(k.as_slice())?;
                let lo = index::block_key(id, 0);
                let hi = index::block_key(id, u32::MAX);
                blks.retain_in(lo.as_slice()..=hi.as_slice(), |_, _| false)?;
            }
        }
        txn.commit()?;
        Ok(())
    }
}

/// fsync `files`, in parallel when there are several: concurrent fsyncs
/// share journal commits on common filesystems, so a batch touching many
/// segment files costs about one fsync instead of one per file.
fn sync_files(backend: &dyn Backend, files: &[Arc<str>]) -> Vec<io::Result<()>> {
    if files.len() <= 1 {
        return files.iter().map(|f| backend.sync(f)).collect();
    }
    let per_thread = files.len().div_ceil(SYNC_THREADS);
    std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(per_thread)
            .map(|chunk| {
                let work = move || chunk.iter().map(|f| backend.sync(f)).collect::<Vec<_>>();
                match std::thread::Builder::new()
                    .name("store-sync".into())
                    .spawn_scoped(scope, work)
                {
                    Ok(h) => Err(h),
                    // No thread available: sync this chunk inline.
                    Err(_) => Ok(work()),
                }
            })
            .collect();
        let mut out = Vec::with_capacity(files.len());
        for (h, chunk) in handles.into_iter().zip(files.chunks(per_thread)) {
            match h {
                Ok(done) => out.extend(done),
                Err(h) => match h.join() {
                    Ok(done) => out.extend(done),
                    Err(_) => out.extend(
                        chunk
                            .iter()
                            .map(|_| Err(io::Error::other("sync thread panicked"))),
                    ),
                },
            }
        }
        out
    })
}

fn err_kind(e: &StoreError) -> io::ErrorKind {
    match e {
        StoreError::Io { source, .. } => source.kind(),
        _ => io::ErrorKind::Other,
    }
}

fn index_failure(msg: &str) -> StoreError {
    StoreError::Io {
        op: "commit",
        file: INDEX_FILE.to_string(),
        source: io::Error::other(msg.to_string()),
    }
}

#[cfg(test)]
mod tests;
