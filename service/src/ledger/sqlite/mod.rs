//! [`Ledger`](super::Ledger) on an embedded SQLite file: the zero set-up default.
//!
//! rusqlite (with SQLite bundled, so nothing needs installing). Reads run on a deadpool
//! pool on Tokio's blocking pool; writes go to one writer thread that commits them in
//! groups (see [`writer`]). The file is in WAL mode with `synchronous = FULL`, so a
//! committed transaction survives a crash (all but the opening of a session, see
//! [`UploadLedger::open_upload`](super::UploadLedger::open_upload)).
//! The schema comes from the migrations in `migrations/sqlite`.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_sqlite::{Config, Hook, HookError, Pool, Runtime};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};
use uuid::Uuid;

use super::columns::{blake3_from, digest_from, not_writable, parse_state, to_i64, to_u64};
use super::{FileRecord, FileState, Lease, LedgerError, Md5Digest};

mod catalog;
mod contents;
mod expiry;
mod export;
mod garbage;
mod keys;
mod leases;
mod uploads;
mod writer;
use writer::Writer;

mod embedded {
    refinery::embed_migrations!("../migrations/sqlite");
}

/// The columns every query that returns a file selects, in the order [`file_from_row`] reads.
const FILE_COLUMNS: &str = "id, owner, name, size, md5, chunk_size, chunk_count, state, failure, \
     created_at, completed_at, head_md5, content_blake3, blob_upload, expires_at";
/// How many columns [`FILE_COLUMNS`] names: a query that selects more after them reads
/// those from this index on.
const FILE_COLUMN_COUNT: usize = 15;

/// An owner's open uploads, and the bytes of those and of the files it sent (a file of
/// an instant upload has chunk size 0).
const OWNER_USAGE: &str = "SELECT count(*) FILTER (WHERE state = 'uploading'), \
            coalesce(sum(size), 0), \
            coalesce((SELECT files FROM owner_files WHERE owner = ?1), 0) FROM files \
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
    /// records a crash may lose (see [`UploadLedger::open_upload`](super::UploadLedger::open_upload)). The WAL is appended
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
    // One process at a time serves from an embedded ledger: the replicas it remembers
    // are processes that stopped, whose leases this one may take at once.
    conn.execute("DELETE FROM replicas", []).map_err(db_error)?;
    Ok(())
}

fn db_error(e: rusqlite::Error) -> LedgerError {
    use rusqlite::ErrorCode;
    let message = e.to_string();
    if let rusqlite::Error::SqliteFailure(failure, _) = &e
        && failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY
    {
        return LedgerError::ReferenceGone(message);
    }
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
    blob_upload: Option<String>,
    expires_at: Option<i64>,
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
        blob_upload: row.get(13)?,
        expires_at: row.get(14)?,
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
            blob_upload: raw.blob_upload,
            created_at: time(raw.created_at)?,
            completed_at: raw.completed_at.map(time).transpose()?,
            expires_at: raw.expires_at.map(time).transpose()?,
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
    not_writable_under(conn, id, None)
}

/// Why a write of an upload's session under `lease` changed nothing (see
/// [`not_writable`]).
fn not_writable_under(
    conn: &Connection,
    id: Uuid,
    lease: Option<Lease>,
) -> Result<LedgerError, LedgerError> {
    let row: Option<(String, i64)> = conn
        .prepare_cached("SELECT state, lease_epoch FROM files WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row([id.to_string()], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
        })
        .map_err(db_error)?;
    let found = match row {
        None => None,
        Some((state, epoch)) => Some((parse_state(&state)?, to_u64(epoch)?)),
    };
    Ok(not_writable(id, found, lease))
}

/// Moves an open upload to `aborted` or `failed` and deletes its chunk rows; under
/// `lease` only, when one is named.
fn close_upload(
    tx: &Transaction<'_>,
    id: Uuid,
    state: FileState,
    reason: Option<&str>,
    lease: Option<Lease>,
) -> Result<(), LedgerError> {
    let epoch = lease.map(|lease| to_i64(lease.epoch)).transpose()?;
    let updated = tx
        .execute(
            "UPDATE files SET state = ?2, failure = ?3, updated_at = ?4 \
             WHERE id = ?1 AND state = 'uploading' AND (?5 IS NULL OR lease_epoch = ?5)",
            params![id.to_string(), state.as_str(), reason, now_micros(), epoch],
        )
        .map_err(db_error)?;
    if updated == 0 {
        return Err(not_writable_under(tx, id, lease)?);
    }
    tx.execute("DELETE FROM chunks WHERE file_id = ?1", [id.to_string()])
        .map_err(db_error)?;
    Ok(())
}

#[cfg(test)]
mod tests;
