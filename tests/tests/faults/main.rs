//! The fault suite: uploads and downloads through what real deployments meet (a
//! `transferd` killed with SIGKILL at random moments, connections cut mid-stream), with
//! the real binary where a process must die and a byte-counting proxy that says what
//! was really sent again. Each test asserts that every file arrives byte for byte, that
//! no session is left behind, and bounds what a break costs.
//!
//! A short mode runs in `scripts/test`; `scripts/faults` runs the long mode
//! (`TRANSFER_FAULTS_LONG=1`) and prints the figures.

mod cuts;
mod database;
mod kills;
mod replicas;

use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;
use transfer_client::{
    ClientConfig, Progress, RetryPolicy, TransferClient, TransferHandle, UploadedFile,
};
use transfer_tests::TestFile;

/// Whether to run the long mode (`scripts/faults`).
pub fn long_mode() -> bool {
    std::env::var_os("TRANSFER_FAULTS_LONG").is_some_and(|v| !v.is_empty() && v != "0")
}

/// `short` in the short mode, `long` in the long one.
pub fn scaled(short: usize, long: usize) -> usize {
    if long_mode() { long } else { short }
}

/// Chunk size and window the fault tests' clients use.
pub const CHUNK: u32 = 256 << 10;
pub const WINDOW: u32 = 8;

/// A client that retries quickly and for long, in single-pass or hash-first mode.
pub fn client(endpoint: String, hash_first: bool) -> TransferClient {
    let mut config = ClientConfig::new(endpoint);
    config.chunk_size = CHUNK;
    config.window = WINDOW;
    config.hash_first = hash_first;
    config.stall_timeout = Duration::from_secs(10);
    config.retry = RetryPolicy {
        retry_for: Duration::from_secs(120),
        max_attempts: u32::MAX,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(500),
    };
    TransferClient::new(config).expect("a valid test client")
}

/// Uploads running at once from the client library, watched for the bytes they move.
pub struct UploadsUnderway {
    uploads: Vec<TransferHandle<UploadedFile>>,
    progress: Vec<tokio::sync::watch::Receiver<Progress>>,
}

impl UploadsUnderway {
    /// Starts uploading every file in `paths` through `endpoint` at once, half of them
    /// hash-first, half in a single pass.
    pub fn start(endpoint: &str, paths: &[PathBuf]) -> Self {
        let uploads: Vec<_> = paths
            .iter()
            .enumerate()
            .map(|(i, path)| client(endpoint.to_owned(), i % 2 == 1).upload_path(path))
            .collect();
        let progress = uploads.iter().map(|upload| upload.watch()).collect();
        Self { uploads, progress }
    }

    /// Waits until `bytes` more have been acked: a fault then lands while bytes move.
    /// `false` if every upload finished first.
    pub async fn moved_more(&self, bytes: u64) -> bool {
        let moved = || -> u64 { self.progress.iter().map(|p| p.borrow().bytes_done).sum() };
        let since = moved();
        while moved() < since + bytes {
            if self.progress.iter().all(|p| p.borrow().state.is_finished()) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Waits for every upload, which must complete.
    pub async fn completed(self) -> Vec<UploadedFile> {
        let mut uploaded = Vec::new();
        for upload in self.uploads {
            uploaded.push(upload.wait().await.expect("every upload completes"));
        }
        uploaded
    }
}

/// Writes test files into a fresh directory.
pub fn on_disk(files: &[TestFile]) -> (TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let paths = files
        .iter()
        .map(|file| {
            let path = dir.path().join(&file.name);
            std::fs::write(&path, &file.data).expect("writing a test file");
            path
        })
        .collect();
    (dir, paths)
}

/// The owner's uploads still open: sessions a fault left behind, once every upload
/// is done.
pub async fn sessions_left(client: &mut transfer_tests::client::Client) -> usize {
    let open = transfer_proto::v1::ListFilesRequest {
        state: transfer_proto::v1::FileState::Uploading.into(),
        ..Default::default()
    };
    transfer_tests::client::list_all(client, None, open)
        .await
        .len()
}

/// The chunk indexes a resumed session has committed.
pub fn committed_indexes(session: &transfer_proto::v1::UploadSession) -> Vec<u64> {
    session
        .committed
        .iter()
        .flat_map(|range| range.start..range.end)
        .collect()
}

/// Prints a figure of the run (shown with `--nocapture`, as `scripts/faults` runs it).
pub fn figure(what: &str, value: impl std::fmt::Display) {
    println!("FIGURE {what}: {value}");
}
