//! The server's content identity: BLAKE3 of the received bytes, computed in file order
//! next to the MD5, with a state that can be saved and resumed (a hash checkpoint).
//!
//! MD5 is the client-visible checksum, but anyone can make two files with the same MD5;
//! content is therefore stored and deduplicated by BLAKE3, which nobody can collide.
//! BLAKE3's own `Hasher` cannot export its state, so this hashes the file in units of
//! [`UNIT`] bytes with BLAKE3's tree API ([`blake3::hazmat`]): each unit is a subtree, and
//! the state is the stack of subtree chaining values plus the bytes of the unit in
//! progress. The result is exactly `blake3::hash` of the whole file (tested below).

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};

pub use crate::ledger::Blake3Digest;

/// Bytes per subtree: a power of two multiple of BLAKE3's 1 KiB chunk, large enough for
/// its SIMD paths (16 chunks at once with AVX-512), small enough to checkpoint.
pub const UNIT: usize = 64 << 10;

/// BLAKE3 over bytes fed in order, with a resumable state.
#[derive(Clone)]
pub struct Blake3Stream {
    /// Chaining values of the complete units, merged as BLAKE3's tree requires but never
    /// beyond (the last merge of all must be the root's).
    stack: Vec<ChainingValue>,
    /// Complete units hashed into `stack`.
    units: u64,
    /// The unit in progress. A full unit stays here until more bytes arrive: only then
    /// is it known not to be the last.
    partial: Vec<u8>,
}

impl Default for Blake3Stream {
    fn default() -> Self {
        Self::new()
    }
}

impl Blake3Stream {
    pub fn new() -> Self {
        Self {
            stack: Vec::new(),
            units: 0,
            partial: Vec::with_capacity(UNIT),
        }
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.units * UNIT as u64 + self.partial.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.partial.len() == UNIT {
                let unit = std::mem::take(&mut self.partial);
                self.push_unit(&unit);
                self.partial = unit;
                self.partial.clear();
            }
            // Whole units with more bytes after them are hashed where they lie.
            if self.partial.is_empty() && data.len() > UNIT {
                let (unit, rest) = data.split_at(UNIT);
                self.push_unit(unit);
                data = rest;
                continue;
            }
            let take = (UNIT - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        if !self.partial.is_empty() {
            // More bytes follow every unit in the stack: its pairs may merge now.
            self.merge_stack(self.units);
        }
    }

    /// The BLAKE3 digest of everything fed.
    pub fn finalize(&self) -> Blake3Digest {
        if self.units == 0 {
            return *blake3::hash(&self.partial).as_bytes();
        }
        let mut stack = self.stack.clone();
        let mut right = if self.partial.is_empty() {
            // Only after a checkpoint that ended on a unit boundary (see there): the
            // last two values are the bottom of the right edge.
            let (Some(last), Some(before)) = (stack.pop(), stack.pop()) else {
                // `resume` refuses such states, so this is never reached.
                return *blake3::hash(&[]).as_bytes();
            };
            if stack.is_empty() {
                return *merge_subtrees_root(&before, &last, Mode::Hash).as_bytes();
            }
            merge_subtrees_non_root(&before, &last, Mode::Hash)
        } else {
            unit_cv(self.units, &self.partial)
        };
        while stack.len() > 1 {
            let left = stack.pop().unwrap_or_default();
            right = merge_subtrees_non_root(&left, &right, Mode::Hash);
        }
        let left = stack.pop().unwrap_or_default();
        *merge_subtrees_root(&left, &right, Mode::Hash).as_bytes()
    }

    /// The state, to continue later with [`Blake3Stream::resume`]: the hashed length,
    /// the stack of chaining values and the unit in progress.
    pub fn checkpoint(&self) -> Vec<u8> {
        let mut state = self.clone();
        // A full unit goes into the stack (it is not the only one, so a later root can
        // still be formed above it): a checkpoint on a unit boundary then carries no
        // unit bytes.
        if state.partial.len() == UNIT && state.units > 0 {
            let unit = std::mem::take(&mut state.partial);
            state.push_unit(&unit);
        }
        let mut out = Vec::with_capacity(9 + 32 * state.stack.len() + state.partial.len());
        out.extend_from_slice(&state.len().to_le_bytes());
        out.push(state.stack.len() as u8);
        for cv in &state.stack {
            out.extend_from_slice(cv);
        }
        out.extend_from_slice(&state.partial);
        out
    }

    /// A stream from a [`Blake3Stream::checkpoint`]; `None` if it is not one.
    pub fn resume(checkpoint: &[u8]) -> Option<Self> {
        let len = u64::from_le_bytes(checkpoint.get(..8)?.try_into().ok()?);
        let depth = usize::from(*checkpoint.get(8)?);
        let cvs_end = 9 + 32 * depth;
        let partial = checkpoint.get(cvs_end..)?;
        let whole = len.checked_sub(partial.len() as u64)?;
        let units = whole / UNIT as u64;
        if partial.len() > UNIT
            || whole % UNIT as u64 != 0
            || depth != expected_depth(units, partial.is_empty())?
        {
            return None;
        }
        let stack = checkpoint[9..cvs_end]
            .chunks_exact(32)
            .map(|cv| cv.try_into().ok())
            .collect::<Option<Vec<ChainingValue>>>()?;
        let mut restored = Self::new();
        restored.stack = stack;
        restored.units = units;
        restored.partial.extend_from_slice(partial);
        Some(restored)
    }

    /// Adds the chaining value of the next unit, which is not the last.
    fn push_unit(&mut self, unit: &[u8]) {
        let cv = unit_cv(self.units, unit);
        self.merge_stack(self.units);
        self.stack.push(cv);
        self.units += 1;
    }

    /// Merges the stack down to one value per set bit of `units`: the complete subtrees
    /// to the left of unit number `units`, which is known to exist.
    fn merge_stack(&mut self, units: u64) {
        while self.stack.len() > units.count_ones() as usize {
            let (Some(right), Some(left)) = (self.stack.pop(), self.stack.pop()) else {
                return;
            };
            self.stack
                .push(merge_subtrees_non_root(&left, &right, Mode::Hash));
        }
    }
}

/// How many values the stack holds with `units` complete units: one per set bit once
/// bytes of the next unit arrived, one more after a checkpoint on a unit boundary.
/// `None` for a state no stream can be in.
fn expected_depth(units: u64, on_boundary: bool) -> Option<usize> {
    match (units, on_boundary) {
        (0, _) => Some(0),
        (_, false) => Some(units.count_ones() as usize),
        // A checkpoint flushes a full unit only when another came before it.
        (1, true) => None,
        // The last unit was pushed without merging below it (see `push_unit`).
        (_, true) => Some((units - 1).count_ones() as usize + 1),
    }
}

/// The non-root chaining value of unit number `index`.
fn unit_cv(index: u64, bytes: &[u8]) -> ChainingValue {
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(index * UNIT as u64);
    hasher.update(bytes);
    hasher.finalize_non_root()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    const SIZES: [usize; 14] = [
        0,
        1,
        1023,
        1024,
        UNIT - 1,
        UNIT,
        UNIT + 1,
        2 * UNIT,
        2 * UNIT + 7,
        3 * UNIT,
        4 * UNIT,
        5 * UNIT + 4099,
        8 * UNIT,
        13 * UNIT + 1,
    ];

    #[test]
    fn the_digest_is_blake3_of_the_whole_for_any_size_and_split() {
        for size in SIZES {
            let bytes = data(size);
            let expected = *blake3::hash(&bytes).as_bytes();
            for piece in [1usize, 1000, UNIT - 3, UNIT, UNIT + 5, 3 * UNIT, usize::MAX] {
                let mut stream = Blake3Stream::new();
                for part in bytes.chunks(piece.min(size.max(1))) {
                    stream.update(part);
                }
                assert_eq!(stream.len(), size as u64);
                assert_eq!(
                    stream.finalize(),
                    expected,
                    "size {size}, pieces of {piece}"
                );
            }
        }
    }

    #[test]
    fn a_checkpoint_taken_anywhere_resumes_to_the_same_digest() {
        for size in SIZES {
            let bytes = data(size);
            let expected = *blake3::hash(&bytes).as_bytes();
            let mut cuts: Vec<usize> = vec![0, size / 3, size / 2, size];
            cuts.extend((1..=13).map(|u| u * UNIT).filter(|c| *c <= size));
            for cut in cuts {
                let mut first = Blake3Stream::new();
                first.update(&bytes[..cut]);
                let checkpoint = first.checkpoint();
                assert!(checkpoint.len() <= 9 + 32 * 64 + UNIT);
                let mut resumed = Blake3Stream::resume(&checkpoint)
                    .unwrap_or_else(|| panic!("size {size}, cut {cut}: a valid checkpoint"));
                assert_eq!(resumed.len(), cut as u64);
                // Finalising right away, or after the rest, both match.
                if cut == size {
                    assert_eq!(resumed.finalize(), expected, "size {size}, cut at the end");
                }
                resumed.update(&bytes[cut..]);
                assert_eq!(resumed.finalize(), expected, "size {size}, cut {cut}");
                // A checkpoint of a checkpoint is the same state.
                let again = Blake3Stream::resume(&checkpoint).unwrap().checkpoint();
                assert_eq!(again, checkpoint);
            }
        }
    }

    #[test]
    fn a_checkpoint_on_a_unit_boundary_carries_no_unit_bytes() {
        let bytes = data(4 * UNIT);
        let mut stream = Blake3Stream::new();
        stream.update(&bytes);
        assert!(stream.checkpoint().len() < 9 + 32 * 4);
    }

    #[test]
    fn malformed_checkpoints_are_refused() {
        let mut stream = Blake3Stream::new();
        stream.update(&data(3 * UNIT + 10));
        let good = stream.checkpoint();
        assert!(Blake3Stream::resume(&good).is_some());
        assert!(Blake3Stream::resume(&[]).is_none());
        assert!(
            Blake3Stream::resume(&good[..good.len() - 1]).is_none(),
            "a byte short"
        );
        let mut longer = good.clone();
        longer.push(0);
        assert!(Blake3Stream::resume(&longer).is_none(), "a byte long");
        let mut deeper = good.clone();
        deeper[8] += 1;
        assert!(
            Blake3Stream::resume(&deeper).is_none(),
            "a wrong stack depth"
        );
        let mut huge = good;
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(
            Blake3Stream::resume(&huge).is_none(),
            "a length that does not fit"
        );
    }
}
