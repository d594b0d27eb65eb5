//! [`Ledger`](super::Ledger) on PostgreSQL (tokio-postgres with a deadpool connection pool).
//! The schema comes from the versioned migrations in `migrations/postgres`, applied by
//! [`PostgresLedger::connect`].

use deadpool_postgres::{
    ConfigConnectImpl, Connect, GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod,
};
use futures::future::BoxFuture;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_postgres::{NoTls, Row};
use uuid::Uuid;

use super::columns::{blake3_from, digest_from, not_writable, parse_state, to_i64, to_u64};
use super::{FileRecord, FileState, Lease, LedgerError, Md5Digest};

mod catalog;
mod contents;
mod expiry;
mod export;
mod garbage;
mod handover;
mod keys;
mod leases;
mod tls;
mod uploads;

use tls::DatabaseTls;

mod embedded {
    refinery::embed_migrations!("../migrations/postgres");
}

/// The columns every query that returns a file selects, in the order [`file_from_row`] reads.
const FILE_COLUMNS: &str = "id, owner, name, size, md5, head_md5, chunk_size, chunk_count, state, failure, \
     created_at, completed_at, content_blake3, blob_upload, expires_at";

/// Runs of consecutive committed indexes, computed in the database so that a session
/// with millions of chunks sends back a few ranges rather than millions of rows.
const COMMITTED_RANGES: &str = "SELECT min(idx), max(idx) + 1 FROM ( \
         SELECT idx, idx - row_number() OVER (ORDER BY idx) AS run FROM chunks WHERE file_id = $1 \
     ) AS numbered GROUP BY run ORDER BY 1";

/// Records chunks of an open upload; see [`UploadLedger::commit_chunks`](super::UploadLedger::commit_chunks).
const COMMIT_CHUNKS: &str = "WITH open AS ( \
         SELECT id FROM files WHERE id = $1 AND state = 'uploading' AND lease_epoch = $6 \
         FOR SHARE) \
     INSERT INTO chunks (file_id, idx, size, crc32c, receipt) \
     SELECT open.id, c.idx, c.size, c.crc32c, c.receipt FROM open, \
         unnest($2::BIGINT[], $3::INTEGER[], $4::BIGINT[], $5::TEXT[]) \
             AS c(idx, size, crc32c, receipt) \
     ON CONFLICT (file_id, idx) DO NOTHING RETURNING idx";

pub struct PostgresLedger {
    /// Connections for the calls that answer requests (`CheckUpload`, `GetFile`, ...).
    requests: Pool,
    /// Connections for the upload sessions' durable commits. Apart, so that a
    /// `CheckUpload` never waits for a connection behind hundreds of chunk commits, each
    /// of which holds its connection until the WAL reaches the disk.
    sessions: Pool,
    /// Where the pools connect, for the connection that listens for hand-overs.
    config: tokio_postgres::Config,
    tls: DatabaseTls,
}

impl PostgresLedger {
    /// Connects to `url` (`postgres://user@host:port/db`), applies pending migrations and
    /// returns a ledger with at most `pool_size` connections (at least 4): a quarter
    /// answer requests, the rest commit the sessions' chunks.
    pub async fn connect(url: &str, pool_size: usize) -> Result<Self, LedgerError> {
        Self::connect_serving_requests_on(url, pool_size, None).await
    }

    /// Like [`PostgresLedger::connect`], with the connections that answer requests made
    /// and driven on `requests_runtime`: a connection's socket and task belong to the
    /// runtime that made it, and each query waits for that runtime to poll them. The
    /// server runs its short calls on a runtime of their own (see `crate::control`), so
    /// their queries should not wait behind the bulk streams either.
    pub async fn connect_serving_requests_on(
        url: &str,
        pool_size: usize,
        requests_runtime: Option<Handle>,
    ) -> Result<Self, LedgerError> {
        let (config, tls) = tls::parse_url(url)?;

        let (mut client, connection) = connect_with(&config, &tls)
            .await
            .map_err(|e| LedgerError::Unavailable(describe(&e)))?;
        embedded::migrations::runner()
            .run_async(&mut client)
            .await
            .map_err(|e| LedgerError::Database(format!("migrating the ledger failed: {e}")))?;
        drop(client);
        let _ = connection.await;

        let pool = |max_size, runtime: Option<Handle>| {
            let manager = Manager::from_connect(
                config.clone(),
                ConnectOn {
                    runtime,
                    tls: tls.clone(),
                },
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            Pool::builder(manager)
                .max_size(max_size)
                .build()
                .map_err(|e| LedgerError::Unavailable(e.to_string()))
        };
        let for_requests = (pool_size / 4).max(2);
        Ok(Self {
            requests: pool(for_requests, requests_runtime)?,
            sessions: pool(pool_size.saturating_sub(for_requests).max(2), None)?,
            config,
            tls,
        })
    }

    /// A connection for a call that answers a request.
    async fn client(&self) -> Result<deadpool_postgres::Object, LedgerError> {
        Self::take(&self.requests).await
    }

    /// A connection for an upload session's commit.
    async fn session_client(&self) -> Result<deadpool_postgres::Object, LedgerError> {
        Self::take(&self.sessions).await
    }

    async fn take(pool: &Pool) -> Result<deadpool_postgres::Object, LedgerError> {
        pool.get()
            .await
            .map_err(|e| LedgerError::Unavailable(e.to_string()))
    }

    /// Why a state change of `id` matched no open upload: it is missing or not open.
    async fn not_open(client: &impl GenericClient, id: Uuid) -> Result<LedgerError, LedgerError> {
        Self::not_writable(client, id, None).await
    }

    /// Why a write of an upload's session under `lease` changed nothing (see
    /// [`not_writable`]).
    async fn not_writable(
        client: &impl GenericClient,
        id: Uuid,
        lease: Option<Lease>,
    ) -> Result<LedgerError, LedgerError> {
        let row = client
            .query_opt("SELECT state, lease_epoch FROM files WHERE id = $1", &[&id])
            .await
            .map_err(db_error)?;
        let found = match row {
            None => None,
            Some(row) => Some((parse_state(row.get(0))?, to_u64(row.get(1))?)),
        };
        Ok(not_writable(id, found, lease))
    }

    /// Moves an open upload to `aborted` or `failed` and deletes its chunk rows; under
    /// `lease` only, when one is named.
    async fn close_upload(
        &self,
        id: Uuid,
        state: FileState,
        reason: Option<&str>,
        lease: Option<Lease>,
    ) -> Result<(), LedgerError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let epoch = lease.map(|lease| to_i64(lease.epoch)).transpose()?;
        let updated = tx
            .execute(
                "UPDATE files SET state = $2, failure = $3, updated_at = now() \
                 WHERE id = $1 AND state = 'uploading' \
                   AND ($4::BIGINT IS NULL OR lease_epoch = $4)",
                &[&id, &state.as_str(), &reason, &epoch],
            )
            .await
            .map_err(db_error)?;
        if updated == 0 {
            return Err(Self::not_writable(&tx, id, lease).await?);
        }
        tx.execute("DELETE FROM chunks WHERE file_id = $1", &[&id])
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }
}

/// Makes a pool's connections on a given runtime, or where they are first needed.
struct ConnectOn {
    runtime: Option<Handle>,
    tls: DatabaseTls,
}

/// Connects with or without TLS; the connection's task runs where this is called.
async fn connect_with(
    config: &tokio_postgres::Config,
    tls: &DatabaseTls,
) -> Result<(tokio_postgres::Client, JoinHandle<()>), tokio_postgres::Error> {
    match tls {
        DatabaseTls::Off => ConfigConnectImpl { tls: NoTls }.connect(config).await,
        DatabaseTls::On(tls) => ConfigConnectImpl { tls: tls.clone() }.connect(config).await,
    }
}

impl Connect for ConnectOn {
    fn connect(
        &self,
        config: &tokio_postgres::Config,
    ) -> BoxFuture<'_, Result<(tokio_postgres::Client, JoinHandle<()>), tokio_postgres::Error>>
    {
        let config = config.clone();
        let runtime = self.runtime.clone();
        let tls = self.tls.clone();
        Box::pin(async move {
            let Some(runtime) = runtime else {
                return connect_with(&config, &tls).await;
            };
            let on_runtime = {
                let (config, tls) = (config.clone(), tls.clone());
                runtime.spawn(async move { connect_with(&config, &tls).await })
            };
            match on_runtime.await {
                Ok(connected) => connected,
                // That runtime is shutting down: a connection here still answers.
                Err(_) => connect_with(&config, &tls).await,
            }
        })
    }
}

/// The error with its causes: tokio-postgres's own text is often just "db error".
fn describe(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

fn db_error(e: tokio_postgres::Error) -> LedgerError {
    let message = e
        .as_db_error()
        .map_or_else(|| describe(&e), |d| d.to_string());
    classify(e.code(), e.is_closed(), message)
}

/// A PostgreSQL error as a [`LedgerError`], by its SQLSTATE.
fn classify(
    code: Option<&tokio_postgres::error::SqlState>,
    closed: bool,
    message: String,
) -> LedgerError {
    use tokio_postgres::error::SqlState;
    let class = code.map_or("", |c| &c.code()[..2]);
    match code {
        _ if closed => LedgerError::Unavailable(message),
        Some(c)
            if *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED =>
        {
            LedgerError::RetryableConflict(message)
        }
        // Connection exceptions, and the server shutting down or out of resources.
        _ if matches!(class, "08" | "53" | "57") => LedgerError::Unavailable(message),
        Some(c) if *c == SqlState::FOREIGN_KEY_VIOLATION => LedgerError::ReferenceGone(message),
        _ if class == "23" => LedgerError::Constraint(message),
        _ => LedgerError::Database(message),
    }
}

/// A nullable MD5 column.
fn digest(row: &Row, column: &str) -> Result<Option<Md5Digest>, LedgerError> {
    digest_from(row.get(column))
}

fn file_from_row(row: &Row) -> Result<FileRecord, LedgerError> {
    let md5 = digest(row, "md5")?;
    let head_md5 = digest(row, "head_md5")?;
    let chunk_size: i32 = row.get("chunk_size");
    Ok(FileRecord {
        id: row.get("id"),
        owner: row.get("owner"),
        name: row.get("name"),
        size: to_u64(row.get("size"))?,
        md5,
        head_md5,
        content_blake3: blake3_from(row.get("content_blake3"))?,
        chunk_size: u32::try_from(chunk_size)
            .map_err(|_| LedgerError::Corrupt(format!("negative chunk size {chunk_size}")))?,
        chunk_count: to_u64(row.get("chunk_count"))?,
        state: parse_state(row.get("state"))?,
        failure: row.get("failure"),
        blob_upload: row.get("blob_upload"),
        created_at: row.get("created_at"),
        completed_at: row.get("completed_at"),
        expires_at: row.get("expires_at"),
    })
}

/// The owner's open session for this content, if any.
async fn select_open_upload(
    client: &impl GenericClient,
    owner: &str,
    md5: &Md5Digest,
    size: u64,
) -> Result<Option<FileRecord>, LedgerError> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT {FILE_COLUMNS} FROM files \
             WHERE owner = $1 AND md5 = $2 AND size = $3 AND state = 'uploading'"
        ))
        .await
        .map_err(db_error)?;
    let row = client
        .query_opt(&statement, &[&owner, &md5.as_slice(), &to_i64(size)?])
        .await
        .map_err(db_error)?;
    row.as_ref().map(file_from_row).transpose()
}

#[cfg(test)]
mod tests;
