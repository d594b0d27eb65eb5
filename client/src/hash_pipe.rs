//! MD5 computed beside the work that produces the bytes: fed in order through a short
//! queue, hashed on Tokio's blocking pool.

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use transfer_md5::Md5;

/// Pieces that may wait for the hasher before feeding waits.
const QUEUE: usize = 8;

pub(crate) struct HashPipe {
    feed: mpsc::Sender<Bytes>,
    task: JoinHandle<Option<Md5>>,
}

impl HashPipe {
    /// Continues hashing from `md5`.
    pub fn start(mut md5: Md5) -> Self {
        let (feed, mut queue) = mpsc::channel::<Bytes>(QUEUE);
        let task = tokio::spawn(async move {
            while let Some(first) = queue.recv().await {
                let mut pieces = vec![first];
                while let Ok(next) = queue.try_recv() {
                    pieces.push(next);
                }
                md5 = tokio::task::spawn_blocking(move || {
                    for piece in &pieces {
                        md5.update(piece);
                    }
                    md5
                })
                .await
                .ok()?;
            }
            Some(md5)
        });
        Self { feed, task }
    }

    /// Feeds the next bytes; waits while the hasher is behind.
    pub async fn feed(&self, bytes: Bytes) {
        let _ = self.feed.send(bytes).await;
    }

    /// The state after everything fed; `None` if the hashing task was lost.
    pub async fn finish(self) -> Option<Md5> {
        drop(self.feed);
        self.task.await.ok()?
    }
}
