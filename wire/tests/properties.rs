//! Property tests of the message framer and the bulk encoder, on stable Rust.
//!
//! Byte streams (random, framed garbage, and real messages framed by this crate's
//! encoders) are cut at random points and read through a [`FramedBody`]; what comes out
//! is checked against a plain reference reader and against prost.
//!
//! Each property runs 64 cases by default, so `cargo test` stays quick; set
//! `PROPTEST_CASES` for a long run (see docs/fuzzing.md).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame};
use proptest::prelude::*;
use proptest::sample::Index;
use prost::Message;
use prost_types::Timestamp;
use transfer_proto::v1::{
    Chunk, DataPiece, DownloadResponse, FileDigest, FileInfo, UploadChunksRequest, UploadStart,
    download_response, upload_chunks_request,
};
use transfer_wire::aligned::{BufferPool, DEFAULT_POOL_BYTES, is_aligned};
use transfer_wire::body::{BodyEvent, FramedBody};
use transfer_wire::encode::{MessagesBody, Outgoing, PREFIX_LEN, framed, framed_bulk};
use transfer_wire::framer::FramingError;

/// The limit the service and the client read with.
const MAX_MESSAGE: usize = 16 << 20;
/// Where the framer switches to page-aligned buffers; messages around and past it are
/// generated now and then.
const LARGE_MESSAGE: usize = 64 << 10;

/// 64 cases, or `PROPTEST_CASES` when it is set.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

// ---- Reading a body --------------------------------------------------------------

/// A body of ready data frames, then trailers if any.
struct Pieces {
    pieces: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for Pieces {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(piece) = self.pieces.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}

/// How a body of messages ended.
#[derive(Debug, PartialEq)]
enum Ending {
    Trailers,
    Broken(String),
    End { missing: usize },
}

/// What a body read: its messages, how it ended, and the bytes of a begun message
/// still missing at that point.
#[derive(Debug, PartialEq)]
struct Read {
    messages: Vec<Bytes>,
    ending: Ending,
    missing: usize,
}

/// Reads `pieces` (then trailers, if `trailers`) through a [`FramedBody`].
fn read_body(pieces: Vec<Bytes>, trailers: bool, max_message_size: usize) -> Read {
    let body = Pieces {
        pieces: pieces.into(),
        trailers: trailers.then(HeaderMap::new),
    };
    let buffers = BufferPool::new(DEFAULT_POOL_BYTES);
    let mut body = FramedBody::new(body, max_message_size, buffers);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut messages = Vec::new();
    loop {
        let Poll::Ready(event) = body.poll_event(&mut cx) else {
            panic!("a body of ready frames is never pending");
        };
        let ending = match event {
            BodyEvent::Message(message) => {
                messages.push(message);
                continue;
            }
            BodyEvent::Trailers(_) => Ending::Trailers,
            BodyEvent::Broken(error) => Ending::Broken(error.to_string()),
            BodyEvent::Failed(never) => match never {},
            BodyEvent::Refused(refused) => panic!("no memory is asked for here: {refused}"),
            BodyEvent::End { missing } => {
                assert_eq!(missing, body.missing());
                Ending::End { missing }
            }
        };
        return Read {
            messages,
            missing: if matches!(ending, Ending::Broken(_)) {
                0
            } else {
                body.missing()
            },
            ending,
        };
    }
}

/// What the framer must make of `stream`, read the plain way: whole messages up to
/// the first bad prefix, or up to where the stream stops.
fn reference_read(stream: &[u8], trailers: bool, max_message_size: usize) -> Read {
    let mut messages = Vec::new();
    let mut rest = stream;
    let (ending, missing) = loop {
        if rest.len() < PREFIX_LEN {
            // Only the prefix's own bytes are known to be missing.
            let missing = if rest.is_empty() {
                0
            } else {
                PREFIX_LEN - rest.len()
            };
            break (None, missing);
        }
        let error = match rest[0] {
            0 => None,
            1 => Some(FramingError::Compressed),
            flag => Some(FramingError::BadFlag(flag)),
        };
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let error = error.or((len > max_message_size).then_some(FramingError::TooLarge {
            len,
            limit: max_message_size,
        }));
        if let Some(error) = error {
            break (Some(Ending::Broken(error.to_string())), 0);
        }
        let body = &rest[PREFIX_LEN..];
        if body.len() < len {
            break (None, len - body.len());
        }
        messages.push(Bytes::copy_from_slice(&body[..len]));
        rest = &body[len..];
    };
    let ending = ending.unwrap_or(if trailers {
        Ending::Trailers
    } else {
        Ending::End { missing }
    });
    Read {
        messages,
        ending,
        missing,
    }
}

// ---- Cutting streams -------------------------------------------------------------

/// Where a stream is cut into body frames.
#[derive(Debug, Clone)]
enum Cuts {
    /// At these points (repeats make empty frames).
    At(Vec<Index>),
    /// Every so many bytes.
    Every(usize),
}

fn cuts() -> impl Strategy<Value = Cuts> {
    prop_oneof![
        3 => prop::collection::vec(any::<Index>(), 0..48).prop_map(Cuts::At),
        1 => (1..=64usize).prop_map(Cuts::Every),
        1 => (4000..=20_000usize).prop_map(Cuts::Every),
    ]
}

fn cut(stream: &Bytes, cuts: &Cuts) -> Vec<Bytes> {
    match cuts {
        Cuts::At(at) => {
            let mut points: Vec<usize> = at.iter().map(|i| i.index(stream.len() + 1)).collect();
            points.sort_unstable();
            let mut pieces = Vec::with_capacity(points.len() + 1);
            let mut start = 0;
            for point in points {
                pieces.push(stream.slice(start..point));
                start = point;
            }
            pieces.push(stream.slice(start..));
            pieces
        }
        Cuts::Every(n) => (0..stream.len())
            .step_by(*n)
            .map(|start| stream.slice(start..(start + n).min(stream.len())))
            .collect(),
    }
}

// ---- Messages --------------------------------------------------------------------

/// Deterministic bytes from a seed: random-looking bulk data whose length shrinks.
fn bytes_from(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Bulk data: mostly short, now and then around or past [`LARGE_MESSAGE`].
fn data() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        6 => prop::collection::vec(any::<u8>(), 0..200).prop_map(Bytes::from),
        1 => (LARGE_MESSAGE - 64..=LARGE_MESSAGE + 64, any::<u64>())
            .prop_map(|(len, seed)| Bytes::from(bytes_from(len, seed))),
        1 => (0..=300_000usize, any::<u64>())
            .prop_map(|(len, seed)| Bytes::from(bytes_from(len, seed))),
    ]
}

fn small_bytes() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from)
}

fn timestamp() -> impl Strategy<Value = Option<Timestamp>> {
    proptest::option::of(
        (any::<i64>(), any::<i32>()).prop_map(|(seconds, nanos)| Timestamp { seconds, nanos }),
    )
}

fn upload_request() -> impl Strategy<Value = UploadChunksRequest> {
    use upload_chunks_request::Message;
    prop_oneof![
        1 => Just(None),
        1 => any::<String>().prop_map(|upload_id| Some(Message::Start(UploadStart { upload_id }))),
        6 => (any::<u64>(), data(), any::<u32>())
            .prop_map(|(index, data, crc32c)| Some(Message::Chunk(Chunk { index, data, crc32c }))),
        1 => small_bytes().prop_map(|md5| Some(Message::Digest(FileDigest { md5 }))),
    ]
    .prop_map(|message| UploadChunksRequest { message })
}

fn download_response() -> impl Strategy<Value = DownloadResponse> {
    use download_response::Message;
    let file = (
        (
            any::<String>(),
            any::<String>(),
            any::<u64>(),
            small_bytes(),
        ),
        (any::<i32>(), timestamp(), timestamp(), any::<String>()),
    )
        .prop_map(
            |((file_id, name, size, md5), (state, created_at, completed_at, failure))| FileInfo {
                file_id,
                name,
                size,
                md5,
                state,
                created_at,
                completed_at,
                failure,
            },
        );
    prop_oneof![
        1 => Just(None),
        1 => file.prop_map(|file| Some(Message::File(file))),
        6 => (any::<u64>(), data(), any::<u32>())
            .prop_map(|(offset, data, crc32c)| Some(Message::Piece(DataPiece { offset, data, crc32c }))),
    ]
    .prop_map(|message| DownloadResponse { message })
}

/// How a message goes out: as the service and the client send it, a chunk or a piece
/// through the bulk encoder (when `bulk`), anything else through [`framed`].
fn outgoing_upload(request: &UploadChunksRequest, bulk: bool) -> Outgoing {
    match &request.message {
        Some(upload_chunks_request::Message::Chunk(chunk)) if bulk => {
            framed_bulk(chunk.index, chunk.crc32c, chunk.data.clone()).into()
        }
        _ => framed(request).into(),
    }
}

fn outgoing_download(response: &DownloadResponse, bulk: bool) -> Outgoing {
    match &response.message {
        Some(download_response::Message::Piece(piece)) if bulk => {
            framed_bulk(piece.offset, piece.crc32c, piece.data.clone()).into()
        }
        _ => framed(response).into(),
    }
}

fn chunk_data(request: &UploadChunksRequest) -> Option<&Bytes> {
    match &request.message {
        Some(upload_chunks_request::Message::Chunk(chunk)) => Some(&chunk.data),
        _ => None,
    }
}

fn piece_data(response: &DownloadResponse) -> Option<&Bytes> {
    match &response.message {
        Some(download_response::Message::Piece(piece)) => Some(&piece.data),
        _ => None,
    }
}

/// The body frames a [`MessagesBody`] sends for `items`: (the stream they make, each
/// message's framed bytes behind its prefix).
fn send(items: Vec<Outgoing>) -> (Bytes, Vec<Bytes>) {
    let mut bodies = Vec::new();
    for item in &items {
        let Outgoing::Message(pieces) = item else {
            unreachable!("only messages are sent here");
        };
        let message: Vec<u8> = pieces.iter().flatten().copied().collect();
        let len = u32::from_be_bytes(message[1..PREFIX_LEN].try_into().unwrap()) as usize;
        assert_eq!(message[0], 0, "uncompressed");
        assert_eq!(
            len,
            message.len() - PREFIX_LEN,
            "the prefix gives the length"
        );
        bodies.push(Bytes::copy_from_slice(&message[PREFIX_LEN..]));
    }
    let mut body = std::pin::pin!(MessagesBody::new(futures::stream::iter(items), None));
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut stream = Vec::new();
    while let Poll::Ready(Some(Ok(frame))) = body.as_mut().poll_frame(&mut cx) {
        stream.extend_from_slice(&frame.into_data().expect("no trailers were given"));
    }
    assert!(body.is_end_stream());
    (stream.into(), bodies)
}

/// `messages` framed by this crate's encoders, read back through a framed body cut at
/// `cuts`: each comes out as the bytes that were framed, and decodes to itself.
fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(
    messages: &[M],
    outgoing: impl Fn(&M, bool) -> Outgoing,
    bulk_data: fn(&M) -> Option<&Bytes>,
    bulk: &[bool],
    cuts: &Cuts,
    trailers: bool,
) -> Result<(), TestCaseError> {
    let items = messages
        .iter()
        .zip(bulk.iter().cycle())
        .map(|(message, &bulk)| outgoing(message, bulk))
        .collect();
    let (stream, bodies) = send(items);
    let read = read_body(cut(&stream, cuts), trailers, MAX_MESSAGE);
    prop_assert_eq!(&read, &reference_read(&stream, trailers, MAX_MESSAGE));
    let expected_ending = if trailers {
        Ending::Trailers
    } else {
        Ending::End { missing: 0 }
    };
    prop_assert_eq!(read.ending, expected_ending);
    prop_assert_eq!(read.missing, 0);
    prop_assert_eq!(&read.messages, &bodies, "byte for byte what was framed");
    for (message, sent) in read.messages.into_iter().zip(messages) {
        let large = message.len() >= LARGE_MESSAGE;
        let decoded = M::decode(message)?;
        prop_assert_eq!(&decoded, sent);
        // A large chunk's or piece's data lands page-aligned, ready for direct I/O.
        if let Some(data) = bulk_data(&decoded).filter(|_| large) {
            prop_assert!(is_aligned(data), "{} bytes of data not aligned", data.len());
        }
    }
    Ok(())
}

/// `messages` framed with prost's own encoding behind a prefix.
fn prost_framed(messages: &[UploadChunksRequest]) -> (Vec<u8>, Vec<usize>) {
    let mut stream = Vec::new();
    let mut ends = Vec::new();
    for message in messages {
        let body = message.encode_to_vec();
        stream.push(0);
        stream.extend_from_slice(&(body.len() as u32).to_be_bytes());
        stream.extend_from_slice(&body);
        ends.push(stream.len());
    }
    (stream, ends)
}

// ---- Garbage ---------------------------------------------------------------------

/// Something shaped like a gRPC message: a flag (mostly 0), a length (mostly true) and
/// random bytes.
fn garbage_frame() -> impl Strategy<Value = Vec<u8>> {
    let flag = prop_oneof![8 => Just(0u8), 1 => Just(1u8), 1 => any::<u8>()];
    let body = prop_oneof![
        8 => prop::collection::vec(any::<u8>(), 0..200),
        1 => (LARGE_MESSAGE - 64..=200_000usize, any::<u64>())
            .prop_map(|(len, seed)| bytes_from(len, seed)),
    ];
    let lie = prop_oneof![
        8 => Just(None),
        1 => (0..256u32).prop_map(Some),
        1 => any::<u32>().prop_map(Some),
    ];
    (flag, body, lie).prop_map(|(flag, body, lie)| {
        let len = lie.unwrap_or(body.len() as u32);
        let mut frame = vec![flag];
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&body);
        frame
    })
}

/// Where a stream of garbage frames stops.
#[derive(Debug, Clone)]
enum Stop {
    /// After its last frame.
    AtTheEnd,
    /// Anywhere.
    Anywhere(Index),
    /// This many bytes into one of its frames: inside or just past a prefix.
    IntoAFrame(Index, usize),
}

/// Random bytes, or garbage frames, perhaps cut short.
fn garbage_stream() -> impl Strategy<Value = Vec<u8>> {
    let stop = prop_oneof![
        Just(Stop::AtTheEnd),
        any::<Index>().prop_map(Stop::Anywhere),
        (any::<Index>(), 0..=PREFIX_LEN + 1)
            .prop_map(|(frame, into)| Stop::IntoAFrame(frame, into)),
    ];
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2048),
        (prop::collection::vec(garbage_frame(), 0..8), stop).prop_map(|(frames, stop)| {
            let len = match stop {
                Stop::AtTheEnd => frames.iter().map(Vec::len).sum(),
                Stop::Anywhere(at) => at.index(frames.iter().map(Vec::len).sum::<usize>() + 1),
                Stop::IntoAFrame(_, _) if frames.is_empty() => 0,
                Stop::IntoAFrame(frame, into) => {
                    let frame = frame.index(frames.len());
                    frames[..frame].iter().map(Vec::len).sum::<usize>()
                        + into.min(frames[frame].len())
                }
            };
            let mut stream = frames.concat();
            stream.truncate(len);
            stream
        }),
    ]
}

fn max_message_size() -> impl Strategy<Value = usize> {
    prop_oneof![Just(MAX_MESSAGE), 0..=300usize, 0..=300_000usize]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_byte_stream_in_any_pieces_frames_as_the_reference_reader_does(
        stream in garbage_stream(),
        cuts in cuts(),
        trailers in any::<bool>(),
        max in max_message_size(),
    ) {
        let stream = Bytes::from(stream);
        let read = read_body(cut(&stream, &cuts), trailers, max);
        prop_assert_eq!(read, reference_read(&stream, trailers, max));
    }

    #[test]
    fn uploads_framed_by_the_encoders_come_out_unchanged_however_cut(
        requests in prop::collection::vec(upload_request(), 0..6),
        bulk in prop::collection::vec(any::<bool>(), 1..6),
        cuts in cuts(),
        trailers in any::<bool>(),
    ) {
        round_trip(&requests, outgoing_upload, chunk_data, &bulk, &cuts, trailers)?;
    }

    #[test]
    fn downloads_framed_by_the_encoders_come_out_unchanged_however_cut(
        responses in prop::collection::vec(download_response(), 0..6),
        bulk in prop::collection::vec(any::<bool>(), 1..6),
        cuts in cuts(),
        trailers in any::<bool>(),
    ) {
        round_trip(&responses, outgoing_download, piece_data, &bulk, &cuts, trailers)?;
    }

    #[test]
    fn a_stream_cut_short_reports_the_bytes_its_last_message_misses(
        requests in prop::collection::vec(upload_request(), 1..5),
        at in any::<Index>(),
        cuts in cuts(),
    ) {
        let (stream, ends) = prost_framed(&requests);
        let at = at.index(stream.len());
        let stream = Bytes::copy_from_slice(&stream[..at]);
        let read = read_body(cut(&stream, &cuts), false, MAX_MESSAGE);

        let whole = ends.iter().filter(|&&end| end <= at).count();
        let start = if whole == 0 { 0 } else { ends[whole - 1] };
        let missing = if at == start {
            0
        } else if at - start < PREFIX_LEN {
            PREFIX_LEN - (at - start)
        } else {
            ends[whole] - at
        };
        prop_assert_eq!(read.ending, Ending::End { missing });
        prop_assert_eq!(read.messages.len(), whole);
        for (message, sent) in read.messages.into_iter().zip(&requests) {
            prop_assert_eq!(&UploadChunksRequest::decode(message)?, sent);
        }
    }

    #[test]
    fn a_message_over_the_limit_is_refused_after_the_messages_before_it(
        requests in prop::collection::vec(upload_request(), 0..4),
        slack in 0..1000usize,
        over in 1..=u32::MAX as usize,
        after in prop::collection::vec(any::<u8>(), 0..100),
        cuts in cuts(),
    ) {
        let (mut stream, _) = prost_framed(&requests);
        let limit = requests.iter().map(|r| r.encoded_len()).max().unwrap_or(0) + slack;
        // Messages here are far below 4 GiB, so this is still over the limit.
        let len = (limit + over).min(u32::MAX as usize);
        stream.push(0);
        stream.extend_from_slice(&(len as u32).to_be_bytes());
        stream.extend_from_slice(&after);
        let read = read_body(cut(&Bytes::from(stream), &cuts), true, limit);
        prop_assert_eq!(read.messages.len(), requests.len());
        prop_assert_eq!(
            read.ending,
            Ending::Broken(FramingError::TooLarge { len, limit }.to_string())
        );
    }

    #[test]
    fn a_compressed_or_unknown_flag_is_refused_after_the_messages_before_it(
        requests in prop::collection::vec(upload_request(), 0..4),
        flag in 1..=u8::MAX,
        after in prop::collection::vec(any::<u8>(), 4..100),
        cuts in cuts(),
    ) {
        let (mut stream, _) = prost_framed(&requests);
        stream.push(flag);
        stream.extend_from_slice(&after);
        let read = read_body(cut(&Bytes::from(stream), &cuts), true, MAX_MESSAGE);
        let error = match flag {
            1 => FramingError::Compressed,
            flag => FramingError::BadFlag(flag),
        };
        prop_assert_eq!(read.messages.len(), requests.len());
        prop_assert_eq!(read.ending, Ending::Broken(error.to_string()));
    }

    #[test]
    fn the_bulk_encoder_decodes_with_prost_for_any_number_crc_and_data(
        number in any::<u64>(),
        crc32c in any::<u32>(),
        data in data(),
    ) {
        let [head, body] = framed_bulk(number, crc32c, data.clone());
        prop_assert_eq!(body.as_ptr(), data.as_ptr(), "the data is not copied");
        let message = without_prefix(&[head, body]);
        prop_assert_eq!(
            UploadChunksRequest::decode(&message[..])?.message,
            Some(upload_chunks_request::Message::Chunk(Chunk {
                index: number,
                data: data.clone(),
                crc32c,
            }))
        );
        prop_assert_eq!(
            DownloadResponse::decode(&message[..])?.message,
            Some(download_response::Message::Piece(DataPiece {
                offset: number,
                data,
                crc32c,
            }))
        );
    }
}

// ---- The bulk encoder, pinned to the proto ---------------------------------------

/// The message `pieces` frame, its prefix checked and taken off.
fn without_prefix(pieces: &[Bytes]) -> Vec<u8> {
    let framed: Vec<u8> = pieces.iter().flatten().copied().collect();
    assert!(framed.len() >= PREFIX_LEN);
    assert_eq!(framed[0], 0, "uncompressed");
    let len = u32::from_be_bytes(framed[1..PREFIX_LEN].try_into().unwrap()) as usize;
    assert_eq!(
        len,
        framed.len() - PREFIX_LEN,
        "the prefix gives the length"
    );
    framed[PREFIX_LEN..].to_vec()
}

/// Bulk data longer than [`LARGE_MESSAGE`], so the framer reads it into an aligned
/// buffer.
fn bulk_data() -> Bytes {
    Bytes::from(bytes_from(LARGE_MESSAGE + 1000, 42))
}

#[test]
fn the_bulk_encoder_writes_every_field_of_a_chunk() {
    let data = bulk_data();
    let chunk = Chunk {
        index: 0x0123_4567_89ab_cdef,
        crc32c: crc32c::crc32c(&data),
        data,
    };
    // No `..`: a field added to `Chunk` stops this from compiling until it is encoded.
    let Chunk {
        index,
        data,
        crc32c,
    } = chunk.clone();
    assert!(
        index != 0 && !data.is_empty() && crc32c != 0,
        "no default values"
    );
    let expected = UploadChunksRequest {
        message: Some(upload_chunks_request::Message::Chunk(chunk)),
    };

    let pieces = framed_bulk(index, crc32c, data);
    let message = without_prefix(&pieces);
    assert_eq!(UploadChunksRequest::decode(&message[..]).unwrap(), expected);

    let read = read_body(pieces.to_vec(), false, MAX_MESSAGE);
    assert_eq!(read.ending, Ending::End { missing: 0 });
    assert_eq!(read.messages, [Bytes::from(message)]);
    assert_eq!(
        UploadChunksRequest::decode(read.messages[0].clone()).unwrap(),
        expected
    );
}

#[test]
fn the_bulk_encoder_writes_every_field_of_a_data_piece() {
    let data = bulk_data();
    let piece = DataPiece {
        offset: 0xfedc_ba98_7654_3210,
        crc32c: crc32c::crc32c(&data),
        data,
    };
    // No `..`: a field added to `DataPiece` stops this from compiling until it is encoded.
    let DataPiece {
        offset,
        data,
        crc32c,
    } = piece.clone();
    assert!(
        offset != 0 && !data.is_empty() && crc32c != 0,
        "no default values"
    );
    let expected = DownloadResponse {
        message: Some(download_response::Message::Piece(piece)),
    };

    let pieces = framed_bulk(offset, crc32c, data);
    let message = without_prefix(&pieces);
    assert_eq!(DownloadResponse::decode(&message[..]).unwrap(), expected);

    let read = read_body(pieces.to_vec(), true, MAX_MESSAGE);
    assert_eq!(read.ending, Ending::Trailers);
    assert_eq!(read.messages, [Bytes::from(message)]);
    assert_eq!(
        DownloadResponse::decode(read.messages[0].clone()).unwrap(),
        expected
    );
}

/// A field in the proto: name, number, type, and type name (for messages).
type Field = (
    String,
    i32,
    prost_types::field_descriptor_proto::Type,
    String,
);

/// The proto's fields of `message`.
fn fields_of(message: &str) -> Vec<Field> {
    let set = prost_types::FileDescriptorSet::decode(transfer_proto::FILE_DESCRIPTOR_SET)
        .expect("the descriptor set decodes");
    let descriptor = set
        .file
        .iter()
        .filter(|file| file.package() == "transfer.v1")
        .flat_map(|file| &file.message_type)
        .find(|m| m.name() == message)
        .unwrap_or_else(|| panic!("transfer.v1.{message} is in the proto"));
    descriptor
        .field
        .iter()
        .map(|field| {
            assert!(
                !field.proto3_optional(),
                "{message}.{} has presence",
                field.name()
            );
            assert_eq!(
                field.label(),
                prost_types::field_descriptor_proto::Label::Optional,
                "{message}.{} is singular",
                field.name()
            );
            (
                field.name().to_owned(),
                field.number(),
                field.r#type(),
                field.type_name().to_owned(),
            )
        })
        .collect()
}

#[test]
fn the_bulk_encoder_covers_every_field_the_proto_gives_chunk_and_data_piece() {
    use prost_types::field_descriptor_proto::Type;
    // What `framed_bulk` writes (and the framer finds the data by): field 1 a uint64,
    // field 2 the bytes, field 3 a fixed32, and nothing else.
    let bulk = |number_name: &str| {
        vec![
            (number_name.to_owned(), 1, Type::Uint64, String::new()),
            ("data".to_owned(), 2, Type::Bytes, String::new()),
            ("crc32c".to_owned(), 3, Type::Fixed32, String::new()),
        ]
    };
    assert_eq!(fields_of("Chunk"), bulk("index"));
    assert_eq!(fields_of("DataPiece"), bulk("offset"));
    // Each is field 2 of its stream's message.
    let field_2 = |message: &str| {
        fields_of(message)
            .into_iter()
            .find(|field| field.1 == 2)
            .map(|(name, _, r#type, type_name)| (name, r#type, type_name))
    };
    assert_eq!(
        field_2("UploadChunksRequest"),
        Some((
            "chunk".to_owned(),
            Type::Message,
            ".transfer.v1.Chunk".to_owned()
        ))
    );
    assert_eq!(
        field_2("DownloadResponse"),
        Some((
            "piece".to_owned(),
            Type::Message,
            ".transfer.v1.DataPiece".to_owned()
        ))
    );
}
