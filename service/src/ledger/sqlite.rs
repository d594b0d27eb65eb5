//! [`ChunkLedger`] on an embedded SQLite file: the zero set-up default.
//!
//! rusqlite (with SQLite bundled, so nothing needs installing). Reads run on a deadpool
//! pool on Tokio's blocking pool; writes go to one writer thread that commits them in
//! groups (see [`writer`]). The file is in WAL mode with `synchronous = FULL`, so a
//! committed transaction survives a crash (all but the opening of a session, see
//! [`ChunkLedger::open_upload`]).
//! The schema comes from the migrations in `migrations/sqlite`.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_sqlite::{Config, Hook, HookError, Pool, Runtime};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};
use uuid::Uuid;

use super::{
    Blake3Digest, ChunkDump, ChunkLedger, CommittedChunk, ContentDump, FileDump, FileRecord,
    FileState, HashCheckpoint, LedgerError, Md5Digest, NewUpload, OpenedUpload, OwnerUsage,
    blake3_from, digest_from, parse_state, require_open, to_i64, to_u64,
};

mod keys;
mod writer;
use writer::Writer;

mod embedded {
    refinery::embed_migrations!("../migrations/sqlite");
}

/// The columns every query that returns a file selects, in the order [`file_from_row`] reads.
const FILE_COLUMNS: &str = "id, owner, name, size, md5, chunk_size, chunk_count, state, failure, \
     created_at, completed_at, head_md5, content_blake3";

/// An owner's open uploads, and the bytes of those and of the files it sent (a file of
/// an instant upload has chunk size 0).
const OWNER_USAGE: &str = "SELECT count(*) FILTER (WHERE state = 'uploading'), \
            coalesce(sum(size), 0) FROM files \
     WHERE owner = ?1 AND (state = 'uploading' OR (state = 'complete' AND chunk_size > 0))";

/// How long a writer waits for another to finish before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct SqliteLedger {
    /// Connections for reads (WAL lets them run while a write commits).
    pool: Pool,
    /// The one connection that writes.
    writer: Writer,
}

/// Settings every connection needs (they are per connection in SQLite).
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(())
}

impl SqliteLedger {
    /// Opens (creating if needed) the ledger file at `path` and applies pending migrations.
    pub async fn open(path: &Path, pool_size: usize) -> Result<Self, LedgerError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                LedgerError::Unavailable(format!("creating {}: {e}", dir.display()))
            })?;
        }
        let pool = Config::new(path)
            .builder(Runtime::Tokio1)
            .map_err(|e| LedgerError::Unavailable(e.to_string()))?
            .max_size(pool_size.max(1))
            .post_create(Hook::sync_fn(|conn, _| {
                let conn = conn
                    .lock()
                    .map_err(|_| HookError::message("a poisoned SQLite connection"))?;
                configure(&conn).map_err(HookError::Backend)
            }))
            .build()
            .map_err(|e| LedgerError::Unavailable(e.to_string()))?;
        let path = path.to_owned();
        let writer = tokio::task::spawn_blocking(move || {
            let mut conn = Connection::open(&path).map_err(|e| {
                LedgerError::Unavailable(format!("opening {}: {e}", path.display()))
            })?;
            configure(&conn).map_err(db_error)?;
            migrate(&mut conn)?;
            Writer::start(conn)
        })
        .await
        .map_err(|e| LedgerError::Unavailable(format!("opening the ledger: {e}")))??;
        Ok(Self { pool, writer })
    }

    /// Runs `work` on a pooled connection, on the blocking pool.
    async fn with<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let conn = self
            .pool
            .get()
            .await
            .map_err(|e| LedgerError::Unavailable(e.to_string()))?;
        conn.interact(work)
            .await
            .map_err(|e| LedgerError::Unavailable(format!("the ledger connection failed: {e}")))?
    }

    /// Runs `work` in a write transaction, committed (and synced to disk) when it
    /// returns `Ok`.
    async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Transaction<'_>) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        self.writer.write(true, work).await
    }

    /// Like [`SqliteLedger::write`], but the commit does not wait for the disk: only for
    /// records a crash may lose (see [`ChunkLedger::open_upload`]). The WAL is appended
    /// in order, so the next synced commit makes this one durable too.
    async fn write_unsynced<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Transaction<'_>) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        self.writer.write(false, work).await
    }
}

/// Puts the file in WAL mode and applies pending migrations.
fn migrate(conn: &mut Connection) -> Result<(), LedgerError> {
    // WAL lets readers work while a writer commits; it is a property of the file.
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(db_error)?;
    // Foreign keys off while migrating: a migration that rebuilds a table (SQLite's way
    // to change a column) must not cascade its DROP TABLE.
    conn.pragma_update(None, "foreign_keys", false)
        .map_err(db_error)?;
    let migrated = embedded::migrations::runner()
        .run(conn)
        .map_err(|e| LedgerError::Database(format!("migrating the ledger failed: {e}")));
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(db_error)?;
    migrated?;
    let broken: i64 = conn
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |row| {
            row.get(0)
        })
        .map_err(db_error)?;
    if broken > 0 {
        return Err(LedgerError::Corrupt(format!(
            "{broken} rows break a foreign key after migrating"
        )));
    }
    Ok(())
}

fn db_error(e: rusqlite::Error) -> LedgerError {
    use rusqlite::ErrorCode;
    let message = e.to_string();
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            LedgerError::RetryableConflict(message)
        }
        Some(ErrorCode::ConstraintViolation) => LedgerError::Constraint(message),
        _ => LedgerError::Database(message),
    }
}

fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

fn time(micros: i64) -> Result<DateTime<Utc>, LedgerError> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| LedgerError::Corrupt(format!("a time of {micros} µs")))
}

/// A `files` row as SQLite returns it, before checking its values.
struct RawFile {
    id: String,
    owner: String,
    name: String,
    size: i64,
    md5: Option<Vec<u8>>,
    head_md5: Option<Vec<u8>>,
    chunk_size: i64,
    chunk_count: i64,
    state: String,
    failure: Option<String>,
    created_at: i64,
    completed_at: Option<i64>,
    content_blake3: Option<Vec<u8>>,
}

fn raw_file(row: &Row<'_>) -> rusqlite::Result<RawFile> {
    Ok(RawFile {
        id: row.get(0)?,
        owner: row.get(1)?,
        name: row.get(2)?,
        size: row.get(3)?,
        md5: row.get(4)?,
        chunk_size: row.get(5)?,
        chunk_count: row.get(6)?,
        state: row.get(7)?,
        failure: row.get(8)?,
        created_at: row.get(9)?,
        completed_at: row.get(10)?,
        head_md5: row.get(11)?,
        content_blake3: row.get(12)?,
    })
}

impl TryFrom<RawFile> for FileRecord {
    type Error = LedgerError;

    fn try_from(raw: RawFile) -> Result<Self, LedgerError> {
        Ok(FileRecord {
            id: Uuid::parse_str(&raw.id)
                .map_err(|_| LedgerError::Corrupt(format!("file id {:?}", raw.id)))?,
            owner: raw.owner,
            name: raw.name,
            size: to_u64(raw.size)?,
            md5: digest(raw.md5)?,
            head_md5: digest(raw.head_md5)?,
            content_blake3: blake3_from(raw.content_blake3.as_deref())?,
            chunk_size: u32::try_from(raw.chunk_size)
                .map_err(|_| LedgerError::Corrupt(format!("chunk size {}", raw.chunk_size)))?,
            chunk_count: to_u64(raw.chunk_count)?,
            state: parse_state(&raw.state)?,
            failure: raw.failure,
            created_at: time(raw.created_at)?,
            completed_at: raw.completed_at.map(time).transpose()?,
        })
    }
}

/// A nullable MD5 column.
fn digest(bytes: Option<Vec<u8>>) -> Result<Option<Md5Digest>, LedgerError> {
    digest_from(bytes.as_deref())
}

/// The file `id`, if any.
fn select_file(conn: &Connection, id: Uuid) -> Result<Option<FileRecord>, LedgerError> {
    conn.prepare_cached(&format!("SELECT {FILE_COLUMNS} FROM files WHERE id = ?1"))
        .and_then(|mut s| s.query_row([id.to_string()], raw_file).optional())
        .map_err(db_error)?
        .map(FileRecord::try_from)
        .transpose()
}

/// The open upload of `owner` for this content, if any.
fn select_open_upload(
    conn: &Connection,
    owner: &str,
    md5: &Md5Digest,
    size: i64,
) -> Result<Option<FileRecord>, LedgerError> {
    conn.prepare_cached(&format!(
        "SELECT {FILE_COLUMNS} FROM files \
         WHERE owner = ?1 AND md5 = ?2 AND size = ?3 AND state = 'uploading'"
    ))
    .and_then(|mut s| s.query_row(params![owner, md5, size], raw_file).optional())
    .map_err(db_error)?
    .map(FileRecord::try_from)
    .transpose()
}

/// The error for a state change of `id` that found no open upload.
fn not_open(conn: &Connection, id: Uuid) -> Result<LedgerError, LedgerError> {
    Ok(match select_file(conn, id)? {
        None => LedgerError::NotFound(id),
        Some(file) => LedgerError::NotUploading {
            id,
            state: file.state,
        },
    })
}

/// Moves an open upload to `aborted` or `failed` and deletes its chunk rows.
fn close_upload(
    tx: &Transaction<'_>,
    id: Uuid,
    state: FileState,
    reason: Option<&str>,
) -> Result<(), LedgerError> {
    let updated = tx
        .execute(
            "UPDATE files SET state = ?2, failure = ?3, updated_at = ?4 \
             WHERE id = ?1 AND state = 'uploading'",
            params![id.to_string(), state.as_str(), reason, now_micros()],
        )
        .map_err(db_error)?;
    if updated == 0 {
        return Err(not_open(tx, id)?);
    }
    tx.execute("DELETE FROM chunks WHERE file_id = ?1", [id.to_string()])
        .map_err(db_error)?;
    Ok(())
}

#[async_trait]
impl ChunkLedger for SqliteLedger {
    async fn add_file_for_owned_content(
        &self,
        owner: &str,
        name: &str,
        md5: &Md5Digest,
        size: u64,
        head_md5: Option<&Md5Digest>,
    ) -> Result<Option<FileRecord>, LedgerError> {
        let (owner, name, md5, size) = (owner.to_owned(), name.to_owned(), *md5, to_i64(size)?);
        let head_md5 = head_md5.copied();
        self.write(move |tx| {
            let existing = tx
                .prepare_cached(&format!(
                    "SELECT {FILE_COLUMNS} FROM files \
                     WHERE owner = ?1 AND name = ?2 AND md5 = ?3 AND size = ?4 AND state = 'complete' \
                     ORDER BY created_at LIMIT 1"
                ))
                .and_then(|mut s| s.query_row(params![owner, name, md5, size], raw_file).optional())
                .map_err(db_error)?;
            if let Some(file) = existing {
                return FileRecord::try_from(file).map(Some);
            }
            // The owner's content with this MD5: the BLAKE3 of its oldest such file.
            let owned: Option<Option<Vec<u8>>> = tx
                .prepare_cached(
                    "SELECT content_blake3 FROM files \
                     WHERE owner = ?1 AND md5 = ?2 AND size = ?3 AND state = 'complete' \
                     ORDER BY created_at LIMIT 1",
                )
                .and_then(|mut s| s.query_row(params![owner, md5, size], |r| r.get(0)).optional())
                .map_err(db_error)?;
            let Some(content_blake3) = owned else {
                return Ok(None);
            };
            let now = now_micros();
            let file = tx
                .prepare_cached(&format!(
                    "INSERT INTO files (id, owner, name, size, md5, chunk_size, chunk_count, state, \
                                        created_at, updated_at, completed_at, head_md5, content_blake3) \
                     VALUES (?1, ?2, ?3, ?4, ?5, 0, 0, 'complete', ?6, ?6, ?6, ?7, ?8) \
                     RETURNING {FILE_COLUMNS}"
                ))
                .and_then(|mut s| {
                    s.query_row(
                        params![
                            Uuid::new_v4().to_string(),
                            owner,
                            name,
                            size,
                            md5,
                            now,
                            head_md5,
                            content_blake3
                        ],
                        raw_file,
                    )
                })
                .map_err(db_error)?;
            FileRecord::try_from(file).map(Some)
        })
        .await
    }

    async fn open_upload(&self, upload: &NewUpload) -> Result<OpenedUpload, LedgerError> {
        let upload = upload.clone();
        let size = to_i64(upload.size)?;
        let chunk_count = to_i64(upload.chunk_count)?;
        self.write_unsynced(move |tx| {
            // A single-pass upload (no MD5 yet) always gets a session of its own.
            if let Some(md5) = &upload.md5
                && let Some(file) = select_open_upload(tx, &upload.owner, md5, size)?
            {
                return Ok(OpenedUpload {
                    file,
                    created: false,
                });
            }
            let now = now_micros();
            let file = tx
                .prepare_cached(&format!(
                    "INSERT INTO files (id, owner, name, size, md5, chunk_size, chunk_count, state, \
                                        created_at, updated_at, head_md5) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'uploading', ?8, ?8, ?9) \
                     RETURNING {FILE_COLUMNS}"
                ))
                .and_then(|mut s| {
                    s.query_row(
                        params![
                            Uuid::new_v4().to_string(),
                            upload.owner,
                            upload.name,
                            size,
                            upload.md5,
                            upload.chunk_size,
                            chunk_count,
                            now,
                            upload.head_md5
                        ],
                        raw_file,
                    )
                })
                .map_err(db_error)?;
            Ok(OpenedUpload {
                file: FileRecord::try_from(file)?,
                created: true,
            })
        })
        .await
    }

    async fn files_with_head(
        &self,
        owner: &str,
        size: u64,
        head_md5: &Md5Digest,
        limit: usize,
    ) -> Result<Vec<FileRecord>, LedgerError> {
        let (owner, size, head_md5) = (owner.to_owned(), to_i64(size)?, *head_md5);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(move |conn| {
            let mut statement = conn
                .prepare_cached(&format!(
                    "SELECT {FILE_COLUMNS} FROM files \
                     WHERE owner = ?1 AND size = ?2 AND head_md5 = ?3 \
                       AND head_md5 IS NOT NULL AND state IN ('uploading', 'complete') \
                     ORDER BY created_at DESC LIMIT ?4"
                ))
                .map_err(db_error)?;
            let rows = statement
                .query_map(params![owner, size, head_md5, limit], raw_file)
                .map_err(db_error)?;
            rows.map(|row| FileRecord::try_from(row.map_err(db_error)?))
                .collect()
        })
        .await
    }

    async fn get_file(&self, id: Uuid) -> Result<Option<FileRecord>, LedgerError> {
        self.with(move |conn| select_file(conn, id)).await
    }

    async fn has_content(
        &self,
        blake3: &Blake3Digest,
        size: u64,
        md5: &Md5Digest,
    ) -> Result<bool, LedgerError> {
        let (blake3, size, md5) = (*blake3, to_i64(size)?, *md5);
        self.with(move |conn| {
            conn.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM content_blobs WHERE blake3 = ?1 AND size = ?2 AND md5 = ?3)",
            )
            .and_then(|mut s| s.query_row(params![blake3, size, md5], |r| r.get(0)))
            .map_err(db_error)
        })
        .await
    }

    async fn add_file_for_content(
        &self,
        owner: &str,
        name: &str,
        blake3: &Blake3Digest,
        size: u64,
        md5: &Md5Digest,
        head_md5: Option<&Md5Digest>,
    ) -> Result<Option<FileRecord>, LedgerError> {
        let (owner, name) = (owner.to_owned(), name.to_owned());
        let (blake3, size, md5, head_md5) = (*blake3, to_i64(size)?, *md5, head_md5.copied());
        self.write(move |tx| {
            let existing = tx
                .prepare_cached(&format!(
                    "SELECT {FILE_COLUMNS} FROM files \
                     WHERE owner = ?1 AND name = ?2 AND content_blake3 = ?3 AND size = ?4 AND state = 'complete' \
                     ORDER BY created_at LIMIT 1"
                ))
                .and_then(|mut s| s.query_row(params![owner, name, blake3, size], raw_file).optional())
                .map_err(db_error)?;
            if let Some(file) = existing {
                return FileRecord::try_from(file).map(Some);
            }
            let now = now_micros();
            let inserted = tx
                .prepare_cached(&format!(
                    "INSERT INTO files (id, owner, name, size, md5, chunk_size, chunk_count, state, \
                                        created_at, updated_at, completed_at, head_md5, content_blake3) \
                     SELECT ?1, ?2, ?3, size, md5, 0, 0, 'complete', ?4, ?4, ?4, ?5, blake3 \
                     FROM content_blobs WHERE blake3 = ?6 AND size = ?7 AND md5 = ?8 \
                     RETURNING {FILE_COLUMNS}"
                ))
                .and_then(|mut s| {
                    s.query_row(
                        params![Uuid::new_v4().to_string(), owner, name, now, head_md5, blake3, size, md5],
                        raw_file,
                    )
                    .optional()
                })
                .map_err(db_error)?;
            inserted.map(FileRecord::try_from).transpose()
        })
        .await
    }

    async fn owner_usage(&self, owner: &str) -> Result<OwnerUsage, LedgerError> {
        let owner = owner.to_owned();
        self.with(move |conn| {
            let (open, bytes): (i64, i64) = conn
                .prepare_cached(OWNER_USAGE)
                .and_then(|mut s| s.query_row([owner], |r| Ok((r.get(0)?, r.get(1)?))))
                .map_err(db_error)?;
            Ok(OwnerUsage {
                open_uploads: to_u64(open)?,
                bytes: to_u64(bytes)?,
            })
        })
        .await
    }

    async fn find_open_upload(
        &self,
        owner: &str,
        md5: &Md5Digest,
        size: u64,
    ) -> Result<Option<FileRecord>, LedgerError> {
        let (owner, md5, size) = (owner.to_owned(), *md5, to_i64(size)?);
        self.with(move |conn| select_open_upload(conn, &owner, &md5, size))
            .await
    }

    async fn committed_ranges(&self, id: Uuid) -> Result<Vec<(u64, u64)>, LedgerError> {
        self.with(move |conn| {
            // Runs of consecutive indexes, computed in the database: a few ranges rather
            // than millions of rows for a large session.
            let mut statement = conn
                .prepare_cached(
                    "SELECT min(idx), max(idx) + 1 FROM ( \
                         SELECT idx, idx - row_number() OVER (ORDER BY idx) AS run \
                         FROM chunks WHERE file_id = ?1 \
                     ) GROUP BY run ORDER BY 1",
                )
                .map_err(db_error)?;
            let ranges = statement
                .query_map([id.to_string()], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
                })
                .map_err(db_error)?;
            ranges
                .map(|range| {
                    let (start, end) = range.map_err(db_error)?;
                    Ok((to_u64(start)?, to_u64(end)?))
                })
                .collect()
        })
        .await
    }

    async fn commit_chunks(
        &self,
        id: Uuid,
        chunks: &[CommittedChunk],
    ) -> Result<Vec<u64>, LedgerError> {
        let chunks = chunks.to_vec();
        self.write(move |tx| {
            let state: Option<String> = tx
                .prepare_cached("SELECT state FROM files WHERE id = ?1")
                .and_then(|mut s| s.query_row([id.to_string()], |row| row.get(0)).optional())
                .map_err(db_error)?;
            let state = parse_state(&state.ok_or(LedgerError::NotFound(id))?)?;
            if state != FileState::Uploading {
                return Err(LedgerError::NotUploading { id, state });
            }
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO chunks (file_id, idx, size, crc32c, committed_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(db_error)?;
            let now = now_micros();
            let id = id.to_string();
            let mut newly = Vec::with_capacity(chunks.len());
            for chunk in &chunks {
                let inserted = insert
                    .execute(params![
                        id,
                        to_i64(chunk.index)?,
                        chunk.size,
                        chunk.crc32c,
                        now
                    ])
                    .map_err(db_error)?;
                if inserted == 1 {
                    newly.push(chunk.index);
                }
            }
            newly.sort_unstable();
            Ok(newly)
        })
        .await
    }

    async fn hash_checkpoint(&self, id: Uuid) -> Result<Option<HashCheckpoint>, LedgerError> {
        self.with(move |conn| {
            let row: Option<(i64, Vec<u8>)> = conn
                .prepare_cached(
                    "SELECT hashed_chunks, md5_state FROM files \
                     WHERE id = ?1 AND md5_state IS NOT NULL",
                )
                .and_then(|mut s| {
                    s.query_row([id.to_string()], |row| Ok((row.get(0)?, row.get(1)?)))
                        .optional()
                })
                .map_err(db_error)?;
            row.map(|(chunks, state)| {
                Ok(HashCheckpoint {
                    chunks: to_u64(chunks)?,
                    state,
                })
            })
            .transpose()
        })
        .await
    }

    async fn save_hash_checkpoint(
        &self,
        id: Uuid,
        checkpoint: &HashCheckpoint,
    ) -> Result<(), LedgerError> {
        let chunks = to_i64(checkpoint.chunks)?;
        let state = checkpoint.state.clone();
        self.write(move |tx| {
            let updated = tx
                .execute(
                    "UPDATE files SET hashed_chunks = ?2, md5_state = ?3 \
                     WHERE id = ?1 AND state = 'uploading' AND hashed_chunks <= ?2",
                    params![id.to_string(), chunks, state],
                )
                .map_err(db_error)?;
            if updated == 0 {
                require_open(id, select_file(tx, id)?.as_ref())?;
            }
            Ok(())
        })
        .await
    }

    async fn complete_upload(
        &self,
        id: Uuid,
        md5: &Md5Digest,
        blake3: &Blake3Digest,
    ) -> Result<FileRecord, LedgerError> {
        let (md5, blake3) = (*md5, *blake3);
        self.write(move |tx| {
            let now = now_micros();
            let updated = tx
                .prepare_cached(&format!(
                    "UPDATE files SET state = 'complete', md5 = ?3, content_blake3 = ?4, \
                                      completed_at = ?2, updated_at = ?2 \
                     WHERE id = ?1 AND state = 'uploading' RETURNING {FILE_COLUMNS}"
                ))
                .and_then(|mut s| {
                    s.query_row(params![id.to_string(), now, md5, blake3], raw_file)
                        .optional()
                })
                .map_err(db_error)?;
            let Some(file) = updated else {
                return Err(not_open(tx, id)?);
            };
            let file = FileRecord::try_from(file)?;
            tx.execute(
                "INSERT OR IGNORE INTO contents (md5, size, created_at) VALUES (?1, ?2, ?3)",
                params![md5, to_i64(file.size)?, now],
            )
            .map_err(db_error)?;
            tx.execute(
                "INSERT OR IGNORE INTO content_blobs (blake3, size, md5, created_at) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![blake3, to_i64(file.size)?, md5, now],
            )
            .map_err(db_error)?;
            Ok(file)
        })
        .await
    }

    async fn fail_upload(&self, id: Uuid, reason: &str) -> Result<(), LedgerError> {
        let reason = reason.to_owned();
        self.write(move |tx| close_upload(tx, id, FileState::Failed, Some(&reason)))
            .await
    }

    async fn abort_upload(&self, id: Uuid) -> Result<(), LedgerError> {
        self.write(move |tx| close_upload(tx, id, FileState::Aborted, None))
            .await
    }

    async fn dump_files(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<FileDump>, LedgerError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(move |conn| {
            let after = after.map(|id| id.to_string());
            let mut statement = conn
                .prepare_cached(&format!(
                    "SELECT {FILE_COLUMNS}, updated_at, hashed_chunks, md5_state FROM files \
                     WHERE ?1 IS NULL OR id > ?1 ORDER BY id LIMIT ?2"
                ))
                .map_err(db_error)?;
            let rows = statement
                .query_map(params![after, limit], |row| {
                    Ok((
                        raw_file(row)?,
                        row.get::<_, i64>(13)?,
                        row.get::<_, i64>(14)?,
                        row.get::<_, Option<Vec<u8>>>(15)?,
                    ))
                })
                .map_err(db_error)?;
            let mut files = Vec::new();
            for row in rows {
                let (raw, updated_at, hashed, state) = row.map_err(db_error)?;
                files.push(FileDump {
                    file: FileRecord::try_from(raw)?,
                    updated_at: time(updated_at)?,
                    chunks: Vec::new(),
                    checkpoint: state
                        .map(|state| {
                            Ok::<_, LedgerError>(HashCheckpoint {
                                chunks: to_u64(hashed)?,
                                state,
                            })
                        })
                        .transpose()?,
                });
            }
            let mut chunks = conn
                .prepare_cached(
                    "SELECT idx, size, crc32c, committed_at FROM chunks \
                     WHERE file_id = ?1 ORDER BY idx",
                )
                .map_err(db_error)?;
            for dump in &mut files {
                let rows = chunks
                    .query_map([dump.file.id.to_string()], |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            row.get::<_, u32>(1)?,
                            row.get::<_, u32>(2)?,
                            row.get::<_, i64>(3)?,
                        ))
                    })
                    .map_err(db_error)?;
                for row in rows {
                    let (index, size, crc32c, committed_at) = row.map_err(db_error)?;
                    dump.chunks.push(ChunkDump {
                        chunk: CommittedChunk {
                            index: to_u64(index)?,
                            size,
                            crc32c,
                        },
                        committed_at: time(committed_at)?,
                    });
                }
            }
            Ok(files)
        })
        .await
    }

    async fn dump_contents(
        &self,
        after: Option<(Md5Digest, u64)>,
        limit: usize,
    ) -> Result<Vec<ContentDump>, LedgerError> {
        let (md5, size) = match after {
            Some((md5, size)) => (Some(md5.to_vec()), Some(to_i64(size)?)),
            None => (None, None),
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(move |conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT md5, size, created_at FROM contents \
                     WHERE ?1 IS NULL OR md5 > ?1 OR (md5 = ?1 AND size > ?2) \
                     ORDER BY md5, size LIMIT ?3",
                )
                .map_err(db_error)?;
            let rows = statement
                .query_map(params![md5, size, limit], |row| {
                    Ok((
                        row.get::<_, Vec<u8>>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                })
                .map_err(db_error)?;
            rows.map(|row| {
                let (md5, size, created_at) = row.map_err(db_error)?;
                Ok(ContentDump {
                    md5: Md5Digest::try_from(md5.as_slice())
                        .map_err(|_| LedgerError::Corrupt("a content MD5".into()))?,
                    size: to_u64(size)?,
                    created_at: time(created_at)?,
                })
            })
            .collect()
        })
        .await
    }

    async fn restore(
        &self,
        files: &[FileDump],
        contents: &[ContentDump],
    ) -> Result<(), LedgerError> {
        let (files, contents) = (files.to_vec(), contents.to_vec());
        self.write(move |tx| {
            let mut insert_content = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO contents (md5, size, created_at) VALUES (?1, ?2, ?3)",
                )
                .map_err(db_error)?;
            for c in &contents {
                insert_content
                    .execute(params![
                        c.md5,
                        to_i64(c.size)?,
                        c.created_at.timestamp_micros()
                    ])
                    .map_err(db_error)?;
            }
            let mut insert_file = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO files (id, owner, name, size, md5, chunk_size, \
                         chunk_count, state, failure, created_at, updated_at, completed_at, \
                         hashed_chunks, md5_state, head_md5, content_blake3) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
                )
                .map_err(db_error)?;
            let mut insert_chunk = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO chunks (file_id, idx, size, crc32c, committed_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(db_error)?;
            for dump in &files {
                let file = &dump.file;
                let id = file.id.to_string();
                let (hashed, state) = match &dump.checkpoint {
                    Some(c) => (to_i64(c.chunks)?, Some(c.state.clone())),
                    None => (0, None),
                };
                insert_file
                    .execute(params![
                        id,
                        file.owner,
                        file.name,
                        to_i64(file.size)?,
                        file.md5,
                        file.chunk_size,
                        to_i64(file.chunk_count)?,
                        file.state.as_str(),
                        file.failure,
                        file.created_at.timestamp_micros(),
                        dump.updated_at.timestamp_micros(),
                        file.completed_at.map(|t| t.timestamp_micros()),
                        hashed,
                        state,
                        file.head_md5,
                        file.content_blake3,
                    ])
                    .map_err(db_error)?;
                // The BLAKE3 index of content follows from the complete files.
                if let (Some(blake3), Some(md5), Some(at)) =
                    (file.content_blake3, file.md5, file.completed_at)
                {
                    tx.execute(
                        "INSERT OR IGNORE INTO content_blobs (blake3, size, md5, created_at) \
                         VALUES (?1, ?2, ?3, ?4)",
                        params![blake3, to_i64(file.size)?, md5, at.timestamp_micros()],
                    )
                    .map_err(db_error)?;
                }
                for c in &dump.chunks {
                    insert_chunk
                        .execute(params![
                            id,
                            to_i64(c.chunk.index)?,
                            c.chunk.size,
                            c.chunk.crc32c,
                            c.committed_at.timestamp_micros()
                        ])
                        .map_err(db_error)?;
                }
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "6f1d3c1e-8a44-4f7e-9a53-0c2d5b7e9f10";

    /// Migration 4 rebuilds `files`; with foreign keys on, its DROP TABLE would have
    /// cascaded into `chunks`.
    #[tokio::test]
    async fn the_single_pass_migration_keeps_every_file_and_chunk_and_the_foreign_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite3");
        {
            let mut conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "foreign_keys", true).unwrap();
            embedded::migrations::runner()
                .set_target(refinery::Target::Version(3))
                .run(&mut conn)
                .unwrap();
            conn.execute_batch(&format!(
                "INSERT INTO files (id, owner, name, size, md5, chunk_size, chunk_count, state, \
                                    created_at, updated_at) \
                 VALUES ('{ID}', 'o', 'f.bin', 8192, X'00112233445566778899AABBCCDDEEFF', \
                         4096, 2, 'uploading', 1, 1); \
                 INSERT INTO chunks (file_id, idx, size, crc32c, committed_at) \
                 VALUES ('{ID}', 0, 4096, 7, 1), ('{ID}', 1, 4096, 8, 1);"
            ))
            .unwrap();
        }

        let ledger = SqliteLedger::open(&path, 2).await.unwrap();
        let id = Uuid::parse_str(ID).unwrap();
        assert_eq!(ledger.committed_ranges(id).await.unwrap(), vec![(0, 2)]);
        let file = ledger.get_file(id).await.unwrap().unwrap();
        assert_eq!(
            file.md5,
            Some([
                0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xAA, 0xBB, 0xCC, 0xDD,
                0xEE, 0xFF
            ])
        );
        assert_eq!(file.head_md5, None);
        let orphan = ledger
            .with(|conn| {
                conn.execute(
                    "INSERT INTO chunks (file_id, idx, size, crc32c, committed_at) \
                     VALUES ('no-such-file', 0, 1, 1, 1)",
                    [],
                )
                .map_err(db_error)
            })
            .await;
        assert!(
            matches!(orphan, Err(LedgerError::Constraint(_))),
            "chunks still need their file, and a write the schema forbids says so: {orphan:?}"
        );
    }
}
