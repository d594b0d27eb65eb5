use transfer_proto::v1::{ChunkOutcome, ChunkRange};
use transfer_tests::client::open_session;
use transfer_tests::{ChunkStream, Ledger, TestFile, TestServer, download};

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

transfer_tests::ledger_tests!(
    a_dropped_stream_resumes_with_only_the_missing_chunks,
    committed_chunks_come_back_as_compact_ranges,
    a_session_keeps_its_chunk_size_whatever_the_client_asks_later,
    a_chunk_sent_again_after_its_ack_is_already_stored,
);
