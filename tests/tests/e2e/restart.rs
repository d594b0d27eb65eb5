use std::time::Duration;
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
        for index in (0..8).chain([15]) {
            stream.send_chunk(index, file.chunk(index, CHUNK)).await;
        }
        for _ in 0..9 {
            stream.expect_ack().await;
        }
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
    for index in (0..5).chain([9]) {
        stream.send_chunk(index, file.chunk(index, CHUNK)).await;
    }
    for _ in 0..6 {
        stream.expect_ack().await;
    }
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

transfer_tests::ledger_tests!(
    an_upload_resumes_after_a_server_restart_and_verifies_the_whole_file,
    staging_left_by_a_closed_upload_is_swept_at_start_up,
    an_idle_session_saves_its_hash_so_a_new_one_resumes_it,
);
