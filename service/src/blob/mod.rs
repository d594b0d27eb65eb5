//! Blob storage: the bytes of uploads in progress and of complete content.
//!
//! Shaped like an object store's multipart upload: `begin` returns a handle, each
//! `put_parts` returns receipts, `complete` returns where the content now is. The caller
//! (the upload session) keeps all three in the ledger, so any process can go on with an
//! upload another began, and nobody derives a blob's name from a digest. A store only
//! stores: which parts are valid, duplicates and limits are the protocol's business
//! ([`crate::upload`]).

mod fs;
mod names;

use async_trait::async_trait;
use bytes::Bytes;
use uuid::Uuid;

pub use fs::FsBlobStore;
pub use names::{ContentKey, ContentLocator, PartReceipt, StagedUpload, UploadHandle};

/// One part of an upload: the chunk at `index`, placed at byte `offset` of the file.
#[derive(Debug, Clone)]
pub struct Part {
    pub index: u64,
    pub offset: u64,
    pub data: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("no staged upload {0}")]
    UploadNotFound(UploadHandle),
    #[error("no stored content at {0}")]
    ContentNotFound(ContentLocator),
    /// A handle or locator this store did not make (a ledger written by another store, or
    /// tampered with).
    #[error("{0:?} is not a name this blob store makes")]
    ForeignName(String),
    #[error("read of {len} bytes at offset {offset} goes past the end ({size} bytes)")]
    OutOfBounds { offset: u64, len: u64, size: u64 },
    #[error("storage I/O failed while {action}: {source}")]
    Io {
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Storage for uploads (staged, written part by part) and complete content (immutable,
/// found by the locator `complete` returned).
///
/// Contract for every implementation (checked by the blob store conformance tests):
/// - `begin` returns the handle every later call names the upload by; the caller keeps
///   it (a store may make a new upload each time `begin` is called).
/// - `put_parts` returns one receipt per part, in order; when it returns `Ok`, the parts
///   survive a crash. A part written again replaces the earlier one (the upload session
///   never rewrites a committed part, so the receipt the ledger kept stays the part's).
/// - `complete` is given the receipts that carry a tag, in index order (what the ledger
///   kept), and the address the server computed; it makes the parts the content,
///   durably, under a locator of the upload's own (never one another upload's content
///   has: which copy of a content stays is the ledger's decision), and returns it.
///   Completing again an upload that completed returns the same locator. Otherwise calls
///   on an upload that was never begun, or was aborted, fail with
///   [`BlobError::UploadNotFound`].
/// - Content is never changed once complete; `read` returns exactly the stored bytes.
/// - `abort` drops an upload's staged parts and succeeds when there are none.
/// - `delete` removes complete content for good and succeeds when there is none; reads
///   of it then fail with [`BlobError::ContentNotFound`].
/// - Only handles and locators the store made are accepted; no caller-supplied string
///   becomes a path or a key.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Prepares staging for upload `upload` of `size` bytes.
    async fn begin(&self, upload: Uuid, size: u64) -> Result<UploadHandle, BlobError>;

    /// Writes parts of an upload; durable when it returns `Ok`.
    async fn put_parts(
        &self,
        upload: &UploadHandle,
        parts: &[Part],
    ) -> Result<Vec<PartReceipt>, BlobError>;

    /// Reads back `len` staged bytes at `offset` of an upload.
    async fn read_staged(
        &self,
        upload: &UploadHandle,
        offset: u64,
        len: usize,
    ) -> Result<Bytes, BlobError>;

    /// Turns the staged upload into complete content; returns where it is stored.
    async fn complete(
        &self,
        upload: &UploadHandle,
        parts: &[PartReceipt],
        key: &ContentKey,
    ) -> Result<ContentLocator, BlobError>;

    /// Deletes complete content. Succeeds if there is none.
    async fn delete(&self, content: &ContentLocator) -> Result<(), BlobError>;

    /// Drops an upload's staging. Succeeds if there is none.
    async fn abort(&self, upload: &UploadHandle) -> Result<(), BlobError>;

    /// The uploads that have staging, in no particular order.
    async fn list_staged(&self) -> Result<Vec<StagedUpload>, BlobError>;

    /// Reads `len` bytes of the content at `content`, from `offset`.
    async fn read(
        &self,
        content: &ContentLocator,
        offset: u64,
        len: usize,
    ) -> Result<Bytes, BlobError>;
}
