//! Uploading: ask `CheckUpload`, then stream only the missing chunks with a window of
//! unacknowledged chunks, resuming after any interruption from what the server has.
//!
//! A new file is read once: the client asks with the MD5 of its head (single pass),
//! streams the chunks while hashing them, and declares the whole-file MD5 at the end.
//! Only when the server says this owner may already have the content (`maybe_stored`),
//! or [`crate::ClientConfig::hash_first`] asks for it, is the file hashed first, so that
//! stored content is an instant upload.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use transfer_proto::v1::{
    AbortUploadRequest, CheckUploadRequest, Chunk, ChunkAck, ChunkOutcome, FileDigest, FileInfo,
    FileState, GetFileRequest, PossessionChallenge, PossessionProof, UploadChunksRequest,
    UploadChunksResponse, UploadStart, check_upload_response, upload_chunks_request,
    upload_chunks_response,
};
use transfer_shared::layout::ChunkLayout;

use crate::chunks::{ChunkSet, ToSend};
use crate::connection::ServerConnection;
use crate::error::TransferError;
use crate::progress::{Command, Reporter, TransferState};
use crate::retry::{Ending, Interruption, Retrier, guarded};
use crate::slots::take_slot;
use crate::source::{ChunkSource, head_md5_of, md5_of};
use crate::streaming_md5::StreamingMd5;
use crate::upload_wire::OpeningUpload;

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

impl<S: ChunkSource> Upload<'_, S> {
    /// One try: `CheckUpload`, then one stream, until the file completes or the attempt
    /// is interrupted.
    async fn attempt(&mut self, reporter: &mut Reporter) -> Result<UploadedFile, Interruption> {
        let size = self.source.size();
        let deadline = self.server.config().stall_timeout;
        let mut raw = self.server.raw();
        let session = loop {
            let request = CheckUploadRequest {
                name: self.name.clone(),
                size,
                md5: self.md5.map(|m| m.to_vec()).unwrap_or_default().into(),
                preferred_chunk_size: self.server.config().chunk_size,
                head_md5: self.head_md5.to_vec().into(),
                accepts_challenge: self.md5.is_some() && !self.challenged,
                proof: self.proof.clone(),
            };
            let check = guarded(reporter, deadline, raw.check_upload(request))
                .await?
                .into_inner();
            self.proof = None;
            match check.result {
                Some(check_upload_response::Result::AlreadyStored(file)) => {
                    return self.finished(file, self.chunks_sent == 0);
                }
                Some(check_upload_response::Result::Session(session)) => break session,
                // This owner may have the content: hash it all, and ask with the MD5.
                Some(check_upload_response::Result::MaybeStored(_)) if self.md5.is_none() => {
                    let md5 = hash(self.source, reporter)
                        .await
                        .map_err(Interruption::Fatal)?;
                    self.md5 = Some(md5);
                    self.streaming = None;
                }
                Some(check_upload_response::Result::MaybeStored(_)) => {
                    return Err(self.protocol("`maybe_stored` for a request with the MD5"));
                }
                // Another owner may have stored this content: prove we hold it, and
                // ask again with the proof (or, if it cannot be answered, without
                // accepting challenges).
                Some(check_upload_response::Result::Challenge(challenge)) if !self.challenged => {
                    self.challenged = true;
                    self.proof = prove_possession(self.source, &challenge, reporter)
                        .await
                        .map_err(Interruption::Fatal)?;
                }
                Some(check_upload_response::Result::Challenge(_)) => {
                    return Err(self.protocol("a possession challenge that was not asked for"));
                }
                None => return Err(self.protocol("CheckUpload answered nothing")),
            }
        };
        if self.aborted_elsewhere {
            // Asking opened a new session unless another upload of ours is running:
            // close what this call opened, and stop.
            if !session.resumed {
                let abort = AbortUploadRequest {
                    upload_id: session.upload_id.clone(),
                };
                let _ = tokio::time::timeout(deadline, raw.abort_upload(abort)).await;
            }
            return Err(Interruption::Fatal(TransferError::AbortedElsewhere {
                file: self.label.clone(),
            }));
        }
        if self.session_id.as_deref() != Some(session.upload_id.as_str()) {
            self.session_id = Some(session.upload_id.clone());
            self.acked.clear();
            self.adopted = session.resumed && self.md5.is_none();
        }
        let layout = ChunkLayout::announced(size, session.chunk_size, session.chunk_count)
            .ok_or_else(|| {
                self.protocol(format!(
                    "session of {} chunks of {} bytes does not fit a {size}-byte file",
                    session.chunk_count, session.chunk_size
                ))
            })?;
        let committed: Vec<(u64, u64)> = session
            .committed
            .iter()
            .map(|r| {
                let count = layout.chunk_count();
                (r.start.min(count), r.end.min(count))
            })
            .filter(|(start, end)| start < end)
            .collect();
        // The server commits before it acks, so what it lists covers every ack we had.
        let done_bytes: u64 = committed.iter().map(|&(s, e)| layout.bytes(s, e)).sum();
        reporter.phase(TransferState::Uploading, done_bytes, size);

        // A single pass hashes what the server already has before the stream opens: an
        // open stream that owes the server a message goes quiet meanwhile, and the
        // server closes streams quiet for long (its --stream-idle-secs).
        if let Some(streaming) = self.streaming.as_mut()
            && streaming.digest().is_none()
        {
            let first_missing = committed
                .first()
                .filter(|(start, _)| *start == 0)
                .map_or(0, |&(_, end)| end);
            streaming
                .catch_up(self.source, layout.bytes(0, first_missing))
                .await
                .map_err(|e| Interruption::Fatal(read_error(&self.label, e)))?;
        }

        let window = self.server.config().window.min(session.max_window).max(1) as usize;
        // Room for everything the stream can owe the server at once (the start, a window
        // of unacknowledged chunks, the digest): sending never waits on the channel, so
        // the stall timeout below covers every wait, even before the call is answered.
        let (requests, outgoing) = mpsc::channel(window + 2);
        let start = UploadChunksRequest {
            message: Some(upload_chunks_request::Message::Start(UploadStart {
                upload_id: session.upload_id.clone(),
            })),
        };
        let _ = requests.send(start).await;
        // The server needs the MD5 on every stream of a single-pass session once it is
        // known; for any other session it is the same MD5 again, which does no harm.
        let digest_sent = match self.md5 {
            Some(md5) => {
                let _ = requests.send(digest_message(md5)).await;
                true
            }
            None => false,
        };
        // The first chunks go out while the call's answer is on its way back.
        let responses = self.server.upload_chunks(ReceiverStream::new(outgoing));
        let mut stream = ChunkStream {
            requests: Some(requests),
            responses,
            window,
            to_send: ToSend::new(layout.chunk_count(), committed),
            in_flight: BTreeSet::new(),
            rejections: BTreeMap::new(),
            layout,
            done_bytes,
            phase_bytes: 0,
            digest_sent,
        };
        // A call that could not be opened ends here like a stream that broke.
        let interrupted = match stream.run(self, reporter).await {
            Ok(done) => return Ok(done),
            Err(interruption) => interruption,
        };
        if self.adopted && !self.started_over && holds_other_content(&interrupted) {
            // The unfinished upload found by name, size and head was of another file
            // (its MD5 did not match ours): the server has closed it; start a new one.
            self.started_over = true;
            self.adopted = false;
            self.session_id = None;
            self.acked.clear();
            return Err(Interruption::Retry(
                "the unfinished upload it resumed held other content: starting over".into(),
            ));
        }
        // A session that closed under the stream may have been aborted by someone else:
        // then this upload stops rather than start a new session.
        if matches!(interrupted, Interruption::Retry(_))
            && self.session_was_aborted(&session.upload_id).await
        {
            self.aborted_elsewhere = true;
        }
        Err(interrupted)
    }

    async fn session_was_aborted(&self, upload_id: &str) -> bool {
        let request = GetFileRequest {
            file_id: upload_id.to_owned(),
        };
        let asked = tokio::time::timeout(
            self.server.config().stall_timeout,
            self.server.raw().get_file(request),
        )
        .await;
        matches!(asked, Ok(Ok(response))
            if response.get_ref().file.as_ref().is_some_and(|f| f.state() == FileState::Aborted))
    }

    fn finished(&self, file: FileInfo, instant: bool) -> Result<UploadedFile, Interruption> {
        let Some(md5) = self.md5 else {
            return Err(self.protocol("the upload completed before this client declared its MD5"));
        };
        if file.md5.as_ref() != md5 || file.size != self.source.size() {
            return Err(Interruption::Fatal(TransferError::Md5Mismatch {
                file: self.label.clone(),
                expected: hex::encode(md5),
                actual: hex::encode(&file.md5),
            }));
        }
        Ok(UploadedFile {
            file,
            instant,
            chunks_sent: self.chunks_sent,
            chunks_already_stored: self.chunks_already_stored,
        })
    }

    fn protocol(&self, problem: impl Into<String>) -> Interruption {
        Interruption::Fatal(TransferError::protocol(&self.label, problem))
    }

    /// Cancels: the server's session (if any) is aborted.
    async fn cancel(&self) -> Result<UploadedFile, TransferError> {
        if let Some(upload_id) = &self.session_id {
            let abort = AbortUploadRequest {
                upload_id: upload_id.clone(),
            };
            // Best effort, briefly: if the server cannot be reached the session stays
            // until someone aborts or finishes it.
            let deadline = self.server.config().stall_timeout;
            let _ = tokio::time::timeout(deadline, self.server.raw().abort_upload(abort)).await;
        }
        Err(TransferError::Cancelled {
            file: self.label.clone(),
        })
    }
}

/// Whether an attempt failed because its session held content other than this file's:
/// the server's MD5 differs from ours, or another client declared a different MD5.
fn holds_other_content(interruption: &Interruption) -> bool {
    matches!(
        interruption,
        Interruption::Fatal(
            TransferError::Md5Mismatch { .. }
                | TransferError::Refused {
                    code: tonic::Code::DataLoss | tonic::Code::InvalidArgument,
                    ..
                }
        )
    )
}

fn digest_message(md5: [u8; 16]) -> UploadChunksRequest {
    UploadChunksRequest {
        message: Some(upload_chunks_request::Message::Digest(FileDigest {
            md5: md5.to_vec().into(),
        })),
    }
}

/// One `UploadChunks` stream of an attempt.
struct ChunkStream {
    requests: Option<mpsc::Sender<UploadChunksRequest>>,
    responses: OpeningUpload,
    window: usize,
    /// Chunks still to send.
    to_send: ToSend,
    /// Chunks sent and not yet acknowledged.
    in_flight: BTreeSet<u64>,
    /// How often each chunk was rejected.
    rejections: BTreeMap<u64, u32>,
    layout: ChunkLayout,
    /// Bytes acknowledged (or committed before this attempt).
    done_bytes: u64,
    /// Bytes acknowledged in this attempt, for the rate.
    phase_bytes: u64,
    /// This stream has told the server the whole-file MD5.
    digest_sent: bool,
}

impl ChunkStream {
    async fn run<S: ChunkSource>(
        &mut self,
        upload: &mut Upload<'_, S>,
        reporter: &mut Reporter,
    ) -> Result<UploadedFile, Interruption> {
        let stall = upload.server.config().stall_timeout;
        let mut pausing = false;
        loop {
            // Fill the window.
            while !pausing && self.in_flight.len() < self.window {
                let Some(index) = self.to_send.next(&upload.acked) else {
                    break;
                };
                self.send(upload, index).await?;
            }
            // Everything is sent: a single pass knows the MD5 now; tell the server.
            if !self.digest_sent && !pausing && self.to_send.is_empty(&upload.acked) {
                self.send_digest(upload).await?;
            }
            if self.in_flight.is_empty() {
                if pausing {
                    return Err(Interruption::Paused);
                }
                // Everything sent and acknowledged: half-close and wait for `completed`.
                if self.to_send.is_empty(&upload.acked) {
                    self.requests = None;
                }
            }

            tokio::select! {
                response = tokio::time::timeout(stall, self.responses.next()) => {
                    let response = match response {
                        Ok(response) => response,
                        // Asked to pause, and nothing moves: pause.
                        Err(_) if pausing => return Err(Interruption::Paused),
                        Err(_) => return Err(Interruption::Stalled(format!(
                            "no answer for {:?}: the stream is stalled",
                            stall
                        ))),
                    };
                    match response {
                        Some(Ok(UploadChunksResponse { message: Some(message) })) => {
                            if let Some(done) = self.receive(upload, reporter, message)? {
                                return Ok(done);
                            }
                        }
                        Some(Ok(UploadChunksResponse { message: None })) => {
                            return Err(upload.protocol("an empty UploadChunks response"));
                        }
                        Some(Err(status)) => return Err(Interruption::from_status(&upload.label, &status)),
                        None => return Err(Interruption::Retry("the server ended the stream before the upload completed".into())),
                    }
                }
                command = reporter.command_changed() => match command {
                    Command::Cancel => return Err(Interruption::Cancelled),
                    Command::Pause => pausing = true,
                    Command::Run => pausing = false,
                },
            }
        }
    }

    /// Finishes the single pass's MD5 (reading any tail the server already had) and
    /// sends it.
    async fn send_digest<S: ChunkSource>(
        &mut self,
        upload: &mut Upload<'_, S>,
    ) -> Result<(), Interruption> {
        let md5 = match (upload.md5, upload.streaming.as_mut()) {
            (Some(md5), _) => md5,
            (None, Some(streaming)) => streaming
                .finish(upload.source)
                .await
                .map_err(|e| Interruption::Fatal(read_error(&upload.label, e)))?,
            (None, None) => return Err(upload.protocol("no way to know the file's MD5")),
        };
        upload.md5 = Some(md5);
        let sent = match &self.requests {
            Some(requests) => requests.send(digest_message(md5)).await.is_ok(),
            None => false,
        };
        if !sent {
            return Err(self.closed_while_sending(upload).await);
        }
        self.digest_sent = true;
        Ok(())
    }

    /// Why the stream stopped taking requests: the call's own status when it has one
    /// (a call that could not be opened, or one the server ended), so that a fatal
    /// answer is not retried as a broken stream. Responses still on their way are
    /// dropped; the next attempt asks the server what it has.
    async fn closed_while_sending<S: ChunkSource>(
        &mut self,
        upload: &Upload<'_, S>,
    ) -> Interruption {
        let stall = upload.server.config().stall_timeout;
        loop {
            match tokio::time::timeout(stall, self.responses.next()).await {
                Ok(Some(Err(status))) => return Interruption::from_status(&upload.label, &status),
                Ok(Some(Ok(_))) => continue,
                Ok(None) | Err(_) => {
                    return Interruption::Retry("the stream closed while sending".into());
                }
            }
        }
    }

    async fn send<S: ChunkSource>(
        &mut self,
        upload: &mut Upload<'_, S>,
        index: u64,
    ) -> Result<(), Interruption> {
        let offset = self.layout.offset(index);
        let read_failed = |e| Interruption::Fatal(read_error(&upload.label, e));
        if let Some(streaming) = upload.streaming.as_mut()
            && streaming.digest().is_none()
        {
            // Bytes before this chunk that are not sent (the server has them) are
            // hashed first, so the hash sees the file in order.
            streaming
                .catch_up(upload.source, offset)
                .await
                .map_err(read_failed)?;
        }
        let data = upload
            .source
            .read_at(
                offset,
                self.layout.chunk_len(index).map_or(0, |len| len as usize),
            )
            .await
            .map_err(read_failed)?;
        if let Some(streaming) = upload.streaming.as_mut()
            && streaming.digest().is_none()
        {
            streaming.offer(offset, &data).await;
        }
        let chunk = Chunk {
            index,
            crc32c: crc32c::crc32c(&data),
            data,
        };
        let message = UploadChunksRequest {
            message: Some(upload_chunks_request::Message::Chunk(chunk)),
        };
        let sent = match &self.requests {
            Some(requests) => requests.send(message).await.is_ok(),
            None => false,
        };
        if !sent {
            return Err(self.closed_while_sending(upload).await);
        }
        self.in_flight.insert(index);
        upload.chunks_sent += 1;
        Ok(())
    }

    /// Handles one response; `Some` when the upload is complete.
    fn receive<S: ChunkSource>(
        &mut self,
        upload: &mut Upload<'_, S>,
        reporter: &Reporter,
        message: upload_chunks_response::Message,
    ) -> Result<Option<UploadedFile>, Interruption> {
        match message {
            upload_chunks_response::Message::Completed(done) => {
                let file = done
                    .file
                    .ok_or_else(|| upload.protocol("`completed` without the file"))?;
                upload.finished(file, false).map(Some)
            }
            upload_chunks_response::Message::Ack(ack) => {
                self.acknowledge(upload, reporter, ack)?;
                Ok(None)
            }
        }
    }

    fn acknowledge<S: ChunkSource>(
        &mut self,
        upload: &mut Upload<'_, S>,
        reporter: &Reporter,
        ack: ChunkAck,
    ) -> Result<(), Interruption> {
        if !self.in_flight.remove(&ack.index) {
            return Err(upload.protocol(format!(
                "an ack for chunk {} which was not in flight",
                ack.index
            )));
        }
        match ack.outcome() {
            outcome @ (ChunkOutcome::Stored | ChunkOutcome::AlreadyStored) => {
                if outcome == ChunkOutcome::AlreadyStored {
                    upload.chunks_already_stored += 1;
                }
                if upload.acked.insert(ack.index) {
                    let len = self.layout.chunk_len(ack.index).map_or(0, u64::from);
                    self.done_bytes += len;
                    self.phase_bytes += len;
                    reporter.advance(self.done_bytes, self.phase_bytes);
                }
                Ok(())
            }
            ChunkOutcome::BadChecksum => {
                let rejections = self.rejections.entry(ack.index).or_insert(0);
                *rejections += 1;
                if *rejections > upload.server.config().max_chunk_resends {
                    return Err(Interruption::Fatal(TransferError::ChunkRejected {
                        file: upload.label.clone(),
                        index: ack.index,
                        attempts: *rejections,
                        detail: ack.detail,
                    }));
                }
                // Damaged on the way: send it again, first.
                self.to_send.again(ack.index);
                Ok(())
            }
            outcome => Err(Interruption::Fatal(TransferError::ChunkRejected {
                file: upload.label.clone(),
                index: ack.index,
                attempts: 1,
                detail: format!("{outcome:?}: {}", ack.detail),
            })),
        }
    }
}
