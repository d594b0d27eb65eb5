//! The `UploadChunks` call made below tonic's codec.
//!
//! tonic's encoder copies every message into a buffer of its own before it is sent. A
//! chunk's bytes are most of what an upload moves, so here each chunk message goes out
//! as two HTTP/2 body pieces: a few bytes of gRPC prefix and protobuf fields, then the
//! chunk's data as it was read, with no copy (the HTTP/2 layer writes large pieces from
//! where they lie). The data field comes last in the message, which protobuf allows in
//! any order. Responses (small acks) are decoded here too, and end with the call's
//! status from the trailers, as tonic's `Streaming` would give them.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body::{Body as HttpBody, Frame};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Code, Status};
use transfer_proto::v1::{UploadChunksRequest, UploadChunksResponse, upload_chunks_request};

use crate::client::OwnerMetadata;

const PATH: &str = "/transfer.v1.TransferService/UploadChunks";
/// The compressed flag and the length before every message.
const PREFIX_LEN: usize = 5;
/// Most bytes one response may have: acks are a few dozen.
const MAX_RESPONSE: usize = 1 << 20;

/// Starts an `UploadChunks` call on `channel` sending `requests`, with the owner and
/// trace metadata `owner` adds to every call.
pub(crate) async fn upload_chunks(
    channel: Channel,
    mut owner: OwnerMetadata,
    requests: impl Stream<Item = UploadChunksRequest> + Send + 'static,
) -> Result<UploadResponses, Status> {
    let metadata = owner.call(tonic::Request::new(()))?.into_parts().0;
    let mut request = Request::new(Body::new(RequestBody {
        requests: Box::pin(requests),
        pieces: VecDeque::new(),
        ended: false,
    }));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = http::Uri::from_static(PATH);
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
    Ok(UploadResponses {
        body: response.into_body(),
        http_status,
        buffer: BytesMut::new(),
        ended,
    })
}

/// The requests as body pieces: each chunk's data a piece of its own.
struct RequestBody {
    requests: Pin<Box<dyn Stream<Item = UploadChunksRequest> + Send>>,
    pieces: VecDeque<Bytes>,
    ended: bool,
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(piece) = self.pieces.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        match ready!(self.requests.poll_next_unpin(cx)) {
            Some(request) => {
                let mut pieces = encode(request);
                let first = pieces.pop_front();
                self.pieces = pieces;
                Poll::Ready(first.map(|piece| Ok(Frame::data(piece))))
            }
            None => {
                self.ended = true;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.pieces.is_empty()
    }
}

/// One request as gRPC message pieces: a chunk as its fields, then its data uncopied;
/// anything else in one piece.
fn encode(request: UploadChunksRequest) -> VecDeque<Bytes> {
    let chunk = match request.message {
        Some(upload_chunks_request::Message::Chunk(chunk)) => chunk,
        message => {
            let request = UploadChunksRequest { message };
            let len = request.encoded_len();
            let mut framed = BytesMut::with_capacity(PREFIX_LEN + len);
            put_prefix(&mut framed, len);
            request.encode_raw(&mut framed);
            return VecDeque::from([framed.freeze()]);
        }
    };
    // `Chunk { index = 1, data = 2, crc32c = 3 }`, written index, CRC, then data. The
    // zero-valued fields are written too: that is still a valid encoding.
    let data_len = chunk.data.len();
    let chunk_len = key_len(1)
        + encoded_len_varint(chunk.index)
        + key_len(3)
        + 4
        + key_len(2)
        + encoded_len_varint(data_len as u64)
        + data_len;
    let message_len = key_len(2) + encoded_len_varint(chunk_len as u64) + chunk_len;
    let mut head = BytesMut::with_capacity(PREFIX_LEN + 32);
    put_prefix(&mut head, message_len);
    encode_key(2, WireType::LengthDelimited, &mut head);
    encode_varint(chunk_len as u64, &mut head);
    encode_key(1, WireType::Varint, &mut head);
    encode_varint(chunk.index, &mut head);
    encode_key(3, WireType::ThirtyTwoBit, &mut head);
    head.put_u32_le(chunk.crc32c);
    encode_key(2, WireType::LengthDelimited, &mut head);
    encode_varint(data_len as u64, &mut head);
    VecDeque::from([head.freeze(), chunk.data])
}

fn put_prefix(buffer: &mut BytesMut, len: usize) {
    buffer.put_u8(0);
    // A message is at most a chunk, which the server caps far below 4 GiB.
    buffer.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
}

/// The responses of an `UploadChunks` call; the last item is the call's error, if any.
pub(crate) struct UploadResponses {
    body: Body,
    http_status: StatusCode,
    buffer: BytesMut,
    ended: bool,
}

impl UploadResponses {
    /// The next whole message in the buffer, if there is one.
    fn next_message(&mut self) -> Result<Option<UploadChunksResponse>, Status> {
        if self.buffer.len() < PREFIX_LEN {
            return Ok(None);
        }
        if self.buffer[0] != 0 {
            return Err(Status::internal(format!(
                "protocol error: the server sent a message with compressed flag {}, and none was asked for",
                self.buffer[0]
            )));
        }
        let len = u32::from_be_bytes([
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
            self.buffer[4],
        ]) as usize;
        if len > MAX_RESPONSE {
            return Err(Status::out_of_range(format!(
                "the server sent a {len}-byte response; the limit is {MAX_RESPONSE} bytes"
            )));
        }
        if self.buffer.len() < PREFIX_LEN + len {
            return Ok(None);
        }
        self.buffer.advance(PREFIX_LEN);
        let message = self.buffer.split_to(len).freeze();
        UploadChunksResponse::decode(message)
            .map(Some)
            .map_err(|e| Status::internal(format!("the server sent an undecodable response: {e}")))
    }

    /// The call's end: its status from the trailers (or the HTTP status without them).
    fn finish(
        &mut self,
        trailers: Option<&HeaderMap>,
    ) -> Option<Result<UploadChunksResponse, Status>> {
        self.ended = true;
        if !self.buffer.is_empty() {
            return Some(Err(Status::internal(
                "the server ended the call inside a message",
            )));
        }
        let status = trailers.and_then(Status::from_header_map).unwrap_or_else(|| {
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

impl Stream for UploadResponses {
    type Item = Result<UploadChunksResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            match this.next_message() {
                Ok(Some(message)) => return Poll::Ready(Some(Ok(message))),
                Ok(None) => {}
                Err(status) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(status)));
                }
            }
            match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.buffer.extend_from_slice(&data),
                    Err(frame) => {
                        let trailers = frame.into_trailers().ok();
                        return Poll::Ready(this.finish(trailers.as_ref()));
                    }
                },
                Some(Err(status)) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(status)));
                }
                None => return Poll::Ready(this.finish(None)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use transfer_proto::v1::{Chunk, UploadStart};

    fn joined(pieces: VecDeque<Bytes>) -> Vec<u8> {
        pieces.into_iter().flat_map(|p| p.to_vec()).collect()
    }

    fn unframed(framed: &[u8]) -> UploadChunksRequest {
        let len = u32::from_be_bytes([framed[1], framed[2], framed[3], framed[4]]) as usize;
        assert_eq!(framed[0], 0);
        assert_eq!(framed.len(), PREFIX_LEN + len);
        UploadChunksRequest::decode(&framed[PREFIX_LEN..]).unwrap()
    }

    #[test]
    fn a_chunk_goes_out_as_its_fields_then_its_data_uncopied_and_decodes_the_same() {
        for (index, crc32c, len) in [(0, 0, 0), (7, 0xdead_beef, 1000), (u64::MAX, 1, 300_000)] {
            let data = Bytes::from((0..len).map(|i| i as u8).collect::<Vec<_>>());
            let request = UploadChunksRequest {
                message: Some(upload_chunks_request::Message::Chunk(Chunk {
                    index,
                    data: data.clone(),
                    crc32c,
                })),
            };
            let pieces = encode(request.clone());
            assert_eq!(pieces.len(), 2);
            assert_eq!(pieces[1].as_ptr(), data.as_ptr(), "the data is not copied");
            assert_eq!(unframed(&joined(pieces)), request);
        }
    }

    #[test]
    fn other_messages_go_out_whole() {
        let request = UploadChunksRequest {
            message: Some(upload_chunks_request::Message::Start(UploadStart {
                upload_id: "an id".into(),
            })),
        };
        let pieces = encode(request.clone());
        assert_eq!(pieces.len(), 1);
        assert_eq!(unframed(&joined(pieces)), request);
    }
}
