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

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use uuid::Uuid;

use crate::blob::{BlobStore, UploadHandle};
use crate::error::ServiceError;
use crate::layout::ChunkLayout;
use crate::ledger::{HashCheckpoint, LedgerError, UploadLedger};
use crate::upload::committed::CommittedChunks;
use crate::upload::hasher::OrderedHasher;
use crate::upload::parked::ParkedChunks;

/// Where a session's hash stands.
pub(super) struct HashFrontier {
    id: Uuid,
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
}

impl HashFrontier {
    /// A frontier whose `hasher` has hashed the first `hashed` chunks.
    pub(super) fn new(
        id: Uuid,
        staged: UploadHandle,
        layout: ChunkLayout,
        blobs: Arc<dyn BlobStore>,
        ledger: Arc<dyn UploadLedger>,
        (hasher, hashed): (OrderedHasher, u64),
        parked: ParkedChunks,
    ) -> Self {
        Self {
            id,
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
        self.hasher.is_some() && committed.contains(self.hashed)
    }

    /// Takes in chunks a batch just committed (`(stream, index, bytes)`), and returns
    /// those to ack at once: the ones past a gap. The ones that extend the hashed
    /// prefix are acked by [`Self::advance`] as the hasher takes them.
    pub(super) fn committed(
        &mut self,
        committed: &CommittedChunks,
        chunks: Vec<(u64, u64, Bytes)>,
    ) -> Vec<(u64, u64)> {
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
        let id = self.id;
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::blob::{FsBlobStore, Part};
    use crate::ledger::{NewUpload, SqliteLedger};
    use crate::upload::hasher::HashingSlots;
    use crate::upload::memory::MemoryBudget;
    use transfer_wire::aligned::{BufferPool, DEFAULT_POOL_BYTES};

    const CHUNK: u32 = 4096;
    const CHUNKS: u64 = 4;

    struct Fixture {
        _dir: tempfile::TempDir,
        data: Vec<u8>,
        ledger: Arc<SqliteLedger>,
        blobs: Arc<FsBlobStore>,
        id: Uuid,
        staged: UploadHandle,
        layout: ChunkLayout,
    }

    impl Fixture {
        async fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let ledger = Arc::new(
                SqliteLedger::open(&dir.path().join("ledger.sqlite3"), 2)
                    .await
                    .unwrap(),
            );
            let buffers = BufferPool::new(DEFAULT_POOL_BYTES);
            let blobs = Arc::new(FsBlobStore::open(&dir.path().join("data"), buffers).unwrap());
            let data: Vec<u8> = (0..CHUNKS * u64::from(CHUNK))
                .map(|i| (i * 7 % 251) as u8)
                .collect();
            let id = ledger
                .open_upload(&NewUpload {
                    owner: "o".into(),
                    name: "f.bin".into(),
                    size: data.len() as u64,
                    md5: Some(transfer_md5::Md5::digest(&data)),
                    head_md5: None,
                    chunk_size: CHUNK,
                    chunk_count: CHUNKS,
                    expires_at: chrono::Utc::now() + chrono::Duration::days(1),
                })
                .await
                .unwrap()
                .file
                .id;
            let layout = ChunkLayout::new(data.len() as u64, CHUNK);
            let staged = blobs.begin(id, layout.size).await.unwrap();
            Self {
                _dir: dir,
                data,
                ledger,
                blobs,
                id,
                staged,
                layout,
            }
        }

        /// A frontier from the start, keeping at most `parked_limit` bytes parked.
        fn frontier(&self, parked_limit: usize) -> HashFrontier {
            let budget = MemoryBudget::new(1 << 30, 1 << 30, Duration::from_secs(1));
            HashFrontier::new(
                self.id,
                self.staged.clone(),
                self.layout,
                Arc::clone(&self.blobs) as Arc<dyn BlobStore>,
                Arc::clone(&self.ledger) as Arc<dyn UploadLedger>,
                (OrderedHasher::start(&HashingSlots::per_core()), 0),
                ParkedChunks::new(parked_limit, budget),
            )
        }

        fn chunk(&self, index: u64) -> Bytes {
            let start = (index * u64::from(CHUNK)) as usize;
            Bytes::copy_from_slice(&self.data[start..start + CHUNK as usize])
        }

        /// Writes chunks to staging and marks them committed, as the session's writer does.
        async fn commit(
            &self,
            frontier: &mut HashFrontier,
            committed: &mut CommittedChunks,
            indexes: &[u64],
        ) -> Vec<(u64, u64)> {
            let parts: Vec<Part> = indexes
                .iter()
                .map(|&index| Part {
                    index,
                    offset: self.layout.offset(index),
                    data: self.chunk(index),
                })
                .collect();
            self.blobs.put_parts(&self.staged, &parts).await.unwrap();
            for &index in indexes {
                committed.insert(index);
            }
            // Stream 7 sent them all.
            let stored = indexes.iter().map(|&i| (7, i, self.chunk(i))).collect();
            frontier.committed(committed, stored)
        }
    }

    async fn advance(frontier: &mut HashFrontier, committed: &CommittedChunks) -> Vec<u64> {
        let mut acked = Vec::new();
        frontier
            .advance(committed, &mut |_, index| acked.push(index))
            .await
            .unwrap();
        acked
    }

    async fn md5_of(frontier: &mut HashFrontier) -> [u8; 16] {
        frontier.take_hasher().unwrap().finish().await.unwrap().md5
    }

    #[tokio::test]
    async fn chunks_past_a_gap_are_acked_at_once_the_others_as_the_hasher_takes_them() {
        let f = Fixture::new().await;
        let mut frontier = f.frontier(1 << 20);
        let mut committed = CommittedChunks::from_ranges([], CHUNKS);

        let now = f.commit(&mut frontier, &mut committed, &[1, 2]).await;
        assert_eq!(
            now,
            [(7, 1), (7, 2)],
            "past the gap at chunk 0: acked at once"
        );
        assert!(!frontier.can_feed(&committed));

        let now = f.commit(&mut frontier, &mut committed, &[0]).await;
        assert!(now.is_empty(), "chunk 0 extends the prefix: its ack waits");
        assert_eq!(advance(&mut frontier, &committed).await, [0]);

        let now = f.commit(&mut frontier, &mut committed, &[3]).await;
        assert!(now.is_empty());
        assert_eq!(advance(&mut frontier, &committed).await, [3]);
        assert!(frontier.all_hashed());
        assert_eq!(
            md5_of(&mut frontier).await,
            transfer_md5::Md5::digest(&f.data)
        );
    }

    #[tokio::test]
    async fn a_chunk_no_longer_in_memory_is_read_back_from_staging() {
        let f = Fixture::new().await;
        // Nothing may stay parked: every chunk past the gap is dropped at once.
        let mut frontier = f.frontier(0);
        let mut committed = CommittedChunks::from_ranges([], CHUNKS);
        f.commit(&mut frontier, &mut committed, &[3, 2, 1]).await;
        f.commit(&mut frontier, &mut committed, &[0]).await;
        assert_eq!(advance(&mut frontier, &committed).await, [0]);
        assert!(frontier.all_hashed());
        assert_eq!(
            md5_of(&mut frontier).await,
            transfer_md5::Md5::digest(&f.data)
        );
    }

    #[tokio::test]
    async fn the_hash_is_checkpointed_as_it_goes_and_resumes_from_the_checkpoint() {
        let f = Fixture::new().await;
        let mut frontier = f.frontier(1 << 20).checkpointing_every(u64::from(CHUNK));
        let mut committed = CommittedChunks::from_ranges([], CHUNKS);
        f.commit(&mut frontier, &mut committed, &[0, 1]).await;
        advance(&mut frontier, &committed).await;
        assert!(!frontier.has_unsaved(), "saved after each chunk");
        let mut saved = None;
        for _ in 0..100 {
            saved = f.ledger.hash_checkpoint(f.id).await.unwrap();
            if saved.as_ref().is_some_and(|c| c.chunks == 2) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let saved = saved.expect("a checkpoint in the ledger");
        assert_eq!(saved.chunks, 2);

        // A new frontier resumes from it and finishes with the same digest.
        let hasher =
            OrderedHasher::resume(&saved.state, f.layout.offset(2), &HashingSlots::per_core())
                .unwrap();
        let budget = MemoryBudget::new(1 << 30, 1 << 30, Duration::from_secs(1));
        let mut resumed = HashFrontier::new(
            f.id,
            f.staged.clone(),
            f.layout,
            Arc::clone(&f.blobs) as Arc<dyn BlobStore>,
            Arc::clone(&f.ledger) as Arc<dyn UploadLedger>,
            (hasher, 2),
            ParkedChunks::new(1 << 20, budget),
        );
        assert_eq!(
            resumed.behind_by(2),
            0,
            "nothing to read back up to the checkpoint"
        );
        assert_eq!(
            resumed.behind_by(CHUNKS),
            f.layout.size - f.layout.offset(2),
            "the chunks past the checkpoint are read back"
        );
        f.commit(&mut resumed, &mut committed, &[2, 3]).await;
        advance(&mut resumed, &committed).await;
        assert!(resumed.all_hashed());
        assert_eq!(
            md5_of(&mut resumed).await,
            transfer_md5::Md5::digest(&f.data)
        );
    }
}
