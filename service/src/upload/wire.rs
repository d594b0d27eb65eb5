//! `UploadChunks` requests read straight off the HTTP/2 request body: each message
//! gathered once by [`FramedBody`], with a chunk's data landing page-aligned, then
//! decoded by prost without another copy.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::Stream;
use http_body::Body;
use prost::Message;
use transfer_proto::v1::UploadChunksRequest;
use transfer_wire::aligned::BufferPool;
use transfer_wire::body::{BodyEvent, FramedBody};
use transfer_wire::framer::FramingError;
use transfer_wire::memory::MessageMemory;

use crate::error::ServiceError;

/// The most the first message may have: it must be `start`, a few dozen bytes, so a
/// stream that has named no session yet cannot make the server take a chunk's buffer.
const FIRST_MESSAGE_MAX: usize = 16 << 10;

/// How a request body's own failure (below gRPC: a reset stream, a broken connection)
/// becomes the stream's error.
pub trait BodyFailure {
    fn into_error(self) -> ServiceError;
}

/// The requests of one `UploadChunks` call, decoded from its HTTP/2 body.
pub struct UploadRequests<B> {
    body: FramedBody<B>,
    decoded: u64,
    ended: bool,
}

impl<B> UploadRequests<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: BodyFailure,
{
    /// Requests of at most `max_message_size` bytes (the first at most
    /// [`FIRST_MESSAGE_MAX`]), each large one read only once `memory` grants it room,
    /// into a buffer of `buffers`.
    pub fn new(
        body: B,
        max_message_size: usize,
        memory: Arc<dyn MessageMemory>,
        buffers: Arc<BufferPool>,
    ) -> Self {
        Self {
            body: FramedBody::new(body, max_message_size, buffers)
                .limit_first_message(FIRST_MESSAGE_MAX)
                .with_memory(memory),
            decoded: 0,
            ended: false,
        }
    }
}

impl<B> Stream for UploadRequests<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: BodyFailure,
{
    type Item = Result<UploadChunksRequest, ServiceError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        let failed = match ready!(this.body.poll_event(cx)) {
            BodyEvent::Message(message) => {
                let index = this.decoded;
                this.decoded += 1;
                match UploadChunksRequest::decode(message) {
                    Ok(request) => return Poll::Ready(Some(Ok(request))),
                    Err(error) => ServiceError::MalformedMessage {
                        index,
                        reason: error.to_string(),
                    },
                }
            }
            // Trailers on a request carry nothing for us; the body ends with them.
            BodyEvent::Trailers(_) | BodyEvent::End { .. } => match this.body.missing() {
                0 => {
                    this.ended = true;
                    return Poll::Ready(None);
                }
                missing => ServiceError::Framing(FramingError::Truncated { missing }),
            },
            BodyEvent::Broken(error) => ServiceError::Framing(error),
            BodyEvent::Refused(refused) => ServiceError::NoMemory(refused),
            BodyEvent::Failed(error) => error.into_error(),
        };
        this.ended = true;
        Poll::Ready(Some(Err(failed)))
    }
}
