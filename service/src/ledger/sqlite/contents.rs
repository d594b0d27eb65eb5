//! [`ContentIndex`] on SQLite: which content is stored and which owner has it as a file.

use async_trait::async_trait;

use super::{FILE_COLUMNS, SqliteLedger, db_error, now_micros, raw_file};
use crate::ledger::columns::to_i64;
use crate::ledger::{Blake3Digest, ContentIndex, FileRecord, LedgerError, Md5Digest};
use rusqlite::{OptionalExtension, params};
use uuid::Uuid;

#[async_trait]
impl ContentIndex for SqliteLedger {
    async fn add_file_for_owned_content(
        &self,
        owner: &str,
        name: &str,
        md5: &Md5Digest,
        size: u64,
        head_md5: Option<&Md5Digest>,
    ) -> Result<Option<FileRecord>, LedgerError> {
        let (owner, name, md5, size) = (owner.to_owned(), name.to_owned(), *md5, to_i64(size)?);
        let head_md5 = head_md5.copied();
        self.write(move |tx| {
            let existing = tx
                .prepare_cached(&format!(
                    "SELECT {FILE_COLUMNS} FROM files \
                     WHERE owner = ?1 AND name = ?2 AND md5 = ?3 AND size = ?4 AND state = 'complete' \
                     ORDER BY created_at LIMIT 1"
                ))
                .and_then(|mut s| s.query_row(params![owner, name, md5, size], raw_file).optional())
                .map_err(db_error)?;
            if let Some(file) = existing {
                return FileRecord::try_from(file).map(Some);
            }
            // The owner's content with this MD5: the BLAKE3 of its oldest such file.
            let owned: Option<Option<Vec<u8>>> = tx
                .prepare_cached(
                    "SELECT content_blake3 FROM files \
                     WHERE owner = ?1 AND md5 = ?2 AND size = ?3 AND state = 'complete' \
                     ORDER BY created_at LIMIT 1",
                )
                .and_then(|mut s| s.query_row(params![owner, md5, size], |r| r.get(0)).optional())
                .map_err(db_error)?;
            let Some(content_blake3) = owned else {
                return Ok(None);
            };
            let now = now_micros();
            let file = tx
                .prepare_cached(&format!(
                    "INSERT INTO files (id, owner, name, size, md5, chunk_size, chunk_count, state, \
                                        created_at, updated_at, completed_at, head_md5, content_blake3) \
                     VALUES (?1, ?2, ?3, ?4, ?5, 0, 0, 'complete', ?6, ?6, ?6, ?7, ?8) \
                     RETURNING {FILE_COLUMNS}"
                ))
                .and_then(|mut s| {
                    s.query_row(
                        params![
                            Uuid::new_v4().to_string(),
                            owner,
                            name,
                            size,
                            md5,
                            now,
                            head_md5,
                            content_blake3
                        ],
                        raw_file,
                    )
                })
                .map_err(db_error)?;
            FileRecord::try_from(file).map(Some)
        })
        .await
    }

    async fn stored_content(
        &self,
        blake3: &Blake3Digest,
        size: u64,
        md5: &Md5Digest,
    ) -> Result<Option<String>, LedgerError> {
        let (blake3, size, md5) = (*blake3, to_i64(size)?, *md5);
        self.with(move |conn| {
            conn.prepare_cached(
                "SELECT locator FROM content_blobs WHERE blake3 = ?1 AND size = ?2 AND md5 = ?3",
            )
            .and_then(|mut s| {
                s.query_row(params![blake3, size, md5], |r| {
                    r.get::<_, Option<String>>(0)
                })
                .optional()
            })
            .map(Option::flatten)
            .map_err(db_error)
        })
        .await
    }

    async fn content_locator(&self, file: &FileRecord) -> Result<Option<String>, LedgerError> {
        let (blake3, md5, size) = (file.content_blake3, file.md5, to_i64(file.size)?);
        self.with(move |conn| {
            let found = match (blake3, md5) {
                (Some(blake3), _) => conn
                    .prepare_cached("SELECT locator FROM content_blobs WHERE blake3 = ?1")
                    .and_then(|mut s| {
                        s.query_row(params![blake3], |r| r.get::<_, Option<String>>(0))
                            .optional()
                    }),
                (None, Some(md5)) => conn
                    .prepare_cached("SELECT locator FROM contents WHERE md5 = ?1 AND size = ?2")
                    .and_then(|mut s| {
                        s.query_row(params![md5, size], |r| r.get::<_, Option<String>>(0))
                            .optional()
                    }),
                (None, None) => Ok(None),
            };
            found.map(Option::flatten).map_err(db_error)
        })
        .await
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
        let (owner, name) = (owner.to_owned(), name.to_owned());
        let (blake3, size, md5, head_md5) = (*blake3, to_i64(size)?, *md5, head_md5.copied());
        self.write(move |tx| {
            let existing = tx
                .prepare_cached(&format!(
                    "SELECT {FILE_COLUMNS} FROM files \
                     WHERE owner = ?1 AND name = ?2 AND content_blake3 = ?3 AND size = ?4 AND state = 'complete' \
                     ORDER BY created_at LIMIT 1"
                ))
                .and_then(|mut s| s.query_row(params![owner, name, blake3, size], raw_file).optional())
                .map_err(db_error)?;
            if let Some(file) = existing {
                return FileRecord::try_from(file).map(Some);
            }
            let now = now_micros();
            let inserted = tx
                .prepare_cached(&format!(
                    "INSERT INTO files (id, owner, name, size, md5, chunk_size, chunk_count, state, \
                                        created_at, updated_at, completed_at, head_md5, content_blake3) \
                     SELECT ?1, ?2, ?3, size, md5, 0, 0, 'complete', ?4, ?4, ?4, ?5, blake3 \
                     FROM content_blobs WHERE blake3 = ?6 AND size = ?7 AND md5 = ?8 \
                     RETURNING {FILE_COLUMNS}"
                ))
                .and_then(|mut s| {
                    s.query_row(
                        params![Uuid::new_v4().to_string(), owner, name, now, head_md5, blake3, size, md5],
                        raw_file,
                    )
                    .optional()
                })
                .map_err(db_error)?;
            inserted.map(FileRecord::try_from).transpose()
        })
        .await
    }
}
