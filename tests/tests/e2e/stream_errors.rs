use tonic::Code;
use transfer_proto::v1::{UploadChunksRequest, UploadStart, upload_chunks_request};
use transfer_tests::client::open_session;
use transfer_tests::{ChunkStream, Ledger, TestFile, TestServer, upload_file};

use crate::CHUNK;

async fn end_status(mut stream: ChunkStream) -> tonic::Status {
    stream
        .drain()
        .await
        .1
        .expect_err("the stream must end with an error")
}

async fn an_unknown_session_is_not_found(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let id = uuid::Uuid::new_v4().to_string();
    let status = match ChunkStream::open(&mut client, None, &id).await {
        Ok(stream) => end_status(stream).await,
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains(&id), "{}", status.message());
}

async fn a_session_id_that_is_not_a_uuid_is_invalid(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let stream = ChunkStream::open(&mut client, None, "../../etc/passwd")
        .await
        .unwrap();
    let status = end_status(stream).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("not a UUID"),
        "{}",
        status.message()
    );
}

async fn a_stream_that_starts_with_a_chunk_is_invalid(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let first = UploadChunksRequest {
        message: Some(upload_chunks_request::Message::Chunk(Default::default())),
    };
    let stream = ChunkStream::open_with_first(&mut client, None, first)
        .await
        .unwrap();
    let status = end_status(stream).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("first message"),
        "{}",
        status.message()
    );
}

async fn a_second_start_message_is_invalid(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("twostarts.bin", 10_000, 30);
    let session = open_session(&mut client, None, &file, CHUNK).await;
    let stream = ChunkStream::open(&mut client, None, &session.upload_id)
        .await
        .unwrap();
    stream
        .send_message(UploadChunksRequest {
            message: Some(upload_chunks_request::Message::Start(UploadStart {
                upload_id: session.upload_id.clone(),
            })),
        })
        .await;
    let status = end_status(stream).await;
    assert_eq!(status.code(), Code::InvalidArgument);
}

async fn another_owners_session_is_not_found(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("mine.bin", 10_000, 31);
    let session = open_session(&mut client, Some("alice"), &file, CHUNK).await;
    let stream = ChunkStream::open(&mut client, Some("mallory"), &session.upload_id)
        .await
        .unwrap();
    assert_eq!(end_status(stream).await.code(), Code::NotFound);
}

async fn a_stream_on_a_completed_session_hears_completed_at_once(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("done.bin", 10_000, 32);
    let done = upload_file(&mut client, None, &file, CHUNK).await;
    let mut stream = ChunkStream::open(&mut client, None, &done.file_id)
        .await
        .unwrap();
    assert_eq!(stream.expect_completed().await, done);
    assert_eq!(stream.next().await.unwrap(), None, "then the stream ends");
    // Another owner learns nothing about it.
    let stream = ChunkStream::open(&mut client, Some("mallory"), &done.file_id)
        .await
        .unwrap();
    assert_eq!(end_status(stream).await.code(), Code::NotFound);
}

async fn a_bad_stream_does_not_disturb_another_upload(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let good = TestFile::new("good.bin", 40 * CHUNK as usize, 33);
    let bad = TestFile::new("bad.bin", 40 * CHUNK as usize, 34);
    let bad_session = open_session(&mut client, None, &bad, CHUNK).await;

    let mut bad_client = client.clone();
    let misbehaving = tokio::spawn(async move {
        let stream = ChunkStream::open(&mut bad_client, None, &bad_session.upload_id)
            .await
            .unwrap();
        stream.send_chunk(0, bad.chunk(0, CHUNK)).await;
        stream
            .send_message(UploadChunksRequest { message: None })
            .await;
        end_status(stream).await
    });
    let done = upload_file(&mut client, None, &good, CHUNK).await;
    assert_eq!(misbehaving.await.unwrap().code(), Code::InvalidArgument);
    let downloaded = transfer_tests::download(&mut client, None, &done.file_id, 0, 0)
        .await
        .unwrap();
    assert_eq!(downloaded.data, good.data);
}

async fn a_message_over_the_size_limit_ends_the_stream_with_an_error(ledger: Ledger) {
    let server = TestServer::start_with(ledger, |s| s.max_chunk_size = 64 * 1024).await;
    let mut client = server.client().await;
    let file = TestFile::new("huge-message.bin", 1 << 20, 35);
    let session = open_session(&mut client, None, &file, 64 * 1024).await;
    let mut stream = ChunkStream::open(&mut client, None, &session.upload_id)
        .await
        .unwrap();
    stream.send_chunk(0, file.data.slice(..512 * 1024)).await;
    let (acks, end) = stream.drain().await;
    assert!(acks.is_empty());
    let status = end.expect_err("an oversized message is an error, not a quiet end");
    assert_eq!(status.code(), Code::OutOfRange, "{status}");
    assert!(
        status.message().contains("too large"),
        "{}",
        status.message()
    );
}

transfer_tests::ledger_tests!(
    a_message_over_the_size_limit_ends_the_stream_with_an_error,
    an_unknown_session_is_not_found,
    a_session_id_that_is_not_a_uuid_is_invalid,
    a_stream_that_starts_with_a_chunk_is_invalid,
    a_second_start_message_is_invalid,
    another_owners_session_is_not_found,
    a_stream_on_a_completed_session_hears_completed_at_once,
    a_bad_stream_does_not_disturb_another_upload,
);
