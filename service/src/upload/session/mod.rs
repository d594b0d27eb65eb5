//! Active upload sessions: one task per session owns its writes, commits, acks and hash.
//!
//! Every `UploadChunks` stream of a session (a client may resume on a new stream while
//! an old one lingers, and two clients with the same content share one session) sends
//! its validated chunks to the session's task. That single writer makes duplicates and
//! completion race-free: it writes a batch of chunks to the blob store (durable), commits
//! them to the ledger in one transaction, and only then acks them. It feeds the
//! contiguous prefix of committed chunks to the [`OrderedHasher`] while it writes the
//! next batch, and acks those chunks as the hasher takes them, so a client sends no
//! faster than the server hashes. When the last chunk is committed (and, for a
//! single-pass upload, the client has declared the whole-file MD5 with `digest`) it
//! checks the MD5 and completes the file.
//!
//! A session task stops when its session completes, fails or is aborted, or after it
//! has been idle with no stream attached for a while; the next stream starts a new task,
//! which rebuilds its state from the ledger and the staged bytes.
//!
//! - [`registry`]: which sessions are live; attaching streams; short questions (whether
//!   a stream is attached is answered there, without queueing behind a session's writes).
//! - [`task`]: a session task's life: loading from the ledger, serving, answering late
//!   attaches once it stopped.
//! - [`actor`]: the session's state and its inbox: batches of chunks, digests, acks.
//! - [`frontier`]: the in-order hash of the committed prefix, parked chunks, checkpoints.
//! - [`completion`]: verifying the whole-file digest and completing (or failing) the file.
//! - [`writer`]: a batch written to the blob store, then committed to the ledger.

mod actor;
mod completion;
mod frontier;
mod registry;
mod task;
mod writer;

#[cfg(test)]
mod frontier_tests;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::error::ServiceError;
use crate::identity::Owner;
use crate::layout::{ChunkLayout, Window};
use crate::ledger::{FileRecord, FileState, Md5Digest};

pub use registry::SessionRegistry;

/// A chunk whose index, length and CRC32C the stream has already checked.
#[derive(Debug)]
pub struct VerifiedChunk {
    pub index: u64,
    pub data: Bytes,
    pub crc32c: u32,
    /// When the stream received it, for the commit latency.
    pub received_at: std::time::Instant,
    /// The span of the stream that sent it: storage spans of its batch are children.
    pub span: tracing::Span,
}

/// What a session tells the streams attached to it.
#[derive(Debug)]
pub enum SessionEvent {
    /// A chunk this stream sent is durably stored (by this or an earlier send).
    Ack {
        index: u64,
        already_stored: bool,
        /// Chunks of the session still missing after this one.
        remaining: u64,
    },
    /// The whole file is stored and verified.
    Completed(FileRecord),
    /// The stream must end with this error.
    Failed(ServiceError),
}

/// What a stream learns when it attaches to a session.
#[derive(Debug, Clone, Copy)]
pub struct SessionInfo {
    pub id: Uuid,
    pub layout: ChunkLayout,
    pub window: Window,
    /// Chunks still missing when the stream attached.
    pub remaining: u64,
    /// No whole-file MD5 was declared yet when the stream attached (single pass).
    pub needs_digest: bool,
}

/// The answer to a stream that asks to attach.
pub enum Attachment {
    /// The session is open: stream chunks into it.
    Stream(AttachedStream),
    /// The upload has already completed: this is the file.
    Completed(FileRecord),
}

/// The session a stream was attached to has closed.
#[derive(Debug)]
pub struct SessionClosed;

/// A stream's attachment to a session: send chunks in, receive events out.
pub struct AttachedStream {
    pub info: SessionInfo,
    stream_id: u64,
    commands: mpsc::Sender<Command>,
    pub events: mpsc::UnboundedReceiver<SessionEvent>,
    /// Counts this stream among the session's live ones until it is dropped.
    _live: LiveStream,
}

/// What the registry keeps of a running session task: its inbox, and how many streams
/// are attached (read without queueing behind the session's writes).
#[derive(Clone)]
pub(super) struct SessionHandle {
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) live_streams: Arc<AtomicUsize>,
}

/// One attached stream, counted in [`SessionHandle::live_streams`] while it lives.
pub(super) struct LiveStream(Arc<AtomicUsize>);

impl LiveStream {
    pub(super) fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(count))
    }
}

impl Drop for LiveStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl AttachedStream {
    /// Hands a chunk to the session. Waits while the session is busy. Fails when the
    /// session has closed; its last event then says why.
    pub async fn send_chunk(&self, chunk: VerifiedChunk) -> Result<(), SessionClosed> {
        self.commands
            .send(Command::Chunk {
                stream: self.stream_id,
                chunk,
            })
            .await
            .map_err(|_| SessionClosed)
    }

    /// Declares the whole-file MD5 of a single-pass upload (or repeats that of any
    /// upload). A mismatch with the MD5 declared before ends this stream.
    pub async fn send_digest(&self, md5: Md5Digest) -> Result<(), SessionClosed> {
        self.commands
            .send(Command::Digest {
                stream: self.stream_id,
                md5,
            })
            .await
            .map_err(|_| SessionClosed)
    }
}

pub(super) enum Command {
    Attach {
        owner: Owner,
        reply: oneshot::Sender<Result<Attachment, ServiceError>>,
    },
    Chunk {
        stream: u64,
        chunk: VerifiedChunk,
    },
    Digest {
        stream: u64,
        md5: Md5Digest,
    },
    /// The ledger has closed this upload (aborted or expired it): tell the streams and
    /// stop before any more writes, then reply so the caller can drop the staged bytes.
    Closed {
        state: FileState,
        done: oneshot::Sender<()>,
    },
    /// Another replica asks for this upload: stop, leaving everything for it.
    HandOver,
}
