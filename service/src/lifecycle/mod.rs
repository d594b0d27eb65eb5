//! What the server does by itself over time: staging of closed uploads swept at start-up
//! ([`staging`]), expired uploads closed ([`expiry`]), content no file refers to
//! collected ([`garbage`]).

pub mod expiry;
pub mod garbage;
pub mod staging;

use std::time::Duration;

pub use expiry::ExpirySweeper;
pub use garbage::{Collected, GarbageCollector};
pub use staging::sweep_orphaned_staging;

/// Sweeps expired uploads, then collects garbage, every `every`, the first time at once
/// (so a server started after a long stop catches up), for as long as the runtime runs.
/// A failed round is logged and tried again at the next.
pub fn spawn(
    sweeper: ExpirySweeper,
    collector: GarbageCollector,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(error) = sweeper.sweep().await {
                tracing::warn!(%error, "sweeping expired uploads failed; trying again later");
            }
            if let Err(error) = collector.pass().await {
                tracing::warn!(%error, "garbage collection failed; trying again later");
            }
        }
    })
}
