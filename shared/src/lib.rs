//! What the client and the service both do above the wire, written once:
//! - [`layout`]: how a file is cut into chunks;
//! - [`hash_pipe`]: bytes hashed in order on the blocking pool, beside the work that
//!   produces them;
//! - [`direct_write`]: writes at offsets with direct I/O where the filesystem allows it;
//! - [`trace_context`]: W3C trace context in gRPC metadata.

#![forbid(unsafe_code)]

pub mod direct_write;
pub mod hash_pipe;
pub mod layout;
pub mod trace_context;
