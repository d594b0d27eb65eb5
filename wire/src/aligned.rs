//! Page-aligned, pooled buffers for bulk data: upload chunks, stored content read back
//! with direct I/O, download pieces.
//!
//! A chunk arrives inside the transport's decode buffer, which may be larger than the
//! chunk and stays allocated as long as any slice of it lives: holding a window of
//! such chunks pinned about twice their size. Copying each chunk once into a buffer of
//! its own releases the transport's buffer at once, and starting that buffer on a page
//! boundary lets direct I/O write it without a second copy. Buffers go back to a small
//! pool when the last reference is dropped, so steady uploads reuse memory that is
//! already mapped instead of faulting in fresh pages for every chunk.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

/// The alignment direct I/O needs (a page, and a multiple of common block sizes).
pub const ALIGN: usize = 4096;

/// Most bytes of idle buffers a server's or client's pool keeps for reuse; more are freed.
pub const DEFAULT_POOL_BYTES: usize = 8 << 20;
/// Smaller buffers are not kept: they are cheap to allocate, and a pool full of them
/// would turn away the chunk-sized ones whose reuse saves page faults.
const POOL_MIN: usize = 256 << 10;

/// Idle buffers for the next chunk to reuse, up to a limit of bytes. A server or client
/// makes one and hands it to everything that reads bulk data (framers, the blob store);
/// a reader with a window of chunks in flight may keep a pool of its own (see
/// [`BufferPool::read_aligned`]), freed with its last buffer.
pub struct BufferPool {
    idle: Mutex<Vec<Vec<u8>>>,
    limit: usize,
}

impl BufferPool {
    /// A pool that keeps up to `limit` bytes of idle buffers.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            idle: Mutex::new(Vec::new()),
            limit,
        })
    }

    /// An empty buffer with room for `len` bytes from an aligned start: an idle one of
    /// at most twice that size (a small message does not hold a chunk's buffer), or a
    /// new one. Its bytes are not zeroed first (every byte read is written by the copy):
    /// that took memset out of transferd's profile, though not measurably out of its
    /// CPU per GiB, since a fresh buffer still faults its pages in.
    fn take(&self, len: usize) -> Vec<u8> {
        let needed = len + ALIGN;
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        match idle
            .iter()
            .position(|b| b.capacity() >= needed && b.capacity() / 2 <= needed)
        {
            // Its old bytes stay: a reader overwrites them rather than zero them again.
            Some(i) => idle.swap_remove(i),
            None => {
                drop(idle);
                Vec::with_capacity(needed)
            }
        }
    }

    /// Keeps `buffer` for reuse if it is chunk-sized and there is room; frees it if not.
    fn give_back(&self, buffer: Vec<u8>) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let held: usize = idle.iter().map(Vec::capacity).sum();
        if buffer.capacity() >= POOL_MIN && held + buffer.capacity() <= self.limit {
            idle.push(buffer);
        }
    }
}

/// The bytes of one chunk, starting on an [`ALIGN`] boundary.
struct AlignedChunk {
    buffer: Vec<u8>,
    start: usize,
    len: usize,
    /// Where the buffer goes back to.
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for AlignedChunk {
    fn as_ref(&self) -> &[u8] {
        &self.buffer[self.start..self.start + self.len]
    }
}

impl Drop for AlignedChunk {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buffer));
    }
}

impl BufferPool {
    /// `data` copied into a buffer of its own (from this pool) that starts on an
    /// [`ALIGN`] boundary.
    pub fn copy_aligned(self: &Arc<Self>, data: &[u8]) -> Bytes {
        let mut builder = AlignedBuilder::new(self, data.len(), 0);
        builder.extend(data);
        builder.freeze()
    }
}

/// A pooled buffer filled piece by piece with `len` bytes, placed so that the byte at
/// offset `aligned_at` lands on an [`ALIGN`] boundary: a message gathered straight from
/// the network, with the chunk inside it ready for direct I/O.
pub struct AlignedBuilder {
    buffer: Vec<u8>,
    start: usize,
    len: usize,
    pool: Arc<BufferPool>,
}

impl AlignedBuilder {
    /// Room for `len` bytes, in a buffer of `pool`; `aligned_at` must be at most `len`.
    pub fn new(pool: &Arc<BufferPool>, len: usize, aligned_at: usize) -> Self {
        let mut buffer = pool.take(len);
        // The allocation does not move while the capacity suffices, so this offset holds.
        let misalignment = (buffer.as_ptr() as usize + aligned_at.min(len)) % ALIGN;
        let start = (ALIGN - misalignment) % ALIGN;
        buffer.clear();
        buffer.resize(start, 0);
        Self {
            buffer,
            start,
            len,
            pool: Arc::clone(pool),
        }
    }

    /// Bytes still to come.
    pub fn remaining(&self) -> usize {
        self.start + self.len - self.buffer.len()
    }

    /// Appends the next bytes; at most [`Self::remaining`] of them are taken, and how
    /// many is returned.
    pub fn extend(&mut self, bytes: &[u8]) -> usize {
        let taken = bytes.len().min(self.remaining());
        self.buffer.extend_from_slice(&bytes[..taken]);
        taken
    }

    /// The bytes appended so far (all `len` of them once [`Self::remaining`] is 0).
    pub fn freeze(self) -> Bytes {
        let len = self.buffer.len() - self.start;
        Bytes::from_owner(AlignedChunk {
            buffer: self.buffer,
            start: self.start,
            len,
            pool: self.pool,
        })
    }
}

impl BufferPool {
    /// Bytes `skip..skip + len` of what `fill` reads into a buffer of this pool, `span`
    /// bytes starting on an [`ALIGN`] boundary, as direct I/O reads need. `fill`
    /// returns how many bytes it read; fewer than `skip + len` is an unexpected end of
    /// file. The buffer comes back to this pool when the bytes are dropped.
    pub fn read_aligned(
        self: &Arc<Self>,
        span: usize,
        skip: usize,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> std::io::Result<usize>,
    ) -> std::io::Result<Bytes> {
        let mut buffer = self.take(span);
        let start = buffer.as_ptr().align_offset(ALIGN);
        // A reused buffer's old bytes are overwritten by the read; only new memory is zeroed.
        buffer.resize(start + span, 0);
        let read = fill(&mut buffer[start..start + span])?;
        if read < skip + len {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(Bytes::from_owner(AlignedChunk {
            buffer,
            start: start + skip,
            len,
            pool: Arc::clone(self),
        }))
    }
}

/// Whether `data` starts on an [`ALIGN`] boundary.
pub fn is_aligned(data: &[u8]) -> bool {
    (data.as_ptr() as usize).is_multiple_of(ALIGN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_keeps_chunk_sized_buffers_and_lends_them_only_to_a_near_fit() {
        let pool = BufferPool::new(DEFAULT_POOL_BYTES);
        let chunk = pool.take(1 << 20);
        let address = chunk.as_ptr();
        pool.give_back(chunk);
        // A small request gets a buffer of its own, and is not kept afterwards.
        let small = pool.take(1000);
        assert_ne!(small.as_ptr(), address);
        pool.give_back(small);
        assert_eq!(
            pool.idle.lock().unwrap().len(),
            1,
            "only the chunk-sized one is idle"
        );
        // A near fit reuses the chunk's buffer.
        let near = pool.take(900_000);
        assert_eq!(near.as_ptr(), address);
        // The pool holds at most DEFAULT_POOL_BYTES.
        for _ in 0..(DEFAULT_POOL_BYTES >> 20) + 2 {
            pool.give_back(Vec::with_capacity(1 << 20));
        }
        let held: usize = pool.idle.lock().unwrap().iter().map(Vec::capacity).sum();
        assert!(held <= DEFAULT_POOL_BYTES, "{held}");
    }

    #[test]
    fn a_pool_of_its_own_takes_back_its_buffers_up_to_its_limit() {
        let pool = BufferPool::new(3 * (1 << 20) + 3 * ALIGN);
        let read = || {
            pool.read_aligned(1 << 20, 0, 1 << 20, |buf| {
                buf.fill(7);
                Ok(buf.len())
            })
            .unwrap()
        };
        let chunks: Vec<Bytes> = (0..4).map(|_| read()).collect();
        assert!(
            chunks
                .iter()
                .all(|c| is_aligned(c) && c.iter().all(|&b| b == 7))
        );
        let addresses: Vec<_> = chunks.iter().map(|c| c.as_ptr()).collect();
        drop(chunks);
        assert_eq!(
            pool.idle.lock().unwrap().len(),
            3,
            "three fit, the fourth is freed"
        );
        // The next reads reuse those buffers.
        let again = read();
        assert!(addresses.contains(&again.as_ptr()));
        // A buffer outliving its pool's other owners still goes back to it, and is freed
        // with it.
        let weak = Arc::downgrade(&pool);
        drop(pool);
        assert!(weak.upgrade().is_some());
        drop(again);
        assert!(weak.upgrade().is_none());
    }

    #[test]
    fn copies_are_aligned_and_hold_exactly_their_bytes() {
        let pool = BufferPool::new(DEFAULT_POOL_BYTES);
        let data: Vec<u8> = (0..400_000u32).map(|i| i as u8).collect();
        let first = pool.copy_aligned(&data);
        assert!(is_aligned(&first));
        assert_eq!(&first[..], &data[..]);
        drop(first);
        // A buffer the pool may hand out again holds only the new bytes.
        let again = pool.copy_aligned(&data[..300_000]);
        assert!(is_aligned(&again));
        assert_eq!(&again[..], &data[..300_000]);
        assert!(pool.copy_aligned(&[]).is_empty());
    }

    #[test]
    fn a_builder_puts_the_chosen_byte_on_a_boundary_and_takes_no_more_than_it_holds() {
        let pool = BufferPool::new(DEFAULT_POOL_BYTES);
        let data: Vec<u8> = (0..70_000u32).map(|i| (i * 7) as u8).collect();
        for aligned_at in [0, 1, 17, 4095, 4096, 69_999] {
            let mut builder = AlignedBuilder::new(&pool, data.len(), aligned_at);
            assert_eq!(builder.extend(&data[..10]), 10);
            assert_eq!(builder.remaining(), data.len() - 10);
            // Offered more than it has room for, it takes only the rest.
            let mut offered = data[10..].to_vec();
            offered.extend_from_slice(b"beyond");
            assert_eq!(builder.extend(&offered), data.len() - 10);
            assert_eq!(builder.remaining(), 0);
            let message = builder.freeze();
            assert_eq!(&message[..], &data[..]);
            assert!(
                is_aligned(&message[aligned_at..]),
                "aligned at {aligned_at}"
            );
        }
    }
}
