//! [`FileCatalog`] on PostgreSQL: files by id and by owner.

use async_trait::async_trait;

use super::{FILE_COLUMNS, PostgresLedger, db_error, file_from_row};
use crate::ledger::columns::{to_i64, to_u64};
use crate::ledger::{
    FileCatalog, FileListing, FileRecord, FileState, LedgerError, Md5Digest, OwnerUsage,
};
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

    async fn owner_files(&self, owner: &str) -> Result<u64, LedgerError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT files FROM owner_files WHERE owner = $1")
            .await
            .map_err(db_error)?;
        let row = client
            .query_opt(&statement, &[&owner])
            .await
            .map_err(db_error)?;
        row.map_or(Ok(0), |row| to_u64(row.get(0)))
    }

    async fn owner_usage(&self, owner: &str) -> Result<OwnerUsage, LedgerError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT count(*) FILTER (WHERE state = 'uploading'), \
                        coalesce(sum(size), 0)::BIGINT, \
                        coalesce((SELECT files FROM owner_files WHERE owner = $1), 0) FROM files \
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
            files: to_u64(row.get(2))?,
        })
    }

    async fn list_files(
        &self,
        owner: &str,
        listing: &FileListing,
    ) -> Result<Vec<FileRecord>, LedgerError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {FILE_COLUMNS} FROM files \
                 WHERE owner = $1 AND ($2::TEXT IS NULL OR state = $2) AND starts_with(name, $3) \
                   AND ($4::TIMESTAMPTZ IS NULL OR (created_at, id) < ($4, $5::UUID)) \
                 ORDER BY created_at DESC, id DESC LIMIT $6"
            ))
            .await
            .map_err(db_error)?;
        let rows = client
            .query(
                &statement,
                &[
                    &owner,
                    &listing.state.map(FileState::as_str),
                    &listing.name_prefix,
                    &listing.after.map(|a| a.created_at),
                    &listing.after.map(|a| a.id),
                    &i64::try_from(listing.limit).unwrap_or(i64::MAX),
                ],
            )
            .await
            .map_err(db_error)?;
        rows.iter().map(file_from_row).collect()
    }

    async fn delete_file(&self, owner: &str, id: Uuid) -> Result<Option<FileRecord>, LedgerError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let found = tx
            .query_opt(
                &format!("SELECT {FILE_COLUMNS} FROM files WHERE id = $1 AND owner = $2"),
                &[&id, &owner],
            )
            .await
            .map_err(db_error)?;
        let Some(found) = found.as_ref().map(file_from_row).transpose()? else {
            return Ok(None);
        };
        if found.state == FileState::Uploading {
            return Err(LedgerError::StillUploading(id));
        }
        // The content row is locked before the file goes, in the order an instant copy
        // takes its locks (the content it refers to, then the owner's count): taken the
        // other way round, the two would wait for each other.
        let locked = found.state == FileState::Complete;
        if locked {
            lock_content(&tx, &found).await?;
        }
        let deleted = tx
            .query_opt(
                &format!(
                    "DELETE FROM files WHERE id = $1 AND owner = $2 AND state <> 'uploading' \
                     RETURNING {FILE_COLUMNS}"
                ),
                &[&id, &owner],
            )
            .await
            .map_err(db_error)?;
        // Gone meanwhile (another delete).
        let Some(row) = deleted else {
            return Ok(None);
        };
        let file = file_from_row(&row)?;
        if file.state == FileState::Complete {
            if !locked {
                lock_content(&tx, &file).await?;
            }
            mark_if_orphaned(&tx, &file).await?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(Some(file))
    }
}

/// Locks the content row a complete file refers to, so that of two files of one
/// content deleted at once, the second sees the first gone when it checks (each
/// statement of a read-committed transaction sees what committed before it began).
async fn lock_content(
    tx: &deadpool_postgres::Transaction<'_>,
    file: &FileRecord,
) -> Result<(), LedgerError> {
    match (&file.content_blake3, &file.md5) {
        (Some(blake3), _) => {
            tx.execute(
                "SELECT 1 FROM content_blobs WHERE blake3 = $1 FOR UPDATE",
                &[&blake3.as_slice()],
            )
            .await
            .map_err(db_error)?;
        }
        (None, Some(md5)) => {
            tx.execute(
                "SELECT 1 FROM contents WHERE md5 = $1 AND size = $2 FOR UPDATE",
                &[&md5.as_slice(), &to_i64(file.size)?],
            )
            .await
            .map_err(db_error)?;
        }
        (None, None) => {}
    }
    Ok(())
}

/// Marks the content of a deleted file orphaned if no other file refers to it (its
/// row locked by [`lock_content`]).
async fn mark_if_orphaned(
    tx: &deadpool_postgres::Transaction<'_>,
    file: &FileRecord,
) -> Result<(), LedgerError> {
    match (&file.content_blake3, &file.md5) {
        (Some(blake3), _) => {
            tx.execute(
                "UPDATE content_blobs SET orphaned_at = now() WHERE blake3 = $1 \
                   AND NOT EXISTS (SELECT 1 FROM files WHERE content_blake3 = $1)",
                &[&blake3.as_slice()],
            )
            .await
            .map_err(db_error)?;
        }
        // Completed before BLAKE3 named content: referred to by MD5 and size.
        (None, Some(md5)) => {
            let size = to_i64(file.size)?;
            tx.execute(
                "UPDATE contents SET orphaned_at = now() \
                 WHERE md5 = $1 AND size = $2 AND locator IS NOT NULL \
                   AND NOT EXISTS (SELECT 1 FROM files WHERE md5 = $1 AND size = $2 \
                                   AND content_blake3 IS NULL AND state = 'complete')",
                &[&md5.as_slice(), &size],
            )
            .await
            .map_err(db_error)?;
        }
        (None, None) => {}
    }
    Ok(())
}
