//! One session's state and the loop that serves its inbox: chunks in batches, digests,
//! attaches, and the acks that answer them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::frontier::HashFrontier;
use super::task::Stop;
use super::writer::write_and_commit;
use super::*;
use crate::blob::{Part, UploadHandle};
use crate::error::ServiceError;
use crate::identity::Owner;
use crate::layout::ChunkLayout;
use crate::ledger::{CommittedChunk, FileRecord, FileState, Lease, Md5Digest};
use crate::metrics::{attribute, metrics};
use crate::upload::committed::CommittedChunks;
use crate::upload::hasher::FileDigests;

/// Most chunks written and committed in one batch.
const MAX_BATCH_CHUNKS: usize = 64;
/// Most bytes written and committed in one batch.
const MAX_BATCH_BYTES: usize = 128 << 20;

/// The state of one active session.
pub(super) struct Session {
    pub(super) registry: Arc<SessionRegistry>,
    /// This session's own command channel, handed to the streams that attach.
    pub(super) commands: mpsc::Sender<Command>,
    /// Streams attached now, as the registry reads them.
    pub(super) live_streams: Arc<AtomicUsize>,
    pub(super) file: FileRecord,
    /// The whole-file MD5 the client declared: from CheckUpload, or (single pass) from
    /// a `digest` message; the session completes only once it is known.
    pub(super) declared_md5: Option<Md5Digest>,
    /// The digests of the stored bytes, once hashing has finished.
    pub(super) computed: Option<FileDigests>,
    /// This replica's lease on the upload: every ledger write of the session names it.
    pub(super) lease: Lease,
    /// The blob store's handle of the upload's staged bytes.
    pub(super) staged: UploadHandle,
    pub(super) layout: ChunkLayout,
    pub(super) committed: CommittedChunks,
    /// The in-order hash of the committed prefix, and the chunks it still needs.
    pub(super) frontier: HashFrontier,
    pub(super) streams: HashMap<u64, mpsc::UnboundedSender<SessionEvent>>,
    pub(super) next_stream_id: u64,
}

impl Session {
    pub(super) fn id(&self) -> Uuid {
        self.file.id
    }

    pub(super) fn is_fully_committed(&self) -> bool {
        self.committed.len() == self.layout.chunk_count()
    }

    /// Every chunk is stored and the whole-file MD5 declared: time to verify.
    pub(super) fn ready_to_finish(&self) -> bool {
        self.is_fully_committed() && self.declared_md5.is_some()
    }

    pub(super) fn is_committed(&self, index: u64) -> bool {
        self.committed.contains(index)
    }

    pub(super) fn remaining(&self) -> u64 {
        self.layout.chunk_count() - self.committed.len()
    }

    pub(super) fn tell(&self, stream: u64, event: SessionEvent) {
        if let Some(events) = self.streams.get(&stream) {
            let _ = events.send(event);
        }
    }

    /// Acks chunk `index` to `stream`: stored by this send, or by an earlier one.
    pub(super) fn ack(&self, stream: u64, index: u64, already_stored: bool) {
        send_ack(
            &self.streams,
            stream,
            index,
            already_stored,
            self.remaining(),
        );
    }

    /// Feeds the hasher what the committed chunks allow, acking as it goes.
    pub(super) async fn advance_hash(&mut self) -> Result<(), ServiceError> {
        let remaining = self.remaining();
        let streams = &self.streams;
        self.frontier
            .advance(&self.committed, &mut |stream, index| {
                send_ack(streams, stream, index, false, remaining)
            })
            .await
    }

    /// Ends every attached stream with `error`.
    pub(super) fn fail_streams(&self, error: ServiceError) {
        // Logged here once, whether one stream hears of it, several or none.
        error.log_if_server_fault();
        let error = Arc::new(error);
        self.tell_all(|| SessionEvent::Failed(ServiceError::Shared(Arc::clone(&error))));
    }

    pub(super) fn tell_all(&self, event: impl Fn() -> SessionEvent) {
        for events in self.streams.values() {
            let _ = events.send(event());
        }
    }

    /// Handles commands until the session closes or goes idle.
    pub(super) async fn serve(&mut self, inbox: &mut mpsc::Receiver<Command>) -> Result<(), Stop> {
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
                fed = self.advance_hash(), if self.frontier.can_feed(&self.committed) => {
                    fed.or_else(|error| self.fail_all(error))?;
                    continue;
                }
                // Messages being read need the memory parked chunks hold.
                () = memory.pressed() => {
                    self.frontier.trim_parked();
                    continue;
                }
                () = tokio::time::sleep(idle_timeout) => {
                    self.streams.retain(|_, events| !events.is_closed());
                    if self.streams.is_empty() {
                        // The next task for this upload resumes hashing from here.
                        if self.frontier.has_unsaved() {
                            let _ = self.frontier.save_checkpoint().await.await;
                        }
                        return Ok(());
                    }
                    continue;
                }
            };
            match command {
                Command::Attach { owner, reply } => self.attach(owner, reply).await?,
                Command::Closed { state, done } => return self.closed(state, done),
                Command::HandOver => return self.hand_over().await,
                Command::Digest { stream, md5 } => self.declare(stream, md5).await?,
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
                        Some(Command::Closed { state, done }) => return self.closed(state, done),
                        Some(Command::HandOver) => return self.hand_over().await,
                        Some(Command::Digest { stream, md5 }) => self.declare(stream, md5).await?,
                        Some(Command::Chunk { .. }) | None => {}
                    }
                }
            }
        }
    }

    /// A stream declared the whole-file MD5.
    pub(super) async fn declare(&mut self, stream: u64, md5: Md5Digest) -> Result<(), Stop> {
        match self.declared_md5 {
            None => self.declared_md5 = Some(md5),
            Some(declared) if declared == md5 => {}
            Some(declared) => {
                let error = ServiceError::BadRequest {
                    field: "digest.md5",
                    problem: format!(
                        "{} differs from the MD5 declared before for this upload, {}",
                        hex::encode(md5),
                        hex::encode(declared)
                    ),
                };
                self.tell(stream, SessionEvent::Failed(error));
                return Ok(());
            }
        }
        if self.ready_to_finish() {
            return self.finish().await;
        }
        Ok(())
    }

    /// Another replica takes this upload over: what is stored is committed already (a
    /// batch is written whole before the next command), so save the hash, tell the
    /// streams to go on there, and stop; the lease goes as the task ends.
    pub(super) async fn hand_over(&mut self) -> Result<(), Stop> {
        if self.frontier.has_unsaved() {
            let _ = self.frontier.save_checkpoint().await.await;
        }
        tracing::info!(upload = %self.id(), "handing the upload over to another replica");
        self.fail_streams(ServiceError::MovedAway(self.id()));
        Err(Stop::Closed)
    }

    pub(super) fn closed(&self, state: FileState, done: oneshot::Sender<()>) -> Result<(), Stop> {
        self.fail_streams(ServiceError::UploadNotOpen {
            id: self.id(),
            state,
        });
        let _ = done.send(());
        Err(Stop::Closed)
    }

    pub(super) async fn attach(
        &mut self,
        owner: Owner,
        reply: oneshot::Sender<Result<Attachment, ServiceError>>,
    ) -> Result<(), Stop> {
        // Another owner's session looks like no session at all.
        if owner.as_str() != self.file.owner {
            let _ = reply.send(Err(ServiceError::UploadNotFound(self.id())));
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
                window: self.registry.limits.window_for(self.layout.chunk_size),
                remaining: self.remaining(),
                needs_digest: self.declared_md5.is_none(),
            },
            stream_id,
            commands: self.commands.clone(),
            events: events_rx,
            _live: LiveStream::new(&self.live_streams),
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
    pub(super) async fn store_batch(
        &mut self,
        batch: Vec<(u64, VerifiedChunk)>,
    ) -> Result<(), Stop> {
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
                // What the store returns for the part, filled in once it is written.
                receipt: None,
            })
            .collect();
        // Storage spans belong to the stream whose chunk opened the batch.
        let parent = fresh[0].1.span.clone();
        let write = write_and_commit(
            Arc::clone(&self.registry),
            self.id(),
            self.lease,
            self.staged.clone(),
            parts,
            rows,
            parent,
        );
        // The hasher takes the chunks committed before while this batch is written, so
        // hashing overlaps writing and committing instead of waiting for them.
        let (stored, fed) = {
            let mut write = std::pin::pin!(write);
            tokio::select! {
                biased;
                stored = &mut write => (stored, Ok(())),
                fed = self.advance_hash(), if self.frontier.can_feed(&self.committed) => (write.await, fed),
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
        let stored = fresh
            .into_iter()
            .map(|(stream, chunk)| (stream, chunk.index, chunk.data))
            .collect();
        for (stream, index) in self.frontier.committed(&self.committed, stored) {
            self.ack(stream, index, false);
        }
        for (stream, index) in repeats {
            self.ack(stream, index, true);
        }
        if self.ready_to_finish() {
            return self.finish().await;
        }
        Ok(())
    }

    /// Ends every stream with `error` and stops the task.
    pub(super) fn fail_all(&mut self, error: ServiceError) -> Result<(), Stop> {
        self.fail_streams(error);
        Err(Stop::Closed)
    }
}

/// Acks chunk `index` to `stream` among `streams`, with `remaining` chunks missing.
fn send_ack(
    streams: &HashMap<u64, mpsc::UnboundedSender<SessionEvent>>,
    stream: u64,
    index: u64,
    already_stored: bool,
    remaining: u64,
) {
    if already_stored {
        metrics()
            .chunks_acknowledged
            .add(1, &attribute("outcome", "already_stored"));
    }
    if let Some(events) = streams.get(&stream) {
        let _ = events.send(SessionEvent::Ack {
            index,
            already_stored,
            remaining,
        });
    }
}
