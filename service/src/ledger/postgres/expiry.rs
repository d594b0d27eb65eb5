//! [`UploadExpiry`] on PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{FILE_COLUMNS, PostgresLedger, db_error, file_from_row};
use crate::ledger::{FileRecord, LedgerError, UploadExpiry};
use deadpool_postgres::GenericClient;

#[async_trait]
impl UploadExpiry for PostgresLedger {
    async fn extend_upload(
        &self,
        id: Uuid,
        until: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, LedgerError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "UPDATE files SET expires_at = greatest(expires_at, $2) \
                 WHERE id = $1 AND state = 'uploading' RETURNING expires_at",
                &[&id, &until],
            )
            .await
            .map_err(db_error)?;
        match row {
            Some(row) => row.try_get(0).map_err(db_error),
            None => Err(Self::not_open(&client, id).await?),
        }
    }

    async fn expired_uploads(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<FileRecord>, LedgerError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {FILE_COLUMNS} FROM files \
                     WHERE state = 'uploading' AND expires_at <= $1 \
                     ORDER BY expires_at LIMIT $2"
                ),
                &[&now, &i64::try_from(limit).unwrap_or(i64::MAX)],
            )
            .await
            .map_err(db_error)?;
        rows.iter().map(file_from_row).collect()
    }

    async fn expire_upload(&self, id: Uuid, now: DateTime<Utc>) -> Result<bool, LedgerError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let expired = tx
            .execute(
                "UPDATE files SET state = 'expired', updated_at = now() \
                 WHERE id = $1 AND state = 'uploading' AND expires_at <= $2",
                &[&id, &now],
            )
            .await
            .map_err(db_error)?;
        if expired == 0 {
            return Ok(false);
        }
        tx.execute("DELETE FROM chunks WHERE file_id = $1", &[&id])
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }
}
