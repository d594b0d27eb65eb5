//! How a file is cut into chunks: the same arithmetic on both sides of an upload.

/// The chunks of one file: chunk `i` covers bytes `[i * chunk_size, min((i + 1) * chunk_size, size))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLayout {
    pub size: u64,
    pub chunk_size: u32,
}

impl ChunkLayout {
    pub fn new(size: u64, chunk_size: u32) -> Self {
        debug_assert!(chunk_size > 0 || size == 0);
        Self { size, chunk_size }
    }

    /// Number of chunks; 0 for an empty file.
    pub fn chunk_count(&self) -> u64 {
        if self.chunk_size == 0 {
            return 0;
        }
        self.size.div_ceil(u64::from(self.chunk_size))
    }

    /// Byte offset of chunk `index`.
    pub fn offset(&self, index: u64) -> u64 {
        index * u64::from(self.chunk_size)
    }

    /// The layout a server announced for a file of `size` bytes, if its chunk count is
    /// the one that size and chunk size make.
    pub fn announced(size: u64, chunk_size: u32, chunk_count: u64) -> Option<Self> {
        if chunk_size == 0 && size > 0 {
            return None;
        }
        let layout = Self { size, chunk_size };
        (layout.chunk_count() == chunk_count).then_some(layout)
    }

    /// Bytes of the chunks `[start, end)`.
    pub fn bytes(&self, start: u64, end: u64) -> u64 {
        self.offset(end).min(self.size) - self.offset(start).min(self.size)
    }

    /// The length chunk `index` must have, or `None` when the index is out of range.
    pub fn chunk_len(&self, index: u64) -> Option<u32> {
        if index >= self.chunk_count() {
            return None;
        }
        let rest = self.size - self.offset(index);
        Some(rest.min(u64::from(self.chunk_size)) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_chunk_holds_the_remainder() {
        let layout = ChunkLayout::new(10, 4);
        assert_eq!(layout.chunk_count(), 3);
        assert_eq!(layout.chunk_len(0), Some(4));
        assert_eq!(layout.chunk_len(2), Some(2));
        assert_eq!(layout.chunk_len(3), None);
        assert_eq!(layout.offset(2), 8);
    }

    #[test]
    fn an_exact_multiple_has_no_short_chunk() {
        let layout = ChunkLayout::new(8, 4);
        assert_eq!(layout.chunk_count(), 2);
        assert_eq!(layout.chunk_len(1), Some(4));
    }

    #[test]
    fn an_announced_layout_is_taken_only_with_the_right_chunk_count() {
        assert_eq!(
            ChunkLayout::announced(10, 4, 3),
            Some(ChunkLayout::new(10, 4))
        );
        assert_eq!(ChunkLayout::announced(10, 4, 2), None);
        assert_eq!(ChunkLayout::announced(10, 0, 0), None);
        assert_eq!(
            ChunkLayout::announced(0, 0, 0),
            Some(ChunkLayout::new(0, 0))
        );
        let layout = ChunkLayout::new(10, 4);
        assert_eq!(layout.bytes(0, 3), 10);
        assert_eq!(layout.bytes(1, 2), 4);
        assert_eq!(layout.bytes(2, 3), 2);
    }

    #[test]
    fn an_empty_file_has_no_chunks() {
        assert_eq!(ChunkLayout::new(0, 4).chunk_count(), 0);
        assert_eq!(ChunkLayout::new(0, 4).chunk_len(0), None);
    }
}
