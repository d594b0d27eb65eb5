//! The file catalog: what files an owner has, and what they hold.

use async_trait::async_trait;
use uuid::Uuid;

use super::{FileListing, FileRecord, LedgerError, Md5Digest, OwnerUsage};

/// Files by id and by owner, in whatever state.
///
/// Contract for every implementation (checked by the ledger conformance tests):
/// - Answers reflect every write that returned before the question was asked.
/// - Deleting a file that was the last to refer to its content marks the content
///   orphaned, in the same transaction, even when several files of one content are
///   deleted at once (see [`super::ContentGarbage`]).
#[async_trait]
pub trait FileCatalog: Send + Sync + 'static {
    /// Up to `limit` of `owner`'s files that are uploading or complete with this size
    /// and head digest, newest first: what a single-pass probe matches.
    async fn files_with_head(
        &self,
        owner: &str,
        size: u64,
        head_md5: &Md5Digest,
        limit: usize,
    ) -> Result<Vec<FileRecord>, LedgerError>;

    /// A file by id, in whatever state.
    async fn get_file(&self, id: Uuid) -> Result<Option<FileRecord>, LedgerError>;

    /// How many files `owner` has, in any state (one lookup: the count is kept as files
    /// come and go).
    async fn owner_files(&self, owner: &str) -> Result<u64, LedgerError>;

    /// How many uploads `owner` has open and how many bytes its uploads and the files
    /// it sent hold.
    async fn owner_usage(&self, owner: &str) -> Result<OwnerUsage, LedgerError>;

    /// `owner`'s files that match `listing`, newest first (by creation time, then id),
    /// at most `listing.limit` of them.
    async fn list_files(
        &self,
        owner: &str,
        listing: &FileListing,
    ) -> Result<Vec<FileRecord>, LedgerError>;

    /// Forgets `owner`'s file `id` and its chunks, and returns it; `None` when the owner
    /// has no such file. Fails with [`LedgerError::StillUploading`] while its upload is
    /// open. Content the file referred to stays until the garbage collector finds that
    /// no file has referred to it for the grace period.
    async fn delete_file(&self, owner: &str, id: Uuid) -> Result<Option<FileRecord>, LedgerError>;
}
