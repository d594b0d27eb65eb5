//! The server's bounds on sizes and windows, and how a file is cut into chunks (the
//! arithmetic both sides share, [`ChunkLayout`]).

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
    /// Most files one owner may have, in any state.
    pub max_files_per_owner: u64,
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
    /// Bytes an upload hashes between the hash checkpoints it saves: at most this much is
    /// read back to rebuild the hash after a restart.
    pub hash_checkpoint_bytes: u64,
    /// How long an open upload lives after its last activity.
    pub upload_expiry: std::time::Duration,
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

    /// When an upload active now expires.
    pub fn expiry_from_now(&self) -> chrono::DateTime<chrono::Utc> {
        let expiry =
            chrono::Duration::from_std(self.upload_expiry).unwrap_or(chrono::Duration::MAX);
        chrono::Utc::now()
            .checked_add_signed(expiry)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
    }
}

pub use transfer_shared::layout::ChunkLayout;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_size_preference_is_clamped_to_bounds() {
        let limits = Limits {
            max_file_size: 1 << 40,
            min_chunk_size: 64,
            max_chunk_size: 1024,
            default_chunk_size: 256,
            max_window: 8,
            max_open_uploads_per_owner: 1,
            max_files_per_owner: 1,
            owner_quota_bytes: 1,
            upload_memory_bytes: 1,
            owner_upload_memory_bytes: 1,
            first_message_timeout: std::time::Duration::from_secs(1),
            stream_idle_timeout: std::time::Duration::from_secs(1),
            hash_checkpoint_bytes: 1 << 20,
            upload_expiry: std::time::Duration::from_secs(1),
        };
        assert_eq!(limits.choose_chunk_size(0), 256);
        assert_eq!(limits.choose_chunk_size(1), 64);
        assert_eq!(limits.choose_chunk_size(100_000), 1024);
        assert_eq!(limits.choose_chunk_size(512), 512);
    }
}
