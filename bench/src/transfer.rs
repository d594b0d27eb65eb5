//! Uploads and downloads through the client library, timed by phase.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use tokio::sync::watch;
use transfer_client::proto::CheckUploadRequest;
use transfer_client::proto::check_upload_response::Result as CheckResult;
use transfer_client::{ClientConfig, Progress, RawClient, TransferClient, TransferState};

/// One upload, by phase.
#[derive(Debug, Clone)]
pub struct UploadTiming {
    /// From the start until the first chunk is sent: reading and hashing the whole file,
    /// and `CheckUpload`.
    pub hashing: f64,
    /// From the first chunk sent until the server's `completed`.
    pub transfer: f64,
    pub total: f64,
    pub file_id: String,
    /// The MD5 the server recorded.
    pub md5: Vec<u8>,
    pub instant: bool,
    /// The most connections it sent over at once.
    pub connections: u32,
}

/// Uploads `path` with the client library and times its phases.
pub async fn upload(config: ClientConfig, path: &Path) -> Result<UploadTiming> {
    let client = TransferClient::new(config)?;
    let started = Instant::now();
    let handle = client.upload_path(path);
    let first_chunk = tokio::spawn(when_uploading_starts(handle.watch()));
    let uploaded = handle.wait().await.context("the upload failed")?;
    let total = started.elapsed().as_secs_f64();
    let hashing = first_chunk
        .await?
        .map_or(total, |at| at.duration_since(started).as_secs_f64());
    Ok(UploadTiming {
        hashing,
        transfer: total - hashing,
        total,
        file_id: uploaded.file.file_id,
        md5: uploaded.file.md5.to_vec(),
        instant: uploaded.instant,
        connections: uploaded.connections,
    })
}

async fn when_uploading_starts(mut progress: watch::Receiver<Progress>) -> Option<Instant> {
    loop {
        let state = progress.borrow_and_update().state.clone();
        match state {
            TransferState::Uploading => return Some(Instant::now()),
            s if s.is_finished() => return None,
            _ => {}
        }
        progress.changed().await.ok()?;
    }
}

/// Downloads `file_id` into `dest` (checking every piece's CRC32C and the whole MD5);
/// returns the seconds it took.
pub async fn download(config: ClientConfig, file_id: &str, dest: &Path) -> Result<f64> {
    Ok(download_over(config, file_id, dest).await?.0)
}

/// As [`download`], also returning the most connections it received over at once.
pub async fn download_over(config: ClientConfig, file_id: &str, dest: &Path) -> Result<(f64, u32)> {
    let client = TransferClient::new(config)?;
    let _ = tokio::fs::remove_file(dest).await;
    let started = Instant::now();
    let downloaded = client
        .download(file_id, dest)
        .wait()
        .await
        .context("the download failed")?;
    let seconds = started.elapsed().as_secs_f64();
    tokio::fs::remove_file(dest).await?;
    Ok((seconds, downloaded.connections))
}

/// One `CheckUpload` with an MD5 (two-pass), timed: its answer and its seconds.
pub async fn timed_check(
    raw: &mut RawClient,
    name: String,
    size: u64,
    md5: [u8; 16],
) -> Result<(Option<CheckResult>, f64)> {
    let started = Instant::now();
    let answer = raw
        .check_upload(CheckUploadRequest {
            name,
            size,
            md5: md5.to_vec().into(),
            preferred_chunk_size: 0,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok((answer.result, started.elapsed().as_secs_f64()))
}

/// Round trips of `CheckUpload` for content the server has, on a warm connection: the
/// server's time for an instant upload plus a loopback round trip.
pub async fn instant_check_seconds(
    config: ClientConfig,
    size: u64,
    md5: [u8; 16],
    calls: usize,
) -> Result<Vec<f64>> {
    let client = TransferClient::new(config)?;
    let mut raw = client.raw();
    let mut seconds = Vec::with_capacity(calls);
    for i in 0..=calls {
        let (answer, elapsed) = timed_check(&mut raw, format!("instant-{i}"), size, md5).await?;
        if !matches!(answer, Some(CheckResult::AlreadyStored(_))) {
            bail!("CheckUpload did not answer with the stored file");
        }
        // The first call also opens the connection.
        if i > 0 {
            seconds.push(elapsed);
        }
    }
    Ok(seconds)
}
