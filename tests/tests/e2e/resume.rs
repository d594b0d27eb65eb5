use transfer_proto::v1::{ChunkOutcome, ChunkRange, UploadSession, check_upload_response};
use transfer_tests::client::{check_resuming, open_session, probe, probe_session};
use transfer_tests::{ChunkStream, Ledger, TestFile, TestServer, download, upload_file};

use crate::CHUNK;

async fn a_dropped_stream_resumes_with_only_the_missing_chunks(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("resume.bin", 25 * CHUNK as usize - 100, 10);
    let session = open_session(&mut client, None, &file, CHUNK).await;
    assert_eq!(session.chunk_count, 25);
    assert!(session.committed.is_empty());

    let mut stream = ChunkStream::open(&mut client, None, &session.upload_id)
        .await
        .unwrap();
    let acks = stream.send_and_ack(&file, CHUNK, 0..10).await;
    assert!(acks.iter().all(|a| a.outcome() == ChunkOutcome::Stored));
    // Acked means recorded: the ledger holds every acked chunk already.
    let rows = server.chunk_rows().await;
    assert_eq!(rows, 10);
    drop(stream); // the connection drops midway

    let resumed = open_session(&mut client, None, &file, CHUNK).await;
    assert_eq!(
        resumed.upload_id, session.upload_id,
        "the same session comes back"
    );
    assert_eq!(resumed.committed, vec![ChunkRange { start: 0, end: 10 }]);

    let mut stream = ChunkStream::open(&mut client, None, &resumed.upload_id)
        .await
        .unwrap();
    for index in 10..25 {
        stream.send_chunk(index, file.chunk(index, CHUNK)).await;
    }
    let (acks, end) = stream.drain().await;
    assert_eq!(acks.len(), 15);
    assert!(acks.iter().all(|a| a.outcome() == ChunkOutcome::Stored));
    let done = end.unwrap().expect("the upload completes");
    assert_eq!(done.file_id, session.upload_id);

    let downloaded = download(&mut client, None, &done.file_id, 0, 0)
        .await
        .unwrap();
    assert_eq!(downloaded.data, file.data);
    assert_eq!(
        server.chunk_rows().await,
        25,
        "the chunks acked before the break stay recorded beside the resumed ones"
    );
}

async fn committed_chunks_come_back_as_compact_ranges(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("gaps.bin", 10 * CHUNK as usize, 11);
    let session = open_session(&mut client, None, &file, CHUNK).await;
    let mut stream = ChunkStream::open(&mut client, None, &session.upload_id)
        .await
        .unwrap();
    stream.send_and_ack(&file, CHUNK, [0, 1, 2, 5, 7, 8]).await;
    drop(stream);
    let resumed = open_session(&mut client, None, &file, CHUNK).await;
    assert_eq!(
        resumed.committed,
        vec![
            ChunkRange { start: 0, end: 3 },
            ChunkRange { start: 5, end: 6 },
            ChunkRange { start: 7, end: 9 },
        ]
    );
}

async fn a_session_keeps_its_chunk_size_whatever_the_client_asks_later(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("fixed.bin", 100_000, 12);
    let first = open_session(&mut client, None, &file, CHUNK).await;
    let again = open_session(&mut client, None, &file, 4 * CHUNK).await;
    assert_eq!(again.upload_id, first.upload_id);
    assert_eq!(again.chunk_size, CHUNK);
    assert_eq!(again.chunk_count, first.chunk_count);
}

async fn a_chunk_sent_again_after_its_ack_is_already_stored(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("twice.bin", 3 * CHUNK as usize, 13);
    let session = open_session(&mut client, None, &file, CHUNK).await;
    let mut stream = ChunkStream::open(&mut client, None, &session.upload_id)
        .await
        .unwrap();
    stream.send_chunk(1, file.chunk(1, CHUNK)).await;
    assert_eq!(stream.expect_ack().await.outcome(), ChunkOutcome::Stored);
    stream.send_chunk(1, file.chunk(1, CHUNK)).await;
    let ack = stream.expect_ack().await;
    assert_eq!(ack.index, 1);
    assert_eq!(ack.outcome(), ChunkOutcome::AlreadyStored);
    assert_eq!(ack.chunks_remaining, 2);
}

/// A single-pass session that the client was streaming into when its connection broke:
/// by then the client knows the file's MD5, which the session does not.
async fn interrupted_single_pass(
    server: &TestServer,
    file: &TestFile,
) -> (transfer_tests::client::Client, UploadSession, ChunkStream) {
    let mut client = server.client().await;
    let session = probe_session(&mut client, None, file, CHUNK).await;
    let mut stream = ChunkStream::open(&mut client, None, &session.upload_id)
        .await
        .unwrap();
    stream.send_and_ack(file, CHUNK, 0..2).await;
    (client, session, stream)
}

async fn a_client_naming_its_interrupted_session_resumes_it_even_while_the_old_stream_lingers(
    ledger: Ledger,
) {
    let server = TestServer::start(ledger).await;
    let file = TestFile::new("named.bin", 4 * CHUNK as usize, 14);
    // The old stream stays open: the server still counts it attached.
    let (mut client, session, _lingering) = interrupted_single_pass(&server, &file).await;
    let resumed = match check_resuming(&mut client, None, &file, CHUNK, &session.upload_id)
        .await
        .unwrap()
    {
        check_upload_response::Result::Session(resumed) => resumed,
        other => panic!("expected the session, got {other:?}"),
    };
    assert_eq!(resumed.upload_id, session.upload_id);
    assert!(resumed.resumed);
    assert_eq!(resumed.committed, vec![ChunkRange { start: 0, end: 2 }]);
    assert_eq!(
        server
            .ledger_number("SELECT count(*) FROM files WHERE state = 'uploading'")
            .await,
        1,
        "no second session"
    );
}

async fn a_named_session_that_is_not_the_callers_open_one_is_ignored(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let file = TestFile::new("theirs.bin", 4 * CHUNK as usize, 15);
    let mut client = server.client().await;
    let theirs = {
        let session = probe_session(&mut client, Some("alice"), &file, CHUNK).await;
        session.upload_id
    };
    // Bob names Alice's session, and then one that does not exist: each is answered
    // exactly as a request naming none, with a session of his own.
    for named in [theirs.clone(), uuid::Uuid::new_v4().to_string()] {
        match check_resuming(&mut client, Some("bob"), &file, CHUNK, &named)
            .await
            .unwrap()
        {
            check_upload_response::Result::Session(session) => {
                assert_ne!(session.upload_id, theirs);
            }
            other => panic!("expected a session of bob's own, got {other:?}"),
        }
    }
    let malformed = check_resuming(&mut client, Some("bob"), &file, CHUNK, "not-an-id")
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), tonic::Code::InvalidArgument);
    assert!(
        malformed.message().contains("resume_upload_id"),
        "{malformed:?}"
    );
}

async fn stored_content_is_instant_and_closes_the_session_named_to_resume(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let file = TestFile::new("stored.bin", 4 * CHUNK as usize, 16);
    let (mut client, session, stream) = interrupted_single_pass(&server, &file).await;
    drop(stream);
    // Meanwhile another upload of the same content completed.
    let mut other = server.client().await;
    upload_file(
        &mut other,
        None,
        &TestFile {
            name: "copy.bin".into(),
            ..file.clone()
        },
        CHUNK,
    )
    .await;
    match check_resuming(&mut client, None, &file, CHUNK, &session.upload_id)
        .await
        .unwrap()
    {
        check_upload_response::Result::AlreadyStored(_) => {}
        other => panic!("expected an instant upload, got {other:?}"),
    }
    assert_eq!(
        server
            .ledger_number("SELECT count(*) FROM files WHERE state = 'uploading'")
            .await,
        0,
        "the interrupted session is closed, not left behind"
    );
}

async fn a_probe_prefers_stored_content_to_a_dead_session_of_the_same_file(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let file = TestFile::new("again.bin", 4 * CHUNK as usize, 17);
    // A single-pass upload of the file that was abandoned, then an upload of it that
    // completed (hashed first, with its head digest, as the client library sends it).
    let (mut client, _, stream) = interrupted_single_pass(&server, &file).await;
    drop(stream);
    let complete = match check_resuming(&mut client, None, &file, CHUNK, "")
        .await
        .unwrap()
    {
        check_upload_response::Result::Session(session) => session,
        other => panic!("expected a session, got {other:?}"),
    };
    let mut stream = ChunkStream::open(&mut client, None, &complete.upload_id)
        .await
        .unwrap();
    let (_, end) = stream
        .send_windowed(&file, CHUNK, &[0, 1, 2, 3], complete.max_window)
        .await;
    end.unwrap().expect("the upload completes");
    match probe(&mut client, None, &file, CHUNK).await.unwrap() {
        check_upload_response::Result::MaybeStored(_) => {}
        other => panic!("expected maybe_stored (hash, then instant), got {other:?}"),
    }
}

transfer_tests::ledger_tests!(
    a_client_naming_its_interrupted_session_resumes_it_even_while_the_old_stream_lingers,
    a_named_session_that_is_not_the_callers_open_one_is_ignored,
    stored_content_is_instant_and_closes_the_session_named_to_resume,
    a_probe_prefers_stored_content_to_a_dead_session_of_the_same_file,
    a_dropped_stream_resumes_with_only_the_missing_chunks,
    committed_chunks_come_back_as_compact_ranges,
    a_session_keeps_its_chunk_size_whatever_the_client_asks_later,
    a_chunk_sent_again_after_its_ack_is_already_stored,
);
