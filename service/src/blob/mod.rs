//! Blob storage: the bytes of uploads in progress and of complete content.
//!
//! Shaped like a multipart upload (begin, put parts, complete, abort) so a filesystem
//! store and an object store behave alike. A store only stores: which parts are valid,
//! duplicates and limits are the protocol's business ([`crate::upload`]).

mod fs;

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use uuid::Uuid;

pub use fs::FsBlobStore;

use crate::ledger::{Blake3Digest, Md5Digest};

/// The address of complete content, as the server computed it over the stored bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentKey {
    /// BLAKE3 and size: how content is addressed, since nobody can make two contents
    /// with the same BLAKE3.
    Blake3 { digest: Blake3Digest, size: u64 },
    /// MD5 and size: content stored before the server addressed it by BLAKE3; read only.
    Md5 { md5: Md5Digest, size: u64 },
}

impl ContentKey {
    /// The content's length in bytes.
    pub fn size(&self) -> u64 {
        match self {
            ContentKey::Blake3 { size, .. } | ContentKey::Md5 { size, .. } => *size,
        }
    }

    /// The first byte of the digest, which spreads content over directories.
    pub fn fan_out(&self) -> u8 {
        match self {
            ContentKey::Blake3 { digest, .. } => digest[0],
            ContentKey::Md5 { md5, .. } => md5[0],
        }
    }
}

impl fmt::Display for ContentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContentKey::Blake3 { digest, size } => write!(f, "b3-{}-{size}", hex::encode(digest)),
            ContentKey::Md5 { md5, size } => write!(f, "{}-{size}", hex::encode(md5)),
        }
    }
}

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
    UploadNotFound(Uuid),
    #[error("no stored content {0}")]
    ContentNotFound(ContentKey),
    #[error("read of {len} bytes at offset {offset} goes past the end ({size} bytes)")]
    OutOfBounds { offset: u64, len: u64, size: u64 },
    #[error("storage I/O failed while {action}: {source}")]
    Io {
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Storage for uploads (staged, written part by part) and complete content (addressed by
/// [`ContentKey`], immutable).
///
/// Contract for every implementation (checked by the blob store conformance tests):
/// - `begin` is idempotent; `put_parts` and `read_staged` on an upload that was never
///   begun, or was aborted or completed, fail with [`BlobError::UploadNotFound`].
/// - When `put_parts` returns `Ok`, its bytes survive a crash.
/// - `complete` makes the staged bytes the content for the key, durably, and removes the
///   staging; if that content already exists it is kept and the staging dropped.
/// - Content is never changed once complete; `read` returns exactly the stored bytes.
/// - Ids and keys are the only names used: no caller-supplied string becomes a path.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Prepares staging for an upload of `size` bytes.
    async fn begin(&self, upload: Uuid, size: u64) -> Result<(), BlobError>;

    /// Writes parts of an upload at their offsets; durable when it returns `Ok`.
    async fn put_parts(&self, upload: Uuid, parts: &[Part]) -> Result<(), BlobError>;

    /// Reads back `len` staged bytes at `offset` of an upload.
    async fn read_staged(&self, upload: Uuid, offset: u64, len: usize) -> Result<Bytes, BlobError>;

    /// Turns the staged upload into the content `key`.
    async fn complete(&self, upload: Uuid, key: &ContentKey) -> Result<(), BlobError>;

    /// Drops an upload's staging. Succeeds if there is none.
    async fn abort(&self, upload: Uuid) -> Result<(), BlobError>;

    /// The uploads that have staging, in no particular order.
    async fn list_staged(&self) -> Result<Vec<Uuid>, BlobError>;

    /// Whether content `key` is stored.
    async fn content_exists(&self, key: &ContentKey) -> Result<bool, BlobError>;

    /// Reads `len` bytes of content `key` at `offset`.
    async fn read(&self, key: &ContentKey, offset: u64, len: usize) -> Result<Bytes, BlobError>;
}
