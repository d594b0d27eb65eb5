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
mod object;

use async_trait::async_trait;
use bytes::Bytes;
use uuid::Uuid;

pub use fs::FsBlobStore;
pub use names::{ContentLocator, PartReceipt, StagedUpload, UploadHandle};
pub use object::{
    MultipartObjectStore, ObjectBlobStore, S3ConfigError, S3Settings, open_s3, use_ring_for_tls,
};

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
    /// The object store failed or could not be reached (what it said is logged: it
    /// names endpoints and keys).
    #[error("the object store failed while {action}; try again")]
    ObjectStore { action: &'static str },
    /// `complete` was not given a receipt for every part from the first on.
    #[error(
        "no receipt for part {index}: the parts to complete must be 0, 1, 2, ... with none missing"
    )]
    PartMissing { index: u64 },
    /// Something this store cannot do (callers ask [`BlobStore::reads_staged`] first).
    #[error("this blob store cannot do that: {0}")]
    Unsupported(&'static str),
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

/// The part sizes a store's uploads may have (an S3 multipart upload: parts of at least
/// 5 MiB but the last, at most 10,000 of them). The server chooses chunk sizes by them:
/// one chunk is one part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartRules {
    /// Every part but the last has at least this many bytes.
    pub min_part_size: u64,
    /// An upload has at most this many parts.
    pub max_parts: u64,
}

impl PartRules {
    /// Parts of any size, any number of them (a filesystem).
    pub const ANY: PartRules = PartRules {
        min_part_size: 1,
        max_parts: u64::MAX,
    };

    /// Amazon S3's multipart limits, which S3-compatible servers share.
    pub const S3: PartRules = PartRules {
        min_part_size: 5 << 20,
        max_parts: 10_000,
    };
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
/// - Every part but the last follows [`BlobStore::part_rules`] (the caller chooses part
///   sizes so); a store may refuse, at `complete`, an upload that does not.
/// - `complete` is given the receipts that carry a tag, in index order (what the ledger
///   kept); it makes the parts the content,
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

    /// The sizes and number of parts an upload may have.
    fn part_rules(&self) -> PartRules {
        PartRules::ANY
    }

    /// Whether [`BlobStore::read_staged`] works: an object store cannot read an
    /// unfinished multipart upload, so what was not hashed as it arrived is hashed from
    /// the content once complete.
    fn reads_staged(&self) -> bool {
        true
    }

    /// How many bytes one [`BlobStore::read`] of complete content should cover where a
    /// reader may choose (a download): a filesystem reads a piece at a time, an object
    /// store's GET costs a request and a round trip, so it reads more at once.
    fn read_size(&self) -> usize {
        1 << 20
    }

    /// Prepares staging for upload `upload` of `size` bytes, reserving the space where
    /// the store can ([`BlobError::NoSpace`] when there is none).
    async fn begin(&self, upload: Uuid, size: u64) -> Result<UploadHandle, BlobError>;

    /// Writes parts of an upload; durable when it returns `Ok`.
    async fn put_parts(
        &self,
        upload: &UploadHandle,
        parts: &[Part],
    ) -> Result<Vec<PartReceipt>, BlobError>;

    /// Reads back `len` staged bytes at `offset` of an upload
    /// ([`BlobError::Unsupported`] where [`BlobStore::reads_staged`] is false).
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
    ) -> Result<ContentLocator, BlobError>;

    /// Deletes complete content. Succeeds if there is none.
    async fn delete(&self, content: &ContentLocator) -> Result<(), BlobError>;

    /// Drops an upload's staging, all of it (a store that may hold several for one
    /// upload drops them all): the upload is closed. Succeeds if there is none.
    async fn abort(&self, upload: &UploadHandle) -> Result<(), BlobError>;

    /// Drops the staging of this one handle only, leaving any other of the same upload:
    /// a handle begun but not the one the ledger kept (another replica's was). Succeeds
    /// if there is none.
    async fn discard(&self, upload: &UploadHandle) -> Result<(), BlobError> {
        self.abort(upload).await
    }

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
