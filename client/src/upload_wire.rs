//! The `UploadChunks` call made below tonic's codec.
//!
//! tonic's encoder copies every message into a buffer of its own before it is sent. A
//! chunk's bytes are most of what an upload moves, so here each chunk message goes out
//! as two HTTP/2 body pieces: a few bytes of gRPC prefix and protobuf fields, then the
//! chunk's data as it was read, with no copy (the HTTP/2 layer writes large pieces from
//! where they lie). The data field comes last in the message, which protobuf allows in
//! any order. The call itself and its responses are [`crate::grpc_call`]'s.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http_body::{Body as HttpBody, Frame};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use tonic::Status;
use tonic::body::Body;
use tonic::transport::Channel;
use transfer_proto::v1::{UploadChunksRequest, UploadChunksResponse, upload_chunks_request};

use crate::client::OwnerMetadata;
use crate::grpc_call::{ResponseStream, call};

const PATH: &str = "/transfer.v1.TransferService/UploadChunks";
/// The compressed flag and the length before every message.
const PREFIX_LEN: usize = 5;

/// The responses of an `UploadChunks` call.
pub(crate) type UploadResponses = ResponseStream<UploadChunksResponse>;

/// Starts an `UploadChunks` call on `channel` sending `requests`, with the owner and
/// trace metadata `owner` adds to every call.
pub(crate) async fn upload_chunks(
    channel: Channel,
    owner: OwnerMetadata,
    requests: impl Stream<Item = UploadChunksRequest> + Send + 'static,
) -> Result<UploadResponses, Status> {
    let body = Body::new(RequestBody {
        requests: Box::pin(requests),
        pieces: VecDeque::new(),
        ended: false,
    });
    call(channel, owner, PATH, body).await
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

pub(crate) fn put_prefix(buffer: &mut BytesMut, len: usize) {
    buffer.put_u8(0);
    // A message is at most a chunk, which the server caps far below 4 GiB.
    buffer.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
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
