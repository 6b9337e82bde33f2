//! Storage backends for the per-segment data files.
//!
//! The store writes each segment's blocks into one named file at fixed
//! offsets (`index × block_size`). [`Backend`] is the small set of
//! operations it needs; [`FsBackend`] is the real one, [`MemBackend`] keeps
//! everything in memory for tests, and [`FaultyBackend`] wraps another
//! backend and fails the N-th write or sync so tests can prove the store
//! survives IO errors.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// File mode for data files: segment data is private to the daemon user.
const FILE_MODE: u32 = 0o600;
/// Directory mode: the index holds segment secrets.
const DIR_MODE: u32 = 0o700;
/// Linux `ENOSPC`, injected for failed writes and syncs (disk full).
const ENOSPC: i32 = 28;
/// Linux `EIO`, injected for failed reads.
const EIO: i32 = 5;
/// Read handles [`FsBackend`] keeps open, so a store hit costs no
/// `open`/`close` (a quarter of the kernel time of a small hit).
const READ_HANDLES: usize = 256;

/// Blocking file operations the store needs for its data files.
///
/// Names are plain file names (no separators) chosen by the store. Every
/// method may block; the store calls them off the async runtime.
pub trait Backend: Send + Sync + fmt::Debug + 'static {
    /// Write `data` at `offset` in `name`, creating the file if needed.
    fn write_at(&self, name: &str, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Make every completed write to `name` (and its directory entry) durable.
    fn sync(&self, name: &str) -> io::Result<()>;
    /// Fill `buf` from `offset` in `name`; a short file is `UnexpectedEof`,
    /// a missing one `NotFound`.
    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Fill `buf` from `offset` in `name` only if that needs no disk IO (the
    /// bytes are in the page cache), so it may run on an async worker:
    /// `Ok(true)` when filled, `Ok(false)` when it would have to wait or the
    /// backend cannot tell (then the caller uses [`read_at`](Self::read_at)
    /// on the blocking pool). Default: `Ok(false)`.
    fn read_at_cached(&self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<bool> {
        let _ = (name, offset, buf);
        Ok(false)
    }
    /// Delete `name`; deleting a missing file succeeds.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Every file name currently stored.
    fn list(&self) -> io::Result<Vec<String>>;
}

/// Data files in one directory of the local filesystem.
#[derive(Debug)]
pub struct FsBackend {
    dir: PathBuf,
    /// A file was created since the directory was last synced.
    dir_dirty: AtomicBool,
    /// Open read-only handles by file name (at most [`READ_HANDLES`]; an
    /// arbitrary one is closed to make room). [`Backend::remove`] drops the
    /// file's handle; a handle outliving an unlink reads the old bytes,
    /// which the store's checksums still cover.
    readers: Mutex<HashMap<String, Arc<File>>>,
}

impl FsBackend {
    /// Use (and create, mode 0700) `dir`.
    pub fn new(dir: &Path) -> io::Result<Self> {
        create_private_dir(dir)?;
        Ok(FsBackend {
            dir: dir.to_path_buf(),
            dir_dirty: AtomicBool::new(false),
            readers: Mutex::new(HashMap::new()),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A read handle on `name`, from [`FsBackend::readers`] or newly opened.
    fn reader(&self, name: &str) -> io::Result<Arc<File>> {
        if let Some(f) = lock_readers(&self.readers).get(name) {
            return Ok(f.clone());
        }
        let file = Arc::new(File::open(self.path(name))?);
        let mut readers = lock_readers(&self.readers);
        if readers.len() >= READ_HANDLES {
            if let Some(victim) = readers.keys().next().cloned() {
                readers.remove(&victim);
            }
        }
        readers.insert(name.to_owned(), file.clone());
        Ok(file)
    }
}

fn lock_readers(
    m: &Mutex<HashMap<String, Arc<File>>>,
) -> std::sync::MutexGuard<'_, HashMap<String, Arc<File>>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Create `dir` (and parents) with mode 0700 if it does not exist.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

impl Backend for FsBackend {
    fn write_at(&self, name: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        let path = self.path(name);
        let file = match OpenOptions::new().write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(FILE_MODE)
                    .open(&path)?;
                self.dir_dirty.store(true, Ordering::Release);
                f
            }
            Err(e) => return Err(e),
        };
        file.write_all_at(data, offset)
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        File::open(self.path(name))?.sync_data()?;
        if self.dir_dirty.swap(false, Ordering::AcqRel) {
            if let Err(e) = File::open(&self.dir).and_then(|d| d.sync_all()) {
                self.dir_dirty.store(true, Ordering::Release);
                return Err(e);
            }
        }
        Ok(())
    }

    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.reader(name)?.read_exact_at(buf, offset)
    }

    /// `preadv2(RWF_NOWAIT)`: the kernel answers `EAGAIN` instead of
    /// waiting for the disk. Kernels or filesystems without it say
    /// `EOPNOTSUPP` / `ENOSYS`: then `Ok(false)` too.
    fn read_at_cached(&self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<bool> {
        use rustix::io::{preadv2, Errno, ReadWriteFlags};
        let file = self.reader(name)?;
        let mut done = 0usize;
        while done < buf.len() {
            let Some(rest) = buf.get_mut(done..) else {
                break;
            };
            let mut iov = [io::IoSliceMut::new(rest)];
            match preadv2(
                &*file,
                &mut iov,
                offset + done as u64,
                ReadWriteFlags::NOWAIT,
            ) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => done += n,
                Err(Errno::AGAIN | Errno::OPNOTSUPP | Errno::NOSYS) => return Ok(false),
                Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        lock_readers(&self.readers).remove(name);
        match fs::remove_file(self.path(name)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if let Ok(name) = entry.file_name().into_string() {
                out.push(name);
            }
        }
        Ok(out)
    }
}

/// Data files kept in memory (tests, and `Store::open_in_memory`).
#[derive(Debug, Default)]
pub struct MemBackend {
    files: Mutex<HashMap<String, Vec<u8>>>,
}

impl MemBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    /// Overwrite bytes of a stored file in place (tests: simulate disk corruption).
    pub fn corrupt(&self, name: &str, offset: u64, data: &[u8]) -> bool {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let Some(file) = files.get_mut(name) else {
            return false;
        };
        let Ok(start) = usize::try_from(offset) else {
            return false;
        };
        match file.get_mut(start..start.saturating_add(data.len())) {
            Some(dst) => {
                dst.copy_from_slice(data);
                true
            }
            None => false,
        }
    }
}

impl Backend for MemBackend {
    fn write_at(&self, name: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let end = start
            .checked_add(data.len())
            .ok_or(io::ErrorKind::InvalidInput)?;
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let file = files.entry(name.to_owned()).or_default();
        if file.len() < end {
            file.resize(end, 0);
        }
        if let Some(dst) = file.get_mut(start..end) {
            dst.copy_from_slice(data);
        }
        Ok(())
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if files.contains_key(name) {
            Ok(())
        } else {
            Err(io::ErrorKind::NotFound.into())
        }
    }

    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let file = files.get(name).ok_or(io::ErrorKind::NotFound)?;
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let src = file
            .get(start..start.saturating_add(buf.len()))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        Ok(())
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        Ok(files.keys().cloned().collect())
    }
}

/// Which operation a [`FaultyBackend`] should fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    /// [`Backend::write_at`].
    Write,
    /// [`Backend::sync`].
    Sync,
    /// [`Backend::read_at`].
    Read,
}

/// Wraps a backend and fails chosen calls with an IO error (tests).
///
/// Each armed operation counts its calls from 1; the call whose number is
/// the armed `n` fails (with `ENOSPC` for writes and syncs, `EIO` for reads),
/// as do all later ones when `sticky` is set.
#[derive(Debug)]
pub struct FaultyBackend {
    inner: Arc<dyn Backend>,
    op: FaultOp,
    n: u64,
    sticky: bool,
    calls: AtomicU64,
    failed: AtomicU64,
}

impl FaultyBackend {
    /// Fail the `n`-th call (1-based) of `op`; `sticky` fails every later call too.
    pub fn new(inner: Arc<dyn Backend>, op: FaultOp, n: u64, sticky: bool) -> Self {
        FaultyBackend {
            inner,
            op,
            n,
            sticky,
            calls: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// How many calls were failed so far.
    pub fn failures(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    fn check(&self, op: FaultOp) -> io::Result<()> {
        if op != self.op {
            return Ok(());
        }
        let call = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        if call == self.n || (self.sticky && call > self.n) {
            self.failed.fetch_add(1, Ordering::Relaxed);
            return Err(io::Error::from_raw_os_error(match op {
                FaultOp::Read => EIO,
                FaultOp::Write | FaultOp::Sync => ENOSPC,
            }));
        }
        Ok(())
    }
}

impl Backend for FaultyBackend {
    fn write_at(&self, name: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check(FaultOp::Write)?;
        self.inner.write_at(name, offset, data)
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        self.check(FaultOp::Sync)?;
        self.inner.sync(name)
    }

    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.check(FaultOp::Read)?;
        self.inner.read_at(name, offset, buf)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.inner.remove(name)
    }

    fn list(&self) -> io::Result<Vec<String>> {
        self.inner.list()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(b: &dyn Backend) {
        b.write_at("a", 10, b"hello").unwrap();
        b.sync("a").unwrap();
        let mut buf = [0u8; 5];
        b.read_at("a", 10, &mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        let mut long = [0u8; 6];
        assert_eq!(
            b.read_at("a", 10, &mut long).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        assert_eq!(
            b.read_at("missing", 0, &mut buf).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(b.list().unwrap(), vec!["a".to_string()]);
        b.remove("a").unwrap();
        b.remove("a").unwrap();
        assert!(b.list().unwrap().is_empty());
    }

    #[test]
    fn mem_backend_reads_back_writes_and_reports_missing_files() {
        roundtrip(&MemBackend::new());
    }

    #[test]
    fn fs_backend_reads_back_writes_with_private_modes() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let b = FsBackend::new(&dir).unwrap();
        b.write_at("x", 0, b"1").unwrap();
        let file_mode = fs::metadata(dir.join("x")).unwrap().permissions().mode();
        assert_eq!(file_mode & 0o777, FILE_MODE);
        let dir_mode = fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, DIR_MODE);
        b.remove("x").unwrap();
        roundtrip(&b);
    }

    #[test]
    fn fs_backend_reads_cached_bytes_inline_or_declines() {
        let tmp = tempfile::tempdir().unwrap();
        let b = FsBackend::new(tmp.path()).unwrap();
        let data: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        b.write_at("s", 0, &data).unwrap();
        b.sync("s").unwrap();
        // Just written, so in the page cache: filled inline on kernels with
        // RWF_NOWAIT for buffered reads; `false` (use read_at) elsewhere.
        let mut buf = vec![0u8; 65_536];
        if b.read_at_cached("s", 1000, &mut buf).unwrap() {
            assert_eq!(buf, data[1000..1000 + 65_536]);
        }
        let mut past = vec![0u8; 10];
        match b.read_at_cached("s", 69_995, &mut past) {
            Ok(filled) => assert!(!filled, "a read past the end cannot be filled"),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof),
        }
        assert_eq!(
            b.read_at_cached("missing", 0, &mut buf).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert!(!MemBackend::new().read_at_cached("s", 0, &mut buf).unwrap());
    }

    #[test]
    fn faulty_backend_fails_exactly_the_nth_write() {
        let f = FaultyBackend::new(Arc::new(MemBackend::new()), FaultOp::Write, 2, false);
        f.write_at("a", 0, b"1").unwrap();
        let err = f.write_at("a", 1, b"2").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(ENOSPC));
        f.write_at("a", 2, b"3").unwrap();
        assert_eq!(f.failures(), 1);
    }

    #[test]
    fn sticky_faulty_backend_keeps_failing_syncs() {
        let f = FaultyBackend::new(Arc::new(MemBackend::new()), FaultOp::Sync, 1, true);
        f.write_at("a", 0, b"1").unwrap();
        assert!(f.sync("a").is_err());
        assert!(f.sync("a").is_err());
        assert_eq!(f.failures(), 2);
    }
}
