//! MD5, as Transfer computes it for every byte uploaded and downloaded.
//!
//! MD5 is most of the CPU both ends spend per byte (about three quarters of
//! `transferd`'s), so its speed is the service's speed on a busy machine. The md-5
//! crate's compression function is correct but leaves speed on the table: the compiler
//! reorders each step's additions so that three of them wait for the step's newest
//! value, where one would do. [`compress`] keeps the sum of the message word, the round
//! constant and the old register off that critical path, and uses the two-operation
//! form of the first round's function. Digests are identical (the tests check them
//! against md-5 on many lengths and splits), and [`Md5::checkpoint`] writes md-5's own
//! serialized state, so checkpoints saved by either can be resumed by the other.
//!
//! MD5 here checks integrity (a whole file arrived as the client read it); it is not a
//! defence against an attacker choosing colliding content.

mod compress;

pub use compress::compress;

/// Bytes per MD5 block.
const BLOCK: usize = 64;
/// Length of a checkpoint: md-5's serialized state (state words, block count, then the
/// buffered tail behind its length).
pub const CHECKPOINT_LEN: usize = 16 + 8 + 1 + (BLOCK - 1);

const INITIAL_STATE: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// An MD5 computation fed in pieces.
#[derive(Clone)]
pub struct Md5 {
    state: [u32; 4],
    /// Whole blocks compressed so far.
    blocks: u64,
    /// Bytes after the last whole block: always fewer than a block.
    tail: [u8; BLOCK],
    tail_len: usize,
}

impl Default for Md5 {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Md5 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Md5")
            .field("bytes", &self.len())
            .finish_non_exhaustive()
    }
}

impl Md5 {
    pub fn new() -> Self {
        Self {
            state: INITIAL_STATE,
            blocks: 0,
            tail: [0; BLOCK],
            tail_len: 0,
        }
    }

    /// The MD5 of `data`.
    pub fn digest(data: impl AsRef<[u8]>) -> [u8; 16] {
        let mut md5 = Self::new();
        md5.update(data);
        md5.finalize()
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.blocks
            .wrapping_mul(BLOCK as u64)
            .wrapping_add(self.tail_len as u64)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Feeds the next bytes.
    pub fn update(&mut self, data: impl AsRef<[u8]>) {
        let mut data = data.as_ref();
        if self.tail_len > 0 {
            let take = (BLOCK - self.tail_len).min(data.len());
            self.tail[self.tail_len..self.tail_len + take].copy_from_slice(&data[..take]);
            self.tail_len += take;
            data = &data[take..];
            if self.tail_len < BLOCK {
                return;
            }
            let block = self.tail;
            self.compress_blocks(std::slice::from_ref(&block));
            self.tail_len = 0;
        }
        let (blocks, rest) = data.as_chunks::<BLOCK>();
        self.compress_blocks(blocks);
        self.tail[..rest.len()].copy_from_slice(rest);
        self.tail_len = rest.len();
    }

    fn compress_blocks(&mut self, blocks: &[[u8; BLOCK]]) {
        compress(&mut self.state, blocks);
        self.blocks = self.blocks.wrapping_add(blocks.len() as u64);
    }

    /// The digest of everything fed.
    pub fn finalize(self) -> [u8; 16] {
        let bits = self.len().wrapping_mul(8);
        let mut state = self.state;
        // Padding: a 1 bit, zeros, then the length in bits, little-endian, ending a block.
        let mut last = [[0u8; BLOCK]; 2];
        let flat = last.as_flattened_mut();
        flat[..self.tail_len].copy_from_slice(&self.tail[..self.tail_len]);
        flat[self.tail_len] = 0x80;
        let blocks = if self.tail_len < BLOCK - 8 { 1 } else { 2 };
        flat[blocks * BLOCK - 8..blocks * BLOCK].copy_from_slice(&bits.to_le_bytes());
        compress(&mut state, &last[..blocks]);
        let mut digest = [0u8; 16];
        for (out, word) in digest.chunks_exact_mut(4).zip(state) {
            out.copy_from_slice(&word.to_le_bytes());
        }
        digest
    }

    /// The state so far, in md-5's serialized form ([`CHECKPOINT_LEN`] bytes): enough
    /// to go on hashing later with [`Md5::from_checkpoint`].
    pub fn checkpoint(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CHECKPOINT_LEN);
        for word in self.state {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.extend_from_slice(&self.blocks.to_le_bytes());
        out.push(self.tail_len as u8);
        out.extend_from_slice(&self.tail[..self.tail_len]);
        out.resize(CHECKPOINT_LEN, 0);
        out
    }

    /// Resumes from a [`Md5::checkpoint`] (or md-5's `serialize`); `None` if `bytes`
    /// is not one.
    pub fn from_checkpoint(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != CHECKPOINT_LEN {
            return None;
        }
        let (words, rest) = bytes.split_at(16);
        let (blocks, rest) = rest.split_at(8);
        let (&tail_len, buffered) = rest.split_first()?;
        let tail_len = usize::from(tail_len);
        if tail_len >= BLOCK || buffered[tail_len..].iter().any(|&b| b != 0) {
            return None;
        }
        let mut state = [0u32; 4];
        for (word, bytes) in state.iter_mut().zip(words.chunks_exact(4)) {
            *word = u32::from_le_bytes(bytes.try_into().ok()?);
        }
        let mut tail = [0u8; BLOCK];
        tail[..tail_len].copy_from_slice(&buffered[..tail_len]);
        Some(Self {
            state,
            blocks: u64::from_le_bytes(blocks.try_into().ok()?),
            tail,
            tail_len,
        })
    }
}

#[cfg(test)]
mod tests;
