//! Cache packages: a store's segments (metadata and verified blocks) in one
//! file, to seed another branch's store offline (USB stick, sneakernet) —
//! the counterpart of Windows' `Export-BCCachePackage` /
//! `Import-BCCachePackage`.
//!
//! The format (versioned, documented in `docs/STORE-FORMAT.md`) is a stream
//! of records after a fixed header; segment records reuse the store's
//! segment-record encoding. [`import`] trusts nothing in the file: every
//! segment's metadata is re-validated against its id and every block is
//! re-hashed against its block hash (by [`Store::put_meta`] and
//! [`Store::put_block`]) before it is stored; a bad segment or block is
//! counted and skipped, a malformed frame stops the import. Lengths are
//! bounded before anything is allocated.

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};

use super::{SegmentMeta, Store, StoreError};
use crate::proto::pccrc::{SegmentId, V2_MAX_SEGMENT_SIZE};

/// First 8 bytes of a package (PNG-style: a text-mode transfer mangles `\r\n` / `\x1a`).
pub const PACKAGE_MAGIC: [u8; 8] = *b"BCPKG\r\n\x1a";
/// Package format version this build writes and reads.
pub const PACKAGE_VERSION: u32 = 1;
/// Record tag: segment metadata; following block records belong to it.
const TAG_SEGMENT: u8 = 0x01;
/// Record tag: one block of the current segment.
const TAG_BLOCK: u8 = 0x02;
/// Record tag: end of package, with counts.
const TAG_END: u8 = 0xFF;
/// Largest segment record accepted (512 SHA-512 block hashes plus fixed fields fit).
const MAX_SEGMENT_RECORD: u32 = 64 * 1024;
/// Largest block accepted (v2 segments are one block of at most 128 KiB; v1 blocks are 64 KiB).
const MAX_BLOCK: u32 = V2_MAX_SEGMENT_SIZE;
/// Buffer size for package file IO.
const IO_BUFFER: usize = 1 << 20;

/// Why an export or import failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// The package file could not be created, written, read or renamed.
    #[error("{path}: {op}: {source}")]
    Io {
        /// The package file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The IO error.
        source: io::Error,
    },
    /// The file does not start with [`PACKAGE_MAGIC`].
    #[error("{path}: not a branchcache cache package")]
    NotAPackage {
        /// The file.
        path: PathBuf,
    },
    /// A package version this build does not read.
    #[error("{path}: package format version {found} is not supported (this build reads {PACKAGE_VERSION})")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Version in the header.
        found: u32,
    },
    /// A record is malformed; the import stopped there (earlier segments stay imported).
    #[error("{path}: malformed at byte {offset}: {what}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Offset of the offending record.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// The file ends before its end record (earlier segments stay imported).
    #[error("{path}: truncated at byte {offset} (no end record)")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Where the data stopped.
        offset: u64,
    },
    /// The local store failed (not the package's fault).
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// What [`export`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Segment records written.
    pub segments: u64,
    /// Block records written.
    pub blocks: u64,
    /// Block bytes written.
    pub bytes: u64,
}

/// What [`import`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Segments whose metadata was accepted.
    pub segments: u64,
    /// Segments whose metadata failed validation (their blocks skipped).
    pub segments_rejected: u64,
    /// Blocks verified and stored (or already present).
    pub blocks: u64,
    /// Blocks that failed verification (hash or length) and were not stored,
    /// including blocks of rejected segments.
    pub blocks_rejected: u64,
    /// Bytes of the stored blocks.
    pub bytes: u64,
}

impl ImportReport {
    /// Nothing in the package was rejected.
    pub fn is_clean(&self) -> bool {
        self.segments_rejected == 0 && self.blocks_rejected == 0
    }
}

/// Write every segment of `store` (least recently used first, so an import
/// keeps the recency order) with its present blocks to `path`, atomically
/// (a fresh temporary file `<path>.partial`, renamed into place; an existing
/// file or symlink at `path` is replaced, not written through) and with
/// mode 0600: the package holds segment secrets, like the store's index.
/// `progress(blocks_written, blocks_total)` is called after each segment.
pub async fn export(
    store: &Store,
    path: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<ExportReport, PackageError> {
    let io_err = |op: &'static str| {
        let path = path.to_path_buf();
        move |source| PackageError::Io { path, op, source }
    };
    let tmp = tmp_path(path);
    let file = {
        let tmp = tmp.clone();
        tokio::task::spawn_blocking(move || {
            // A stale temporary (an interrupted export) is removed, never
            // opened: `create_new` (O_EXCL) does not follow a symlink
            // planted at that name, so the export cannot write through it.
            match std::fs::remove_file(&tmp) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            opts.open(&tmp)
        })
        .await
        .map_err(|e| io_err("create")(io::Error::other(e)))?
        .map_err(io_err("create"))?
    };
    let result = write_package(
        store,
        BufWriter::with_capacity(IO_BUFFER, tokio::fs::File::from_std(file)),
        &mut progress,
    )
    .await;
    match result {
        Ok(report) => match tokio::fs::rename(&tmp, path).await {
            Ok(()) => Ok(report),
            Err(e) => {
                // e.g. `path` is a directory: leave nothing behind.
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(io_err("rename")(e))
            }
        },
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            Err(match e {
                WriteError::Io(source) => PackageError::Io {
                    path: path.to_path_buf(),
                    op: "write",
                    source,
                },
                WriteError::Store(e) => PackageError::Store(e),
            })
        }
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

enum WriteError {
    Io(io::Error),
    Store(StoreError),
}

impl From<io::Error> for WriteError {
    fn from(e: io::Error) -> Self {
        WriteError::Io(e)
    }
}

async fn write_package(
    store: &Store,
    mut w: BufWriter<tokio::fs::File>,
    progress: &mut impl FnMut(u64, u64),
) -> Result<ExportReport, WriteError> {
    let mut report = ExportReport::default();
    w.write_all(&PACKAGE_MAGIC).await?;
    w.write_all(&PACKAGE_VERSION.to_le_bytes()).await?;
    w.write_all(&0u32.to_le_bytes()).await?;
    let blocks_total = store.stats().blocks;
    // segment_ids() is most recently used first.
    for id in store.segment_ids().into_iter().rev() {
        let Some(meta) = store.meta_arc(&id) else {
            continue; // evicted meanwhile
        };
        let record = meta.encode();
        let id_bytes = id.as_bytes();
        w.write_u8(TAG_SEGMENT).await?;
        w.write_u8(u8::try_from(id_bytes.len()).unwrap_or(u8::MAX))
            .await?;
        w.write_all(id_bytes).await?;
        w.write_all(
            &u32::try_from(record.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        )
        .await?;
        w.write_all(&record).await?;
        report.segments += 1;
        for index in store.present_blocks(&id) {
            let Some(data) = store
                .get_block(&id, index)
                .await
                .map_err(WriteError::Store)?
            else {
                continue; // evicted, or failed its checksum (then it was evicted)
            };
            w.write_u8(TAG_BLOCK).await?;
            w.write_all(&index.to_le_bytes()).await?;
            w.write_all(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_le_bytes())
                .await?;
            w.write_all(&data).await?;
            report.blocks += 1;
            report.bytes += data.len() as u64;
        }
        progress(report.blocks, blocks_total.max(report.blocks));
    }
    w.write_u8(TAG_END).await?;
    w.write_all(&report.segments.to_le_bytes()).await?;
    w.write_all(&report.blocks.to_le_bytes()).await?;
    w.write_all(&report.bytes.to_le_bytes()).await?;
    w.flush().await?;
    let file = w.into_inner();
    file.sync_all().await?;
    Ok(report)
}

/// Import the package at `path` into `store`, verifying every segment and
/// block before it is stored. `progress(bytes_read, file_len)` is called
/// after each segment. Bad segments and blocks are counted in the report and
/// skipped; a malformed or truncated file stops the import with an error
/// (what was imported before stays: every stored block is verified).
pub async fn import(
    store: &Store,
    path: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<ImportReport, PackageError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|source| PackageError::Io {
            path: path.to_path_buf(),
            op: "open",
            source,
        })?;
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let mut r = PackageReader {
        inner: BufReader::with_capacity(IO_BUFFER, file),
        path: path.to_path_buf(),
        offset: 0,
    };
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)
        .await
        .map_err(|_| PackageError::NotAPackage {
            path: path.to_path_buf(),
        })?;
    if magic != PACKAGE_MAGIC {
        return Err(PackageError::NotAPackage {
            path: path.to_path_buf(),
        });
    }
    let version = r.u32().await?;
    if version != PACKAGE_VERSION {
        return Err(PackageError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
        });
    }
    if r.u32().await? != 0 {
        return Err(r.malformed(8 + 4, "reserved header field is not 0"));
    }

    let mut report = ImportReport::default();
    let (mut seg_records, mut block_records, mut block_bytes) = (0u64, 0u64, 0u64);
    // The segment the following blocks belong to; `None` inside a rejected segment.
    let mut current: Option<Option<SegmentId>> = None;
    loop {
        let at = r.offset;
        match r.u8().await? {
            TAG_SEGMENT => {
                progress(r.offset, len);
                seg_records += 1;
                let id_len = r.u8().await?;
                if !matches!(id_len, 32 | 48 | 64) {
                    return Err(r.malformed(at, format!("segment id length {id_len}")));
                }
                let mut id = vec![0u8; usize::from(id_len)];
                r.read_exact(&mut id).await?;
                let id = SegmentId::from_slice(&id)
                    .ok_or_else(|| r.malformed(at, "segment id".to_string()))?;
                let rec_len = r.u32().await?;
                if rec_len > MAX_SEGMENT_RECORD {
                    return Err(r.malformed(at, format!("segment record of {rec_len} bytes")));
                }
                let mut record = vec![0u8; rec_len as usize];
                r.read_exact(&mut record).await?;
                current = Some(match SegmentMeta::decode(&record) {
                    Err(e) => {
                        tracing::warn!(segment = %id, error = %e, "package segment record does not decode; skipping the segment");
                        report.segments_rejected += 1;
                        None
                    }
                    Ok(meta) => match store.put_meta(id, meta).await {
                        Ok(()) => {
                            report.segments += 1;
                            Some(id)
                        }
                        Err(e) if e.is_bad_input() => {
                            tracing::warn!(segment = %id, error = %e, "package segment rejected");
                            report.segments_rejected += 1;
                            None
                        }
                        Err(e) => return Err(e.into()),
                    },
                });
            }
            TAG_BLOCK => {
                block_records += 1;
                let index = r.u32().await?;
                let block_len = r.u32().await?;
                if block_len > MAX_BLOCK {
                    return Err(r.malformed(at, format!("block of {block_len} bytes")));
                }
                let Some(segment) = current else {
                    return Err(r.malformed(at, "block before any segment".to_string()));
                };
                let mut data = vec![0u8; block_len as usize];
                r.read_exact(&mut data).await?;
                block_bytes += u64::from(block_len);
                let Some(id) = segment else {
                    report.blocks_rejected += 1;
                    continue;
                };
                match store.put_block(&id, index, Bytes::from(data)).await {
                    Ok(()) => {
                        report.blocks += 1;
                        report.bytes += u64::from(block_len);
                    }
                    Err(e) if e.is_bad_input() => {
                        tracing::warn!(segment = %id, block = index, error = %e, "package block rejected");
                        report.blocks_rejected += 1;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            TAG_END => {
                let (segs, blocks, bytes) = (r.u64().await?, r.u64().await?, r.u64().await?);
                if (segs, blocks, bytes) != (seg_records, block_records, block_bytes) {
                    return Err(r.malformed(
                        at,
                        format!("end record counts {segs} segments, {blocks} blocks, {bytes} bytes; the file holds {seg_records}, {block_records}, {block_bytes}"),
                    ));
                }
                let mut extra = [0u8; 1];
                if r.inner.read(&mut extra).await.map_err(|e| r.io(e))? != 0 {
                    return Err(r.malformed(r.offset, "data after the end record".to_string()));
                }
                progress(len, len);
                return Ok(report);
            }
            tag => return Err(r.malformed(at, format!("unknown record tag {tag:#04x}"))),
        }
    }
}

/// Exact reads with offset tracking; EOF anywhere is [`PackageError::Truncated`].
struct PackageReader {
    inner: BufReader<tokio::fs::File>,
    path: PathBuf,
    offset: u64,
}

impl PackageReader {
    async fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), PackageError> {
        match self.inner.read_exact(buf).await {
            Ok(_) => {
                self.offset += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(PackageError::Truncated {
                path: self.path.clone(),
                offset: self.offset,
            }),
            Err(e) => Err(self.io(e)),
        }
    }

    async fn u8(&mut self) -> Result<u8, PackageError> {
        let mut b = [0u8; 1];
        self.read_exact(&mut b).await?;
        Ok(b[0])
    }

    async fn u32(&mut self) -> Result<u32, PackageError> {
        let mut b = [0u8; 4];
        self.read_exact(&mut b).await?;
        Ok(u32::from_le_bytes(b))
    }

    async fn u64(&mut self) -> Result<u64, PackageError> {
        let mut b = [0u8; 8];
        self.read_exact(&mut b).await?;
        Ok(u64::from_le_bytes(b))
    }

    fn io(&self, source: io::Error) -> PackageError {
        PackageError::Io {
            path: self.path.clone(),
            op: "read",
            source,
        }
    }

    fn malformed(&self, offset: u64, what: impl Into<String>) -> PackageError {
        PackageError::Malformed {
            path: self.path.clone(),
            offset,
            what: what.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::meta::tests::{v1_segment, v2_segment};
    use super::*;

    /// Non-repeating bytes (xorshift), so any 64-byte window is unique.
    fn pattern(seed: u8, len: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9u32 ^ u32::from(seed);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 24) as u8
            })
            .collect()
    }

    /// A store with a v1 segment (3 blocks, blocks 0 and 2 present) and a
    /// whole v2 segment; returns it with the data of both.
    async fn populated() -> (Store, Vec<u8>, Vec<u8>) {
        let store = Store::open_in_memory(1 << 30);
        let d1 = pattern(1, 150_000);
        let (id1, m1) = v1_segment(&d1);
        store.put_meta(id1, m1.clone()).await.unwrap();
        for i in [0u32, 2] {
            let s = m1.block_offset(i) as usize;
            let l = m1.block_len(i).unwrap() as usize;
            store
                .put_block(&id1, i, Bytes::copy_from_slice(&d1[s..s + l]))
                .await
                .unwrap();
        }
        let d2 = pattern(2, 90_000);
        let (id2, m2) = v2_segment(&d2);
        store.put_meta(id2, m2).await.unwrap();
        store
            .put_block(&id2, 0, Bytes::from(d2.clone()))
            .await
            .unwrap();
        (store, d1, d2)
    }

    async fn same_contents(a: &Store, b: &Store) {
        let (sa, sb) = (a.stats(), b.stats());
        assert_eq!(
            (sa.segments, sa.blocks, sa.used_bytes),
            (sb.segments, sb.blocks, sb.used_bytes)
        );
        for id in a.segment_ids() {
            assert_eq!(a.meta(&id).await, b.meta(&id).await);
            assert_eq!(a.present_blocks(&id), b.present_blocks(&id));
            for i in a.present_blocks(&id) {
                assert_eq!(
                    a.get_block(&id, i).await.unwrap(),
                    b.get_block(&id, i).await.unwrap()
                );
            }
        }
    }

    #[tokio::test]
    async fn export_then_import_reproduces_the_store() {
        let (a, _, _) = populated().await;
        let dir = tempfile::tempdir().unwrap();
        let pkg = dir.path().join("cache.bcpkg");
        let mut calls = 0;
        let ex = export(&a, &pkg, |_, _| calls += 1).await.unwrap();
        assert_eq!(
            ex,
            ExportReport {
                segments: 2,
                blocks: 3,
                bytes: 65_536 + (150_000 - 2 * 65_536) as u64 + 90_000
            }
        );
        assert_eq!(calls, 2);
        assert!(!tmp_path(&pkg).exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&pkg).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let b = Store::open_in_memory(1 << 30);
        let im = import(&b, &pkg, |_, _| {}).await.unwrap();
        assert_eq!(
            im,
            ImportReport {
                segments: 2,
                segments_rejected: 0,
                blocks: 3,
                blocks_rejected: 0,
                bytes: ex.bytes
            }
        );
        assert!(im.is_clean());
        same_contents(&a, &b).await;
        // Importing again changes nothing.
        let again = import(&b, &pkg, |_, _| {}).await.unwrap();
        assert_eq!(again, im);
        same_contents(&a, &b).await;
    }

    #[tokio::test]
    async fn a_flipped_block_byte_is_rejected_and_the_rest_imported() {
        let (a, d1, _) = populated().await;
        let dir = tempfile::tempdir().unwrap();
        let pkg = dir.path().join("p");
        export(&a, &pkg, |_, _| {}).await.unwrap();
        let mut bytes = std::fs::read(&pkg).unwrap();
        // Block 2 of the v1 segment starts with d1[131072..]; corrupt its 10th byte.
        let needle = &d1[131_072..131_072 + 64];
        let at = bytes.windows(64).position(|w| w == needle).unwrap();
        bytes[at + 10] ^= 0x40;
        std::fs::write(&pkg, &bytes).unwrap();
        let b = Store::open_in_memory(1 << 30);
        let im = import(&b, &pkg, |_, _| {}).await.unwrap();
        assert_eq!((im.segments, im.blocks, im.blocks_rejected), (2, 2, 1));
        assert!(!im.is_clean());
        assert_eq!(b.stats().blocks, 2);
        let (id1, _) = v1_segment(&d1);
        assert_eq!(b.present_blocks(&id1), vec![0]);
    }

    #[tokio::test]
    async fn a_forged_segment_record_is_rejected_with_its_blocks() {
        let (a, d1, _) = populated().await;
        let dir = tempfile::tempdir().unwrap();
        let pkg = dir.path().join("p");
        export(&a, &pkg, |_, _| {}).await.unwrap();
        let mut bytes = std::fs::read(&pkg).unwrap();
        let (_, m1) = v1_segment(&d1);
        // Change one byte of the v1 segment's HoD inside its record.
        let hod = m1.hash_of_data.as_bytes();
        let at = bytes.windows(hod.len()).position(|w| w == hod).unwrap();
        bytes[at] ^= 1;
        std::fs::write(&pkg, &bytes).unwrap();
        let b = Store::open_in_memory(1 << 30);
        let im = import(&b, &pkg, |_, _| {}).await.unwrap();
        assert_eq!((im.segments, im.segments_rejected), (1, 1));
        assert_eq!((im.blocks, im.blocks_rejected), (1, 2));
        assert_eq!(b.stats().segments, 1);
    }

    #[tokio::test]
    async fn truncated_and_foreign_files_are_errors() {
        let (a, _, _) = populated().await;
        let dir = tempfile::tempdir().unwrap();
        let pkg = dir.path().join("p");
        export(&a, &pkg, |_, _| {}).await.unwrap();
        let bytes = std::fs::read(&pkg).unwrap();

        let cut = dir.path().join("cut");
        std::fs::write(&cut, &bytes[..bytes.len() - 30]).unwrap();
        let b = Store::open_in_memory(1 << 30);
        let err = import(&b, &cut, |_, _| {}).await.unwrap_err();
        assert!(matches!(err, PackageError::Truncated { .. }), "{err}");
        // What came before the cut is imported (and verified).
        assert!(b.stats().blocks >= 2);

        let foreign = dir.path().join("foreign");
        std::fs::write(&foreign, b"PK\x03\x04 this is a zip file").unwrap();
        let err = import(&b, &foreign, |_, _| {}).await.unwrap_err();
        assert!(matches!(err, PackageError::NotAPackage { .. }), "{err}");

        let mut v2 = bytes.clone();
        v2[8] = 2;
        std::fs::write(&foreign, &v2).unwrap();
        let err = import(&b, &foreign, |_, _| {}).await.unwrap_err();
        assert!(
            matches!(err, PackageError::UnsupportedVersion { found: 2, .. }),
            "{err}"
        );

        // A block record claiming 4 GiB is refused before allocating.
        let mut huge = bytes[..16].to_vec();
        huge.extend_from_slice(&bytes[16..]);
        let first_block = 16 + 1 + 1 + 32 + 4;
        let rec_len =
            u32::from_le_bytes(bytes[16 + 1 + 1 + 32..first_block].try_into().unwrap()) as usize;
        let blk = first_block + rec_len;
        assert_eq!(huge[blk], TAG_BLOCK);
        huge[blk + 5..blk + 9].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&foreign, &huge).unwrap();
        let err = import(&b, &foreign, |_, _| {}).await.unwrap_err();
        assert!(matches!(err, PackageError::Malformed { .. }), "{err}");
        assert!(
            err.to_string().contains("block of 4294967295 bytes"),
            "{err}"
        );

        // Trailing garbage after the end record.
        let mut trailing = bytes.clone();
        trailing.push(0);
        std::fs::write(&foreign, &trailing).unwrap();
        let err = import(&b, &foreign, |_, _| {}).await.unwrap_err();
        assert!(err.to_string().contains("after the end record"), "{err}");
    }

    #[tokio::test]
    async fn export_never_writes_through_a_planted_temporary_and_leaves_no_temporary() {
        let (a, _, _) = populated().await;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep me").unwrap();
        let pkg = dir.path().join("p.bcpkg");
        std::os::unix::fs::symlink(&victim, dir.path().join("p.bcpkg.partial")).unwrap();
        export(&a, &pkg, |_, _| {}).await.unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
        assert!(std::fs::read(&pkg).unwrap().starts_with(&PACKAGE_MAGIC));

        // Onto a directory: an error, and no `.partial` left behind.
        let target = dir.path().join("d");
        std::fs::create_dir(&target).unwrap();
        let err = export(&a, &target, |_, _| {}).await.unwrap_err();
        assert!(
            matches!(err, PackageError::Io { op: "rename", .. }),
            "{err}"
        );
        assert!(!dir.path().join("d.partial").exists());
    }
}
