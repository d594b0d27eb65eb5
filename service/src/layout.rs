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
    /// Most unacknowledged bytes of chunks one stream may have in flight (at least one
    /// chunk whatever its size).
    pub max_window_bytes: u64,
    /// Most unacknowledged chunks one stream may have in flight, beside the bytes.
    pub max_window_chunks: Option<u32>,
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
    /// The chunk size for a new session of a `size`-byte file: the client's preference
    /// (or the default when it has none) clamped to the configured bounds, and raised
    /// where the blob store needs larger parts (one chunk is one part: S3 takes parts of
    /// at least 5 MiB but the last, and at most 10,000 of them). `None` when the file
    /// needs more parts than the store takes even at the largest chunk size.
    pub fn choose_chunk_size(&self, preferred: u32, size: u64, rules: PartRules) -> Option<u32> {
        let wanted = if preferred == 0 {
            self.default_chunk_size
        } else {
            preferred
        };
        let wanted = wanted.clamp(self.min_chunk_size, self.max_chunk_size);
        if size <= u64::from(wanted) {
            // One chunk: the last part, of any size.
            return Some(wanted);
        }
        const MIB: u64 = 1 << 20;
        let for_count = size.div_ceil(rules.max_parts.max(1));
        let needed = rules.min_part_size.max(for_count);
        if needed <= u64::from(wanted) {
            return Some(wanted);
        }
        // Whole MiB where the bounds allow, so sizes stay readable.
        let rounded = needed.div_ceil(MIB) * MIB;
        let max = u64::from(self.max_chunk_size);
        let chosen = if rounded <= max { rounded } else { needed };
        u32::try_from(chosen).ok().filter(|_| chosen <= max)
    }

    /// The window of a session of `chunk_size`-byte chunks: the byte budget in whole
    /// chunks, at least one.
    pub fn window_for(&self, chunk_size: u32) -> Window {
        let chunk = u64::from(chunk_size.max(1));
        let by_bytes = u32::try_from(self.max_window_bytes / chunk).unwrap_or(u32::MAX);
        let chunks = by_bytes
            .min(self.max_window_chunks.unwrap_or(u32::MAX))
            .max(1);
        Window {
            chunks,
            bytes: u64::from(chunks) * chunk,
        }
    }

    /// The largest file the store takes at the largest chunk size.
    pub fn largest_file_for(&self, rules: PartRules) -> u64 {
        u64::from(self.max_chunk_size)
            .saturating_mul(rules.max_parts)
            .min(self.max_file_size)
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

/// What one upload stream may have sent and not had acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub chunks: u32,
    /// `chunks` full chunks' bytes.
    pub bytes: u64,
}

pub use transfer_shared::layout::ChunkLayout;

use crate::blob::PartRules;

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_file_size: 1 << 40,
            min_chunk_size: 64,
            max_chunk_size: 1024,
            default_chunk_size: 256,
            max_window_bytes: 8 * 256,
            max_window_chunks: None,
            max_open_uploads_per_owner: 1,
            max_files_per_owner: 1,
            owner_quota_bytes: 1,
            upload_memory_bytes: 1,
            owner_upload_memory_bytes: 1,
            first_message_timeout: std::time::Duration::from_secs(1),
            stream_idle_timeout: std::time::Duration::from_secs(1),
            hash_checkpoint_bytes: 1 << 20,
            upload_expiry: std::time::Duration::from_secs(1),
        }
    }

    #[test]
    fn the_window_is_the_byte_budget_in_whole_chunks_and_never_less_than_one() {
        let mut limits = limits();
        limits.max_window_bytes = 1000;
        let window = |chunk| limits.window_for(chunk);
        assert_eq!(
            window(100),
            Window {
                chunks: 10,
                bytes: 1000
            }
        );
        assert_eq!(
            window(300),
            Window {
                chunks: 3,
                bytes: 900
            }
        );
        assert_eq!(
            window(1000),
            Window {
                chunks: 1,
                bytes: 1000
            }
        );
        assert_eq!(
            window(4000),
            Window {
                chunks: 1,
                bytes: 4000
            }
        );
        limits.max_window_chunks = Some(4);
        assert_eq!(
            limits.window_for(100),
            Window {
                chunks: 4,
                bytes: 400
            }
        );
    }

    #[test]
    fn chunk_size_preference_is_clamped_to_bounds() {
        let limits = limits();
        let choose = |preferred| limits.choose_chunk_size(preferred, 1 << 20, PartRules::ANY);
        assert_eq!(choose(0), Some(256));
        assert_eq!(choose(1), Some(64));
        assert_eq!(choose(100_000), Some(1024));
        assert_eq!(choose(512), Some(512));
    }

    const MIB: u32 = 1 << 20;

    fn s3_limits() -> Limits {
        Limits {
            min_chunk_size: 64 << 10,
            default_chunk_size: 4 * MIB,
            max_chunk_size: 64 * MIB,
            ..limits()
        }
    }

    #[test]
    fn an_s3_store_gets_chunks_of_at_least_5_mib_but_a_file_of_one_chunk_keeps_its_size() {
        let limits = s3_limits();
        let choose = |preferred, size| limits.choose_chunk_size(preferred, size, PartRules::S3);
        assert_eq!(
            choose(0, 100 << 20),
            Some(5 * MIB),
            "4 MiB asked, 5 MiB needed"
        );
        assert_eq!(choose(8 * MIB, 100 << 20), Some(8 * MIB));
        assert_eq!(choose(0, 1 << 20), Some(4 * MIB), "one chunk: any size");
        assert_eq!(choose(1 << 20, 3 << 20), Some(5 * MIB));
    }

    #[test]
    fn a_file_of_more_than_10000_parts_gets_larger_chunks_up_to_the_largest_allowed() {
        let limits = s3_limits();
        let choose = |size| limits.choose_chunk_size(0, size, PartRules::S3);
        // 100 GiB in 10,000 parts: 10.24 MiB each, rounded up to 11 MiB.
        assert_eq!(choose(100 << 30), Some(11 * MIB));
        assert_eq!(
            choose(625 << 30),
            Some(64 * MIB),
            "10,000 parts of 64 MiB exactly"
        );
        assert_eq!(choose((625 << 30) + 1), None);
        assert_eq!(limits.largest_file_for(PartRules::S3), 625 << 30);
    }
}
