//! This process as one of several `transferd` replicas on one ledger: its id, the
//! heartbeat that keeps its leases alive, and how a session takes an upload's lease.
//!
//! An upload's session runs in one replica at a time, the one holding its lease in the
//! ledger ([`crate::ledger::UploadLeases`]). A stream that reaches another replica takes
//! the session over: at once when the holder stopped (its heartbeat lapsed, or it let
//! go when it stopped cleanly), otherwise by asking the holder to hand over and waiting
//! for it to let go, at most about one lease period.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::ServiceError;
use crate::ledger::{Lease, LeaseOutcome, Ledger, LedgerError};
use crate::metrics::metrics;

/// How often a lease is asked for again while another replica holds it.
const POLL: Duration = Duration::from_millis(20);

/// This replica: the name its leases carry, and how long they outlive its last
/// heartbeat.
#[derive(Debug, Clone)]
pub struct Replica {
    pub id: String,
    pub lease_ttl: Duration,
}

impl Replica {
    /// A replica with a name of its own (a process started again is a new replica: what
    /// its predecessor held is taken over once that one's heartbeat lapses, or at once
    /// where the predecessor let go as it stopped).
    pub fn new(lease_ttl: Duration) -> Self {
        Self {
            id: format!("replica-{}", Uuid::new_v4().as_simple()),
            lease_ttl,
        }
    }

    /// How long a session waits for a live holder to hand an upload over: a lease period
    /// and a heartbeat more, so that a holder that died meanwhile is outlived too.
    pub fn lease_wait(&self) -> Duration {
        self.lease_ttl + self.heartbeat_interval()
    }

    /// How often the heartbeat is renewed: four times per lease period, so that a late
    /// beat or two do not lose the leases.
    pub fn heartbeat_interval(&self) -> Duration {
        self.lease_ttl / 4
    }

    /// Takes the lease of upload `id` for this replica, asking a live holder to hand it
    /// over and waiting for that (at most [`Replica::lease_wait`]).
    pub async fn take_lease(&self, ledger: &dyn Ledger, id: Uuid) -> Result<Lease, ServiceError> {
        let started = Instant::now();
        let deadline = started + self.lease_wait();
        let mut asked = None;
        loop {
            match ledger.acquire_lease(id, &self.id).await {
                Ok(LeaseOutcome::Acquired(lease)) => {
                    if let Some(holder) = asked {
                        let waited = started.elapsed();
                        metrics().takeover_seconds.record(waited.as_secs_f64(), &[]);
                        tracing::info!(upload = %id, from = %holder, ?waited, "took the upload over");
                    }
                    return Ok(lease);
                }
                Ok(LeaseOutcome::HeldBy(holder)) => {
                    if asked.as_ref() != Some(&holder) {
                        tracing::info!(upload = %id, %holder, "asking the replica writing this upload to hand it over");
                        ledger.ask_to_hand_over(id, &holder).await?;
                        asked = Some(holder);
                    }
                }
                Err(LedgerError::RetryableConflict(_)) => {}
                Err(error) => return Err(error.into()),
            }
            if Instant::now() >= deadline {
                return Err(ServiceError::HeldElsewhere(id));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Renews this replica's heartbeat until `stop` is cancelled, then lets go of every
    /// lease it holds, so that other replicas take its uploads over at once.
    pub fn spawn_heartbeat(
        self: &Arc<Self>,
        ledger: Arc<dyn Ledger>,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let replica = Arc::clone(self);
        tokio::spawn(async move {
            let mut beats = tokio::time::interval(replica.heartbeat_interval());
            beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = beats.tick() => {
                        if let Err(error) = ledger.heartbeat(&replica.id, replica.lease_ttl).await {
                            // The leases lapse if this goes on; the epochs keep any late
                            // write from counting.
                            tracing::warn!(%error, "renewing this replica's heartbeat failed");
                        }
                    }
                    () = stop.cancelled() => break,
                }
            }
            if let Err(error) = ledger.forget_replica(&replica.id).await {
                tracing::warn!(%error, "letting go of this replica's leases failed: other replicas take its uploads over once its heartbeat lapses");
            }
        })
    }
}
