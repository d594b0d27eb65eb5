//! `UploadChunks` requests read straight off the HTTP/2 request body: each message
//! gathered once by [`MessageFramer`], with a chunk's data landing page-aligned, then
//! decoded by prost without another copy.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::Stream;
use http_body::Body;
use prost::Message;
use tonic::Status;
use transfer_proto::v1::UploadChunksRequest;
use transfer_wire::framer::{FramingError, MessageFramer};

use crate::error::{ServiceError, framing_status};

/// The requests of one `UploadChunks` call, decoded from its HTTP/2 body.
pub struct UploadRequests<B> {
    body: B,
    framer: MessageFramer,
    /// Whole messages not yet decoded.
    done: VecDeque<Bytes>,
    /// Where the framing broke, told once the messages before it are out.
    broken: Option<FramingError>,
    decoded: u64,
    ended: bool,
}

impl<B> UploadRequests<B> {
    pub fn new(body: B, max_message_size: usize) -> Self {
        Self {
            body,
            framer: MessageFramer::new(max_message_size),
            done: VecDeque::new(),
            broken: None,
            decoded: 0,
            ended: false,
        }
    }

    fn fail(&mut self, status: Status) -> Poll<Option<Result<UploadChunksRequest, Status>>> {
        self.ended = true;
        Poll::Ready(Some(Err(status)))
    }
}

impl<B> Stream for UploadRequests<B>
where
    B: Body<Data = Bytes, Error = Status> + Unpin,
{
    type Item = Result<UploadChunksRequest, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            if let Some(message) = this.done.pop_front() {
                let index = this.decoded;
                this.decoded += 1;
                return match UploadChunksRequest::decode(message) {
                    Ok(request) => Poll::Ready(Some(Ok(request))),
                    Err(error) => this.fail(
                        ServiceError::MalformedMessage {
                            index,
                            reason: error.to_string(),
                        }
                        .into(),
                    ),
                };
            }
            // The messages completed before the framing broke went out first.
            if let Some(error) = this.broken.take() {
                return this.fail(framing_status(error));
            }
            match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Trailers on a request carry nothing for us.
                    if let Ok(data) = frame.into_data()
                        && let Err(error) = this.framer.push(data, &mut this.done)
                    {
                        this.broken = Some(error);
                    }
                }
                Some(Err(status)) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(status)));
                }
                None => {
                    let missing = this.framer.missing();
                    if missing > 0 {
                        return this.fail(framing_status(FramingError::Truncated { missing }));
                    }
                    this.ended = true;
                }
            }
        }
    }
}
