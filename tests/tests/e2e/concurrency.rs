use transfer_proto::v1::ChunkOutcome;
use transfer_tests::client::open_session;
use transfer_tests::{ChunkStream, Ledger, TestFile, TestServer, download, upload_file};

use crate::CHUNK;

async fn two_clients_uploading_the_same_content_at_once_end_with_one_correct_file(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let file = TestFile::new("race.bin", 64 * CHUNK as usize + 5, 60);
    let mut uploads = Vec::new();
    for _ in 0..2 {
        let mut client = server.client().await;
        let file = file.clone();
        uploads.push(tokio::spawn(async move {
            let done = upload_file(&mut client, None, &file, CHUNK).await;
            download(&mut client, None, &done.file_id, 0, 0)
                .await
                .unwrap()
                .data
        }));
    }
    for upload in uploads {
        assert_eq!(upload.await.unwrap(), file.data);
    }
    assert_eq!(server.content_files().len(), 1, "no duplicate blob");
    assert!(server.staging_files().is_empty());
}

async fn two_owners_uploading_the_same_content_at_once_share_one_blob(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let file = TestFile::new("race2.bin", 64 * CHUNK as usize, 61);
    let mut uploads = Vec::new();
    for owner in ["alice", "bob"] {
        let mut client = server.client().await;
        let file = file.clone();
        uploads.push(tokio::spawn(async move {
            let done = upload_file(&mut client, Some(owner), &file, CHUNK).await;
            download(&mut client, Some(owner), &done.file_id, 0, 0)
                .await
                .unwrap()
                .data
        }));
    }
    for upload in uploads {
        assert_eq!(upload.await.unwrap(), file.data);
    }
    // Each completion stored its own copy; the collector deletes the spare one.
    server.collect_garbage_now().await;
    assert_eq!(server.content_files().len(), 1, "no duplicate blob left");
    assert!(server.staging_files().is_empty());
}

/// Acks that say the chunk was stored by this call (not found stored already).
fn stored(acks: &[transfer_proto::v1::ChunkAck]) -> usize {
    acks.iter()
        .filter(|ack| ack.outcome() == ChunkOutcome::Stored)
        .count()
}

async fn two_streams_on_one_session_store_each_chunk_once(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("shared-session.bin", 32 * CHUNK as usize, 62);
    let session = open_session(&mut client, None, &file, CHUNK).await;
    let mut streams = Vec::new();
    // Both streams attach (each has chunk 0 acked) before either sends the rest.
    let attached = std::sync::Arc::new(tokio::sync::Barrier::new(2));
    for _ in 0..2 {
        let mut client = server.client().await;
        let upload_id = session.upload_id.clone();
        let file = file.clone();
        let attached = attached.clone();
        let window = session.max_window;
        streams.push(tokio::spawn(async move {
            let mut stream = ChunkStream::open(&mut client, None, &upload_id)
                .await
                .unwrap();
            stream.send_chunk(0, file.chunk(0, CHUNK)).await;
            let first = stream.expect_ack().await;
            attached.wait().await;
            let rest: Vec<u64> = (1..32).collect();
            let (mut acks, end) = stream.send_windowed(&file, CHUNK, &rest, window).await;
            acks.push(first);
            assert!(
                acks.iter().all(|ack| matches!(
                    ack.outcome(),
                    ChunkOutcome::Stored | ChunkOutcome::AlreadyStored
                )),
                "{acks:?}"
            );
            (stored(&acks), end)
        }));
    }
    let mut stored_by_either = 0;
    for stream in streams {
        let (stored, end) = stream.await.unwrap();
        stored_by_either += stored;
        end.expect("no stream ends in an error")
            .expect("each stream hears that the upload completed");
    }
    assert_eq!(
        stored_by_either, 32,
        "each chunk is stored by one stream; the other hears it was stored already"
    );
    let downloaded = download(&mut client, None, &session.upload_id, 0, 0)
        .await
        .unwrap();
    assert_eq!(downloaded.data, file.data);
}

async fn two_streams_racing_to_the_end_both_hear_completed(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("both-ends.bin", 48 * CHUNK as usize, 63);
    let session = open_session(&mut client, None, &file, CHUNK).await;
    let forward: Vec<u64> = (0..48).collect();
    let backward: Vec<u64> = (0..48).rev().collect();
    let mut streams = Vec::new();
    for order in [forward, backward] {
        let mut client = server.client().await;
        let (upload_id, file) = (session.upload_id.clone(), file.clone());
        let window = session.max_window;
        streams.push(tokio::spawn(async move {
            let mut stream = ChunkStream::open(&mut client, None, &upload_id)
                .await
                .unwrap();
            stream.send_windowed(&file, CHUNK, &order, window).await
        }));
    }
    let mut stored_by_either = 0;
    for stream in streams {
        let (acks, end) = stream.await.unwrap();
        stored_by_either += stored(&acks);
        let done = end
            .expect("no stream ends in an error")
            .expect("every stream hears completed");
        assert_eq!(done.file_id, session.upload_id);
    }
    assert_eq!(
        stored_by_either, 48,
        "each chunk is stored once, whichever stream sent it first"
    );
}

async fn aborting_tells_every_stream_of_the_session(ledger: Ledger) {
    // A window of 16 chunks: the streams are still sending when the abort comes.
    let server =
        TestServer::start_with(ledger, |s| s.max_window_bytes = 16 * u64::from(CHUNK)).await;
    let mut client = server.client().await;
    let file = TestFile::new("abort-all.bin", 400 * CHUNK as usize, 64);
    let session = open_session(&mut client, None, &file, CHUNK).await;
    let mut streams = Vec::new();
    for first in [0, 200] {
        let mut stream = ChunkStream::open(&mut client, None, &session.upload_id)
            .await
            .unwrap();
        // Attached once a chunk is acked.
        stream.send_chunk(first, file.chunk(first, CHUNK)).await;
        stream.expect_ack().await;
        let file = file.clone();
        let window = session.max_window;
        streams.push(tokio::spawn(async move {
            let rest: Vec<u64> = (first + 1..first + 200).collect();
            stream.send_windowed(&file, CHUNK, &rest, window).await.1
        }));
    }
    transfer_tests::client::abort(&mut client, None, &session.upload_id)
        .await
        .unwrap();
    for stream in streams {
        let status = stream
            .await
            .unwrap()
            .expect_err("the stream ends with an error");
        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status}");
        assert!(status.message().contains("aborted"), "{}", status.message());
    }
}

// Uploads "at once" run on two worker threads, so the server's tasks for them do too.
transfer_tests::ledger_tests!(threads = 2;
    two_streams_racing_to_the_end_both_hear_completed,
    aborting_tells_every_stream_of_the_session,
    two_clients_uploading_the_same_content_at_once_end_with_one_correct_file,
    two_owners_uploading_the_same_content_at_once_share_one_blob,
    two_streams_on_one_session_store_each_chunk_once,
);
