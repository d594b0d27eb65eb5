//! One `UploadChunks` stream: the first message names the session; every chunk is
//! checked (index, length, CRC32C) and, if good, handed to the session, whose acks are
//! forwarded back. The stream ends after `completed`, on an error, or once the client
//! has finished sending and every chunk it sent has been answered.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use transfer_proto::v1::{
    Chunk, ChunkAck, ChunkOutcome, UploadChunksRequest, UploadChunksResponse, UploadCompleted,
    upload_chunks_request, upload_chunks_response,
};
use transfer_wire::aligned::BufferPool;

use super::chunk_check::{check_and_copy, misfit};
use super::session::{AttachedStream, Attachment, SessionEvent, SessionRegistry, VerifiedChunk};
use crate::error::ServiceError;
use crate::files::file_info;
use crate::identity::Owner;
use crate::ledger::FileRecord;
use crate::metrics::{attribute, metrics};
use crate::request::{parse_id, parse_md5};
use crate::telemetry::record_status;

/// Where the stream's answers go, and how long a client that reads none is waited for.
struct Outbound {
    responses: mpsc::Sender<Result<UploadChunksResponse, ServiceError>>,
    patience: Duration,
}

/// Runs one stream to its end, sending every answer (and a final error, if any) to
/// `outbound`.
pub async fn run(
    registry: std::sync::Arc<SessionRegistry>,
    owner: Owner,
    inbound: impl Stream<Item = Result<UploadChunksRequest, ServiceError>> + Unpin,
    outbound: mpsc::Sender<Result<UploadChunksResponse, ServiceError>>,
) {
    let metrics = metrics();
    metrics.active_streams.add(1, &[]);
    // Room for the final status, kept from the start: a client that reads no answers
    // fills the queue, and must still learn why the stream ended when it reads on.
    let last_word = outbound.clone().reserve_owned().await;
    let outbound = Outbound {
        responses: outbound,
        patience: registry.limits().stream_idle_timeout,
    };
    let ended = drive(registry, owner, inbound, &outbound).await;
    metrics.active_streams.add(-1, &[]);
    let code = ended
        .as_ref()
        .map_or_else(ServiceError::code, |()| tonic::Code::Ok);
    record_status(&tracing::Span::current(), code);
    if let Err(error) = ended {
        error.log_if_server_fault();
        if let Ok(last_word) = last_word {
            last_word.send(Err(error));
        }
    }
}

/// What the stream knows while it runs.
struct StreamState {
    attached: AttachedStream,
    /// Chunks handed to the session and not yet acked.
    in_flight: u32,
    /// Chunks of the session still missing, as last heard.
    remaining: u64,
    /// The session waits for a whole-file MD5 that this stream has not sent.
    awaiting_digest: bool,
    /// Where a chunk that did not arrive aligned is copied to.
    buffers: Arc<BufferPool>,
}

async fn drive(
    registry: std::sync::Arc<SessionRegistry>,
    owner: Owner,
    mut inbound: impl Stream<Item = Result<UploadChunksRequest, ServiceError>> + Unpin,
    outbound: &Outbound,
) -> Result<(), ServiceError> {
    let limits = *registry.limits();
    let first = tokio::time::timeout(limits.first_message_timeout, inbound.next())
        .await
        .map_err(|_| ServiceError::StreamDeadline {
            waited_for: "no `start` message arrived",
            seconds: limits.first_message_timeout.as_secs(),
        })?;
    let upload_id = match first {
        Some(Ok(UploadChunksRequest {
            message: Some(upload_chunks_request::Message::Start(start)),
        })) => parse_id("start.upload_id", &start.upload_id)?,
        Some(Ok(_)) => {
            return Err(ServiceError::UnexpectedMessage(
                "the first message of UploadChunks must be `start` naming the upload session",
            ));
        }
        None => {
            return Err(ServiceError::UnexpectedMessage(
                "UploadChunks ended before its `start` message",
            ));
        }
        // A message that could not be read (malformed, cut off, too large), or the
        // client went away (then nobody hears this).
        Some(Err(error)) => return Err(error),
    };
    let span = tracing::Span::current();
    span.record("transfer.upload_id", upload_id.to_string());
    let draining = registry.draining().clone();
    if draining.is_cancelled() {
        return Err(ServiceError::ShuttingDown);
    }
    let attached = match registry.attach(&owner, upload_id).await? {
        Attachment::Stream(attached) => attached,
        Attachment::Completed(file) => return send_completed(outbound, &file).await,
    };
    span.record("transfer.file_size", attached.info.layout.size);
    span.record("transfer.chunk_size", attached.info.layout.chunk_size);
    let mut state = StreamState {
        remaining: attached.info.remaining,
        awaiting_digest: attached.info.needs_digest,
        attached,
        in_flight: 0,
        buffers: Arc::clone(registry.buffers()),
    };

    let mut sending = true;
    // Set once an ack says no chunk is missing: `completed` or an error follows.
    let mut finishing = state.remaining == 0;
    // The client owes the next message once nothing it sent awaits an answer: from then
    // on it has `idle` to make progress (a chunk stored, or the MD5 the session waits
    // for) or to end the stream. Messages that store nothing (rejected chunks, chunks
    // stored before, a repeated digest) do not count: they would keep a stream open
    // for ever.
    let idle = limits.stream_idle_timeout;
    let mut quiet_since = Instant::now();
    loop {
        // Not once every chunk is stored and the MD5 known: then the server owes the
        // client `completed` (still hashing, syncing, moving the file).
        let owed = sending && state.in_flight == 0 && (!finishing || state.awaiting_digest);
        tokio::select! {
            biased;
            event = state.attached.events.recv() => match event {
                Some(SessionEvent::Ack { index, already_stored, remaining }) => {
                    state.in_flight = state.in_flight.saturating_sub(1);
                    state.remaining = remaining;
                    finishing |= remaining == 0;
                    send_stored_ack(outbound, index, already_stored, remaining).await?;
                    if !already_stored {
                        quiet_since = Instant::now();
                    }
                }
                Some(SessionEvent::Completed(file)) => return send_completed(outbound, &file).await,
                Some(SessionEvent::Failed(error)) => return Err(error),
                None => return Err(ServiceError::SessionClosed),
            },
            () = tokio::time::sleep_until(quiet_since + idle), if owed => {
                return Err(ServiceError::StreamDeadline {
                    waited_for: "no chunk was stored (an idle stream, a chunk sent too slowly, or only messages that store nothing)",
                    seconds: idle.as_secs(),
                });
            }
            // The server is stopping: take no more chunks; those in flight are stored
            // and acked below, then the stream ends with UNAVAILABLE.
            () = draining.cancelled(), if sending => sending = false,
            message = inbound.next(), if sending => match message {
                Some(Ok(UploadChunksRequest { message: Some(upload_chunks_request::Message::Chunk(chunk)) })) => {
                    if let Handed::SessionClosed = receive_chunk(&mut state, chunk, outbound).await? {
                        return last_word(&mut state.attached, outbound).await;
                    }
                }
                Some(Ok(UploadChunksRequest { message: Some(upload_chunks_request::Message::Digest(digest)) })) => {
                    if state.awaiting_digest {
                        quiet_since = Instant::now();
                    }
                    let md5 = parse_md5("digest.md5", &digest.md5)?;
                    state.awaiting_digest = false;
                    if state.attached.send_digest(md5).await.is_err() {
                        return last_word(&mut state.attached, outbound).await;
                    }
                }
                Some(Ok(UploadChunksRequest { message: Some(upload_chunks_request::Message::Start(_)) })) => {
                    return Err(ServiceError::UnexpectedMessage(
                        "`start` may only be the first message of UploadChunks",
                    ));
                }
                Some(Ok(UploadChunksRequest { message: None })) => {
                    return Err(ServiceError::UnexpectedMessage(
                        "an UploadChunks message must carry `start`, `chunk` or `digest`",
                    ));
                }
                None => sending = false,
                // A message that could not be decoded (too large, malformed), or the client
                // went away (then nobody hears this). What was acked is stored.
                Some(Err(error)) => return Err(error),
            },
        }
        let drained = draining.is_cancelled();
        if !sending && state.in_flight == 0 && !finishing {
            return if drained {
                Err(ServiceError::ShuttingDown)
            } else {
                Ok(())
            };
        }
        // Everything is stored but the client stopped sending without the MD5 that
        // completing needs: say so instead of waiting for ever.
        if !sending && finishing && state.awaiting_digest {
            return Err(if drained {
                ServiceError::ShuttingDown
            } else {
                ServiceError::DigestMissing
            });
        }
    }
}

/// What became of a chunk the stream received.
enum Handed {
    /// Handed to the session, or answered with a rejection.
    Done,
    /// The session had closed: its last event says why.
    SessionClosed,
}

/// After the session closed under a stream: forwards what it still said (acks, then
/// `completed` or the error that closed it).
async fn last_word(attached: &mut AttachedStream, outbound: &Outbound) -> Result<(), ServiceError> {
    while let Some(event) = attached.events.recv().await {
        match event {
            SessionEvent::Ack {
                index,
                already_stored,
                remaining,
            } => send_stored_ack(outbound, index, already_stored, remaining).await?,
            SessionEvent::Completed(file) => return send_completed(outbound, &file).await,
            SessionEvent::Failed(error) => return Err(error),
        }
    }
    Err(ServiceError::SessionClosed)
}

/// Checks one chunk and hands it to the session, or answers it with a rejection.
async fn receive_chunk(
    state: &mut StreamState,
    chunk: Chunk,
    outbound: &Outbound,
) -> Result<Handed, ServiceError> {
    let index = chunk.index;
    if let Some((outcome, detail)) = misfit(state.attached.info.layout, &chunk) {
        return reject(state, outbound, index, outcome, detail).await;
    }
    let (computed, data) = check_and_copy(&state.buffers, &chunk.data);
    if computed != chunk.crc32c {
        let detail = format!(
            "CRC32C of chunk {index} is {computed:#010x} but the message says {:#010x}: send it again",
            chunk.crc32c
        );
        return reject(state, outbound, index, ChunkOutcome::BadChecksum, detail).await;
    }

    let window = state.attached.info.window;
    if state.in_flight >= window.chunks {
        return Err(ServiceError::WindowExceeded {
            window: window.chunks,
            bytes: window.bytes,
        });
    }
    state.in_flight += 1;
    metrics().bytes_received.add(data.len() as u64, &[]);
    let handed = state
        .attached
        .send_chunk(VerifiedChunk {
            index,
            data,
            crc32c: chunk.crc32c,
            received_at: std::time::Instant::now(),
            span: tracing::Span::current(),
        })
        .await;
    Ok(match handed {
        Ok(()) => Handed::Done,
        Err(_) => Handed::SessionClosed,
    })
}

/// Answers a chunk that is not stored, and counts why.
async fn reject(
    state: &StreamState,
    outbound: &Outbound,
    index: u64,
    outcome: ChunkOutcome,
    detail: String,
) -> Result<Handed, ServiceError> {
    let reason = match outcome {
        ChunkOutcome::BadChecksum => "bad_checksum",
        ChunkOutcome::WrongLength => "wrong_length",
        _ => "index_out_of_range",
    };
    metrics()
        .chunks_rejected
        .add(1, &attribute("reason", reason));
    send_ack(outbound, index, outcome, detail, state.remaining).await?;
    Ok(Handed::Done)
}

async fn send_stored_ack(
    outbound: &Outbound,
    index: u64,
    already_stored: bool,
    remaining: u64,
) -> Result<(), ServiceError> {
    let outcome = if already_stored {
        ChunkOutcome::AlreadyStored
    } else {
        ChunkOutcome::Stored
    };
    send_ack(outbound, index, outcome, String::new(), remaining).await
}

async fn send_ack(
    outbound: &Outbound,
    index: u64,
    outcome: ChunkOutcome,
    detail: String,
    chunks_remaining: u64,
) -> Result<(), ServiceError> {
    let ack = ChunkAck {
        index,
        outcome: outcome.into(),
        detail,
        chunks_remaining,
    };
    send(outbound, upload_chunks_response::Message::Ack(ack)).await
}

async fn send_completed(outbound: &Outbound, file: &FileRecord) -> Result<(), ServiceError> {
    let completed = UploadCompleted {
        file: Some(file_info(file)),
    };
    send(
        outbound,
        upload_chunks_response::Message::Completed(completed),
    )
    .await
}

async fn send(
    outbound: &Outbound,
    message: upload_chunks_response::Message,
) -> Result<(), ServiceError> {
    let response = Ok(UploadChunksResponse {
        message: Some(message),
    });
    match outbound
        .responses
        .send_timeout(response, outbound.patience)
        .await
    {
        Ok(()) => Ok(()),
        // A client that reads no answers holds the chunks it sent in server memory.
        Err(mpsc::error::SendTimeoutError::Timeout(_)) => Err(ServiceError::StreamDeadline {
            waited_for: "the client read no answers",
            seconds: outbound.patience.as_secs(),
        }),
        // The client stopped listening: end quietly.
        Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(ServiceError::ClientGone),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_client_that_reads_no_answers_is_given_up_on_after_the_idle_time() {
        let (responses, _unread) = mpsc::channel(1);
        let outbound = Outbound {
            responses,
            patience: Duration::from_secs(30),
        };
        let ack = || upload_chunks_response::Message::Ack(ChunkAck::default());
        assert!(send(&outbound, ack()).await.is_ok(), "the queue takes one");
        let started = Instant::now();
        let error = send(&outbound, ack()).await.unwrap_err();
        assert_eq!(error.code(), tonic::Code::DeadlineExceeded);
        assert!(error.to_string().contains("read no answers"), "{error:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test]
    async fn a_client_that_went_away_ends_the_stream_quietly() {
        let (responses, unread) = mpsc::channel(1);
        drop(unread);
        let outbound = Outbound {
            responses,
            patience: Duration::from_secs(30),
        };
        let error = send(
            &outbound,
            upload_chunks_response::Message::Ack(ChunkAck::default()),
        )
        .await
        .unwrap_err();
        assert!(matches!(error, ServiceError::ClientGone), "{error:?}");
    }
}
