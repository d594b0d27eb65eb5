//! Export and import of a whole ledger, for copying it to another (`transferd
//! migrate-ledger`), for instance from the embedded SQLite file to PostgreSQL. Works
//! through [`LedgerExport`] and [`KeyLedger`], so any ledger can be copied to any other.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    CommittedChunk, FileRecord, HashCheckpoint, KeyLedger, LedgerError, Md5Digest, NewApiKey,
};

/// Every record of files, chunks, checkpoints and content, page by page, and back.
///
/// Contract for every implementation (checked by the ledger copy conformance tests): a
/// ledger restored from another's dump dumps the same records; restoring records that
/// are present already keeps them as they are.
#[async_trait]
pub trait LedgerExport: Send + Sync + 'static {
    /// Up to `limit` files with ids above `after`, in id order, with all their records.
    async fn dump_files(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<FileDump>, LedgerError>;

    /// Up to `limit` content records after `after` (MD5, size), in that order.
    async fn dump_contents(
        &self,
        after: Option<(Md5Digest, u64)>,
        limit: usize,
    ) -> Result<Vec<ContentDump>, LedgerError>;

    /// Writes dumped records as they are, in one transaction; records already present
    /// are kept.
    async fn restore(
        &self,
        files: &[FileDump],
        contents: &[ContentDump],
    ) -> Result<(), LedgerError>;
}

/// All a ledger holds about one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDump {
    pub file: FileRecord,
    /// Where a complete file's content is stored (found by its BLAKE3).
    pub content_locator: Option<String>,
    pub updated_at: DateTime<Utc>,
    pub chunks: Vec<ChunkDump>,
    pub checkpoint: Option<HashCheckpoint>,
}

/// One committed chunk and when it was committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkDump {
    pub chunk: CommittedChunk,
    pub committed_at: DateTime<Utc>,
}

/// One content of the MD5 index (content stored before content was identified by
/// BLAKE3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentDump {
    pub md5: Md5Digest,
    pub size: u64,
    pub created_at: DateTime<Utc>,
    /// Where it is stored (`None` for an index entry made since; such content is found
    /// by its BLAKE3).
    pub locator: Option<String>,
}

/// What a copy moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyReport {
    pub files: u64,
    pub chunks: u64,
    pub contents: u64,
}

/// Copies every API key of `from` into `to`, revoked ones revoked; a key `to` already
/// has is kept as it is (then revoked too, if it is revoked in `from`). A copied key's
/// creation time is the time of the copy. Returns how many keys `from` has.
pub async fn copy_keys(from: &dyn KeyLedger, to: &dyn KeyLedger) -> Result<u64, LedgerError> {
    let keys = from.list_keys().await?;
    for key in &keys {
        let copy = NewApiKey {
            id: key.id.clone(),
            secret_sha256: key.secret_sha256,
            owner: key.owner.clone(),
            act_for_prefix: key.act_for_prefix.clone(),
            expires_at: key.expires_at,
        };
        match to.create_key(&copy).await {
            Ok(_) | Err(LedgerError::AlreadyExists(_)) => {}
            Err(error) => return Err(error),
        }
        if key.revoked_at.is_some() {
            to.revoke_key(&key.id).await?;
        }
    }
    Ok(keys.len() as u64)
}

/// Records per page while copying.
const PAGE: usize = 500;

/// Copies every file, chunk, hash checkpoint and content record of `from` into `to`.
/// Records `to` already has are kept as they are, so running it again is harmless.
pub async fn copy_ledger(
    from: &dyn LedgerExport,
    to: &dyn LedgerExport,
) -> Result<CopyReport, LedgerError> {
    let mut report = CopyReport::default();
    let mut after: Option<(Md5Digest, u64)> = None;
    loop {
        let contents = from.dump_contents(after, PAGE).await?;
        let Some(last) = contents.last() else { break };
        after = Some((last.md5, last.size));
        to.restore(&[], &contents).await?;
        report.contents += contents.len() as u64;
    }
    let mut after: Option<Uuid> = None;
    loop {
        let files = from.dump_files(after, PAGE).await?;
        let Some(last) = files.last() else { break };
        after = Some(last.file.id);
        to.restore(&files, &[]).await?;
        report.files += files.len() as u64;
        report.chunks += files.iter().map(|f| f.chunks.len() as u64).sum::<u64>();
    }
    Ok(report)
}
