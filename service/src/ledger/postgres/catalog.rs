//! [`FileCatalog`] on PostgreSQL: files by id and by owner.

use async_trait::async_trait;

use super::{FILE_COLUMNS, PostgresLedger, db_error, file_from_row};
use crate::ledger::columns::{to_i64, to_u64};
use crate::ledger::{FileCatalog, FileRecord, LedgerError, Md5Digest, OwnerUsage};
use deadpool_postgres::GenericClient;
use uuid::Uuid;

#[async_trait]
impl FileCatalog for PostgresLedger {
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
}
