//! [`UploadLeases`] on SQLite. One process at a time uses an embedded ledger, so a lease
//! here only ever passes from a stopped process to the next; the rules are the same as
//! on PostgreSQL, with this machine's clock.

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{SqliteLedger, db_error, now_micros};
use crate::ledger::columns::{parse_state, to_i64, to_u64};
use crate::ledger::{FileState, Lease, LeaseOutcome, LedgerError, UploadLeases};

/// How long a replica that stopped beating is remembered before its row goes: a day.
const FORGET_AFTER_MICROS: i64 = 86_400_000_000;

#[async_trait]
impl UploadLeases for SqliteLedger {
    async fn heartbeat(&self, replica: &str, ttl: Duration) -> Result<(), LedgerError> {
        let replica = replica.to_owned();
        let ttl = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX);
        self.write_unsynced(move |tx| {
            let now = now_micros();
            tx.execute(
                "INSERT INTO replicas (id, alive_until) VALUES (?1, ?2) \
                 ON CONFLICT (id) DO UPDATE SET alive_until = excluded.alive_until",
                params![replica, now.saturating_add(ttl)],
            )
            .map_err(db_error)?;
            tx.execute(
                "DELETE FROM replicas WHERE alive_until < ?1",
                [now.saturating_sub(FORGET_AFTER_MICROS)],
            )
            .map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn acquire_lease(&self, id: Uuid, replica: &str) -> Result<LeaseOutcome, LedgerError> {
        let replica = replica.to_owned();
        self.write(move |tx| {
            let taken: Option<i64> = tx
                .prepare_cached(
                    "UPDATE files SET lease_holder = ?2, lease_epoch = lease_epoch + 1 \
                     WHERE id = ?1 AND state = 'uploading' \
                       AND (lease_holder IS NULL OR lease_holder = ?2 OR NOT EXISTS ( \
                            SELECT 1 FROM replicas r \
                            WHERE r.id = files.lease_holder AND r.alive_until > ?3)) \
                     RETURNING lease_epoch",
                )
                .and_then(|mut s| {
                    s.query_row(params![id.to_string(), replica, now_micros()], |row| {
                        row.get(0)
                    })
                    .optional()
                })
                .map_err(db_error)?;
            if let Some(epoch) = taken {
                return Ok(LeaseOutcome::Acquired(Lease {
                    epoch: to_u64(epoch)?,
                }));
            }
            let (state, holder): (String, Option<String>) = tx
                .query_row(
                    "SELECT state, lease_holder FROM files WHERE id = ?1",
                    [id.to_string()],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(db_error)?
                .ok_or(LedgerError::NotFound(id))?;
            let state = parse_state(&state)?;
            match holder {
                _ if state != FileState::Uploading => Err(LedgerError::NotUploading { id, state }),
                Some(holder) => Ok(LeaseOutcome::HeldBy(holder)),
                None => Err(LedgerError::RetryableConflict(format!(
                    "the lease of upload {id} changed hands while taken"
                ))),
            }
        })
        .await
    }

    async fn release_lease(&self, id: Uuid, lease: Lease) -> Result<(), LedgerError> {
        let epoch = to_i64(lease.epoch)?;
        self.write_unsynced(move |tx| {
            tx.execute(
                "UPDATE files SET lease_holder = NULL WHERE id = ?1 AND lease_epoch = ?2",
                params![id.to_string(), epoch],
            )
            .map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn forget_replica(&self, replica: &str) -> Result<(), LedgerError> {
        let replica = replica.to_owned();
        self.write(move |tx| {
            tx.execute(
                "UPDATE files SET lease_holder = NULL WHERE lease_holder = ?1",
                [&replica],
            )
            .map_err(db_error)?;
            tx.execute("DELETE FROM replicas WHERE id = ?1", [&replica])
                .map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn live_holder(&self, id: Uuid) -> Result<Option<String>, LedgerError> {
        self.with(move |conn| {
            conn.query_row(
                "SELECT f.lease_holder FROM files f JOIN replicas r ON r.id = f.lease_holder \
                 WHERE f.id = ?1 AND r.alive_until > ?2",
                params![id.to_string(), now_micros()],
                |row| row.get(0),
            )
            .optional()
            .map_err(db_error)
        })
        .await
    }

    async fn ledger_id(&self) -> Result<String, LedgerError> {
        self.with(|conn| {
            conn.query_row("SELECT id FROM ledger_identity", [], |row| row.get(0))
                .map_err(db_error)
        })
        .await
    }

    async fn ask_to_hand_over(&self, _id: Uuid, _holder: &str) -> Result<(), LedgerError> {
        // One process uses an embedded ledger: a holder other than it is a stopped one,
        // whose lease lapses by itself.
        Ok(())
    }

    fn handover_requests(&self, _replica: &str) -> Option<mpsc::Receiver<Uuid>> {
        None
    }
}
