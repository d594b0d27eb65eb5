//! The chunk ledger: the durable record of files, upload sessions, committed chunks and
//! stored content.
//!
//! The ledger only records; the protocol rules (which index is valid, when a session is
//! complete) live in [`crate::upload`]. An implementation must make every method atomic:
//! when it returns `Ok`, what it recorded survives a crash.

mod dump;
pub mod keys;
mod postgres;
mod sqlite;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use dump::{ChunkDump, ContentDump, CopyReport, FileDump, copy_keys, copy_ledger};
pub use keys::{ApiKeyRecord, KeyLedger, NewApiKey};
pub use postgres::PostgresLedger;
pub use sqlite::SqliteLedger;

/// Where the ledger lives, from a database URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerLocation {
    /// `postgres://…` or `postgresql://…`.
    Postgres(String),
    /// `sqlite://PATH` (relative or absolute path of the database file).
    Sqlite(PathBuf),
}

impl LedgerLocation {
    /// The ledger a URL names; without a URL, the embedded SQLite file in `data_dir`.
    pub fn from_url(url: Option<&str>, data_dir: &Path) -> Result<Self, String> {
        let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else {
            return Ok(LedgerLocation::Sqlite(data_dir.join("ledger.sqlite3")));
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(LedgerLocation::Postgres(url.to_owned()));
        }
        match url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            Some(path) if !path.is_empty() => Ok(LedgerLocation::Sqlite(PathBuf::from(path))),
            _ => Err(format!(
                "unsupported database URL {url:?}: use postgres://USER@HOST:PORT/DB or sqlite://PATH"
            )),
        }
    }

    /// Opens the ledger, applying pending migrations. On PostgreSQL, the connections that
    /// answer requests are driven on `requests_runtime` if one is given (see
    /// [`PostgresLedger::connect_serving_requests_on`]).
    pub async fn open(
        &self,
        pool_size: usize,
        requests_runtime: Option<tokio::runtime::Handle>,
    ) -> Result<Arc<dyn ChunkLedger>, LedgerError> {
        Ok(self.open_all(pool_size, requests_runtime).await?.chunks)
    }

    /// Like [`LedgerLocation::open`], with every record kind the ledger keeps.
    pub async fn open_all(
        &self,
        pool_size: usize,
        requests_runtime: Option<tokio::runtime::Handle>,
    ) -> Result<Ledgers, LedgerError> {
        Ok(match self {
            LedgerLocation::Postgres(url) => Ledgers::of(Arc::new(
                PostgresLedger::connect_serving_requests_on(url, pool_size, requests_runtime)
                    .await?,
            )),
            LedgerLocation::Sqlite(path) => {
                Ledgers::of(Arc::new(SqliteLedger::open(path, pool_size).await?))
            }
        })
    }
}

/// One ledger database, seen through the trait of each record kind it keeps.
#[derive(Clone)]
pub struct Ledgers {
    pub chunks: Arc<dyn ChunkLedger>,
    pub keys: Arc<dyn KeyLedger>,
}

impl Ledgers {
    pub fn of<L: ChunkLedger + KeyLedger>(ledger: Arc<L>) -> Self {
        Self {
            chunks: Arc::clone(&ledger) as Arc<dyn ChunkLedger>,
            keys: ledger,
        }
    }
}

impl fmt::Display for LedgerLocation {
    /// Shown in logs: the password of a PostgreSQL URL is left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerLocation::Postgres(url) => {
                let (base, query) = url.split_once('?').unwrap_or((url, ""));
                let mut shown = match (base.find("://"), base.rfind('@')) {
                    (Some(scheme), Some(at)) if at > scheme => {
                        let user = &base[scheme + 3..at];
                        let user = user.split(':').next().unwrap_or_default();
                        format!("{}{user}@{}", &base[..scheme + 3], &base[at + 1..])
                    }
                    _ => base.to_owned(),
                };
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| !pair.is_empty() && !pair.starts_with("password="))
                    .collect();
                if !kept.is_empty() {
                    shown = format!("{shown}?{}", kept.join("&"));
                }
                write!(f, "PostgreSQL {shown}")
            }
            LedgerLocation::Sqlite(path) => write!(f, "embedded SQLite {}", path.display()),
        }
    }
}

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
}

impl FileState {
    pub fn as_str(self) -> &'static str {
        match self {
            FileState::Uploading => "uploading",
            FileState::Complete => "complete",
            FileState::Aborted => "aborted",
            FileState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "uploading" => FileState::Uploading,
            "complete" => FileState::Complete,
            "aborted" => FileState::Aborted,
            "failed" => FileState::Failed,
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
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// What a new upload session records.
#[derive(Debug, Clone)]
pub struct NewUpload {
    pub owner: String,
    pub name: String,
    pub size: u64,
    /// `None` for a single-pass upload: such a session is never shared or returned by
    /// [`ChunkLedger::open_upload`] again.
    pub md5: Option<Md5Digest>,
    pub head_md5: Option<Md5Digest>,
    pub chunk_size: u32,
    pub chunk_count: u64,
}

/// One chunk whose bytes are durably stored, to be recorded as committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommittedChunk {
    pub index: u64,
    pub size: u32,
    pub crc32c: u32,
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
}

/// The answer of [`ChunkLedger::open_upload`].
#[derive(Debug, Clone)]
pub struct OpenedUpload {
    pub file: FileRecord,
    /// False when an open session for the same owner, MD5 and size already existed
    /// and was returned instead (never for a single-pass upload).
    pub created: bool,
}

/// What went wrong in the ledger, by what a caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("no file {0} in the ledger")]
    NotFound(Uuid),
    #[error("upload {id} is {state}, not open")]
    NotUploading { id: Uuid, state: FileState },
    /// The database could not be reached, or went away: try again later.
    #[error("the ledger database could not be reached: {0}")]
    Unavailable(String),
    /// The transaction lost to a concurrent one (a serialization failure, a deadlock, a
    /// busy database): try it again.
    #[error("the ledger's transaction lost to a concurrent one: {0}")]
    RetryableConflict(String),
    /// The schema refused the write (a unique, check, foreign-key or not-null
    /// constraint): a bug, not a moment's bad luck.
    #[error("the ledger refused a write its schema forbids: {0}")]
    Constraint(String),
    /// Any other failure of the database.
    #[error("the ledger database failed: {0}")]
    Database(String),
    #[error("the ledger holds a value it cannot read: {0}")]
    Corrupt(String),
    /// A record asked to be created exists already (an API key id, on import).
    #[error("the record exists already: {0}")]
    AlreadyExists(String),
}

/// Checks that `file` (the ledger's row for `id`) exists and is open for chunks.
fn require_open(id: Uuid, file: Option<&FileRecord>) -> Result<(), LedgerError> {
    match file {
        None => Err(LedgerError::NotFound(id)),
        Some(file) if file.state != FileState::Uploading => Err(LedgerError::NotUploading {
            id,
            state: file.state,
        }),
        Some(_) => Ok(()),
    }
}

/// A nullable BLAKE3 column's value.
fn blake3_from(bytes: Option<&[u8]>) -> Result<Option<Blake3Digest>, LedgerError> {
    bytes
        .map(|b| {
            Blake3Digest::try_from(b)
                .map_err(|_| LedgerError::Corrupt(format!("a BLAKE3 of {} bytes", b.len())))
        })
        .transpose()
}

/// A nullable MD5 column's value.
fn digest_from(bytes: Option<&[u8]>) -> Result<Option<Md5Digest>, LedgerError> {
    bytes
        .map(|b| {
            Md5Digest::try_from(b)
                .map_err(|_| LedgerError::Corrupt(format!("an MD5 of {} bytes", b.len())))
        })
        .transpose()
}

/// A size or index as the databases store it (signed 64-bit).
fn to_i64(value: u64) -> Result<i64, LedgerError> {
    i64::try_from(value)
        .map_err(|_| LedgerError::Database(format!("{value} is too large to record")))
}

/// A stored size or index back; negative means the ledger was tampered with.
fn to_u64(value: i64) -> Result<u64, LedgerError> {
    u64::try_from(value).map_err(|_| LedgerError::Corrupt(format!("negative value {value}")))
}

fn parse_state(s: &str) -> Result<FileState, LedgerError> {
    FileState::parse(s).ok_or_else(|| LedgerError::Corrupt(format!("unknown file state {s:?}")))
}

/// The durable record of uploads and content.
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
/// - Content is recorded once per BLAKE3 (and once per MD5 and size in the older index),
///   however many files refer to it; two contents with one MD5 are two contents.
/// - Instant upload answers from the owner's own files only: another owner's content is
///   never handed out by its digest.
#[async_trait]
pub trait ChunkLedger: Send + Sync + 'static {
    /// If `owner` has a complete file with this MD5 and size, records that it has the
    /// content also as a complete file named `name` with head digest `head_md5` (or
    /// returns the owner's complete file of that name and content, if there is one).
    /// `None` when the owner has no such file, whoever else stored the content.
    async fn add_file_for_owned_content(
        &self,
        owner: &str,
        name: &str,
        md5: &Md5Digest,
        size: u64,
        head_md5: Option<&Md5Digest>,
    ) -> Result<Option<FileRecord>, LedgerError>;

    /// Whether content with this BLAKE3, size and MD5 is stored (whoever stored it).
    async fn has_content(
        &self,
        blake3: &Blake3Digest,
        size: u64,
        md5: &Md5Digest,
    ) -> Result<bool, LedgerError>;

    /// Records that `owner` has the stored content with this BLAKE3, size and MD5 (its
    /// possession proven) as a complete file named `name`, or returns the owner's
    /// complete file of that name and content if it has one. `None` when no such
    /// content is stored.
    async fn add_file_for_content(
        &self,
        owner: &str,
        name: &str,
        blake3: &Blake3Digest,
        size: u64,
        md5: &Md5Digest,
        head_md5: Option<&Md5Digest>,
    ) -> Result<Option<FileRecord>, LedgerError>;

    /// Opens an upload session, or returns the open one for the same owner, MD5 and
    /// size. A single-pass upload (no MD5) always opens a new session.
    ///
    /// The only method that may return before its record is durable: a crash can lose
    /// a session no chunk was committed to (its client then finds it unknown and asks
    /// again), never one with committed chunks, since every later durable write makes
    /// it durable too. This keeps CheckUpload from waiting on the disk.
    async fn open_upload(&self, upload: &NewUpload) -> Result<OpenedUpload, LedgerError>;

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
    /// newly recorded (an index recorded before keeps its first record). Fails with
    /// [`LedgerError::NotUploading`] when the upload is no longer open.
    async fn commit_chunks(
        &self,
        id: Uuid,
        chunks: &[CommittedChunk],
    ) -> Result<Vec<u64>, LedgerError>;

    /// The latest hash checkpoint of an open upload, if one was saved.
    async fn hash_checkpoint(&self, id: Uuid) -> Result<Option<HashCheckpoint>, LedgerError>;

    /// Saves a hash checkpoint of an open upload, unless a later one (more chunks) is
    /// already saved. Fails with [`LedgerError::NotUploading`] when the upload is closed.
    async fn save_hash_checkpoint(
        &self,
        id: Uuid,
        checkpoint: &HashCheckpoint,
    ) -> Result<(), LedgerError>;

    /// Marks an open upload complete with the digests the server computed (the MD5 of a
    /// single-pass upload is recorded only now) and records its content as stored.
    async fn complete_upload(
        &self,
        id: Uuid,
        md5: &Md5Digest,
        blake3: &Blake3Digest,
    ) -> Result<FileRecord, LedgerError>;

    /// Marks an open upload failed, with the reason, and forgets its chunks.
    async fn fail_upload(&self, id: Uuid, reason: &str) -> Result<(), LedgerError>;

    /// Marks an open upload aborted and forgets its chunks.
    async fn abort_upload(&self, id: Uuid) -> Result<(), LedgerError>;

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

#[cfg(test)]
mod tests {
    use super::LedgerLocation;
    use std::path::{Path, PathBuf};

    #[test]
    fn no_url_means_the_embedded_ledger_in_the_data_directory() {
        assert_eq!(
            LedgerLocation::from_url(None, Path::new("/data")).unwrap(),
            LedgerLocation::Sqlite(PathBuf::from("/data/ledger.sqlite3"))
        );
    }

    #[test]
    fn the_url_scheme_picks_the_ledger() {
        let dir = Path::new("d");
        assert_eq!(
            LedgerLocation::from_url(Some("sqlite:///var/lib/t.db"), dir).unwrap(),
            LedgerLocation::Sqlite(PathBuf::from("/var/lib/t.db"))
        );
        assert_eq!(
            LedgerLocation::from_url(Some("sqlite://rel/t.db"), dir).unwrap(),
            LedgerLocation::Sqlite(PathBuf::from("rel/t.db"))
        );
        assert!(matches!(
            LedgerLocation::from_url(Some("postgresql://u@h/db"), dir).unwrap(),
            LedgerLocation::Postgres(_)
        ));
        assert!(LedgerLocation::from_url(Some("mysql://h/db"), dir).is_err());
        assert!(LedgerLocation::from_url(Some("sqlite://"), dir).is_err());
    }

    #[test]
    fn logs_never_show_a_database_password() {
        let location = LedgerLocation::Postgres("postgres://app:secret@db:5432/transfer".into());
        assert_eq!(
            location.to_string(),
            "PostgreSQL postgres://app@db:5432/transfer"
        );
        let in_query =
            LedgerLocation::Postgres("postgres://app@db/t?password=secret&sslmode=require".into());
        assert_eq!(
            in_query.to_string(),
            "PostgreSQL postgres://app@db/t?sslmode=require"
        );
    }
}
