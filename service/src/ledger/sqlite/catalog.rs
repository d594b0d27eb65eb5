//! [`FileCatalog`] on SQLite: files by id and by owner.

use async_trait::async_trait;

use super::{FILE_COLUMNS, OWNER_USAGE, SqliteLedger, db_error, now_micros, raw_file, select_file};
use crate::ledger::columns::{to_i64, to_u64};
use crate::ledger::{
    FileCatalog, FileListing, FileRecord, FileState, LedgerError, Md5Digest, OwnerUsage,
};
use rusqlite::{OptionalExtension, Transaction, params};
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

    async fn owner_files(&self, owner: &str) -> Result<u64, LedgerError> {
        let owner = owner.to_owned();
        self.with(move |conn| {
            let files: Option<i64> = conn
                .prepare_cached("SELECT files FROM owner_files WHERE owner = ?1")
                .and_then(|mut s| s.query_row([owner], |r| r.get(0)).optional())
                .map_err(db_error)?;
            files.map_or(Ok(0), to_u64)
        })
        .await
    }

    async fn owner_usage(&self, owner: &str) -> Result<OwnerUsage, LedgerError> {
        let owner = owner.to_owned();
        self.with(move |conn| {
            let (open, bytes, files): (i64, i64, i64) = conn
                .prepare_cached(OWNER_USAGE)
                .and_then(|mut s| s.query_row([owner], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))))
                .map_err(db_error)?;
            Ok(OwnerUsage {
                open_uploads: to_u64(open)?,
                bytes: to_u64(bytes)?,
                files: to_u64(files)?,
            })
        })
        .await
    }

    async fn list_files(
        &self,
        owner: &str,
        listing: &FileListing,
    ) -> Result<Vec<FileRecord>, LedgerError> {
        let owner = owner.to_owned();
        let state = listing.state.map(FileState::as_str);
        let prefix = listing.name_prefix.clone();
        let after = listing
            .after
            .map(|a| (a.created_at.timestamp_micros(), a.id.to_string()));
        let (after_time, after_id) = after.unzip();
        let limit = i64::try_from(listing.limit).unwrap_or(i64::MAX);
        self.with(move |conn| {
            let mut statement = conn
                .prepare_cached(&format!(
                    "SELECT {FILE_COLUMNS} FROM files \
                     WHERE owner = ?1 AND (?2 IS NULL OR state = ?2) \
                       AND substr(name, 1, length(?3)) = ?3 \
                       AND (?4 IS NULL OR (created_at, id) < (?4, ?5)) \
                     ORDER BY created_at DESC, id DESC LIMIT ?6"
                ))
                .map_err(db_error)?;
            let rows = statement
                .query_map(
                    params![owner, state, prefix, after_time, after_id, limit],
                    raw_file,
                )
                .map_err(db_error)?;
            rows.map(|row| FileRecord::try_from(row.map_err(db_error)?))
                .collect()
        })
        .await
    }

    async fn delete_file(&self, owner: &str, id: Uuid) -> Result<Option<FileRecord>, LedgerError> {
        let owner = owner.to_owned();
        self.write(move |tx| {
            let deleted = tx
                .prepare_cached(&format!(
                    "DELETE FROM files WHERE id = ?1 AND owner = ?2 AND state <> 'uploading' \
                     RETURNING {FILE_COLUMNS}"
                ))
                .and_then(|mut s| {
                    s.query_row(params![id.to_string(), owner], raw_file)
                        .optional()
                })
                .map_err(db_error)?;
            let Some(file) = deleted else {
                return match select_file(tx, id)? {
                    Some(file) if file.owner == owner && file.state == FileState::Uploading => {
                        Err(LedgerError::StillUploading(id))
                    }
                    _ => Ok(None),
                };
            };
            let file = FileRecord::try_from(file)?;
            if file.state == FileState::Complete {
                mark_if_orphaned(tx, &file)?;
            }
            Ok(Some(file))
        })
        .await
    }
}

/// Marks the content of a deleted file orphaned if no other file refers to it (writes
/// are serialized: no other file can be made or deleted meanwhile).
fn mark_if_orphaned(tx: &Transaction<'_>, file: &FileRecord) -> Result<(), LedgerError> {
    let now = now_micros();
    match (&file.content_blake3, &file.md5) {
        (Some(blake3), _) => tx.execute(
            "UPDATE content_blobs SET orphaned_at = ?2 WHERE blake3 = ?1 \
               AND NOT EXISTS (SELECT 1 FROM files WHERE content_blake3 = ?1)",
            params![blake3, now],
        ),
        // Completed before BLAKE3 named content: referred to by MD5 and size.
        (None, Some(md5)) => tx.execute(
            "UPDATE contents SET orphaned_at = ?3 \
             WHERE md5 = ?1 AND size = ?2 AND locator IS NOT NULL \
               AND NOT EXISTS (SELECT 1 FROM files WHERE md5 = ?1 AND size = ?2 \
                               AND content_blake3 IS NULL AND state = 'complete')",
            params![md5, to_i64(file.size)?, now],
        ),
        (None, None) => Ok(0),
    }
    .map_err(db_error)?;
    Ok(())
}
