//! One stripe of an upload attempt: an `UploadChunks` stream into the session on a
//! connection of its own, with the chunks it carries that are not yet acknowledged.

use std::collections::BTreeMap;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use transfer_proto::v1::{
    FileDigest, UploadChunksRequest, UploadChunksResponse, UploadStart, upload_chunks_request,
};

use crate::connection::ServerConnection;
use crate::upload_wire::OpeningUpload;

/// One `UploadChunks` stream of an attempt.
pub(super) struct Stripe {
    /// The client's connection it runs on (0 is the one every other call uses).
    pub lane: usize,
    /// Where its requests go; `None` once half-closed.
    requests: Option<mpsc::Sender<UploadChunksRequest>>,
    responses: OpeningUpload,
    /// Chunks sent on it and not yet acknowledged, with when each was sent.
    pub in_flight: BTreeMap<u64, Instant>,
    /// It has told the server the whole-file MD5.
    pub digest_sent: bool,
    /// It takes no more chunks, and half-closes once those it carries are acknowledged.
    pub retiring: bool,
    /// This client half-closed it: its end without `completed` is no failure.
    pub half_closed: bool,
    /// A request could not go out: the call has ended, and its responses say how.
    pub broken: bool,
    /// When it last heard from the server (or opened, or began to wait for an answer):
    /// its stall deadline runs from here.
    pub heard: Instant,
    /// A try at more connections opened it and waits for its first answer.
    pub awaited_by_try: bool,
}

/// Why a request could not go out: the call has ended (its responses say how).
pub(super) struct StripeClosed;

impl Stripe {
    /// It owes this client an answer (chunks unacknowledged, or its end after a
    /// half-close or a failed send): silence on it counts toward a stall.
    pub fn awaits_answer(&self) -> bool {
        !self.in_flight.is_empty() || self.half_closed || self.broken
    }

    /// Opens a stream into session `upload_id` on connection `lane`, room for `window`
    /// chunks and the start and digest messages, telling the server the MD5 if known.
    /// The call's answer comes back while the first chunks already go out.
    pub fn open(
        server: &ServerConnection,
        lane: usize,
        upload_id: &str,
        window: usize,
        md5: Option<[u8; 16]>,
    ) -> Self {
        // Room for everything the stream can owe the server at once: sending never
        // waits on the channel, so the stall timeout covers every wait.
        let (requests, outgoing) = mpsc::channel(window + 2);
        let start = UploadChunksRequest {
            message: Some(upload_chunks_request::Message::Start(UploadStart {
                upload_id: upload_id.to_owned(),
            })),
        };
        let _ = requests.try_send(start);
        // The server needs the MD5 on every stream of a single-pass session once it is
        // known; for any other session it is the same MD5 again, which does no harm.
        let digest_sent = md5.is_some_and(|md5| requests.try_send(digest_message(md5)).is_ok());
        let responses = server.upload_chunks(lane, upload_id, ReceiverStream::new(outgoing));
        Self {
            lane,
            requests: Some(requests),
            responses,
            in_flight: BTreeMap::new(),
            digest_sent,
            retiring: false,
            half_closed: false,
            broken: false,
            heard: Instant::now(),
            awaited_by_try: false,
        }
    }

    /// Whether it may take another chunk, below `window` in flight.
    pub fn has_room(&self, window: usize) -> bool {
        !self.retiring && !self.half_closed && !self.broken && self.in_flight.len() < window
    }

    /// Sends `message`; the stream has ended when it cannot be sent.
    pub async fn send(&mut self, message: UploadChunksRequest) -> Result<(), StripeClosed> {
        match &self.requests {
            Some(requests) => requests.send(message).await.map_err(|_| StripeClosed),
            None => Err(StripeClosed),
        }
    }

    /// Tells the server the whole-file MD5 (once).
    pub async fn send_digest(&mut self, md5: [u8; 16]) -> Result<(), StripeClosed> {
        if !self.digest_sent && !self.half_closed {
            self.send(digest_message(md5)).await?;
            self.digest_sent = true;
        }
        Ok(())
    }

    /// Ends its requests: the server then ends the stream once it has nothing more to
    /// say on it (at once, or with `completed` once the upload completes).
    pub fn half_close(&mut self) {
        self.requests = None;
        self.half_closed = true;
    }

    /// The next response. Cancel-safe.
    pub async fn next(&mut self) -> Option<Result<UploadChunksResponse, tonic::Status>> {
        self.responses.next().await
    }
}

pub(super) fn digest_message(md5: [u8; 16]) -> UploadChunksRequest {
    UploadChunksRequest {
        message: Some(upload_chunks_request::Message::Digest(FileDigest {
            md5: md5.to_vec().into(),
        })),
    }
}
