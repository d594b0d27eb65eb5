//! The in-order hash of a session's committed prefix, and the one place that decides
//! which committed chunks stay in memory, which are read back, and when an ack waits.
//!
//! Chunks are committed in any order, but the whole-file digests need them in order.
//! The frontier feeds the hasher every committed chunk that extends the hashed prefix;
//! a chunk past a gap is parked in memory (within the session's and the server's
//! budgets) and read back from staging if it was dropped. A chunk that extends the
//! prefix is acked only as the hasher takes it, so a client sends no faster than the
//! server hashes; one past a gap is acked at once. Every `--hash-checkpoint-mib` hashed,
//! the hash state is saved to the ledger, so a restarted session re-reads little.
//!
//! A store that cannot read back an unfinished upload (an object store's multipart
//! upload) cannot give a chunk no longer in memory: the frontier then stops, acks
//! everything at once, and leaves the rest of the hash to completion, which reads it
//! from the completed content ([`HashFrontier::is_deferred`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use uuid::Uuid;

use crate::blob::{BlobStore, UploadHandle};
use crate::error::ServiceError;
use crate::layout::ChunkLayout;
use crate::ledger::{HashCheckpoint, Lease, LedgerError, UploadLedger};
use crate::upload::committed::CommittedChunks;
use crate::upload::hasher::OrderedHasher;
use crate::upload::parked::ParkedChunks;

/// Where a session's hash stands.
pub(super) struct HashFrontier {
    id: Uuid,
    /// The session's lease, which checkpoints are saved under.
    lease: Lease,
    /// The upload's staged bytes, read back for chunks no longer in memory.
    staged: UploadHandle,
    layout: ChunkLayout,
    blobs: Arc<dyn BlobStore>,
    ledger: Arc<dyn UploadLedger>,
    /// The hash of the committed prefix `[0, hashed)`; `None` once taken to finish.
    hasher: Option<OrderedHasher>,
    hashed: u64,
    /// Chunks covered by the last hash checkpoint saved to the ledger.
    checkpointed: u64,
    /// Bytes hashed between checkpoints.
    checkpoint_bytes: u64,
    /// Committed chunks past the hashed prefix whose bytes are still in memory.
    parked: ParkedChunks,
    /// Committed chunks next in line for the hasher, by index, with the stream whose
    /// ack waits until the hasher takes them: the client then refills its window only
    /// as fast as the server hashes, so memory stays about window x chunk size.
    acks_after_hash: BTreeMap<u64, u64>,
    /// The hasher needed a chunk the store cannot give back: it takes no more, and
    /// completion hashes the rest from the content.
    deferred: bool,
}

impl HashFrontier {
    /// A frontier whose `hasher` has hashed the first `hashed` chunks.
    pub(super) fn new(
        (id, lease): (Uuid, Lease),
        staged: UploadHandle,
        layout: ChunkLayout,
        blobs: Arc<dyn BlobStore>,
        ledger: Arc<dyn UploadLedger>,
        (hasher, hashed): (OrderedHasher, u64),
        parked: ParkedChunks,
    ) -> Self {
        Self {
            id,
            lease,
            staged,
            layout,
            blobs,
            ledger,
            hasher: Some(hasher),
            hashed,
            checkpointed: hashed,
            checkpoint_bytes: u64::MAX,
            parked,
            acks_after_hash: BTreeMap::new(),
            deferred: false,
        }
    }

    /// Saves a hash checkpoint every `bytes` hashed (none without this).
    pub(super) fn checkpointing_every(mut self, bytes: u64) -> Self {
        self.checkpoint_bytes = bytes.max(1);
        self
    }

    /// Bytes the hasher still has to take from staging before it reaches the committed
    /// prefix of `committed` chunks: what a restarted session reads back.
    pub(super) fn behind_by(&self, committed_prefix: u64) -> u64 {
        let end = self.layout.offset(committed_prefix).min(self.layout.size);
        end.saturating_sub(self.layout.offset(self.hashed))
    }

    /// Bytes hashed so far: the file's first bytes, up to here.
    pub(super) fn hashed_bytes(&self) -> u64 {
        self.layout.offset(self.hashed).min(self.layout.size)
    }

    /// Whether hashing was left to completion (see the module's docs).
    #[cfg(test)]
    pub(super) fn is_deferred(&self) -> bool {
        self.deferred
    }

    /// Whether every chunk has been hashed.
    pub(super) fn all_hashed(&self) -> bool {
        self.hashed == self.layout.chunk_count()
    }

    /// Whether the hasher is still here (not yet taken to finish).
    pub(super) fn is_hashing(&self) -> bool {
        self.hasher.is_some()
    }

    /// The hasher, to finish with; the frontier hashes no more.
    pub(super) fn take_hasher(&mut self) -> Option<OrderedHasher> {
        self.hasher.take()
    }

    /// Whether the hasher has a committed chunk to take next.
    pub(super) fn can_feed(&self, committed: &CommittedChunks) -> bool {
        self.hasher.is_some() && !self.deferred && committed.contains(self.hashed)
    }

    /// Takes in chunks a batch just committed (`(stream, index, bytes)`), and returns
    /// those to ack at once: the ones past a gap. The ones that extend the hashed
    /// prefix are acked by [`Self::advance`] as the hasher takes them.
    pub(super) fn committed(
        &mut self,
        committed: &CommittedChunks,
        chunks: Vec<(u64, u64, Bytes)>,
    ) -> Vec<(u64, u64)> {
        if self.deferred {
            return chunks
                .into_iter()
                .map(|(stream, index, _)| (stream, index))
                .collect();
        }
        let next_to_hash = self.hashed;
        let mut hashable_end = next_to_hash;
        while self.hasher.is_some() && committed.contains(hashable_end) {
            hashable_end += 1;
        }
        let mut now = Vec::new();
        for (stream, index, data) in chunks {
            if index >= next_to_hash {
                self.parked.insert(index, data);
            }
            if (next_to_hash..hashable_end).contains(&index) {
                self.acks_after_hash.insert(index, stream);
            } else {
                now.push((stream, index));
            }
        }
        self.parked.trim();
        now
    }

    /// Drops parked chunks while over budget (they are read back when needed).
    pub(super) fn trim_parked(&mut self) {
        self.parked.trim();
    }

    /// Feeds the hasher every committed chunk that extends the hashed prefix, in order,
    /// reading back from staging those no longer in memory, and calls `ack(stream,
    /// index)` for each whose ack waited. Waits while the hasher is behind.
    ///
    /// Cancel-safe (the session polls it beside other work): state changes only after
    /// the hasher has taken a chunk, in the same poll.
    pub(super) async fn advance(
        &mut self,
        committed: &CommittedChunks,
        ack: &mut (impl FnMut(u64, u64) + Send),
    ) -> Result<(), ServiceError> {
        while self.can_feed(committed) {
            let index = self.hashed;
            let data = match self.parked.get(index) {
                Some(data) => data.clone(),
                None if !self.blobs.reads_staged() => {
                    self.defer(ack);
                    break;
                }
                None => {
                    let len = self.layout.chunk_len(index).unwrap_or(0) as usize;
                    let data = self
                        .blobs
                        .read_staged(&self.staged, self.layout.offset(index), len)
                        .await
                        .map_err(|e| ServiceError::StoredDataLost {
                            id: self.id,
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
                ack(stream, index);
            }
            let unsaved = (self.hashed - self.checkpointed) * u64::from(self.layout.chunk_size);
            let fully_committed = committed.len() == self.layout.chunk_count();
            if unsaved >= self.checkpoint_bytes && !fully_committed {
                // Saved in the background: the ack path does not wait for it.
                drop(self.save_checkpoint().await);
            }
        }
        Ok(())
    }

    /// Leaves the rest of the hash to completion: acks what waited for the hasher, and
    /// keeps no chunk in memory for it.
    fn defer(&mut self, ack: &mut (impl FnMut(u64, u64) + Send)) {
        tracing::info!(
            upload = %self.id,
            hashed = self.hashed_bytes(),
            "a chunk to hash is no longer in memory and the store cannot read it back: the rest is hashed from the content once complete"
        );
        self.deferred = true;
        self.parked.clear();
        for (index, stream) in std::mem::take(&mut self.acks_after_hash) {
            ack(stream, index);
        }
    }

    /// Whether chunks were hashed since the last checkpoint.
    pub(super) fn has_unsaved(&self) -> bool {
        self.hashed > self.checkpointed
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
        let ledger = Arc::clone(&self.ledger);
        let (id, lease) = (self.id, self.lease);
        tokio::spawn(async move {
            let Ok(state) = answer.await else {
                return;
            };
            let checkpoint = HashCheckpoint { chunks, state };
            match ledger.save_hash_checkpoint(id, lease, &checkpoint).await {
                Ok(()) | Err(LedgerError::NotUploading { .. } | LedgerError::LeaseLost(_)) => {}
                Err(error) => {
                    tracing::warn!(upload = %id, %error, "saving a hash checkpoint failed")
                }
            }
        })
    }
}
