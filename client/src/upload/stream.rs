//! One `UploadChunks` stream of an attempt: chunks sent within the window, acks taken,
//! the whole-file MD5 declared at the end of a single pass.

use std::collections::{BTreeMap, BTreeSet};

use tokio::sync::mpsc;
use transfer_proto::v1::{
    Chunk, ChunkAck, ChunkOutcome, FileDigest, UploadChunksRequest, UploadChunksResponse,
    upload_chunks_request, upload_chunks_response,
};
use transfer_shared::layout::ChunkLayout;

use crate::chunks::ToSend;
use crate::error::TransferError;
use crate::progress::{Command, Reporter};
use crate::retry::Interruption;
use crate::source::ChunkSource;
use crate::upload_wire::OpeningUpload;

use super::{Upload, UploadedFile, read_error};

pub(super) fn digest_message(md5: [u8; 16]) -> UploadChunksRequest {
    UploadChunksRequest {
        message: Some(upload_chunks_request::Message::Digest(FileDigest {
            md5: md5.to_vec().into(),
        })),
    }
}

/// One `UploadChunks` stream of an attempt.
pub(super) struct ChunkStream {
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
    /// A stream sending the chunks `to_send` of `layout` on `requests`, at most `window`
    /// unacknowledged, hearing `responses`.
    pub(super) fn new(
        requests: mpsc::Sender<UploadChunksRequest>,
        responses: OpeningUpload,
        window: usize,
        layout: ChunkLayout,
        to_send: ToSend,
    ) -> Self {
        Self {
            requests: Some(requests),
            responses,
            window,
            to_send,
            in_flight: BTreeSet::new(),
            rejections: BTreeMap::new(),
            layout,
            done_bytes: 0,
            phase_bytes: 0,
            digest_sent: false,
        }
    }

    /// What the server had before this stream (`done_bytes`), and whether the stream
    /// has already told it the whole-file MD5.
    pub(super) fn done_before(&mut self, done_bytes: u64, digest_sent: bool) {
        self.done_bytes = done_bytes;
        self.digest_sent = digest_sent;
    }

    pub(super) async fn run<S: ChunkSource>(
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
    pub(super) async fn send_digest<S: ChunkSource>(
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
    pub(super) async fn closed_while_sending<S: ChunkSource>(
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

    pub(super) async fn send<S: ChunkSource>(
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
    pub(super) fn receive<S: ChunkSource>(
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

    pub(super) fn acknowledge<S: ChunkSource>(
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
