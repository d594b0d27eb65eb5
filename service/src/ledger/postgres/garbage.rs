//! [`ContentGarbage`] on PostgreSQL: orphaned content collected, blobs queued for deletion.

use std::time::Duration;

use async_trait::async_trait;

use super::{PostgresLedger, db_error};
use crate::ledger::{ContentGarbage, LedgerError};
use deadpool_postgres::GenericClient;

/// Content whose mark is older than the grace period ($1 seconds).
const PAST_GRACE: &str = "orphaned_at <= now() - make_interval(secs => $1)";

#[async_trait]
impl ContentGarbage for PostgresLedger {
    async fn collect_orphans(&self, grace: Duration, limit: usize) -> Result<u64, LedgerError> {
        let mut client = self.client().await?;
        let grace = grace.as_secs_f64();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut collected = 0;
        let candidates = client
            .query(
                &format!(
                    "SELECT blake3 FROM content_blobs WHERE {PAST_GRACE} ORDER BY orphaned_at LIMIT $2"
                ),
                &[&grace, &limit],
            )
            .await
            .map_err(db_error)?;
        for row in candidates {
            let blake3: Vec<u8> = row.try_get(0).map_err(db_error)?;
            // The check that no file refers to it is the database's too: a file made
            // meanwhile makes the delete fail on the foreign key (or wait for it and then
            // fail), never leaves a file without content.
            let forgotten = client
                .query_one(
                    &format!(
                        "WITH gone AS ( \
                             DELETE FROM content_blobs WHERE blake3 = $2 AND {PAST_GRACE} \
                               AND NOT EXISTS (SELECT 1 FROM files WHERE content_blake3 = $2) \
                             RETURNING locator), \
                         queued AS ( \
                             INSERT INTO blob_garbage (locator) \
                             SELECT locator FROM gone WHERE locator IS NOT NULL \
                             ON CONFLICT DO NOTHING) \
                         SELECT count(*) FROM gone"
                    ),
                    &[&grace, &blake3],
                )
                .await
                .map_err(db_error);
            match forgotten.and_then(|row| row.try_get::<_, i64>(0).map_err(db_error)) {
                Ok(1) => collected += 1,
                Ok(_) | Err(LedgerError::ReferenceGone(_)) => {
                    client
                        .execute(
                            "UPDATE content_blobs SET orphaned_at = NULL WHERE blake3 = $1 \
                               AND EXISTS (SELECT 1 FROM files WHERE content_blake3 = $1)",
                            &[&blake3],
                        )
                        .await
                        .map_err(db_error)?;
                }
                Err(e) => return Err(e),
            }
        }
        // Content completed before BLAKE3 named it, referred to by MD5 and size. Its row
        // is locked while it is checked, as deleting a file of it locks it to mark it.
        let candidates = client
            .query(
                &format!(
                    "SELECT md5, size FROM contents WHERE {PAST_GRACE} ORDER BY orphaned_at LIMIT $2"
                ),
                &[&grace, &limit],
            )
            .await
            .map_err(db_error)?;
        for row in candidates {
            let md5: Vec<u8> = row.try_get(0).map_err(db_error)?;
            let size: i64 = row.try_get(1).map_err(db_error)?;
            let tx = client.transaction().await.map_err(db_error)?;
            // Locked by a statement of its own, so that the next sees what committed
            // while it waited.
            tx.execute(
                "SELECT 1 FROM contents WHERE md5 = $1 AND size = $2 FOR UPDATE",
                &[&md5, &size],
            )
            .await
            .map_err(db_error)?;
            let forgotten = tx
                .query_one(
                    &format!(
                        "WITH gone AS ( \
                             DELETE FROM contents WHERE md5 = $2 AND size = $3 AND {PAST_GRACE} \
                               AND NOT EXISTS (SELECT 1 FROM files WHERE md5 = $2 AND size = $3 \
                                               AND content_blake3 IS NULL AND state = 'complete') \
                             RETURNING locator), \
                         queued AS ( \
                             INSERT INTO blob_garbage (locator) \
                             SELECT locator FROM gone WHERE locator IS NOT NULL \
                             ON CONFLICT DO NOTHING) \
                         SELECT count(*) FROM gone"
                    ),
                    &[&grace, &md5, &size],
                )
                .await
                .map_err(db_error)?
                .try_get::<_, i64>(0)
                .map_err(db_error)?;
            if forgotten == 1 {
                collected += 1;
            } else {
                tx.execute(
                    "UPDATE contents SET orphaned_at = NULL WHERE md5 = $1 AND size = $2",
                    &[&md5, &size],
                )
                .await
                .map_err(db_error)?;
            }
            tx.commit().await.map_err(db_error)?;
        }
        Ok(collected)
    }

    async fn queued_garbage(&self, limit: usize) -> Result<Vec<String>, LedgerError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT locator FROM blob_garbage ORDER BY queued_at, locator LIMIT $1",
                &[&i64::try_from(limit).unwrap_or(i64::MAX)],
            )
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|row| row.try_get(0).map_err(db_error))
            .collect()
    }

    async fn forget_garbage(&self, locator: &str) -> Result<(), LedgerError> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM blob_garbage WHERE locator = $1", &[&locator])
            .await
            .map_err(db_error)?;
        Ok(())
    }
}
