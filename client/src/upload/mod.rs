//! Uploading: ask `CheckUpload`, then stream only the missing chunks with a window of
//! unacknowledged chunks, resuming after any interruption from what the server has.
//!
//! A new file is read once: the client asks with the MD5 of its head (single pass),
//! streams the chunks while hashing them, and declares the whole-file MD5 at the end.
//! Only when the server says this owner may already have the content (`maybe_stored`),
//! or [`crate::ClientConfig::hash_first`] asks for it, is the file hashed first, so that
//! stored content is an instant upload.

use std::sync::Arc;

use tokio::sync::Semaphore;
use transfer_proto::v1::{FileInfo, PossessionChallenge, PossessionProof};

use crate::chunks::ChunkSet;
use crate::connection::ServerConnection;
use crate::error::TransferError;
use crate::progress::{Command, Reporter, TransferState};
use crate::retry::{Ending, Retrier};
use crate::slots::take_slot;
use crate::source::{ChunkSource, head_md5_of, md5_of};
use crate::streaming_md5::StreamingMd5;

mod attempt;
mod streams;
mod stripe;

/// A finished upload.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadedFile {
    /// The file as the server records it.
    pub file: FileInfo,
    /// True when the content was already stored and no chunk was sent.
    pub instant: bool,
    /// Chunks this upload sent (including any sent again after a rejection or after a
    /// broken connection lost them or their acks).
    pub chunks_sent: u64,
    /// Acks that said a chunk was already stored: chunks whose earlier ack was lost with
    /// a broken connection (this client never re-sends a chunk whose ack it received).
    pub chunks_already_stored: u64,
    /// The most connections it sent chunks over at once (see
    /// [`crate::ClientConfig::connections_per_file`]).
    pub connections: u32,
}

/// What the upload knows across attempts.
struct Upload<'a, S> {
    server: &'a ServerConnection,
    name: String,
    /// How the file is called in errors and progress.
    label: String,
    source: &'a S,
    /// The whole-file MD5, once known: hashed first, or at the end of a single pass.
    md5: Option<[u8; 16]>,
    /// MD5 of the first MiB: what a single-pass `CheckUpload` asks with.
    head_md5: [u8; 16],
    /// Hashes the chunks as they are sent, while the upload is a single pass.
    streaming: Option<StreamingMd5>,
    /// The session the acked set below belongs to.
    session_id: Option<String>,
    /// Chunks the server acknowledged in this session: never sent again.
    acked: ChunkSet,
    chunks_sent: u64,
    chunks_already_stored: u64,
    /// The most stripes open at once.
    connections: u32,
    /// The session was aborted by someone else (another client, `transfer abort`).
    aborted_elsewhere: bool,
    /// The session is an unfinished single-pass upload this client did not start (found
    /// by name, size and head): it may hold another file's chunks.
    adopted: bool,
    /// An adopted session turned out to hold other content, and this upload started over.
    started_over: bool,
    /// The server challenged this upload to prove it holds the content (it is answered
    /// once; asked again, the upload goes on without).
    challenged: bool,
    /// The answer to that challenge, sent until CheckUpload answers it.
    proof: Option<PossessionProof>,
}

pub(crate) async fn upload(
    server: ServerConnection,
    name: String,
    source: impl ChunkSource,
    mut reporter: Reporter,
    slots: Option<Arc<Semaphore>>,
) -> Result<UploadedFile, TransferError> {
    let label = reporter.name();
    let cancelled = || TransferError::Cancelled {
        file: label.clone(),
    };
    let mut slot = take_slot(slots.as_ref(), &mut reporter)
        .await
        .map_err(|_| cancelled())?;
    let head_md5 = head_md5_of(&source)
        .await
        .map_err(|e| read_error(&label, e))?;
    let (md5, streaming) = if server.config().hash_first {
        (Some(hash(&source, &mut reporter).await?), None)
    } else {
        (None, Some(StreamingMd5::new()))
    };

    let mut upload = Upload {
        server: &server,
        name,
        label: label.clone(),
        source: &source,
        md5,
        head_md5,
        streaming,
        session_id: None,
        acked: ChunkSet::default(),
        chunks_sent: 0,
        chunks_already_stored: 0,
        connections: 0,
        aborted_elsewhere: false,
        adopted: false,
        started_over: false,
        challenged: false,
        proof: None,
    };
    let mut retrier = Retrier::new(&server.config().retry);
    loop {
        if reporter.command() != Command::Run {
            // A paused transfer gives its slot to a queued one.
            slot = None;
            if reporter.until_running().await.is_err() {
                return upload.cancel().await;
            }
        }
        if slot.is_none() && slots.is_some() {
            slot = match take_slot(slots.as_ref(), &mut reporter).await {
                Ok(slot) => slot,
                Err(_) => return upload.cancel().await,
            };
        }
        let acked_before = upload.acked.len();
        let interruption = match upload.attempt(&mut reporter).await {
            Ok(done) => return Ok(done),
            Err(interruption) => interruption,
        };
        let progressed = upload.acked.len() > acked_before;
        match retrier
            .after(interruption, progressed, &server, &mut reporter)
            .await
        {
            Ok(()) => {}
            Err(Ending::Cancelled) => return upload.cancel().await,
            Err(Ending::Fatal(error)) => return Err(error),
        }
    }
}

/// The source's MD5; only cancelling stops it early.
async fn hash(
    source: &impl ChunkSource,
    reporter: &mut Reporter,
) -> Result<[u8; 16], TransferError> {
    reporter.phase(TransferState::Hashing, 0, source.size());
    let progress = reporter.progress_sender();
    let hashing = md5_of(source, |done| progress.advance(done, done));
    until_cancelled(reporter, hashing).await
}

/// The proof for a possession challenge, hashing the whole file with BLAKE3; only
/// cancelling stops it early.
async fn prove_possession(
    source: &impl ChunkSource,
    challenge: &PossessionChallenge,
    reporter: &mut Reporter,
) -> Result<Option<PossessionProof>, TransferError> {
    reporter.phase(TransferState::Hashing, 0, source.size());
    let progress = reporter.progress_sender();
    let proving = crate::possession::prove(source, challenge, |done| progress.advance(done, done));
    until_cancelled(reporter, proving).await
}

/// Reads of the whole source (a digest), run until done or the caller cancels.
async fn until_cancelled<T>(
    reporter: &mut Reporter,
    reading: impl Future<Output = std::io::Result<T>>,
) -> Result<T, TransferError> {
    let label = reporter.name();
    tokio::pin!(reading);
    loop {
        tokio::select! {
            read = &mut reading => return read.map_err(|e| read_error(&label, e)),
            command = reporter.command_changed() => if command == Command::Cancel {
                return Err(TransferError::Cancelled { file: label });
            },
        }
    }
}

fn read_error(file: &str, source: std::io::Error) -> TransferError {
    if source.kind() == std::io::ErrorKind::UnexpectedEof {
        return TransferError::SourceChanged {
            file: file.to_owned(),
        };
    }
    TransferError::Read {
        file: file.to_owned(),
        source,
    }
}
