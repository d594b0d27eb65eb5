//! What the S3 blob store promises beyond the [`BlobStore`] contract, on SeaweedFS and
//! on moto: a multipart upload it has no staging marker for (a replica killed between
//! creating one and writing its marker leaves such) is still found, by listing the
//! bucket's multipart uploads, and never left behind.

use transfer_service::blob::BlobStore;
use transfer_tests::TestFile;
use transfer_tests::s3::S3Server;
use uuid::Uuid;

use crate::blob::suite::{kept, part_of, parts};

/// Where the store puts upload `upload`'s content (and its multipart uploads).
fn content_key(upload: Uuid) -> String {
    let id = upload.as_simple().to_string();
    format!("content/{}/u-{id}", &id[..2])
}

async fn an_unmarked_multipart_upload_is_listed_as_staging_and_aborted_with_it(server: &S3Server) {
    let url = server.fresh_url();
    let store = server.blob_store(&url);
    let upload = Uuid::new_v4();
    let multipart = server.create_multipart(&url, &content_key(upload)).await;

    let staged = store.list_staged().await.unwrap();
    let found: Vec<_> = staged.iter().filter(|s| s.upload == upload).collect();
    assert_eq!(
        found.len(),
        1,
        "the unmarked multipart upload is listed: {staged:?}"
    );
    assert!(
        found[0].handle.to_string().ends_with(&multipart),
        "{:?} names multipart upload {multipart}",
        found[0].handle
    );
    store.abort(&found[0].handle).await.unwrap();
    assert_eq!(server.multipart_uploads(&url).await, Vec::<String>::new());
    assert!(store.list_staged().await.unwrap().is_empty());
}

async fn completing_an_upload_aborts_every_other_multipart_upload_at_its_key(server: &S3Server) {
    let url = server.fresh_url();
    let store = server.blob_store(&url);
    let part = part_of(&store);
    let file = TestFile::new("f", part + 10, 31);
    let upload = Uuid::new_v4();
    let kept_handle = store.begin(upload, file.data.len() as u64).await.unwrap();
    // Left by a replica that died before its marker was written.
    server.create_multipart(&url, &content_key(upload)).await;
    let receipts = store
        .put_parts(&kept_handle, &parts(&file, part, &[0, 1]))
        .await
        .unwrap();
    store.complete(&kept_handle, &kept(receipts)).await.unwrap();
    assert_eq!(
        server.multipart_uploads(&url).await,
        Vec::<String>::new(),
        "no multipart upload is left open at the completed upload's key"
    );
}

async fn aborting_an_upload_aborts_every_multipart_upload_at_its_key(server: &S3Server) {
    let url = server.fresh_url();
    let store = server.blob_store(&url);
    let upload = Uuid::new_v4();
    let handle = store.begin(upload, 1).await.unwrap();
    server.create_multipart(&url, &content_key(upload)).await;
    store.abort(&handle).await.unwrap();
    assert_eq!(server.multipart_uploads(&url).await, Vec::<String>::new());
}

async fn parts_sent_unsigned_complete_into_the_file(server: &S3Server) {
    // Over TLS the bodies go as UNSIGNED-PAYLOAD (TLS checks them); the server takes
    // that as well as signed ones.
    let url = server.fresh_url();
    let settings = transfer_service::blob::S3Settings {
        sign_payload: Some(false),
        ..server.settings()
    };
    let store = transfer_service::blob::open_s3(&url, &settings).unwrap();
    let part = part_of(&store);
    let file = TestFile::new("f", part + 10, 32);
    let handle = store
        .begin(Uuid::new_v4(), file.data.len() as u64)
        .await
        .unwrap();
    let receipts = store
        .put_parts(&handle, &parts(&file, part, &[1, 0]))
        .await
        .unwrap();
    let content = store.complete(&handle, &kept(receipts)).await.unwrap();
    let read = store.read(&content, 0, file.data.len()).await.unwrap();
    assert!(read == file.data, "the content reads back exactly");
}

async fn discarding_a_handle_not_kept_leaves_the_kept_one(server: &S3Server) {
    // Two replicas began the same upload; the ledger kept the second's handle, and the
    // first drops its own: the kept one must go on (aborting the upload would take it).
    let url = server.fresh_url();
    let store = server.blob_store(&url);
    let part = part_of(&store);
    let file = TestFile::new("f", part + 10, 33);
    let upload = Uuid::new_v4();
    let size = file.data.len() as u64;
    let lost = store.begin(upload, size).await.unwrap();
    let kept_handle = store.begin(upload, size).await.unwrap();
    store.discard(&lost).await.unwrap();
    let receipts = store
        .put_parts(&kept_handle, &parts(&file, part, &[0, 1]))
        .await
        .expect("the kept upload takes parts after the other was discarded");
    let content = store.complete(&kept_handle, &kept(receipts)).await.unwrap();
    let read = store.read(&content, 0, file.data.len()).await.unwrap();
    assert!(read == file.data, "the content reads back exactly");
    assert_eq!(server.multipart_uploads(&url).await, Vec::<String>::new());
}

macro_rules! on_both_servers {
    ($($test:ident),* $(,)?) => {
        mod seaweedfs {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(transfer_tests::s3::seaweedfs()).await;
                }
            )*
        }
        mod moto {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(transfer_tests::s3::moto()).await;
                }
            )*
        }
    };
}

on_both_servers!(
    an_unmarked_multipart_upload_is_listed_as_staging_and_aborted_with_it,
    completing_an_upload_aborts_every_other_multipart_upload_at_its_key,
    aborting_an_upload_aborts_every_multipart_upload_at_its_key,
    parts_sent_unsigned_complete_into_the_file,
    discarding_a_handle_not_kept_leaves_the_kept_one,
);
