//! The checks one received chunk passes before a session sees it: that it belongs to
//! the upload (its index and length), and its CRC32C, computed while the bytes are
//! put where direct I/O can write them.

use std::sync::Arc;

use bytes::Bytes;
use transfer_proto::v1::{Chunk, ChunkOutcome};
use transfer_wire::aligned::{BufferPool, is_aligned};

use crate::layout::ChunkLayout;

/// Why a chunk cannot belong to this upload at all: its index or its length.
pub(super) fn misfit(layout: ChunkLayout, chunk: &Chunk) -> Option<(ChunkOutcome, String)> {
    let index = chunk.index;
    match layout.chunk_len(index) {
        None => Some((
            ChunkOutcome::IndexOutOfRange,
            format!(
                "chunk index {index} is out of range: this upload has {} chunks (0 to {})",
                layout.chunk_count(),
                layout.chunk_count().saturating_sub(1)
            ),
        )),
        Some(len) if chunk.data.len() != len as usize => Some((
            ChunkOutcome::WrongLength,
            format!(
                "chunk {index} must be {len} bytes long, got {} bytes",
                chunk.data.len()
            ),
        )),
        Some(_) => None,
    }
}

/// The chunk's CRC32C, and its bytes in a page-aligned buffer of their own, ready for
/// direct I/O. Chunks read by [`super::wire`] arrive so already. Others (through tonic's
/// decoder) are copied, which also frees tonic's larger buffer at once; a tonic buffer
/// that happens to be aligned is kept, at worst holding a little more memory a while.
/// Both run here, on the runtime thread that decoded the chunk, while its bytes are
/// still in cache: handed to another thread they cost more CPU per GiB, and slowed
/// `CheckUpload` under many uploads (figures: BENCHMARKS.md, "Measurements behind choices in the code").
pub(super) fn check_and_copy(buffers: &Arc<BufferPool>, data: &Bytes) -> (u32, Bytes) {
    let data = if is_aligned(data) {
        data.clone()
    } else {
        buffers.copy_aligned(data)
    };
    (crc32c::crc32c(&data), data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(index: u64, len: usize) -> Chunk {
        Chunk {
            index,
            crc32c: 0,
            data: vec![1; len].into(),
        }
    }

    #[test]
    fn a_chunk_fits_by_its_index_and_exact_length_and_the_last_may_be_shorter() {
        // 10 bytes in chunks of 4: 4, 4 and 2.
        let layout = ChunkLayout::new(10, 4);
        assert!(misfit(layout, &chunk(0, 4)).is_none());
        assert!(misfit(layout, &chunk(2, 2)).is_none());
        let (outcome, why) = misfit(layout, &chunk(3, 4)).unwrap();
        assert_eq!(outcome, ChunkOutcome::IndexOutOfRange);
        assert!(why.contains("has 3 chunks (0 to 2)"), "{why}");
        let (outcome, why) = misfit(layout, &chunk(1, 3)).unwrap();
        assert_eq!(outcome, ChunkOutcome::WrongLength);
        assert!(why.contains("must be 4 bytes long, got 3"), "{why}");
        assert_eq!(
            misfit(layout, &chunk(2, 4)).unwrap().0,
            ChunkOutcome::WrongLength
        );
    }

    #[test]
    fn the_crc32c_is_of_the_bytes_and_they_come_back_aligned() {
        let data = Bytes::from((0..10_000u32).map(|i| i as u8).collect::<Vec<_>>());
        let unaligned = data.slice(1..);
        let buffers = BufferPool::new(transfer_wire::aligned::DEFAULT_POOL_BYTES);
        let (crc, copied) = check_and_copy(&buffers, &unaligned);
        assert_eq!(crc, crc32c::crc32c(&unaligned));
        assert_eq!(copied, unaligned);
        assert!(is_aligned(&copied));
    }
}
