//! Batched MSG_BLK encryption off the reactor, for the retrieval server.
//!
//! AES-CBC encryption of one block is a serial chain (~1.6 GB/s per core
//! with AES-NI, the largest CPU cost of serving a peer), but the chains of
//! different blocks are independent: [`encrypt_blocks`] runs up to
//! [`ENCRYPT_LANES`] of them side by side at a fraction of the CPU per
//! block. A client fetching a large object keeps many GETBLKS in flight
//! (`PeerSource`: 8 per run, up to 32 per peer), so requests queue up here:
//! one thread takes every queued request (at most [`MAX_BATCH`]), encrypts
//! those under the same key together straight into their response messages,
//! and answers each. The reactor threads meanwhile keep serving HTTP, so
//! both cores work.
//!
//! The queue is bounded ([`QUEUE_DEPTH`]; senders wait when it is full). The
//! thread is started on first use and ends when the [`Encryptor`] (owned by
//! the `RetrievalServer`) is dropped: its queue closes. If the thread cannot
//! be started or has died, requests are encrypted inline instead.

use std::ops::Range;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::proto::pccrc::SegmentSecret;
use crate::proto::pccrr::{
    cipher_len, encrypt_blocks, BlockCryptoError, CryptoAlgoId, EncryptJob, ENCRYPT_LANES, IV_LEN,
};

/// Requests waiting for the encryption thread; a full queue makes the
/// request handlers wait (each request holds one ~64 KiB block).
pub const QUEUE_DEPTH: usize = 64;
/// Most requests encrypted in one batch (several groups of
/// [`ENCRYPT_LANES`]); bounds the latency one batch adds.
pub const MAX_BATCH: usize = 32;
/// When fewer than [`ENCRYPT_LANES`] requests are queued, wait this long
/// once for more before encrypting. Requests of a bulk transfer arrive one
/// by one as earlier answers complete, so without the wait the thread mostly
/// found a single request and ran the serial chain (~3x the CPU per block).
/// The client keeps many requests in flight, which hides the delay; a lone
/// request pays it once, next to a network round trip.
pub const BATCH_WAIT: Duration = Duration::from_micros(50);

/// One block to encrypt into the block field of its encoded MSG_BLK.
struct Job {
    algo: CryptoAlgoId,
    kp: SegmentSecret,
    iv: [u8; IV_LEN],
    plain: Bytes,
    /// The encoded response; `at` is its block field.
    message: Vec<u8>,
    at: Range<usize>,
    reply: oneshot::Sender<Result<Vec<u8>, BlockCryptoError>>,
}

/// Why a block could not be encrypted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EncryptError {
    /// The cipher refused (unknown algorithm, Kp too short, a block field
    /// that does not fit the ciphertext).
    #[error(transparent)]
    Crypto(#[from] BlockCryptoError),
    /// The encryption thread went away with the request.
    #[error("the PCCRR encryption thread is gone")]
    WorkerGone,
}

/// The retrieval server's encryption queue and its thread.
#[derive(Debug, Default)]
pub struct Encryptor {
    queue: OnceLock<Option<mpsc::Sender<Job>>>,
}

impl Encryptor {
    /// An encryptor; its thread starts with the first request.
    pub fn new() -> Self {
        Self::default()
    }

    /// Encrypt `plain` with `algo` under Kp and `iv` into `message[at]`
    /// (exactly `cipher_len(algo, plain.len())` bytes, e.g. from
    /// `Blk::encode_with_block_space`) and return the message.
    pub async fn encrypt(
        &self,
        algo: CryptoAlgoId,
        kp: SegmentSecret,
        iv: [u8; IV_LEN],
        plain: Bytes,
        message: Vec<u8>,
        at: Range<usize>,
    ) -> Result<Vec<u8>, EncryptError> {
        // Checked here, so one bad request never fails the batch it joins.
        let want = cipher_len(algo, plain.len())?;
        if at.len() != want || message.get(at.clone()).is_none() {
            return Err(BlockCryptoError::BadLength {
                len: at.len(),
                expected: plain.len(),
            }
            .into());
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            algo,
            kp,
            iv,
            plain,
            message,
            at,
            reply,
        };
        let Some(queue) = self.queue.get_or_init(spawn_worker) else {
            return Ok(encrypt_one(job)?);
        };
        match queue.send(job).await {
            Ok(()) => match answer.await {
                Ok(result) => Ok(result?),
                // The thread died with our job (nothing in it panics by
                // design: every error is returned).
                Err(_) => Err(EncryptError::WorkerGone),
            },
            Err(mpsc::error::SendError(job)) => Ok(encrypt_one(job)?),
        }
    }
}

/// Start the encryption thread; `None` when no thread can be made.
fn spawn_worker() -> Option<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
    match std::thread::Builder::new()
        .name("pccrr-encrypt".into())
        .spawn(move || run(rx))
    {
        Ok(_) => Some(tx),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the PCCRR encryption thread; encrypting inline");
            None
        }
    }
}

/// The thread: batches of queued jobs until every sender is gone.
fn run(mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        take_queued(&mut rx, &mut batch);
        if batch.len() < ENCRYPT_LANES {
            std::thread::sleep(BATCH_WAIT);
            take_queued(&mut rx, &mut batch);
        }
        // Jobs under the same cipher and key share lanes.
        while let Some((algo, kp)) = batch.first().map(|j| (j.algo, j.kp)) {
            let (group, rest): (Vec<Job>, Vec<Job>) = batch
                .into_iter()
                .partition(|j| j.algo == algo && j.kp == kp);
            batch = rest;
            encrypt_group(algo, &kp, group);
        }
    }
}

/// Move queued jobs into `batch`, up to [`MAX_BATCH`].
fn take_queued(rx: &mut mpsc::Receiver<Job>, batch: &mut Vec<Job>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

/// Encrypt jobs sharing `algo` and `kp` together and answer each.
fn encrypt_group(algo: CryptoAlgoId, kp: &SegmentSecret, mut group: Vec<Job>) {
    let result = {
        // `encrypt` checked every block field, so none is skipped here.
        let mut jobs: Vec<EncryptJob<'_>> = group
            .iter_mut()
            .filter_map(|job| {
                let out = job.message.get_mut(job.at.clone())?;
                Some(EncryptJob {
                    iv: job.iv,
                    plain: &job.plain,
                    out,
                })
            })
            .collect();
        encrypt_blocks(algo, kp, &mut jobs)
    };
    for job in group {
        let answer = match &result {
            Ok(()) => Ok(job.message),
            Err(e) => Err(e.clone()),
        };
        // The requester may have gone (client disconnected): nothing to do.
        let _ = job.reply.send(answer);
    }
}

/// Inline fallback when there is no thread.
fn encrypt_one(mut job: Job) -> Result<Vec<u8>, BlockCryptoError> {
    let out = job
        .message
        .get_mut(job.at.clone())
        .ok_or(BlockCryptoError::BadLength {
            len: 0,
            expected: job.plain.len(),
        })?;
    encrypt_blocks(
        job.algo,
        &job.kp,
        &mut [EncryptJob {
            iv: job.iv,
            plain: &job.plain,
            out,
        }],
    )?;
    Ok(job.message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::pccrr::{cipher_len, encrypt_block};

    fn kp(fill: u8) -> SegmentSecret {
        SegmentSecret::from_slice(&[fill; 32]).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_under_mixed_keys_match_one_block_encryption() {
        let enc = std::sync::Arc::new(Encryptor::new());
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..100u32 {
            let enc = enc.clone();
            tasks.spawn(async move {
                let algo = [CryptoAlgoId::AES_128, CryptoAlgoId::AES_256][(i % 2) as usize];
                let key = kp((i % 3) as u8);
                let len = [65_536usize, 1000, 0, 17][(i % 4) as usize];
                let plain: Vec<u8> = (0..len).map(|b| (b as u32 * 7 + i) as u8).collect();
                let iv = [i as u8; 16];
                // A message with a 5-byte head and a 3-byte tail around the block.
                let clen = cipher_len(algo, len).unwrap();
                let message = vec![0xAB; 5 + clen + 3];
                let got = enc
                    .encrypt(
                        algo,
                        key,
                        iv,
                        Bytes::from(plain.clone()),
                        message,
                        5..5 + clen,
                    )
                    .await
                    .unwrap();
                let want = encrypt_block(algo, &key, iv, &plain).unwrap();
                assert_eq!(&got[5..5 + clen], &want[..], "job {i}");
                assert_eq!(&got[..5], &[0xAB; 5]);
                assert_eq!(&got[5 + clen..], &[0xAB; 3]);
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    }

    #[tokio::test]
    async fn a_block_field_of_the_wrong_size_is_an_error_not_a_panic() {
        let enc = Encryptor::new();
        let err = enc
            .encrypt(
                CryptoAlgoId::AES_128,
                kp(1),
                [0; 16],
                Bytes::from_static(&[1; 32]),
                vec![0; 40],
                0..32,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                EncryptError::Crypto(BlockCryptoError::BadLength { .. })
            ),
            "{err}"
        );
        let err = enc
            .encrypt(
                CryptoAlgoId::AES_128,
                kp(1),
                [0; 16],
                Bytes::from_static(&[1; 32]),
                vec![0; 40],
                0..48,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                EncryptError::Crypto(BlockCryptoError::BadLength { .. })
            ),
            "{err}"
        );
    }
}
