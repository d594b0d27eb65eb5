//! [`ContentIndex`] on PostgreSQL: which content is stored and which owner has it as a file.

use async_trait::async_trait;

use super::{FILE_COLUMNS, PostgresLedger, db_error, file_from_row};
use crate::ledger::columns::to_i64;
use crate::ledger::{Blake3Digest, ContentIndex, FileRecord, LedgerError, Md5Digest};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use uuid::Uuid;

#[async_trait]
impl ContentIndex for PostgresLedger {
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
            .map_err(db_error);
        found_unless_collected(row)
    }

    async fn stored_content(
        &self,
        blake3: &Blake3Digest,
        size: u64,
        md5: &Md5Digest,
    ) -> Result<Option<String>, LedgerError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT locator FROM content_blobs WHERE blake3 = $1 AND size = $2 AND md5 = $3",
            )
            .await
            .map_err(db_error)?;
        let row = client
            .query_opt(
                &statement,
                &[&blake3.as_slice(), &to_i64(size)?, &md5.as_slice()],
            )
            .await
            .map_err(db_error)?;
        locator_in(row)
    }

    async fn content_locator(&self, file: &FileRecord) -> Result<Option<String>, LedgerError> {
        let client = self.client().await?;
        let row = match (&file.content_blake3, &file.md5) {
            (Some(blake3), _) => client
                .query_opt(
                    "SELECT locator FROM content_blobs WHERE blake3 = $1",
                    &[&blake3.as_slice()],
                )
                .await
                .map_err(db_error)?,
            (None, Some(md5)) => client
                .query_opt(
                    "SELECT locator FROM contents WHERE md5 = $1 AND size = $2",
                    &[&md5.as_slice(), &to_i64(file.size)?],
                )
                .await
                .map_err(db_error)?,
            (None, None) => None,
        };
        locator_in(row)
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
            .map_err(db_error);
        found_unless_collected(row)
    }
}

/// The file an instant upload made, or `None` when the content it named was collected
/// meanwhile (the new file's foreign key found no content): as if it were not stored.
fn found_unless_collected(
    row: Result<Option<Row>, LedgerError>,
) -> Result<Option<FileRecord>, LedgerError> {
    match row {
        Ok(row) => row.as_ref().map(file_from_row).transpose(),
        Err(LedgerError::ReferenceGone(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The locator a `SELECT locator ...` row holds, if there is a row and it has one.
fn locator_in(row: Option<Row>) -> Result<Option<String>, LedgerError> {
    Ok(row
        .map(|row| row.try_get::<_, Option<String>>(0))
        .transpose()
        .map_err(db_error)?
        .flatten())
}
