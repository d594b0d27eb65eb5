//! The whole-file MD5, computed exactly once, in order, off the receive path.
//!
//! Chunks are committed in any order, but MD5 must see the bytes in order. The session
//! feeds the hasher the contiguous prefix of committed chunks as it grows; the hashing
//! itself runs on Tokio's blocking pool, so receiving, writing and hashing overlap.
//! A checkpoint (the MD5 state, a few dozen bytes) lets a later session task resume
//! hashing where this one stopped instead of reading the prefix back from storage.

use bytes::Bytes;
use std::sync::OnceLock;
use transfer_md5::Md5;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::ledger::Md5Digest;

/// How many chunks may wait for the hasher before feeding it waits. Chunks waiting here
/// are already acknowledged, so they are memory on top of the client's window: two
/// keep the hasher busy without holding more.
const QUEUE_CHUNKS: usize = 2;

/// Most bytes one upload hashes before it lets others have its hashing slot.
const SLOT_SHARE: usize = 64 << 20;

/// Hashing threads running at once, across every upload: one per core. MD5 is all CPU;
/// hundreds of uploads hashing on hundreds of threads would crowd out the threads that
/// answer requests (a CheckUpload would wait its turn behind them all), for no more
/// hashing done.
fn hashing_slots() -> &'static Semaphore {
    static SLOTS: OnceLock<Semaphore> = OnceLock::new();
    SLOTS
        .get_or_init(|| Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get())))
}

enum Input {
    Bytes(Bytes),
    /// Answer with the state once everything fed before this is hashed.
    Checkpoint(oneshot::Sender<Vec<u8>>),
}

/// Hashes bytes fed in file order in a background task.
pub struct OrderedHasher {
    feed: mpsc::Sender<Input>,
    task: JoinHandle<Option<Md5>>,
}

impl OrderedHasher {
    /// Starts hashing from the beginning of a file.
    pub fn start() -> Self {
        Self::resume_from(Md5::new())
    }

    /// Starts from a checkpoint taken by [`OrderedHasher::checkpoint`] after the first
    /// `bytes` bytes of the file; `None` if it is not a valid MD5 state of that many
    /// bytes (resuming from it would only end in an MD5 mismatch).
    pub fn resume(checkpoint: &[u8], bytes: u64) -> Option<Self> {
        Md5::from_checkpoint(checkpoint)
            .filter(|md5| md5.len() == bytes)
            .map(Self::resume_from)
    }

    fn resume_from(mut md5: Md5) -> Self {
        let (feed, mut queue) = mpsc::channel::<Input>(QUEUE_CHUNKS);
        let task = tokio::spawn(async move {
            while let Some(first) = queue.recv().await {
                // The semaphore is never closed, so this only fails on a bug.
                let slot = hashing_slots().acquire().await.ok()?;
                // Hash on a blocking thread for as long as input keeps coming (up to a
                // slot's share, so other uploads get their turn): handing each chunk
                // across threads on its own cost a wake-up each way per chunk.
                (md5, queue) = tokio::task::spawn_blocking(move || {
                    let mut share = SLOT_SHARE;
                    let mut next = Some(first);
                    while let Some(input) = next.take() {
                        match input {
                            Input::Bytes(bytes) => {
                                share = share.saturating_sub(bytes.len());
                                md5.update(&bytes);
                            }
                            Input::Checkpoint(reply) => {
                                let _ = reply.send(md5.checkpoint());
                            }
                        }
                        if share > 0 {
                            next = queue.try_recv().ok();
                        }
                    }
                    (md5, queue)
                })
                .await
                // Only a panic inside `update` (none is possible) or runtime shutdown.
                .ok()?;
                drop(slot);
            }
            Some(md5)
        });
        Self { feed, task }
    }

    /// Feeds the next bytes of the file. Waits while the hasher is behind.
    pub async fn feed(&self, bytes: Bytes) {
        // The task only ends once `feed` is dropped, so this cannot fail while we exist.
        let _ = self.feed.send(Input::Bytes(bytes)).await;
    }

    /// Asks for the state after everything fed so far; the answer comes once that is
    /// hashed, so the caller need not wait for it.
    pub async fn checkpoint(&self) -> oneshot::Receiver<Vec<u8>> {
        let (reply, answer) = oneshot::channel();
        let _ = self.feed.send(Input::Checkpoint(reply)).await;
        answer
    }

    /// The digest of everything fed. `None` if the hashing task was lost.
    pub async fn finish(self) -> Option<Md5Digest> {
        drop(self.feed);
        let md5 = self.task.await.ok()??;
        Some(md5.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md5_of(data: &[u8]) -> Md5Digest {
        Md5::digest(data)
    }

    #[tokio::test]
    async fn pieces_fed_in_order_hash_like_the_whole() {
        let hasher = OrderedHasher::start();
        for piece in [&b"hello "[..], b"large ", b"world"] {
            hasher.feed(Bytes::copy_from_slice(piece)).await;
        }
        assert_eq!(hasher.finish().await, Some(md5_of(b"hello large world")));
    }

    #[tokio::test]
    async fn a_checkpoint_resumes_where_it_was_taken_and_only_there() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (head, tail) = data.split_at(4099);
        let first = OrderedHasher::start();
        first.feed(Bytes::copy_from_slice(head)).await;
        let checkpoint = first.checkpoint().await.await.unwrap();
        // Bytes fed after the checkpoint are not part of it.
        first.feed(Bytes::from_static(b"ignored")).await;
        drop(first);

        assert!(
            OrderedHasher::resume(&checkpoint, head.len() as u64 + 1).is_none(),
            "a checkpoint of another length"
        );
        let second =
            OrderedHasher::resume(&checkpoint, head.len() as u64).expect("a valid checkpoint");
        second.feed(Bytes::copy_from_slice(tail)).await;
        assert_eq!(second.finish().await, Some(md5_of(&data)));
    }

    #[test]
    fn a_malformed_checkpoint_is_refused() {
        assert!(OrderedHasher::resume(b"not an md5 state", 0).is_none());
    }
}
