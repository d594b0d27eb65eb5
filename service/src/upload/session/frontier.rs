//! The in-order hash of the committed prefix: parked chunks, read-backs, checkpoints.

use std::sync::Arc;

use super::actor::Session;
use crate::error::ServiceError;
use crate::ledger::{HashCheckpoint, LedgerError};

/// How much newly hashed data makes the session save a hash checkpoint, so that a
/// restarted session re-reads at most this much to rebuild the MD5.
const CHECKPOINT_BYTES: u64 = 128 << 20;

impl Session {
    /// Whether the hasher has a committed chunk to take next.
    pub(super) fn can_feed(&self) -> bool {
        self.hasher.is_some() && self.is_committed(self.hashed)
    }

    /// Feeds the hasher every committed chunk that extends the hashed prefix, in order,
    /// reading back from staging those no longer in memory, and sends the acks that
    /// waited for each. Waits while the hasher is behind.
    ///
    /// Cancel-safe (the session polls it beside other work): state changes only after
    /// the hasher has taken a chunk, in the same poll.
    pub(super) async fn advance_hash(&mut self) -> Result<(), ServiceError> {
        while self.can_feed() {
            let index = self.hashed;
            let data = match self.parked.get(index) {
                Some(data) => data.clone(),
                None => {
                    let len = self.layout.chunk_len(index).unwrap_or(0) as usize;
                    let data = self
                        .registry
                        .blobs
                        .read_staged(self.file.id, self.layout.offset(index), len)
                        .await
                        .map_err(|e| ServiceError::StoredDataLost {
                            id: self.file.id,
                            reason: e.to_string(),
                        })?;
                    // Parked, so that a poll dropped while the hasher is full does not
                    // read it again.
                    self.parked.insert(index, data.clone());
                    data
                }
            };
            let Some(hasher) = self.hasher.as_ref() else {
                break;
            };
            hasher.feed(data).await;
            self.parked.remove(index);
            self.hashed += 1;
            if let Some(stream) = self.acks_after_hash.remove(&index) {
                self.ack(stream, index, false);
            }
            let unsaved = (self.hashed - self.checkpointed) * u64::from(self.layout.chunk_size);
            if unsaved >= CHECKPOINT_BYTES && !self.is_fully_committed() {
                // Saved in the background: the ack path does not wait for it.
                drop(self.save_checkpoint().await);
            }
        }
        Ok(())
    }

    /// Saves a checkpoint of the hash so far to the ledger, once the hasher reaches it.
    /// The returned task ends when it is saved (or failed to be).
    pub(super) async fn save_checkpoint(&mut self) -> tokio::task::JoinHandle<()> {
        let answer = match &self.hasher {
            Some(hasher) => hasher.checkpoint().await,
            None => return tokio::spawn(async {}),
        };
        let chunks = self.hashed;
        self.checkpointed = chunks;
        let ledger = Arc::clone(&self.registry.ledger);
        let id = self.id();
        tokio::spawn(async move {
            let Ok(state) = answer.await else {
                return;
            };
            let checkpoint = HashCheckpoint { chunks, state };
            match ledger.save_hash_checkpoint(id, &checkpoint).await {
                Ok(()) | Err(LedgerError::NotUploading { .. }) => {}
                Err(error) => {
                    tracing::warn!(upload = %id, %error, "saving a hash checkpoint failed")
                }
            }
        })
    }
}
