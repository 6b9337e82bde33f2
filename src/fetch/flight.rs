//! The planner proper: per-segment single-flight fetches and the ordered,
//! verified body stream of an object range.
//!
//! A *flight* fetches every listed block of one segment that the store lacks:
//! first from each configured [`BlockSource`] in order, then from the origin
//! (one request per run of missing blocks, bounded parallelism). Blocks land
//! in the flight's slots as they are verified, waiters are woken, and the
//! block goes to the store. The flight runs in its own task, so a slow or
//! vanished client never stalls the fetch or the other waiters.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use tokio::sync::{watch, Semaphore};

use super::{BlockSource, BlockStore, SegmentPlan, SourceError, SourceKind};
use crate::metrics::Metrics;
use crate::proto::pccrc::SegmentId;

/// Runs of missing blocks fetched at once within one segment: a few parallel
/// streams fill a long-fat WAN pipe; more only adds origin load.
const RUNS_PER_SEGMENT: usize = 4;

/// Largest run of blocks asked of a source in one request (origin: 16 MiB),
/// so several requests can proceed in parallel on a cold segment.
const MAX_RUN_BLOCKS: u32 = 256;

/// Store writes one run keeps in flight. Each write is durable (fsync +
/// index commit) before it completes; awaiting them one by one capped a
/// cold fetch at one store batch per block (~30 MB/s on loopback peers).
/// Concurrent writes share the store writer's batches. The blocks are held
/// by the flight's slots anyway, so this adds no memory.
const STORE_WRITES_IN_FLIGHT_PER_RUN: usize = 64;

/// How many times a reader retries a block that vanished from the store
/// between the presence check and the read (eviction, corruption).
const MAX_BLOCK_ATTEMPTS: u32 = 3;

/// Bytes of stored blocks one stream reads at once, and keeps one such run
/// in flight ahead of what it sends: the next run is read and CRC-checked on
/// the blocking pool (the other core) while hyper writes the current one.
/// 256 KiB (4 v1 blocks) amortises the read's thread hand-off and file open;
/// per stream at most two runs are held (≤ 512 KiB), so 64 concurrent
/// downloads stay far below the proxy's memory bound. Matches the store's
/// pooled read buffer size.
const READ_RUN_BYTES: u32 = 256 * 1024;

/// Segments fetched ahead of the one being streamed, so segment boundaries
/// do not stall a cold download.
const READAHEAD_SEGMENTS: usize = 1;

/// Tunables of the planner.
#[derive(Debug, Clone)]
pub struct PlannerOptions {
    /// Concurrent origin range requests across all flights.
    pub origin_parallelism: usize,
}

impl Default for PlannerOptions {
    fn default() -> Self {
        PlannerOptions {
            origin_parallelism: crate::config::DEFAULT_ORIGIN_PARALLELISM as usize,
        }
    }
}

/// Why the planner could not produce a byte range.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// The last source tried (the origin) failed.
    #[error("segment {segment}: {error}")]
    Source {
        /// Segment id (hex).
        segment: String,
        /// What went wrong.
        error: SourceError,
    },
    /// A source delivered bytes that do not match the content information.
    #[error("segment {segment} block {block}: {source_kind} sent bytes that do not match the content information")]
    Mismatch {
        /// Segment id (hex).
        segment: String,
        /// Block index.
        block: u32,
        /// Which source lied.
        source_kind: &'static str,
    },
    /// Every source was tried and some blocks are still missing.
    #[error("segment {segment}: block {block} could not be fetched")]
    Incomplete {
        /// Segment id (hex).
        segment: String,
        /// First missing block.
        block: u32,
    },
    /// The content information does not describe the requested byte.
    #[error("content information does not cover byte {offset}")]
    NotCovered {
        /// The byte offset.
        offset: u64,
    },
}

impl FetchError {
    /// Short stable name for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            FetchError::Source { error, .. } => error.kind(),
            FetchError::Mismatch { .. } => "mismatch",
            FetchError::Incomplete { .. } => "incomplete",
            FetchError::NotCovered { .. } => "not_covered",
        }
    }

    /// True when a source timed out (the client should see 504).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            FetchError::Source {
                error: SourceError::Timeout { .. },
                ..
            }
        )
    }
}

/// A piece of the response body and where its bytes came from.
#[derive(Debug, Clone)]
pub struct BodyChunk {
    /// Identity bytes, already trimmed to the requested range.
    pub data: Bytes,
    /// Source of the block these bytes belong to.
    pub source: SourceKind,
}

#[derive(Debug, Clone)]
enum Slot {
    /// Still to be fetched.
    Pending,
    /// Present in the store when the flight started; not fetched.
    Skipped,
    /// Verified bytes.
    Ready(Bytes, SourceKind),
}

#[derive(Debug)]
struct FlightState {
    slots: Vec<Slot>,
    done: bool,
    error: Option<FetchError>,
}

#[derive(Debug)]
struct Flight {
    state: Mutex<FlightState>,
    changed: watch::Sender<u64>,
}

enum Waited {
    Ready(Bytes, SourceKind),
    /// The flight did not fetch it (it was in the store); read the store again.
    Skipped,
}

impl Flight {
    fn lock(&self) -> std::sync::MutexGuard<'_, FlightState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    async fn wait(&self, j: u32, segment: &SegmentPlan) -> Result<Waited, FetchError> {
        let mut rx = self.changed.subscribe();
        loop {
            {
                let st = self.lock();
                match st.slots.get(j as usize) {
                    Some(Slot::Ready(b, s)) => return Ok(Waited::Ready(b.clone(), *s)),
                    Some(Slot::Skipped) => return Ok(Waited::Skipped),
                    Some(Slot::Pending) if !st.done => {}
                    Some(Slot::Pending) | None => {
                        return Err(st.error.clone().unwrap_or(FetchError::Incomplete {
                            segment: segment.id.to_hex(),
                            block: j,
                        }))
                    }
                }
            }
            if rx.changed().await.is_err() {
                // Unreachable while we hold the flight (it owns the sender).
                return Err(FetchError::Incomplete {
                    segment: segment.id.to_hex(),
                    block: j,
                });
            }
        }
    }

    async fn wait_done(&self) {
        let mut rx = self.changed.subscribe();
        while !self.lock().done {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

/// The fetch planner: shared by every proxy request (cheap to clone).
#[derive(Debug, Clone)]
pub struct Planner {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn BlockStore>,
    sources: Vec<Arc<dyn BlockSource>>,
    flights: Mutex<HashMap<SegmentId, Arc<Flight>>>,
    origin_permits: Semaphore,
    metrics: Arc<Metrics>,
    observer: std::sync::OnceLock<Arc<dyn super::FetchObserver>>,
    /// Woken when the last running flight ends ([`Planner::wait_idle`]).
    idle: tokio::sync::Notify,
}

impl Planner {
    /// The store this planner reads first and writes every verified block to.
    pub fn store(&self) -> &Arc<dyn BlockStore> {
        &self.inner.store
    }

    /// A planner over `store`, trying `sources` (hosted cache, peers) in order
    /// before the origin given per request.
    pub fn new(
        store: Arc<dyn BlockStore>,
        sources: Vec<Arc<dyn BlockSource>>,
        options: PlannerOptions,
        metrics: Arc<Metrics>,
    ) -> Planner {
        Planner {
            inner: Arc::new(Inner {
                store,
                sources,
                flights: Mutex::new(HashMap::new()),
                origin_permits: Semaphore::new(options.origin_parallelism.max(1)),
                metrics,
                observer: std::sync::OnceLock::new(),
                idle: tokio::sync::Notify::new(),
            }),
        }
    }

    /// Tell `observer` about every completed segment from now on (set once;
    /// a second call is ignored and returns false).
    pub fn set_observer(&self, observer: Arc<dyn super::FetchObserver>) -> bool {
        self.inner.observer.set(observer).is_ok()
    }

    /// Wait until no segment fetch is running (shutdown: let fetches land in
    /// the store before it closes). New flights may start meanwhile; this
    /// returns at the first moment there are none.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.flights_in_progress() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Number of segment fetches currently running (for tests and `/status`).
    pub fn flights_in_progress(&self) -> usize {
        self.inner
            .flights
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// The verified identity bytes of `range` of the object described by
    /// `segments` (in order, contiguous), fetching what the store lacks from
    /// the configured sources and finally from `origin`. Chunks arrive in
    /// order; the stream ends after `range.end` or with the first error.
    pub fn stream(
        &self,
        segments: Arc<[Arc<SegmentPlan>]>,
        origin: Arc<dyn BlockSource>,
        range: Range<u64>,
    ) -> BoxStream<'static, Result<BodyChunk, FetchError>> {
        let state = StreamState {
            planner: self.clone(),
            segments,
            origin,
            end: range.end,
            pos: range.start,
            seg_idx: 0,
            failed: false,
            held: Vec::new(),
            ready: std::collections::VecDeque::new(),
            reading: None,
        };
        stream::unfold(state, |mut st| async move {
            if st.failed || st.pos >= st.end {
                return None;
            }
            let item = st.next_chunk().await;
            if item.is_err() {
                st.failed = true;
            }
            Some((item, st))
        })
        .boxed()
    }

    /// Join the running flight for `seg` or start one.
    fn flight(&self, seg: &Arc<SegmentPlan>, origin: &Arc<dyn BlockSource>) -> Arc<Flight> {
        let mut flights = self.inner.flights.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = flights.get(&seg.id) {
            return f.clone();
        }
        let (changed, _) = watch::channel(0);
        let flight = Arc::new(Flight {
            state: Mutex::new(FlightState {
                slots: vec![Slot::Pending; seg.block_hashes.len()],
                done: false,
                error: None,
            }),
            changed,
        });
        flights.insert(seg.id, flight.clone());
        drop(flights);
        let planner = self.clone();
        let seg = seg.clone();
        let origin = origin.clone();
        let f = flight.clone();
        tokio::spawn(async move {
            planner.run_flight(&seg, &f, origin).await;
            f.lock().done = true;
            f.notify();
            let mut flights = planner
                .inner
                .flights
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if flights.get(&seg.id).is_some_and(|x| Arc::ptr_eq(x, &f)) {
                flights.remove(&seg.id);
            }
            if flights.is_empty() {
                planner.inner.idle.notify_waiters();
            }
        });
        flight
    }

    /// Start (or join) a flight for `seg` unless every block is already stored.
    fn prefetch(
        &self,
        seg: &Arc<SegmentPlan>,
        origin: &Arc<dyn BlockSource>,
    ) -> Option<Arc<Flight>> {
        let store = &self.inner.store;
        (0..seg.block_count())
            .any(|j| !store.has(seg, j))
            .then(|| self.flight(seg, origin))
    }

    async fn run_flight(
        &self,
        seg: &Arc<SegmentPlan>,
        flight: &Arc<Flight>,
        origin: Arc<dyn BlockSource>,
    ) {
        {
            let mut st = flight.lock();
            for (j, slot) in st.slots.iter_mut().enumerate() {
                if self.inner.store.has(seg, j as u32) {
                    *slot = Slot::Skipped;
                }
            }
        }
        let sources = self
            .inner
            .sources
            .iter()
            .cloned()
            .chain(std::iter::once(origin));
        let mut last_error = None;
        for source in sources {
            let runs = pending_runs(&flight.lock().slots);
            if runs.is_empty() {
                break;
            }
            let is_origin = source.kind() == SourceKind::Origin;
            let errors = Mutex::new(Vec::new());
            stream::iter(runs)
                .for_each_concurrent(RUNS_PER_SEGMENT, |run| {
                    let source = source.clone();
                    let errors = &errors;
                    async move {
                        let _permit = if is_origin {
                            self.inner.origin_permits.acquire().await.ok()
                        } else {
                            None
                        };
                        if let Err(e) = self.fetch_run(seg, flight, &*source, run).await {
                            errors.lock().unwrap_or_else(|e| e.into_inner()).push(e);
                        }
                    }
                })
                .await;
            let errors = errors.into_inner().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = errors.into_iter().next() {
                if is_origin {
                    self.inner
                        .metrics
                        .proxy_origin_errors
                        .get_or_create(&[("kind", e.kind())])
                        .inc();
                }
                tracing::debug!(segment = %seg.id, source = source.kind().as_str(), error = %e, "source failed");
                last_error = Some(e);
            }
        }
        let mut st = flight.lock();
        let complete = !st.slots.iter().any(|s| matches!(s, Slot::Pending));
        if complete {
            if let Some(observer) = self.inner.observer.get() {
                let origin_bytes: u64 = st
                    .slots
                    .iter()
                    .map(|s| match s {
                        Slot::Ready(data, SourceKind::Origin) => data.len() as u64,
                        _ => 0,
                    })
                    .sum();
                observer.segment_fetched(seg, origin_bytes);
            }
        }
        if let Some(first) = st.slots.iter().position(|s| matches!(s, Slot::Pending)) {
            let err = last_error.unwrap_or(FetchError::Incomplete {
                segment: seg.id.to_hex(),
                block: first as u32,
            });
            tracing::warn!(segment = %seg.id, error = %err, "segment fetch failed");
            st.error = Some(err);
        }
    }

    /// Fetch one run from one source, verifying and publishing each block.
    ///
    /// Store writes run beside the fetch (at most
    /// [`STORE_WRITES_IN_FLIGHT_PER_RUN`] at once) and are all finished
    /// before this returns, so the flight still ends with its blocks stored.
    async fn fetch_run(
        &self,
        seg: &Arc<SegmentPlan>,
        flight: &Flight,
        source: &dyn BlockSource,
        run: Range<u32>,
    ) -> Result<(), FetchError> {
        let mut writes = tokio::task::JoinSet::new();
        let result = self
            .fetch_run_blocks(seg, flight, source, run, &mut writes)
            .await;
        while writes.join_next().await.is_some() {}
        result
    }

    async fn fetch_run_blocks(
        &self,
        seg: &Arc<SegmentPlan>,
        flight: &Flight,
        source: &dyn BlockSource,
        run: Range<u32>,
        writes: &mut tokio::task::JoinSet<()>,
    ) -> Result<(), FetchError> {
        let mut blocks = source.fetch(seg.clone(), run);
        let verified = source.yields_verified();
        while let Some(item) = blocks.next().await {
            let block = item.map_err(|error| FetchError::Source {
                segment: seg.id.to_hex(),
                error,
            })?;
            if !verified && !seg.verify(block.index, &block.data) {
                tracing::warn!(segment = %seg.id, block = block.index, source = source.kind().as_str(), "block does not match its hash");
                return Err(FetchError::Mismatch {
                    segment: seg.id.to_hex(),
                    block: block.index,
                    source_kind: source.kind().as_str(),
                });
            }
            {
                let mut st = flight.lock();
                match st.slots.get_mut(block.index as usize) {
                    Some(slot @ Slot::Pending) => {
                        *slot = Slot::Ready(block.data.clone(), source.kind())
                    }
                    _ => continue,
                }
            }
            flight.notify();
            while writes.len() >= STORE_WRITES_IN_FLIGHT_PER_RUN {
                writes.join_next().await;
            }
            writes.spawn(self.inner.store.put(seg, block.index, block.data));
        }
        Ok(())
    }
}

/// Runs of consecutive pending slots, each at most [`MAX_RUN_BLOCKS`] long.
fn pending_runs(slots: &[Slot]) -> Vec<Range<u32>> {
    let mut runs = Vec::new();
    let mut start: Option<u32> = None;
    for (j, slot) in slots.iter().enumerate() {
        let j = j as u32;
        let pending = matches!(slot, Slot::Pending);
        match (start, pending) {
            (None, true) => start = Some(j),
            (Some(s), true) if j - s == MAX_RUN_BLOCKS => {
                runs.push(s..j);
                start = Some(j);
            }
            (Some(s), false) => {
                runs.push(s..j);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        runs.push(s..slots.len() as u32);
    }
    runs
}

struct StreamState {
    planner: Planner,
    segments: Arc<[Arc<SegmentPlan>]>,
    origin: Arc<dyn BlockSource>,
    end: u64,
    pos: u64,
    seg_idx: usize,
    failed: bool,
    /// Flights for the current and read-ahead segments.
    held: Vec<(usize, Arc<Flight>)>,
    /// Stored blocks already read and checked, in stream order:
    /// (segment index, block index, bytes).
    ready: std::collections::VecDeque<(usize, u32, Bytes)>,
    /// The store read running ahead: its first (segment index, block index).
    reading: Option<(usize, u32, tokio::task::JoinHandle<Vec<Bytes>>)>,
}

impl StreamState {
    async fn next_chunk(&mut self) -> Result<BodyChunk, FetchError> {
        let not_covered = FetchError::NotCovered { offset: self.pos };
        while self
            .segments
            .get(self.seg_idx)
            .is_some_and(|s| s.listed_range().end <= self.pos)
        {
            self.seg_idx += 1;
        }
        let current = self.seg_idx;
        self.held.retain(|(i, _)| *i >= current);
        let seg = self
            .segments
            .get(self.seg_idx)
            .cloned()
            .ok_or(not_covered.clone())?;
        if self.pos < seg.offset || seg.block_size == 0 {
            return Err(not_covered);
        }
        let j = u32::try_from((self.pos - seg.offset) / u64::from(seg.block_size))
            .map_err(|_| not_covered.clone())?;
        let block_range = seg.block_range(j).ok_or(not_covered)?;
        let (data, source) = self.block(&seg, j).await?;
        let from = (self.pos - block_range.start) as usize;
        let to = (self.end.min(block_range.end) - block_range.start) as usize;
        self.pos = block_range.start + to as u64;
        Ok(BodyChunk {
            data: data.slice(from..to),
            source,
        })
    }

    /// A flight this stream holds for segment `idx` (so its verified blocks
    /// stay reachable even after the flight finished and left the map).
    fn held(&self, idx: usize) -> Option<Arc<Flight>> {
        self.held
            .iter()
            .find(|(i, _)| *i == idx)
            .map(|(_, f)| f.clone())
    }

    fn hold(&mut self, idx: usize, flight: Arc<Flight>) {
        if self.held(idx).is_none() {
            self.held.push((idx, flight));
        }
    }

    async fn block(
        &mut self,
        seg: &Arc<SegmentPlan>,
        j: u32,
    ) -> Result<(Bytes, SourceKind), FetchError> {
        let store = self.planner.inner.store.clone();
        let expected = seg.block_len(j);
        let idx = self.seg_idx;
        for _ in 0..MAX_BLOCK_ATTEMPTS {
            let flight = match self.held(idx) {
                Some(f) => f,
                None => {
                    if let Some(data) = self.store_block(idx, seg, j).await {
                        if Some(data.len()) == expected {
                            return Ok((data, SourceKind::Store));
                        }
                    }
                    let f = self.planner.flight(seg, &self.origin);
                    self.hold(idx, f.clone());
                    self.readahead();
                    f
                }
            };
            match flight.wait(j, seg).await? {
                Waited::Ready(data, source) => return Ok((data, source)),
                Waited::Skipped => {
                    if let Some(data) = store.get(seg, j).await {
                        if Some(data.len()) == expected {
                            return Ok((data, SourceKind::Store));
                        }
                    }
                    // In the store when the flight began, but not readable now
                    // (evicted or corrupt): let this flight end, then start afresh.
                    self.held.retain(|(i, _)| *i != idx);
                    flight.wait_done().await;
                }
            }
        }
        Err(FetchError::Incomplete {
            segment: seg.id.to_hex(),
            block: j,
        })
    }

    /// Block `j` of segment `idx` from the store: from the blocks read
    /// ahead, the read in flight, or a new run read; then start the next
    /// run. `None` when the store does not have it.
    async fn store_block(&mut self, idx: usize, seg: &Arc<SegmentPlan>, j: u32) -> Option<Bytes> {
        while let Some(&(i, k, _)) = self.ready.front() {
            if (i, k) == (idx, j) {
                let data = self.ready.pop_front().map(|(_, _, d)| d);
                self.read_ahead(idx, j);
                return data;
            }
            if (i, k) < (idx, j) {
                self.ready.pop_front();
            } else {
                self.ready.clear();
            }
        }
        let pending = match self.reading.take() {
            Some((i, k, handle)) if (i, k) == (idx, j) => Some(handle),
            // Read for a position the stream no longer wants: let it finish
            // on its own (a blocking read cannot be interrupted).
            Some(_) | None => None,
        };
        let store = &self.planner.inner.store;
        let blocks = match pending {
            Some(handle) => handle.await.unwrap_or_default(),
            None => {
                if !store.has(seg, j) {
                    return None;
                }
                let n = self.run_len(seg, j);
                match store.get_run_now(seg, j, n) {
                    Some(blocks) => blocks,
                    None => store.get_run(seg, j, n).await,
                }
            }
        };
        let mut blocks = blocks.into_iter();
        let first = blocks.next();
        for (n, data) in blocks.enumerate() {
            self.ready.push_back((idx, j + 1 + n as u32, data));
        }
        if first.is_some() {
            self.read_ahead(idx, j);
        }
        first
    }

    /// Blocks of `seg` from `j` one store read covers: [`READ_RUN_BYTES`]
    /// worth, within the segment and the stream's range.
    fn run_len(&self, seg: &SegmentPlan, j: u32) -> u32 {
        let per_run = (READ_RUN_BYTES / seg.block_size.max(1)).max(1);
        let mut n = 0;
        while n < per_run && seg.block_range(j + n).is_some_and(|r| r.start < self.end) {
            n += 1;
        }
        n.max(1)
    }

    /// Start reading the run after the last block held (or after block `j`
    /// of segment `idx`), unless a read is already running, it would cross
    /// into a segment being fetched, or the store lacks its first block.
    fn read_ahead(&mut self, idx: usize, j: u32) {
        // One run in flight, or more than one block still held: enough
        // ahead (bounds what a stream holds to about two runs).
        if self.reading.is_some() || self.ready.len() > 1 {
            return;
        }
        let (i, k) = self.ready.back().map_or((idx, j), |&(i, k, _)| (i, k));
        let Some(seg) = self.segments.get(i) else {
            return;
        };
        let (i, k) = if k + 1 < seg.block_count() {
            (i, k + 1)
        } else {
            (i + 1, 0)
        };
        let Some(seg) = self.segments.get(i).cloned() else {
            return;
        };
        if !seg.block_range(k).is_some_and(|r| r.start < self.end) || self.held(i).is_some() {
            return;
        }
        let store = &self.planner.inner.store;
        if !store.has(&seg, k) {
            return;
        }
        let n = self.run_len(&seg, k);
        // In the page cache: take it now, no task and no thread hand-off.
        if let Some(blocks) = store.get_run_now(&seg, k, n) {
            for (m, data) in blocks.into_iter().enumerate() {
                self.ready.push_back((i, k + m as u32, data));
            }
            return;
        }
        let read = store.get_run(&seg, k, n);
        self.reading = Some((i, k, tokio::spawn(read)));
    }

    fn readahead(&mut self) {
        let ahead: Vec<(usize, Arc<SegmentPlan>)> = self
            .segments
            .iter()
            .enumerate()
            .skip(self.seg_idx + 1)
            .take(READAHEAD_SEGMENTS)
            .filter(|(_, s)| s.offset < self.end)
            .map(|(i, s)| (i, s.clone()))
            .collect();
        for (i, seg) in ahead {
            if let Some(f) = self.planner.prefetch(&seg, &self.origin) {
                self.hold(i, f);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_runs_merge_adjacent_blocks_and_split_long_runs() {
        use Slot::*;
        let r = Ready(Bytes::new(), SourceKind::Store);
        let slots = vec![
            Pending,
            Pending,
            Skipped,
            r.clone(),
            Pending,
            Skipped,
            Pending,
        ];
        assert_eq!(pending_runs(&slots), vec![0..2, 4..5, 6..7]);
        let long = vec![Pending; (MAX_RUN_BLOCKS + 3) as usize];
        assert_eq!(
            pending_runs(&long),
            vec![0..MAX_RUN_BLOCKS, MAX_RUN_BLOCKS..MAX_RUN_BLOCKS + 3]
        );
        assert!(pending_runs(&[Skipped, r]).is_empty());
    }
}
