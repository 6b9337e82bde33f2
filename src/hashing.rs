//! Parallel content hashing: the IO-side driver around [`proto::pccrc::build`].
//!
//! Segments (and v1 blocks) are independent, so they are hashed on several
//! cores at once. Work is cut into jobs: v1 runs of 16 blocks (1 MiB) whose
//! block hashes are joined into segment `HoD`s afterwards, and batches of v2
//! segments cut by the [`Chunker`] (which runs on the producer's thread).
//!
//! - [`hash_reader`] reads a [`Read`] on the calling thread and hands jobs to
//!   `threads` scoped worker threads through a channel holding `threads`
//!   jobs, so at most `2 × threads + 1` jobs are in memory.
//! - [`ParallelHasher`] is the push-style variant for async producers (the
//!   publisher streams an origin body into it). See its docs for the
//!   backpressure contract.
//!
//! Both produce exactly the [`ContentHashes`] the sequential
//! [`StreamBuilder`](crate::proto::pccrc::StreamBuilder) would.
//!
//! SHA-256 is `sha2` 0.10 (SHA-NI picked at run time through `cpufeatures`);
//! SHA-512 is `ring`'s assembly or `sha2`'s AVX2 path, whichever is faster on
//! the CPU (`proto::pccrc::crypto`). `docs/PERFORMANCE.md` has the measurements.
//!
//! [`proto::pccrc::build`]: crate::proto::pccrc::build

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io::{self, Read};
use std::num::NonZeroUsize;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use bytes::Bytes;

use crate::bufpool::{BufPool, PooledBuf};
use crate::proto::pccrc::{
    check_algo, hash_v1_blocks, hash_v2_segments, server_secret, v1_segment_from_blocks,
    BuildError, Chunker, ContentHashes, Digest, HashAlgo, SegmentHashes, ServerSecret, Version,
    BLOCK_SIZE, V1_SEGMENT_SIZE,
};

/// Bytes read per `read` call in [`hash_reader`]: large enough to amortise the
/// syscall, small enough to stay in the allocator's reusable heap.
pub const READ_CHUNK: usize = 1024 * 1024;
/// v2: a job is handed to a worker once its segments (~64 KiB each) hold this
/// many bytes, so per-job overhead stays negligible.
pub const JOB_TARGET_BYTES: u64 = 4 * 1024 * 1024;
/// v1: a job is a run of this many bytes (16 blocks) whose block hashes a
/// worker computes; segment `HoD`s are joined from them afterwards. Small runs
/// are hashed while still in cache, keep memory per hasher at a few MiB and
/// spread even a single 32 MiB segment over all cores.
pub const V1_RUN_BYTES: u64 = 16 * BLOCK_SIZE as u64;

/// [`ParallelHasher`] keeps up to this many jobs per pool thread queued or
/// running: one running and one ready, so a worker that finishes a job finds
/// the next one even when the producer is not scheduled at that moment (on a
/// small machine it shares the cores with the hashing threads).
pub const IN_FLIGHT_PER_THREAD: usize = 2;

/// The job size for `version` ([`V1_RUN_BYTES`] or [`JOB_TARGET_BYTES`]).
const fn job_target(version: Version) -> u64 {
    match version {
        Version::V1 => V1_RUN_BYTES,
        Version::V2 => JOB_TARGET_BYTES,
    }
}

/// Number of hashing threads to use when the caller asks for 0 ("all cores").
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// Bytes known but not yet hashed: one v2 segment, or a v1 run of whole blocks.
#[derive(Debug, Default)]
struct PendingSegment {
    offset: u64,
    len: u64,
    pieces: Vec<Bytes>,
}

/// Consecutive v2 segments or v1 block runs handed to one worker.
#[derive(Debug)]
struct Job {
    seq: u64,
    segments: Vec<PendingSegment>,
}

/// What a worker hands back for one [`Job`].
#[derive(Debug)]
enum Done {
    /// v2: finished segments.
    Segments(Vec<SegmentHashes>),
    /// v1: hashes of consecutive blocks.
    Blocks(Vec<Digest>),
}

impl Job {
    fn run(self, version: Version, algo: HashAlgo, ks: &ServerSecret) -> Done {
        match version {
            Version::V1 => self.run_v1(algo),
            Version::V2 => self.run_v2(algo, ks),
        }
    }

    /// v1: all blocks of the job's runs at once ([`hash_v1_blocks`] runs
    /// several in SIMD lanes). Blocks are borrowed from their read pieces;
    /// only a block straddling two pieces is copied ([`v1_blocks`]).
    fn run_v1(self, algo: HashAlgo) -> Done {
        let blocks: Vec<BlockBytes<'_>> = self
            .segments
            .iter()
            .flat_map(|run| v1_blocks(&run.pieces))
            .collect();
        let blocks: Vec<&[u8]> = blocks.iter().map(|b| &b[..]).collect();
        Done::Blocks(hash_v1_blocks(algo, &blocks))
    }

    /// Each v2 segment's bytes as one slice, borrowed when it arrived in one
    /// read piece.
    fn joined(&self) -> Vec<Cow<'_, [u8]>> {
        self.segments
            .iter()
            .map(|seg| match seg.pieces.as_slice() {
                [one] => Cow::Borrowed(&one[..]),
                many => Cow::Owned(many.concat()),
            })
            .collect()
    }

    /// v2: all segments of the job at once ([`hash_v2_segments`] runs several
    /// in SIMD lanes). A segment split over read pieces (a few percent of them)
    /// is copied into one buffer first.
    fn run_v2(self, algo: HashAlgo, ks: &ServerSecret) -> Done {
        let joined = self.joined();
        let segs: Vec<(u64, &[u8])> = self
            .segments
            .iter()
            .zip(&joined)
            .map(|(seg, data)| (seg.offset, &data[..]))
            .collect();
        Done::Segments(hash_v2_segments(algo, ks, &segs))
    }
}

/// One v1 block's bytes: borrowed from the piece that holds it whole, or
/// copied into a recycled buffer when it straddles pieces.
enum BlockBytes<'a> {
    Borrowed(&'a [u8]),
    Copied(PooledBuf),
}

impl std::ops::Deref for BlockBytes<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            BlockBytes::Borrowed(b) => b,
            BlockBytes::Copied(b) => b,
        }
    }
}

/// Buffers for straddling blocks: at most one per piece boundary, so a few
/// per job; recycled because fresh 64 KiB allocations cost a page fault per
/// 4 KiB.
fn straddle_pool() -> &'static Arc<BufPool> {
    static POOL: std::sync::LazyLock<Arc<BufPool>> =
        std::sync::LazyLock::new(|| BufPool::new(BLOCK_SIZE as usize, 64));
    &POOL
}

/// The 64 KiB blocks of a v1 run that arrived as `pieces` (in order): each
/// block borrowed from its piece, and copied only when it straddles two or
/// more pieces. An origin body arrives in frames of arbitrary size, so copying
/// whole runs cost a second pass over every byte; this copies at most one
/// block per piece boundary.
fn v1_blocks(pieces: &[Bytes]) -> Vec<BlockBytes<'_>> {
    let block = BLOCK_SIZE as usize;
    let mut out = Vec::new();
    // The start of a block that began in an earlier piece: borrowed while it
    // lies in one piece, copied once the block turns out to straddle.
    let mut partial: Option<BlockBytes<'_>> = None;
    for piece in pieces.iter().filter(|p| !p.is_empty()) {
        let mut rest = &piece[..];
        if let Some(started) = partial.take() {
            let mut joined = match started {
                BlockBytes::Copied(buf) => buf,
                BlockBytes::Borrowed(head) => {
                    let mut buf = straddle_pool().take_empty();
                    buf.extend_from_slice(head);
                    buf
                }
            };
            let take = (block - joined.len()).min(rest.len());
            let (head, tail) = rest.split_at(take);
            joined.extend_from_slice(head);
            rest = tail;
            let joined = BlockBytes::Copied(joined);
            if joined.len() == block {
                out.push(joined);
            } else {
                partial = Some(joined);
            }
        }
        let whole = rest.len() / block * block;
        let (blocks, tail) = rest.split_at(whole);
        out.extend(blocks.chunks(block).map(BlockBytes::Borrowed));
        if !tail.is_empty() {
            partial = Some(BlockBytes::Borrowed(tail));
        }
    }
    out.extend(partial);
    out
}

/// Join worker results (in job order) into the segments of a resource.
fn assemble(
    version: Version,
    algo: HashAlgo,
    ks: &ServerSecret,
    total_len: u64,
    done: impl IntoIterator<Item = Done>,
) -> ContentHashes {
    let mut segments = Vec::new();
    let mut blocks = Vec::new();
    for d in done {
        match d {
            Done::Segments(s) => segments.extend(s),
            Done::Blocks(b) => blocks.extend(b),
        }
    }
    if version == Version::V1 {
        let per_segment = (V1_SEGMENT_SIZE / BLOCK_SIZE) as usize;
        let mut offset = 0u64;
        let mut rest = blocks.into_iter();
        while offset < total_len {
            let size = (total_len - offset).min(u64::from(V1_SEGMENT_SIZE)) as u32;
            let hashes: Vec<Digest> = rest.by_ref().take(per_segment).collect();
            segments.push(v1_segment_from_blocks(algo, ks, offset, size, hashes));
            offset += u64::from(size);
        }
    }
    ContentHashes {
        version,
        algo,
        total_len,
        segments,
    }
}

/// Cuts a byte stream (as zero-copy [`Bytes`] pieces) into segments and
/// batches them into [`Job`]s.
#[derive(Debug)]
struct Splitter {
    version: Version,
    job_target: u64,
    chunker: Chunker,
    total_len: u64,
    current: PendingSegment,
    batch: Vec<PendingSegment>,
    batch_bytes: u64,
    next_seq: u64,
}

impl Splitter {
    /// `job_target`: bytes per job; for v1 rounded to whole blocks (at least one),
    /// which is also the run length.
    fn new(version: Version, job_target: u64) -> Self {
        let job_target = match version {
            Version::V1 => (job_target / u64::from(BLOCK_SIZE)).max(1) * u64::from(BLOCK_SIZE),
            Version::V2 => job_target,
        };
        Splitter {
            version,
            job_target,
            chunker: Chunker::new(),
            total_len: 0,
            current: PendingSegment::default(),
            batch: Vec::new(),
            batch_bytes: 0,
            next_seq: 0,
        }
    }

    /// Feed the next piece of the stream; completed jobs are appended to `out`.
    fn push(&mut self, mut data: Bytes, out: &mut Vec<Job>) {
        while !data.is_empty() {
            let cut = match self.version {
                Version::V1 => {
                    let room = self.job_target - self.current.len;
                    let n = usize::try_from(room).map_or(data.len(), |r| r.min(data.len()));
                    (n as u64 == room).then_some(n).ok_or(n)
                }
                Version::V2 => self.chunker.next_cut(&data).ok_or(data.len()),
            };
            let n = match cut {
                Ok(n) | Err(n) => n,
            };
            let head = data.split_to(n);
            self.total_len += n as u64;
            self.current.len += n as u64;
            self.current.pieces.push(head);
            if cut.is_ok() {
                self.end_segment(out);
            }
        }
    }

    fn end_segment(&mut self, out: &mut Vec<Job>) {
        let next = PendingSegment {
            offset: self.total_len,
            ..PendingSegment::default()
        };
        let done = std::mem::replace(&mut self.current, next);
        self.batch_bytes += done.len;
        self.batch.push(done);
        if self.batch_bytes >= self.job_target {
            self.flush(out);
        }
    }

    fn flush(&mut self, out: &mut Vec<Job>) {
        if self.batch.is_empty() {
            return;
        }
        out.push(Job {
            seq: self.next_seq,
            segments: std::mem::take(&mut self.batch),
        });
        self.next_seq += 1;
        self.batch_bytes = 0;
    }

    /// End of stream: the last (short) segment and any partial batch.
    fn finish(&mut self, out: &mut Vec<Job>) {
        if self.current.len > 0 {
            self.end_segment(out);
        }
        self.flush(out);
    }
}

/// Hash everything `r` yields with `threads` worker threads (0 = all cores).
///
/// Memory stays bounded: at most `2 × threads + 1` jobs (a v1 job is
/// [`V1_RUN_BYTES`], a v2 job ~[`JOB_TARGET_BYTES`]) exist at once; the reading thread
/// blocks until a worker is free. `progress` is called with the total number
/// of bytes read so far after every read. The output is identical for every
/// `threads` value.
pub fn hash_reader<R: Read>(
    r: R,
    version: Version,
    algo: HashAlgo,
    ks: &ServerSecret,
    threads: usize,
    progress: impl FnMut(u64),
) -> io::Result<ContentHashes> {
    hash_reader_with(r, version, algo, ks, threads, job_target(version), progress)
}

/// [`hash_reader`] with an explicit job size (tests use small jobs to get
/// many of them out of little data).
fn hash_reader_with<R: Read>(
    mut r: R,
    version: Version,
    algo: HashAlgo,
    ks: &ServerSecret,
    threads: usize,
    job_target: u64,
    mut progress: impl FnMut(u64),
) -> io::Result<ContentHashes> {
    let threads = if threads == 0 {
        default_threads()
    } else {
        threads
    };
    let mut splitter = Splitter::new(version, job_target);
    // Enough buffers for every job in flight, so steady state allocates nothing.
    let pool = BufPool::new(
        READ_CHUNK,
        (2 * threads + 2) * (splitter.job_target as usize / READ_CHUNK + 1),
    );
    let ks = *ks;
    let mut results: Vec<(u64, Done)> = Vec::new();
    std::thread::scope(|scope| -> io::Result<()> {
        // One queued job per worker: a worker finds its next job ready even when
        // the reader is not scheduled at that moment (a rendezvous channel
        // stalled v2 on a busy machine), while memory stays bounded.
        let (job_tx, job_rx) = mpsc::sync_channel::<Job>(threads);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (res_tx, res_rx) = mpsc::channel();
        for _ in 0..threads {
            let job_rx = Arc::clone(&job_rx);
            let res_tx = res_tx.clone();
            scope.spawn(move || loop {
                // Hold the lock only while waiting for the next job.
                let job = match job_rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return, // another worker panicked; the scope re-raises it
                };
                let Ok(job) = job else { return };
                let seq = job.seq;
                if res_tx.send((seq, job.run(version, algo, &ks))).is_err() {
                    return;
                }
            });
        }
        drop(res_tx);
        let mut jobs = Vec::new();
        let send = |jobs: &mut Vec<Job>| -> io::Result<()> {
            for job in jobs.drain(..) {
                job_tx
                    .send(job)
                    .map_err(|_| io::Error::other("hashing worker threads exited"))?;
            }
            Ok(())
        };
        loop {
            let buf = read_chunk(&pool, &mut r)?;
            if buf.is_empty() {
                break;
            }
            splitter.push(buf, &mut jobs);
            send(&mut jobs)?;
            progress(splitter.total_len);
        }
        splitter.finish(&mut jobs);
        send(&mut jobs)?;
        drop(job_tx);
        results.extend(res_rx.iter());
        Ok(())
    })?;
    results.sort_unstable_by_key(|(seq, _)| *seq);
    let done = results.into_iter().map(|(_, d)| d);
    Ok(assemble(version, algo, &ks, splitter.total_len, done))
}

/// Read up to [`READ_CHUNK`] bytes (fewer only at end of file) into a
/// recycled buffer: fresh memory costs a page fault per 4 KiB (~15 % of the
/// CPU time of v1 hashing when every chunk was newly allocated). The buffer
/// goes back to `pool` when the last [`Bytes`] view of it is dropped (by
/// the worker that hashed it). `read_to_end` on a `Take` lets readers such
/// as `File` fill spare capacity without zeroing it first, and retries
/// `Interrupted`.
fn read_chunk<R: Read>(pool: &Arc<BufPool>, r: &mut R) -> io::Result<Bytes> {
    let mut buf = pool.take_empty();
    r.by_ref().take(READ_CHUNK as u64).read_to_end(&mut buf)?;
    Ok(Bytes::from_owner(buf))
}

/// A fixed set of hashing threads shared by every [`ParallelHasher`] of its
/// owner (the publisher holds one).
///
/// Idle workers sleep in a blocking `recv`: on a small machine the hashing
/// threads share their cores with the thread reading the origin body and with
/// the origin itself, and a pool that spins or yields while it looks for work
/// (rayon's does, before it sleeps) takes CPU time from them; measured as 5 %
/// of the publisher's samples during a cold 1 GiB request.
///
/// The queue is unbounded, but each hasher keeps at most
/// [`IN_FLIGHT_PER_THREAD`] × `threads` jobs queued or running (see
/// [`ParallelHasher`]). Dropping the pool closes the
/// queue; each worker exits after the job it is running, if any.
#[derive(Debug)]
pub struct HashPool {
    tx: mpsc::Sender<Task>,
    threads: usize,
}

type Task = Box<dyn FnOnce() + Send>;

impl HashPool {
    /// Start `threads` workers (0 = all cores).
    ///
    /// # Errors
    /// The operating system refused to start a thread.
    pub fn new(threads: usize) -> io::Result<Arc<Self>> {
        let threads = if threads == 0 {
            default_threads()
        } else {
            threads
        };
        let (tx, rx) = mpsc::channel::<Task>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("hash-{i}"))
                .spawn(move || loop {
                    // Hold the lock only while waiting for the next task.
                    let task = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match task {
                        Ok(task) => task(),
                        Err(_) => return, // the pool was dropped
                    }
                })?;
        }
        Ok(Arc::new(HashPool { tx, threads }))
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    fn execute(&self, task: Task) {
        // The workers hold the receiver until the pool (and so this sender)
        // is dropped, so sending cannot fail while `self` is alive.
        let _ = self.tx.send(task);
    }
}

/// Push-style parallel hasher for async producers.
///
/// Feed the resource in order with [`push`](Self::push), then call
/// [`finish`](Self::finish). Contract:
///
/// - `push` does only cheap work on the caller's task: it slices the
///   [`Bytes`] (zero-copy) and, for v2, runs the chunker over them
///   (≥ 1.5 GB/s, i.e. ~40 µs for a 64 KiB frame).
/// - Hashing runs on a [`HashPool`], never on the async runtime's threads.
/// - Backpressure: at most [`IN_FLIGHT_PER_THREAD`] × the pool's threads
///   jobs are queued or running for one hasher (a v1 job is
///   [`V1_RUN_BYTES`], a v2 job ~[`JOB_TARGET_BYTES`]).
///   When that many are outstanding, `push` *awaits* a free slot, which in
///   turn stops the producer from reading more of its body. Nothing blocks a
///   runtime thread.
#[derive(Debug)]
pub struct ParallelHasher {
    pool: Arc<HashPool>,
    version: Version,
    algo: HashAlgo,
    ks: ServerSecret,
    splitter: Splitter,
    slots: Arc<tokio::sync::Semaphore>,
    /// Jobs spawned and not yet finished (for observability and tests).
    in_flight: Arc<AtomicUsize>,
    pending: VecDeque<tokio::sync::oneshot::Receiver<Done>>,
    done: Vec<Done>,
}

impl ParallelHasher {
    /// A hasher for one resource, run on `pool`, with at most
    /// [`IN_FLIGHT_PER_THREAD`] jobs per pool thread in flight. `ks` is the
    /// server secret for `algo`.
    pub fn new(pool: &Arc<HashPool>, version: Version, algo: HashAlgo, ks: ServerSecret) -> Self {
        let threads = pool.threads();
        ParallelHasher {
            pool: Arc::clone(pool),
            version,
            algo,
            ks,
            splitter: Splitter::new(version, job_target(version)),
            slots: Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT_PER_THREAD * threads)),
            in_flight: Arc::new(AtomicUsize::new(0)),
            pending: VecDeque::new(),
            done: Vec::new(),
        }
    }

    /// Bytes pushed so far.
    pub fn total_len(&self) -> u64 {
        self.splitter.total_len
    }

    /// Hashing jobs queued or running right now (never more than
    /// [`IN_FLIGHT_PER_THREAD`] × the pool's threads).
    pub fn jobs_in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Feed the next bytes of the resource; waits while `threads` jobs are
    /// outstanding (see the type docs).
    pub async fn push(&mut self, data: Bytes) {
        let mut jobs = Vec::new();
        self.splitter.push(data, &mut jobs);
        self.dispatch(jobs).await;
    }

    async fn dispatch(&mut self, jobs: Vec<Job>) {
        for job in jobs {
            let Ok(permit) = Arc::clone(&self.slots).acquire_owned().await else {
                unreachable!("the semaphore is never closed");
            };
            let (tx, rx) = tokio::sync::oneshot::channel();
            let (version, algo, ks) = (self.version, self.algo, self.ks);
            let in_flight = Arc::clone(&self.in_flight);
            in_flight.fetch_add(1, Ordering::AcqRel);
            self.pool.execute(Box::new(move || {
                let out = job.run(version, algo, &ks);
                in_flight.fetch_sub(1, Ordering::AcqRel);
                drop(permit);
                let _ = tx.send(out); // the hasher was dropped: nobody wants it
            }));
            self.pending.push_back(rx);
            self.collect_ready();
        }
    }

    /// Move finished jobs (in order) out of `pending` so it stays short.
    fn collect_ready(&mut self) {
        while let Some(rx) = self.pending.front_mut() {
            match rx.try_recv() {
                Ok(done) => {
                    self.done.push(done);
                    self.pending.pop_front();
                }
                Err(_) => break,
            }
        }
    }

    /// End of the resource: wait for every job and return the hashes.
    ///
    /// # Panics
    /// If a hashing job panicked (a bug; hashing itself cannot fail).
    pub async fn finish(mut self) -> ContentHashes {
        let mut jobs = Vec::new();
        self.splitter.finish(&mut jobs);
        self.dispatch(jobs).await;
        while let Some(rx) = self.pending.pop_front() {
            self.done.push(rx.await.expect("a hashing job panicked"));
        }
        let total_len = self.splitter.total_len;
        assemble(self.version, self.algo, &self.ks, total_len, self.done)
    }
}

/// What `branchcache hash` needs: a file, the server key and the encoding.
#[derive(Debug, Clone)]
pub struct HashFileRequest {
    /// The content to describe.
    pub path: PathBuf,
    /// File holding the raw server secret key bytes.
    pub key_file: PathBuf,
    /// Content information version.
    pub version: Version,
    /// Hash algorithm (v2: [`HashAlgo::Sha512Trunc`]).
    pub algo: HashAlgo,
    /// Inclusive byte range as given to `--range` (`START-END`, `START-`, `-SUFFIX`).
    pub range: Option<String>,
    /// Hashing threads (0 = all cores).
    pub threads: usize,
}

/// Why `branchcache hash` failed.
#[derive(Debug, thiserror::Error)]
pub enum HashFileError {
    /// The content file could not be opened or read.
    #[error("{path}: {source}")]
    Content {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: io::Error,
    },
    /// The key file could not be read.
    #[error("key file {path}: {source}")]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// The IO error.
        source: io::Error,
    },
    /// The key file is empty.
    #[error("key file {path} is empty: it must hold the raw server secret key bytes")]
    EmptyKey {
        /// The key file.
        path: PathBuf,
    },
    /// `--range` is not `START-END`, `START-` or `-SUFFIX`.
    #[error("bad range {0:?}: expected START-END (END inclusive), START- or -SUFFIX")]
    BadRange(String),
    /// `--range` reaches past the end of the file (or the file is empty).
    #[error("range {range:?} is outside the file ({len} bytes)")]
    RangePastEof {
        /// The range as given.
        range: String,
        /// The file length.
        len: u64,
    },
    /// The content information could not be built (empty file, bad algorithm …).
    #[error(transparent)]
    Build(#[from] BuildError),
}

impl HashFileError {
    /// True for mistakes in the invocation or its inputs (exit code 2), false
    /// for IO failures while reading.
    pub fn is_usage(&self) -> bool {
        !matches!(self, HashFileError::Content { source, .. } if source.kind() != io::ErrorKind::NotFound)
    }
}

/// Parse an HTTP-style inclusive byte range against a file of `len` bytes;
/// returns the half-open range.
pub fn parse_byte_range(spec: &str, len: u64) -> Result<Range<u64>, HashFileError> {
    let bad = || HashFileError::BadRange(spec.to_owned());
    let past = || HashFileError::RangePastEof {
        range: spec.to_owned(),
        len,
    };
    let spec_body = spec.trim();
    let spec_body = spec_body.strip_prefix("bytes=").unwrap_or(spec_body);
    let (a, b) = spec_body.split_once('-').ok_or_else(bad)?;
    let num = |s: &str| -> Result<u64, HashFileError> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let range = match (a.is_empty(), b.is_empty()) {
        (true, true) => return Err(bad()),
        (true, false) => {
            let suffix = num(b)?;
            if suffix == 0 {
                return Err(bad());
            }
            if suffix > len {
                return Err(past());
            }
            len - suffix..len
        }
        (false, true) => num(a)?..len,
        (false, false) => {
            let (start, last) = (num(a)?, num(b)?);
            if last < start {
                return Err(bad());
            }
            start..last.checked_add(1).ok_or_else(past)?
        }
    };
    if range.start >= range.end || range.end > len {
        return Err(past());
    }
    Ok(range)
}

/// Hash a file and encode its content information (whole file or the
/// requested range). `progress` receives the bytes hashed so far.
pub fn hash_file(
    req: &HashFileRequest,
    progress: impl FnMut(u64),
) -> Result<Vec<u8>, HashFileError> {
    check_algo(req.version, req.algo)?;
    let key = std::fs::read(&req.key_file).map_err(|source| HashFileError::KeyFile {
        path: req.key_file.clone(),
        source,
    })?;
    if key.is_empty() {
        return Err(HashFileError::EmptyKey {
            path: req.key_file.clone(),
        });
    }
    let content_err = |source| HashFileError::Content {
        path: req.path.clone(),
        source,
    };
    let file = std::fs::File::open(&req.path).map_err(content_err)?;
    let len = file.metadata().map_err(content_err)?.len();
    if len == 0 {
        return Err(BuildError::EmptyContent.into());
    }
    let range = req
        .range
        .as_deref()
        .map(|spec| parse_byte_range(spec, len))
        .transpose()?;
    let ks = server_secret(req.algo, &key);
    let hashes = hash_reader(file, req.version, req.algo, &ks, req.threads, progress)
        .map_err(content_err)?;
    Ok(hashes.encode(range)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::pccrc::{hash_content, server_secret};
    use proptest::prelude::*;

    fn data(len: usize) -> Vec<u8> {
        let mut state = 0x1234_5678_9abc_def0u64;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    fn pick(v2: bool) -> (Version, HashAlgo) {
        if v2 {
            (Version::V2, HashAlgo::Sha512Trunc)
        } else {
            (Version::V1, HashAlgo::Sha256)
        }
    }

    /// A reader that returns at most `step` bytes per call.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn hash_reader_matches_the_sequential_builder_across_v1_segments() {
        let (version, algo) = pick(false);
        let ks = server_secret(algo, b"k");
        let bytes = data(2 * V1_SEGMENT_SIZE as usize + 100_000);
        let want = hash_content(version, algo, &ks, &bytes);
        assert_eq!(want.segments.len(), 3);
        for threads in [1, 3] {
            let mut seen = Vec::new();
            let got =
                hash_reader(&bytes[..], version, algo, &ks, threads, |n| seen.push(n)).unwrap();
            assert_eq!(got, want);
            assert_eq!(seen.last(), Some(&(bytes.len() as u64)));
            assert!(seen.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn v1_segment_boundary_plus_minus_one_byte() {
        let (version, algo) = pick(false);
        let ks = server_secret(algo, b"k");
        let seg = V1_SEGMENT_SIZE as usize;
        let bytes = data(seg + 1);
        for (len, segments) in [(seg - 1, 1), (seg, 1), (seg + 1, 2)] {
            let want = hash_content(version, algo, &ks, &bytes[..len]);
            assert_eq!(want.segments.len(), segments, "{len}");
            let got = hash_reader(&bytes[..len], version, algo, &ks, 2, |_| {}).unwrap();
            assert_eq!(got, want, "{len}");
            let ci = got.encode(None).unwrap();
            let info = crate::proto::pccrc::ContentInfo::parse(&ci).unwrap();
            assert_eq!(info.range(), 0..len as u64);
            let last = info.segment(segments - 1).unwrap();
            assert_eq!(
                u64::from(last.block_count()),
                (last.size() as u64).div_ceil(65_536)
            );
        }
    }

    #[test]
    fn hash_reader_reports_read_errors() {
        struct Broken(usize);
        impl Read for Broken {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("disk on fire"));
                }
                let n = self.0.min(buf.len());
                buf[..n].fill(7);
                self.0 -= n;
                Ok(n)
            }
        }
        let algo = HashAlgo::Sha256;
        let ks = server_secret(algo, b"k");
        let err = hash_reader(Broken(40 << 20), Version::V1, algo, &ks, 2, |_| {}).unwrap_err();
        assert_eq!(err.to_string(), "disk on fire");
    }

    #[test]
    fn empty_input_has_no_segments() {
        for v2 in [false, true] {
            let (version, algo) = pick(v2);
            let ks = server_secret(algo, b"k");
            let got = hash_reader(&[][..], version, algo, &ks, 2, |_| {}).unwrap();
            assert_eq!(got.total_len, 0);
            assert!(got.segments.is_empty());
        }
    }

    /// The publisher holds a hasher across `.await`s inside spawned tasks.
    #[allow(dead_code)]
    fn parallel_hasher_futures_are_send(h: &mut ParallelHasher, owned: ParallelHasher) {
        fn is_send<T: Send>(_: T) {}
        is_send(h.push(Bytes::new()));
        is_send(owned.finish());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parallel_hasher_bounds_its_jobs_in_flight() {
        let (version, algo) = pick(false);
        let ks = server_secret(algo, b"k");
        let bytes = Bytes::from(data(24 << 20));
        let mut h = ParallelHasher::new(&HashPool::new(2).unwrap(), version, algo, ks);
        let mut most = 0;
        for frame in bytes.chunks(64 * 1024) {
            h.push(bytes.slice_ref(frame)).await;
            most = most.max(h.jobs_in_flight());
            assert!(
                h.jobs_in_flight() <= 2 * IN_FLIGHT_PER_THREAD,
                "{} jobs in flight",
                h.jobs_in_flight()
            );
        }
        assert!(most > 0, "no job was ever in flight");
        assert_eq!(h.finish().await, hash_content(version, algo, &ks, &bytes));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parallel_hasher_matches_the_sequential_builder() {
        for v2 in [false, true] {
            let (version, algo) = pick(v2);
            let ks = server_secret(algo, b"k");
            let bytes = Bytes::from(data(V1_SEGMENT_SIZE as usize + 9_000_000));
            let want = hash_content(version, algo, &ks, &bytes);
            let mut h = ParallelHasher::new(&HashPool::new(2).unwrap(), version, algo, ks);
            let mut pos = 0;
            let mut step = 1000;
            while pos < bytes.len() {
                let n = step.min(bytes.len() - pos);
                h.push(bytes.slice(pos..pos + n)).await;
                pos += n;
                step = step * 7 % 300_000 + 1;
            }
            assert_eq!(h.total_len(), bytes.len() as u64);
            assert_eq!(h.finish().await, want);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// However a v1 run is cut into pieces, its blocks are the 64 KiB
        /// chunks of the joined bytes, and only straddling blocks are copied.
        #[test]
        fn v1_blocks_are_the_chunks_of_the_joined_pieces(
            len in 0usize..600_000,
            cuts in proptest::collection::vec(0usize..600_000, 0..12),
        ) {
            let bytes = Bytes::from(data(len));
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(len)).collect();
            cuts.extend([0, len]);
            cuts.sort_unstable();
            let pieces: Vec<Bytes> = cuts.windows(2).map(|w| bytes.slice(w[0]..w[1])).collect();
            let blocks = v1_blocks(&pieces);
            let want: Vec<&[u8]> = bytes.chunks(BLOCK_SIZE as usize).collect();
            prop_assert_eq!(blocks.len(), want.len());
            let mut copied = 0;
            for (got, want) in blocks.iter().zip(&want) {
                prop_assert_eq!(&got[..], *want);
                copied += usize::from(matches!(got, BlockBytes::Copied(_)));
            }
            let boundaries = pieces.iter().filter(|p| !p.is_empty()).count().saturating_sub(1);
            prop_assert!(copied <= boundaries, "{copied} copies for {boundaries} piece boundaries");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn thread_count_and_read_sizes_do_not_change_the_output(
            v2 in any::<bool>(),
            len in prop_oneof![0usize..3, 1usize..3_000_000],
            step in 1usize..2_000_000,
            threads in 2usize..5,
            job_target in 1u64..600_000,
        ) {
            let (version, algo) = pick(v2);
            let ks = server_secret(algo, b"k");
            let bytes = data(len);
            let one = hash_reader(&bytes[..], version, algo, &ks, 1, |_| {}).unwrap();
            let many = hash_reader_with(Trickle(&bytes, step), version, algo, &ks, threads, job_target, |_| {}).unwrap();
            prop_assert_eq!(&one, &many);
            prop_assert_eq!(one, hash_content(version, algo, &ks, &bytes));
        }
    }

    #[test]
    fn byte_ranges_are_inclusive_like_http() {
        assert_eq!(parse_byte_range("0-0", 10).unwrap(), 0..1);
        assert_eq!(parse_byte_range("2-9", 10).unwrap(), 2..10);
        assert_eq!(parse_byte_range("bytes=2-5", 10).unwrap(), 2..6);
        assert_eq!(parse_byte_range("7-", 10).unwrap(), 7..10);
        assert_eq!(parse_byte_range("-3", 10).unwrap(), 7..10);
        for bad in ["", "-", "5", "a-b", "5-3", "-0", "+1-2", "1-+2", " 1 - 2"] {
            assert!(
                matches!(parse_byte_range(bad, 10), Err(HashFileError::BadRange(_))),
                "{bad:?}"
            );
        }
        for past in ["0-10", "10-", "-11", "10-10", "0-18446744073709551615"] {
            assert!(
                matches!(
                    parse_byte_range(past, 10),
                    Err(HashFileError::RangePastEof { .. })
                ),
                "{past:?}"
            );
        }
    }
}
