//! The v2 block replay store: MSG_BLK payloads kept exactly as an offering
//! client sent them, and served verbatim to later clients.
//!
//! A PCHC v2 offer carries only the segment id and sizes, never Kp, so the
//! hosted cache can neither decrypt nor verify the blocks it pulls
//! (PROTOCOL.md §8.6). It keeps the cipher id, IV and ciphertext per block
//! and replays them; the downloading client decrypts with the Kp from its
//! own content information and checks the block hash end to end, so a bad
//! replay costs that client one fallback, never wrong bytes.
//!
//! On disk: one file per block, `<segment id hex>.<block index>`, in one
//! directory, written to a temporary name, synced and renamed so a crash
//! leaves either the whole record or nothing under the final name. Each
//! record ends with a CRC32C of everything before it; a record that fails
//! to decode is deleted and reported as absent. The in-memory index (sizes,
//! per-segment block sets, LRU order) is rebuilt from the directory listing
//! at open and bounded by `max_size` bytes of records: the least recently
//! used blocks are deleted first.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::proto::pccrc::SegmentId;
use crate::proto::pccrr::{CryptoAlgoId, IV_LEN, MAX_BLOCK_LEN};
use crate::retrieval::RawBlock;

/// First bytes of every record (format version 1).
pub const RECORD_MAGIC: &[u8; 8] = b"BCRPLY01";
/// Bytes a record adds to its block: magic, cipher, IV length, IV, block
/// length, CRC32C.
pub const RECORD_OVERHEAD: usize = 8 + 4 + 1 + IV_LEN + 4 + 4;
/// Suffix of a record being written (deleted at open: an interrupted write).
const TMP_SUFFIX: &str = ".tmp";

/// Why a record could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Shorter than its fields say.
    #[error("replay record truncated at {what}")]
    Truncated {
        /// The field.
        what: &'static str,
    },
    /// Not a record of this format version.
    #[error("replay record has a bad magic")]
    Magic,
    /// A field is out of its bounds.
    #[error("replay record: bad {what}")]
    Invalid {
        /// The field.
        what: &'static str,
    },
    /// The checksum does not match: disk corruption.
    #[error("replay record checksum mismatch")]
    Checksum,
}

/// Encode one record (pure; see the module docs for the layout).
pub fn encode_record(raw: &RawBlock) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_OVERHEAD + raw.block.len());
    out.extend_from_slice(RECORD_MAGIC);
    out.extend_from_slice(&raw.crypto_algo.0.to_be_bytes());
    // IV length is 0 or 16 for every RawBlock that passed `plausible`.
    out.push(u8::try_from(raw.iv.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(&raw.iv);
    out.extend_from_slice(
        &u32::try_from(raw.block.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(&raw.block);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// Decode one record; total over any input.
pub fn decode_record(buf: &[u8]) -> Result<RawBlock, RecordError> {
    let (body, crc) = buf
        .split_last_chunk::<4>()
        .ok_or(RecordError::Truncated { what: "checksum" })?;
    let mut r = crate::proto::codec::Reader::new(body);
    let magic = r
        .take(RECORD_MAGIC.len(), "magic")
        .map_err(|_| RecordError::Truncated { what: "magic" })?;
    if magic != RECORD_MAGIC {
        return Err(RecordError::Magic);
    }
    if crc32c::crc32c(body) != u32::from_be_bytes(*crc) {
        return Err(RecordError::Checksum);
    }
    let algo = r
        .u32_be("cipher")
        .map_err(|_| RecordError::Truncated { what: "cipher" })?;
    let iv_len = r
        .u8("iv length")
        .map_err(|_| RecordError::Truncated { what: "iv length" })?;
    if iv_len as usize != 0 && iv_len as usize != IV_LEN {
        return Err(RecordError::Invalid { what: "iv length" });
    }
    let iv = r
        .take(iv_len as usize, "iv")
        .map_err(|_| RecordError::Truncated { what: "iv" })?
        .to_vec();
    let len = r
        .u32_be("block length")
        .map_err(|_| RecordError::Truncated {
            what: "block length",
        })? as usize;
    if len == 0 || len > MAX_BLOCK_LEN {
        return Err(RecordError::Invalid {
            what: "block length",
        });
    }
    let block = r
        .take(len, "block")
        .map_err(|_| RecordError::Truncated { what: "block" })?;
    if !r.is_empty() {
        return Err(RecordError::Invalid {
            what: "trailing bytes",
        });
    }
    Ok(RawBlock {
        crypto_algo: CryptoAlgoId(algo),
        iv,
        block: Bytes::copy_from_slice(block),
    })
}

/// The file name of a record.
fn record_name(id: &SegmentId, index: u32) -> String {
    format!("{}.{index}", id.to_hex())
}

/// Parse a record file name back; `None` for anything else.
fn parse_record_name(name: &str) -> Option<(SegmentId, u32)> {
    let (hex_id, index_text) = name.split_once('.')?;
    let index: u32 = index_text.parse().ok()?;
    if index.to_string() != index_text {
        return None; // "+1", "01": not a name this store writes
    }
    let bytes = hex::decode(hex_id).ok()?;
    if ![32, 48, 64].contains(&bytes.len()) {
        return None; // HoHoDk is a SHA-256/384/512 digest
    }
    Some((SegmentId::from_slice(&bytes)?, index))
}

#[derive(Debug, Default)]
struct State {
    /// (segment, block) → (record bytes on disk, LRU tick).
    entries: HashMap<(SegmentId, u32), (u64, u64)>,
    /// LRU order: tick → key.
    lru: BTreeMap<u64, (SegmentId, u32)>,
    /// Blocks held per segment.
    segments: HashMap<SegmentId, BTreeSet<u32>>,
    total: u64,
    tick: u64,
}

impl State {
    fn touch(&mut self, key: (SegmentId, u32)) {
        self.tick += 1;
        let tick = self.tick;
        if let Some((_, t)) = self.entries.get_mut(&key) {
            self.lru.remove(t);
            *t = tick;
            self.lru.insert(tick, key);
        }
    }

    fn insert(&mut self, key: (SegmentId, u32), size: u64) {
        self.remove(&key);
        self.tick += 1;
        self.entries.insert(key, (size, self.tick));
        self.lru.insert(self.tick, key);
        self.segments.entry(key.0).or_default().insert(key.1);
        self.total += size;
    }

    fn remove(&mut self, key: &(SegmentId, u32)) -> bool {
        let Some((size, tick)) = self.entries.remove(key) else {
            return false;
        };
        self.lru.remove(&tick);
        self.total -= size;
        if let Some(set) = self.segments.get_mut(&key.0) {
            set.remove(&key.1);
            if set.is_empty() {
                self.segments.remove(&key.0);
            }
        }
        true
    }

    /// Pop least recently used keys until `total <= max`.
    fn evict(&mut self, max: u64) -> Vec<(SegmentId, u32)> {
        let mut out = Vec::new();
        while self.total > max {
            let Some((_, key)) = self.lru.pop_first() else {
                break;
            };
            // `lru` entry is gone already; drop the rest of the bookkeeping.
            if let Some((size, _)) = self.entries.remove(&key) {
                self.total -= size;
            }
            if let Some(set) = self.segments.get_mut(&key.0) {
                set.remove(&key.1);
                if set.is_empty() {
                    self.segments.remove(&key.0);
                }
            }
            out.push(key);
        }
        out
    }
}

/// Counters the replay store keeps (exported through `/metrics`).
#[derive(Debug, Default)]
pub struct ReplayCounters {
    /// Records found corrupt and deleted.
    pub corrupt: std::sync::atomic::AtomicU64,
    /// Records deleted to stay under the size bound.
    pub evicted: std::sync::atomic::AtomicU64,
}

/// A size-bounded, persistent store of replayable MSG_BLK payloads (cheap to clone).
#[derive(Debug, Clone)]
pub struct ReplayStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    /// The bound; [`ReplayStore::set_max_size`] changes it (reload).
    max_size: std::sync::atomic::AtomicU64,
    state: Mutex<State>,
    counters: ReplayCounters,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// Why the replay store could not be opened or written.
#[derive(Debug, thiserror::Error)]
#[error("replay store {path}: {source}")]
pub struct ReplayIoError {
    /// The file or directory.
    pub path: PathBuf,
    /// The IO error.
    #[source]
    pub source: std::io::Error,
}

impl ReplayStore {
    /// Open (creating it, mode 0700) the directory `dir`, index the records
    /// in it, delete interrupted writes and evict down to `max_size`.
    /// With `metrics`, the held size and corrupt records are exported.
    pub async fn open(
        dir: &Path,
        max_size: u64,
        metrics: Option<Arc<crate::metrics::Metrics>>,
    ) -> Result<ReplayStore, ReplayIoError> {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(dir, max_size, metrics))
            .await
            .map_err(|e| ReplayIoError {
                path: PathBuf::new(),
                source: std::io::Error::other(e),
            })?
    }

    fn open_blocking(
        dir: PathBuf,
        max_size: u64,
        metrics: Option<Arc<crate::metrics::Metrics>>,
    ) -> Result<ReplayStore, ReplayIoError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ReplayIoError { path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io(&dir))?;
        }
        let mut state = State::default();
        let mut found: Vec<(std::time::SystemTime, (SegmentId, u32), u64)> = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(TMP_SUFFIX) {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let Some(key) = parse_record_name(name) else {
                continue;
            };
            let Ok(meta) = entry.metadata() else { continue };
            let mtime = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            found.push((mtime, key, meta.len()));
        }
        // Oldest first, so the most recently written are the last evicted.
        found.sort_by_key(|(t, k, _)| (*t, k.1));
        for (_, key, size) in found {
            state.insert(key, size);
        }
        let store = ReplayStore {
            inner: Arc::new(Inner {
                dir,
                max_size: std::sync::atomic::AtomicU64::new(max_size),
                state: Mutex::new(state),
                counters: ReplayCounters::default(),
                metrics,
            }),
        };
        let evicted = store.lock().evict(max_size);
        store.delete_files(&evicted);
        store.publish_size();
        Ok(store)
    }

    fn max_size(&self) -> u64 {
        self.inner
            .max_size
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Change the bound (configuration reload); a lower one evicts least
    /// recently used records now.
    pub fn set_max_size(&self, max_size: u64) {
        self.inner
            .max_size
            .store(max_size, std::sync::atomic::Ordering::Relaxed);
        let evicted = self.lock().evict(max_size);
        self.delete_files(&evicted);
        self.publish_size();
    }

    fn publish_size(&self) {
        if let Some(m) = &self.inner.metrics {
            let size = self.size();
            m.hosted_cache_replay_bytes
                .set(i64::try_from(size).unwrap_or(i64::MAX));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, key: &(SegmentId, u32)) -> PathBuf {
        self.inner.dir.join(record_name(&key.0, key.1))
    }

    fn delete_files(&self, keys: &[(SegmentId, u32)]) {
        for key in keys {
            let _ = std::fs::remove_file(self.path(key));
        }
        self.inner
            .counters
            .evicted
            .fetch_add(keys.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// The counters (corrupt records, evictions).
    pub fn counters(&self) -> &ReplayCounters {
        &self.inner.counters
    }

    /// Bytes of records held.
    pub fn size(&self) -> u64 {
        self.lock().total
    }

    /// Number of blocks held.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether block `index` of `id` is held.
    pub fn has(&self, id: &SegmentId, index: u32) -> bool {
        self.lock().entries.contains_key(&(*id, index))
    }

    /// Held block indexes of `id`, ascending.
    pub fn blocks(&self, id: &SegmentId) -> Vec<u32> {
        self.lock()
            .segments
            .get(id)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Keep `raw` as block `index` of `id` (replacing an older copy), then
    /// evict least recently used blocks beyond the size bound. Returns
    /// whether it was kept (false: one record alone exceeds the bound).
    pub async fn put(
        &self,
        id: SegmentId,
        index: u32,
        raw: RawBlock,
    ) -> Result<bool, ReplayIoError> {
        let record = encode_record(&raw);
        let size = record.len() as u64;
        if size > self.max_size() {
            return Ok(false); // cannot ever fit; keeping nothing is correct
        }
        let key = (id, index);
        let path = self.path(&key);
        let tmp = self
            .inner
            .dir
            .join(format!("{}{TMP_SUFFIX}", record_name(&key.0, key.1)));
        tokio::task::spawn_blocking(move || -> Result<(), ReplayIoError> {
            let io = |source| ReplayIoError {
                path: tmp.clone(),
                source,
            };
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&record).map_err(io)?;
            f.sync_data().map_err(io)?;
            drop(f);
            std::fs::rename(&tmp, &path).map_err(|source| ReplayIoError {
                path: path.clone(),
                source,
            })
        })
        .await
        .map_err(|e| ReplayIoError {
            path: PathBuf::new(),
            source: std::io::Error::other(e),
        })??;
        let evicted = {
            let mut st = self.lock();
            st.insert(key, size);
            st.evict(self.max_size())
        };
        self.delete_files(&evicted);
        self.publish_size();
        Ok(true)
    }

    /// The held payload of block `index` of `id`; a record that fails its
    /// checksum or does not decode is deleted and reported as absent.
    pub async fn get(&self, id: &SegmentId, index: u32) -> Option<RawBlock> {
        let key = (*id, index);
        if !self.lock().entries.contains_key(&key) {
            return None;
        }
        let path = self.path(&key);
        let read = tokio::task::spawn_blocking(move || std::fs::read(path))
            .await
            .ok()?;
        let decoded = match read {
            Ok(bytes) => decode_record(&bytes).map_err(|e| e.to_string()),
            // Evicted between the index check and the read: simply absent.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => Err(e.to_string()),
        };
        match decoded {
            Ok(raw) => {
                self.lock().touch(key);
                Some(raw)
            }
            Err(error) => {
                tracing::warn!(segment = %id, block = index, %error, "replay record unreadable; deleted");
                self.inner
                    .counters
                    .corrupt
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(m) = &self.inner.metrics {
                    m.hosted_cache_replay_corrupt.inc();
                }
                if self.lock().remove(&key) {
                    let _ = std::fs::remove_file(self.path(&key));
                }
                self.publish_size();
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn raw(fill: u8, len: usize) -> RawBlock {
        RawBlock {
            crypto_algo: CryptoAlgoId::AES_128,
            iv: vec![fill; IV_LEN],
            block: Bytes::from(vec![fill; len]),
        }
    }

    fn id(n: u8) -> SegmentId {
        SegmentId::from_slice(&[n; 32]).unwrap()
    }

    #[test]
    fn record_golden_bytes() {
        let r = RawBlock {
            crypto_algo: CryptoAlgoId::AES_128,
            iv: (0u8..16).collect(),
            block: Bytes::from_static(&[0xAA; 16]),
        };
        let enc = encode_record(&r);
        let mut want = b"BCRPLY01".to_vec();
        want.extend_from_slice(&[0, 0, 0, 1]); // PCCRR CryptoAlgoId AES_128 = 1, big-endian
        want.push(16);
        want.extend(0u8..16);
        want.extend_from_slice(&[0, 0, 0, 16]);
        want.extend_from_slice(&[0xAA; 16]);
        let crc = crc32c::crc32c(&want);
        want.extend_from_slice(&crc.to_be_bytes());
        assert_eq!(enc, want);
        assert_eq!(decode_record(&enc).unwrap(), r);
    }

    #[test]
    fn corrupt_records_are_rejected_with_a_reason() {
        let enc = encode_record(&raw(7, 32));
        let mut flipped = enc.clone();
        flipped[40] ^= 1;
        assert_eq!(decode_record(&flipped), Err(RecordError::Checksum));
        assert_eq!(
            decode_record(&enc[..6]),
            Err(RecordError::Truncated { what: "magic" })
        );
        assert_eq!(
            decode_record(&enc[..3]),
            Err(RecordError::Truncated { what: "checksum" })
        );
        let mut magic = enc.clone();
        magic[0] = b'X';
        assert_eq!(decode_record(&magic), Err(RecordError::Magic));
        assert_eq!(
            decode_record(&[]),
            Err(RecordError::Truncated { what: "checksum" })
        );
    }

    #[test]
    fn record_names_round_trip_and_reject_strays() {
        let name = record_name(&id(3), 41);
        assert_eq!(parse_record_name(&name), Some((id(3), 41)));
        assert_eq!(parse_record_name("index.redb"), None);
        assert_eq!(parse_record_name(&format!("{}.x", id(3).to_hex())), None);
        assert_eq!(parse_record_name("abcd.1"), None);
    }

    proptest! {
        #[test]
        fn records_round_trip(
            algo in prop_oneof![Just(CryptoAlgoId::NONE), Just(CryptoAlgoId::AES_128), Just(CryptoAlgoId::AES_256)],
            with_iv in any::<bool>(),
            block in proptest::collection::vec(any::<u8>(), 1..2048),
        ) {
            let r = RawBlock {
                crypto_algo: algo,
                iv: if with_iv { vec![5; IV_LEN] } else { Vec::new() },
                block: Bytes::from(block),
            };
            prop_assert_eq!(decode_record(&encode_record(&r)).unwrap(), r);
        }

        #[test]
        fn decode_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_record(&buf);
        }
    }

    #[tokio::test]
    async fn survives_restart_evicts_lru_and_deletes_corrupt_records() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("replay");
        let rec = (RECORD_OVERHEAD + 1024) as u64;
        let store = ReplayStore::open(&dir, 3 * rec, None).await.unwrap();
        store.put(id(1), 0, raw(1, 1024)).await.unwrap();
        store.put(id(1), 1, raw(2, 1024)).await.unwrap();
        store.put(id(2), 0, raw(3, 1024)).await.unwrap();
        assert_eq!(store.blocks(&id(1)), vec![0, 1]);
        // Touch (1,0) so (1,1) is the least recently used.
        assert_eq!(store.get(&id(1), 0).await.unwrap(), raw(1, 1024));
        store.put(id(3), 0, raw(4, 1024)).await.unwrap();
        assert!(!store.has(&id(1), 1), "LRU block evicted");
        assert!(store.has(&id(1), 0) && store.has(&id(2), 0) && store.has(&id(3), 0));
        assert_eq!(store.size(), 3 * rec);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 3);
        drop(store);

        // A leftover temporary file from a crash and a stray file.
        std::fs::write(dir.join("junk.tmp"), b"half").unwrap();
        let reopened = ReplayStore::open(&dir, 3 * rec, None).await.unwrap();
        assert_eq!(reopened.len(), 3);
        assert!(!dir.join("junk.tmp").exists());
        assert_eq!(reopened.get(&id(3), 0).await.unwrap(), raw(4, 1024));

        // Flip one byte of a record on disk: read fails, record is gone.
        let path = dir.join(record_name(&id(2), 0));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[100] ^= 0xFF;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(reopened.get(&id(2), 0).await, None);
        assert!(!reopened.has(&id(2), 0));
        assert!(!path.exists());
        assert_eq!(
            reopened
                .counters()
                .corrupt
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }

    #[tokio::test]
    async fn lowering_the_bound_at_run_time_evicts_now() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("replay");
        let rec = (RECORD_OVERHEAD + 1024) as u64;
        let store = ReplayStore::open(&dir, 10 * rec, None).await.unwrap();
        for i in 0..4u8 {
            store.put(id(i), 0, raw(i, 1024)).await.unwrap();
        }
        store.set_max_size(2 * rec);
        assert_eq!(store.size(), 2 * rec);
        assert!(!store.has(&id(0), 0) && !store.has(&id(1), 0));
        assert!(store.has(&id(2), 0) && store.has(&id(3), 0));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
    }
}
