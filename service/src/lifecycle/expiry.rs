//! The sweeper of expired uploads: closes open uploads nothing has happened to for the
//! expiry period, and drops their staged bytes.
//!
//! Crash-safe by order: the ledger closes the upload first (state `expired`, chunks
//! forgotten, only if it is still past its expiry), then the session stops and the
//! staging goes. A kill in between leaves staging of a closed upload, which the
//! start-up sweep ([`super::staging`]) drops; a sweep that runs again finds nothing.

use std::sync::Arc;

use crate::blob::{BlobStore, UploadHandle};
use crate::error::ServiceError;
use crate::layout::Limits;
use crate::ledger::{FileState, Ledger};
use crate::metrics::metrics;
use crate::upload::SessionRegistry;

/// Uploads looked at per ledger round trip.
const BATCH: usize = 256;

#[derive(Clone)]
pub struct ExpirySweeper {
    ledger: Arc<dyn Ledger>,
    blobs: Arc<dyn BlobStore>,
    sessions: Arc<SessionRegistry>,
    limits: Limits,
}

impl ExpirySweeper {
    pub fn new(
        ledger: Arc<dyn Ledger>,
        blobs: Arc<dyn BlobStore>,
        sessions: Arc<SessionRegistry>,
        limits: Limits,
    ) -> Self {
        Self {
            ledger,
            blobs,
            sessions,
            limits,
        }
    }

    /// One sweep: every upload past its expiry is closed, but one a client is streaming
    /// into now, which lives on. Returns how many expired.
    pub async fn sweep(&self) -> Result<u64, ServiceError> {
        let mut expired = 0;
        loop {
            let now = chrono::Utc::now();
            let due = self.ledger.expired_uploads(now, BATCH).await?;
            let mut extended = 0;
            for file in &due {
                if self.sessions.in_use_anywhere(file.id).await? {
                    // In use: streaming is activity, however long one stream runs.
                    self.ledger
                        .extend_upload(file.id, self.limits.expiry_from_now())
                        .await?;
                    extended += 1;
                    continue;
                }
                if !self.ledger.expire_upload(file.id, now).await? {
                    continue;
                }
                self.sessions.closed(file.id, FileState::Expired).await;
                // Read again now that the session has stopped: a stream may have begun
                // staging since the list was read.
                let handle = match self.ledger.get_file(file.id).await? {
                    Some(closed) => closed.blob_upload,
                    None => file.blob_upload.clone(),
                };
                // Staging that will not go now goes at the next start-up sweep; the
                // sweep goes on with the other uploads.
                if let Some(handle) = handle
                    && let Err(error) = self.blobs.abort(&UploadHandle::new(handle)).await
                {
                    tracing::warn!(upload = %file.id, %error, "could not drop an expired upload's staging");
                }
                expired += 1;
                metrics().uploads_expired.add(1, &[]);
                tracing::info!(upload = %file.id, owner = %file.owner, "upload expired");
            }
            // Uploads extended stay off the next list, so the loop ends.
            if due.len() < BATCH || extended == due.len() {
                return Ok(expired);
            }
        }
    }
}
