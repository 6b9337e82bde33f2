//! Hashing an origin body into content information while it streams.
//!
//! Body frames go through a bounded channel to a blocking hashing thread, so
//! reading from the network and hashing overlap and the object is never held
//! whole: memory is the channel's frames plus the segment hashes.

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::proto::pccrc::build::{ContentHashes, StreamBuilder};
use crate::proto::pccrc::{HashAlgo, ServerSecret, Version};

/// Frames buffered between the network reader and the hasher: enough to ride
/// over scheduling hiccups, small enough to bound memory (frames are ≤ 16 KiB–1 MiB).
pub const HASH_QUEUE_FRAMES: usize = 64;

/// A running hash of one entity.
#[derive(Debug)]
pub struct BodyHasher {
    tx: mpsc::Sender<Bytes>,
    task: JoinHandle<ContentHashes>,
}

impl BodyHasher {
    /// Start hashing an entity as `version` with `algo` under server secret `ks`.
    pub fn start(version: Version, algo: HashAlgo, ks: ServerSecret) -> Self {
        let (tx, mut rx) = mpsc::channel::<Bytes>(HASH_QUEUE_FRAMES);
        let task = tokio::task::spawn_blocking(move || {
            let mut b = StreamBuilder::new(version, algo, &ks);
            while let Some(frame) = rx.blocking_recv() {
                b.update(&frame);
            }
            b.finish()
        });
        BodyHasher { tx, task }
    }

    /// Feed the next frame (waits when the hasher is behind).
    pub async fn push(&mut self, frame: Bytes) -> Result<(), String> {
        self.tx
            .send(frame)
            .await
            .map_err(|_| "hashing thread stopped".to_string())
    }

    /// End of body: wait for the hashes.
    pub async fn finish(self) -> Result<ContentHashes, String> {
        drop(self.tx);
        self.task.await.map_err(|e| e.to_string())
    }
}
