//! Tests of the client library and the `transfer` CLI against the real server: cut
//! connections, a killed server, pause, resume, cancel, many files, resumable downloads.

mod cli;
mod download;
mod manager;
mod striping;
mod upload;

use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;
use transfer_client::{ClientConfig, RetryPolicy, TransferClient};
use transfer_tests::TestFile;

/// A client for tests: small chunks, quick retries.
pub fn client(endpoint: String) -> TransferClient {
    let mut config = ClientConfig::new(endpoint);
    config.chunk_size = 64 * 1024;
    config.window = 8;
    config.stall_timeout = Duration::from_secs(10);
    config.retry = RetryPolicy {
        retry_for: Duration::from_secs(300),
        max_attempts: 20,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(500),
    };
    TransferClient::new(config).expect("a valid test client")
}

/// Writes a test file into a fresh directory.
pub fn on_disk(file: &TestFile) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join(&file.name);
    std::fs::write(&path, &file.data).expect("writing the test file");
    (dir, path)
}

/// The server holds exactly `file`'s bytes under the id the upload reported.
pub async fn assert_stored(
    server: &transfer_tests::TestServer,
    uploaded: &transfer_client::UploadedFile,
    file: &TestFile,
) {
    let mut raw = server.client().await;
    let downloaded = transfer_tests::download(&mut raw, None, &uploaded.file.file_id, 0, 0)
        .await
        .expect("the uploaded file downloads");
    assert!(
        downloaded.data == file.data,
        "the stored bytes are the file's"
    );
}
