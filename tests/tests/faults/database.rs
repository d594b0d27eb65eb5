//! The ledger's PostgreSQL crashing (`pg_ctl stop -m immediate`, fsync on) while uploads
//! run: they wait, retry and complete, and every chunk acked before the crash is there
//! after it.

use std::time::Duration;

use transfer_proto::v1::check_upload_response::Result as Answer;
use transfer_proto::v1::transfer_service_client::TransferServiceClient;
use transfer_tests::client::{check_resuming, probe_session};
use transfer_tests::pg_cluster::ThrowawayCluster;
use transfer_tests::process::TransferdProcess;
use transfer_tests::{ChunkStream, TestFile, download};

use crate::{CHUNK, UploadsUnderway, committed_indexes, figure, on_disk, scaled, sessions_left};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_through_a_database_crash_complete_and_keep_every_acked_chunk() {
    let cluster = tokio::task::spawn_blocking(ThrowawayCluster::start)
        .await
        .expect("starting the test's PostgreSQL");
    let server = TransferdProcess::start_on_database(&cluster.url(), &[]).await;
    let mut raw = TransferServiceClient::connect(server.endpoint())
        .await
        .unwrap();

    // One upload acked in part just before the crash.
    let acked = TestFile::new("acked.bin", 16 * CHUNK as usize, 500);
    let session = probe_session(&mut raw, None, &acked, CHUNK).await;
    let mut stream = ChunkStream::open(&mut raw, None, &session.upload_id)
        .await
        .unwrap();
    stream.send_and_ack(&acked, CHUNK, 0..4).await;
    drop(stream);

    // Others running through it.
    let files: Vec<TestFile> = (0..scaled(4, 12))
        .map(|i| TestFile::new(&format!("through-{i}.bin"), 6 << 20, 510 + i as u64))
        .collect();
    let (_dir, paths) = on_disk(&files);
    let uploads = UploadsUnderway::start(&server.endpoint(), &paths);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let crashes = scaled(1, 3);
    for _ in 0..crashes {
        let crashing = &cluster;
        tokio::task::block_in_place(|| crashing.crash());
        tokio::time::sleep(Duration::from_secs(2)).await;
        tokio::task::block_in_place(|| crashing.start_again());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    figure("database crashes during uploads", crashes);
    for (file, done) in files.iter().zip(uploads.completed().await) {
        let read = download(&mut raw, None, &done.file.file_id, 0, 0)
            .await
            .expect("download");
        assert!(
            read.data == file.data,
            "{} arrives byte for byte",
            file.name
        );
    }

    let resumed = match check_resuming(&mut raw, None, &acked, CHUNK, &session.upload_id).await {
        Ok(Answer::Session(resumed)) => resumed,
        other => panic!("the session resumes: {other:?}"),
    };
    let committed = committed_indexes(&resumed);
    assert_eq!(
        committed,
        vec![0, 1, 2, 3],
        "the chunks acked before the crash"
    );
    let mut stream = ChunkStream::open(&mut raw, None, &session.upload_id)
        .await
        .unwrap();
    stream.send_and_ack(&acked, CHUNK, 4..16).await;
    stream.send_digest(&acked.md5).await;
    stream.expect_completed().await;

    let left = sessions_left(&mut raw).await;
    assert_eq!(left, 0, "{left} sessions left behind");
}
