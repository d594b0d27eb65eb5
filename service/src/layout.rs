//! How a file is cut into chunks, and the server's bounds on sizes and windows.

/// The server's configured bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest file accepted, in bytes.
    pub max_file_size: u64,
    /// Smallest chunk size a session may use, in bytes.
    pub min_chunk_size: u32,
    /// Largest chunk size a session may use, in bytes.
    pub max_chunk_size: u32,
    /// Chunk size used when the client states no preference.
    pub default_chunk_size: u32,
    /// Most unacknowledged chunks one stream may have in flight.
    pub max_window: u32,
    /// Most upload sessions one owner may have open at once.
    pub max_open_uploads_per_owner: u64,
    /// Most bytes one owner's open uploads and sent files may hold.
    pub owner_quota_bytes: u64,
    /// Most bytes of large messages being read plus committed chunks kept for the
    /// hasher, all streams together (past it parked chunks are read back from disk when
    /// needed, and messages wait).
    pub upload_memory_bytes: usize,
    /// Most bytes of large messages being read for one owner.
    pub owner_upload_memory_bytes: usize,
    /// How long an upload stream may take to send its first message.
    pub first_message_timeout: std::time::Duration,
    /// How long an upload stream may go without a chunk stored while the server waits
    /// for the client (an idle stream, a message sent too slowly, messages that store
    /// nothing), and how long the server waits for a client that reads no acks.
    pub stream_idle_timeout: std::time::Duration,
}

impl Limits {
    /// The chunk size for a new session: the client's preference (or the default when it
    /// has none) clamped to the configured bounds.
    pub fn choose_chunk_size(&self, preferred: u32) -> u32 {
        let wanted = if preferred == 0 {
            self.default_chunk_size
        } else {
            preferred
        };
        wanted.clamp(self.min_chunk_size, self.max_chunk_size)
    }
}

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
    fn an_empty_file_has_no_chunks() {
        assert_eq!(ChunkLayout::new(0, 4).chunk_count(), 0);
        assert_eq!(ChunkLayout::new(0, 4).chunk_len(0), None);
    }

    #[test]
    fn chunk_size_preference_is_clamped_to_bounds() {
        let limits = Limits {
            max_file_size: 1 << 40,
            min_chunk_size: 64,
            max_chunk_size: 1024,
            default_chunk_size: 256,
            max_window: 8,
            max_open_uploads_per_owner: 1,
            owner_quota_bytes: 1,
            upload_memory_bytes: 1,
            owner_upload_memory_bytes: 1,
            first_message_timeout: std::time::Duration::from_secs(1),
            stream_idle_timeout: std::time::Duration::from_secs(1),
        };
        assert_eq!(limits.choose_chunk_size(0), 256);
        assert_eq!(limits.choose_chunk_size(1), 64);
        assert_eq!(limits.choose_chunk_size(100_000), 1024);
        assert_eq!(limits.choose_chunk_size(512), 512);
    }
}
