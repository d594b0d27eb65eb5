//! The [`BlobStore`] contract, checked on every implementation: what an object store's
//! multipart upload also does (handles, receipts, locators), nothing about files.
//! What the filesystem store promises beyond it is in `blob_fs`.

use std::sync::Arc;

use bytes::Bytes;
use tempfile::TempDir;
use transfer_service::blob::{
    BlobError, BlobStore, ContentLocator, FsBlobStore, MultipartObjectStore, ObjectBlobStore, Part,
    PartReceipt, PartRules, UploadHandle,
};
use transfer_tests::TestFile;
use transfer_tests::s3::S3Server;
use transfer_wire::aligned::{BufferPool, DEFAULT_POOL_BYTES};
use uuid::Uuid;

/// A blob store implementation under test, which can be opened again on the same storage.
pub trait BlobBackend {
    fn open(&self) -> Arc<dyn BlobStore>;
    /// A locator of the form the store makes that names no content.
    fn missing_locator(&self) -> ContentLocator;
}

pub struct Filesystem(TempDir);

impl BlobBackend for Filesystem {
    fn open(&self) -> Arc<dyn BlobStore> {
        let buffers = BufferPool::new(DEFAULT_POOL_BYTES);
        Arc::new(FsBlobStore::open(self.0.path(), buffers).expect("opening the filesystem store"))
    }

    fn missing_locator(&self) -> ContentLocator {
        ContentLocator::new(format!("content/ab/b3-ab{}-10", "0".repeat(62)))
    }
}

pub async fn filesystem() -> Filesystem {
    Filesystem(tempfile::tempdir().expect("a temporary directory"))
}

/// The object store's locators: `content/<xx>/u-<upload>`.
fn missing_object_locator() -> ContentLocator {
    ContentLocator::new(format!("content/ab/u-ab{}", "0".repeat(30)))
}

/// `object_store`'s in-memory store, with S3's part rules (which it does not enforce).
pub struct InMemory(Arc<object_store::memory::InMemory>);

impl BlobBackend for InMemory {
    fn open(&self) -> Arc<dyn BlobStore> {
        let store: Arc<dyn MultipartObjectStore> = self.0.clone();
        Arc::new(ObjectBlobStore::new(
            store,
            object_store::path::Path::from("transfer"),
            PartRules::S3,
        ))
    }

    fn missing_locator(&self) -> ContentLocator {
        missing_object_locator()
    }
}

pub async fn in_memory() -> InMemory {
    InMemory(Arc::new(object_store::memory::InMemory::new()))
}

/// A real S3-compatible server, each test under a prefix of its own.
pub struct S3 {
    server: &'static S3Server,
    url: String,
}

impl BlobBackend for S3 {
    fn open(&self) -> Arc<dyn BlobStore> {
        Arc::new(self.server.blob_store(&self.url))
    }

    fn missing_locator(&self) -> ContentLocator {
        missing_object_locator()
    }
}

pub async fn seaweedfs() -> S3 {
    let server = transfer_tests::s3::seaweedfs();
    S3 {
        server,
        url: server.fresh_url(),
    }
}

pub async fn moto() -> S3 {
    let server = transfer_tests::s3::moto();
    S3 {
        server,
        url: server.fresh_url(),
    }
}

crate::conformance_tests!(crate::blob::suite; [
    filesystem => crate::blob::filesystem(),
    in_memory => crate::blob::in_memory(),
    seaweedfs => crate::blob::seaweedfs(),
    moto => crate::blob::moto(),
]; [
    parts_written_in_any_order_complete_into_the_file,
    a_part_written_again_replaces_the_earlier_one,
    an_aborted_upload_is_not_found,
    completed_content_reads_back_exactly,
    any_byte_range_of_content_reads_back_exactly,
    reads_past_the_end_are_out_of_bounds,
    completing_again_returns_the_same_locator,
    two_uploads_of_the_same_content_both_complete,
    deleted_content_is_gone_and_its_twin_stays,
    deleting_is_idempotent,
    abort_is_idempotent,
    missing_content_is_not_found,
    another_process_completes_an_upload_from_the_kept_handle_and_receipts,
    an_empty_upload_completes,
    staged_uploads_are_listed_until_completed_or_aborted,
    an_upload_begun_twice_leaves_no_staging_once_one_completes,
]);

pub mod suite {
    use super::*;

    /// The part size the tests use on `store`: small, but as large as the store needs
    /// every part but the last to be (5 MiB on S3).
    pub fn part_of(store: &dyn BlobStore) -> usize {
        let min = store.part_rules().min_part_size;
        usize::try_from(min).unwrap_or(usize::MAX).max(1000)
    }

    pub fn parts(file: &TestFile, part: usize, indexes: &[u64]) -> Vec<Part> {
        indexes
            .iter()
            .map(|&index| Part {
                index,
                offset: index * part as u64,
                data: file.chunk(index, part as u32),
            })
            .collect()
    }

    /// Receipts as the ledger keeps and returns them: the tagged ones, by index.
    pub fn kept(mut receipts: Vec<PartReceipt>) -> Vec<PartReceipt> {
        receipts.retain(|r| r.tag.is_some());
        receipts.sort_by_key(|r| r.index);
        receipts
    }

    /// Begins an upload and writes every part; returns its handle and kept receipts.
    pub async fn stage_all(
        store: &dyn BlobStore,
        file: &TestFile,
    ) -> (UploadHandle, Vec<PartReceipt>) {
        let handle = store
            .begin(Uuid::new_v4(), file.data.len() as u64)
            .await
            .unwrap();
        let part = part_of(store);
        let count = file.data.len().div_ceil(part) as u64;
        let all: Vec<u64> = (0..count).collect();
        let receipts = store
            .put_parts(&handle, &parts(file, part, &all))
            .await
            .unwrap();
        (handle, kept(receipts))
    }

    async fn stage_and_complete(store: &dyn BlobStore, file: &TestFile) -> ContentLocator {
        let (handle, receipts) = stage_all(store, file).await;
        store.complete(&handle, &receipts).await.unwrap()
    }

    async fn read_all(store: &dyn BlobStore, content: &ContentLocator, len: usize) -> Bytes {
        store.read(content, 0, len).await.unwrap()
    }

    pub async fn parts_written_in_any_order_complete_into_the_file(b: &impl BlobBackend) {
        let store = b.open();
        let part = part_of(store.as_ref());
        let file = TestFile::new("f", 4 * part + 10, 1);
        let handle = store
            .begin(Uuid::new_v4(), file.data.len() as u64)
            .await
            .unwrap();
        let mut receipts = store
            .put_parts(&handle, &parts(&file, part, &[4, 1]))
            .await
            .unwrap();
        assert_eq!(
            receipts.iter().map(|r| r.index).collect::<Vec<_>>(),
            [4, 1],
            "one receipt per part, in the order given"
        );
        receipts.extend(
            store
                .put_parts(&handle, &parts(&file, part, &[3, 0, 2]))
                .await
                .unwrap(),
        );
        let content = store.complete(&handle, &kept(receipts)).await.unwrap();
        assert_eq!(
            read_all(store.as_ref(), &content, file.data.len()).await,
            file.data
        );
    }

    pub async fn a_part_written_again_replaces_the_earlier_one(b: &impl BlobBackend) {
        let store = b.open();
        let part = part_of(store.as_ref());
        let file = TestFile::new("f", 2 * part, 2);
        let other = TestFile::new("g", 2 * part, 3);
        let handle = store
            .begin(Uuid::new_v4(), file.data.len() as u64)
            .await
            .unwrap();
        store
            .put_parts(&handle, &parts(&other, part, &[0, 1]))
            .await
            .unwrap();
        // The receipts of the later writes are the ones the ledger keeps.
        let receipts = store
            .put_parts(&handle, &parts(&file, part, &[1, 0]))
            .await
            .unwrap();
        let content = store.complete(&handle, &kept(receipts)).await.unwrap();
        assert_eq!(
            read_all(store.as_ref(), &content, file.data.len()).await,
            file.data
        );
    }

    pub async fn an_aborted_upload_is_not_found(b: &impl BlobBackend) {
        let store = b.open();
        let part = part_of(store.as_ref());
        let file = TestFile::new("f", part, 2);
        let (handle, receipts) = stage_all(store.as_ref(), &file).await;
        store.abort(&handle).await.unwrap();
        assert!(matches!(
            store.put_parts(&handle, &parts(&file, part, &[0])).await,
            Err(BlobError::UploadNotFound(h)) if h == handle
        ));
        assert!(matches!(
            store.complete(&handle, &receipts).await,
            Err(BlobError::UploadNotFound(_))
        ));
    }

    pub async fn completed_content_reads_back_exactly(b: &impl BlobBackend) {
        let store = b.open();
        let part = part_of(store.as_ref());
        let file = TestFile::new("f", 3 * part + 7, 4);
        let content = stage_and_complete(store.as_ref(), &file).await;
        assert_eq!(
            read_all(store.as_ref(), &content, file.data.len()).await,
            file.data
        );
        let tail = store.read(&content, 3 * part as u64, 7).await.unwrap();
        assert_eq!(tail, file.data.slice(3 * part..));
    }

    pub async fn any_byte_range_of_content_reads_back_exactly(b: &impl BlobBackend) {
        let store = b.open();
        // Several 4 KiB blocks and a ragged end, read across and along block edges.
        let file = TestFile::new("f", 5 * 4096 + 123, 11);
        let content = stage_and_complete(store.as_ref(), &file).await;
        let size = file.data.len();
        for (offset, len) in [
            (0, 4096),
            (1, 4095),
            (4095, 2),
            (4096, 4096),
            (4000, 9000),
            (8192, size - 8192),
            (size - 123, 123),
            (size - 1, 1),
            (size, 0),
            (12_345, 0),
        ] {
            let read = store.read(&content, offset as u64, len).await.unwrap();
            assert_eq!(
                read,
                file.data.slice(offset..offset + len),
                "{len} bytes at {offset}"
            );
        }
        // A second store on the same storage reads the same (nothing kept in memory).
        let again = b.open().read(&content, 3, size - 3).await.unwrap();
        assert_eq!(again, file.data.slice(3..));
    }

    pub async fn reads_past_the_end_are_out_of_bounds(b: &impl BlobBackend) {
        let store = b.open();
        let part = part_of(store.as_ref());
        let file = TestFile::new("f", part, 5);
        let content = stage_and_complete(store.as_ref(), &file).await;
        let size = part as u64;
        for (offset, len) in [(size - 1, 2), (size + 1, 0), (u64::MAX, 1)] {
            assert!(
                matches!(
                    store.read(&content, offset, len).await,
                    Err(BlobError::OutOfBounds { .. })
                ),
                "{len} bytes at {offset}"
            );
        }
    }

    pub async fn completing_again_returns_the_same_locator(b: &impl BlobBackend) {
        let store = b.open();
        let part = part_of(store.as_ref());
        let file = TestFile::new("f", 2 * part, 6);
        let (handle, receipts) = stage_all(store.as_ref(), &file).await;
        let first = store.complete(&handle, &receipts).await.unwrap();
        // As after a crash between storing the content and recording it.
        let again = b.open().complete(&handle, &receipts).await.unwrap();
        assert_eq!(again, first);
        assert_eq!(
            read_all(store.as_ref(), &again, file.data.len()).await,
            file.data
        );
    }

    pub async fn two_uploads_of_the_same_content_both_complete(b: &impl BlobBackend) {
        let store = b.open();
        let part = part_of(store.as_ref());
        let file = TestFile::new("f", 2 * part, 6);
        let (first, first_receipts) = stage_all(store.as_ref(), &file).await;
        let (second, second_receipts) = stage_all(store.as_ref(), &file).await;
        let one = store.complete(&first, &first_receipts).await.unwrap();
        let two = store.complete(&second, &second_receipts).await.unwrap();
        // Each under its own locator: which copy stays is the ledger's decision.
        assert_ne!(one, two);
        for content in [one, two] {
            assert_eq!(
                read_all(store.as_ref(), &content, file.data.len()).await,
                file.data
            );
        }
    }

    pub async fn deleted_content_is_gone_and_its_twin_stays(b: &impl BlobBackend) {
        let store = b.open();
        let part = part_of(store.as_ref());
        let file = TestFile::new("f", 2 * part, 16);
        let (first, first_receipts) = stage_all(store.as_ref(), &file).await;
        let (second, second_receipts) = stage_all(store.as_ref(), &file).await;
        let doomed = store.complete(&first, &first_receipts).await.unwrap();
        let twin = store.complete(&second, &second_receipts).await.unwrap();
        store.delete(&doomed).await.unwrap();
        assert!(matches!(
            store.read(&doomed, 0, 1).await,
            Err(BlobError::ContentNotFound(l)) if l == doomed
        ));
        assert_eq!(
            read_all(store.as_ref(), &twin, file.data.len()).await,
            file.data
        );
    }

    pub async fn deleting_is_idempotent(b: &impl BlobBackend) {
        let store = b.open();
        let part = part_of(store.as_ref());
        let file = TestFile::new("f", part, 17);
        let (handle, receipts) = stage_all(store.as_ref(), &file).await;
        let content = store.complete(&handle, &receipts).await.unwrap();
        store.delete(&content).await.unwrap();
        store.delete(&content).await.unwrap();
        store.delete(&b.missing_locator()).await.unwrap();
    }

    pub async fn abort_is_idempotent(b: &impl BlobBackend) {
        let store = b.open();
        let part = part_of(store.as_ref());
        let file = TestFile::new("f", part, 7);
        let (handle, _) = stage_all(store.as_ref(), &file).await;
        store.abort(&handle).await.unwrap();
        store.abort(&handle).await.unwrap();
        let never_written = store.begin(Uuid::new_v4(), 10).await.unwrap();
        store.abort(&never_written).await.unwrap();
        store.abort(&never_written).await.unwrap();
    }

    pub async fn missing_content_is_not_found(b: &impl BlobBackend) {
        let store = b.open();
        let missing = b.missing_locator();
        assert!(matches!(
            store.read(&missing, 0, 1).await,
            Err(BlobError::ContentNotFound(l)) if l == missing
        ));
    }

    pub async fn another_process_completes_an_upload_from_the_kept_handle_and_receipts(
        b: &impl BlobBackend,
    ) {
        let first = b.open();
        let part = part_of(first.as_ref());
        let file = TestFile::new("f", 4 * part, 8);
        let handle = first
            .begin(Uuid::new_v4(), file.data.len() as u64)
            .await
            .unwrap();
        let mut receipts = first
            .put_parts(&handle, &parts(&file, part, &[0, 2]))
            .await
            .unwrap();
        drop(first);
        // Only the names kept in the ledger travel to the next process.
        let (handle, kept_so_far) = (
            UploadHandle::new(handle.as_str()),
            kept(std::mem::take(&mut receipts)),
        );
        let second = b.open();
        let mut all = kept_so_far;
        all.extend(
            second
                .put_parts(&handle, &parts(&file, part, &[1, 3]))
                .await
                .unwrap(),
        );
        let content = second.complete(&handle, &kept(all)).await.unwrap();
        let content = ContentLocator::new(content.as_str());
        assert_eq!(
            read_all(b.open().as_ref(), &content, file.data.len()).await,
            file.data
        );
    }

    pub async fn an_empty_upload_completes(b: &impl BlobBackend) {
        let store = b.open();
        let handle = store.begin(Uuid::new_v4(), 0).await.unwrap();
        let content = store.complete(&handle, &[]).await.unwrap();
        assert_eq!(store.read(&content, 0, 0).await.unwrap(), Bytes::new());
    }

    pub async fn staged_uploads_are_listed_until_completed_or_aborted(b: &impl BlobBackend) {
        let store = b.open();
        let part = part_of(store.as_ref());
        let file = TestFile::new("f", part, 10);
        let (done, done_receipts) = stage_all(store.as_ref(), &file).await;
        let (dropped, _) = stage_all(store.as_ref(), &file).await;
        let (open, _) = stage_all(store.as_ref(), &file).await;
        let handles = |listed: Vec<transfer_service::blob::StagedUpload>| {
            let mut handles: Vec<String> =
                listed.into_iter().map(|s| s.handle.to_string()).collect();
            handles.sort();
            handles
        };
        let mut expected: Vec<String> = [&done, &dropped, &open]
            .iter()
            .map(|h| h.to_string())
            .collect();
        expected.sort();
        assert_eq!(handles(store.list_staged().await.unwrap()), expected);
        store.complete(&done, &done_receipts).await.unwrap();
        store.abort(&dropped).await.unwrap();
        assert_eq!(
            handles(store.list_staged().await.unwrap()),
            vec![open.to_string()]
        );
    }

    pub async fn an_upload_begun_twice_leaves_no_staging_once_one_completes(b: &impl BlobBackend) {
        // As when a replica died between beginning an upload and the ledger keeping the
        // handle, and another began it again.
        let store = b.open();
        let part = part_of(store.as_ref());
        let file = TestFile::new("f", 2 * part, 18);
        let upload = Uuid::new_v4();
        let size = file.data.len() as u64;
        let forgotten = store.begin(upload, size).await.unwrap();
        store
            .put_parts(&forgotten, &parts(&file, part, &[0]))
            .await
            .unwrap();
        let kept = store.begin(upload, size).await.unwrap();
        let receipts = store
            .put_parts(&kept, &parts(&file, part, &[0, 1]))
            .await
            .unwrap();
        let content = store
            .complete(&kept, &super::suite::kept(receipts))
            .await
            .unwrap();
        assert_eq!(store.list_staged().await.unwrap(), vec![]);
        assert_eq!(
            read_all(store.as_ref(), &content, file.data.len()).await,
            file.data
        );
    }
}
