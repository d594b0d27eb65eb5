//! The live sessions of this server, by upload id: streams attach through it, and
//! short questions (is anyone streaming into it? it was aborted) reach a session here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::task::SessionTask;
use super::*;
use crate::blob::BlobStore;
use crate::error::ServiceError;
use crate::identity::Owner;
use crate::layout::Limits;
use crate::ledger::{LeaseOutcome, Ledger, LedgerError};
use crate::replica::Replica;
use crate::upload::hasher::HashingSlots;
use crate::upload::memory::MemoryBudget;
use crate::upload::opening::OpeningLocks;
use transfer_wire::aligned::BufferPool;

/// The active sessions of this server, by upload id.
pub struct SessionRegistry {
    pub(super) ledger: Arc<dyn Ledger>,
    pub(super) blobs: Arc<dyn BlobStore>,
    /// Memory for messages being read and parked chunks, shared by every stream.
    pub(super) memory: Arc<MemoryBudget>,
    pub(super) limits: Limits,
    pub(super) idle_timeout: Duration,
    pub(super) sessions: Mutex<HashMap<Uuid, SessionHandle>>,
    /// New sessions are opened one at a time per owner.
    pub(super) opening: OpeningLocks,
    /// The threads the sessions' hashers take turns on.
    pub(super) hashing: HashingSlots,
    /// Buffers for chunks, shared with the server's framers and blob store.
    buffers: Arc<BufferPool>,
    /// Cancelled when the server begins to stop: streams finish what they have in flight
    /// and end with UNAVAILABLE, and no new one starts.
    draining: CancellationToken,
    /// This server as a replica: sessions run under its leases.
    pub(super) replica: Arc<Replica>,
}

impl SessionRegistry {
    pub fn new(
        ledger: Arc<dyn Ledger>,
        blobs: Arc<dyn BlobStore>,
        limits: Limits,
        idle_timeout: Duration,
        buffers: Arc<BufferPool>,
        replica: Arc<Replica>,
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
            hashing: HashingSlots::per_core(),
            buffers,
            draining: CancellationToken::new(),
            replica,
        })
    }

    /// This server as a replica.
    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    /// Hands uploads over to the replicas that ask for them, for as long as the server
    /// runs (where the ledger carries such requests: PostgreSQL).
    pub fn listen_for_handovers(self: &Arc<Self>) {
        let Some(mut requests) = self.ledger.handover_requests(&self.replica.id) else {
            return;
        };
        let registry = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(id) = requests.recv().await {
                let Some(registry) = registry.upgrade() else {
                    break;
                };
                registry.hand_over(id).await;
            }
        });
    }

    /// Lets another replica have upload `id`: its session here stops (its streams are
    /// told to go on elsewhere) and its lease goes.
    pub async fn hand_over(&self, id: Uuid) {
        let commands = self.lock().get(&id).map(|s| s.commands.clone());
        if let Some(commands) = commands
            && commands.send(Command::HandOver).await.is_ok()
        {
            return;
        }
        // No session here, yet asked: a lease this replica failed to let go of. Taking
        // it again gives the epoch to let go of.
        if let Ok(LeaseOutcome::Acquired(lease)) =
            self.ledger.acquire_lease(id, &self.replica.id).await
        {
            let _ = self.ledger.release_lease(id, lease).await;
        }
    }

    /// Cancelled once the server drains (see [`SessionRegistry::drain`]).
    pub fn draining(&self) -> &CancellationToken {
        &self.draining
    }

    /// Begins the server's drain: upload streams stop taking chunks, ack those in
    /// flight and end with UNAVAILABLE, downloads end with UNAVAILABLE, and new streams
    /// are refused, so that clients resume elsewhere (or once the server is back).
    pub fn drain(&self) {
        if !self.draining.is_cancelled() {
            tracing::info!("draining: streams end once what they have in flight is stored");
        }
        self.draining.cancel();
    }

    /// The server's buffers for bulk data.
    pub fn buffers(&self) -> &Arc<BufferPool> {
        &self.buffers
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
    pub async fn attach(
        self: &Arc<Self>,
        owner: &Owner,
        id: Uuid,
    ) -> Result<Attachment, ServiceError> {
        // Another owner's upload, in whatever state, is not found, and costs no more
        // than an unknown id: no session is loaded for it.
        match self.ledger.get_file(id).await? {
            Some(file) if file.owner == owner.as_str() => {
                // A stream attaching is activity: the upload lives another expiry
                // period. (A closed one says what it is when the session loads.)
                if file.state == FileState::Uploading {
                    match self
                        .ledger
                        .extend_upload(id, self.limits.expiry_from_now())
                        .await
                    {
                        Ok(_) | Err(LedgerError::NotUploading { .. }) => {}
                        Err(error) => return Err(error.into()),
                    }
                }
            }
            _ => return Err(ServiceError::UploadNotFound(id)),
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
        Err(ServiceError::SessionClosed)
    }

    /// Tells the session of an upload the ledger has just closed (aborted or expired),
    /// and waits until it will write no more.
    pub async fn closed(&self, id: Uuid, state: FileState) {
        let commands = self.lock().get(&id).map(|s| s.commands.clone());
        if let Some(commands) = commands {
            let (done, stopped) = oneshot::channel();
            if commands.send(Command::Closed { state, done }).await.is_ok() {
                let _ = stopped.await;
            }
        }
    }

    /// Whether upload `id` is in use: a client streams into it here, or another replica
    /// alive holds its session (replicas share no memory: the lease is what they see).
    pub async fn in_use_anywhere(&self, id: Uuid) -> Result<bool, LedgerError> {
        if self.has_streams(id).await {
            return Ok(true);
        }
        let holder = self.ledger.live_holder(id).await?;
        Ok(holder.is_some_and(|holder| holder != self.replica.id))
    }

    /// Whether a client is streaming into upload `id` right now, here.
    pub async fn has_streams(&self, id: Uuid) -> bool {
        self.lock()
            .get(&id)
            .is_some_and(|session| session.live_streams.load(Ordering::Acquire) > 0)
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, SessionHandle>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The command channel of session `id`, starting its task if needed.
    pub(super) fn session(self: &Arc<Self>, id: Uuid) -> mpsc::Sender<Command> {
        let mut sessions = self.lock();
        if let Some(session) = sessions.get(&id) {
            return session.commands.clone();
        }
        // A stream's window of chunks at the usual chunk size (the session's own is not
        // known before its task loads it).
        let window = self.limits.window_for(self.limits.default_chunk_size);
        let capacity = usize::try_from(window.chunks).unwrap_or(1).max(1);
        let (commands, inbox) = mpsc::channel(capacity);
        let handle = SessionHandle {
            commands: commands.clone(),
            live_streams: Arc::new(AtomicUsize::new(0)),
        };
        sessions.insert(id, handle.clone());
        tokio::spawn(SessionTask::run(Arc::clone(self), id, handle, inbox));
        commands
    }

    /// Forgets session `id` if `commands` is still its channel.
    pub(super) fn remove(&self, id: Uuid, commands: &mpsc::Sender<Command>) {
        let mut sessions = self.lock();
        if sessions
            .get(&id)
            .is_some_and(|s| s.commands.same_channel(commands))
        {
            sessions.remove(&id);
        }
    }
}
