//! The memory upload streams may make the server hold beyond their windows, in one
//! budget: large messages being read (each granted its length before its bytes are
//! read, within a share per owner and the server's whole) and chunks parked for the
//! in-order hasher (which take what is left, and are dropped first when it runs out:
//! they are on disk and can be read back).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use transfer_wire::memory::{MemoryHold, MemoryRefused, MessageMemory, Reserving};

use crate::identity::Owner;

/// The server's memory for upload streams.
#[derive(Debug)]
pub struct MemoryBudget {
    /// Most bytes of messages being read plus chunks parked, across every stream.
    limit: usize,
    /// Most bytes of messages being read for one owner.
    owner_limit: usize,
    /// How long a message waits for room before its stream is refused.
    wait: Duration,
    /// Bytes granted to messages being read, in all and per owner: checked and taken
    /// together, so a refusal changes nothing another message could see.
    granted: Mutex<Granted>,
    /// `granted.total`, readable without the lock.
    reading: AtomicUsize,
    /// Bytes of chunks parked for the hasher.
    parked: AtomicUsize,
    /// Told whenever a grant is given back.
    freed: Notify,
    /// Told when messages being read leave parked chunks over the budget: sessions
    /// then drop what they have parked, even those with nothing else to do.
    pressed: Notify,
}

#[derive(Debug, Default)]
struct Granted {
    total: usize,
    /// Only owners with a message being read.
    by_owner: HashMap<Owner, usize>,
}

impl MemoryBudget {
    pub fn new(limit: usize, owner_limit: usize, wait: Duration) -> Arc<Self> {
        Arc::new(Self {
            limit,
            owner_limit,
            wait,
            granted: Mutex::new(Granted::default()),
            reading: AtomicUsize::new(0),
            parked: AtomicUsize::new(0),
            freed: Notify::new(),
            pressed: Notify::new(),
        })
    }

    /// What grants the large messages of one stream of `owner` their memory.
    pub fn for_owner(self: &Arc<Self>, owner: &Owner) -> Arc<dyn MessageMemory> {
        Arc::new(StreamMemory {
            budget: Arc::clone(self),
            owner: owner.clone(),
        })
    }

    /// Bytes granted to messages being read now.
    pub fn reading(&self) -> usize {
        self.reading.load(Ordering::Relaxed)
    }

    /// Bytes of chunks parked now.
    pub fn parked(&self) -> usize {
        self.parked.load(Ordering::Relaxed)
    }

    /// Counts `len` more bytes parked.
    pub(super) fn park(&self, len: usize) {
        self.parked.fetch_add(len, Ordering::Relaxed);
    }

    /// Counts `len` bytes no longer parked.
    pub(super) fn unpark(&self, len: usize) {
        self.parked.fetch_sub(len, Ordering::Relaxed);
    }

    /// Whether parked chunks should be dropped: with the messages being read, they are
    /// over the budget.
    pub(super) fn parked_over(&self) -> bool {
        self.parked() + self.reading() > self.limit
    }

    /// Ready when sessions should drop parked chunks (see [`Self::parked_over`]).
    pub(super) async fn pressed(&self) {
        self.pressed.notified().await;
    }

    fn lock(&self) -> MutexGuard<'_, Granted> {
        self.granted.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `len` bytes for a message of `owner`, if both the owner's share and the
    /// server's budget have room now. Parked chunks do not stand in the way: they are
    /// told to make room.
    fn try_grant(self: &Arc<Self>, owner: &Owner, len: usize) -> Option<Grant> {
        {
            let mut granted = self.lock();
            let owners = granted.by_owner.get(owner).copied().unwrap_or(0);
            if owners + len > self.owner_limit || granted.total + len > self.limit {
                return None;
            }
            granted.total += len;
            *granted.by_owner.entry(owner.clone()).or_default() += len;
            self.reading.store(granted.total, Ordering::Relaxed);
        }
        if self.parked_over() {
            self.pressed.notify_waiters();
        }
        Some(Grant {
            budget: Arc::clone(self),
            owner: owner.clone(),
            len,
        })
    }

    fn give_back(&self, owner: &Owner, len: usize) {
        {
            let mut granted = self.lock();
            granted.total -= len;
            if let Some(owners) = granted.by_owner.get_mut(owner) {
                *owners -= len;
                if *owners == 0 {
                    granted.by_owner.remove(owner);
                }
            }
            self.reading.store(granted.total, Ordering::Relaxed);
        }
        self.freed.notify_waiters();
    }

    /// Waits up to the budget's wait for `len` bytes.
    async fn grant(self: Arc<Self>, owner: Owner, len: usize) -> Result<MemoryHold, MemoryRefused> {
        let most = self.owner_limit.min(self.limit);
        if len > most {
            return Err(MemoryRefused(format!(
                "no memory for a message of {len} bytes: the most one message may be given is {most} bytes (--owner-upload-memory-bytes, --upload-memory-bytes)"
            )));
        }
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before trying, so a grant given back in between is not missed.
            freed.as_mut().enable();
            if let Some(grant) = self.try_grant(&owner, len) {
                return Ok(Box::new(grant));
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(self.refusal(&owner, len));
            }
        }
    }

    fn refusal(&self, owner: &Owner, len: usize) -> MemoryRefused {
        let owners = self.lock().by_owner.get(owner).copied().unwrap_or(0);
        let (whose, limit, flag) = if owners + len > self.owner_limit {
            (
                "this owner's upload streams",
                self.owner_limit,
                "--owner-upload-memory-bytes",
            )
        } else {
            (
                "the server's upload streams",
                self.limit,
                "--upload-memory-bytes",
            )
        };
        MemoryRefused(format!(
            "no memory for a message of {len} bytes: {whose} are already reading messages up to their limit of {limit} bytes ({flag}), and none finished within {} s; send fewer chunks at once, or smaller ones",
            self.wait.as_secs()
        ))
    }
}

/// The memory of one owner's stream.
struct StreamMemory {
    budget: Arc<MemoryBudget>,
    owner: Owner,
}

impl MessageMemory for StreamMemory {
    fn reserve(&self, len: usize) -> Reserving {
        Box::pin(Arc::clone(&self.budget).grant(self.owner.clone(), len))
    }
}

/// Bytes granted to one message, given back when it is whole or its stream ends.
struct Grant {
    budget: Arc<MemoryBudget>,
    owner: Owner,
    len: usize,
}

impl Drop for Grant {
    fn drop(&mut self) {
        self.budget.give_back(&self.owner, self.len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(name: &str) -> Owner {
        Owner::parse(name.as_bytes()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_waits_for_room_and_gets_it_when_another_is_whole() {
        let budget = MemoryBudget::new(100, 100, Duration::from_secs(60));
        let memory = budget.for_owner(&owner("alice"));
        let first = memory.reserve(70).await.unwrap();
        let mut second = memory.reserve(50);
        assert!(
            futures::poll!(second.as_mut()).is_pending(),
            "70 + 50 is over 100: the second waits"
        );
        drop(first);
        let second = second.await.unwrap();
        assert_eq!(budget.reading(), 50);
        drop(second);
        assert_eq!(budget.reading(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn one_owner_cannot_take_more_than_its_share_and_others_still_get_memory() {
        let budget = MemoryBudget::new(1000, 100, Duration::from_secs(60));
        let mallory = budget.for_owner(&owner("mallory"));
        let _held = mallory.reserve(100).await.unwrap();
        let refused = mallory.reserve(10).await.err().unwrap();
        assert!(
            refused.0.contains("this owner's upload streams"),
            "{refused}"
        );
        assert!(
            refused.0.contains("--owner-upload-memory-bytes"),
            "{refused}"
        );
        let alice = budget.for_owner(&owner("alice"));
        assert!(alice.reserve(100).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_that_waits_too_long_is_refused_saying_which_limit() {
        let budget = MemoryBudget::new(100, 100, Duration::from_secs(5));
        let _held = budget.for_owner(&owner("alice")).reserve(80).await.unwrap();
        let refused = budget
            .for_owner(&owner("bob"))
            .reserve(30)
            .await
            .err()
            .unwrap();
        assert!(
            refused.0.contains("the server's upload streams"),
            "{refused}"
        );
        assert!(refused.0.contains("within 5 s"), "{refused}");
        assert_eq!(budget.reading(), 80, "a refused message holds nothing");
    }

    #[tokio::test]
    async fn parked_chunks_are_told_to_yield_to_messages_being_read() {
        let budget = MemoryBudget::new(100, 100, Duration::from_secs(1));
        budget.park(90);
        assert!(!budget.parked_over());
        let mut pressed = std::pin::pin!(budget.pressed());
        assert!(futures::poll!(pressed.as_mut()).is_pending());
        let _reading = budget.for_owner(&owner("alice")).reserve(40).await.unwrap();
        assert!(budget.parked_over(), "parked chunks make room");
        assert!(
            futures::poll!(pressed.as_mut()).is_ready(),
            "sessions holding them are told"
        );
        budget.unpark(90);
        assert!(!budget.parked_over());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn grants_asked_at_once_never_exceed_the_limits_and_all_come_in_time() {
        let budget = MemoryBudget::new(1000, 600, Duration::from_secs(30));
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let memory = budget.for_owner(&owner(if i % 2 == 0 { "alice" } else { "bob" }));
                let budget = Arc::clone(&budget);
                tokio::spawn(async move {
                    for _ in 0..50 {
                        let grant = memory.reserve(100 + i).await.unwrap();
                        assert!(budget.reading() <= 1000, "{}", budget.reading());
                        tokio::task::yield_now().await;
                        drop(grant);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(budget.reading(), 0);
    }
}
