//! [`LedgerExport`] on SQLite: every record out, page by page, and back in.

use async_trait::async_trait;

use super::{FILE_COLUMN_COUNT, FILE_COLUMNS, SqliteLedger, db_error, raw_file, time};
use crate::ledger::columns::{to_i64, to_u64};
use crate::ledger::{
    ChunkDump, CommittedChunk, ContentDump, FileDump, FileRecord, HashCheckpoint, LedgerError,
    LedgerExport, Md5Digest,
};
use rusqlite::params;
use uuid::Uuid;

#[async_trait]
impl LedgerExport for SqliteLedger {
    async fn dump_files(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<FileDump>, LedgerError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(move |conn| {
            let after = after.map(|id| id.to_string());
            let mut statement = conn
                .prepare_cached(&format!(
                    "SELECT {FILE_COLUMNS}, updated_at, hashed_chunks, md5_state, \
                         (SELECT locator FROM content_blobs WHERE blake3 = files.content_blake3) \
                     FROM files \
                     WHERE ?1 IS NULL OR id > ?1 ORDER BY id LIMIT ?2"
                ))
                .map_err(db_error)?;
            let rows = statement
                .query_map(params![after, limit], |row| {
                    Ok((
                        raw_file(row)?,
                        row.get::<_, i64>(FILE_COLUMN_COUNT)?,
                        row.get::<_, i64>(FILE_COLUMN_COUNT + 1)?,
                        row.get::<_, Option<Vec<u8>>>(FILE_COLUMN_COUNT + 2)?,
                        row.get::<_, Option<String>>(FILE_COLUMN_COUNT + 3)?,
                    ))
                })
                .map_err(db_error)?;
            let mut files = Vec::new();
            for row in rows {
                let (raw, updated_at, hashed, state, content_locator) = row.map_err(db_error)?;
                files.push(FileDump {
                    file: FileRecord::try_from(raw)?,
                    content_locator,
                    updated_at: time(updated_at)?,
                    chunks: Vec::new(),
                    checkpoint: state
                        .map(|state| {
                            Ok::<_, LedgerError>(HashCheckpoint {
                                chunks: to_u64(hashed)?,
                                state,
                            })
                        })
                        .transpose()?,
                });
            }
            let mut chunks = conn
                .prepare_cached(
                    "SELECT idx, size, crc32c, committed_at, receipt FROM chunks \
                     WHERE file_id = ?1 ORDER BY idx",
                )
                .map_err(db_error)?;
            for dump in &mut files {
                let rows = chunks
                    .query_map([dump.file.id.to_string()], |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            row.get::<_, u32>(1)?,
                            row.get::<_, u32>(2)?,
                            row.get::<_, i64>(3)?,
                            row.get::<_, Option<String>>(4)?,
                        ))
                    })
                    .map_err(db_error)?;
                for row in rows {
                    let (index, size, crc32c, committed_at, receipt) = row.map_err(db_error)?;
                    dump.chunks.push(ChunkDump {
                        chunk: CommittedChunk {
                            index: to_u64(index)?,
                            size,
                            crc32c,
                            receipt,
                        },
                        committed_at: time(committed_at)?,
                    });
                }
            }
            Ok(files)
        })
        .await
    }

    async fn dump_contents(
        &self,
        after: Option<(Md5Digest, u64)>,
        limit: usize,
    ) -> Result<Vec<ContentDump>, LedgerError> {
        let (md5, size) = match after {
            Some((md5, size)) => (Some(md5.to_vec()), Some(to_i64(size)?)),
            None => (None, None),
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(move |conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT md5, size, created_at, locator FROM contents \
                     WHERE ?1 IS NULL OR md5 > ?1 OR (md5 = ?1 AND size > ?2) \
                     ORDER BY md5, size LIMIT ?3",
                )
                .map_err(db_error)?;
            let rows = statement
                .query_map(params![md5, size, limit], |row| {
                    Ok((
                        row.get::<_, Vec<u8>>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, i64>(2)?,
                        row.get::<_, Option<String>>(3)?,
                    ))
                })
                .map_err(db_error)?;
            rows.map(|row| {
                let (md5, size, created_at, locator) = row.map_err(db_error)?;
                Ok(ContentDump {
                    md5: Md5Digest::try_from(md5.as_slice())
                        .map_err(|_| LedgerError::Corrupt("a content MD5".into()))?,
                    size: to_u64(size)?,
                    created_at: time(created_at)?,
                    locator,
                })
            })
            .collect()
        })
        .await
    }

    async fn restore(
        &self,
        files: &[FileDump],
        contents: &[ContentDump],
    ) -> Result<(), LedgerError> {
        let (files, contents) = (files.to_vec(), contents.to_vec());
        self.write(move |tx| {
            let mut insert_content = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO contents (md5, size, created_at, locator) \
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(db_error)?;
            for c in &contents {
                insert_content
                    .execute(params![
                        c.md5,
                        to_i64(c.size)?,
                        c.created_at.timestamp_micros(),
                        c.locator
                    ])
                    .map_err(db_error)?;
            }
            let mut insert_file = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO files (id, owner, name, size, md5, chunk_size, \
                         chunk_count, state, failure, created_at, updated_at, completed_at, \
                         hashed_chunks, md5_state, head_md5, content_blake3, blob_upload, \
                         expires_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
                             ?17, ?18)",
                )
                .map_err(db_error)?;
            let mut insert_chunk = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO chunks (file_id, idx, size, crc32c, committed_at, receipt) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(db_error)?;
            for dump in &files {
                let file = &dump.file;
                let id = file.id.to_string();
                let (hashed, state) = match &dump.checkpoint {
                    Some(c) => (to_i64(c.chunks)?, Some(c.state.clone())),
                    None => (0, None),
                };
                // The BLAKE3 index of content follows from the complete files (before the file,
                // which refers to it).
                if let (Some(blake3), Some(md5), Some(at)) =
                    (file.content_blake3, file.md5, file.completed_at)
                {
                    tx.execute(
                        "INSERT OR IGNORE INTO content_blobs (blake3, size, md5, created_at, locator) \
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![
                            blake3,
                            to_i64(file.size)?,
                            md5,
                            at.timestamp_micros(),
                            dump.content_locator
                        ],
                    )
                    .map_err(db_error)?;
                }
                insert_file
                    .execute(params![
                        id,
                        file.owner,
                        file.name,
                        to_i64(file.size)?,
                        file.md5,
                        file.chunk_size,
                        to_i64(file.chunk_count)?,
                        file.state.as_str(),
                        file.failure,
                        file.created_at.timestamp_micros(),
                        dump.updated_at.timestamp_micros(),
                        file.completed_at.map(|t| t.timestamp_micros()),
                        hashed,
                        state,
                        file.head_md5,
                        file.content_blake3,
                        file.blob_upload,
                        file.expires_at.map(|t| t.timestamp_micros()),
                    ])
                    .map_err(db_error)?;
                for c in &dump.chunks {
                    insert_chunk
                        .execute(params![
                            id,
                            to_i64(c.chunk.index)?,
                            c.chunk.size,
                            c.chunk.crc32c,
                            c.committed_at.timestamp_micros(),
                            c.chunk.receipt
                        ])
                        .map_err(db_error)?;
                }
            }
            Ok(())
        })
        .await
    }
}
