//! [`ChunkLedger`] on PostgreSQL (tokio-postgres with a deadpool connection pool).
//! The schema comes from the versioned migrations in `migrations/postgres`, applied by
//! [`PostgresLedger::connect`].

use async_trait::async_trait;
use deadpool_postgres::{
    ConfigConnectImpl, Connect, GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod,
};
use futures::future::BoxFuture;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};
use uuid::Uuid;

use super::{
    Blake3Digest, ChunkDump, ChunkLedger, CommittedChunk, ContentDump, FileDump, FileRecord,
    FileState, HashCheckpoint, LedgerError, Md5Digest, NewUpload, OpenedUpload, OwnerUsage,
    blake3_from, digest_from, parse_state, require_open, to_i64, to_u64,
};

mod keys;
mod tls;

use tls::DatabaseTls;

mod embedded {
    refinery::embed_migrations!("../migrations/postgres");
}

/// The columns every query that returns a file selects, in the order [`file_from_row`] reads.
const FILE_COLUMNS: &str = "id, owner, name, size, md5, head_md5, chunk_size, chunk_count, state, failure, \
     created_at, completed_at, content_blake3";

/// Runs of consecutive committed indexes, computed in the database so that a session
/// with millions of chunks sends back a few ranges rather than millions of rows.
const COMMITTED_RANGES: &str = "SELECT min(idx), max(idx) + 1 FROM ( \
         SELECT idx, idx - row_number() OVER (ORDER BY idx) AS run FROM chunks WHERE file_id = $1 \
     ) AS numbered GROUP BY run ORDER BY 1";

/// Records chunks of an open upload; see [`ChunkLedger::commit_chunks`].
const COMMIT_CHUNKS: &str = "WITH open AS ( \
         SELECT id FROM files WHERE id = $1 AND state = 'uploading' FOR SHARE) \
     INSERT INTO chunks (file_id, idx, size, crc32c) \
     SELECT open.id, c.idx, c.size, c.crc32c FROM open, \
         unnest($2::BIGINT[], $3::INTEGER[], $4::BIGINT[]) AS c(idx, size, crc32c) \
     ON CONFLICT (file_id, idx) DO NOTHING RETURNING idx";

pub struct PostgresLedger {
    /// Connections for the calls that answer requests (`CheckUpload`, `GetFile`, ...).
    requests: Pool,
    /// Connections for the upload sessions' durable commits. Apart, so that a
    /// `CheckUpload` never waits for a connection behind hundreds of chunk commits, each
    /// of which holds its connection until the WAL reaches the disk.
    sessions: Pool,
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
        let row = client
            .query_opt("SELECT state FROM files WHERE id = $1", &[&id])
            .await
            .map_err(db_error)?;
        Ok(match row {
            None => LedgerError::NotFound(id),
            Some(row) => LedgerError::NotUploading {
                id,
                state: parse_state(row.get(0))?,
            },
        })
    }

    /// Moves an open upload to `aborted` or `failed` and deletes its chunk rows.
    async fn close_upload(
        &self,
        id: Uuid,
        state: FileState,
        reason: Option<&str>,
    ) -> Result<(), LedgerError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let updated = tx
            .execute(
                "UPDATE files SET state = $2, failure = $3, updated_at = now() \
                 WHERE id = $1 AND state = 'uploading'",
                &[&id, &state.as_str(), &reason],
            )
            .await
            .map_err(db_error)?;
        if updated == 0 {
            return Err(Self::not_open(&tx, id).await?);
        }
        tx.execute("DELETE FROM chunks WHERE file_id = $1", &[&id])
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }
}

#[async_trait]
impl ChunkLedger for PostgresLedger {
    async fn add_file_for_owned_content(
        &self,
        owner: &str,
        name: &str,
        md5: &Md5Digest,
        size: u64,
        head_md5: Option<&Md5Digest>,
    ) -> Result<Option<FileRecord>, LedgerError> {
        let client = self.client().await?;
        let sql = format!(
            "WITH existing AS ( \
                 SELECT {FILE_COLUMNS} FROM files \
                 WHERE owner = $1 AND name = $2 AND md5 = $3 AND size = $4 AND state = 'complete' \
                 ORDER BY created_at LIMIT 1), \
             owned AS ( \
                 SELECT content_blake3 FROM files \
                 WHERE owner = $1 AND md5 = $3 AND size = $4 AND state = 'complete' \
                 ORDER BY created_at LIMIT 1), \
             inserted AS ( \
                 INSERT INTO files (id, owner, name, size, md5, head_md5, chunk_size, chunk_count, state, \
                                    completed_at, content_blake3) \
                 SELECT $5, $1, $2, $4, $3, $6, 0, 0, 'complete', now(), owned.content_blake3 FROM owned \
                 WHERE NOT EXISTS (SELECT 1 FROM existing) \
                 RETURNING {FILE_COLUMNS}) \
             SELECT * FROM existing UNION ALL SELECT * FROM inserted"
        );
        let statement = client.prepare_cached(&sql).await.map_err(db_error)?;
        let row = client
            .query_opt(
                &statement,
                &[
                    &owner,
                    &name,
                    &md5.as_slice(),
                    &to_i64(size)?,
                    &Uuid::new_v4(),
                    &head_md5.map(|h| h.as_slice()),
                ],
            )
            .await
            .map_err(db_error)?;
        row.as_ref().map(file_from_row).transpose()
    }

    async fn open_upload(&self, upload: &NewUpload) -> Result<OpenedUpload, LedgerError> {
        let client = self.client().await?;
        // A new session need not reach the disk before CheckUpload answers (see the
        // trait); the first synced chunk commit makes it durable. `set_config(..., true)`
        // is `SET LOCAL` inside the statement: its own transaction commits without waiting
        // for the WAL flush, in one round trip instead of four (BEGIN, SET, INSERT, COMMIT).
        let insert = format!(
            "INSERT INTO files (id, owner, name, size, md5, head_md5, chunk_size, chunk_count, state) \
             SELECT $1, $2, $3, $4, $5, $8, $6, $7, 'uploading' \
             FROM (SELECT set_config('synchronous_commit', 'off', true)) AS commit_without_flush \
             ON CONFLICT (owner, md5, size) WHERE state = 'uploading' DO NOTHING \
             RETURNING {FILE_COLUMNS}"
        );
        let statement = client.prepare_cached(&insert).await.map_err(db_error)?;
        let size = to_i64(upload.size)?;
        let chunk_size = i32::try_from(upload.chunk_size).map_err(|_| {
            LedgerError::Database(format!("chunk size {} too large", upload.chunk_size))
        })?;
        let chunk_count = to_i64(upload.chunk_count)?;
        let md5 = upload.md5.as_ref().map(|m| m.as_slice());
        let head_md5 = upload.head_md5.as_ref().map(|h| h.as_slice());
        // The insert loses to a concurrent open of the same content; the select then finds
        // the winner. If that session closed in between, try again.
        for _ in 0..5 {
            let id = Uuid::new_v4();
            let params: [&(dyn ToSql + Sync); 8] = [
                &id,
                &upload.owner,
                &upload.name,
                &size,
                &md5,
                &chunk_size,
                &chunk_count,
                &head_md5,
            ];
            let inserted = client
                .query_opt(&statement, &params)
                .await
                .map_err(db_error)?;
            if let Some(row) = inserted {
                return Ok(OpenedUpload {
                    file: file_from_row(&row)?,
                    created: true,
                });
            }
            // Only an upload with an MD5 can lose to another (single-pass ones never conflict).
            let Some(md5) = &upload.md5 else { break };
            // On this connection: taking a second one from a drained pool could wait forever.
            if let Some(file) = select_open_upload(&client, &upload.owner, md5, upload.size).await?
            {
                return Ok(OpenedUpload {
                    file,
                    created: false,
                });
            }
        }
        Err(LedgerError::Database(
            "could not open an upload session: it kept closing concurrently".into(),
        ))
    }

    async fn owner_usage(&self, owner: &str) -> Result<OwnerUsage, LedgerError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT count(*) FILTER (WHERE state = 'uploading'), \
                        coalesce(sum(size), 0)::BIGINT FROM files \
                 WHERE owner = $1 AND (state = 'uploading' OR (state = 'complete' AND chunk_size > 0))",
            )
            .await
            .map_err(db_error)?;
        let row = client
            .query_one(&statement, &[&owner])
            .await
            .map_err(db_error)?;
        Ok(OwnerUsage {
            open_uploads: to_u64(row.get(0))?,
            bytes: to_u64(row.get(1))?,
        })
    }

    async fn files_with_head(
        &self,
        owner: &str,
        size: u64,
        head_md5: &Md5Digest,
        limit: usize,
    ) -> Result<Vec<FileRecord>, LedgerError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {FILE_COLUMNS} FROM files \
                 WHERE owner = $1 AND size = $2 AND head_md5 = $3 \
                   AND head_md5 IS NOT NULL AND state IN ('uploading', 'complete') \
                 ORDER BY created_at DESC LIMIT $4"
            ))
            .await
            .map_err(db_error)?;
        let rows = client
            .query(
                &statement,
                &[
                    &owner,
                    &to_i64(size)?,
                    &head_md5.as_slice(),
                    &i64::try_from(limit).unwrap_or(i64::MAX),
                ],
            )
            .await
            .map_err(db_error)?;
        rows.iter().map(file_from_row).collect()
    }

    async fn get_file(&self, id: Uuid) -> Result<Option<FileRecord>, LedgerError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!("SELECT {FILE_COLUMNS} FROM files WHERE id = $1"))
            .await
            .map_err(db_error)?;
        let row = client
            .query_opt(&statement, &[&id])
            .await
            .map_err(db_error)?;
        row.as_ref().map(file_from_row).transpose()
    }

    async fn has_content(
        &self,
        blake3: &Blake3Digest,
        size: u64,
        md5: &Md5Digest,
    ) -> Result<bool, LedgerError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM content_blobs WHERE blake3 = $1 AND size = $2 AND md5 = $3)",
            )
            .await
            .map_err(db_error)?;
        let row = client
            .query_one(
                &statement,
                &[&blake3.as_slice(), &to_i64(size)?, &md5.as_slice()],
            )
            .await
            .map_err(db_error)?;
        row.try_get(0).map_err(db_error)
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
        let client = self.client().await?;
        let sql = format!(
            "WITH existing AS ( \
                 SELECT {FILE_COLUMNS} FROM files \
                 WHERE owner = $1 AND name = $2 AND content_blake3 = $3 AND size = $4 AND state = 'complete' \
                 ORDER BY created_at LIMIT 1), \
             inserted AS ( \
                 INSERT INTO files (id, owner, name, size, md5, head_md5, chunk_size, chunk_count, state, \
                                    completed_at, content_blake3) \
                 SELECT $5, $1, $2, size, md5, $6, 0, 0, 'complete', now(), blake3 FROM content_blobs \
                 WHERE blake3 = $3 AND size = $4 AND md5 = $7 AND NOT EXISTS (SELECT 1 FROM existing) \
                 RETURNING {FILE_COLUMNS}) \
             SELECT * FROM existing UNION ALL SELECT * FROM inserted"
        );
        let statement = client.prepare_cached(&sql).await.map_err(db_error)?;
        let row = client
            .query_opt(
                &statement,
                &[
                    &owner,
                    &name,
                    &blake3.as_slice(),
                    &to_i64(size)?,
                    &Uuid::new_v4(),
                    &head_md5.map(|h| h.as_slice()),
                    &md5.as_slice(),
                ],
            )
            .await
            .map_err(db_error)?;
        row.as_ref().map(file_from_row).transpose()
    }

    async fn find_open_upload(
        &self,
        owner: &str,
        md5: &Md5Digest,
        size: u64,
    ) -> Result<Option<FileRecord>, LedgerError> {
        let client = self.client().await?;
        select_open_upload(&client, owner, md5, size).await
    }

    async fn committed_ranges(&self, id: Uuid) -> Result<Vec<(u64, u64)>, LedgerError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(COMMITTED_RANGES)
            .await
            .map_err(db_error)?;
        let rows = client.query(&statement, &[&id]).await.map_err(db_error)?;
        rows.iter()
            .map(|row| Ok((to_u64(row.get(0))?, to_u64(row.get(1))?)))
            .collect()
    }

    async fn commit_chunks(
        &self,
        id: Uuid,
        chunks: &[CommittedChunk],
    ) -> Result<Vec<u64>, LedgerError> {
        let mut indexes = Vec::with_capacity(chunks.len());
        let mut sizes = Vec::with_capacity(chunks.len());
        let mut crcs = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            indexes.push(to_i64(chunk.index)?);
            sizes.push(i32::try_from(chunk.size).map_err(|_| {
                LedgerError::Database(format!("chunk size {} too large", chunk.size))
            })?);
            crcs.push(i64::from(chunk.crc32c));
        }
        let client = self.session_client().await?;
        // One statement, one round trip: it inserts only while the file is open, and its
        // share lock on the file row orders it against a concurrent abort.
        let statement = client
            .prepare_cached(COMMIT_CHUNKS)
            .await
            .map_err(db_error)?;
        let inserted = client
            .query(&statement, &[&id, &indexes, &sizes, &crcs])
            .await
            .map_err(db_error)?;
        if inserted.is_empty() && !chunks.is_empty() {
            // Either every chunk was recorded before, or the file is not open.
            require_open(id, self.get_file(id).await?.as_ref())?;
        }
        let mut newly: Vec<u64> = inserted
            .iter()
            .map(|row| to_u64(row.get(0)))
            .collect::<Result<_, _>>()?;
        newly.sort_unstable();
        Ok(newly)
    }

    async fn hash_checkpoint(&self, id: Uuid) -> Result<Option<HashCheckpoint>, LedgerError> {
        let client = self.session_client().await?;
        let row = client
            .query_opt(
                "SELECT hashed_chunks, md5_state FROM files \
                 WHERE id = $1 AND md5_state IS NOT NULL",
                &[&id],
            )
            .await
            .map_err(db_error)?;
        row.map(|row| {
            Ok(HashCheckpoint {
                chunks: to_u64(row.get(0))?,
                state: row.get(1),
            })
        })
        .transpose()
    }

    async fn save_hash_checkpoint(
        &self,
        id: Uuid,
        checkpoint: &HashCheckpoint,
    ) -> Result<(), LedgerError> {
        let client = self.session_client().await?;
        let updated = client
            .execute(
                "UPDATE files SET hashed_chunks = $2, md5_state = $3 \
                 WHERE id = $1 AND state = 'uploading' AND hashed_chunks <= $2",
                &[&id, &to_i64(checkpoint.chunks)?, &checkpoint.state],
            )
            .await
            .map_err(db_error)?;
        if updated == 0 {
            // A later checkpoint is already saved, or the upload is not open.
            require_open(id, self.get_file(id).await?.as_ref())?;
        }
        Ok(())
    }

    async fn complete_upload(
        &self,
        id: Uuid,
        md5: &Md5Digest,
        blake3: &Blake3Digest,
    ) -> Result<FileRecord, LedgerError> {
        let mut client = self.session_client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let row = tx
            .query_opt(
                &format!(
                    "UPDATE files SET state = 'complete', md5 = $2, content_blake3 = $3, \
                                      completed_at = now(), updated_at = now() \
                     WHERE id = $1 AND state = 'uploading' RETURNING {FILE_COLUMNS}"
                ),
                &[&id, &md5.as_slice(), &blake3.as_slice()],
            )
            .await
            .map_err(db_error)?;
        let Some(row) = row else {
            return Err(Self::not_open(&tx, id).await?);
        };
        let file = file_from_row(&row)?;
        tx.execute(
            "INSERT INTO contents (md5, size) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&md5.as_slice(), &to_i64(file.size)?],
        )
        .await
        .map_err(db_error)?;
        tx.execute(
            "INSERT INTO content_blobs (blake3, size, md5) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
            &[&blake3.as_slice(), &to_i64(file.size)?, &md5.as_slice()],
        )
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(file)
    }

    async fn fail_upload(&self, id: Uuid, reason: &str) -> Result<(), LedgerError> {
        self.close_upload(id, FileState::Failed, Some(reason)).await
    }

    async fn abort_upload(&self, id: Uuid) -> Result<(), LedgerError> {
        self.close_upload(id, FileState::Aborted, None).await
    }

    async fn dump_files(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<FileDump>, LedgerError> {
        let client = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                &format!(
                    "SELECT {FILE_COLUMNS}, updated_at, hashed_chunks, md5_state FROM files \
                     WHERE $1::UUID IS NULL OR id > $1 ORDER BY id LIMIT $2"
                ),
                &[&after, &limit],
            )
            .await
            .map_err(db_error)?;
        let mut files = Vec::with_capacity(rows.len());
        for row in &rows {
            let state: Option<Vec<u8>> = row.get("md5_state");
            files.push(FileDump {
                file: file_from_row(row)?,
                updated_at: row.get("updated_at"),
                chunks: Vec::new(),
                checkpoint: state
                    .map(|state| {
                        Ok::<_, LedgerError>(HashCheckpoint {
                            chunks: to_u64(row.get("hashed_chunks"))?,
                            state,
                        })
                    })
                    .transpose()?,
            });
        }
        let ids: Vec<Uuid> = files.iter().map(|f| f.file.id).collect();
        let chunk_rows = client
            .query(
                "SELECT file_id, idx, size, crc32c, committed_at FROM chunks \
                 WHERE file_id = ANY($1) ORDER BY file_id, idx",
                &[&ids],
            )
            .await
            .map_err(db_error)?;
        for row in &chunk_rows {
            let id: Uuid = row.get(0);
            let size: i32 = row.get(2);
            let crc: i64 = row.get(3);
            let chunk = ChunkDump {
                chunk: CommittedChunk {
                    index: to_u64(row.get(1))?,
                    size: u32::try_from(size)
                        .map_err(|_| LedgerError::Corrupt(format!("chunk size {size}")))?,
                    crc32c: u32::try_from(crc)
                        .map_err(|_| LedgerError::Corrupt(format!("CRC32C {crc}")))?,
                },
                committed_at: row.get(4),
            };
            if let Some(file) = files.iter_mut().find(|f| f.file.id == id) {
                file.chunks.push(chunk);
            }
        }
        Ok(files)
    }

    async fn dump_contents(
        &self,
        after: Option<(Md5Digest, u64)>,
        limit: usize,
    ) -> Result<Vec<ContentDump>, LedgerError> {
        let client = self.client().await?;
        let (md5, size) = match after {
            Some((md5, size)) => (Some(md5.to_vec()), Some(to_i64(size)?)),
            None => (None, None),
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT md5, size, created_at FROM contents \
                 WHERE $1::BYTEA IS NULL OR (md5, size) > ($1, $2::BIGINT) \
                 ORDER BY md5, size LIMIT $3",
                &[&md5, &size, &limit],
            )
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                let md5: &[u8] = row.get(0);
                Ok(ContentDump {
                    md5: Md5Digest::try_from(md5)
                        .map_err(|_| LedgerError::Corrupt("a content MD5".into()))?,
                    size: to_u64(row.get(1))?,
                    created_at: row.get(2),
                })
            })
            .collect()
    }

    async fn restore(
        &self,
        files: &[FileDump],
        contents: &[ContentDump],
    ) -> Result<(), LedgerError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        for content in contents {
            tx.execute(
                "INSERT INTO contents (md5, size, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
                &[
                    &content.md5.as_slice(),
                    &to_i64(content.size)?,
                    &content.created_at,
                ],
            )
            .await
            .map_err(db_error)?;
        }
        for dump in files {
            let file = &dump.file;
            let chunk_size = i32::try_from(file.chunk_size)
                .map_err(|_| LedgerError::Database(format!("chunk size {}", file.chunk_size)))?;
            let (hashed, state) = match &dump.checkpoint {
                Some(c) => (to_i64(c.chunks)?, Some(c.state.as_slice())),
                None => (0, None),
            };
            tx.execute(
                "INSERT INTO files (id, owner, name, size, md5, chunk_size, chunk_count, state, \
                                    failure, created_at, updated_at, completed_at, hashed_chunks, \
                                    md5_state, head_md5, content_blake3) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
                 ON CONFLICT DO NOTHING",
                &[
                    &file.id,
                    &file.owner,
                    &file.name,
                    &to_i64(file.size)?,
                    &file.md5.as_ref().map(|m| m.as_slice()),
                    &chunk_size,
                    &to_i64(file.chunk_count)?,
                    &file.state.as_str(),
                    &file.failure,
                    &file.created_at,
                    &dump.updated_at,
                    &file.completed_at,
                    &hashed,
                    &state,
                    &file.head_md5.as_ref().map(|h| h.as_slice()),
                    &file.content_blake3.as_ref().map(|b| b.as_slice()),
                ],
            )
            .await
            .map_err(db_error)?;
            // The BLAKE3 index of content follows from the complete files.
            if let (Some(blake3), Some(md5), Some(at)) =
                (file.content_blake3, file.md5, file.completed_at)
            {
                tx.execute(
                    "INSERT INTO content_blobs (blake3, size, md5, created_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    &[
                        &blake3.as_slice(),
                        &to_i64(file.size)?,
                        &md5.as_slice(),
                        &at,
                    ],
                )
                .await
                .map_err(db_error)?;
            }
            let mut indexes = Vec::with_capacity(dump.chunks.len());
            let mut sizes = Vec::with_capacity(dump.chunks.len());
            let mut crcs = Vec::with_capacity(dump.chunks.len());
            let mut times = Vec::with_capacity(dump.chunks.len());
            for c in &dump.chunks {
                indexes.push(to_i64(c.chunk.index)?);
                sizes.push(
                    i32::try_from(c.chunk.size).map_err(|_| {
                        LedgerError::Database(format!("chunk size {}", c.chunk.size))
                    })?,
                );
                crcs.push(i64::from(c.chunk.crc32c));
                times.push(c.committed_at);
            }
            tx.execute(
                "INSERT INTO chunks (file_id, idx, size, crc32c, committed_at) \
                 SELECT $1, * FROM unnest($2::BIGINT[], $3::INTEGER[], $4::BIGINT[], \
                                          $5::TIMESTAMPTZ[]) \
                 ON CONFLICT DO NOTHING",
                &[&file.id, &indexes, &sizes, &crcs, &times],
            )
            .await
            .map_err(db_error)?;
        }
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
        created_at: row.get("created_at"),
        completed_at: row.get("completed_at"),
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
mod tests {
    use super::*;
    use tokio_postgres::error::SqlState;

    fn kind(code: Option<&SqlState>, closed: bool) -> String {
        let error = classify(code, closed, "m".into());
        format!("{error:?}")
            .split('(')
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    #[test]
    fn errors_say_whether_to_retry_wait_or_fix_a_bug() {
        assert_eq!(
            kind(Some(&SqlState::T_R_SERIALIZATION_FAILURE), false),
            "RetryableConflict"
        );
        assert_eq!(
            kind(Some(&SqlState::T_R_DEADLOCK_DETECTED), false),
            "RetryableConflict"
        );
        assert_eq!(kind(Some(&SqlState::UNIQUE_VIOLATION), false), "Constraint");
        assert_eq!(kind(Some(&SqlState::CHECK_VIOLATION), false), "Constraint");
        assert_eq!(
            kind(Some(&SqlState::FOREIGN_KEY_VIOLATION), false),
            "Constraint"
        );
        assert_eq!(kind(Some(&SqlState::ADMIN_SHUTDOWN), false), "Unavailable");
        assert_eq!(
            kind(Some(&SqlState::CONNECTION_FAILURE), false),
            "Unavailable"
        );
        assert_eq!(
            kind(Some(&SqlState::TOO_MANY_CONNECTIONS), false),
            "Unavailable"
        );
        assert_eq!(kind(None, true), "Unavailable");
        assert_eq!(kind(Some(&SqlState::SYNTAX_ERROR), false), "Database");
        assert_eq!(kind(None, false), "Database");
    }
}
