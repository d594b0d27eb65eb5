//! [`FileCatalog`] on SQLite: files by id and by owner.

use async_trait::async_trait;

use super::{FILE_COLUMNS, OWNER_USAGE, SqliteLedger, db_error, raw_file, select_file};
use crate::ledger::columns::{to_i64, to_u64};
use crate::ledger::{FileCatalog, FileRecord, LedgerError, Md5Digest, OwnerUsage};
use rusqlite::params;
use uuid::Uuid;

#[async_trait]
impl FileCatalog for SqliteLedger {
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
}
