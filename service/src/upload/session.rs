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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;
use tracing::Instrument;
use uuid::Uuid;

use super::committed::CommittedChunks;
use super::hasher::{FileDigests, OrderedHasher};
use super::memory::MemoryBudget;
use super::opening::OpeningLocks;
use super::parked::ParkedChunks;
use crate::blob::{BlobError, BlobStore, ContentKey, Part};
use crate::error::ServiceError;
use crate::identity::Owner;
use crate::layout::{ChunkLayout, Limits};
use crate::ledger::{
    ChunkLedger, CommittedChunk, FileRecord, FileState, HashCheckpoint, LedgerError, Md5Digest,
};
use crate::metrics::{attribute, metrics};

/// Most chunks written and committed in one batch.
const MAX_BATCH_CHUNKS: usize = 64;
/// Most bytes written and committed in one batch.
const MAX_BATCH_BYTES: usize = 128 << 20;
/// How much newly hashed data makes the session save a hash checkpoint, so that a
/// restarted session re-reads at most this much to rebuild the MD5.
const CHECKPOINT_BYTES: u64 = 128 << 20;

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
    /// The stream must end with this status.
    Failed(Status),
}

/// What a stream learns when it attaches to a session.
#[derive(Debug, Clone, Copy)]
pub struct SessionInfo {
    pub id: Uuid,
    pub layout: ChunkLayout,
    pub max_window: u32,
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

enum Command {
    Attach {
        owner: Owner,
        reply: oneshot::Sender<Result<Attachment, Status>>,
    },
    Chunk {
        stream: u64,
        chunk: VerifiedChunk,
    },
    Digest {
        stream: u64,
        md5: Md5Digest,
    },
    /// Whether a live stream is attached (someone is uploading into it right now).
    HasStreams {
        reply: oneshot::Sender<bool>,
    },
    /// The ledger has aborted this upload: tell the streams and stop before any more
    /// writes, then reply so the caller can drop the staged bytes.
    Aborted {
        done: oneshot::Sender<()>,
    },
}

/// The active sessions of this server, by upload id.
pub struct SessionRegistry {
    ledger: Arc<dyn ChunkLedger>,
    blobs: Arc<dyn BlobStore>,
    /// Memory for messages being read and parked chunks, shared by every stream.
    memory: Arc<MemoryBudget>,
    limits: Limits,
    idle_timeout: Duration,
    sessions: Mutex<HashMap<Uuid, mpsc::Sender<Command>>>,
    /// New sessions are opened one at a time per owner.
    opening: OpeningLocks,
}

impl SessionRegistry {
    pub fn new(
        ledger: Arc<dyn ChunkLedger>,
        blobs: Arc<dyn BlobStore>,
        limits: Limits,
        idle_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            ledger,
            blobs,
            memory: MemoryBudget::new(
                limits.upload_memory_bytes,
                limits.owner_upload_memory_bytes,
                limits.stream_idle_timeout,
            ),
            limits,
            idle_timeout,
            sessions: Mutex::new(HashMap::new()),
            opening: OpeningLocks::new(),
        })
    }

    /// The server's bounds.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Held while `owner`'s caps are checked and a new session of it recorded.
    pub async fn opening(&self, owner: &Owner) -> tokio::sync::MutexGuard<'_, ()> {
        self.opening.lock(owner).await
    }

    /// The memory upload streams share.
    pub fn memory(&self) -> &Arc<MemoryBudget> {
        &self.memory
    }

    /// Attaches a new stream of `owner` to upload `id`, starting its session task if
    /// none runs.
    pub async fn attach(self: &Arc<Self>, owner: &Owner, id: Uuid) -> Result<Attachment, Status> {
        // Another owner's upload, in whatever state, is not found, and costs no more
        // than an unknown id: no session is loaded for it.
        match self.ledger.get_file(id).await.map_err(ServiceError::from)? {
            Some(file) if file.owner == owner.as_str() => {}
            _ => return Err(ServiceError::UploadNotFound(id).into()),
        }
        // A session task that is just stopping drops the request; the next try starts a
        // fresh task.
        for _ in 0..3 {
            let commands = self.session(id);
            let (reply, answer) = oneshot::channel();
            let attach = Command::Attach {
                owner: owner.clone(),
                reply,
            };
            if commands.send(attach).await.is_err() {
                continue;
            }
            if let Ok(result) = answer.await {
                return result;
            }
        }
        Err(ServiceError::SessionClosed.into())
    }

    /// Tells the session of an upload the ledger has just aborted, and waits until it
    /// will write no more.
    pub async fn aborted(&self, id: Uuid) {
        let commands = self.lock().get(&id).cloned();
        if let Some(commands) = commands {
            let (done, stopped) = oneshot::channel();
            if commands.send(Command::Aborted { done }).await.is_ok() {
                let _ = stopped.await;
            }
        }
    }

    /// Whether a client is streaming into upload `id` right now.
    pub async fn has_streams(&self, id: Uuid) -> bool {
        let commands = self.lock().get(&id).cloned();
        let Some(commands) = commands else {
            return false;
        };
        let (reply, answer) = oneshot::channel();
        if commands.send(Command::HasStreams { reply }).await.is_err() {
            return false;
        }
        answer.await.unwrap_or(false)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, mpsc::Sender<Command>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The command channel of session `id`, starting its task if needed.
    fn session(self: &Arc<Self>, id: Uuid) -> mpsc::Sender<Command> {
        let mut sessions = self.lock();
        if let Some(commands) = sessions.get(&id) {
            return commands.clone();
        }
        let capacity = usize::try_from(self.limits.max_window).unwrap_or(1).max(1);
        let (commands, inbox) = mpsc::channel(capacity);
        sessions.insert(id, commands.clone());
        tokio::spawn(SessionTask::run(
            Arc::clone(self),
            id,
            commands.clone(),
            inbox,
        ));
        commands
    }

    /// Forgets session `id` if `commands` is still its channel.
    fn remove(&self, id: Uuid, commands: &mpsc::Sender<Command>) {
        let mut sessions = self.lock();
        if sessions.get(&id).is_some_and(|c| c.same_channel(commands)) {
            sessions.remove(&id);
        }
    }
}

/// The state of one active session.
struct Session {
    registry: Arc<SessionRegistry>,
    /// This session's own command channel, handed to the streams that attach.
    commands: mpsc::Sender<Command>,
    file: FileRecord,
    /// The whole-file MD5 the client declared: from CheckUpload, or (single pass) from
    /// a `digest` message; the session completes only once it is known.
    declared_md5: Option<Md5Digest>,
    /// The digests of the stored bytes, once hashing has finished.
    computed: Option<FileDigests>,
    /// The content was already stored when this task started (an earlier run stored it
    /// but stopped before recording it): completing needs no hashing.
    content_already_stored: bool,
    layout: ChunkLayout,
    committed: CommittedChunks,
    /// The hash of the committed prefix `[0, hashed)`; `None` once finished.
    hasher: Option<OrderedHasher>,
    hashed: u64,
    /// Chunks covered by the last hash checkpoint saved to the ledger.
    checkpointed: u64,
    /// Committed chunks past the hashed prefix whose bytes are still in memory.
    parked: ParkedChunks,
    /// Committed chunks next in line for the hasher, by index, with the stream whose
    /// ack waits until the hasher takes them: the client then refills its window only
    /// as fast as the server hashes, so memory stays about window x chunk size.
    acks_after_hash: BTreeMap<u64, u64>,
    streams: HashMap<u64, mpsc::UnboundedSender<SessionEvent>>,
    next_stream_id: u64,
}

/// Why a session task stops.
enum Stop {
    /// Completed, failed or aborted: the streams have been told.
    Closed,
}

struct SessionTask;

/// How a session task ends, and so how it answers streams that ask to attach meanwhile.
enum Ended {
    /// It served and stopped: such streams retry with a fresh task.
    Served,
    /// The upload was already complete when the task started.
    AlreadyComplete(FileRecord),
    /// The upload was aborted or failed before the task started.
    Closed(FileRecord),
    /// It could not load the session.
    LoadFailed(Status),
}

impl SessionTask {
    async fn run(
        registry: Arc<SessionRegistry>,
        id: Uuid,
        commands: mpsc::Sender<Command>,
        mut inbox: mpsc::Receiver<Command>,
    ) {
        let ended = match Session::load(Arc::clone(&registry), id, commands.clone()).await {
            Ok(Loaded::Open(mut session)) => {
                let active = &metrics().active_sessions;
                active.add(1, &[]);
                let _ = session.serve(&mut inbox).await;
                active.add(-1, &[]);
                Ended::Served
            }
            Ok(Loaded::Complete(file)) => Ended::AlreadyComplete(file),
            Ok(Loaded::Closed(file)) => Ended::Closed(file),
            Err(error) => Ended::LoadFailed(Status::from(error)),
        };
        registry.remove(id, &commands);
        inbox.close();
        while let Some(command) = inbox.recv().await {
            let Command::Attach { owner, reply } = command else {
                continue;
            };
            let answer = match &ended {
                Ended::Served => continue,
                Ended::AlreadyComplete(file) if file.owner == owner.as_str() => {
                    Ok(Attachment::Completed(file.clone()))
                }
                Ended::Closed(file) if file.owner == owner.as_str() => {
                    Err(ServiceError::UploadNotOpen {
                        id,
                        state: file.state,
                    }
                    .into())
                }
                // Another owner's upload looks like no upload at all, in every state.
                Ended::AlreadyComplete(_) | Ended::Closed(_) => {
                    Err(ServiceError::UploadNotFound(id).into())
                }
                Ended::LoadFailed(status) => Err(status.clone()),
            };
            let _ = reply.send(answer);
        }
    }
}

/// What loading a session finds.
enum Loaded {
    Open(Box<Session>),
    /// The upload completed earlier (a stream that lost the `completed` message, or a
    /// second client that raced the first, attaches after the end).
    Complete(FileRecord),
    /// The upload was aborted or failed: it takes no more chunks.
    Closed(FileRecord),
}

impl Session {
    /// Rebuilds a session from the ledger and the staged bytes.
    async fn load(
        registry: Arc<SessionRegistry>,
        id: Uuid,
        commands: mpsc::Sender<Command>,
    ) -> Result<Loaded, ServiceError> {
        let ledger = &registry.ledger;
        let file = ledger
            .get_file(id)
            .await?
            .ok_or(ServiceError::UploadNotFound(id))?;
        if file.state == FileState::Complete {
            return Ok(Loaded::Complete(file));
        }
        if file.state != FileState::Uploading {
            return Ok(Loaded::Closed(file));
        }
        let layout = ChunkLayout::new(file.size, file.chunk_size);
        let committed =
            CommittedChunks::from_ranges(ledger.committed_ranges(id).await?, layout.chunk_count());
        // Resume the hash from the latest checkpoint that the committed prefix covers.
        let prefix = committed.prefix_len();
        let (hasher, hashed) = match ledger.hash_checkpoint(id).await? {
            Some(checkpoint) if checkpoint.chunks <= prefix => {
                let bytes = layout.offset(checkpoint.chunks).min(layout.size);
                match OrderedHasher::resume(&checkpoint.state, bytes) {
                    Some(hasher) => (hasher, checkpoint.chunks),
                    None => (OrderedHasher::start(), 0),
                }
            }
            _ => (OrderedHasher::start(), 0),
        };
        let parked = ParkedChunks::new(
            (registry.limits.max_window as usize).saturating_mul(file.chunk_size as usize),
            Arc::clone(&registry.memory),
        );
        let mut session = Session {
            registry: Arc::clone(&registry),
            commands,
            declared_md5: file.md5,
            computed: None,
            content_already_stored: false,
            layout,
            committed,
            hasher: Some(hasher),
            hashed,
            checkpointed: hashed,
            parked,
            acks_after_hash: BTreeMap::new(),

            streams: HashMap::new(),
            next_stream_id: 0,
            file,
        };
        if session.is_fully_committed() {
            // A hash checkpoint over every chunk, saved before the content was moved,
            // gives the digests without the staged bytes. Only digests the server
            // computed over the bytes it received ever name the content: a declared MD5
            // could name someone else's.
            if session.hashed == layout.chunk_count()
                && let Some(hasher) = session.hasher.take()
            {
                session.computed = hasher.finish().await;
            }
            if let Some(key) = session.content_key()
                && registry.blobs.content_exists(&key).await?
            {
                session.content_already_stored = true;
                return Ok(Loaded::Open(Box::new(session)));
            }
            // Digests from the checkpoint with neither the content nor its staged bytes
            // on disk: nothing is left to complete from (an empty staging made now
            // would be moved to the real digest's address).
            if session.computed.is_some()
                && layout.size > 0
                && let Err(BlobError::UploadNotFound(_)) =
                    registry.blobs.read_staged(id, 0, 0).await
            {
                return Err(ServiceError::StoredDataLost {
                    id,
                    reason: "neither the content nor the staged upload is on disk".into(),
                });
            }
            if session.hasher.is_none() && session.computed.is_none() {
                return Err(ServiceError::StoredDataLost {
                    id,
                    reason: "hashing the upload failed".into(),
                });
            }
        }
        registry.blobs.begin(id, layout.size).await?;
        session.advance_hash().await?;
        Ok(Loaded::Open(Box::new(session)))
    }

    fn id(&self) -> Uuid {
        self.file.id
    }

    /// Where the content goes: known once its BLAKE3 is computed.
    fn content_key(&self) -> Option<ContentKey> {
        Some(ContentKey::Blake3 {
            digest: self.computed?.blake3,
            size: self.file.size,
        })
    }

    fn is_fully_committed(&self) -> bool {
        self.committed.len() == self.layout.chunk_count()
    }

    /// Every chunk is stored and the whole-file MD5 declared: time to verify.
    fn ready_to_finish(&self) -> bool {
        self.is_fully_committed() && self.declared_md5.is_some()
    }

    fn is_committed(&self, index: u64) -> bool {
        self.committed.contains(index)
    }

    fn remaining(&self) -> u64 {
        self.layout.chunk_count() - self.committed.len()
    }

    fn tell(&self, stream: u64, event: SessionEvent) {
        if let Some(events) = self.streams.get(&stream) {
            let _ = events.send(event);
        }
    }

    /// Acks chunk `index` to `stream`: stored by this send, or by an earlier one.
    fn ack(&self, stream: u64, index: u64, already_stored: bool) {
        if already_stored {
            metrics()
                .chunks_acknowledged
                .add(1, &attribute("outcome", "already_stored"));
        }
        let remaining = self.remaining();
        self.tell(
            stream,
            SessionEvent::Ack {
                index,
                already_stored,
                remaining,
            },
        );
    }

    fn tell_all(&self, event: impl Fn() -> SessionEvent) {
        for events in self.streams.values() {
            let _ = events.send(event());
        }
    }

    /// Handles commands until the session closes or goes idle.
    async fn serve(&mut self, inbox: &mut mpsc::Receiver<Command>) -> Result<(), Stop> {
        let idle_timeout = self.registry.idle_timeout;
        let memory = Arc::clone(&self.registry.memory);
        loop {
            let command = tokio::select! {
                command = inbox.recv() => match command {
                    Some(command) => command,
                    // Unreachable: this session holds a sender of its own inbox.
                    None => return Ok(()),
                },
                // Between batches, the hasher takes what is committed as it has room.
                fed = self.advance_hash(), if self.can_feed() => {
                    fed.or_else(|error| self.fail_all(error))?;
                    continue;
                }
                // Messages being read need the memory parked chunks hold.
                () = memory.pressed() => {
                    self.parked.trim();
                    continue;
                }
                () = tokio::time::sleep(idle_timeout) => {
                    self.streams.retain(|_, events| !events.is_closed());
                    if self.streams.is_empty() {
                        // The next task for this upload resumes hashing from here.
                        if self.hashed > self.checkpointed {
                            let _ = self.save_checkpoint().await.await;
                        }
                        return Ok(());
                    }
                    continue;
                }
            };
            match command {
                Command::Attach { owner, reply } => self.attach(owner, reply).await?,
                Command::Aborted { done } => return self.aborted(done),
                Command::Digest { stream, md5 } => self.declare(stream, md5).await?,
                Command::HasStreams { reply } => self.has_streams(reply),
                Command::Chunk { stream, chunk } => {
                    let mut batch_bytes = chunk.data.len();
                    let mut batch = vec![(stream, chunk)];
                    let mut deferred = None;
                    while batch.len() < MAX_BATCH_CHUNKS && batch_bytes < MAX_BATCH_BYTES {
                        match inbox.try_recv() {
                            Ok(Command::Chunk { stream, chunk }) => {
                                batch_bytes += chunk.data.len();
                                batch.push((stream, chunk));
                            }
                            Ok(other) => {
                                deferred = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.store_batch(batch).await?;
                    match deferred {
                        Some(Command::Attach { owner, reply }) => self.attach(owner, reply).await?,
                        Some(Command::Aborted { done }) => return self.aborted(done),
                        Some(Command::Digest { stream, md5 }) => self.declare(stream, md5).await?,
                        Some(Command::HasStreams { reply }) => self.has_streams(reply),
                        Some(Command::Chunk { .. }) | None => {}
                    }
                }
            }
        }
    }

    fn has_streams(&mut self, reply: oneshot::Sender<bool>) {
        self.streams.retain(|_, events| !events.is_closed());
        let _ = reply.send(!self.streams.is_empty());
    }

    /// A stream declared the whole-file MD5.
    async fn declare(&mut self, stream: u64, md5: Md5Digest) -> Result<(), Stop> {
        match self.declared_md5 {
            None => self.declared_md5 = Some(md5),
            Some(declared) if declared == md5 => {}
            Some(declared) => {
                let status = Status::from(ServiceError::BadRequest {
                    field: "digest.md5",
                    problem: format!(
                        "{} differs from the MD5 declared before for this upload, {}",
                        hex::encode(md5),
                        hex::encode(declared)
                    ),
                });
                self.tell(stream, SessionEvent::Failed(status));
                return Ok(());
            }
        }
        if self.ready_to_finish() {
            return self.finish().await;
        }
        Ok(())
    }

    fn aborted(&self, done: oneshot::Sender<()>) -> Result<(), Stop> {
        let status = Status::from(ServiceError::UploadNotOpen {
            id: self.id(),
            state: FileState::Aborted,
        });
        self.tell_all(|| SessionEvent::Failed(status.clone()));
        let _ = done.send(());
        Err(Stop::Closed)
    }

    async fn attach(
        &mut self,
        owner: Owner,
        reply: oneshot::Sender<Result<Attachment, Status>>,
    ) -> Result<(), Stop> {
        // Another owner's session looks like no session at all.
        if owner.as_str() != self.file.owner {
            let _ = reply.send(Err(ServiceError::UploadNotFound(self.id()).into()));
            return Ok(());
        }
        self.streams.retain(|_, events| !events.is_closed());
        let stream_id = self.next_stream_id;
        self.next_stream_id += 1;
        let (events, events_rx) = mpsc::unbounded_channel();
        self.streams.insert(stream_id, events);
        let attached = AttachedStream {
            info: SessionInfo {
                id: self.id(),
                layout: self.layout,
                max_window: self.registry.limits.max_window,
                remaining: self.remaining(),
                needs_digest: self.declared_md5.is_none(),
            },
            stream_id,
            commands: self.commands.clone(),
            events: events_rx,
        };
        if reply.send(Ok(Attachment::Stream(attached))).is_err() {
            self.streams.remove(&stream_id);
            return Ok(());
        }
        if self.ready_to_finish() {
            return self.finish().await;
        }
        Ok(())
    }

    /// Writes and commits a batch of chunks while the hasher takes earlier ones, then acks
    /// them: those past a gap at once, the others as the hasher takes them.
    async fn store_batch(&mut self, batch: Vec<(u64, VerifiedChunk)>) -> Result<(), Stop> {
        let mut fresh: Vec<(u64, VerifiedChunk)> = Vec::with_capacity(batch.len());
        let mut repeats: Vec<(u64, u64)> = Vec::new();
        for (stream, chunk) in batch {
            if self.is_committed(chunk.index) {
                self.ack(stream, chunk.index, true);
            } else if fresh.iter().any(|(_, c)| c.index == chunk.index) {
                repeats.push((stream, chunk.index));
            } else {
                fresh.push((stream, chunk));
            }
        }
        if fresh.is_empty() {
            return Ok(());
        }

        let parts: Vec<Part> = fresh
            .iter()
            .map(|(_, c)| Part {
                index: c.index,
                offset: self.layout.offset(c.index),
                data: c.data.clone(),
            })
            .collect();
        let rows: Vec<CommittedChunk> = fresh
            .iter()
            .map(|(_, c)| CommittedChunk {
                index: c.index,
                size: c.data.len() as u32,
                crc32c: c.crc32c,
            })
            .collect();
        // Storage spans belong to the stream whose chunk opened the batch.
        let parent = fresh[0].1.span.clone();
        let write = write_and_commit(Arc::clone(&self.registry), self.id(), parts, rows, parent);
        // The hasher takes the chunks committed before while this batch is written, so
        // hashing overlaps writing and committing instead of waiting for them.
        let (stored, fed) = {
            let mut write = std::pin::pin!(write);
            tokio::select! {
                biased;
                stored = &mut write => (stored, Ok(())),
                fed = self.advance_hash(), if self.can_feed() => (write.await, fed),
            }
        };
        if let Err(error) = stored {
            // Whether the ledger recorded the batch is unknown (a commit can fail after
            // the database applied it), so this task's view may be stale: stop; the
            // next stream starts a task that reloads the truth from the ledger.
            return self.fail_all(error);
        }
        fed.or_else(|error| self.fail_all(error))?;

        for (_, chunk) in &fresh {
            self.committed.insert(chunk.index);
        }
        let instruments = metrics();
        instruments
            .chunks_acknowledged
            .add(fresh.len() as u64, &attribute("outcome", "stored"));
        for (_, chunk) in &fresh {
            instruments
                .chunk_commit_duration
                .record(chunk.received_at.elapsed().as_secs_f64(), &[]);
        }
        // Chunks that now extend the hashed prefix are acknowledged once the hasher
        // takes them; the others (past a gap) at once, kept in memory while the budget
        // allows.
        let next_to_hash = self.hashed;
        let mut hashable_end = next_to_hash;
        while self.hasher.is_some() && self.is_committed(hashable_end) {
            hashable_end += 1;
        }
        for (stream, chunk) in fresh {
            let index = chunk.index;
            if index >= next_to_hash {
                self.parked.insert(index, chunk.data);
            }
            if (next_to_hash..hashable_end).contains(&index) {
                self.acks_after_hash.insert(index, stream);
            } else {
                self.ack(stream, index, false);
            }
        }
        self.parked.trim();
        for (stream, index) in repeats {
            self.ack(stream, index, true);
        }
        if self.ready_to_finish() {
            return self.finish().await;
        }
        Ok(())
    }

    /// Ends every stream with `error` and stops the task.
    fn fail_all(&mut self, error: ServiceError) -> Result<(), Stop> {
        let status = Status::from(error);
        self.tell_all(|| SessionEvent::Failed(status.clone()));
        Err(Stop::Closed)
    }

    /// Whether the hasher has a committed chunk to take next.
    fn can_feed(&self) -> bool {
        self.hasher.is_some() && self.is_committed(self.hashed)
    }

    /// Feeds the hasher every committed chunk that extends the hashed prefix, in order,
    /// reading back from staging those no longer in memory, and sends the acks that
    /// waited for each. Waits while the hasher is behind.
    ///
    /// Cancel-safe (the session polls it beside other work): state changes only after
    /// the hasher has taken a chunk, in the same poll.
    async fn advance_hash(&mut self) -> Result<(), ServiceError> {
        while self.can_feed() {
            let index = self.hashed;
            let data = match self.parked.get(index) {
                Some(data) => data.clone(),
                None => {
                    let len = self.layout.chunk_len(index).unwrap_or(0) as usize;
                    let data = self
                        .registry
                        .blobs
                        .read_staged(self.file.id, self.layout.offset(index), len)
                        .await
                        .map_err(|e| ServiceError::StoredDataLost {
                            id: self.file.id,
                            reason: e.to_string(),
                        })?;
                    // Parked, so that a poll dropped while the hasher is full does not
                    // read it again.
                    self.parked.insert(index, data.clone());
                    data
                }
            };
            let Some(hasher) = self.hasher.as_ref() else {
                break;
            };
            hasher.feed(data).await;
            self.parked.remove(index);
            self.hashed += 1;
            if let Some(stream) = self.acks_after_hash.remove(&index) {
                self.ack(stream, index, false);
            }
            let unsaved = (self.hashed - self.checkpointed) * u64::from(self.layout.chunk_size);
            if unsaved >= CHECKPOINT_BYTES && !self.is_fully_committed() {
                // Saved in the background: the ack path does not wait for it.
                drop(self.save_checkpoint().await);
            }
        }
        Ok(())
    }

    /// Saves a checkpoint of the hash so far to the ledger, once the hasher reaches it.
    /// The returned task ends when it is saved (or failed to be).
    async fn save_checkpoint(&mut self) -> tokio::task::JoinHandle<()> {
        let answer = match &self.hasher {
            Some(hasher) => hasher.checkpoint().await,
            None => return tokio::spawn(async {}),
        };
        let chunks = self.hashed;
        self.checkpointed = chunks;
        let ledger = Arc::clone(&self.registry.ledger);
        let id = self.id();
        tokio::spawn(async move {
            let Ok(state) = answer.await else {
                return;
            };
            let checkpoint = HashCheckpoint { chunks, state };
            match ledger.save_hash_checkpoint(id, &checkpoint).await {
                Ok(()) | Err(LedgerError::NotUploading { .. }) => {}
                Err(error) => {
                    tracing::warn!(upload = %id, %error, "saving a hash checkpoint failed")
                }
            }
        })
    }

    /// All chunks are committed: verify the whole-file MD5 and complete (or fail) the file.
    async fn finish(&mut self) -> Result<(), Stop> {
        let result = self.verify_and_complete().await;
        match result {
            Ok(file) => self.tell_all(|| SessionEvent::Completed(file.clone())),
            Err(error) => {
                let status = Status::from(error);
                self.tell_all(|| SessionEvent::Failed(status.clone()));
            }
        }
        Err(Stop::Closed)
    }

    /// The stored bytes do not have the declared MD5: the upload fails and its bytes go.
    async fn mismatch(
        &self,
        declared: Md5Digest,
        computed: Md5Digest,
    ) -> Result<FileRecord, ServiceError> {
        let error = ServiceError::Md5Mismatch {
            declared: hex::encode(declared),
            computed: hex::encode(computed),
        };
        self.registry
            .ledger
            .fail_upload(self.id(), &error.to_string())
            .await?;
        self.registry.blobs.abort(self.id()).await?;
        Err(error)
    }

    async fn verify_and_complete(&mut self) -> Result<FileRecord, ServiceError> {
        let id = self.id();
        let lost = |reason: &str| ServiceError::StoredDataLost {
            id,
            reason: reason.into(),
        };
        let declared = self
            .declared_md5
            .ok_or_else(|| lost("no whole-file MD5 was declared"))?;
        if self.content_already_stored {
            // Set only with digests computed here (see `load`).
            let computed = self
                .computed
                .ok_or_else(|| lost("the upload's digests were lost"))?;
            if computed.md5 != declared {
                return self.mismatch(declared, computed.md5).await;
            }
            self.registry.blobs.abort(id).await?;
            return Ok(self
                .registry
                .ledger
                .complete_upload(id, &computed.md5, &computed.blake3)
                .await?);
        }
        if self.computed.is_none() {
            // The hasher must have every chunk before it can say the digest.
            self.advance_hash().await?;
        }
        let computed = match (self.computed, self.hasher.take()) {
            (Some(digests), _) => digests,
            (None, Some(hasher)) => {
                // The content's BLAKE3 (and a single-pass upload's MD5) are nowhere
                // else: save the final hash state before the staged bytes move, so a
                // restart in between still finds the content.
                if let Ok(state) = hasher.checkpoint().await.await {
                    let checkpoint = HashCheckpoint {
                        chunks: self.layout.chunk_count(),
                        state,
                    };
                    self.registry
                        .ledger
                        .save_hash_checkpoint(id, &checkpoint)
                        .await?;
                }
                hasher
                    .finish()
                    .await
                    .ok_or_else(|| lost("hashing the upload failed"))?
            }
            (None, None) => return Err(lost("the upload's hash state was lost")),
        };
        self.computed = Some(computed);
        if computed.md5 != declared {
            return self.mismatch(declared, computed.md5).await;
        }
        let blobs = &self.registry.blobs;
        let ledger = &self.registry.ledger;
        let key = ContentKey::Blake3 {
            digest: computed.blake3,
            size: self.file.size,
        };
        blobs.complete(id, &key).await?;
        let file = ledger
            .complete_upload(id, &computed.md5, &computed.blake3)
            .await?;
        let took = (chrono::Utc::now() - file.created_at)
            .to_std()
            .unwrap_or_default();
        metrics().upload_duration.record(took.as_secs_f64(), &[]);
        Ok(file)
    }
}

/// Writes a batch's chunks to the blob store (durably), then records them in the
/// ledger. Owns what it needs, so the session can feed the hasher meanwhile.
async fn write_and_commit(
    registry: Arc<SessionRegistry>,
    id: Uuid,
    parts: Vec<Part>,
    rows: Vec<CommittedChunk>,
    parent: tracing::Span,
) -> Result<(), ServiceError> {
    registry
        .blobs
        .put_parts(id, &parts)
        .instrument(tracing::info_span!(parent: &parent, "blob.put_parts", chunks = parts.len()))
        .await?;
    let started = std::time::Instant::now();
    let committed = registry
        .ledger
        .commit_chunks(id, &rows)
        .instrument(
            tracing::info_span!(parent: &parent, "ledger.commit_chunks", chunks = rows.len()),
        )
        .await;
    metrics()
        .ledger_transaction_duration
        .record(started.elapsed().as_secs_f64(), &[]);
    // This task is the session's only writer, so every chunk it commits is new.
    committed?;
    Ok(())
}
