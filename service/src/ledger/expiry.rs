//! When open uploads expire: extended by activity, closed by the sweeper once past.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{FileRecord, LedgerError};

/// The expiry of open uploads.
///
/// Contract for every implementation (checked by the ledger conformance tests):
/// - An upload's expiry only moves later while it is open.
/// - [`UploadExpiry::expire_upload`] closes an upload only if it is still open and past
///   its expiry when it runs: an upload extended meanwhile stays open. An expired upload
///   keeps its row (state `Expired`) and loses its chunks, as an aborted one does.
#[async_trait]
pub trait UploadExpiry: Send + Sync + 'static {
    /// Moves an open upload's expiry to `until` unless it is later already; returns the
    /// expiry it now has. Fails with [`LedgerError::NotUploading`] when it is closed.
    async fn extend_upload(
        &self,
        id: Uuid,
        until: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, LedgerError>;

    /// Up to `limit` open uploads whose expiry is at or before `now`, soonest first.
    async fn expired_uploads(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<FileRecord>, LedgerError>;

    /// Closes upload `id` as expired and forgets its chunks, if it is open and its
    /// expiry is at or before `now`; whether it did.
    async fn expire_upload(&self, id: Uuid, now: DateTime<Utc>) -> Result<bool, LedgerError>;
}
