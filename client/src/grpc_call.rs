//! Calls made on the channel below tonic's codec, for the two streams that carry bulk
//! bytes (see [`crate::upload_wire`] and [`crate::download`]): the request is built
//! here, and the responses are gathered by [`FramedBody`], so a download piece's data
//! lands page-aligned, ready for direct I/O, without tonic's copy. The stream ends
//! with the call's status from the trailers, as tonic's `Streaming` would give it.

use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures::Stream;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Code, Status};
use transfer_wire::aligned::BufferPool;
use transfer_wire::body::{BodyEvent, FramedBody};
use transfer_wire::encode::MessagesBody;
use transfer_wire::framer::FramingError;

use crate::metadata::CallMetadata;

/// Most bytes one response message may have, as for the generated client: a download
/// piece is 1 MiB.
const MAX_RESPONSE: usize = 64 << 20;

/// Where a call goes and what it needs: the channel, the owner and trace metadata added
/// to every call, and the buffers large response messages are read into.
#[derive(Clone)]
pub(crate) struct CallTarget {
    pub channel: Channel,
    pub owner: CallMetadata,
    pub buffers: Arc<BufferPool>,
}

/// Calls `path` on `target` with `body` (gRPC-framed messages).
pub(crate) async fn call<M: prost::Message + Default>(
    target: CallTarget,
    path: &'static str,
    body: Body,
) -> Result<ResponseStream<M>, Status> {
    let CallTarget {
        channel,
        mut owner,
        buffers,
    } = target;
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
    let ended = match status_from(response.headers()) {
        Some(status) if status.code() != Code::Ok => return Err(status),
        Some(_) => true,
        None => false,
    };
    let http_status = response.status();
    Ok(ResponseStream {
        body: FramedBody::new(response.into_body(), MAX_RESPONSE, buffers),
        http_status,
        ended,
        message: PhantomData,
    })
}

/// The call's status in `headers` (a response's headers or its trailers), if they hold
/// one. tonic's reader panics on a `grpc-status-details-bin` that is not base64
/// (grpc/grpc-rust#2618); we use no details, so they are left out, and a bulk call ends
/// with the server's status whatever it sent there. (The short calls go through tonic's
/// generated client, which still reads them with tonic's reader.)
fn status_from(headers: &HeaderMap) -> Option<Status> {
    const DETAILS: &str = "grpc-status-details-bin";
    if !headers.contains_key(DETAILS) {
        return Status::from_header_map(headers);
    }
    let mut without = headers.clone();
    without.remove(DETAILS);
    Status::from_header_map(&without)
}

/// One message, gRPC-framed, as a request body.
pub(crate) fn one_message(message: &impl prost::Message) -> Body {
    let framed = transfer_wire::encode::framed(message);
    Body::new(MessagesBody::new(
        futures::stream::iter([framed.into()]),
        None,
    ))
}

/// The responses of a call; the last item is the call's error, if any.
pub(crate) struct ResponseStream<M> {
    body: FramedBody<Body>,
    http_status: StatusCode,
    ended: bool,
    message: PhantomData<fn() -> M>,
}

impl<M> ResponseStream<M> {
    /// The call's end: its status from the trailers (or the HTTP status without them).
    fn finish(&mut self, trailers: Option<&HeaderMap>) -> Option<Result<M, Status>> {
        self.ended = true;
        let declared = trailers.and_then(status_from);
        // The server's own error says more than the message it left unfinished.
        let missing = self.body.missing();
        if missing > 0 && declared.as_ref().is_none_or(|s| s.code() == Code::Ok) {
            return Some(Err(framing_status(FramingError::Truncated { missing })));
        }
        let status = declared.unwrap_or_else(|| {
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

    fn fail(&mut self, status: Status) -> Option<Result<M, Status>> {
        self.ended = true;
        Some(Err(status))
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
        if this.ended {
            return Poll::Ready(None);
        }
        Poll::Ready(match ready!(this.body.poll_event(cx)) {
            BodyEvent::Message(message) => match M::decode(message) {
                Ok(message) => Some(Ok(message)),
                Err(e) => this.fail(Status::internal(format!(
                    "the server sent an undecodable response: {e}"
                ))),
            },
            BodyEvent::Trailers(trailers) => this.finish(Some(&trailers)),
            BodyEvent::End { .. } => this.finish(None),
            BodyEvent::Broken(error) => this.fail(framing_status(error)),
            // This reader grants every message its memory: nothing is refused.
            BodyEvent::Refused(refused) => this.fail(Status::internal(refused.to_string())),
            BodyEvent::Failed(status) => this.fail(status),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use transfer_wire::aligned::DEFAULT_POOL_BYTES;

    use bytes::Bytes;
    use http_body::Body as HttpBody;

    use futures::StreamExt;
    use http_body::Frame;
    use transfer_proto::v1::{ChunkAck, UploadChunksResponse, upload_chunks_response};

    /// A response body of these frames, then its end.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl HttpBody for Frames {
        type Data = Bytes;
        type Error = Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    fn ack(index: u64) -> UploadChunksResponse {
        UploadChunksResponse {
            message: Some(upload_chunks_response::Message::Ack(ChunkAck {
                index,
                ..Default::default()
            })),
        }
    }

    fn trailers(code: Code, message: &str) -> Frame<Bytes> {
        let mut map = HeaderMap::new();
        Status::new(code, message).add_header(&mut map).unwrap();
        Frame::trailers(map)
    }

    fn stream(
        http_status: StatusCode,
        frames: Vec<Frame<Bytes>>,
    ) -> ResponseStream<UploadChunksResponse> {
        ResponseStream {
            body: FramedBody::new(
                Body::new(Frames(frames.into())),
                MAX_RESPONSE,
                BufferPool::new(DEFAULT_POOL_BYTES),
            ),
            http_status,
            ended: false,
            message: PhantomData,
        }
    }

    async fn collect(
        stream: ResponseStream<UploadChunksResponse>,
    ) -> Vec<Result<UploadChunksResponse, Status>> {
        stream.collect().await
    }

    /// Two acks, framed, as bytes cut in three places.
    fn two_acks_cut_up() -> Vec<Frame<Bytes>> {
        let bytes: Vec<u8> = [ack(1), ack(2)]
            .iter()
            .flat_map(|a| transfer_wire::encode::framed(a).to_vec())
            .collect();
        vec![
            Frame::data(Bytes::copy_from_slice(&bytes[..3])),
            Frame::data(Bytes::copy_from_slice(&bytes[3..9])),
            Frame::data(Bytes::copy_from_slice(&bytes[9..])),
        ]
    }

    #[tokio::test]
    async fn messages_cut_across_frames_come_out_whole_then_an_ok_end() {
        let mut frames = two_acks_cut_up();
        frames.push(trailers(Code::Ok, ""));
        let items = collect(stream(StatusCode::OK, frames)).await;
        let acks: Vec<_> = items.into_iter().map(Result::unwrap).collect();
        assert_eq!(acks, vec![ack(1), ack(2)]);
    }

    #[tokio::test]
    async fn the_trailers_error_comes_after_the_messages_before_it() {
        let mut frames = two_acks_cut_up();
        frames.push(trailers(Code::NotFound, "no upload session"));
        let mut items = collect(stream(StatusCode::OK, frames)).await;
        let end = items.pop().unwrap().unwrap_err();
        assert_eq!(items.len(), 2);
        assert_eq!(
            (end.code(), end.message()),
            (Code::NotFound, "no upload session")
        );
    }

    #[tokio::test]
    async fn status_details_that_are_not_base64_are_ignored_not_a_panic() {
        let mut map = trailers(Code::NotFound, "no upload session")
            .into_trailers()
            .unwrap();
        map.insert(
            "grpc-status-details-bin",
            http::HeaderValue::from_static("%%% not base64 %%%"),
        );
        let mut frames = two_acks_cut_up();
        frames.push(Frame::trailers(map));
        let end = collect(stream(StatusCode::OK, frames))
            .await
            .pop()
            .unwrap()
            .unwrap_err();
        assert_eq!(
            (end.code(), end.message()),
            (Code::NotFound, "no upload session")
        );
    }

    #[test]
    fn a_status_among_the_headers_is_read_whatever_its_details() {
        let mut headers = HeaderMap::new();
        assert!(status_from(&headers).is_none());
        Status::new(Code::PermissionDenied, "not yours")
            .add_header(&mut headers)
            .unwrap();
        headers.insert(
            "grpc-status-details-bin",
            HeaderValue::from_static("%%% not base64 %%%"),
        );
        let status = status_from(&headers).unwrap();
        assert_eq!(
            (status.code(), status.message()),
            (Code::PermissionDenied, "not yours")
        );
    }

    #[tokio::test]
    async fn an_end_without_a_status_is_unknown_or_mapped_from_http() {
        let items = collect(stream(StatusCode::OK, two_acks_cut_up())).await;
        assert_eq!(
            items.last().unwrap().as_ref().unwrap_err().code(),
            Code::Unknown
        );
        let items = collect(stream(StatusCode::SERVICE_UNAVAILABLE, vec![])).await;
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].as_ref().unwrap_err().code(), Code::Unavailable);
    }

    #[tokio::test]
    async fn a_message_left_unfinished_is_an_error_unless_the_server_said_why() {
        // One whole ack, then the first 3 bytes of another.
        let unfinished = || {
            let mut bytes = transfer_wire::encode::framed(&ack(1)).to_vec();
            bytes.extend_from_slice(&transfer_wire::encode::framed(&ack(2))[..3]);
            Frame::data(Bytes::from(bytes))
        };
        let frames = vec![unfinished(), trailers(Code::Ok, "")];
        let items = collect(stream(StatusCode::OK, frames)).await;
        assert_eq!(items.len(), 2);
        let end = items[1].as_ref().unwrap_err();
        assert_eq!(end.code(), Code::Internal);
        assert!(
            end.message().contains("inside a message"),
            "{}",
            end.message()
        );

        let frames = vec![unfinished(), trailers(Code::ResourceExhausted, "too many")];
        let items = collect(stream(StatusCode::OK, frames)).await;
        assert_eq!(
            items[1].as_ref().unwrap_err().code(),
            Code::ResourceExhausted
        );
    }

    #[tokio::test]
    async fn messages_before_broken_framing_are_delivered_first() {
        let mut bytes = transfer_wire::encode::framed(&ack(7)).to_vec();
        bytes.extend_from_slice(&[9, 0, 0, 0, 1, 0]);
        let frames = vec![Frame::data(Bytes::from(bytes)), trailers(Code::Ok, "")];
        let items = collect(stream(StatusCode::OK, frames)).await;
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].as_ref().unwrap(), &ack(7));
        assert_eq!(items[1].as_ref().unwrap_err().code(), Code::Internal);
    }
}
