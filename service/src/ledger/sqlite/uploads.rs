//! [`UploadLedger`] on SQLite: upload sessions, their committed chunks and hash checkpoints, and how each ends.

use async_trait::async_trait;

use super::{
    FILE_COLUMNS, SqliteLedger, close_upload, db_error, not_writable_under, now_micros, raw_file,
    select_open_upload,
};
use crate::ledger::columns::{to_i64, to_u64};
use crate::ledger::{
    Blake3Digest, CommittedChunk, FileRecord, FileState, HashCheckpoint, Lease, LedgerError,
    Md5Digest, NewUpload, OpenedUpload, UploadLedger,
};
use rusqlite::{OptionalExtension, params};
use uuid::Uuid;

#[async_trait]
impl UploadLedger for SqliteLedger {
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
                                        created_at, updated_at, head_md5, expires_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'uploading', ?8, ?8, ?9, ?10) \
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
                            upload.head_md5,
                            upload.expires_at.timestamp_micros()
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
        lease: Lease,
        chunks: &[CommittedChunk],
    ) -> Result<Vec<u64>, LedgerError> {
        let chunks = chunks.to_vec();
        self.write(move |tx| {
            match not_writable_under(tx, id, Some(lease))? {
                // Open, under this lease.
                LedgerError::RetryableConflict(_) => {}
                error => return Err(error),
            }
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO chunks (file_id, idx, size, crc32c, committed_at, receipt) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
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
                        now,
                        chunk.receipt
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
        lease: Lease,
        checkpoint: &HashCheckpoint,
    ) -> Result<(), LedgerError> {
        let chunks = to_i64(checkpoint.chunks)?;
        let state = checkpoint.state.clone();
        let epoch = to_i64(lease.epoch)?;
        self.write(move |tx| {
            let updated = tx
                .execute(
                    "UPDATE files SET hashed_chunks = ?2, md5_state = ?3 \
                     WHERE id = ?1 AND state = 'uploading' AND hashed_chunks <= ?2 \
                       AND lease_epoch = ?4",
                    params![id.to_string(), chunks, state, epoch],
                )
                .map_err(db_error)?;
            if updated == 0 {
                // A later checkpoint is saved already, or the upload is not open to
                // this lease.
                match not_writable_under(tx, id, Some(lease))? {
                    LedgerError::RetryableConflict(_) => {}
                    error => return Err(error),
                }
            }
            Ok(())
        })
        .await
    }

    async fn complete_upload(
        &self,
        id: Uuid,
        lease: Lease,
        md5: &Md5Digest,
        blake3: &Blake3Digest,
        locator: &str,
    ) -> Result<FileRecord, LedgerError> {
        let (md5, blake3, locator) = (*md5, *blake3, locator.to_owned());
        let epoch = to_i64(lease.epoch)?;
        self.write(move |tx| {
            let now = now_micros();
            let updated = tx
                .prepare_cached(&format!(
                    "UPDATE files SET state = 'complete', md5 = ?3, \
                                      completed_at = ?2, updated_at = ?2 \
                     WHERE id = ?1 AND state = 'uploading' AND lease_epoch = ?4 \
                     RETURNING {FILE_COLUMNS}"
                ))
                .and_then(|mut s| {
                    s.query_row(params![id.to_string(), now, md5, epoch], raw_file)
                        .optional()
                })
                .map_err(db_error)?;
            let Some(file) = updated else {
                return Err(not_writable_under(tx, id, Some(lease))?);
            };
            let size = to_i64(FileRecord::try_from(file)?.size)?;
            tx.execute(
                "INSERT OR IGNORE INTO contents (md5, size, created_at) VALUES (?1, ?2, ?3)",
                params![md5, size, now],
            )
            .map_err(db_error)?;
            // Content stored already keeps its copy (and loses its orphaned mark).
            let kept: String = tx
                .prepare_cached(
                    "INSERT INTO content_blobs (blake3, size, md5, created_at, locator) \
                     VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT (blake3) DO UPDATE \
                     SET orphaned_at = NULL, locator = coalesce(locator, excluded.locator) \
                     RETURNING locator",
                )
                .and_then(|mut s| {
                    s.query_row(params![blake3, size, md5, now, locator], |r| r.get(0))
                })
                .map_err(db_error)?;
            if kept != locator {
                tx.execute(
                    "INSERT OR IGNORE INTO blob_garbage (locator, queued_at) VALUES (?1, ?2)",
                    params![locator, now],
                )
                .map_err(db_error)?;
            }
            let file = tx
                .prepare_cached(&format!(
                    "UPDATE files SET content_blake3 = ?2 WHERE id = ?1 RETURNING {FILE_COLUMNS}"
                ))
                .and_then(|mut s| s.query_row(params![id.to_string(), blake3], raw_file))
                .map_err(db_error)?;
            FileRecord::try_from(file)
        })
        .await
    }

    async fn fail_upload(&self, id: Uuid, lease: Lease, reason: &str) -> Result<(), LedgerError> {
        let reason = reason.to_owned();
        self.write(move |tx| close_upload(tx, id, FileState::Failed, Some(&reason), Some(lease)))
            .await
    }

    async fn abort_upload(&self, id: Uuid) -> Result<(), LedgerError> {
        self.write(move |tx| close_upload(tx, id, FileState::Aborted, None, None))
            .await
    }

    async fn keep_blob_upload(
        &self,
        id: Uuid,
        lease: Lease,
        handle: &str,
    ) -> Result<String, LedgerError> {
        let handle = handle.to_owned();
        let epoch = to_i64(lease.epoch)?;
        self.write(move |tx| {
            let kept: Option<String> = tx
                .prepare_cached(
                    "UPDATE files SET blob_upload = coalesce(blob_upload, ?2) \
                     WHERE id = ?1 AND state = 'uploading' AND lease_epoch = ?3 \
                     RETURNING blob_upload",
                )
                .and_then(|mut s| {
                    s.query_row(params![id.to_string(), handle, epoch], |r| r.get(0))
                        .optional()
                })
                .map_err(db_error)?;
            match kept {
                Some(kept) => Ok(kept),
                None => Err(not_writable_under(tx, id, Some(lease))?),
            }
        })
        .await
    }

    async fn part_receipts(&self, id: Uuid) -> Result<Vec<(u64, String)>, LedgerError> {
        self.with(move |conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT idx, receipt FROM chunks \
                     WHERE file_id = ?1 AND receipt IS NOT NULL ORDER BY idx",
                )
                .map_err(db_error)?;
            let rows = statement
                .query_map([id.to_string()], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
                })
                .map_err(db_error)?;
            rows.map(|row| {
                let (index, receipt) = row.map_err(db_error)?;
                Ok((to_u64(index)?, receipt))
            })
            .collect()
        })
        .await
    }
}
