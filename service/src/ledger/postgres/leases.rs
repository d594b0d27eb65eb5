//! [`UploadLeases`] on PostgreSQL: times are the database server's `now()`, so the
//! replicas' own clocks never decide who holds an upload.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{PostgresLedger, db_error, handover};
use crate::ledger::columns::{parse_state, to_i64, to_u64};
use crate::ledger::{FileState, Lease, LeaseOutcome, LedgerError, UploadLeases};

/// How long a replica that stopped beating is remembered before its row goes.
const FORGET_AFTER: &str = "1 day";

#[async_trait]
impl UploadLeases for PostgresLedger {
    async fn heartbeat(&self, replica: &str, ttl: Duration) -> Result<(), LedgerError> {
        // On the sessions' connections: the requests' belong to the server's control
        // runtime, which is gone once the server stops, when the heartbeat still runs.
        let client = self.session_client().await?;
        client
            .execute(
                "INSERT INTO replicas (id, alive_until) \
                 VALUES ($1, now() + $2::DOUBLE PRECISION * INTERVAL '1 second') \
                 ON CONFLICT (id) DO UPDATE SET alive_until = EXCLUDED.alive_until",
                &[&replica, &ttl.as_secs_f64()],
            )
            .await
            .map_err(db_error)?;
        client
            .execute(
                &format!(
                    "DELETE FROM replicas WHERE alive_until < now() - INTERVAL '{FORGET_AFTER}'"
                ),
                &[],
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn acquire_lease(&self, id: Uuid, replica: &str) -> Result<LeaseOutcome, LedgerError> {
        let client = self.session_client().await?;
        // Under the row lock the update takes, a concurrent acquirer waits and then sees
        // this one's holder: one of them gets the lease.
        let taken = client
            .query_opt(
                "UPDATE files f SET lease_holder = $2, lease_epoch = f.lease_epoch + 1 \
                 WHERE f.id = $1 AND f.state = 'uploading' \
                   AND (f.lease_holder IS NULL OR f.lease_holder = $2 OR NOT EXISTS ( \
                        SELECT 1 FROM replicas r \
                        WHERE r.id = f.lease_holder AND r.alive_until > now())) \
                 RETURNING f.lease_epoch",
                &[&id, &replica],
            )
            .await
            .map_err(db_error)?;
        if let Some(row) = taken {
            return Ok(LeaseOutcome::Acquired(Lease {
                epoch: to_u64(row.get(0))?,
            }));
        }
        let row = client
            .query_opt(
                "SELECT state, lease_holder FROM files WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(db_error)?
            .ok_or(LedgerError::NotFound(id))?;
        let state = parse_state(row.get(0))?;
        match row.get::<_, Option<String>>(1) {
            Some(holder) if state == FileState::Uploading => Ok(LeaseOutcome::HeldBy(holder)),
            _ if state != FileState::Uploading => Err(LedgerError::NotUploading { id, state }),
            // Freed between the two statements: the caller asks again.
            _ => Err(LedgerError::RetryableConflict(format!(
                "the lease of upload {id} changed hands while taken"
            ))),
        }
    }

    async fn release_lease(&self, id: Uuid, lease: Lease) -> Result<(), LedgerError> {
        let client = self.session_client().await?;
        client
            .execute(
                "UPDATE files SET lease_holder = NULL WHERE id = $1 AND lease_epoch = $2",
                &[&id, &to_i64(lease.epoch)?],
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn forget_replica(&self, replica: &str) -> Result<(), LedgerError> {
        let client = self.session_client().await?;
        client
            .execute(
                "UPDATE files SET lease_holder = NULL WHERE lease_holder = $1",
                &[&replica],
            )
            .await
            .map_err(db_error)?;
        client
            .execute("DELETE FROM replicas WHERE id = $1", &[&replica])
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn live_holder(&self, id: Uuid) -> Result<Option<String>, LedgerError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT f.lease_holder FROM files f JOIN replicas r ON r.id = f.lease_holder \
                 WHERE f.id = $1 AND r.alive_until > now()",
                &[&id],
            )
            .await
            .map_err(db_error)?;
        Ok(row.map(|row| row.get(0)))
    }

    async fn ledger_id(&self) -> Result<String, LedgerError> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT id FROM ledger_identity", &[])
            .await
            .map_err(db_error)?;
        Ok(row.get(0))
    }

    async fn ask_to_hand_over(&self, id: Uuid, holder: &str) -> Result<(), LedgerError> {
        let client = self.client().await?;
        client
            .execute(
                "SELECT pg_notify($1, $2)",
                &[&handover::channel(holder), &id.to_string()],
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    fn handover_requests(&self, replica: &str) -> Option<mpsc::Receiver<Uuid>> {
        Some(handover::listen(
            self.config.clone(),
            self.tls.clone(),
            handover::channel(replica),
        ))
    }
}
