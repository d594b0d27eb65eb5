//! The file catalog: what files an owner has, and what they hold.

use async_trait::async_trait;
use uuid::Uuid;

use super::{FileRecord, LedgerError, Md5Digest, OwnerUsage};

/// Files by id and by owner, in whatever state.
///
/// Contract for every implementation (checked by the ledger conformance tests): answers
/// reflect every write that returned before the question was asked.
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

    /// How many uploads `owner` has open and how many bytes its uploads and the files
    /// it sent hold.
    async fn owner_usage(&self, owner: &str) -> Result<OwnerUsage, LedgerError>;
}
