//! Bookkeeping of chunk indexes that stays small however many chunks a file has: a bit
//! set of acknowledged chunks, and the chunks still to send computed as we go from the
//! server's committed ranges instead of listed one by one.

use std::collections::VecDeque;

/// A set of chunk indexes, one bit each.
#[derive(Debug, Default)]
pub(crate) struct ChunkSet {
    words: Vec<u64>,
    len: u64,
}

impl ChunkSet {
    pub fn contains(&self, index: u64) -> bool {
        let word = (index / 64) as usize;
        self.words
            .get(word)
            .is_some_and(|w| w & (1 << (index % 64)) != 0)
    }

    /// Adds `index`; false if it was there already.
    pub fn insert(&mut self, index: u64) -> bool {
        let word = (index / 64) as usize;
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let bit = 1 << (index % 64);
        let added = self.words[word] & bit == 0;
        self.words[word] |= bit;
        self.len += u64::from(added);
        added
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn clear(&mut self) {
        self.words.clear();
        self.len = 0;
    }
}

/// The chunks an attempt still has to send, in order: those neither committed (per the
/// server's ranges) nor acknowledged, plus rejected ones to send again first.
pub(crate) struct ToSend {
    count: u64,
    next: u64,
    /// Committed ranges `[start, end)`, sorted, not yet passed.
    committed: VecDeque<(u64, u64)>,
    again: VecDeque<u64>,
}

impl ToSend {
    pub fn new(count: u64, mut committed: Vec<(u64, u64)>) -> Self {
        committed.sort_unstable();
        Self {
            count,
            next: 0,
            committed: committed.into(),
            again: VecDeque::new(),
        }
    }

    /// Sends `index` again before anything else.
    pub fn again(&mut self, index: u64) {
        self.again.push_back(index);
    }

    /// The next chunk to send, skipping acknowledged ones.
    pub fn next(&mut self, acked: &ChunkSet) -> Option<u64> {
        if let Some(index) = self.again.pop_front() {
            return Some(index);
        }
        while self.next < self.count {
            while let Some(&(start, end)) = self.committed.front() {
                if start > self.next {
                    break;
                }
                // A range at or before the cursor: skip past it.
                self.next = self.next.max(end);
                self.committed.pop_front();
            }
            if self.next >= self.count {
                break;
            }
            let index = self.next;
            self.next += 1;
            if !acked.contains(index) {
                return Some(index);
            }
        }
        None
    }

    /// Whether nothing is left to send.
    pub fn is_empty(&mut self, acked: &ChunkSet) -> bool {
        if !self.again.is_empty() {
            return false;
        }
        // Peek by advancing past committed and acknowledged chunks.
        match self.next(acked) {
            Some(index) => {
                self.again.push_front(index);
                false
            }
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_set_counts_each_index_once() {
        let mut set = ChunkSet::default();
        assert!(set.insert(3));
        assert!(set.insert(200));
        assert!(!set.insert(3));
        assert!(set.contains(200) && set.contains(3) && !set.contains(4));
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn chunks_to_send_skip_committed_ranges_and_acked_chunks() {
        let mut acked = ChunkSet::default();
        acked.insert(6);
        let mut to_send = ToSend::new(10, vec![(7, 9), (0, 2)]);
        let mut sent = Vec::new();
        while let Some(index) = to_send.next(&acked) {
            sent.push(index);
        }
        assert_eq!(sent, vec![2, 3, 4, 5, 9]);
    }

    #[test]
    fn a_rejected_chunk_is_sent_again_first() {
        let acked = ChunkSet::default();
        let mut to_send = ToSend::new(3, vec![]);
        assert_eq!(to_send.next(&acked), Some(0));
        to_send.again(0);
        assert!(!to_send.is_empty(&acked));
        assert_eq!(to_send.next(&acked), Some(0));
        assert_eq!(to_send.next(&acked), Some(1));
        assert_eq!(to_send.next(&acked), Some(2));
        assert!(to_send.is_empty(&acked));
    }
}
