//! Uploads: `CheckUpload` opens or finds a session, `UploadChunks` streams into it.
//!
//! - [`check`]: instant upload or an upload session, with its committed chunks.
//! - [`session`]: one task per active session that writes, commits, acks and hashes.
//! - [`stream`]: one `UploadChunks` stream: window, forwarding acks; `chunk_check`:
//!   a chunk's index, length and CRC32C.
//! - [`possession`]: instant upload across owners, for a caller that proves it holds the bytes.
//! - [`hasher`]: the whole-file MD5, computed once over the committed prefix.
//! - [`wire`]: `UploadChunks` requests read off the HTTP/2 body, chunk data page-aligned.

pub mod check;
mod chunk_check;
mod committed;
pub mod content_digest;
mod hasher;
mod memory;
mod opening;
mod parked;
pub mod possession;
pub mod session;
pub mod stream;
pub mod wire;

pub use session::SessionRegistry;
