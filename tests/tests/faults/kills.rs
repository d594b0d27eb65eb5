//! `transferd` killed with SIGKILL at random moments while uploads run, on both ledgers:
//! every upload completes byte for byte, every acked chunk survives, and nothing is left
//! behind once they are done.

use std::time::Duration;

use transfer_proto::v1::transfer_service_client::TransferServiceClient;
use transfer_tests::client::{Client, check_resuming, probe_session};
use transfer_tests::process::TransferdProcess;
use transfer_tests::{ChunkStream, Ledger, TestFile, download};

use crate::{
    CHUNK, UploadsUnderway, WINDOW, committed_indexes, figure, on_disk, scaled, sessions_left,
};

async fn connect(server: &TransferdProcess) -> Client {
    for _ in 0..100 {
        if let Ok(client) = TransferServiceClient::connect(server.endpoint()).await {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot connect to transferd at {}", server.endpoint());
}

fn files_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| {
                if e.path().is_dir() {
                    files_under(&e.path())
                } else {
                    1
                }
            })
            .sum()
    })
}

async fn uploads_through_random_kills_all_complete_intact_and_leave_nothing_behind(ledger: Ledger) {
    let mut server = TransferdProcess::start(ledger).await;
    let files: Vec<TestFile> = (0..scaled(6, 20))
        .map(|i| {
            TestFile::new(
                &format!("killed-{i}.bin"),
                scaled(6, 16) << 20,
                400 + i as u64,
            )
        })
        .collect();
    let (_dir, paths) = on_disk(&files);
    let uploads = UploadsUnderway::start(&server.endpoint(), &paths);
    let mut rng = fastrand::Rng::new();
    let mut kills: u64 = 0;
    for _ in 0..scaled(4, 15) {
        // Each kill lands while uploads move bytes: once a MiB more has been acked since
        // the last restart, after a random moment more.
        if !uploads.moved_more(1 << 20).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(0..100))).await;
        server.kill();
        server.restart().await;
        kills += 1;
    }
    // However fast the machine, the first kill lands while bytes move.
    assert!(kills >= 1, "no kill landed while uploads ran");
    let uploaded = uploads.completed().await;
    figure("kills during uploads", kills);
    let mut raw = connect(&server).await;
    for (file, done) in files.iter().zip(&uploaded) {
        let read = download(&mut raw, None, &done.file.file_id, 0, 0)
            .await
            .expect("download");
        assert!(
            read.data == file.data,
            "{} arrives byte for byte",
            file.name
        );
    }
    let sent: u64 = uploaded.iter().map(|u| u.chunks_sent).sum();
    let needed: u64 = files
        .iter()
        .map(|f| (f.data.len() as u64).div_ceil(u64::from(CHUNK)))
        .sum();
    figure(
        "chunks sent for the chunks needed",
        format!("{sent} for {needed}"),
    );
    // A kill costs each upload at most its window (and the chunk being read).
    let bound = needed + kills * files.len() as u64 * u64::from(WINDOW + 1);
    assert!(
        sent <= bound,
        "{sent} chunks sent for {needed} through {kills} kills"
    );
    let left = sessions_left(&mut raw).await;
    assert_eq!(left, 0, "{left} sessions left behind");
    assert_eq!(
        files_under(&server.data_dir().join("staging")),
        0,
        "no staging left"
    );
    assert_eq!(
        files_under(&server.data_dir().join("content")),
        files.len(),
        "one blob per file, no orphan"
    );
}

async fn a_chunk_acked_just_before_a_kill_is_stored_after_the_restart(ledger: Ledger) {
    let mut server = TransferdProcess::start(ledger).await;
    let mut raw = connect(&server).await;
    let file = TestFile::new("acked.bin", 16 * CHUNK as usize, 450);
    let session = probe_session(&mut raw, None, &file, CHUNK).await;
    let mut stream = ChunkStream::open(&mut raw, None, &session.upload_id)
        .await
        .unwrap();
    let rounds = scaled(3, 10) as u64;
    for index in 0..rounds {
        stream.send_chunk(index, file.chunk(index, CHUNK)).await;
        let ack = stream.expect_ack().await;
        assert_eq!(ack.index, index);
        // The moment the ack is seen: no time for anything to reach the disk after it.
        server.kill();
        server.restart().await;
        raw = connect(&server).await;
        let resumed = match check_resuming(&mut raw, None, &file, CHUNK, &session.upload_id).await {
            Ok(transfer_proto::v1::check_upload_response::Result::Session(s)) => s,
            other => panic!("the session resumes: {other:?}"),
        };
        let committed = committed_indexes(&resumed);
        assert_eq!(
            committed,
            (0..=index).collect::<Vec<_>>(),
            "every acked chunk is stored"
        );
        stream = ChunkStream::open(&mut raw, None, &session.upload_id)
            .await
            .unwrap();
    }
    // And on disk: the rest sent once, the file reads back byte for byte.
    stream.send_and_ack(&file, CHUNK, rounds..16).await;
    stream.send_digest(&file.md5).await;
    let done = stream.expect_completed().await;
    let read = download(&mut raw, None, &done.file_id, 0, 0)
        .await
        .expect("download");
    assert!(read.data == file.data, "the acked chunks were on disk");
}

transfer_tests::ledger_tests!(
    uploads_through_random_kills_all_complete_intact_and_leave_nothing_behind,
    a_chunk_acked_just_before_a_kill_is_stored_after_the_restart,
);
