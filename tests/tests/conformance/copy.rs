//! Copying a ledger (`transferd migrate-ledger`) keeps every record, between any two
//! implementations, and copying again changes nothing.

use std::sync::Arc;
use transfer_service::ledger::Lease;

use transfer_service::ledger::{
    CommittedChunk, ContentDump, FileDump, HashCheckpoint, Ledger, NewUpload, copy_ledger,
};
use transfer_tests::md5;

use crate::ledger::{LedgerBackend, postgres, sqlite};

/// A ledger with a file in every state, a single-pass upload, chunks (with and without
/// receipts), a checkpoint, blob handles and content with its locator.
async fn populate(ledger: &dyn Ledger) {
    let digest = |text: &str| -> [u8; 16] { md5(text.as_bytes()).try_into().expect("16 bytes") };
    let upload = |name: &str| NewUpload {
        owner: "o".into(),
        name: name.into(),
        size: 10_000,
        md5: Some(digest(name)),
        head_md5: Some(digest(&format!("head of {name}"))),
        chunk_size: 4096,
        chunk_count: 3,
        expires_at: chrono::Utc::now() + chrono::Duration::days(1),
    };
    let chunk = |index| CommittedChunk {
        index,
        size: 4096,
        crc32c: 0xFFFF_FFF0 + index as u32,
        receipt: (index != 1).then(|| format!("etag-{index}")),
    };
    let open = ledger.open_upload(&upload("open")).await.unwrap().file.id;
    ledger
        .keep_blob_upload(open, Lease::UNTAKEN, "uploads/open")
        .await
        .unwrap();
    ledger
        .commit_chunks(open, Lease::UNTAKEN, &[chunk(0), chunk(2)])
        .await
        .unwrap();
    let checkpoint = HashCheckpoint {
        chunks: 1,
        state: vec![7; 24],
    };
    ledger
        .save_hash_checkpoint(open, Lease::UNTAKEN, &checkpoint)
        .await
        .unwrap();
    let done = ledger.open_upload(&upload("done")).await.unwrap().file.id;
    ledger
        .commit_chunks(done, Lease::UNTAKEN, &[chunk(0), chunk(1), chunk(2)])
        .await
        .unwrap();
    let done = ledger
        .complete_upload(
            done,
            Lease::UNTAKEN,
            &digest("done"),
            blake3::hash(b"done").as_bytes(),
            "stored/done",
        )
        .await
        .unwrap();
    ledger
        .add_file_for_owned_content(
            "o",
            "copy",
            &digest("done"),
            done.size,
            done.head_md5.as_ref(),
        )
        .await
        .unwrap();
    let failed = ledger.open_upload(&upload("failed")).await.unwrap().file.id;
    ledger
        .fail_upload(failed, Lease::UNTAKEN, "MD5 mismatch: a vs b")
        .await
        .unwrap();
    let aborted = ledger
        .open_upload(&upload("aborted"))
        .await
        .unwrap()
        .file
        .id;
    ledger.abort_upload(aborted).await.unwrap();
    let single_pass = NewUpload {
        md5: None,
        ..upload("single pass")
    };
    let single_pass = ledger.open_upload(&single_pass).await.unwrap().file.id;
    ledger
        .commit_chunks(single_pass, Lease::UNTAKEN, &[chunk(1)])
        .await
        .unwrap();
    // Content stored before BLAKE3 named it, found by its MD5 and the locator kept.
    let legacy = ContentDump {
        md5: digest("legacy"),
        size: 7,
        created_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("a time"),
        locator: Some("content/aa/legacy-7".into()),
    };
    ledger.restore(&[], &[legacy]).await.unwrap();
}

async fn everything(ledger: &dyn Ledger) -> (Vec<FileDump>, Vec<ContentDump>) {
    let mut files = ledger.dump_files(None, 1000).await.unwrap();
    files.sort_by_key(|f| f.file.id);
    (files, ledger.dump_contents(None, 1000).await.unwrap())
}

async fn copies_record_for_record(from: Arc<dyn Ledger>, to: Arc<dyn Ledger>) {
    populate(from.as_ref()).await;
    let report = copy_ledger(from.as_ref(), to.as_ref()).await.unwrap();
    assert_eq!((report.files, report.chunks, report.contents), (6, 6, 2));
    let source = everything(from.as_ref()).await;
    assert_eq!(everything(to.as_ref()).await, source);
    copy_ledger(from.as_ref(), to.as_ref()).await.unwrap();
    assert_eq!(
        everything(to.as_ref()).await,
        source,
        "copying again changes nothing"
    );

    // The copy works as a ledger: the open session resumes, the content is found.
    let open = source.0.iter().find(|f| f.file.name == "open").unwrap();
    assert_eq!(
        to.committed_ranges(open.file.id).await.unwrap(),
        vec![(0, 1), (2, 3)]
    );
    assert_eq!(
        to.get_file(open.file.id)
            .await
            .unwrap()
            .unwrap()
            .blob_upload
            .as_deref(),
        Some("uploads/open")
    );
    assert_eq!(
        to.part_receipts(open.file.id).await.unwrap(),
        vec![(0, "etag-0".to_owned()), (2, "etag-2".to_owned())]
    );
    assert!(
        source
            .1
            .iter()
            .any(|c| c.locator.as_deref() == Some("content/aa/legacy-7")),
        "the MD5 index keeps its locators: {:?}",
        source.1
    );
    let content = source
        .1
        .iter()
        .find(|c| c.md5 == md5(b"done").as_slice())
        .expect("the completed content is in the MD5 index");
    let found = to
        .add_file_for_owned_content("o", "again", &content.md5, content.size, None)
        .await
        .unwrap()
        .expect("the content is found");
    assert_eq!(
        to.content_locator(&found).await.unwrap().as_deref(),
        Some("stored/done"),
        "the content is where it was"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_ledger_copies_to_postgres_record_for_record() {
    let (from, to) = (sqlite().await, postgres().await);
    copies_record_for_record(from.open().await, to.open().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_ledger_copies_to_the_embedded_one_record_for_record() {
    let (from, to) = (postgres().await, sqlite().await);
    copies_record_for_record(from.open().await, to.open().await).await;
}
