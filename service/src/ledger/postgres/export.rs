//! [`LedgerExport`] on PostgreSQL: every record out, page by page, and back in.

use async_trait::async_trait;

use super::{FILE_COLUMNS, PostgresLedger, db_error, file_from_row};
use crate::ledger::columns::{to_i64, to_u64};
use crate::ledger::{
    ChunkDump, CommittedChunk, ContentDump, FileDump, HashCheckpoint, LedgerError, LedgerExport,
    Md5Digest,
};
use deadpool_postgres::GenericClient;
use uuid::Uuid;

#[async_trait]
impl LedgerExport for PostgresLedger {
    async fn dump_files(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<FileDump>, LedgerError> {
        let client = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                &format!(
                    "SELECT {FILE_COLUMNS}, updated_at, hashed_chunks, md5_state, \
                         (SELECT locator FROM content_blobs \
                          WHERE blake3 = files.content_blake3) AS content_locator \
                     FROM files \
                     WHERE $1::UUID IS NULL OR id > $1 ORDER BY id LIMIT $2"
                ),
                &[&after, &limit],
            )
            .await
            .map_err(db_error)?;
        let mut files = Vec::with_capacity(rows.len());
        for row in &rows {
            let state: Option<Vec<u8>> = row.get("md5_state");
            files.push(FileDump {
                file: file_from_row(row)?,
                content_locator: row.get("content_locator"),
                updated_at: row.get("updated_at"),
                chunks: Vec::new(),
                checkpoint: state
                    .map(|state| {
                        Ok::<_, LedgerError>(HashCheckpoint {
                            chunks: to_u64(row.get("hashed_chunks"))?,
                            state,
                        })
                    })
                    .transpose()?,
            });
        }
        let ids: Vec<Uuid> = files.iter().map(|f| f.file.id).collect();
        let chunk_rows = client
            .query(
                "SELECT file_id, idx, size, crc32c, committed_at, receipt FROM chunks \
                 WHERE file_id = ANY($1) ORDER BY file_id, idx",
                &[&ids],
            )
            .await
            .map_err(db_error)?;
        for row in &chunk_rows {
            let id: Uuid = row.get(0);
            let size: i32 = row.get(2);
            let crc: i64 = row.get(3);
            let chunk = ChunkDump {
                chunk: CommittedChunk {
                    index: to_u64(row.get(1))?,
                    size: u32::try_from(size)
                        .map_err(|_| LedgerError::Corrupt(format!("chunk size {size}")))?,
                    crc32c: u32::try_from(crc)
                        .map_err(|_| LedgerError::Corrupt(format!("CRC32C {crc}")))?,
                    receipt: row.get(5),
                },
                committed_at: row.get(4),
            };
            if let Some(file) = files.iter_mut().find(|f| f.file.id == id) {
                file.chunks.push(chunk);
            }
        }
        Ok(files)
    }

    async fn dump_contents(
        &self,
        after: Option<(Md5Digest, u64)>,
        limit: usize,
    ) -> Result<Vec<ContentDump>, LedgerError> {
        let client = self.client().await?;
        let (md5, size) = match after {
            Some((md5, size)) => (Some(md5.to_vec()), Some(to_i64(size)?)),
            None => (None, None),
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT md5, size, created_at, locator FROM contents \
                 WHERE $1::BYTEA IS NULL OR (md5, size) > ($1, $2::BIGINT) \
                 ORDER BY md5, size LIMIT $3",
                &[&md5, &size, &limit],
            )
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                let md5: &[u8] = row.get(0);
                Ok(ContentDump {
                    md5: Md5Digest::try_from(md5)
                        .map_err(|_| LedgerError::Corrupt("a content MD5".into()))?,
                    size: to_u64(row.get(1))?,
                    created_at: row.get(2),
                    locator: row.get(3),
                })
            })
            .collect()
    }

    async fn restore(
        &self,
        files: &[FileDump],
        contents: &[ContentDump],
    ) -> Result<(), LedgerError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        for content in contents {
            tx.execute(
                "INSERT INTO contents (md5, size, created_at, locator) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING",
                &[
                    &content.md5.as_slice(),
                    &to_i64(content.size)?,
                    &content.created_at,
                    &content.locator,
                ],
            )
            .await
            .map_err(db_error)?;
        }
        for dump in files {
            let file = &dump.file;
            let chunk_size = i32::try_from(file.chunk_size)
                .map_err(|_| LedgerError::Database(format!("chunk size {}", file.chunk_size)))?;
            let (hashed, state) = match &dump.checkpoint {
                Some(c) => (to_i64(c.chunks)?, Some(c.state.as_slice())),
                None => (0, None),
            };
            // The BLAKE3 index of content follows from the complete files (before the file,
            // which refers to it).
            if let (Some(blake3), Some(md5), Some(at)) =
                (file.content_blake3, file.md5, file.completed_at)
            {
                tx.execute(
                    "INSERT INTO content_blobs (blake3, size, md5, created_at, locator) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    &[
                        &blake3.as_slice(),
                        &to_i64(file.size)?,
                        &md5.as_slice(),
                        &at,
                        &dump.content_locator,
                    ],
                )
                .await
                .map_err(db_error)?;
            }
            tx.execute(
                "INSERT INTO files (id, owner, name, size, md5, chunk_size, chunk_count, state, \
                                    failure, created_at, updated_at, completed_at, hashed_chunks, \
                                    md5_state, head_md5, content_blake3, blob_upload, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
                         $17, $18) \
                 ON CONFLICT DO NOTHING",
                &[
                    &file.id,
                    &file.owner,
                    &file.name,
                    &to_i64(file.size)?,
                    &file.md5.as_ref().map(|m| m.as_slice()),
                    &chunk_size,
                    &to_i64(file.chunk_count)?,
                    &file.state.as_str(),
                    &file.failure,
                    &file.created_at,
                    &dump.updated_at,
                    &file.completed_at,
                    &hashed,
                    &state,
                    &file.head_md5.as_ref().map(|h| h.as_slice()),
                    &file.content_blake3.as_ref().map(|b| b.as_slice()),
                    &file.blob_upload,
                    &file.expires_at,
                ],
            )
            .await
            .map_err(db_error)?;
            let mut indexes = Vec::with_capacity(dump.chunks.len());
            let mut sizes = Vec::with_capacity(dump.chunks.len());
            let mut crcs = Vec::with_capacity(dump.chunks.len());
            let mut times = Vec::with_capacity(dump.chunks.len());
            let mut receipts = Vec::with_capacity(dump.chunks.len());
            for c in &dump.chunks {
                receipts.push(c.chunk.receipt.as_deref());
                indexes.push(to_i64(c.chunk.index)?);
                sizes.push(
                    i32::try_from(c.chunk.size).map_err(|_| {
                        LedgerError::Database(format!("chunk size {}", c.chunk.size))
                    })?,
                );
                crcs.push(i64::from(c.chunk.crc32c));
                times.push(c.committed_at);
            }
            tx.execute(
                "INSERT INTO chunks (file_id, idx, size, crc32c, committed_at, receipt) \
                 SELECT $1, * FROM unnest($2::BIGINT[], $3::INTEGER[], $4::BIGINT[], \
                                          $5::TIMESTAMPTZ[], $6::TEXT[]) \
                 ON CONFLICT DO NOTHING",
                &[&file.id, &indexes, &sizes, &crcs, &times, &receipts],
            )
            .await
            .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)
    }
}
