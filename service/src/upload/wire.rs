//! `UploadChunks` requests read straight off the HTTP/2 request body.
//!
//! tonic's decoder copies every body frame into a buffer of its own before prost decodes
//! it, and the stream then had to copy each chunk once more into a page-aligned buffer
//! for direct I/O. Here each gRPC message is gathered from the body frames once, into a
//! pooled buffer placed so that the chunk's data inside it starts on a page boundary:
//! one copy of every byte fewer. Only the gRPC framing (a compressed flag and a
//! big-endian length before each message) is read here; the messages are prost's.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures::Stream;
use http_body::Body;
use prost::Message;
use tonic::Status;
use transfer_proto::v1::UploadChunksRequest;

use crate::blob::aligned::AlignedBuilder;

/// The compressed flag and the length before every message.
const PREFIX_LEN: usize = 5;
/// Enough of a message's start to find where a chunk's data begins: the oneof's key and
/// length, the index, the CRC and the data's key and length, at their longest.
const HEAD_LEN: usize = 48;
/// Messages at least this long go into a pooled aligned buffer; shorter ones (`start`,
/// `digest`, small chunks) into a plain one.
const LARGE_MESSAGE: usize = 64 << 10;

/// What is wrong with the framing of a request stream.
#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    #[error(
        "protocol error: a message has the compressed flag set, but this server accepts no grpc-encoding: send messages uncompressed"
    )]
    Compressed,
    #[error("protocol error: invalid compressed flag {0} (valid flags are 0 and 1)")]
    BadFlag(u8),
    #[error("message too large: found {len} bytes, the limit is {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("the request stream ended inside a message ({missing} of its bytes missing)")]
    Truncated { missing: usize },
    #[error("message {index} of the stream is not a valid UploadChunksRequest: {reason}")]
    Malformed { index: u64, reason: String },
}

/// Splits a byte stream into gRPC messages, gathering each large one into an aligned
/// buffer.
pub struct MessageFramer {
    max_message_size: usize,
    state: State,
}

enum State {
    /// Reading the prefix of the next message.
    Prefix {
        bytes: [u8; PREFIX_LEN],
        filled: usize,
    },
    /// The first bytes of a message, until they say where it is best placed.
    Head { len: usize, head: Vec<u8> },
    /// The rest of a short message.
    Small { len: usize, bytes: Vec<u8> },
    /// The rest of a large message.
    Large(AlignedBuilder),
}

impl State {
    fn prefix() -> Self {
        State::Prefix {
            bytes: [0; PREFIX_LEN],
            filled: 0,
        }
    }
}

impl MessageFramer {
    pub fn new(max_message_size: usize) -> Self {
        Self {
            max_message_size,
            state: State::prefix(),
        }
    }

    /// Takes in `data` (one body frame), appending each message it completes to `done`.
    pub fn push(
        &mut self,
        mut data: Bytes,
        done: &mut VecDeque<Bytes>,
    ) -> Result<(), FramingError> {
        while !data.is_empty() {
            match &mut self.state {
                State::Prefix { bytes, filled } => {
                    let taken = (PREFIX_LEN - *filled).min(data.len());
                    bytes[*filled..*filled + taken].copy_from_slice(&data[..taken]);
                    *filled += taken;
                    data.advance(taken);
                    if *filled == PREFIX_LEN {
                        let prefix = *bytes;
                        let len = self.message_len(prefix)?;
                        self.state = State::Head {
                            len,
                            head: Vec::with_capacity(len.min(HEAD_LEN)),
                        };
                        self.advance(done);
                    }
                }
                State::Head { len, head } => {
                    let taken = ((*len).min(HEAD_LEN) - head.len()).min(data.len());
                    head.extend_from_slice(&data[..taken]);
                    data.advance(taken);
                    self.advance(done);
                }
                State::Small { len, bytes } => {
                    let taken = (*len - bytes.len()).min(data.len());
                    bytes.extend_from_slice(&data[..taken]);
                    data.advance(taken);
                    self.advance(done);
                }
                State::Large(builder) => {
                    let taken = builder.extend(&data);
                    data.advance(taken);
                    self.advance(done);
                }
            }
        }
        Ok(())
    }

    /// Bytes of a message begun and not yet complete: the stream must not end here.
    pub fn missing(&self) -> usize {
        match &self.state {
            State::Prefix { filled: 0, .. } => 0,
            State::Prefix { filled, .. } => PREFIX_LEN - filled,
            State::Head { len, head } => len - head.len(),
            State::Small { len, bytes } => len - bytes.len(),
            State::Large(builder) => builder.remaining(),
        }
    }

    fn message_len(&self, prefix: [u8; PREFIX_LEN]) -> Result<usize, FramingError> {
        match prefix[0] {
            0 => {}
            1 => return Err(FramingError::Compressed),
            flag => return Err(FramingError::BadFlag(flag)),
        }
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if len > self.max_message_size {
            return Err(FramingError::TooLarge {
                len,
                limit: self.max_message_size,
            });
        }
        Ok(len)
    }

    /// Moves on once the current state has all it waits for.
    fn advance(&mut self, done: &mut VecDeque<Bytes>) {
        let state = std::mem::replace(&mut self.state, State::prefix());
        self.state = match state {
            State::Head { len, head } if head.len() == len => {
                done.push_back(Bytes::from(head));
                State::prefix()
            }
            State::Head { len, head } if head.len() == HEAD_LEN && len < LARGE_MESSAGE => {
                let mut bytes = Vec::with_capacity(len);
                bytes.extend_from_slice(&head);
                State::Small { len, bytes }
            }
            State::Head { len, head } if head.len() == HEAD_LEN => {
                let mut builder = AlignedBuilder::new(len, chunk_data_offset(&head).unwrap_or(0));
                builder.extend(&head);
                State::Large(builder)
            }
            State::Small { len, bytes } if bytes.len() == len => {
                done.push_back(Bytes::from(bytes));
                State::prefix()
            }
            State::Large(builder) if builder.remaining() == 0 => {
                done.push_back(builder.freeze());
                State::prefix()
            }
            waiting => waiting,
        };
    }
}

/// Where the data of an `UploadChunksRequest { chunk }` starts, read from the message's
/// first bytes; `None` for any other message, or if they do not reach that far.
fn chunk_data_offset(head: &[u8]) -> Option<usize> {
    use prost::encoding::{WireType, decode_key, decode_varint};
    let mut rest = head;
    // The oneof's `chunk` field (2), length-delimited.
    let (2, WireType::LengthDelimited) = decode_key(&mut rest).ok()? else {
        return None;
    };
    decode_varint(&mut rest).ok()?;
    // The chunk's own fields, in whatever order the client wrote them.
    loop {
        match decode_key(&mut rest).ok()? {
            (2, WireType::LengthDelimited) => {
                decode_varint(&mut rest).ok()?;
                return Some(head.len() - rest.len());
            }
            (_, WireType::Varint) => {
                decode_varint(&mut rest).ok()?;
            }
            (_, WireType::ThirtyTwoBit) if rest.len() >= 4 => rest.advance(4),
            _ => return None,
        }
    }
}

/// The requests of one `UploadChunks` call, decoded from its HTTP/2 body.
pub struct UploadRequests<B> {
    body: B,
    framer: MessageFramer,
    done: VecDeque<Bytes>,
    decoded: u64,
    ended: bool,
}

impl<B> UploadRequests<B> {
    pub fn new(body: B, max_message_size: usize) -> Self {
        Self {
            body,
            framer: MessageFramer::new(max_message_size),
            done: VecDeque::new(),
            decoded: 0,
            ended: false,
        }
    }

    fn fail(&mut self, error: FramingError) -> Poll<Option<Result<UploadChunksRequest, Status>>> {
        self.ended = true;
        Poll::Ready(Some(Err(error.into())))
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
                    Err(error) => this.fail(FramingError::Malformed {
                        index,
                        reason: error.to_string(),
                    }),
                };
            }
            match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Trailers on a request carry nothing for us.
                    if let Ok(data) = frame.into_data()
                        && let Err(error) = this.framer.push(data, &mut this.done)
                    {
                        return this.fail(error);
                    }
                }
                Some(Err(status)) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(status)));
                }
                None => {
                    let missing = this.framer.missing();
                    if missing > 0 {
                        return this.fail(FramingError::Truncated { missing });
                    }
                    this.ended = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use transfer_proto::v1::{Chunk, FileDigest, UploadStart, upload_chunks_request};

    use crate::blob::aligned::is_aligned;

    fn framed(request: &UploadChunksRequest) -> Vec<u8> {
        let body = request.encode_to_vec();
        let mut framed = vec![0];
        framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
        framed.extend_from_slice(&body);
        framed
    }

    fn chunk(index: u64, len: usize) -> UploadChunksRequest {
        let data: Vec<u8> = (0..len as u64)
            .map(|i| i.wrapping_mul(31).wrapping_add(index) as u8)
            .collect();
        UploadChunksRequest {
            message: Some(upload_chunks_request::Message::Chunk(Chunk {
                index,
                crc32c: crc32c::crc32c(&data),
                data: data.into(),
            })),
        }
    }

    fn start() -> UploadChunksRequest {
        UploadChunksRequest {
            message: Some(upload_chunks_request::Message::Start(UploadStart {
                upload_id: "an id".into(),
            })),
        }
    }

    /// Feeds `stream` to a framer in pieces of `piece` bytes and decodes what it yields.
    fn frame_in_pieces(stream: &[u8], piece: usize) -> Vec<Bytes> {
        let mut framer = MessageFramer::new(16 << 20);
        let mut done = VecDeque::new();
        for part in stream.chunks(piece) {
            framer
                .push(Bytes::copy_from_slice(part), &mut done)
                .unwrap();
        }
        assert_eq!(framer.missing(), 0);
        done.into_iter().collect()
    }

    #[test]
    fn messages_come_out_whole_however_the_frames_cut_them() {
        let requests = [
            start(),
            chunk(0, 300_000),
            chunk(1, 10),
            UploadChunksRequest {
                message: Some(upload_chunks_request::Message::Digest(FileDigest {
                    md5: vec![7; 16].into(),
                })),
            },
            UploadChunksRequest { message: None },
            chunk(2, 70_000),
        ];
        let stream: Vec<u8> = requests.iter().flat_map(framed).collect();
        for piece in [1, 3, 5, 47, 48, 49, 4096, 65_536, stream.len()] {
            let messages = frame_in_pieces(&stream, piece);
            let decoded: Vec<_> = messages
                .into_iter()
                .map(|m| UploadChunksRequest::decode(m).unwrap())
                .collect();
            assert_eq!(decoded, requests, "pieces of {piece} bytes");
        }
    }

    #[test]
    fn a_large_chunks_data_starts_on_a_page_boundary() {
        for len in [LARGE_MESSAGE, 1 << 20, (4 << 20) + 1] {
            let stream = framed(&chunk(u64::MAX, len));
            let mut messages = frame_in_pieces(&stream, 16 << 10);
            let Some(upload_chunks_request::Message::Chunk(decoded)) =
                UploadChunksRequest::decode(messages.remove(0))
                    .unwrap()
                    .message
            else {
                panic!("a chunk was sent");
            };
            assert_eq!(decoded.data.len(), len);
            assert!(is_aligned(&decoded.data), "{len} bytes");
        }
    }

    #[test]
    fn the_data_offset_is_found_whatever_the_field_order() {
        // Data first, then the CRC, then the index: a valid encoding prost does not write.
        let data = vec![5u8; 100];
        let mut chunk = vec![0x12, 100];
        chunk.extend_from_slice(&data);
        chunk.extend_from_slice(&[0x1d, 1, 2, 3, 4, 0x08, 9]);
        let mut message = vec![0x12, chunk.len() as u8];
        message.extend_from_slice(&chunk);
        assert_eq!(chunk_data_offset(&message[..HEAD_LEN]), Some(4));
        // CRC and index first.
        let mut message = vec![
            0x12, 0, 0x1d, 1, 2, 3, 4, 0x08, 0x96, 0x01, 0x12, 0x80, 0x01,
        ];
        message.extend_from_slice(&[0; HEAD_LEN]);
        assert_eq!(chunk_data_offset(&message[..HEAD_LEN]), Some(13));
        // A `start` message has no chunk data.
        assert_eq!(chunk_data_offset(&start().encode_to_vec()), None);
    }

    #[test]
    fn a_compressed_or_oversized_message_is_refused_before_its_body_arrives() {
        let mut done = VecDeque::new();
        let mut framer = MessageFramer::new(1024);
        let error = framer
            .push(Bytes::from_static(&[1, 0, 0, 0, 4]), &mut done)
            .unwrap_err();
        assert!(matches!(error, FramingError::Compressed), "{error}");

        let mut framer = MessageFramer::new(1024);
        let error = framer
            .push(Bytes::from_static(&[0, 0, 0, 4, 1]), &mut done)
            .unwrap_err();
        assert!(
            matches!(
                error,
                FramingError::TooLarge {
                    len: 1025,
                    limit: 1024
                }
            ),
            "{error}"
        );

        let mut framer = MessageFramer::new(1024);
        let error = framer
            .push(Bytes::from_static(&[2, 0, 0, 0, 0]), &mut done)
            .unwrap_err();
        assert!(matches!(error, FramingError::BadFlag(2)), "{error}");
        assert!(done.is_empty());
    }

    #[test]
    fn a_stream_cut_inside_a_message_says_how_much_is_missing() {
        let stream = framed(&chunk(0, 100_000));
        let mut framer = MessageFramer::new(1 << 20);
        let mut done = VecDeque::new();
        framer
            .push(Bytes::copy_from_slice(&stream[..3]), &mut done)
            .unwrap();
        assert_eq!(framer.missing(), 2);
        framer
            .push(Bytes::copy_from_slice(&stream[3..60_000]), &mut done)
            .unwrap();
        assert_eq!(framer.missing(), stream.len() - 60_000);
        assert!(done.is_empty());
    }
}
