//! Committed chunks a session keeps in memory until the in-order hasher reaches them:
//! within the session's own budget (window × chunk) and within the server's
//! [`MemoryBudget`], which messages being read take first. Over either, the chunks
//! needed last are dropped; they are on disk, and are read back when the hasher gets
//! to them.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::memory::MemoryBudget;

/// One session's parked chunks, by index.
#[derive(Debug)]
pub struct ParkedChunks {
    chunks: BTreeMap<u64, Bytes>,
    bytes: usize,
    own_limit: usize,
    budget: Arc<MemoryBudget>,
}

impl ParkedChunks {
    pub fn new(own_limit: usize, budget: Arc<MemoryBudget>) -> Self {
        Self {
            chunks: BTreeMap::new(),
            bytes: 0,
            own_limit,
            budget,
        }
    }

    pub fn insert(&mut self, index: u64, data: Bytes) {
        self.add(data.len());
        if let Some(old) = self.chunks.insert(index, data) {
            self.sub(old.len());
        }
    }

    pub fn get(&self, index: u64) -> Option<&Bytes> {
        self.chunks.get(&index)
    }

    pub fn remove(&mut self, index: u64) -> Option<Bytes> {
        let data = self.chunks.remove(&index)?;
        self.sub(data.len());
        Some(data)
    }

    /// Drops every chunk.
    pub fn clear(&mut self) {
        while let Some((_, data)) = self.chunks.pop_last() {
            self.sub(data.len());
        }
    }

    /// Drops the chunks needed last while this session is over its own limit or the
    /// server over its shared one.
    pub fn trim(&mut self) {
        while self.bytes > self.own_limit || self.budget.parked_over() {
            match self.chunks.pop_last() {
                Some((_, data)) => self.sub(data.len()),
                None => break,
            }
        }
    }

    fn add(&mut self, len: usize) {
        self.bytes += len;
        self.budget.park(len);
    }

    fn sub(&mut self, len: usize) {
        self.bytes -= len;
        self.budget.unpark(len);
    }
}

impl Drop for ParkedChunks {
    fn drop(&mut self) {
        self.budget.unpark(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn budget(limit: usize) -> Arc<MemoryBudget> {
        MemoryBudget::new(limit, limit, Duration::from_secs(1))
    }

    fn chunk(len: usize) -> Bytes {
        Bytes::from(vec![0u8; len])
    }

    #[test]
    fn a_session_keeps_at_most_its_own_limit_dropping_the_chunks_needed_last() {
        let budget = budget(1 << 30);
        let mut parked = ParkedChunks::new(300, Arc::clone(&budget));
        for index in [5, 1, 9, 3] {
            parked.insert(index, chunk(100));
        }
        parked.trim();
        assert!(parked.get(1).is_some() && parked.get(3).is_some() && parked.get(5).is_some());
        assert!(parked.get(9).is_none(), "the last needed goes first");
        assert_eq!(budget.parked(), 300);
    }

    #[test]
    fn sessions_together_keep_within_the_shared_budget() {
        let budget = budget(250);
        let mut first = ParkedChunks::new(1000, Arc::clone(&budget));
        let mut second = ParkedChunks::new(1000, Arc::clone(&budget));
        first.insert(0, chunk(200));
        first.trim();
        second.insert(0, chunk(100));
        second.insert(1, chunk(100));
        second.trim();
        assert!(budget.parked() <= 250, "{}", budget.parked());
        assert_eq!(first.remove(0).map(|d| d.len()), Some(200));
        drop(second);
        assert_eq!(budget.parked(), 0, "a session gone gives its bytes back");
    }
}
