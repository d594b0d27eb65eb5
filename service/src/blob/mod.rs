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
    /// The store has no room (a full disk, a quota reached): try again once space is freed.
    /// (Where it is full is logged, not told: clients learn nothing of the server's
    /// disks.)
    #[error("{}", no_space_message(*needed, *available))]
    NoSpace {
        needed: Option<u64>,
        available: Option<u64>,
    },
    #[error("read of {len} bytes at offset {offset} goes past the end ({size} bytes)")]
    OutOfBounds { offset: u64, len: u64, size: u64 },
    #[error("storage I/O failed while {action}: {source}")]
    Io {
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// What a client is told of a full store: where, and by how much it falls short.
/// In whole MiB, rounded up: precise enough to act on, too coarse to watch other
/// owners' uploads come and go through the free space.
fn no_space_message(needed: Option<u64>, available: Option<u64>) -> String {
    let mib = |bytes: u64| bytes.div_ceil(1 << 20);
    let mut message = "the server's blob store is full".to_owned();
    match (needed, available) {
        (Some(needed), Some(available)) => message.push_str(&format!(
            ": {} MiB needed, about {} MiB short",
            mib(needed),
            mib(needed.saturating_sub(available))
        )),
        (Some(needed), None) => message.push_str(&format!(": {} MiB needed", mib(needed))),
        (None, _) => {}
    }
    message.push_str("; try again once space is freed");
    message
}

/// Storage for uploads (staged, written part by part) and complete content (immutable,
/// found by the locator `complete` returned).
///
/// Contract for every implementation (checked by the blob store conformance tests):
/// - `begin` returns the handle every later call names the upload by; the caller keeps
///   it (a store may make a new upload each time `begin` is called).
/// - A store out of room says so with [`BlobError::NoSpace`], never with a generic I/O
///   error, and keeps nothing it could not write.
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
    /// Bytes the store can still take, where it can tell (a filesystem's free space);
    /// `None` for a store with no limit it knows of.
    async fn free_space(&self) -> Result<Option<u64>, BlobError>;

    /// Prepares staging for upload `upload` of `size` bytes, reserving the space where
    /// the store can ([`BlobError::NoSpace`] when there is none).
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
