//! The end-to-end test harness: a fresh migrated database per test, the real `transferd`
//! on an ephemeral port, and small client helpers built on the generated tonic client.

pub mod client;
pub mod data;
pub mod database;
pub mod server;

pub use client::{ChunkStream, DownloadResult, download, upload_file};
pub use data::{TestFile, crc32c, md5};
pub use database::TestDatabase;
pub use server::TestServer;
