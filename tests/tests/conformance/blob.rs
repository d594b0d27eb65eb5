//! The [`BlobStore`] contract, checked on every implementation.

use std::sync::Arc;

use bytes::Bytes;
use tempfile::TempDir;
use transfer_service::blob::{BlobError, BlobStore, ContentKey, FsBlobStore, Part};
use transfer_tests::{TestFile, md5};
use uuid::Uuid;

/// A blob store implementation under test, which can be opened again on the same storage.
pub trait BlobBackend {
    fn open(&self) -> Arc<dyn BlobStore>;
}

pub struct Filesystem(TempDir);

impl BlobBackend for Filesystem {
    fn open(&self) -> Arc<dyn BlobStore> {
        Arc::new(FsBlobStore::open(self.0.path()).expect("opening the filesystem store"))
    }
}

async fn filesystem() -> Filesystem {
    Filesystem(tempfile::tempdir().expect("a temporary directory"))
}

crate::conformance_tests!(crate::blob::suite; [filesystem => crate::blob::filesystem()]; [
    parts_written_in_any_order_read_back_at_their_offsets,
    an_upload_never_begun_is_not_found,
    begin_again_keeps_the_parts_written,
    completed_content_reads_back_exactly,
    any_byte_range_of_content_reads_back_exactly,
    reads_past_the_end_are_out_of_bounds,
    completing_the_same_content_twice_keeps_one_copy,
    abort_drops_the_staging_and_is_idempotent,
    missing_content_is_not_found,
    staged_parts_survive_reopening,
    an_empty_upload_completes,
    staged_uploads_are_listed_until_completed_or_aborted,
]);

pub mod suite {
    use super::*;

    const PART: usize = 1000;

    fn parts(file: &TestFile, indexes: &[u64]) -> Vec<Part> {
        indexes
            .iter()
            .map(|&index| Part {
                index,
                offset: index * PART as u64,
                data: file.chunk(index, PART as u32),
            })
            .collect()
    }

    fn key(file: &TestFile) -> ContentKey {
        ContentKey::Blake3 {
            digest: *blake3::hash(&file.data).as_bytes(),
            size: file.data.len() as u64,
        }
    }

    async fn stage_all(store: &dyn BlobStore, upload: Uuid, file: &TestFile) {
        store.begin(upload, file.data.len() as u64).await.unwrap();
        let count = file.data.len().div_ceil(PART) as u64;
        let all: Vec<u64> = (0..count).collect();
        store.put_parts(upload, &parts(file, &all)).await.unwrap();
    }

    pub async fn parts_written_in_any_order_read_back_at_their_offsets(b: &impl BlobBackend) {
        let store = b.open();
        let file = TestFile::new("f", 4 * PART + 10, 1);
        let upload = Uuid::new_v4();
        store.begin(upload, file.data.len() as u64).await.unwrap();
        store
            .put_parts(upload, &parts(&file, &[4, 1]))
            .await
            .unwrap();
        store
            .put_parts(upload, &parts(&file, &[3, 0, 2]))
            .await
            .unwrap();
        let all = store.read_staged(upload, 0, file.data.len()).await.unwrap();
        assert_eq!(all, file.data);
        let middle = store.read_staged(upload, 1500, 1000).await.unwrap();
        assert_eq!(middle, file.data.slice(1500..2500));
    }

    pub async fn an_upload_never_begun_is_not_found(b: &impl BlobBackend) {
        let store = b.open();
        let file = TestFile::new("f", PART, 2);
        let upload = Uuid::new_v4();
        assert!(matches!(
            store.put_parts(upload, &parts(&file, &[0])).await,
            Err(BlobError::UploadNotFound(id)) if id == upload
        ));
        assert!(matches!(
            store.read_staged(upload, 0, 1).await,
            Err(BlobError::UploadNotFound(_))
        ));
        assert!(matches!(
            store.complete(upload, &key(&file)).await,
            Err(BlobError::UploadNotFound(_))
        ));
    }

    pub async fn begin_again_keeps_the_parts_written(b: &impl BlobBackend) {
        let store = b.open();
        let file = TestFile::new("f", 2 * PART, 3);
        let upload = Uuid::new_v4();
        store.begin(upload, file.data.len() as u64).await.unwrap();
        store.put_parts(upload, &parts(&file, &[1])).await.unwrap();
        store.begin(upload, file.data.len() as u64).await.unwrap();
        let second = store.read_staged(upload, PART as u64, PART).await.unwrap();
        assert_eq!(second, file.chunk(1, PART as u32));
    }

    pub async fn completed_content_reads_back_exactly(b: &impl BlobBackend) {
        let store = b.open();
        let file = TestFile::new("f", 3 * PART + 7, 4);
        let upload = Uuid::new_v4();
        stage_all(store.as_ref(), upload, &file).await;
        assert!(!store.content_exists(&key(&file)).await.unwrap());
        store.complete(upload, &key(&file)).await.unwrap();
        assert!(store.content_exists(&key(&file)).await.unwrap());
        let all = store.read(&key(&file), 0, file.data.len()).await.unwrap();
        assert_eq!(all, file.data);
        let tail = store.read(&key(&file), 3000, 7).await.unwrap();
        assert_eq!(tail, file.data.slice(3000..));
        assert!(
            matches!(
                store.read_staged(upload, 0, 1).await,
                Err(BlobError::UploadNotFound(_))
            ),
            "completing removes the staging"
        );
    }

    pub async fn any_byte_range_of_content_reads_back_exactly(b: &impl BlobBackend) {
        let store = b.open();
        // Several 4 KiB blocks and a ragged end, read across and along block edges.
        let file = TestFile::new("f", 5 * 4096 + 123, 11);
        let upload = Uuid::new_v4();
        stage_all(store.as_ref(), upload, &file).await;
        store.complete(upload, &key(&file)).await.unwrap();
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
            let read = store.read(&key(&file), offset as u64, len).await.unwrap();
            assert_eq!(
                read,
                file.data.slice(offset..offset + len),
                "{len} bytes at {offset}"
            );
        }
        // A second store on the same files reads the same (nothing kept in memory).
        let again = b.open().read(&key(&file), 3, size - 3).await.unwrap();
        assert_eq!(again, file.data.slice(3..));
    }

    pub async fn reads_past_the_end_are_out_of_bounds(b: &impl BlobBackend) {
        let store = b.open();
        let file = TestFile::new("f", PART, 5);
        let upload = Uuid::new_v4();
        stage_all(store.as_ref(), upload, &file).await;
        assert!(matches!(
            store.read_staged(upload, 999, 2).await,
            Err(BlobError::OutOfBounds { .. })
        ));
        store.complete(upload, &key(&file)).await.unwrap();
        assert!(matches!(
            store.read(&key(&file), u64::MAX, 1).await,
            Err(BlobError::OutOfBounds { .. })
        ));
    }

    pub async fn completing_the_same_content_twice_keeps_one_copy(b: &impl BlobBackend) {
        let store = b.open();
        let file = TestFile::new("f", 2 * PART, 6);
        let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
        stage_all(store.as_ref(), first, &file).await;
        stage_all(store.as_ref(), second, &file).await;
        store.complete(first, &key(&file)).await.unwrap();
        store.complete(second, &key(&file)).await.unwrap();
        let all = store.read(&key(&file), 0, file.data.len()).await.unwrap();
        assert_eq!(all, file.data);
        assert!(matches!(
            store.read_staged(second, 0, 1).await,
            Err(BlobError::UploadNotFound(_))
        ));
    }

    pub async fn abort_drops_the_staging_and_is_idempotent(b: &impl BlobBackend) {
        let store = b.open();
        let file = TestFile::new("f", PART, 7);
        let upload = Uuid::new_v4();
        stage_all(store.as_ref(), upload, &file).await;
        store.abort(upload).await.unwrap();
        store.abort(upload).await.unwrap();
        assert!(matches!(
            store.put_parts(upload, &parts(&file, &[0])).await,
            Err(BlobError::UploadNotFound(_))
        ));
        store.abort(Uuid::new_v4()).await.unwrap();
    }

    pub async fn missing_content_is_not_found(b: &impl BlobBackend) {
        let store = b.open();
        let missing = ContentKey::Md5 {
            md5: md5(b"nothing").try_into().expect("16 bytes"),
            size: 10,
        };
        assert!(!store.content_exists(&missing).await.unwrap());
        assert!(matches!(
            store.read(&missing, 0, 1).await,
            Err(BlobError::ContentNotFound(k)) if k == missing
        ));
    }

    pub async fn staged_parts_survive_reopening(b: &impl BlobBackend) {
        let file = TestFile::new("f", 2 * PART, 8);
        let upload = Uuid::new_v4();
        stage_all(b.open().as_ref(), upload, &file).await;
        let store = b.open();
        let all = store.read_staged(upload, 0, file.data.len()).await.unwrap();
        assert_eq!(all, file.data);
    }

    pub async fn an_empty_upload_completes(b: &impl BlobBackend) {
        let store = b.open();
        let file = TestFile::new("f", 0, 9);
        let upload = Uuid::new_v4();
        store.begin(upload, 0).await.unwrap();
        store.complete(upload, &key(&file)).await.unwrap();
        assert!(store.content_exists(&key(&file)).await.unwrap());
        assert_eq!(store.read(&key(&file), 0, 0).await.unwrap(), Bytes::new());
    }

    pub async fn staged_uploads_are_listed_until_completed_or_aborted(b: &impl BlobBackend) {
        let store = b.open();
        let file = TestFile::new("f", PART, 10);
        let (done, dropped, open) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        for upload in [done, dropped, open] {
            stage_all(store.as_ref(), upload, &file).await;
        }
        let mut listed = store.list_staged().await.unwrap();
        listed.sort();
        let mut expected = vec![done, dropped, open];
        expected.sort();
        assert_eq!(listed, expected);
        store.complete(done, &key(&file)).await.unwrap();
        store.abort(dropped).await.unwrap();
        assert_eq!(store.list_staged().await.unwrap(), vec![open]);
    }
}
