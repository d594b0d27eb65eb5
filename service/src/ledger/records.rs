//! The records the ledger keeps and returns: files, new uploads, committed chunks,
//! hash checkpoints, what an owner holds.

use std::fmt;

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A 16-byte MD5 digest.
pub type Md5Digest = [u8; 16];
/// A 32-byte BLAKE3 digest: what identifies content on the server.
pub type Blake3Digest = [u8; 32];

/// Where a file is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileState {
    /// An upload session is open; chunks may still be missing.
    Uploading,
    /// All bytes are stored and the whole-file MD5 verified.
    Complete,
    /// Cancelled by the owner; its chunks are gone.
    Aborted,
    /// The whole-file MD5 did not match the declared one; its chunks are gone.
    Failed,
    /// Nothing happened to the upload until its expiry; its chunks are gone.
    Expired,
}

impl FileState {
    pub fn as_str(self) -> &'static str {
        match self {
            FileState::Uploading => "uploading",
            FileState::Complete => "complete",
            FileState::Aborted => "aborted",
            FileState::Failed => "failed",
            FileState::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "uploading" => FileState::Uploading,
            "complete" => FileState::Complete,
            "aborted" => FileState::Aborted,
            "failed" => FileState::Failed,
            "expired" => FileState::Expired,
            _ => return None,
        })
    }
}

impl fmt::Display for FileState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A file an owner has. While `state` is [`FileState::Uploading`] its id is also the
/// id of its upload session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    pub id: Uuid,
    pub owner: String,
    pub name: String,
    pub size: u64,
    /// The declared MD5 while uploading (`None` for a single-pass upload, whose client
    /// declares it only at the end); once complete, the MD5 the server computed (which
    /// then equals the declared one). Always set on a complete file.
    pub md5: Option<Md5Digest>,
    /// MD5 of the first min(size, [`transfer_proto::HEAD_MD5_LEN`]) bytes, when the
    /// client told it: what a
    /// single-pass probe of the same owner matches.
    pub head_md5: Option<Md5Digest>,
    /// BLAKE3 of the content, as the server computed it: set on a complete file (but
    /// for files completed before content was identified by BLAKE3, found by MD5).
    pub content_blake3: Option<Blake3Digest>,
    /// Chunk size of the upload session; 0 for a file that was an instant upload.
    pub chunk_size: u32,
    pub chunk_count: u64,
    pub state: FileState,
    /// Why a `Failed` upload failed.
    pub failure: Option<String>,
    /// The blob store's handle of the upload's staged bytes, once it has begun (see
    /// [`crate::blob::BlobStore::begin`]).
    pub blob_upload: Option<String>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    /// While uploading: when the upload expires unless something happens to it.
    pub expires_at: Option<DateTime<Utc>>,
}

/// What a new upload session records.
#[derive(Debug, Clone)]
pub struct NewUpload {
    pub owner: String,
    pub name: String,
    pub size: u64,
    /// `None` for a single-pass upload: such a session is never shared or returned by
    /// [`super::UploadLedger::open_upload`] again.
    pub md5: Option<Md5Digest>,
    pub head_md5: Option<Md5Digest>,
    pub chunk_size: u32,
    pub chunk_count: u64,
    /// When the session expires unless something happens to it.
    pub expires_at: DateTime<Utc>,
}

/// One chunk whose bytes are durably stored, to be recorded as committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedChunk {
    pub index: u64,
    pub size: u32,
    pub crc32c: u32,
    /// What the blob store returned for the part (see
    /// [`crate::blob::BlobStore::put_parts`]); `None` when it needs nothing kept.
    pub receipt: Option<String>,
}

/// How far hashing of an open upload got: the MD5 state after its first `chunks` chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashCheckpoint {
    pub chunks: u64,
    pub state: Vec<u8>,
}

/// What an owner holds: the limits per owner are checked against it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwnerUsage {
    /// Upload sessions open now.
    pub open_uploads: u64,
    /// Bytes of the owner's open uploads (promised) and of the complete files it sent
    /// (instant copies of its own content cost no storage and are not counted).
    pub bytes: u64,
    /// Files the owner has, in any state.
    pub files: u64,
}

/// The answer of [`super::UploadLedger::open_upload`].
#[derive(Debug, Clone)]
pub struct OpenedUpload {
    pub file: FileRecord,
    /// False when an open session for the same owner, MD5 and size already existed
    /// and was returned instead (never for a single-pass upload).
    pub created: bool,
}

/// Which of an owner's files [`super::FileCatalog::list_files`] returns: newest first
/// (by creation time, then id), after `after` when it is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileListing {
    /// Only files in this state; all states when `None`.
    pub state: Option<FileState>,
    /// Only files whose name starts with this; all names when empty.
    pub name_prefix: String,
    /// Where the previous page ended: only files listed after this one.
    pub after: Option<ListPosition>,
    /// The most files to return.
    pub limit: usize,
}

/// A file's place in a listing: listings run newest first, by creation time and then id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListPosition {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl FileRecord {
    /// Where this file stands in a listing.
    pub fn list_position(&self) -> ListPosition {
        ListPosition {
            created_at: self.created_at,
            id: self.id,
        }
    }
}
