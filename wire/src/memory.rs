//! Memory for a large message before its bytes are read.
//!
//! A message's buffer is taken whole once its length is known, so a peer that sends
//! the start of many large messages and never the rest would make the receiver hold
//! all of them. A receiver with a [`MessageMemory`] asks it before gathering each large
//! message; the message waits (its body is not read, so HTTP/2 flow control holds the
//! sender back) until the memory is granted, or the stream ends with the refusal.

use std::future::Future;
use std::pin::Pin;

/// Memory granted to one message, given back when dropped (once the message is whole,
/// or its stream ends).
pub type MemoryHold = Box<dyn Send + Sync>;

/// A pending grant.
pub type Reserving = Pin<Box<dyn Future<Output = Result<MemoryHold, MemoryRefused>> + Send>>;

/// Grants memory to the large messages of one stream.
pub trait MessageMemory: Send + Sync {
    /// Memory for a message of `len` bytes: pending while the receiver has none to
    /// spare, an error when the message may not have it (said to the sender).
    fn reserve(&self, len: usize) -> Reserving;
}

/// Why a message was not given memory, in words for the sender.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct MemoryRefused(pub String);
