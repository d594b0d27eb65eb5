use std::time::Duration;

use transfer_proto::v1::{Chunk, ChunkOutcome};
use transfer_tests::client::{abort, open_session};
use transfer_tests::{ChunkStream, Ledger, TestFile, TestServer, crc32c, download};

use crate::CHUNK;

async fn chunks_out_of_order_and_duplicated_make_a_correct_file(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("shuffled.bin", 12 * CHUNK as usize + 7, 20);
    let session = open_session(&mut client, None, &file, CHUNK).await;
    assert_eq!(session.chunk_count, 13);
    let mut stream = ChunkStream::open(&mut client, None, &session.upload_id)
        .await
        .unwrap();
    // Reverse order, with duplicates sent back to back and after a gap.
    let order = [12, 12, 11, 10, 9, 8, 7, 3, 6, 5, 4, 3, 2, 1, 0, 7];
    for index in order {
        stream.send_chunk(index, file.chunk(index, CHUNK)).await;
    }
    let (acks, end) = stream.drain().await;
    let done = end.unwrap().expect("the upload completes");
    let stored = acks
        .iter()
        .filter(|a| a.outcome() == ChunkOutcome::Stored)
        .count();
    let already = acks
        .iter()
        .filter(|a| a.outcome() == ChunkOutcome::AlreadyStored)
        .count();
    assert_eq!(stored, 13, "every chunk is stored once");
    assert!(
        (2..=3).contains(&already),
        "duplicates are harmless: {already}"
    );
    let downloaded = download(&mut client, None, &done.file_id, 0, 0)
        .await
        .unwrap();
    assert_eq!(downloaded.data, file.data);
}

async fn a_chunk_with_a_bad_crc_is_rejected_and_can_be_sent_again(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("crc.bin", 2 * CHUNK as usize, 21);
    let session = open_session(&mut client, None, &file, CHUNK).await;
    let mut stream = ChunkStream::open(&mut client, None, &session.upload_id)
        .await
        .unwrap();
    let data = file.chunk(0, CHUNK);
    stream
        .send(Chunk {
            index: 0,
            crc32c: crc32c(&data) ^ 1,
            data,
        })
        .await;
    let ack = stream.expect_ack().await;
    assert_eq!(ack.index, 0);
    assert_eq!(ack.outcome(), ChunkOutcome::BadChecksum);
    assert!(ack.detail.contains("CRC32C"), "detail: {}", ack.detail);
    assert_eq!(ack.chunks_remaining, 2);

    stream.send_chunk(0, file.chunk(0, CHUNK)).await;
    stream.send_chunk(1, file.chunk(1, CHUNK)).await;
    let (acks, end) = stream.drain().await;
    assert!(acks.iter().all(|a| a.outcome() == ChunkOutcome::Stored));
    let done = end.unwrap().expect("the upload completes");
    let downloaded = download(&mut client, None, &done.file_id, 0, 0)
        .await
        .unwrap();
    assert_eq!(downloaded.data, file.data);
}

async fn a_chunk_of_the_wrong_length_is_rejected(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("length.bin", 2 * CHUNK as usize + 10, 22);
    let session = open_session(&mut client, None, &file, CHUNK).await;
    let mut stream = ChunkStream::open(&mut client, None, &session.upload_id)
        .await
        .unwrap();
    // A full chunk where only the 10-byte tail belongs.
    stream.send_chunk(2, file.chunk(0, CHUNK)).await;
    let ack = stream.expect_ack().await;
    assert_eq!(ack.outcome(), ChunkOutcome::WrongLength);
    assert!(
        ack.detail.contains("must be 10 bytes"),
        "detail: {}",
        ack.detail
    );
    // A short chunk where a full one belongs.
    stream
        .send_chunk(0, file.chunk(0, CHUNK).slice(..100))
        .await;
    assert_eq!(
        stream.expect_ack().await.outcome(),
        ChunkOutcome::WrongLength
    );
    stream.finish_sending();
    let (acks, end) = stream.drain().await;
    assert!(acks.is_empty());
    assert_eq!(end.unwrap(), None, "the stream ends without completing");
}

async fn a_chunk_index_past_the_end_is_rejected(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("range.bin", 3 * CHUNK as usize, 23);
    let session = open_session(&mut client, None, &file, CHUNK).await;
    let mut stream = ChunkStream::open(&mut client, None, &session.upload_id)
        .await
        .unwrap();
    stream.send_chunk(3, file.chunk(0, CHUNK)).await;
    let ack = stream.expect_ack().await;
    assert_eq!(ack.index, 3);
    assert_eq!(ack.outcome(), ChunkOutcome::IndexOutOfRange);
    assert!(ack.detail.contains("3 chunks"), "detail: {}", ack.detail);
    stream.send_chunk(u64::MAX, file.chunk(0, CHUNK)).await;
    assert_eq!(
        stream.expect_ack().await.outcome(),
        ChunkOutcome::IndexOutOfRange
    );
}

async fn sending_more_than_the_window_ends_the_stream_with_resource_exhausted(ledger: Ledger) {
    // A budget of two and a half chunks: two whole ones.
    let budget = 2 * u64::from(CHUNK) + u64::from(CHUNK) / 2;
    let server = TestServer::start_with(ledger, |s| s.max_window_bytes = budget).await;
    let mut client = server.client().await;
    let file = TestFile::new("window.bin", 400 * CHUNK as usize, 24);
    let session = open_session(&mut client, None, &file, CHUNK).await;
    assert_eq!(session.max_window, 2);
    assert_eq!(session.max_window_bytes, 2 * u64::from(CHUNK));
    let mut stream = ChunkStream::open(&mut client, None, &session.upload_id)
        .await
        .unwrap();
    // Never read an ack: the server must stop us long before 400 chunks.
    for index in 0..400 {
        stream.send_chunk(index, file.chunk(index, CHUNK)).await;
    }
    let (acks, end) = stream.drain().await;
    let status = end.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(
        status.message().contains("max_window"),
        "{}",
        status.message()
    );
    assert!(acks.len() < 400);
    // What was acked is kept.
    let resumed = open_session(&mut client, None, &file, CHUNK).await;
    let committed: u64 = resumed.committed.iter().map(|r| r.end - r.start).sum();
    assert!(committed >= acks.len() as u64);
}

async fn the_window_is_the_same_bytes_whatever_the_chunk_size(ledger: Ledger) {
    let budget = 16 * u64::from(CHUNK);
    let server = TestServer::start_with(ledger, |s| s.max_window_bytes = budget).await;
    let mut client = server.client().await;
    let file = TestFile::new("window-sizes.bin", 64 * CHUNK as usize, 25);
    for (chunk, chunks) in [(CHUNK, 16), (4 * CHUNK, 4), (16 * CHUNK, 1)] {
        let session = open_session(&mut client, None, &file, chunk).await;
        assert_eq!(session.chunk_size, chunk);
        assert_eq!(session.max_window, chunks, "chunks of {chunk} bytes");
        assert_eq!(session.max_window_bytes, budget, "chunks of {chunk} bytes");
        abort(&mut client, None, &session.upload_id).await.unwrap();
    }
    // A chunk larger than the budget: one at a time, never none.
    let session = open_session(&mut client, None, &file, 32 * CHUNK).await;
    assert_eq!(session.max_window, 1);
    assert_eq!(session.max_window_bytes, 32 * u64::from(CHUNK));
}

async fn a_chunk_after_a_gap_is_acknowledged_before_the_gap_is_filled(ledger: Ledger) {
    // Acks of chunks that extend the hashed prefix wait for the hasher; a chunk past a
    // gap must not wait for the gap, or a client that sends out of order would stall.
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("gap.bin", 4 * CHUNK as usize, 23);
    let session = open_session(&mut client, None, &file, CHUNK).await;
    let mut stream = ChunkStream::open(&mut client, None, &session.upload_id)
        .await
        .unwrap();
    for index in [3, 2] {
        stream.send_chunk(index, file.chunk(index, CHUNK)).await;
        let ack = tokio::time::timeout(Duration::from_secs(10), stream.expect_ack())
            .await
            .unwrap_or_else(|_| panic!("chunk {index}, past the gap, is not acknowledged"));
        assert_eq!((ack.index, ack.outcome()), (index, ChunkOutcome::Stored));
    }
    // Filling the gap acknowledges its chunks and completes the file.
    for index in [0, 1] {
        stream.send_chunk(index, file.chunk(index, CHUNK)).await;
    }
    let (acks, end) = stream.drain().await;
    let indexes: Vec<u64> = acks.iter().map(|a| a.index).collect();
    assert_eq!(indexes, [0, 1]);
    let done = end.unwrap().expect("the upload completes");
    let downloaded = download(&mut client, None, &done.file_id, 0, 0)
        .await
        .unwrap();
    assert_eq!(downloaded.data, file.data);
}

transfer_tests::ledger_tests!(
    chunks_out_of_order_and_duplicated_make_a_correct_file,
    a_chunk_after_a_gap_is_acknowledged_before_the_gap_is_filled,
    a_chunk_with_a_bad_crc_is_rejected_and_can_be_sent_again,
    a_chunk_of_the_wrong_length_is_rejected,
    a_chunk_index_past_the_end_is_rejected,
    sending_more_than_the_window_ends_the_stream_with_resource_exhausted,
    the_window_is_the_same_bytes_whatever_the_chunk_size,
);
