//! Which replica writes each open upload: a lease on the upload's row, fenced by an
//! epoch, held while the holder's heartbeat is recent.
//!
//! Several `transferd` replicas share one ledger. An upload's session runs in one of them
//! at a time: the one holding its lease. Taking the lease raises its epoch, and every
//! write of the session names the epoch it holds ([`Lease`]), so a holder that stalled
//! (a long pause, a partition) and lost the lease to another replica changes nothing
//! when it wakes: its writes fail with [`LedgerError::LeaseLost`]. Times are the
//! ledger's own clock (the database server's), so replicas' clocks need not agree.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::LedgerError;

/// A replica's hold on an open upload, named by every write of its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub epoch: u64,
}

impl Lease {
    /// The epoch of an upload whose lease nobody took yet.
    pub const UNTAKEN: Lease = Lease { epoch: 0 };
}

/// What asking for a lease got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// This replica holds the upload now.
    Acquired(Lease),
    /// Another replica, alive, holds it.
    HeldBy(String),
}

/// Leases on open uploads.
///
/// Contract (checked by the ledger conformance tests):
/// - `heartbeat(replica, ttl)` records the replica alive for `ttl` from now.
/// - `acquire_lease(id, replica)` takes the lease of open upload `id` when nobody holds
///   it, `replica` does, or its holder is not alive (no heartbeat within its `ttl`);
///   each time it is taken its epoch goes up by one. Otherwise it names the holder.
///   [`LedgerError::NotFound`] / [`LedgerError::NotUploading`] for an unknown or closed
///   upload.
/// - The session writes of [`super::UploadLedger`] given a lease whose epoch is not the
///   upload's current one fail with [`LedgerError::LeaseLost`] and change nothing.
/// - `release_lease` frees a lease still held with that epoch (nothing otherwise);
///   `forget_replica` frees every lease the replica holds and forgets its heartbeat.
/// - `live_holder(id)` names the alive replica that holds upload `id`, if one does.
/// - `ledger_id()` is the ledger's own identity, made with it and never changed:
///   replicas that share the ledger share it.
/// - `ask_to_hand_over(id, holder)` asks replica `holder` to let go of upload `id`; the
///   holder hears of it on the receiver `handover_requests(holder)` gave it, where the
///   ledger can carry such messages (PostgreSQL's LISTEN/NOTIFY; an embedded ledger has
///   one replica and no such channel: `None`).
#[async_trait]
pub trait UploadLeases: Send + Sync + 'static {
    async fn heartbeat(&self, replica: &str, ttl: Duration) -> Result<(), LedgerError>;

    async fn acquire_lease(&self, id: Uuid, replica: &str) -> Result<LeaseOutcome, LedgerError>;

    async fn release_lease(&self, id: Uuid, lease: Lease) -> Result<(), LedgerError>;

    async fn forget_replica(&self, replica: &str) -> Result<(), LedgerError>;

    async fn live_holder(&self, id: Uuid) -> Result<Option<String>, LedgerError>;

    async fn ledger_id(&self) -> Result<String, LedgerError>;

    async fn ask_to_hand_over(&self, id: Uuid, holder: &str) -> Result<(), LedgerError>;

    /// The uploads other replicas ask `replica` to hand over, as they ask, for as long
    /// as the receiver lives; `None` where the ledger carries no such messages.
    fn handover_requests(&self, replica: &str) -> Option<mpsc::Receiver<Uuid>>;
}
