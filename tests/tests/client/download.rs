use std::time::Duration;

use transfer_client::{RetryPolicy, TransferError, part_path};
use transfer_tests::{CuttingProxy, Ledger, TestFile, TestServer, upload_file};

use crate::client;

/// Uploads a file and leaves a partial download of it in `dest.part`, as an interrupted
/// run does. Returns the file id and the length of the part.
async fn interrupted_download(
    server: &TestServer,
    file: &TestFile,
    dest: &std::path::Path,
) -> (String, u64) {
    let mut raw = server.client().await;
    let stored = upload_file(&mut raw, None, file, 256 * 1024).await;
    // A connection cut after ~3 MiB, and no retries: the download stops part-way.
    let proxy = CuttingProxy::start(server.addr, 3 << 20, 1).await;
    let mut config = transfer_client::ClientConfig::new(proxy.endpoint());
    config.retry = RetryPolicy {
        retry_for: Duration::from_secs(300),
        max_attempts: 0,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(1),
    };
    let client = transfer_client::TransferClient::new(config).unwrap();
    let result = client.download(&stored.file_id, dest).wait().await;
    assert!(
        matches!(result, Err(TransferError::RetriesExhausted { .. })),
        "{result:?}"
    );
    let part_len = std::fs::metadata(part_path(dest))
        .expect("a .part file")
        .len();
    assert!(
        part_len > 0 && part_len < file.data.len() as u64,
        "part of {part_len} bytes"
    );
    assert!(!dest.exists());
    (stored.file_id, part_len)
}

async fn an_interrupted_download_resumes_from_its_part_file(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let file = TestFile::new("resume-down.bin", 12 << 20, 110);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("copy.bin");
    let (file_id, part_len) = interrupted_download(&server, &file, &dest).await;

    let downloaded = client(server.endpoint())
        .download(&file_id, &dest)
        .wait()
        .await
        .expect("the download resumes and completes");
    assert_eq!(downloaded.resumed_from, part_len);
    assert_eq!(std::fs::read(&dest).unwrap(), file.data);
    assert!(!part_path(&dest).exists(), "the .part file became the file");
}

async fn a_tampered_part_file_is_detected_and_no_file_is_left(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let file = TestFile::new("tamper.bin", 12 << 20, 111);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("copy.bin");
    let (file_id, _) = interrupted_download(&server, &file, &dest).await;
    let part = part_path(&dest);
    let mut bytes = std::fs::read(&part).unwrap();
    bytes[1000] ^= 0xFF;
    std::fs::write(&part, bytes).unwrap();

    let result = client(server.endpoint())
        .download(&file_id, &dest)
        .wait()
        .await;
    match result {
        Err(TransferError::Md5Mismatch {
            expected, actual, ..
        }) => {
            assert_eq!(
                expected,
                transfer_tests::data::md5(&file.data)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            );
            assert_ne!(expected, actual);
        }
        other => panic!("expected an MD5 mismatch, got {other:?}"),
    }
    assert!(!dest.exists(), "no unverified file at the destination");
    assert!(!part.exists(), "the bad .part file is removed");
}

async fn a_download_through_cut_connections_completes(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let file = TestFile::new("cut-down.bin", 10 << 20, 112);
    let mut raw = server.client().await;
    let stored = upload_file(&mut raw, None, &file, 256 * 1024).await;
    let proxy = CuttingProxy::start(server.addr, 2 << 20, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("copy.bin");
    client(proxy.endpoint())
        .download(&stored.file_id, &dest)
        .wait()
        .await
        .expect("the download completes through the cuts");
    assert_eq!(proxy.cuts_made(), 3);
    assert_eq!(std::fs::read(&dest).unwrap(), file.data);
}

async fn downloading_an_unknown_file_fails_at_once(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let dir = tempfile::tempdir().unwrap();
    let missing = uuid::Uuid::new_v4().to_string();
    let result = client(server.endpoint())
        .download(&missing, dir.path().join("x"))
        .wait()
        .await;
    match result {
        Err(TransferError::Refused { code, .. }) => assert_eq!(code, tonic::Code::NotFound),
        other => panic!("expected NOT_FOUND, got {other:?}"),
    }
}

async fn downloading_a_file_still_uploading_fails_at_once(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut raw = server.client().await;
    let file = TestFile::new("unfinished.bin", 100_000, 113);
    let session = transfer_tests::client::open_session(&mut raw, None, &file, 4096).await;
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let result = client(server.endpoint())
        .download(&session.upload_id, dir.path().join("x"))
        .wait()
        .await;
    match result {
        Err(TransferError::Refused { code, .. }) => {
            assert_eq!(code, tonic::Code::FailedPrecondition)
        }
        other => panic!("expected FAILED_PRECONDITION, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2), "no retries");
}

async fn a_part_file_longer_than_the_file_is_started_over(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let file = TestFile::new("longer.bin", 300_000, 114);
    let mut raw = server.client().await;
    let stored = upload_file(&mut raw, None, &file, 64 * 1024).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("copy.bin");
    std::fs::write(part_path(&dest), vec![7u8; 400_000]).unwrap();
    client(server.endpoint())
        .download(&stored.file_id, &dest)
        .wait()
        .await
        .expect("the download starts over and completes");
    assert_eq!(std::fs::read(&dest).unwrap(), file.data);
}

transfer_tests::ledger_tests!(
    a_part_file_longer_than_the_file_is_started_over,
    downloading_a_file_still_uploading_fails_at_once,
    an_interrupted_download_resumes_from_its_part_file,
    a_tampered_part_file_is_detected_and_no_file_is_left,
    a_download_through_cut_connections_completes,
    downloading_an_unknown_file_fails_at_once,
);

#[tokio::test]
async fn the_rust_client_refuses_a_download_that_does_not_check_out() {
    let file = TestFile::new("lies.bin", 4500, 604);
    let addr = transfer_tests::lying_server::start_lying_server(file.clone()).await;
    for (lie, named) in transfer_tests::lying_server::LIES {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("lies.bin");
        let mut config = transfer_client::ClientConfig::new(format!("http://{addr}"));
        // A lie told again on every attempt: few, quick retries.
        config.retry = RetryPolicy {
            retry_for: Duration::from_secs(300),
            max_attempts: 2,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(20),
        };
        let client = transfer_client::TransferClient::new(config).unwrap();
        let refused =
            tokio::time::timeout(Duration::from_secs(30), client.download(lie, &dest).wait())
                .await
                .expect("the client gives up on a server that keeps lying")
                .expect_err("a download that does not check out is refused");
        let said = refused.to_string();
        assert!(said.contains(named), "{lie}: {said}");
        assert!(!dest.exists(), "{lie}: no file");
        // What is kept to resume from holds only bytes that checked out.
        if let Ok(kept) = std::fs::read(part_path(&dest)) {
            assert!(
                kept.len() <= file.data.len() && kept[..] == file.data[..kept.len()],
                "{lie}: the partial file holds only verified bytes"
            );
        }
    }
}
