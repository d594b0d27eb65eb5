//! A session task's life: it loads the session from the ledger and the staged bytes,
//! serves it until it closes or idles, then answers streams that still ask to attach.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use uuid::Uuid;

use super::actor::Session;
use super::frontier::HashFrontier;
use super::*;
use crate::blob::UploadHandle;
use crate::error::ServiceError;
use crate::layout::ChunkLayout;
use crate::ledger::{FileRecord, FileState, Lease, LedgerError, UploadLedger};
use crate::metrics::metrics;
use crate::upload::committed::CommittedChunks;
use crate::upload::hasher::OrderedHasher;
use crate::upload::parked::ParkedChunks;

/// Why a session task stops.
pub(super) enum Stop {
    /// Completed, failed or aborted: the streams have been told.
    Closed,
}

pub(super) struct SessionTask;

/// How a session task ends, and so how it answers streams that ask to attach meanwhile.
enum Ended {
    /// It served and stopped: such streams retry with a fresh task.
    Served,
    /// The upload was already complete when the task started.
    AlreadyComplete(FileRecord),
    /// The upload was aborted or failed before the task started.
    Closed(FileRecord),
    /// It could not load the session.
    LoadFailed(Arc<ServiceError>),
}

impl SessionTask {
    pub(super) async fn run(
        registry: Arc<SessionRegistry>,
        id: Uuid,
        handle: SessionHandle,
        mut inbox: mpsc::Receiver<Command>,
    ) {
        let commands = handle.commands.clone();
        let ended = match Session::load(Arc::clone(&registry), id, handle).await {
            Ok(Loaded::Open(mut session)) => {
                let active = &metrics().active_sessions;
                active.add(1, &[]);
                let _ = session.serve(&mut inbox).await;
                active.add(-1, &[]);
                // Another replica may take the upload at once (the epoch keeps any
                // write still under way here from counting).
                if let Err(error) = registry.ledger.release_lease(id, session.lease).await {
                    tracing::warn!(upload = %id, %error, "letting go of an upload's lease failed: another replica takes it once this one's heartbeat lapses");
                }
                Ended::Served
            }
            Ok(Loaded::Complete(file)) => Ended::AlreadyComplete(file),
            Ok(Loaded::Closed(file)) => Ended::Closed(file),
            Err(error) => {
                error.log_if_server_fault();
                Ended::LoadFailed(Arc::new(error))
            }
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
                    })
                }
                // Another owner's upload looks like no upload at all, in every state.
                Ended::AlreadyComplete(_) | Ended::Closed(_) => {
                    Err(ServiceError::UploadNotFound(id))
                }
                Ended::LoadFailed(error) => Err(ServiceError::Shared(Arc::clone(error))),
            };
            let _ = reply.send(answer);
        }
    }
}

/// What loading a session finds.
pub(super) enum Loaded {
    Open(Box<Session>),
    /// The upload completed earlier (a stream that lost the `completed` message, or a
    /// second client that raced the first, attaches after the end).
    Complete(FileRecord),
    /// The upload was aborted or failed: it takes no more chunks.
    Closed(FileRecord),
}

impl Session {
    /// Rebuilds a session from the ledger and the staged bytes.
    pub(super) async fn load(
        registry: Arc<SessionRegistry>,
        id: Uuid,
        handle: SessionHandle,
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
        // Taken before anything is read: what this replica reads next is what the
        // previous holder left, and none of its writes count after this.
        let lease = match registry.replica.take_lease(ledger.as_ref(), id).await {
            Ok(lease) => lease,
            Err(ServiceError::Ledger(
                LedgerError::NotUploading { .. } | LedgerError::NotFound(_),
            )) => {
                let file = ledger
                    .get_file(id)
                    .await?
                    .ok_or(ServiceError::UploadNotFound(id))?;
                return Ok(match file.state {
                    FileState::Complete => Loaded::Complete(file),
                    _ => Loaded::Closed(file),
                });
            }
            Err(error) => return Err(error),
        };
        let layout = ChunkLayout::new(file.size, file.chunk_size);
        let committed =
            CommittedChunks::from_ranges(ledger.committed_ranges(id).await?, layout.chunk_count());
        // Resume the hash from the latest checkpoint that the committed prefix covers.
        let prefix = committed.prefix_len();
        let (hasher, hashed) = match ledger.hash_checkpoint(id).await? {
            Some(checkpoint) if checkpoint.chunks <= prefix => {
                let bytes = layout.offset(checkpoint.chunks).min(layout.size);
                match OrderedHasher::resume(&checkpoint.state, bytes, &registry.hashing) {
                    Some(hasher) => (hasher, checkpoint.chunks),
                    None => (OrderedHasher::start(&registry.hashing), 0),
                }
            }
            _ => (OrderedHasher::start(&registry.hashing), 0),
        };
        let staged = match file.blob_upload.as_deref() {
            Some(kept) => UploadHandle::new(kept),
            // Nothing is committed, so nothing staged can be lost by beginning.
            None if committed.len() == 0 => begin_staging(&registry, &file, lease).await?,
            None => {
                return Err(ServiceError::StoredDataLost {
                    id,
                    reason: "the ledger kept no blob handle for an upload with committed chunks"
                        .into(),
                });
            }
        };
        let parked = ParkedChunks::new(
            usize::try_from(registry.limits.window_for(file.chunk_size).bytes)
                .unwrap_or(usize::MAX),
            Arc::clone(&registry.memory),
        );
        let frontier = HashFrontier::new(
            (id, lease),
            staged.clone(),
            layout,
            Arc::clone(&registry.blobs),
            Arc::clone(&registry.ledger) as Arc<dyn UploadLedger>,
            (hasher, hashed),
            parked,
        )
        .checkpointing_every(registry.limits.hash_checkpoint_bytes);
        // What this session reads back before it acks again: at most a checkpoint's
        // worth, unless the hash state was lost.
        let rehash = frontier.behind_by(prefix);
        // (A store that cannot read staged bytes back has them hashed at completion,
        // counted there.)
        if rehash > 0 && registry.blobs.reads_staged() {
            metrics().bytes_rehashed.add(rehash, &[]);
            tracing::info!(upload = %id, bytes = rehash, "reading staged bytes back to rebuild the hash");
        }
        let mut session = Session {
            registry: Arc::clone(&registry),
            commands: handle.commands,
            live_streams: handle.live_streams,
            lease,
            declared_md5: file.md5,
            computed: None,
            staged,
            layout,
            committed,
            frontier,

            streams: HashMap::new(),
            next_stream_id: 0,
            file,
        };
        if session.is_fully_committed() {
            // A hash checkpoint over every chunk, saved before the staged bytes became
            // the content, gives the digests without them; completing again then finds
            // the content (the store's `complete` is idempotent), or says both are gone.
            // Only digests the server computed over the bytes it received ever name
            // the content: a declared MD5 could name someone else's.
            if session.frontier.all_hashed()
                && let Some(hasher) = session.frontier.take_hasher()
            {
                session.computed = hasher.finish().await;
            }
            if session.computed.is_some() {
                return Ok(Loaded::Open(Box::new(session)));
            }
            if !session.frontier.is_hashing() {
                return Err(ServiceError::StoredDataLost {
                    id,
                    reason: "hashing the upload failed".into(),
                });
            }
        }
        session.advance_hash().await?;
        Ok(Loaded::Open(Box::new(session)))
    }
}

/// Begins staging an upload and keeps the store's handle in the ledger. If another
/// process kept one first, that one is used and this one dropped.
pub(super) async fn begin_staging(
    registry: &SessionRegistry,
    file: &FileRecord,
    lease: Lease,
) -> Result<UploadHandle, ServiceError> {
    let handle = registry.blobs.begin(file.id, file.size).await?;
    match registry
        .ledger
        .keep_blob_upload(file.id, lease, handle.as_str())
        .await
    {
        Ok(kept) if kept == handle.as_str() => Ok(handle),
        Ok(kept) => {
            // Stores that name staging by the upload id give every process the same
            // handle, so this branch is for stores that make a new upload per `begin`.
            // Only ours goes: aborting the upload's staging would take the kept one.
            registry.blobs.discard(&handle).await?;
            Ok(UploadHandle::new(kept))
        }
        Err(error) => {
            // The upload closed meanwhile, or another replica took it over and keeps its
            // own staging: nobody will complete or abort this one. Only this one goes.
            if let Err(abort) = registry.blobs.discard(&handle).await {
                tracing::warn!(upload = %file.id, error = %abort, "could not drop staging");
            }
            Err(error.into())
        }
    }
}
