use std::time::Duration;
use tonic::Code;
use transfer_proto::v1::ChunkRange;
use transfer_tests::client::open_session;

use transfer_tests::{ChunkStream, Ledger, TestFile, TestServer, download, upload_file};

use crate::CHUNK;

async fn an_upload_resumes_after_a_server_restart_and_verifies_the_whole_file(ledger: Ledger) {
    let mut server = TestServer::start(ledger).await;
    let file = TestFile::new("restart.bin", 20 * CHUNK as usize + 1, 90);
    let upload_id = {
        let mut client = server.client().await;
        let session = open_session(&mut client, None, &file, CHUNK).await;
        let mut stream = ChunkStream::open(&mut client, None, &session.upload_id)
            .await
            .unwrap();
        // A prefix and a chunk past a gap, so the new server must rebuild its hash of the
        // prefix from the staged bytes and still place the later chunk.
        stream.send_and_ack(&file, CHUNK, (0..8).chain([15])).await;
        session.upload_id
    };

    server.restart().await;

    let mut client = server.client().await;
    let session = open_session(&mut client, None, &file, CHUNK).await;
    assert_eq!(session.upload_id, upload_id);
    assert_eq!(
        session.committed,
        vec![
            ChunkRange { start: 0, end: 8 },
            ChunkRange { start: 15, end: 16 }
        ]
    );
    let mut stream = ChunkStream::open(&mut client, None, &upload_id)
        .await
        .unwrap();
    for index in (8..21).filter(|i| *i != 15) {
        stream.send_chunk(index, file.chunk(index, CHUNK)).await;
    }
    let (acks, end) = stream.drain().await;
    assert_eq!(acks.len(), 12);
    let done = end
        .unwrap()
        .expect("the upload completes after the restart");
    assert_eq!(done.md5.as_ref(), file.md5.as_slice());
    let downloaded = download(&mut client, None, &done.file_id, 0, 0)
        .await
        .unwrap();
    assert_eq!(downloaded.data, file.data);
}

async fn staging_left_by_a_closed_upload_is_swept_at_start_up(ledger: Ledger) {
    let mut server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("open.bin", 10 * CHUNK as usize, 91);
    let open = open_session(&mut client, None, &file, CHUNK).await;
    let mut stream = ChunkStream::open(&mut client, None, &open.upload_id)
        .await
        .unwrap();
    stream.send_chunk(0, file.chunk(0, CHUNK)).await;
    stream.expect_ack().await;
    drop(stream);
    // Staging whose upload the ledger does not hold as open, as a crash between closing
    // an upload and dropping its bytes leaves it.
    let orphan = server
        .data_dir()
        .join("staging")
        .join(uuid::Uuid::new_v4().simple().to_string());
    std::fs::write(&orphan, b"left behind").unwrap();
    assert_eq!(server.staging_files().len(), 2);

    server.restart().await;
    for _ in 0..100 {
        if !orphan.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!orphan.exists(), "the orphan is swept");
    assert_eq!(
        server.staging_files().len(),
        1,
        "the open upload keeps its bytes"
    );
}

async fn an_idle_session_saves_its_hash_so_a_new_one_resumes_it(ledger: Ledger) {
    let mut server = TestServer::start_with(ledger, |s| s.session_idle_secs = 1).await;
    let file = TestFile::new("idle.bin", 12 * CHUNK as usize, 92);
    let mut client = server.client().await;
    let session = open_session(&mut client, None, &file, CHUNK).await;
    let mut stream = ChunkStream::open(&mut client, None, &session.upload_id)
        .await
        .unwrap();
    stream.send_and_ack(&file, CHUNK, (0..5).chain([9])).await;
    drop(stream);

    let saved = "SELECT coalesce((SELECT hashed_chunks FROM files WHERE md5_state IS NOT NULL), 0)";
    let mut hashed = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        hashed = server.ledger_number(saved).await;
        if hashed > 0 {
            break;
        }
    }
    assert_eq!(hashed, 5, "the hash of the committed prefix is saved");

    server.restart().await;
    let mut client = server.client().await;
    let done = upload_file(&mut client, None, &file, CHUNK).await;
    assert_eq!(done.md5.as_ref(), file.md5.as_slice());
}

/// Puts a complete upload back as a crash between storing its content and recording it
/// leaves it: the content in place, the ledger saying uploading, with a hash checkpoint
/// over every chunk (saved before the content is stored).
async fn crash_before_the_content_was_recorded(server: &mut TestServer, file: &TestFile) -> String {
    let mut client = server.client().await;
    let stored = upload_file(&mut client, None, file, CHUNK).await;
    server.stop().await;
    let id = stored.file_id;
    let chunks = file.data.len().div_ceil(CHUNK as usize) as i64;
    let checkpointed = server
        .ledger_number(&format!(
            "SELECT hashed_chunks FROM files WHERE id = '{id}'"
        ))
        .await;
    assert_eq!(
        checkpointed, chunks,
        "the final hash state is saved before the content is stored"
    );
    server
        .ledger_execute(&format!(
            "UPDATE files SET state = 'uploading', completed_at = NULL, content_blake3 = NULL \
             WHERE id = '{id}'; \
             DELETE FROM content_blobs;"
        ))
        .await;
    server.restart().await;
    id
}

async fn content_stored_but_not_recorded_before_a_crash_is_recorded_by_the_next_stream(
    ledger: Ledger,
) {
    let mut server = TestServer::start(ledger).await;
    let file = TestFile::new("crash.bin", 5 * CHUNK as usize + 3, 91);
    let id = crash_before_the_content_was_recorded(&mut server, &file).await;

    let mut client = server.client().await;
    let mut stream = ChunkStream::open(&mut client, None, &id).await.unwrap();
    let (acks, end) = stream.drain().await;
    assert!(acks.is_empty(), "nothing is sent again: {acks:?}");
    let done = end.unwrap().expect("the next stream completes the upload");
    assert_eq!(done.md5.as_ref(), file.md5.as_slice());
    let downloaded = download(&mut client, None, &id, 0, 0).await.unwrap();
    assert_eq!(downloaded.data, file.data);
    assert_eq!(server.content_files().len(), 1, "one copy of the content");
    assert_eq!(
        server
            .ledger_number("SELECT count(*) FROM content_blobs WHERE locator IS NOT NULL")
            .await,
        1,
        "the content is recorded with where it is"
    );
}

async fn content_lost_with_its_staging_after_a_crash_is_data_loss_not_a_new_file(ledger: Ledger) {
    let mut server = TestServer::start(ledger).await;
    let file = TestFile::new("lost.bin", 3 * CHUNK as usize, 92);
    let id = crash_before_the_content_was_recorded(&mut server, &file).await;
    for stored in server.content_files() {
        std::fs::remove_file(stored).unwrap();
    }

    let mut client = server.client().await;
    let mut stream = ChunkStream::open(&mut client, None, &id).await.unwrap();
    let (_, end) = stream.drain().await;
    let status = end.expect_err("nothing is left to complete from");
    assert_eq!(status.code(), Code::DataLoss, "{status:?}");
    assert!(
        server.content_files().is_empty(),
        "no content is made up from an empty staging"
    );
}

transfer_tests::ledger_tests!(
    content_stored_but_not_recorded_before_a_crash_is_recorded_by_the_next_stream,
    content_lost_with_its_staging_after_a_crash_is_data_loss_not_a_new_file,
    an_upload_resumes_after_a_server_restart_and_verifies_the_whole_file,
    staging_left_by_a_closed_upload_is_swept_at_start_up,
    an_idle_session_saves_its_hash_so_a_new_one_resumes_it,
);
