//! [`UploadLedger`] on PostgreSQL: upload sessions, their committed chunks and hash checkpoints, and how each ends.

use async_trait::async_trait;

use super::{
    COMMIT_CHUNKS, COMMITTED_RANGES, FILE_COLUMNS, PostgresLedger, db_error, file_from_row,
    select_open_upload,
};
use crate::ledger::columns::{to_i64, to_u64};
use crate::ledger::{
    Blake3Digest, CommittedChunk, FileRecord, FileState, HashCheckpoint, Lease, LedgerError,
    Md5Digest, NewUpload, OpenedUpload, UploadLedger,
};
use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

#[async_trait]
impl UploadLedger for PostgresLedger {
    async fn open_upload(&self, upload: &NewUpload) -> Result<OpenedUpload, LedgerError> {
        let client = self.client().await?;
        // A new session need not reach the disk before CheckUpload answers (see the
        // trait); the first synced chunk commit makes it durable. `set_config(..., true)`
        // is `SET LOCAL` inside the statement: its own transaction commits without waiting
        // for the WAL flush, in one round trip instead of four (BEGIN, SET, INSERT, COMMIT).
        let insert = format!(
            "INSERT INTO files (id, owner, name, size, md5, head_md5, chunk_size, chunk_count, state, \
                                expires_at) \
             SELECT $1, $2, $3, $4, $5, $8, $6, $7, 'uploading', $9 \
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
            let params: [&(dyn ToSql + Sync); 9] = [
                &id,
                &upload.owner,
                &upload.name,
                &size,
                &md5,
                &chunk_size,
                &chunk_count,
                &head_md5,
                &upload.expires_at,
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
        lease: Lease,
        chunks: &[CommittedChunk],
    ) -> Result<Vec<u64>, LedgerError> {
        let mut indexes = Vec::with_capacity(chunks.len());
        let mut sizes = Vec::with_capacity(chunks.len());
        let mut crcs = Vec::with_capacity(chunks.len());
        let mut receipts = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            receipts.push(chunk.receipt.as_deref());
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
        let epoch = to_i64(lease.epoch)?;
        let inserted = client
            .query(
                &statement,
                &[&id, &indexes, &sizes, &crcs, &receipts, &epoch],
            )
            .await
            .map_err(db_error)?;
        if inserted.is_empty() && !chunks.is_empty() {
            // Either every chunk was recorded before, or the file is not open to this
            // lease.
            match Self::not_writable(&client, id, Some(lease)).await? {
                LedgerError::RetryableConflict(_) => {}
                error => return Err(error),
            }
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
        lease: Lease,
        checkpoint: &HashCheckpoint,
    ) -> Result<(), LedgerError> {
        let client = self.session_client().await?;
        let epoch = to_i64(lease.epoch)?;
        let updated = client
            .execute(
                "UPDATE files SET hashed_chunks = $2, md5_state = $3 \
                 WHERE id = $1 AND state = 'uploading' AND hashed_chunks <= $2 \
                   AND lease_epoch = $4",
                &[&id, &to_i64(checkpoint.chunks)?, &checkpoint.state, &epoch],
            )
            .await
            .map_err(db_error)?;
        if updated == 0 {
            // A later checkpoint is already saved, or the upload is not open to this
            // lease.
            match Self::not_writable(&client, id, Some(lease)).await? {
                LedgerError::RetryableConflict(_) => {}
                error => return Err(error),
            }
        }
        Ok(())
    }

    async fn complete_upload(
        &self,
        id: Uuid,
        lease: Lease,
        md5: &Md5Digest,
        blake3: &Blake3Digest,
        locator: &str,
    ) -> Result<FileRecord, LedgerError> {
        let mut client = self.session_client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let epoch = to_i64(lease.epoch)?;
        let row = tx
            .query_opt(
                &format!(
                    "UPDATE files SET state = 'complete', md5 = $2, \
                                      completed_at = now(), updated_at = now() \
                     WHERE id = $1 AND state = 'uploading' AND lease_epoch = $3 \
                     RETURNING {FILE_COLUMNS}"
                ),
                &[&id, &md5.as_slice(), &epoch],
            )
            .await
            .map_err(db_error)?;
        let Some(row) = row else {
            return Err(Self::not_writable(&tx, id, Some(lease)).await?);
        };
        let size = to_i64(file_from_row(&row)?.size)?;
        tx.execute(
            "INSERT INTO contents (md5, size) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&md5.as_slice(), &size],
        )
        .await
        .map_err(db_error)?;
        // Content stored already keeps its copy: updating its row (the mark taken off)
        // locks it, so a collector forgetting it either finished before (and this
        // inserts a new row) or finds it referred to again.
        let kept: String = tx
            .query_one(
                "INSERT INTO content_blobs (blake3, size, md5, locator) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (blake3) DO UPDATE \
                 SET orphaned_at = NULL, locator = coalesce(content_blobs.locator, EXCLUDED.locator) \
                 RETURNING locator",
                &[&blake3.as_slice(), &size, &md5.as_slice(), &locator],
            )
            .await
            .map_err(db_error)?
            .try_get(0)
            .map_err(db_error)?;
        if kept != locator {
            tx.execute(
                "INSERT INTO blob_garbage (locator) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&locator],
            )
            .await
            .map_err(db_error)?;
        }
        let row = tx
            .query_one(
                &format!(
                    "UPDATE files SET content_blake3 = $2 WHERE id = $1 RETURNING {FILE_COLUMNS}"
                ),
                &[&id, &blake3.as_slice()],
            )
            .await
            .map_err(db_error)?;
        let file = file_from_row(&row)?;
        tx.commit().await.map_err(db_error)?;
        Ok(file)
    }

    async fn fail_upload(&self, id: Uuid, lease: Lease, reason: &str) -> Result<(), LedgerError> {
        self.close_upload(id, FileState::Failed, Some(reason), Some(lease))
            .await
    }

    async fn abort_upload(&self, id: Uuid) -> Result<(), LedgerError> {
        self.close_upload(id, FileState::Aborted, None, None).await
    }

    async fn keep_blob_upload(
        &self,
        id: Uuid,
        lease: Lease,
        handle: &str,
    ) -> Result<String, LedgerError> {
        let client = self.session_client().await?;
        let epoch = to_i64(lease.epoch)?;
        let kept = client
            .query_opt(
                "UPDATE files SET blob_upload = coalesce(blob_upload, $2) \
                 WHERE id = $1 AND state = 'uploading' AND lease_epoch = $3 \
                 RETURNING blob_upload",
                &[&id, &handle, &epoch],
            )
            .await
            .map_err(db_error)?;
        match kept {
            Some(row) => row.try_get(0).map_err(db_error),
            None => Err(Self::not_writable(&client, id, Some(lease)).await?),
        }
    }

    async fn part_receipts(&self, id: Uuid) -> Result<Vec<(u64, String)>, LedgerError> {
        let client = self.session_client().await?;
        let rows = client
            .query(
                "SELECT idx, receipt FROM chunks \
                 WHERE file_id = $1 AND receipt IS NOT NULL ORDER BY idx",
                &[&id],
            )
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                let index: i64 = row.try_get(0).map_err(db_error)?;
                Ok((to_u64(index)?, row.try_get(1).map_err(db_error)?))
            })
            .collect()
    }
}
