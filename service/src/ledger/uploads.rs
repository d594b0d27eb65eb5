//! Upload bookkeeping: open sessions, the chunks committed to them, their hash
//! checkpoints, and how each one ends.

use async_trait::async_trait;
use uuid::Uuid;

use super::{
    Blake3Digest, CommittedChunk, FileRecord, HashCheckpoint, Lease, LedgerError, Md5Digest,
    NewUpload, OpenedUpload,
};

/// The durable record of upload sessions.
///
/// Contract for every implementation (checked by the ledger conformance tests):
/// - Each method is atomic and durable once it returns `Ok`, except `open_upload`, whose
///   record becomes durable with the next durable write (see there).
/// - At most one file per (owner, MD5, size) is `Uploading` at any time, even when
///   several callers open the same upload at once. Single-pass uploads (no MD5 yet)
///   are each their own session.
/// - A complete file always has its MD5.
/// - Chunks are recorded only while their file is `Uploading`; recording an index twice
///   keeps the first record.
/// - The writes of an upload's session name the [`Lease`] it holds
///   ([`super::UploadLeases`]); under any other epoch they fail with
///   [`LedgerError::LeaseLost`] and change nothing. An upload nobody took a lease on has
///   epoch 0 ([`Lease::UNTAKEN`]).
#[async_trait]
pub trait UploadLedger: Send + Sync + 'static {
    /// Opens an upload session, or returns the open one for the same owner, MD5 and
    /// size. A single-pass upload (no MD5) always opens a new session.
    ///
    /// The only method that may return before its record is durable: a crash can lose
    /// a session no chunk was committed to (its client then finds it unknown and asks
    /// again), never one with committed chunks, since every later durable write makes
    /// it durable too. This keeps CheckUpload from waiting on the disk.
    async fn open_upload(&self, upload: &NewUpload) -> Result<OpenedUpload, LedgerError>;

    /// The open upload session of `owner` for this content, if any.
    async fn find_open_upload(
        &self,
        owner: &str,
        md5: &Md5Digest,
        size: u64,
    ) -> Result<Option<FileRecord>, LedgerError>;

    /// The committed chunks of an upload as ascending, non-overlapping, non-adjacent
    /// half-open ranges of indexes `[start, end)`.
    async fn committed_ranges(&self, id: Uuid) -> Result<Vec<(u64, u64)>, LedgerError>;

    /// Records chunks as committed, in one transaction. Returns the indexes that were
    /// newly recorded (an index recorded before keeps its first record, receipt
    /// included: a committed chunk's part is never written again). Fails with
    /// [`LedgerError::NotUploading`] when the upload is no longer open.
    async fn commit_chunks(
        &self,
        id: Uuid,
        lease: Lease,
        chunks: &[CommittedChunk],
    ) -> Result<Vec<u64>, LedgerError>;

    /// The latest hash checkpoint of an open upload, if one was saved.
    async fn hash_checkpoint(&self, id: Uuid) -> Result<Option<HashCheckpoint>, LedgerError>;

    /// Saves a hash checkpoint of an open upload, unless a later one (more chunks) is
    /// already saved. Fails with [`LedgerError::NotUploading`] when the upload is closed.
    async fn save_hash_checkpoint(
        &self,
        id: Uuid,
        lease: Lease,
        checkpoint: &HashCheckpoint,
    ) -> Result<(), LedgerError>;

    /// Marks an open upload complete with the digests the server computed (the MD5 of a
    /// single-pass upload is recorded only now) and records its content as stored at
    /// `locator`. Content recorded before keeps the locator it has (and loses any
    /// orphaned mark); `locator`, a second copy then, is queued as garbage in the same
    /// transaction.
    async fn complete_upload(
        &self,
        id: Uuid,
        lease: Lease,
        md5: &Md5Digest,
        blake3: &Blake3Digest,
        locator: &str,
    ) -> Result<FileRecord, LedgerError>;

    /// Keeps the blob store's handle of an open upload's staged bytes, unless one is kept
    /// already; returns the handle kept. Fails with [`LedgerError::NotUploading`] when
    /// the upload is closed.
    async fn keep_blob_upload(
        &self,
        id: Uuid,
        lease: Lease,
        handle: &str,
    ) -> Result<String, LedgerError>;

    /// The receipts recorded with an upload's committed chunks, by ascending index
    /// (chunks recorded without one are left out).
    async fn part_receipts(&self, id: Uuid) -> Result<Vec<(u64, String)>, LedgerError>;

    /// Marks an open upload failed, with the reason, and forgets its chunks.
    async fn fail_upload(&self, id: Uuid, lease: Lease, reason: &str) -> Result<(), LedgerError>;

    /// Marks an open upload aborted and forgets its chunks.
    async fn abort_upload(&self, id: Uuid) -> Result<(), LedgerError>;
}
