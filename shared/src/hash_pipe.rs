//! Bytes hashed in file order on Tokio's blocking pool, beside the work that produces
//! them (receiving, reading, writing): the caller feeds, a task hashes.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use transfer_md5::Md5;

/// A hash state fed bytes in order.
pub trait Digest: Send + 'static {
    fn update(&mut self, bytes: &[u8]);
}

impl Digest for Md5 {
    fn update(&mut self, bytes: &[u8]) {
        Md5::update(self, bytes);
    }
}

/// Hashing threads running at once across the pipes that share them (a server's
/// uploads): hashing is all CPU, and hundreds of pipes hashing on hundreds of threads
/// would crowd out the threads that answer requests, for no more hashing done.
#[derive(Clone)]
pub struct HashingSlots(Arc<Semaphore>);

impl HashingSlots {
    /// One slot per core.
    pub fn per_core() -> Self {
        Self(Arc::new(Semaphore::new(
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        )))
    }
}

/// How a pipe queues and shares its hashing.
#[derive(Clone)]
pub struct PipeSettings {
    /// Inputs that may wait for the hasher before feeding waits.
    pub queue: usize,
    /// Slots to hash on one at a time, if the pipe shares them with others.
    pub slots: Option<HashingSlots>,
    /// Most bytes hashed in one turn before the slot is let go (others get theirs).
    pub turn_bytes: usize,
}

enum Input<S> {
    Bytes(Bytes),
    /// Looks at the state once everything fed before it is hashed.
    Look(Box<dyn FnOnce(&S) + Send>),
}

/// Hashes bytes fed in order in a background task.
pub struct HashPipe<S> {
    feed: mpsc::Sender<Input<S>>,
    task: JoinHandle<Option<S>>,
}

impl<S: Digest> HashPipe<S> {
    /// Hashes what is fed, from `state` on.
    pub fn start(mut state: S, settings: PipeSettings) -> Self {
        let (feed, mut queue) = mpsc::channel::<Input<S>>(settings.queue.max(1));
        let task = tokio::spawn(async move {
            while let Some(first) = queue.recv().await {
                let slot = match &settings.slots {
                    // The semaphore is never closed, so this only fails on a bug.
                    Some(slots) => Some(Arc::clone(&slots.0).acquire_owned().await.ok()?),
                    None => None,
                };
                // Hash on a blocking thread for as long as input keeps coming (up to a
                // turn's bytes): handing each piece across threads on its own costs a
                // wake-up each way per piece.
                let turn = settings.turn_bytes;
                (state, queue) = tokio::task::spawn_blocking(move || {
                    let mut left = turn;
                    let mut next = Some(first);
                    while let Some(input) = next.take() {
                        match input {
                            Input::Bytes(bytes) => {
                                left = left.saturating_sub(bytes.len());
                                state.update(&bytes);
                            }
                            Input::Look(look) => look(&state),
                        }
                        if left > 0 {
                            next = queue.try_recv().ok();
                        }
                    }
                    (state, queue)
                })
                .await
                // Only a panic inside `update` or the runtime shutting down.
                .ok()?;
                drop(slot);
            }
            Some(state)
        });
        Self { feed, task }
    }

    /// Feeds the next bytes. Waits while the hasher is behind.
    pub async fn feed(&self, bytes: Bytes) {
        // The task only ends once `feed` is dropped, so this cannot fail while we exist.
        let _ = self.feed.send(Input::Bytes(bytes)).await;
    }

    /// Runs `look` on the state once everything fed so far is hashed; its answer comes
    /// then, so the caller need not wait for it.
    pub async fn look<T: Send + 'static>(
        &self,
        look: impl FnOnce(&S) -> T + Send + 'static,
    ) -> oneshot::Receiver<T> {
        let (reply, answer) = oneshot::channel();
        let look = move |state: &S| {
            let _ = reply.send(look(state));
        };
        let _ = self.feed.send(Input::Look(Box::new(look))).await;
        answer
    }

    /// The state after everything fed; `None` if the hashing task was lost.
    pub async fn finish(self) -> Option<S> {
        drop(self.feed);
        self.task.await.ok()?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(queue: usize, turn_bytes: usize) -> PipeSettings {
        PipeSettings {
            queue,
            slots: Some(HashingSlots(Arc::new(Semaphore::new(1)))),
            turn_bytes,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bytes_are_hashed_in_the_order_fed_whatever_the_queue_and_turn() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
        for (queue, turn) in [(1, 1), (2, 4096), (8, usize::MAX)] {
            let pipe = HashPipe::start(Md5::new(), settings(queue, turn));
            for piece in data.chunks(7_919) {
                pipe.feed(Bytes::copy_from_slice(piece)).await;
            }
            let md5 = pipe.finish().await.expect("the hashing task");
            assert_eq!(
                md5.finalize(),
                Md5::digest(&data),
                "queue {queue}, turn {turn}"
            );
        }
    }

    #[tokio::test]
    async fn a_look_sees_exactly_what_was_fed_before_it() {
        let pipe = HashPipe::start(Md5::new(), settings(2, 1024));
        pipe.feed(Bytes::from_static(b"hello ")).await;
        let seen = pipe.look(|md5: &Md5| md5.len()).await;
        pipe.feed(Bytes::from_static(b"world")).await;
        assert_eq!(seen.await.expect("an answer"), 6);
        let md5 = pipe.finish().await.expect("the hashing task");
        assert_eq!(md5.finalize(), Md5::digest(b"hello world"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipes_sharing_one_slot_take_turns_and_both_finish() {
        let slots = HashingSlots(Arc::new(Semaphore::new(1)));
        let shared = PipeSettings {
            queue: 2,
            slots: Some(slots),
            turn_bytes: 10_000,
        };
        let (a, b) = (
            HashPipe::start(Md5::new(), shared.clone()),
            HashPipe::start(Md5::new(), shared),
        );
        let piece = Bytes::from(vec![7u8; 4096]);
        // A pipe that kept the one slot while waiting for input would stop the other.
        let both = async {
            for _ in 0..50 {
                tokio::join!(a.feed(piece.clone()), b.feed(piece.clone()));
            }
            tokio::join!(a.finish(), b.finish())
        };
        let (a, b) = tokio::time::timeout(std::time::Duration::from_secs(10), both)
            .await
            .expect("the pipes take turns on the slot");
        let expected = Md5::digest(vec![7u8; 4096 * 50]);
        assert_eq!(a.expect("a").finalize(), expected);
        assert_eq!(b.expect("b").finalize(), expected);
    }
}
