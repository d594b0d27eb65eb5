use tonic::Code;
use transfer_proto::v1::FileState;
use transfer_tests::client::{abort, get_file, open_session};
use transfer_tests::{ChunkStream, Ledger, TestFile, TestServer, upload_file};

use crate::CHUNK;

async fn aborting_a_session_removes_its_chunks_and_staged_bytes(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("abort.bin", 10 * CHUNK as usize, 80);
    let session = open_session(&mut client, None, &file, CHUNK).await;
    let mut stream = ChunkStream::open(&mut client, None, &session.upload_id)
        .await
        .unwrap();
    stream.send_and_ack(&file, CHUNK, 0..4).await;
    assert_eq!(server.staging_files().len(), 1);

    abort(&mut client, None, &session.upload_id).await.unwrap();

    // The open stream is told, and further chunks are refused.
    stream.send_chunk(4, file.chunk(4, CHUNK)).await;
    let status = stream.drain().await.1.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("aborted"), "{}", status.message());

    assert!(server.staging_files().is_empty());
    let rows = server.chunk_rows().await;
    assert_eq!(rows, 0);
    let info = get_file(&mut client, None, &session.upload_id).await;
    assert_eq!(info.state(), FileState::Aborted);

    // Asking again starts afresh.
    let again = open_session(&mut client, None, &file, CHUNK).await;
    assert_ne!(again.upload_id, session.upload_id);
    assert!(again.committed.is_empty());
}

async fn aborting_after_completion_is_a_failed_precondition(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("done.bin", 10_000, 81);
    let done = upload_file(&mut client, None, &file, CHUNK).await;
    let status = abort(&mut client, None, &done.file_id).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("complete"),
        "{}",
        status.message()
    );
    assert_eq!(
        server.content_files().len(),
        1,
        "the stored file is untouched"
    );
}

async fn aborting_an_unknown_or_foreign_session_is_not_found(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("alices.bin", 10_000, 82);
    let session = open_session(&mut client, Some("alice"), &file, CHUNK).await;
    for (id, owner) in [
        (uuid::Uuid::new_v4().to_string(), None),
        (session.upload_id.clone(), Some("mallory")),
    ] {
        let status = abort(&mut client, owner, &id).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
    }
}

async fn aborting_twice_is_harmless(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("twice.bin", 10_000, 83);
    let session = open_session(&mut client, None, &file, CHUNK).await;
    for _ in 0..2 {
        abort(&mut client, None, &session.upload_id)
            .await
            .expect("abort, and abort again");
        let file = get_file(&mut client, None, &session.upload_id).await;
        assert_eq!(
            file.state,
            FileState::Aborted as i32,
            "aborted, and still so"
        );
    }
    // Its content was never stored: the same file opens a new session.
    let again = open_session(&mut client, None, &file, CHUNK).await;
    assert_ne!(again.upload_id, session.upload_id);
    assert!(!again.resumed && again.committed.is_empty());
}

transfer_tests::ledger_tests!(
    aborting_a_session_removes_its_chunks_and_staged_bytes,
    aborting_after_completion_is_a_failed_precondition,
    aborting_twice_is_harmless,
    aborting_an_unknown_or_foreign_session_is_not_found,
);
