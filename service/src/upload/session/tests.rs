//! Rules of the session's parts on a real registry (an embedded ledger and a filesystem
//! store in a temporary directory): the writer keeps what the store returns, beginning
//! gives way to a handle kept first, and attaching checks the owner before anything.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use transfer_wire::aligned::{BufferPool, DEFAULT_POOL_BYTES};
use uuid::Uuid;

use super::task::begin_staging;
use super::writer::write_and_commit;
use super::*;
use crate::blob::{
    BlobError, BlobStore, ContentLocator, FsBlobStore, Part, PartReceipt, StagedUpload,
    UploadHandle,
};
use crate::layout::Limits;
use crate::ledger::{
    CommittedChunk, FileCatalog, Lease, Ledger, NewUpload, SqliteLedger, UploadLedger,
};

/// A filesystem store that tags its receipts, as an object store's ETags, or refuses
/// every write.
struct TestStore {
    inner: FsBlobStore,
    refuses_writes: bool,
}

#[async_trait]
impl BlobStore for TestStore {
    async fn begin(&self, upload: Uuid, size: u64) -> Result<UploadHandle, BlobError> {
        self.inner.begin(upload, size).await
    }

    async fn put_parts(
        &self,
        upload: &UploadHandle,
        parts: &[Part],
    ) -> Result<Vec<PartReceipt>, BlobError> {
        if self.refuses_writes {
            return Err(BlobError::Io {
                action: "writing a part",
                source: std::io::Error::other("the disk is gone"),
            });
        }
        let mut receipts = self.inner.put_parts(upload, parts).await?;
        for receipt in &mut receipts {
            receipt.tag = Some(format!("tag-{}", receipt.index));
        }
        Ok(receipts)
    }

    async fn read_staged(
        &self,
        upload: &UploadHandle,
        offset: u64,
        len: usize,
    ) -> Result<Bytes, BlobError> {
        self.inner.read_staged(upload, offset, len).await
    }

    async fn complete(
        &self,
        upload: &UploadHandle,
        parts: &[PartReceipt],
    ) -> Result<ContentLocator, BlobError> {
        self.inner.complete(upload, parts).await
    }

    async fn free_space(&self) -> Result<Option<u64>, BlobError> {
        self.inner.free_space().await
    }

    async fn delete(&self, content: &ContentLocator) -> Result<(), BlobError> {
        self.inner.delete(content).await
    }

    async fn abort(&self, upload: &UploadHandle) -> Result<(), BlobError> {
        self.inner.abort(upload).await
    }

    async fn discard(&self, upload: &UploadHandle) -> Result<(), BlobError> {
        self.inner.discard(upload).await
    }

    async fn list_staged(&self) -> Result<Vec<StagedUpload>, BlobError> {
        self.inner.list_staged().await
    }

    async fn read(
        &self,
        content: &ContentLocator,
        offset: u64,
        len: usize,
    ) -> Result<Bytes, BlobError> {
        self.inner.read(content, offset, len).await
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    ledger: Arc<SqliteLedger>,
    blobs: Arc<TestStore>,
    registry: Arc<SessionRegistry>,
}

impl Fixture {
    async fn new(refuses_writes: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Arc::new(
            SqliteLedger::open(&dir.path().join("ledger.sqlite3"), 2)
                .await
                .unwrap(),
        );
        let buffers = BufferPool::new(DEFAULT_POOL_BYTES);
        let blobs = Arc::new(TestStore {
            inner: FsBlobStore::open(&dir.path().join("data"), Arc::clone(&buffers)).unwrap(),
            refuses_writes,
        });
        let limits = Limits {
            max_file_size: 1 << 30,
            min_chunk_size: 1,
            max_chunk_size: 1 << 20,
            default_chunk_size: 4096,
            max_window_bytes: 8 << 20,
            max_window_chunks: None,
            max_open_uploads_per_owner: 10,
            max_files_per_owner: 1000,
            owner_quota_bytes: 1 << 30,
            upload_memory_bytes: 1 << 26,
            owner_upload_memory_bytes: 1 << 26,
            first_message_timeout: Duration::from_secs(5),
            stream_idle_timeout: Duration::from_secs(5),
            hash_checkpoint_bytes: 1 << 20,
            upload_expiry: std::time::Duration::from_secs(3600),
        };
        let registry = SessionRegistry::new(
            Arc::clone(&ledger) as Arc<dyn Ledger>,
            Arc::clone(&blobs) as Arc<dyn BlobStore>,
            limits,
            Duration::from_secs(5),
            buffers,
            Arc::new(crate::replica::Replica::new(Duration::from_secs(10))),
        );
        Self {
            _dir: dir,
            ledger,
            blobs,
            registry,
        }
    }

    /// An open upload of three 4 KiB chunks for `owner`.
    async fn upload(&self, owner: &str) -> FileRecord {
        self.ledger
            .open_upload(&NewUpload {
                owner: owner.into(),
                name: "f.bin".into(),
                size: 3 * 4096,
                md5: Some([7; 16]),
                head_md5: None,
                chunk_size: 4096,
                chunk_count: 3,
                expires_at: chrono::Utc::now() + chrono::Duration::days(1),
            })
            .await
            .unwrap()
            .file
    }
}

fn batch(indexes: &[u64]) -> (Vec<Part>, Vec<CommittedChunk>) {
    indexes
        .iter()
        .map(|&index| {
            let data = Bytes::from(vec![index as u8; 4096]);
            let row = CommittedChunk {
                index,
                size: 4096,
                crc32c: crc32c::crc32c(&data),
                receipt: None,
            };
            let part = Part {
                index,
                offset: index * 4096,
                data,
            };
            (part, row)
        })
        .unzip()
}

#[tokio::test]
async fn a_batch_is_recorded_with_the_receipts_the_store_gave_for_each_part() {
    let f = Fixture::new(false).await;
    let file = f.upload("o").await;
    let staged = begin_staging(&f.registry, &file, Lease::UNTAKEN)
        .await
        .unwrap();
    let (parts, rows) = batch(&[2, 0]);
    write_and_commit(
        Arc::clone(&f.registry),
        file.id,
        Lease::UNTAKEN,
        staged,
        parts,
        rows,
        tracing::Span::none(),
    )
    .await
    .unwrap();
    assert_eq!(
        f.ledger.part_receipts(file.id).await.unwrap(),
        vec![(0, "tag-0".to_owned()), (2, "tag-2".to_owned())]
    );
    assert_eq!(
        f.ledger.committed_ranges(file.id).await.unwrap(),
        vec![(0, 1), (2, 3)]
    );
}

#[tokio::test]
async fn a_batch_the_store_refused_is_not_recorded() {
    let f = Fixture::new(true).await;
    let file = f.upload("o").await;
    let staged = begin_staging(&f.registry, &file, Lease::UNTAKEN)
        .await
        .unwrap();
    let (parts, rows) = batch(&[0, 1]);
    let written = write_and_commit(
        Arc::clone(&f.registry),
        file.id,
        Lease::UNTAKEN,
        staged,
        parts,
        rows,
        tracing::Span::none(),
    )
    .await;
    assert!(matches!(written, Err(ServiceError::Blob(_))), "{written:?}");
    assert_eq!(f.ledger.committed_ranges(file.id).await.unwrap(), vec![]);
}

#[tokio::test]
async fn beginning_keeps_its_handle_and_gives_way_to_one_kept_first() {
    let f = Fixture::new(false).await;
    let file = f.upload("o").await;
    let ours = begin_staging(&f.registry, &file, Lease::UNTAKEN)
        .await
        .unwrap();
    let kept = f
        .ledger
        .get_file(file.id)
        .await
        .unwrap()
        .unwrap()
        .blob_upload;
    assert_eq!(kept.as_deref(), Some(ours.as_str()), "the handle is kept");

    // Another process kept a handle of its own first: that one is used, and the staging
    // this one began is dropped.
    let other = f.upload("p").await;
    f.ledger
        .keep_blob_upload(other.id, Lease::UNTAKEN, "elsewhere/1")
        .await
        .unwrap();
    let used = begin_staging(&f.registry, &other, Lease::UNTAKEN)
        .await
        .unwrap();
    assert_eq!(used.as_str(), "elsewhere/1");
    let staged: Vec<Uuid> = f
        .blobs
        .list_staged()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.upload)
        .collect();
    assert_eq!(
        staged,
        vec![file.id],
        "only the first upload's staging is left"
    );
}

#[tokio::test]
async fn beginning_an_upload_closed_meanwhile_leaves_no_staging() {
    let f = Fixture::new(false).await;
    let file = f.upload("o").await;
    f.ledger.abort_upload(file.id).await.unwrap();
    let begun = begin_staging(&f.registry, &file, Lease::UNTAKEN).await;
    assert!(begun.is_err(), "{begun:?}");
    assert!(f.blobs.list_staged().await.unwrap().is_empty());
}

#[tokio::test]
async fn another_owners_upload_is_not_found_and_starts_no_session() {
    let f = Fixture::new(false).await;
    let file = f.upload("alice").await;
    let attached = f
        .registry
        .attach(&Owner::parse(b"mallory").unwrap(), file.id)
        .await;
    assert!(
        matches!(attached, Err(ServiceError::UploadNotFound(id)) if id == file.id),
        "{:?}",
        attached.err()
    );
    assert!(f.registry.lock().is_empty(), "no session task was started");
    assert!(!f.registry.has_streams(file.id).await);
}

#[test]
fn a_stream_counts_as_live_from_its_attach_until_it_is_dropped() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let live = Arc::new(AtomicUsize::new(0));
    let first = LiveStream::new(&live);
    let second = LiveStream::new(&live);
    assert_eq!(live.load(Ordering::Acquire), 2);
    drop(first);
    assert_eq!(live.load(Ordering::Acquire), 1);
    drop(second);
    assert_eq!(live.load(Ordering::Acquire), 0);
}
