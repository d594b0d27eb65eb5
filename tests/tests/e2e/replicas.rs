//! Two `transferd` replicas in this process on one PostgreSQL ledger and one SeaweedFS
//! bucket: a stream that reaches the replica not writing an upload takes the upload
//! over (the holder hands it over and its streams are told to go on elsewhere), and a
//! download works from a replica that never saw the upload.

use std::time::Instant;

use tonic::Code;
use transfer_tests::client::open_session;
use transfer_tests::s3::seaweedfs;
use transfer_tests::{ChunkStream, Ledger, TestFile, TestServer, download};

const PART: u32 = 5 << 20;

async fn two_replicas() -> (TestServer, TestServer) {
    let s3 = seaweedfs();
    let url = s3.fresh_url();
    let first =
        TestServer::start_with(Ledger::Postgres, |settings| s3.configure(settings, &url)).await;
    let second = first.replica().await;
    (first, second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_at_another_replica_takes_the_upload_over_from_its_live_holder() {
    let (first, second) = two_replicas().await;
    let file = TestFile::new("moving.bin", 3 * PART as usize + 11, 401);
    let mut at_first = first.client().await;
    let session = open_session(&mut at_first, None, &file, 0).await;
    let mut held = ChunkStream::open(&mut at_first, None, &session.upload_id)
        .await
        .unwrap();
    held.send_and_ack(&file, PART, [0, 2]).await;

    // The client's next connection lands on the other replica.
    let mut at_second = second.client().await;
    let asked = Instant::now();
    let mut moved = ChunkStream::open(&mut at_second, None, &session.upload_id)
        .await
        .unwrap();
    moved.send_chunk(1, file.chunk(1, PART)).await;
    let ack = moved.expect_ack().await;
    println!("hand-over and first ack took {:?}", asked.elapsed());
    assert_eq!(ack.index, 1);
    // The holder let go: its stream is told to resume elsewhere.
    let (_, end) = held.drain().await;
    let status = end.expect_err("the old stream ends");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    moved.send_chunk(3, file.chunk(3, PART)).await;
    let (_, end) = moved.drain().await;
    let done = end
        .unwrap()
        .expect("the upload completes at its new holder");
    assert_eq!(done.md5.as_ref(), file.md5.as_slice());
    // Either replica serves the file.
    for server in [&first, &second] {
        let mut client = server.client().await;
        let downloaded = download(&mut client, None, &done.file_id, 0, 0)
            .await
            .unwrap();
        assert_eq!(downloaded.data, file.data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_aborted_at_one_replica_is_closed_for_the_streams_of_the_other() {
    let (first, second) = two_replicas().await;
    let file = TestFile::new("aborted.bin", 3 * PART as usize, 402);
    let mut at_first = first.client().await;
    let session = open_session(&mut at_first, None, &file, 0).await;
    let mut held = ChunkStream::open(&mut at_first, None, &session.upload_id)
        .await
        .unwrap();
    held.send_and_ack(&file, PART, [0]).await;

    // The owner aborts through the other replica, which does not hold the upload.
    let mut at_second = second.client().await;
    transfer_tests::client::abort(&mut at_second, None, &session.upload_id)
        .await
        .expect("the abort is taken at any replica");

    // The holder's stream learns it: its next chunk is not stored, the stream ends
    // saying the upload was aborted.
    held.send_chunk(1, file.chunk(1, PART)).await;
    let (acks, end) = held.drain().await;
    assert!(
        acks.is_empty(),
        "no chunk of an aborted upload is acked: {acks:?}"
    );
    let status = end.expect_err("the holder's stream ends");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("aborted"), "{status:?}");
    // And no replica resumes it.
    for server in [&first, &second] {
        let mut client = server.client().await;
        let resumed = ChunkStream::open(&mut client, None, &session.upload_id).await;
        let status = match resumed {
            Err(status) => status,
            Ok(mut stream) => {
                stream.send_chunk(2, file.chunk(2, PART)).await;
                stream
                    .drain()
                    .await
                    .1
                    .expect_err("a stream into an aborted upload ends")
            }
        };
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    }
}
