//! [`ContentGarbage`] on SQLite: orphaned content collected, blobs queued for deletion.

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::params;

use super::{SqliteLedger, db_error, now_micros};
use crate::ledger::{ContentGarbage, LedgerError};

#[async_trait]
impl ContentGarbage for SqliteLedger {
    async fn collect_orphans(&self, grace: Duration, limit: usize) -> Result<u64, LedgerError> {
        let grace = i64::try_from(grace.as_micros()).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // One write transaction: writes are serialized, so no file can be made for
        // content between the check that none refers to it and its forgetting.
        self.write(move |tx| {
            let now = now_micros();
            let cutoff = now.saturating_sub(grace);
            let mut collected = 0;
            for (table, key, referred) in [
                (
                    "content_blobs",
                    "blake3",
                    "EXISTS (SELECT 1 FROM files WHERE content_blake3 = content_blobs.blake3)",
                ),
                (
                    "contents",
                    "(md5, size)",
                    "EXISTS (SELECT 1 FROM files WHERE files.md5 = contents.md5 \
                             AND files.size = contents.size \
                             AND content_blake3 IS NULL AND state = 'complete')",
                ),
            ] {
                tx.execute(
                    &format!(
                        "UPDATE {table} SET orphaned_at = NULL \
                         WHERE orphaned_at IS NOT NULL AND {referred}"
                    ),
                    [],
                )
                .map_err(db_error)?;
                let doomed = format!(
                    "SELECT {} FROM {table} WHERE orphaned_at <= ?1 ORDER BY orphaned_at LIMIT ?2",
                    key.trim_matches(['(', ')'])
                );
                tx.execute(
                    &format!(
                        "INSERT OR IGNORE INTO blob_garbage (locator, queued_at) \
                         SELECT locator, ?3 FROM {table} \
                         WHERE {key} IN ({doomed}) AND locator IS NOT NULL"
                    ),
                    params![cutoff, limit, now],
                )
                .map_err(db_error)?;
                collected += tx
                    .execute(
                        &format!("DELETE FROM {table} WHERE {key} IN ({doomed})"),
                        params![cutoff, limit],
                    )
                    .map_err(db_error)? as u64;
            }
            Ok(collected)
        })
        .await
    }

    async fn queued_garbage(&self, limit: usize) -> Result<Vec<String>, LedgerError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(move |conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT locator FROM blob_garbage ORDER BY queued_at, locator LIMIT ?1",
                )
                .map_err(db_error)?;
            let rows = statement
                .query_map([limit], |r| r.get(0))
                .map_err(db_error)?;
            rows.map(|row| row.map_err(db_error)).collect()
        })
        .await
    }

    async fn forget_garbage(&self, locator: &str) -> Result<(), LedgerError> {
        let locator = locator.to_owned();
        self.write(move |tx| {
            tx.execute("DELETE FROM blob_garbage WHERE locator = ?1", [locator])
                .map_err(db_error)?;
            Ok(())
        })
        .await
    }
}
