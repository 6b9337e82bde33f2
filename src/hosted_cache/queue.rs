//! The bounded pull queue between accepted offers and the puller.
//!
//! An accepted offer becomes a [`PullJob`]: "fetch segment `id` with PCCRR
//! from `source`". The queue holds at most `capacity` jobs, never two for the
//! same segment (queued or being pulled), and runs at most
//! `max_concurrent_pulls` pulls at once, each bounded by [`PULL_TIMEOUT`].
//! The pulling itself is behind the [`Puller`] trait so the PCCRR client and
//! the store plug in without this module knowing them.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::proto::pccrc::SegmentId;
use crate::proto::pchc::{SegmentDescriptor, VerifiedSegment};

/// Longest one segment pull may take: a full 32 MiB v1 segment over a slow
/// branch LAN link, with room for a client that answers slowly.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(300);

/// What the hosted cache knows about a segment when the job is queued.
#[derive(Debug, Clone)]
pub enum PullKind {
    /// v1: hash information from a verified SEGMENT_INFO; blocks can be
    /// decrypted and verified on arrival.
    V1(Box<VerifiedSegment>),
    /// v1: the hash information is already in the store (INITIAL_OFFER for a
    /// segment whose blocks are partly missing).
    V1Stored,
    /// v2: only the id and sizes; blocks are stored as received and replayed.
    V2(SegmentDescriptor),
}

/// One segment to fetch from one offering client.
#[derive(Debug, Clone)]
pub struct PullJob {
    /// Where to connect: the offering client's own source IP and the PCCRR
    /// port from its CONNECTION_INFORMATION, never an address from a message.
    pub source: SocketAddr,
    /// The segment.
    pub id: SegmentId,
    /// What is known about it.
    pub kind: PullKind,
}

impl PullJob {
    /// True when this job carries (or relies on stored) v1 hash information.
    pub fn has_hash_info(&self) -> bool {
        matches!(self.kind, PullKind::V1(_) | PullKind::V1Stored)
    }
}

/// Why a pull failed; the puller maps its own errors onto these.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The client could not be reached.
    #[error("cannot reach {source_addr}: {error}")]
    Unreachable {
        /// The client's PCCRR address.
        source_addr: SocketAddr,
        /// The IO error.
        error: std::io::Error,
    },
    /// The client answered, but not with usable blocks.
    #[error("peer {source_addr}: {reason}")]
    Peer {
        /// The client's PCCRR address.
        source_addr: SocketAddr,
        /// What was wrong.
        reason: String,
    },
    /// A block failed its hash check.
    #[error("block {block} of segment {id} failed verification")]
    Verify {
        /// The segment.
        id: SegmentId,
        /// The block index.
        block: u32,
    },
    /// The local store failed.
    #[error("store: {0}")]
    Store(String),
    /// [`PULL_TIMEOUT`] passed.
    #[error("pull timed out")]
    Timeout,
}

impl PullError {
    /// Short stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PullError::Unreachable { .. } => "unreachable",
            PullError::Peer { .. } => "peer",
            PullError::Verify { .. } => "verify",
            PullError::Store(_) => "store",
            PullError::Timeout => "timeout",
        }
    }
}

/// Fetches one segment from an offering client and stores it.
pub trait Puller: Send + Sync + 'static {
    /// Pull `job.id` from `job.source`. Must verify what it can (v1) before
    /// storing; must connect nowhere but `job.source`.
    fn pull(&self, job: &PullJob) -> impl Future<Output = Result<(), PullError>> + Send;
}

/// Outcome of [`PullQueue::try_enqueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueue {
    /// Queued.
    Queued,
    /// The segment is already queued or being pulled.
    Duplicate,
    /// The queue is full; the offer is dropped (offers are best-effort).
    Full,
}

impl Enqueue {
    /// Stable label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Enqueue::Queued => "queued",
            Enqueue::Duplicate => "duplicate",
            Enqueue::Full => "full",
        }
    }
}

/// Producer side of the queue; cheap to clone.
#[derive(Clone)]
pub struct PullQueue {
    tx: mpsc::Sender<PullJob>,
    /// Segments queued or being pulled → whether their job carries v1 hash info.
    in_flight: Arc<Mutex<HashMap<SegmentId, bool>>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for PullQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullQueue")
            .field("in_flight", &self.in_flight_len())
            .finish()
    }
}

impl PullQueue {
    /// Start the dispatcher task: at most `capacity` queued jobs, at most
    /// `max_concurrent` pulls at once. It stops (aborting running pulls) when
    /// `shutdown` fires; the returned handle resolves then.
    pub fn start<P: Puller>(
        capacity: usize,
        max_concurrent: usize,
        puller: Arc<P>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> (PullQueue, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let queue = PullQueue {
            tx,
            in_flight: Arc::new(Mutex::new(HashMap::new())),
            metrics,
        };
        let task = tokio::spawn(dispatch(
            rx,
            max_concurrent.max(1),
            puller,
            queue.clone(),
            shutdown,
        ));
        (queue, task)
    }

    /// Queue `job` unless its segment is already queued/being pulled or the
    /// queue is full. Never waits.
    pub fn try_enqueue(&self, job: PullJob) -> Enqueue {
        let mut in_flight = self.lock();
        if in_flight.contains_key(&job.id) {
            return Enqueue::Duplicate;
        }
        let (id, hash_info) = (job.id, job.has_hash_info());
        match self.tx.try_send(job) {
            Ok(()) => {
                in_flight.insert(id, hash_info);
                self.metrics.hosted_cache_pull_queue_depth.inc();
                Enqueue::Queued
            }
            Err(_) => Enqueue::Full,
        }
    }

    /// `Some(has_hash_info)` when the segment is queued or being pulled.
    pub fn in_flight(&self, id: &SegmentId) -> Option<bool> {
        self.lock().get(id).copied()
    }

    /// Number of segments queued or being pulled.
    pub fn in_flight_len(&self) -> usize {
        self.lock().len()
    }

    fn finish(&self, id: &SegmentId) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SegmentId, bool>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn dispatch<P: Puller>(
    mut rx: mpsc::Receiver<PullJob>,
    max_concurrent: usize,
    puller: Arc<P>,
    queue: PullQueue,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(max_concurrent));
    let mut running = JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let job = tokio::select! {
            _ = shutdown.cancelled() => break,
            job = rx.recv() => match job {
                Some(job) => job,
                None => break,
            },
            // Reap finished pulls so the set does not grow while idle.
            Some(_) = running.join_next(), if !running.is_empty() => {
                drop(permit);
                continue;
            }
        };
        queue.metrics.hosted_cache_pull_queue_depth.dec();
        let (puller, queue) = (puller.clone(), queue.clone());
        running.spawn(async move {
            let outcome = match tokio::time::timeout(PULL_TIMEOUT, puller.pull(&job)).await {
                Ok(Ok(())) => "ok",
                Ok(Err(e)) => {
                    tracing::info!(segment = %job.id, source = %job.source, error = %e, "pull failed");
                    e.kind()
                }
                Err(_) => {
                    tracing::info!(segment = %job.id, source = %job.source, "pull timed out");
                    PullError::Timeout.kind()
                }
            };
            queue.metrics.hosted_cache_pull(outcome);
            queue.finish(&job.id);
            drop(permit);
        });
    }
    running.abort_all();
    while running.join_next().await.is_some() {}
}
