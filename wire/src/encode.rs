//! gRPC messages written as HTTP/2 body pieces, bulk data uncopied.
//!
//! tonic's encoder copies every message into a buffer of its own. A message carrying
//! bulk data (the shape [`crate::framer`] reads: field 2 of the oneof, whose fields are
//! 1 = a `uint64` index or offset, 2 = the bytes, 3 = a `fixed32` CRC32C) goes out here
//! as two pieces instead: the prefix and the small fields, then the data as it lies
//! (HTTP/2 writes large pieces from where they are). The data field comes last, which
//! protobuf allows in any order.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http::HeaderMap;
use http_body::Frame;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

/// The compressed flag and the length before every message.
pub const PREFIX_LEN: usize = 5;

/// `message` with its gRPC prefix, in one piece.
pub fn framed(message: &impl Message) -> Bytes {
    let len = message.encoded_len();
    let mut framed = BytesMut::with_capacity(PREFIX_LEN + len);
    put_prefix(&mut framed, len);
    message.encode_raw(&mut framed);
    framed.freeze()
}

/// A bulk message (`{ 2: { 1: number, 2: data, 3: crc32c } }`) with its gRPC prefix,
/// as its head and its data, uncopied.
pub fn framed_bulk(number: u64, crc32c: u32, data: Bytes) -> [Bytes; 2] {
    let data_len = data.len();
    let inner_len = key_len(1)
        + encoded_len_varint(number)
        + key_len(3)
        + 4
        + key_len(2)
        + encoded_len_varint(data_len as u64)
        + data_len;
    let message_len = key_len(2) + encoded_len_varint(inner_len as u64) + inner_len;
    let mut head = BytesMut::with_capacity(PREFIX_LEN + 32);
    put_prefix(&mut head, message_len);
    encode_key(2, WireType::LengthDelimited, &mut head);
    encode_varint(inner_len as u64, &mut head);
    // Zero-valued fields are written too: that is still a valid encoding.
    encode_key(1, WireType::Varint, &mut head);
    encode_varint(number, &mut head);
    encode_key(3, WireType::ThirtyTwoBit, &mut head);
    head.put_u32_le(crc32c);
    encode_key(2, WireType::LengthDelimited, &mut head);
    encode_varint(data_len as u64, &mut head);
    [head.freeze(), data]
}

/// What a [`MessagesBody`] sends next.
pub enum Outgoing {
    /// One message, as the pieces [`framed`] or [`framed_bulk`] made of it.
    Message(VecDeque<Bytes>),
    /// Trailers, which end the body.
    Trailers(HeaderMap),
}

impl From<Bytes> for Outgoing {
    fn from(framed: Bytes) -> Self {
        Outgoing::Message(VecDeque::from([framed]))
    }
}

impl From<[Bytes; 2]> for Outgoing {
    fn from(pieces: [Bytes; 2]) -> Self {
        Outgoing::Message(VecDeque::from(pieces))
    }
}

/// A request or response body that sends `items` piece by piece, each piece an HTTP/2
/// body frame as it lies; when `items` ends, `last` (trailers, or nothing) ends it.
pub struct MessagesBody {
    items: Pin<Box<dyn Stream<Item = Outgoing> + Send>>,
    /// Pieces of the current message not yet sent.
    pieces: VecDeque<Bytes>,
    last: Option<HeaderMap>,
    ended: bool,
}

impl MessagesBody {
    pub fn new(
        items: impl Stream<Item = Outgoing> + Send + 'static,
        last: Option<HeaderMap>,
    ) -> Self {
        Self {
            items: Box::pin(items),
            pieces: VecDeque::new(),
            last,
            ended: false,
        }
    }
}

impl http_body::Body for MessagesBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        loop {
            if let Some(piece) = self.pieces.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(piece))));
            }
            if self.ended {
                return Poll::Ready(None);
            }
            match ready!(self.items.poll_next_unpin(cx)) {
                Some(Outgoing::Message(pieces)) => self.pieces = pieces,
                Some(Outgoing::Trailers(trailers)) => {
                    self.ended = true;
                    self.last = None;
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                None => {
                    self.ended = true;
                    return Poll::Ready(self.last.take().map(|t| Ok(Frame::trailers(t))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.pieces.is_empty() && self.last.is_none()
    }
}

fn put_prefix(buffer: &mut BytesMut, len: usize) {
    buffer.put_u8(0);
    // Messages here are at most a chunk, which servers cap far below 4 GiB.
    buffer.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
}

#[cfg(test)]
mod tests {
    use super::*;
    use transfer_proto::v1::{
        Chunk, DataPiece, DownloadResponse, UploadChunksRequest, download_response,
        upload_chunks_request,
    };

    fn message_of(pieces: &[Bytes]) -> Vec<u8> {
        let framed: Vec<u8> = pieces.iter().flat_map(|p| p.to_vec()).collect();
        let len = u32::from_be_bytes([framed[1], framed[2], framed[3], framed[4]]) as usize;
        assert_eq!(framed[0], 0);
        assert_eq!(framed.len(), PREFIX_LEN + len);
        framed[PREFIX_LEN..].to_vec()
    }

    #[test]
    fn a_bulk_message_decodes_as_the_chunk_or_piece_it_stands_for() {
        for (number, crc32c, len) in [(0, 0, 0), (7, 0xdead_beef, 1000), (u64::MAX, 1, 300_000)] {
            let data = Bytes::from((0..len).map(|i| i as u8).collect::<Vec<_>>());
            let pieces = framed_bulk(number, crc32c, data.clone());
            assert_eq!(pieces[1].as_ptr(), data.as_ptr(), "the data is not copied");
            let bytes = message_of(&pieces);
            let chunk = UploadChunksRequest::decode(&bytes[..]).unwrap();
            assert_eq!(
                chunk.message,
                Some(upload_chunks_request::Message::Chunk(Chunk {
                    index: number,
                    data: data.clone(),
                    crc32c
                }))
            );
            let piece = DownloadResponse::decode(&bytes[..]).unwrap();
            assert_eq!(
                piece.message,
                Some(download_response::Message::Piece(DataPiece {
                    offset: number,
                    data,
                    crc32c
                }))
            );
        }
    }

    fn frames_of(body: MessagesBody) -> Vec<String> {
        use http_body::Body as _;
        let mut body = std::pin::pin!(body);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut seen = Vec::new();
        while let Poll::Ready(Some(Ok(frame))) = body.as_mut().poll_frame(&mut cx) {
            seen.push(match frame.into_data() {
                Ok(data) => format!("{data:?}"),
                Err(frame) => format!("trailers {}", frame.into_trailers().map_or(0, |t| t.len())),
            });
        }
        assert!(body.is_end_stream());
        seen
    }

    #[test]
    fn a_body_sends_every_piece_then_its_trailers() {
        let mut last = HeaderMap::new();
        last.insert("grpc-status", "0".parse().unwrap());
        let items = futures::stream::iter([
            Outgoing::from(Bytes::from_static(b"a")),
            Outgoing::from([Bytes::from_static(b"b"), Bytes::from_static(b"c")]),
        ]);
        assert_eq!(
            frames_of(MessagesBody::new(items, Some(last.clone()))),
            ["b\"a\"", "b\"b\"", "b\"c\"", "trailers 1"]
        );
        // Trailers among the items end the body there; without `last` it just ends.
        let items = futures::stream::iter([
            Outgoing::from(Bytes::from_static(b"a")),
            Outgoing::Trailers(last.clone()),
            Outgoing::from(Bytes::from_static(b"never")),
        ]);
        assert_eq!(
            frames_of(MessagesBody::new(items, Some(last))),
            ["b\"a\"", "trailers 1"]
        );
        let items = futures::stream::iter([Outgoing::from(Bytes::from_static(b"a"))]);
        assert_eq!(frames_of(MessagesBody::new(items, None)), ["b\"a\""]);
    }

    #[test]
    fn any_message_goes_out_whole_with_its_prefix() {
        let message = DataPiece {
            offset: 3,
            data: Bytes::from_static(b"abc"),
            crc32c: 9,
        };
        let bytes = message_of(&[framed(&message)]);
        assert_eq!(DataPiece::decode(&bytes[..]).unwrap(), message);
    }
}
