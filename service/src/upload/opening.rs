//! Opening sessions one at a time per owner, so that the per-owner caps (open uploads,
//! quota), checked against the ledger before a session opens, also hold for
//! `CheckUpload`s that arrive at the same moment. Within this process: owners are
//! spread over a fixed set of locks, so two owners may sometimes wait for each other,
//! but never for long (a check and an insert).

use std::hash::{BuildHasher, RandomState};

use tokio::sync::{Mutex, MutexGuard};

use crate::identity::Owner;

/// Locks owners are spread over.
const LOCKS: usize = 64;

pub struct OpeningLocks {
    locks: Vec<Mutex<()>>,
    /// Keyed per process, so nobody can pick owner names that share one lock.
    spread: RandomState,
}

impl OpeningLocks {
    pub fn new() -> Self {
        Self {
            locks: (0..LOCKS).map(|_| Mutex::new(())).collect(),
            spread: RandomState::new(),
        }
    }

    /// Held while `owner`'s caps are checked and its new session recorded.
    pub async fn lock(&self, owner: &Owner) -> MutexGuard<'_, ()> {
        let index = self.spread.hash_one(owner) as usize % LOCKS;
        self.locks[index].lock().await
    }
}

impl Default for OpeningLocks {
    fn default() -> Self {
        Self::new()
    }
}
