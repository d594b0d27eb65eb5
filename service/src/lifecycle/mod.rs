//! What the server does by itself over time: staging of closed uploads swept at start-up
//! and now and then ([`staging`]), expired uploads closed ([`expiry`]), content no file
//! refers to collected ([`garbage`]).

pub mod expiry;
pub mod garbage;
pub mod staging;

use std::sync::Arc;
use std::time::Duration;

use crate::blob::BlobStore;
use crate::ledger::Ledger;

pub use expiry::ExpirySweeper;
pub use garbage::{Collected, GarbageCollector};
pub use staging::sweep_orphaned_staging;

/// Rounds between sweeps of staging: it lists the whole staging area (and, on an object
/// store, the bucket's multipart uploads), so it runs less often than the rest.
const ROUNDS_PER_STAGING_SWEEP: u64 = 10;

/// Sweeps expired uploads, then collects garbage, every `every`, the first time at once
/// (so a server started after a long stop catches up), and every tenth round sweeps the
/// staging of closed uploads (what a replica that died while closing one left), for as
/// long as the runtime runs. A failed round is logged and tried again at the next.
pub fn spawn(
    sweeper: ExpirySweeper,
    collector: GarbageCollector,
    staging: (Arc<dyn Ledger>, Arc<dyn BlobStore>),
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for round in 0u64.. {
            ticks.tick().await;
            // Not the first round: start-up sweeps staging by itself.
            if round > 0 && round % ROUNDS_PER_STAGING_SWEEP == 0 {
                sweep_orphaned_staging(Arc::clone(&staging.0), Arc::clone(&staging.1)).await;
            }
            if let Err(error) = sweeper.sweep().await {
                tracing::warn!(%error, "sweeping expired uploads failed; trying again later");
            }
            if let Err(error) = collector.pass().await {
                tracing::warn!(%error, "garbage collection failed; trying again later");
            }
        }
    })
}
