//! Calls made on the channel below tonic's codec, for the two streams that carry bulk
//! bytes (see [`crate::upload_wire`] and [`crate::download`]): the request is built
//! here, and the responses are gathered by [`MessageFramer`], so a download piece's data
//! lands page-aligned, ready for direct I/O, without tonic's copy. The stream ends
//! with the call's status from the trailers, as tonic's `Streaming` would give it.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::Stream;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body::Body as HttpBody;
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Code, Status};
use transfer_wire::framer::{FramingError, MessageFramer};

use crate::client::OwnerMetadata;

/// Most bytes one response message may have, as for the generated client: a download
/// piece is 1 MiB.
const MAX_RESPONSE: usize = 64 << 20;

/// Calls `path` on `channel` with `body` (gRPC-framed messages), with the owner and
/// trace metadata `owner` adds to every call.
pub(crate) async fn call<M: prost::Message + Default>(
    channel: Channel,
    mut owner: OwnerMetadata,
    path: &'static str,
    body: Body,
) -> Result<ResponseStream<M>, Status> {
    let metadata = owner.call(tonic::Request::new(()))?.into_parts().0;
    let mut request = Request::new(body);
    *request.method_mut() = Method::POST;
    *request.uri_mut() = http::Uri::from_static(path);
    let headers = request.headers_mut();
    headers.extend(metadata.into_headers());
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(http::header::TE, HeaderValue::from_static("trailers"));

    let mut channel = channel;
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .map_err(|e| Status::from_error(e.into()))?;
    let response = channel
        .call(request)
        .await
        .map_err(|e| Status::from_error(e.into()))?;
    // A `grpc-status` among the headers is a response with no messages at all.
    let ended = match Status::from_header_map(response.headers()) {
        Some(status) if status.code() != Code::Ok => return Err(status),
        Some(_) => true,
        None => false,
    };
    let http_status = response.status();
    Ok(ResponseStream {
        body: response.into_body(),
        http_status,
        framer: MessageFramer::new(MAX_RESPONSE),
        done: VecDeque::new(),
        ended,
        message: PhantomData,
    })
}

/// One message, gRPC-framed, as a request body.
pub(crate) fn one_message(message: &impl prost::Message) -> Body {
    Body::new(OneFrame(Some(transfer_wire::encode::framed(message))))
}

struct OneFrame(Option<Bytes>);

impl HttpBody for OneFrame {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        Poll::Ready(self.0.take().map(|data| Ok(http_body::Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }
}

/// The responses of a call; the last item is the call's error, if any.
pub(crate) struct ResponseStream<M> {
    body: Body,
    http_status: StatusCode,
    framer: MessageFramer,
    /// Whole messages not yet decoded.
    done: VecDeque<Bytes>,
    ended: bool,
    message: PhantomData<fn() -> M>,
}

impl<M> ResponseStream<M> {
    /// The call's end: its status from the trailers (or the HTTP status without them).
    fn finish(&mut self, trailers: Option<&HeaderMap>) -> Option<Result<M, Status>> {
        self.ended = true;
        let missing = self.framer.missing();
        if missing > 0 {
            return Some(Err(framing_status(FramingError::Truncated { missing })));
        }
        let status = trailers
            .and_then(Status::from_header_map)
            .unwrap_or_else(|| {
                if self.http_status == StatusCode::OK {
                    Status::unknown(
                        "protocol error: missing grpc-status trailer, the stream ended without a final status",
                    )
                } else {
                    Status::new(
                        code_of_http(self.http_status),
                        format!(
                            "grpc-status missing, mapped from HTTP status {}",
                            self.http_status.as_u16()
                        ),
                    )
                }
            });
        (status.code() != Code::Ok).then_some(Err(status))
    }

    fn fail(&mut self, status: Status) -> Poll<Option<Result<M, Status>>> {
        self.ended = true;
        Poll::Ready(Some(Err(status)))
    }
}

/// What a response stream whose framing is broken ends with.
fn framing_status(error: FramingError) -> Status {
    Status::internal(format!("the server's response stream is broken: {error}"))
}

/// As gRPC maps an HTTP status that comes without a gRPC one.
fn code_of_http(status: StatusCode) -> Code {
    match status {
        StatusCode::BAD_REQUEST => Code::Internal,
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        StatusCode::NOT_FOUND => Code::Unimplemented,
        StatusCode::TOO_MANY_REQUESTS
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => Code::Unavailable,
        _ => Code::Unknown,
    }
}

impl<M: prost::Message + Default> Stream for ResponseStream<M> {
    type Item = Result<M, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            if let Some(message) = this.done.pop_front() {
                return match M::decode(message) {
                    Ok(message) => Poll::Ready(Some(Ok(message))),
                    Err(e) => this.fail(Status::internal(format!(
                        "the server sent an undecodable response: {e}"
                    ))),
                };
            }
            match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        if let Err(error) = this.framer.push(data, &mut this.done) {
                            return this.fail(framing_status(error));
                        }
                    }
                    Err(frame) => {
                        let trailers = frame.into_trailers().ok();
                        return Poll::Ready(this.finish(trailers.as_ref()));
                    }
                },
                Some(Err(status)) => return this.fail(status),
                None => return Poll::Ready(this.finish(None)),
            }
        }
    }
}
