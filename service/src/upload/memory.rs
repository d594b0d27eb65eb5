//! The memory upload streams may make the server hold beyond their windows, in one
//! budget: large messages being read (each granted its length before its bytes are
//! read, within a share per owner and the server's whole) and chunks parked for the
//! in-order hasher (which take what is left, and are dropped first when it runs out:
//! they are on disk and can be read back).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use transfer_wire::memory::{MemoryHold, MemoryRefused, MessageMemory, Reserving};

use crate::identity::Owner;

/// Owners with no message being read are forgotten once this many are known.
const OWNERS_KEPT: usize = 1024;

/// The server's memory for upload streams.
#[derive(Debug)]
pub struct MemoryBudget {
    /// Most bytes of messages being read plus chunks parked, across every stream.
    limit: usize,
    /// Most bytes of messages being read for one owner.
    owner_limit: usize,
    /// How long a message waits for room before its stream is refused.
    wait: Duration,
    /// Bytes granted to messages being read.
    reading: AtomicUsize,
    /// Bytes of chunks parked for the hasher.
    parked: AtomicUsize,
    /// Told whenever a grant is given back.
    freed: Notify,
    /// Bytes being read per owner.
    owners: Mutex<HashMap<Owner, Arc<AtomicUsize>>>,
}

impl MemoryBudget {
    pub fn new(limit: usize, owner_limit: usize, wait: Duration) -> Arc<Self> {
        Arc::new(Self {
            limit,
            owner_limit,
            wait,
            reading: AtomicUsize::new(0),
            parked: AtomicUsize::new(0),
            freed: Notify::new(),
            owners: Mutex::new(HashMap::new()),
        })
    }

    /// What grants the large messages of one stream of `owner` their memory.
    pub fn for_owner(self: &Arc<Self>, owner: &Owner) -> Arc<dyn MessageMemory> {
        let mut owners = self.owners.lock().unwrap_or_else(PoisonError::into_inner);
        if owners.len() >= OWNERS_KEPT {
            // Only the map holds them: no stream of theirs is open.
            owners.retain(|_, reading| Arc::strong_count(reading) > 1);
        }
        let reading = Arc::clone(owners.entry(owner.clone()).or_default());
        Arc::new(StreamMemory {
            budget: Arc::clone(self),
            reading,
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

    /// `len` bytes for a message of the owner counting in `owner_reading`, if both the
    /// owner's share and the server's budget have room now. Parked chunks do not stand
    /// in the way: they make room.
    fn try_grant(self: &Arc<Self>, owner_reading: &Arc<AtomicUsize>, len: usize) -> Option<Grant> {
        if owner_reading.fetch_add(len, Ordering::AcqRel) + len > self.owner_limit {
            owner_reading.fetch_sub(len, Ordering::AcqRel);
            return None;
        }
        if self.reading.fetch_add(len, Ordering::AcqRel) + len > self.limit {
            self.reading.fetch_sub(len, Ordering::AcqRel);
            owner_reading.fetch_sub(len, Ordering::AcqRel);
            return None;
        }
        Some(Grant {
            budget: Arc::clone(self),
            owner_reading: Arc::clone(owner_reading),
            len,
        })
    }

    /// Waits up to the budget's wait for `len` bytes.
    async fn grant(
        self: Arc<Self>,
        owner_reading: Arc<AtomicUsize>,
        len: usize,
    ) -> Result<MemoryHold, MemoryRefused> {
        if len > self.owner_limit.min(self.limit) {
            return Err(self.refusal(len, &owner_reading));
        }
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before trying, so a grant given back in between is not missed.
            freed.as_mut().enable();
            if let Some(grant) = self.try_grant(&owner_reading, len) {
                return Ok(Box::new(grant));
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(self.refusal(len, &owner_reading));
            }
        }
    }

    fn refusal(&self, len: usize, owner_reading: &AtomicUsize) -> MemoryRefused {
        let (whose, limit, flag) = if owner_reading.load(Ordering::Relaxed) + len > self.owner_limit
        {
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
    reading: Arc<AtomicUsize>,
}

impl MessageMemory for StreamMemory {
    fn reserve(&self, len: usize) -> Reserving {
        Box::pin(Arc::clone(&self.budget).grant(Arc::clone(&self.reading), len))
    }
}

/// Bytes granted to one message, given back when it is whole or its stream ends.
struct Grant {
    budget: Arc<MemoryBudget>,
    owner_reading: Arc<AtomicUsize>,
    len: usize,
}

impl Drop for Grant {
    fn drop(&mut self) {
        self.owner_reading.fetch_sub(self.len, Ordering::AcqRel);
        self.budget.reading.fetch_sub(self.len, Ordering::AcqRel);
        self.budget.freed.notify_waiters();
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
    async fn parked_chunks_yield_to_messages_being_read() {
        let budget = MemoryBudget::new(100, 100, Duration::from_secs(1));
        budget.park(90);
        assert!(!budget.parked_over());
        let _reading = budget.for_owner(&owner("alice")).reserve(40).await.unwrap();
        assert!(budget.parked_over(), "parked chunks make room");
        budget.unpark(90);
        assert!(!budget.parked_over());
    }
}
