//! Client library for Transfer: large-file upload and download over gRPC.
//!
//! - Uploads hash the file (MD5) in bounded memory, ask `CheckUpload` (content the server
//!   already has is an instant upload), then stream only the missing chunks, each with
//!   its CRC32C, keeping at most a window of chunks unacknowledged.
//! - After a broken stream, a lost connection or a server restart they reconnect with
//!   exponential backoff and jitter, ask again, and send only what is still missing;
//!   a chunk the server acknowledged is never sent again.
//! - Downloads resume from `<dest>.part`, check every piece's CRC32C and the whole MD5,
//!   and only then rename into place.
//! - Every transfer is a [`TransferHandle`]: pause, resume, cancel, progress events.
//!   [`TransferManager`] runs many with a concurrency limit.
//!
//! ```no_run
//! use transfer_client::{ClientConfig, TransferClient, TransferState};
//!
//! # async fn example() -> Result<(), transfer_client::TransferError> {
//! let client = TransferClient::new(ClientConfig::new("http://127.0.0.1:50051"))?;
//!
//! let upload = client.upload_path("video.mp4");
//! let mut progress = upload.watch();
//! tokio::spawn(async move {
//!     while progress.changed().await.is_ok() {
//!         let p = progress.borrow().clone();
//!         println!("{:?}: {} of {} bytes", p.state, p.bytes_done, p.total);
//!     }
//! });
//! let uploaded = upload.wait().await?;
//! println!("file id {} (instant: {})", uploaded.file.file_id, uploaded.instant);
//!
//! let downloaded = client.download(&uploaded.file.file_id, "copy.mp4").wait().await?;
//! println!("verified copy at {}", downloaded.path.display());
//! # Ok(())
//! # }
//! ```
//!
//! The generated tonic client is there for anything else: [`TransferClient::raw`], and
//! the messages in [`proto`].

#![forbid(unsafe_code)]

mod catalog;
mod chunks;
mod client;
mod config;
mod connection;
mod download;
mod error;
mod grpc_call;
mod hash_pipe;
mod host_cpu;
mod manager;
mod metadata;
mod part_writer;
mod possession;
mod progress;
mod retry;
mod slots;
mod source;
mod streaming_md5;
mod stripes;
mod upload;
mod upload_wire;

pub use catalog::{FileFilter, FilePage};
pub use client::{AbortOutcome, TransferClient};
pub use config::{ApiKey, ClientConfig, ClientIdentity, RetryPolicy};
pub use connection::RawClient;
pub use download::{DownloadedFile, part_path};
pub use error::TransferError;
pub use manager::TransferManager;
pub use metadata::CallMetadata;
pub use progress::{Progress, TransferControl, TransferHandle, TransferState};
pub use source::{ChunkSource, FileSource, ReaderSource};
pub use upload::UploadedFile;

/// The generated API (`transfer.v1`): messages and the raw tonic client.
pub use transfer_proto::v1 as proto;
