//! One file over several connections ("stripes"): an upload's chunks into one session,
//! sharing one window, and a download's ranges; both go on when one connection is cut.

use std::time::Duration;

use transfer_client::{ClientConfig, TransferClient, part_path};
use transfer_proto::v1::UploadSession;
use transfer_tests::silent_server::SilentServer;
use transfer_tests::{CuttingProxy, Ledger, TestFile, TestServer, download, upload_file};

use crate::{client, on_disk};

const CHUNK: u64 = 64 * 1024;

/// The tests' client, told to start on `connections` connections and keep them.
fn striping_client(endpoint: String, connections: u32) -> TransferClient {
    let mut config = client(endpoint).config().clone();
    config.connections_per_file = connections;
    config.starting_connections = connections;
    TransferClient::new(config).expect("a valid client")
}

async fn a_file_striped_over_three_connections_completes_in_one_session_after_one_is_cut(
    ledger: Ledger,
) {
    let server = TestServer::start(ledger).await;
    let file = TestFile::new("striped.bin", 6 << 20, 7);
    let (_dir, path) = on_disk(&file);
    // The first connection (CheckUpload's, which the first stripe shares) is cut once
    // 512 KiB went through it; the other two stripes go on.
    let proxy = CuttingProxy::start(server.addr, 512 << 10, 1).await;
    let client = striping_client(proxy.endpoint(), 3);

    let uploaded = client
        .upload_path(&path)
        .wait()
        .await
        .expect("the upload completes");
    assert_eq!(proxy.cuts_made(), 1, "one connection was cut");
    assert_eq!(uploaded.connections, 3);
    let by_connection = proxy.bytes_to_server_by_connection();
    let carried_chunks = by_connection.iter().filter(|&&bytes| bytes > CHUNK).count();
    assert!(
        carried_chunks >= 2,
        "chunks went over several connections: {by_connection:?}"
    );

    // One session, every chunk recorded once, and the file is byte for byte the same.
    let chunks = (file.data.len() as u64).div_ceil(CHUNK);
    assert_eq!(server.chunk_rows().await, chunks as i64);
    assert_eq!(
        server.ledger_number("SELECT count(*) FROM files").await,
        1,
        "one upload session for the whole file"
    );
    let mut raw = server.client().await;
    let copy = download(&mut raw, None, &uploaded.file.file_id, 0, 0)
        .await
        .expect("the file downloads");
    assert_eq!(copy.data, file.data);
}

async fn a_download_striped_over_three_connections_is_the_file_after_one_is_cut(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    // Blocks are 32 MiB: the first stream, then blocks on three connections.
    let file = TestFile::new("striped-down.bin", 120 << 20, 11);
    let mut raw = server.client().await;
    let stored = upload_file(&mut raw, None, &file, 4 << 20).await;
    // Connection 0 carries the first stream; the cut one carries blocks.
    let proxy = CuttingProxy::cutting_connection(server.addr, 2, 4 << 20).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let dest = dir.path().join("copy.bin");

    let downloaded = striping_client(proxy.endpoint(), 3)
        .download(&stored.file_id, &dest)
        .wait()
        .await
        .expect("the download completes");
    assert_eq!(proxy.cuts_made(), 1, "one connection was cut");
    assert_eq!(downloaded.resumed_from, 0);
    assert_eq!(downloaded.connections, 3);
    assert!(
        proxy.bytes_to_server_by_connection().len() >= 3,
        "three connections or more were opened"
    );
    assert_eq!(std::fs::read(&dest).expect("the file"), file.data);
    assert!(!part_path(&dest).exists(), "the .part file became the file");
}

transfer_tests::ledger_tests!(
    a_file_striped_over_three_connections_completes_in_one_session_after_one_is_cut,
    a_download_striped_over_three_connections_is_the_file_after_one_is_cut,
);

#[tokio::test]
async fn stripes_share_one_window_and_each_keeps_to_the_sessions() {
    // The session allows 4 chunks in flight per stream; the client 10 in all. Three
    // stripes could carry 12: they carry exactly 10, on three connections.
    let server = SilentServer::start(UploadSession {
        upload_id: "4a1b5e3c-8f0d-4d9e-9c55-2f3b6a7d8e91".into(),
        chunk_size: CHUNK as u32,
        chunk_count: 64,
        max_window: 4,
        max_window_bytes: 4 * CHUNK,
        ..Default::default()
    })
    .await;
    let file = TestFile::new("window.bin", 64 * CHUNK as usize, 3);
    let (_dir, path) = on_disk(&file);
    let mut config = ClientConfig::new(server.endpoint());
    config.chunk_size = CHUNK as u32;
    config.window_bytes = 10 * CHUNK;
    config.connections_per_file = 3;
    config.starting_connections = 3;
    config.stall_timeout = Duration::from_secs(60);
    let upload = TransferClient::new(config)
        .expect("a valid client")
        .upload_path(&path);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while server.chunks_received() < 10 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the window was never filled: {:?}",
            server.streams()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Nothing is acknowledged, so nothing more may go out however long it waits.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let streams = server.streams();
    assert_eq!(server.chunks_received(), 10, "{streams:?}");
    assert_eq!(streams.len(), 3, "{streams:?}");
    assert!(
        streams.iter().all(|s| s.chunks.len() <= 4),
        "no stream carries more than the session's window: {streams:?}"
    );
    let connections: std::collections::BTreeSet<_> = streams.iter().map(|s| s.peer).collect();
    assert_eq!(connections.len(), 3, "each stripe has its own connection");
    let mut sent: Vec<u64> = streams.iter().flat_map(|s| s.chunks.clone()).collect();
    sent.sort_unstable();
    assert_eq!(
        sent,
        (0..10).collect::<Vec<_>>(),
        "each chunk once, in order"
    );
    upload.cancel();
}
