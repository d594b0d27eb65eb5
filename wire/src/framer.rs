//! gRPC messages read straight off HTTP/2 body frames.
//!
//! tonic's decoder copies every body frame into a buffer of its own before prost decodes
//! it, and a chunk then had to be copied once more into a page-aligned buffer for direct
//! I/O. [`MessageFramer`] gathers each message once, straight from the frames, into a
//! pooled buffer placed so that the bulk data inside it starts on a page boundary; prost
//! then decodes it without copying (`bytes` fields are slices of that buffer). Only the
//! framing is read here: a compressed flag and a big-endian length before each message.
//!
//! The bulk data is found where both streams that carry it put it: field 2 of the
//! message's oneof (`UploadChunksRequest.chunk`, `DownloadResponse.piece`), whose own
//! field 2 is the bytes (`Chunk.data`, `DataPiece.data`).

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Buf, Bytes};

use crate::aligned::{AlignedBuilder, BufferPool};
use crate::memory::MemoryHold;

/// The compressed flag and the length before every message.
const PREFIX_LEN: usize = 5;
/// Enough of a message's start to find where its bulk data begins: the oneof's key and
/// length, an index or offset, a CRC and the data's key and length, at their longest.
const HEAD_LEN: usize = 48;
/// Messages at least this long go into a pooled aligned buffer; shorter ones (`start`,
/// `digest`, file metadata, small chunks) into a plain one. A framer that asks for
/// memory asks for these.
pub const LARGE_MESSAGE: usize = 64 << 10;

/// What is wrong with the framing of a message stream.
#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    #[error(
        "protocol error: a message has the compressed flag set, but no grpc-encoding is in use: messages must be sent uncompressed"
    )]
    Compressed,
    #[error("protocol error: invalid compressed flag {0} (valid flags are 0 and 1)")]
    BadFlag(u8),
    #[error("message too large: found {len} bytes, the limit is {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("the stream ended inside a message ({missing} of its bytes missing)")]
    Truncated { missing: usize },
}

/// Splits a byte stream into gRPC messages, gathering each large one into an aligned
/// buffer.
pub struct MessageFramer {
    max_message_size: usize,
    /// A lower limit for the first message only, if set.
    first_message_max: Option<usize>,
    /// Stop before gathering a large message until [`Self::grant`] gives it memory.
    asks_for_memory: bool,
    state: State,
    /// Where large messages are gathered.
    buffers: Arc<BufferPool>,
}

enum State {
    /// Reading the prefix of the next message.
    Prefix {
        bytes: [u8; PREFIX_LEN],
        filled: usize,
    },
    /// A large message's length is known; its memory is not granted yet.
    AwaitingMemory { len: usize },
    /// The first bytes of a message, until they say where it is best placed.
    Head {
        len: usize,
        head: Vec<u8>,
        hold: Option<MemoryHold>,
    },
    /// The rest of a short message.
    Small { len: usize, bytes: Vec<u8> },
    /// The rest of a large message, and the memory granted to it (given back when the
    /// message is whole: whoever keeps it then accounts for it).
    Large {
        builder: AlignedBuilder,
        _hold: Option<MemoryHold>,
    },
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
    /// Messages of at most `max_message_size` bytes; large ones gathered in buffers of
    /// `buffers`.
    pub fn new(max_message_size: usize, buffers: Arc<BufferPool>) -> Self {
        Self {
            max_message_size,
            first_message_max: None,
            asks_for_memory: false,
            state: State::prefix(),
            buffers,
        }
    }

    /// Makes the framer stop before each large message until [`Self::grant`] is called.
    pub fn ask_for_memory(&mut self) {
        self.asks_for_memory = true;
    }

    /// A lower limit for the first message (call before any bytes are pushed).
    pub fn limit_first_message(&mut self, max: usize) {
        self.first_message_max = Some(max.min(self.max_message_size));
    }

    /// The length of the large message waiting for memory, if one is.
    pub fn awaiting_memory(&self) -> Option<usize> {
        match self.state {
            State::AwaitingMemory { len } => Some(len),
            _ => None,
        }
    }

    /// Lets the message waiting for memory be gathered, holding `hold` until it is whole.
    pub fn grant(&mut self, hold: MemoryHold) {
        if let State::AwaitingMemory { len } = self.state {
            self.state = State::Head {
                len,
                head: Vec::with_capacity(HEAD_LEN),
                hold: Some(hold),
            };
        }
    }

    /// Takes in `data` (one body frame), appending each message it completes to `done`.
    /// Stops early where a message waits for memory, returning the bytes not taken
    /// (empty once all are). After an error the stream cannot be read on.
    pub fn push(
        &mut self,
        mut data: Bytes,
        done: &mut VecDeque<Bytes>,
    ) -> Result<Bytes, FramingError> {
        while !data.is_empty() {
            match &mut self.state {
                State::AwaitingMemory { .. } => return Ok(data),
                State::Prefix { bytes, filled } => {
                    let taken = (PREFIX_LEN - *filled).min(data.len());
                    bytes[*filled..*filled + taken].copy_from_slice(&data[..taken]);
                    *filled += taken;
                    data.advance(taken);
                    if *filled == PREFIX_LEN {
                        let prefix = *bytes;
                        let len = self.message_len(prefix)?;
                        self.state = if self.asks_for_memory && len >= LARGE_MESSAGE {
                            State::AwaitingMemory { len }
                        } else {
                            State::Head {
                                len,
                                head: Vec::with_capacity(len.min(HEAD_LEN)),
                                hold: None,
                            }
                        };
                        self.advance(done);
                    }
                }
                State::Head { len, head, .. } => {
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
                State::Large { builder, .. } => {
                    let taken = builder.extend(&data);
                    data.advance(taken);
                    self.advance(done);
                }
            }
        }
        Ok(data)
    }

    /// Bytes of a message begun and not yet complete: the stream must not end here.
    pub fn missing(&self) -> usize {
        match &self.state {
            State::Prefix { filled: 0, .. } => 0,
            State::Prefix { filled, .. } => PREFIX_LEN - filled,
            State::AwaitingMemory { len } => *len,
            State::Head { len, head, .. } => len - head.len(),
            State::Small { len, bytes } => len - bytes.len(),
            State::Large { builder, .. } => builder.remaining(),
        }
    }

    fn message_len(&mut self, prefix: [u8; PREFIX_LEN]) -> Result<usize, FramingError> {
        let limit = self
            .first_message_max
            .take()
            .unwrap_or(self.max_message_size);
        match prefix[0] {
            0 => {}
            1 => return Err(FramingError::Compressed),
            flag => return Err(FramingError::BadFlag(flag)),
        }
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if len > limit {
            return Err(FramingError::TooLarge { len, limit });
        }
        Ok(len)
    }

    /// Moves on once the current state has all it waits for.
    fn advance(&mut self, done: &mut VecDeque<Bytes>) {
        let state = std::mem::replace(&mut self.state, State::prefix());
        self.state = match state {
            State::Head { len, head, .. } if head.len() == len => {
                done.push_back(Bytes::from(head));
                State::prefix()
            }
            State::Head { len, head, .. } if head.len() == HEAD_LEN && len < LARGE_MESSAGE => {
                let mut bytes = Vec::with_capacity(len);
                bytes.extend_from_slice(&head);
                State::Small { len, bytes }
            }
            State::Head { len, head, hold } if head.len() == HEAD_LEN => {
                let mut builder =
                    AlignedBuilder::new(&self.buffers, len, bulk_data_offset(&head).unwrap_or(0));
                builder.extend(&head);
                State::Large {
                    builder,
                    _hold: hold,
                }
            }
            State::Small { len, bytes } if bytes.len() == len => {
                done.push_back(Bytes::from(bytes));
                State::prefix()
            }
            State::Large { builder, .. } if builder.remaining() == 0 => {
                done.push_back(builder.freeze());
                State::prefix()
            }
            waiting => waiting,
        };
    }
}

/// Where the bulk data of a message starts (field 2 within field 2), read from its first
/// bytes; `None` for any other message, or if they do not reach that far.
fn bulk_data_offset(head: &[u8]) -> Option<usize> {
    use prost::encoding::{WireType, decode_key, decode_varint};
    let mut rest = head;
    // The oneof's `chunk` or `piece` field (2), length-delimited.
    let (2, WireType::LengthDelimited) = decode_key(&mut rest).ok()? else {
        return None;
    };
    decode_varint(&mut rest).ok()?;
    // Its own fields, in whatever order the sender wrote them.
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

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use transfer_proto::v1::{
        Chunk, DataPiece, DownloadResponse, FileDigest, UploadChunksRequest, UploadStart,
        download_response, upload_chunks_request,
    };

    use crate::aligned::{DEFAULT_POOL_BYTES, is_aligned};

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
        let mut framer = MessageFramer::new(16 << 20, BufferPool::new(DEFAULT_POOL_BYTES));
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
    fn a_download_pieces_data_starts_on_a_page_boundary_too() {
        let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
        let response = DownloadResponse {
            message: Some(download_response::Message::Piece(DataPiece {
                offset: 12_345_678_901,
                crc32c: 7,
                data: data.clone().into(),
            })),
        };
        let body = response.encode_to_vec();
        let mut stream = vec![0];
        stream.extend_from_slice(&(body.len() as u32).to_be_bytes());
        stream.extend_from_slice(&body);
        let mut messages = frame_in_pieces(&stream, 16 << 10);
        let Some(download_response::Message::Piece(piece)) =
            DownloadResponse::decode(messages.remove(0))
                .unwrap()
                .message
        else {
            panic!("a piece was sent");
        };
        assert_eq!(piece.data, data);
        assert!(is_aligned(&piece.data));
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
        assert_eq!(bulk_data_offset(&message[..HEAD_LEN]), Some(4));
        // CRC and index first.
        let mut message = vec![
            0x12, 0, 0x1d, 1, 2, 3, 4, 0x08, 0x96, 0x01, 0x12, 0x80, 0x01,
        ];
        message.extend_from_slice(&[0; HEAD_LEN]);
        assert_eq!(bulk_data_offset(&message[..HEAD_LEN]), Some(13));
        // A `start` message has no chunk data.
        assert_eq!(bulk_data_offset(&start().encode_to_vec()), None);
    }

    #[test]
    fn a_compressed_or_oversized_message_is_refused_before_its_body_arrives() {
        let mut done = VecDeque::new();
        let mut framer = MessageFramer::new(1024, BufferPool::new(DEFAULT_POOL_BYTES));
        let error = framer
            .push(Bytes::from_static(&[1, 0, 0, 0, 4]), &mut done)
            .unwrap_err();
        assert!(matches!(error, FramingError::Compressed), "{error}");

        let mut framer = MessageFramer::new(1024, BufferPool::new(DEFAULT_POOL_BYTES));
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

        let mut framer = MessageFramer::new(1024, BufferPool::new(DEFAULT_POOL_BYTES));
        let error = framer
            .push(Bytes::from_static(&[2, 0, 0, 0, 0]), &mut done)
            .unwrap_err();
        assert!(matches!(error, FramingError::BadFlag(2)), "{error}");
        assert!(done.is_empty());
    }

    #[test]
    fn a_stream_cut_inside_a_message_says_how_much_is_missing() {
        let stream = framed(&chunk(0, 100_000));
        let mut framer = MessageFramer::new(1 << 20, BufferPool::new(DEFAULT_POOL_BYTES));
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

    #[test]
    fn a_lower_limit_for_the_first_message_holds_for_it_alone() {
        let stream: Vec<u8> = [start(), chunk(0, 5000)].iter().flat_map(framed).collect();
        let mut framer = MessageFramer::new(1 << 20, BufferPool::new(DEFAULT_POOL_BYTES));
        framer.limit_first_message(100);
        let mut done = VecDeque::new();
        framer.push(Bytes::from(stream), &mut done).unwrap();
        assert_eq!(done.len(), 2, "a small first message, then a large one");

        let mut framer = MessageFramer::new(1 << 20, BufferPool::new(DEFAULT_POOL_BYTES));
        framer.limit_first_message(100);
        let refused = framer
            .push(Bytes::from(framed(&chunk(0, 5000))), &mut done)
            .unwrap_err();
        assert!(
            matches!(refused, FramingError::TooLarge { limit: 100, .. }),
            "{refused}"
        );
    }
}
