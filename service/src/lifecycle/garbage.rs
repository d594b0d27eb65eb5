//! The garbage collector: deletes content no file has referred to for the grace period,
//! and the spare copies completions made of content that was stored already.
//!
//! Every step is recorded before the store acts (see [`crate::ledger::ContentGarbage`]):
//! content is forgotten and its locator queued in one transaction, the blob deleted,
//! then the locator forgotten. A kill at any point leaves what the next pass finishes;
//! deleting a blob twice is no error.

use std::sync::Arc;
use std::time::Duration;

use crate::blob::{BlobStore, ContentLocator};
use crate::error::ServiceError;
use crate::ledger::Ledger;
use crate::metrics::metrics;

/// Contents collected, or blobs deleted, per ledger round trip.
const BATCH: usize = 256;

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Collected {
    /// Contents forgotten because no file referred to them for the grace period.
    pub contents: u64,
    /// Blobs deleted from the store.
    pub blobs: u64,
}

#[derive(Clone)]
pub struct GarbageCollector {
    ledger: Arc<dyn Ledger>,
    blobs: Arc<dyn BlobStore>,
    /// How long content stays after its last file went: a download that began before
    /// the delete may finish, and an upload of the same content meanwhile keeps it.
    grace: Duration,
}

impl GarbageCollector {
    pub fn new(ledger: Arc<dyn Ledger>, blobs: Arc<dyn BlobStore>, grace: Duration) -> Self {
        Self {
            ledger,
            blobs,
            grace,
        }
    }

    /// One pass: collect what is past its grace, delete every queued blob.
    pub async fn pass(&self) -> Result<Collected, ServiceError> {
        let mut collected = Collected::default();
        loop {
            let contents = self.ledger.collect_orphans(self.grace, BATCH).await?;
            collected.contents += contents;
            if contents < BATCH as u64 {
                break;
            }
        }
        loop {
            let queued = self.ledger.queued_garbage(BATCH).await?;
            let mut failed = 0;
            for locator in &queued {
                // A blob the store will not delete stays queued for the next pass; the
                // rest of the batch goes on, so one bad blob holds up no other.
                match self
                    .blobs
                    .delete(&ContentLocator::new(locator.as_str()))
                    .await
                {
                    Ok(()) => {
                        self.ledger.forget_garbage(locator).await?;
                        collected.blobs += 1;
                    }
                    Err(error) => {
                        tracing::warn!(%locator, %error, "could not delete a collected blob");
                        failed += 1;
                    }
                }
            }
            // A short batch was the last; a batch of nothing but failures would come
            // back the same.
            if queued.len() < BATCH || failed == queued.len() {
                return Ok(self.counted(collected));
            }
        }
    }

    fn counted(&self, collected: Collected) -> Collected {
        metrics().contents_collected.add(collected.contents, &[]);
        metrics().blobs_deleted.add(collected.blobs, &[]);
        if collected != Collected::default() {
            tracing::info!(
                contents = collected.contents,
                blobs = collected.blobs,
                "garbage collected"
            );
        }
        collected
    }
}
