//! What `transferd` and the client share below gRPC, for moving bulk bytes with as few
//! copies as the hardware allows.
//!
//! - [`framer`]: gRPC messages gathered straight off HTTP/2 body frames, their bulk data
//!   landing page-aligned.
//! - [`body`]: an HTTP/2 body read as those messages, then how it ended.
//! - [`encode`]: gRPC messages written as body pieces, bulk data uncopied.
//! - [`aligned`]: pooled page-aligned buffers, ready for direct I/O.
//! - [`memory`]: memory a receiver grants a large message before reading it.

#![forbid(unsafe_code)]

pub mod aligned;
pub mod body;
pub mod encode;
pub mod framer;
pub mod memory;
