//! [`UploadExpiry`] on SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use uuid::Uuid;

use super::{FILE_COLUMNS, SqliteLedger, db_error, not_open, now_micros, raw_file, time};
use crate::ledger::{FileRecord, LedgerError, UploadExpiry};

#[async_trait]
impl UploadExpiry for SqliteLedger {
    async fn extend_upload(
        &self,
        id: Uuid,
        until: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, LedgerError> {
        let until = until.timestamp_micros();
        self.write(move |tx| {
            let kept: Option<i64> = tx
                .prepare_cached(
                    "UPDATE files SET expires_at = max(coalesce(expires_at, ?2), ?2) \
                     WHERE id = ?1 AND state = 'uploading' RETURNING expires_at",
                )
                .and_then(|mut s| {
                    s.query_row(params![id.to_string(), until], |r| r.get(0))
                        .optional()
                })
                .map_err(db_error)?;
            match kept {
                Some(kept) => time(kept),
                None => Err(not_open(tx, id)?),
            }
        })
        .await
    }

    async fn expired_uploads(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<FileRecord>, LedgerError> {
        let (now, limit) = (
            now.timestamp_micros(),
            i64::try_from(limit).unwrap_or(i64::MAX),
        );
        self.with(move |conn| {
            let mut statement = conn
                .prepare_cached(&format!(
                    "SELECT {FILE_COLUMNS} FROM files \
                     WHERE state = 'uploading' AND expires_at <= ?1 \
                     ORDER BY expires_at LIMIT ?2"
                ))
                .map_err(db_error)?;
            let rows = statement
                .query_map(params![now, limit], raw_file)
                .map_err(db_error)?;
            rows.map(|row| FileRecord::try_from(row.map_err(db_error)?))
                .collect()
        })
        .await
    }

    async fn expire_upload(&self, id: Uuid, now: DateTime<Utc>) -> Result<bool, LedgerError> {
        let now = now.timestamp_micros();
        self.write(move |tx| {
            let expired = tx
                .execute(
                    "UPDATE files SET state = 'expired', updated_at = ?3 \
                     WHERE id = ?1 AND state = 'uploading' AND expires_at <= ?2",
                    params![id.to_string(), now, now_micros()],
                )
                .map_err(db_error)?;
            if expired == 0 {
                return Ok(false);
            }
            tx.execute("DELETE FROM chunks WHERE file_id = ?1", [id.to_string()])
                .map_err(db_error)?;
            Ok(true)
        })
        .await
    }
}
