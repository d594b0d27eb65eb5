//! Garbage collection through the real server: content goes only once no file holds it
//! and the grace period has passed; spare copies go; racing downloads and instant
//! uploads never see a byte wrong.
//!
//! The tests run the collector's passes themselves ([`TestServer::collector`]), where
//! they want them; one test checks that the server runs them by itself.

use std::time::Duration;

use tonic::Code;
use transfer_proto::v1::check_upload_response::Result as Answer;
use transfer_proto::v1::{FileInfo, ListFilesRequest};
use transfer_service::lifecycle::Collected;
use transfer_tests::client::{Client, check, delete_file, list_all};
use transfer_tests::{Ledger, TestFile, TestServer, download, upload_file};

use crate::CHUNK;

const NOW: Duration = Duration::ZERO;
const AN_HOUR: Duration = Duration::from_secs(3600);

/// The file `CheckUpload` made at once for content `owner` has, under `file`'s name.
async fn instant_copy(client: &mut Client, owner: Option<&str>, file: &TestFile) -> FileInfo {
    match check(client, owner, file, CHUNK).await {
        Ok(Answer::AlreadyStored(copy)) => copy,
        other => panic!("expected an instant upload, got {other:?}"),
    }
}

/// The same content under another name.
fn renamed(file: &TestFile, name: &str) -> TestFile {
    TestFile {
        name: name.to_owned(),
        ..file.clone()
    }
}

async fn reads_back(client: &mut Client, owner: Option<&str>, id: &str, file: &TestFile) {
    let read = download(client, owner, id, 0, 0).await.expect("Download");
    assert!(read.data == file.data, "file {id} reads back byte for byte");
}

async fn content_outlives_a_deleted_file_while_another_file_holds_it(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("a.bin", 5 * CHUNK as usize + 1, 110);
    let first = upload_file(&mut client, None, &file, CHUNK).await;
    let copy = instant_copy(&mut client, None, &renamed(&file, "copy.bin")).await;
    delete_file(&mut client, None, &first.file_id)
        .await
        .unwrap();

    let collected = server.collector(NOW).await.pass().await.unwrap();
    assert_eq!(collected, Collected::default());
    assert_eq!(server.content_files().len(), 1);
    reads_back(&mut client, None, &copy.file_id, &file).await;
}

async fn deleted_content_is_collected_after_its_grace_and_then_uploads_in_full(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("a.bin", 5 * CHUNK as usize + 1, 111);
    let first = upload_file(&mut client, None, &file, CHUNK).await;
    delete_file(&mut client, None, &first.file_id)
        .await
        .unwrap();

    let within_grace = server.collector(AN_HOUR).await.pass().await.unwrap();
    assert_eq!(within_grace, Collected::default());
    assert_eq!(server.content_files().len(), 1);
    let collected = server.collector(NOW).await.pass().await.unwrap();
    assert_eq!(
        collected,
        Collected {
            contents: 1,
            blobs: 1
        }
    );
    assert!(server.content_files().is_empty());
    assert_eq!(
        server.collector(NOW).await.pass().await.unwrap(),
        Collected::default(),
        "a second pass finds nothing"
    );

    // Nothing of it is left to be instant: it uploads in full, and reads back.
    assert!(matches!(
        check(&mut client, None, &file, CHUNK).await,
        Ok(Answer::Session(_))
    ));
    let again = upload_file(&mut client, None, &file, CHUNK).await;
    reads_back(&mut client, None, &again.file_id, &file).await;
}

async fn a_second_copy_of_stored_content_is_deleted_and_both_files_read_the_first(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("same.bin", 4 * CHUNK as usize, 112);
    let alices = upload_file(&mut client, Some("alice"), &file, CHUNK).await;
    let bobs = upload_file(&mut client, Some("bob"), &file, CHUNK).await;
    assert_eq!(
        server.content_files().len(),
        2,
        "each upload completes its own copy"
    );

    // Spare copies need no grace: nothing ever referred to them.
    let collected = server.collector(AN_HOUR).await.pass().await.unwrap();
    assert_eq!(
        collected,
        Collected {
            contents: 0,
            blobs: 1
        }
    );
    assert_eq!(server.content_files().len(), 1);
    reads_back(&mut client, Some("alice"), &alices.file_id, &file).await;
    reads_back(&mut client, Some("bob"), &bobs.file_id, &file).await;
}

async fn a_blob_that_cannot_be_deleted_holds_up_no_other(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    // Queued first: a name this store never made, which it refuses to delete.
    let queued_long_ago = match ledger {
        Ledger::Postgres => "now() - interval '1 day'",
        Ledger::Sqlite => "0",
    };
    server
        .ledger_execute(&format!(
            "INSERT INTO blob_garbage (locator, queued_at) VALUES ('elsewhere/0', {queued_long_ago})"
        ))
        .await;
    let file = TestFile::new("a.bin", 3 * CHUNK as usize, 114);
    let done = upload_file(&mut client, None, &file, CHUNK).await;
    delete_file(&mut client, None, &done.file_id).await.unwrap();
    let collected = server.collector(NOW).await.pass().await.unwrap();
    assert_eq!(
        collected,
        Collected {
            contents: 1,
            blobs: 1
        }
    );
    assert!(server.content_files().is_empty());
    assert_eq!(
        server
            .ledger_number("SELECT count(*) FROM blob_garbage")
            .await,
        1,
        "the refused one stays queued"
    );
}

async fn the_server_collects_garbage_by_itself(ledger: Ledger) {
    let server = TestServer::start_with(ledger, |settings| {
        settings.gc_grace_secs = 0;
        settings.gc_interval_secs = 1;
    })
    .await;
    let mut client = server.client().await;
    let file = TestFile::new("a.bin", 3 * CHUNK as usize, 113);
    let done = upload_file(&mut client, None, &file, CHUNK).await;
    delete_file(&mut client, None, &done.file_id).await.unwrap();
    for _ in 0..300 {
        if server.content_files().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the server did not collect deleted content within 30 s of passes every second");
}

async fn a_download_racing_the_deletion_of_its_file_is_intact_or_not_found(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let collector = server.collector(NOW).await;
    let mut client = server.client().await;
    let (mut intact, mut not_found) = (0, 0);
    for round in 0..12u8 {
        let file = TestFile::new("raced.bin", 3 << 20, 120 + u64::from(round));
        let done = upload_file(&mut client, None, &file, 1 << 20).await;
        let mut reader = client.clone();
        let reading = async { download(&mut reader, None, &done.file_id, 0, 0).await };
        let deleting = async {
            // Let the download start in some rounds, not in others.
            tokio::time::sleep(Duration::from_millis(u64::from(round % 4))).await;
            delete_file(&mut client.clone(), None, &done.file_id)
                .await
                .unwrap();
            collector.pass().await.unwrap();
        };
        let (read, ()) = tokio::join!(reading, deleting);
        match read {
            Ok(read) => {
                assert!(
                    read.data == file.data,
                    "round {round}: a complete download is intact"
                );
                intact += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::NotFound, "round {round}: {status:?}");
                not_found += 1;
            }
        }
    }
    assert_eq!(intact + not_found, 12);
    assert!(
        server.content_files().is_empty(),
        "every deleted file's content went"
    );
}

async fn an_instant_upload_racing_the_collector_keeps_its_content_or_uploads_afresh(
    ledger: Ledger,
) {
    let server = TestServer::start(ledger).await;
    let collector = server.collector(NOW).await;
    let mut client = server.client().await;
    for round in 0..12u8 {
        let file = TestFile::new("raced.bin", 6 * CHUNK as usize, 140 + u64::from(round));
        let first = upload_file(&mut client, None, &file, CHUNK).await;
        let deleting = async {
            delete_file(&mut client.clone(), None, &first.file_id)
                .await
                .unwrap();
            collector.pass().await.unwrap();
        };
        let copy = renamed(&file, "copy.bin");
        let mut asker = client.clone();
        let (answer, ()) = tokio::join!(check(&mut asker, None, &copy, CHUNK), deleting);
        let kept = match answer.unwrap() {
            Answer::AlreadyStored(kept) => kept,
            Answer::Session(_) => upload_file(&mut client, None, &copy, CHUNK).await,
            other => panic!("round {round}: {other:?}"),
        };
        // Whatever the collector did since, the file reads back.
        collector.pass().await.unwrap();
        reads_back(&mut client, None, &kept.file_id, &file).await;
    }
    // Once every file is gone, so is every blob: no orphan left by any round.
    for file in list_all(&mut client, None, ListFilesRequest::default()).await {
        delete_file(&mut client, None, &file.file_id).await.unwrap();
    }
    collector.pass().await.unwrap();
    assert!(server.content_files().is_empty());
    assert!(server.staging_files().is_empty());
}

transfer_tests::ledger_tests!(
    content_outlives_a_deleted_file_while_another_file_holds_it,
    deleted_content_is_collected_after_its_grace_and_then_uploads_in_full,
    a_second_copy_of_stored_content_is_deleted_and_both_files_read_the_first,
    a_blob_that_cannot_be_deleted_holds_up_no_other,
    the_server_collects_garbage_by_itself,
);

transfer_tests::ledger_tests!(threads = 2;
    a_download_racing_the_deletion_of_its_file_is_intact_or_not_found,
    an_instant_upload_racing_the_collector_keeps_its_content_or_uploads_afresh,
);
