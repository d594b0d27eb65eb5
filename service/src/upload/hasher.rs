//! The whole-file MD5, computed exactly once, in order, off the receive path.
//!
//! Chunks are committed in any order, but MD5 must see the bytes in order. The session
//! feeds the hasher the contiguous prefix of committed chunks as it grows; the hashing
//! itself runs on Tokio's blocking pool, so receiving, writing and hashing overlap.

use bytes::Bytes;
use md5::{Digest, Md5};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::ledger::Md5Digest;

/// How many chunks may wait for the hasher before feeding it waits.
const QUEUE_CHUNKS: usize = 4;

/// Hashes bytes fed in file order in a background task.
pub struct OrderedHasher {
    feed: mpsc::Sender<Bytes>,
    task: JoinHandle<Option<Md5>>,
}

impl OrderedHasher {
    pub fn start() -> Self {
        let (feed, mut queue) = mpsc::channel::<Bytes>(QUEUE_CHUNKS);
        let task = tokio::spawn(async move {
            let mut md5 = Md5::new();
            while let Some(first) = queue.recv().await {
                let mut pieces = vec![first];
                while let Ok(next) = queue.try_recv() {
                    pieces.push(next);
                }
                md5 = match tokio::task::spawn_blocking(move || {
                    for piece in &pieces {
                        md5.update(piece);
                    }
                    md5
                })
                .await
                {
                    Ok(md5) => md5,
                    // Only a panic inside `update` (none is possible) or runtime shutdown.
                    Err(_) => return None,
                };
            }
            Some(md5)
        });
        Self { feed, task }
    }

    /// Feeds the next bytes of the file. Waits while the hasher is behind.
    pub async fn feed(&self, bytes: Bytes) {
        // The task only ends once `feed` is dropped, so this cannot fail while we exist.
        let _ = self.feed.send(bytes).await;
    }

    /// The digest of everything fed. `None` if the hashing task was lost.
    pub async fn finish(self) -> Option<Md5Digest> {
        drop(self.feed);
        let md5 = self.task.await.ok()??;
        Some(md5.finalize().into())
    }
}
