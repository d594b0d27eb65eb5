//! Reusable buffers for reading a file's chunks.
//!
//! A chunk read lives only until it is encoded into a message and hashed, so an upload
//! cycles through a handful of buffers. Reading each chunk into a fresh allocation made
//! the kernel copy into pages never touched before: the file's `pread` was a quarter of
//! the client's CPU while the same copy into a reused buffer is five times cheaper.
//! Buffers go back to a small pool when the last reference to their bytes is dropped.

use std::sync::{Mutex, PoisonError};

use bytes::Bytes;

/// Most bytes of idle buffers kept for reuse; more are freed.
const POOL_BYTES: usize = 32 << 20;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// A buffer of at least `len` initialized bytes, from the pool if one there is large
/// enough. Its contents are whatever it held before: the caller overwrites them.
pub(crate) fn take(len: usize) -> Vec<u8> {
    let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
    match pool.iter().position(|b| b.len() >= len) {
        Some(i) => pool.swap_remove(i),
        None => {
            drop(pool);
            vec![0; len]
        }
    }
}

/// The first `len` bytes of `buffer`, which goes back to the pool once they are dropped.
pub(crate) fn freeze(buffer: Vec<u8>, len: usize) -> Bytes {
    Bytes::from_owner(Pooled { buffer, len })
}

struct Pooled {
    buffer: Vec<u8>,
    len: usize,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buffer[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let buffer = std::mem::take(&mut self.buffer);
        let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
        let idle: usize = pool.iter().map(Vec::len).sum();
        if idle + buffer.len() <= POOL_BYTES {
            pool.push(buffer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_buffer_shows_only_the_bytes_written_into_it() {
        let mut first = take(1000);
        first.fill(7);
        let first = freeze(first, 1000);
        assert_eq!(&first[..], &[7; 1000][..]);
        drop(first);
        let mut second = take(10);
        assert!(second.len() >= 10);
        second[..10].fill(1);
        let second = freeze(second, 10);
        assert_eq!(&second[..], &[1; 10][..]);
        // A slice keeps its buffer out of the pool until it too is dropped.
        let part = second.slice(2..4);
        drop(second);
        assert_eq!(&part[..], &[1, 1][..]);
    }
}
