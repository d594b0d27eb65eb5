//! End-to-end tests: the real `transferd` on an ephemeral port, driven over gRPC with the
//! generated client, each test on its own fresh PostgreSQL database and data directory.

mod abort;
mod check_upload;
mod chunk_rules;
mod concurrency;
mod download;
mod empty_file;
mod expiry;
mod files;
mod garbage;
mod health;
mod instant_upload;
mod integrity;
mod migrate;
mod object_store;
mod replicas;
mod restart;
mod resume;
mod single_pass;
mod stream_errors;
mod wire_errors;

/// Chunk size most tests use: small, so small files have many chunks.
pub const CHUNK: u32 = 4096;
