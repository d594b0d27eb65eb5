//! The hash frontier on a real embedded ledger, on a store that reads back staged
//! bytes (the filesystem) and on one that cannot (an object store).

use std::time::Duration;

use std::sync::Arc;

use bytes::Bytes;
use uuid::Uuid;

use super::frontier::HashFrontier;
use crate::blob::{BlobStore, FsBlobStore, ObjectBlobStore, Part, PartRules, UploadHandle};
use crate::layout::ChunkLayout;
use crate::ledger::{Lease, UploadLedger};
use crate::ledger::{NewUpload, SqliteLedger};
use crate::upload::committed::CommittedChunks;
use crate::upload::hasher::HashingSlots;
use crate::upload::hasher::OrderedHasher;
use crate::upload::memory::MemoryBudget;
use crate::upload::parked::ParkedChunks;
use transfer_wire::aligned::{BufferPool, DEFAULT_POOL_BYTES};

const CHUNK: u32 = 4096;
const CHUNKS: u64 = 4;

struct Fixture {
    _dir: tempfile::TempDir,
    data: Vec<u8>,
    ledger: Arc<SqliteLedger>,
    blobs: Arc<dyn BlobStore>,
    id: Uuid,
    staged: UploadHandle,
    layout: ChunkLayout,
}

impl Fixture {
    /// On a filesystem store, which reads back staged bytes.
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let buffers = BufferPool::new(DEFAULT_POOL_BYTES);
        let blobs = Arc::new(FsBlobStore::open(&dir.path().join("data"), buffers).unwrap());
        Self::on(dir, blobs).await
    }

    /// On an object store, which cannot read back an unfinished upload.
    async fn on_object_store() -> Self {
        let memory: Arc<dyn crate::blob::MultipartObjectStore> =
            Arc::new(object_store::memory::InMemory::new());
        let blobs = Arc::new(ObjectBlobStore::new(
            memory,
            object_store::path::Path::from("t"),
            PartRules::ANY,
        ));
        Self::on(tempfile::tempdir().unwrap(), blobs).await
    }

    async fn on(dir: tempfile::TempDir, blobs: Arc<dyn BlobStore>) -> Self {
        let ledger = Arc::new(
            SqliteLedger::open(&dir.path().join("ledger.sqlite3"), 2)
                .await
                .unwrap(),
        );
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
            (self.id, Lease::UNTAKEN),
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
        OrderedHasher::resume(&saved.state, f.layout.offset(2), &HashingSlots::per_core()).unwrap();
    let budget = MemoryBudget::new(1 << 30, 1 << 30, Duration::from_secs(1));
    let mut resumed = HashFrontier::new(
        (f.id, Lease::UNTAKEN),
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

#[tokio::test]
async fn a_chunk_the_store_cannot_give_back_leaves_the_hash_to_completion_and_acks_at_once() {
    let f = Fixture::on_object_store().await;
    // Nothing may stay parked: every chunk past the gap is dropped at once.
    let mut frontier = f.frontier(0);
    let mut committed = CommittedChunks::from_ranges([], CHUNKS);
    f.commit(&mut frontier, &mut committed, &[2, 1]).await;
    let now = f.commit(&mut frontier, &mut committed, &[0]).await;
    assert!(now.is_empty(), "chunk 0 extends the prefix: its ack waits");
    assert_eq!(
        advance(&mut frontier, &committed).await,
        [0],
        "chunk 0 was dropped and cannot be read back: its ack goes, unhashed"
    );
    assert!(frontier.is_deferred());
    assert_eq!(frontier.hashed_bytes(), 0);
    assert!(!frontier.can_feed(&committed));
    // From now on every chunk is acked as it is committed.
    let now = f.commit(&mut frontier, &mut committed, &[3]).await;
    assert_eq!(now, [(7, 3)]);
    assert!(!frontier.all_hashed());
}

#[tokio::test]
async fn chunks_still_in_memory_are_hashed_as_they_come_on_an_object_store() {
    let f = Fixture::on_object_store().await;
    let mut frontier = f.frontier(1 << 20);
    let mut committed = CommittedChunks::from_ranges([], CHUNKS);
    f.commit(&mut frontier, &mut committed, &[1, 3, 2]).await;
    f.commit(&mut frontier, &mut committed, &[0]).await;
    assert_eq!(advance(&mut frontier, &committed).await, [0]);
    assert!(!frontier.is_deferred());
    assert!(frontier.all_hashed());
    assert_eq!(
        md5_of(&mut frontier).await,
        transfer_md5::Md5::digest(&f.data)
    );
}
