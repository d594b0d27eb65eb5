//! Which chunks of an upload are committed, as runs of consecutive indexes: memory
//! grows with the number of gaps, not with the file's chunk count, so a 1 TiB session of
//! 64 KiB chunks that was never sent costs nothing.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommittedChunks {
    /// Half-open runs `start -> end`, neither overlapping nor touching.
    runs: BTreeMap<u64, u64>,
    count: u64,
}

impl CommittedChunks {
    /// The chunks below `limit` in half-open `ranges` (as the ledger reports them).
    pub fn from_ranges(ranges: impl IntoIterator<Item = (u64, u64)>, limit: u64) -> Self {
        let mut committed = Self::default();
        for (start, end) in ranges {
            committed.insert_range(start.min(limit), end.min(limit));
        }
        committed
    }

    pub fn contains(&self, index: u64) -> bool {
        self.runs
            .range(..=index)
            .next_back()
            .is_some_and(|(_, &end)| index < end)
    }

    /// Records `index`; `false` if it was already recorded.
    pub fn insert(&mut self, index: u64) -> bool {
        if self.contains(index) {
            return false;
        }
        self.insert_range(index, index.saturating_add(1));
        true
    }

    /// How many chunks are committed.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// How many chunks from index 0 on are committed without a gap.
    pub fn prefix_len(&self) -> u64 {
        self.runs.get(&0).copied().unwrap_or(0)
    }

    fn insert_range(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        // Absorb every run that overlaps or touches [start, end).
        let touching: Vec<(u64, u64)> = self
            .runs
            .range(..=end)
            .rev()
            .take_while(|(_, run_end)| **run_end >= start)
            .map(|(s, e)| (*s, *e))
            .collect();
        for (run_start, run_end) in touching {
            self.runs.remove(&run_start);
            self.count -= run_end - run_start;
            start = start.min(run_start);
            end = end.max(run_end);
        }
        self.runs.insert(start, end);
        self.count += end - start;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_arriving_in_any_order_merge_into_runs() {
        let mut committed = CommittedChunks::default();
        for index in [5, 3, 4, 0, 9, 1] {
            assert!(committed.insert(index));
        }
        assert!(!committed.insert(4), "a second time is no news");
        assert_eq!(committed.len(), 6);
        assert_eq!(committed.prefix_len(), 2);
        assert_eq!(committed.runs.len(), 3, "{:?}", committed.runs);
        assert!(committed.insert(2));
        assert_eq!(committed.prefix_len(), 6);
        for index in 0..12 {
            assert_eq!(
                committed.contains(index),
                index < 6 || index == 9,
                "{index}"
            );
        }
    }

    #[test]
    fn ranges_from_the_ledger_are_clipped_to_the_upload() {
        let committed = CommittedChunks::from_ranges([(0, 3), (3, 5), (8, 20)], 10);
        assert_eq!(committed.len(), 7);
        assert_eq!(committed.prefix_len(), 5);
        assert!(!committed.contains(10));
        assert_eq!(committed.runs.len(), 2);
    }

    #[test]
    fn a_huge_upload_never_sent_costs_no_memory_per_chunk() {
        let mut committed = CommittedChunks::from_ranges([], 1 << 24);
        assert_eq!(committed.len(), 0);
        assert!(committed.insert((1 << 24) - 1));
        assert_eq!(committed.runs.len(), 1);
    }
}
