//! What an attacker can make the real `transferd` process hold, measured from /proc.
//! A stream that names no session cannot make the server take a chunk's buffer at
//! all; an owner's half-sent chunks take at most the owner's share of the memory for
//! messages being read, the rest waiting in HTTP/2 windows; a client that reads no
//! answers stops the server reading its chunks; every stalled stream is closed at its
//! deadline.

use std::time::Duration;

use futures::StreamExt;
use prost::Message;
use tonic::Code;
use transfer_proto::v1::transfer_service_client::TransferServiceClient;
use transfer_proto::v1::{
    CheckUploadRequest, Chunk, UploadChunksRequest, UploadStart, check_upload_response,
    upload_chunks_request,
};
use transfer_tests::raw_call::framed;
use transfer_tests::{Ledger, TransferdProcess};

use crate::limits::{StallingUpload, half_a_message};

const MIB: u64 = 1 << 20;

/// Sends every body on a connection of its own, at once, and returns how each call ended.
async fn stall_all(server: &TransferdProcess, bodies: Vec<Vec<u8>>) -> Vec<tonic::Status> {
    let attacks: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            let endpoint = server.endpoint();
            tokio::spawn(async move { StallingUpload::send(&endpoint, body).await })
        })
        .collect();
    let mut ended = Vec::new();
    for attack in attacks {
        let status = tokio::time::timeout(Duration::from_secs(60), attack)
            .await
            .expect("every stalled stream is closed in time")
            .unwrap();
        ended.push(status);
    }
    ended
}

/// A new upload session of `size` bytes in chunks of `chunk_size` on `server` (its MD5
/// made up: the tests never complete it).
async fn open_session(
    server: &TransferdProcess,
    size: u64,
    chunk_size: u32,
) -> transfer_proto::v1::UploadSession {
    let mut client = TransferServiceClient::connect(server.endpoint())
        .await
        .unwrap();
    let checked = client
        .check_upload(CheckUploadRequest {
            name: "big.bin".into(),
            size,
            md5: vec![7; 16].into(),
            preferred_chunk_size: chunk_size,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let Some(check_upload_response::Result::Session(session)) = checked.result else {
        panic!("a session: {checked:?}");
    };
    session
}

fn report_growth(server: &TransferdProcess, before: u64, bound: u64) {
    let grew = server.peak_rss_bytes().saturating_sub(before);
    eprintln!(
        "transferd's peak RSS grew by {} MiB under the attack (bound {} MiB)",
        grew / MIB,
        bound / MIB
    );
    assert!(
        grew <= bound,
        "peak RSS grew by {} MiB, over the bound of {} MiB",
        grew / MIB,
        bound / MIB
    );
}

#[tokio::test]
async fn a_stream_that_names_no_session_cannot_make_the_server_take_a_chunks_buffer() {
    let server = TransferdProcess::start(Ledger::Sqlite).await;
    let before = server.rss_bytes();
    // Sixteen connections, each sending the prefix of a 16 MiB first message and 12 MiB
    // of it: the first message must be a small `start`, so each is refused at its prefix.
    let ended = stall_all(
        &server,
        vec![half_a_message(16 * MIB as u32, 12 * MIB as usize); 16],
    )
    .await;
    for status in &ended {
        assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
        assert!(
            status.message().contains("limit is 16384 bytes"),
            "{status:?}"
        );
    }
    // What is in flight on 16 connections before the refusals reach the senders.
    report_growth(&server, before, 64 * MIB);
}

#[tokio::test]
async fn one_owners_half_sent_chunks_hold_at_most_its_share_of_memory_and_are_closed() {
    const STREAMS: u64 = 32;
    const OWNER_SHARE: u64 = 64 * MIB;
    const WINDOW: u64 = MIB;
    let server = TransferdProcess::start_with_args(
        Ledger::Sqlite,
        &[
            "--owner-upload-memory-bytes",
            &OWNER_SHARE.to_string(),
            "--http2-stream-window",
            &WINDOW.to_string(),
            "--http2-connection-window",
            &WINDOW.to_string(),
            "--stream-idle-secs",
            "2",
        ],
    )
    .await;
    // One session of 16 MiB chunks; each stream names it, then sends 12 MiB of its own
    // chunk and stalls. Unbounded, the server would gather 32 × 12 MiB.
    let session = open_session(&server, STREAMS * 16 * MIB, 16 * MIB as u32).await;
    let start = framed(
        0,
        &UploadChunksRequest {
            message: Some(upload_chunks_request::Message::Start(UploadStart {
                upload_id: session.upload_id,
            })),
        }
        .encode_to_vec(),
    );
    let body = [
        start,
        half_a_message(16 * MIB as u32 + 64, 12 * MIB as usize),
    ]
    .concat();
    let before = server.rss_bytes();
    let ended = stall_all(&server, vec![body; STREAMS as usize]).await;
    for status in &ended {
        assert!(
            matches!(
                status.code(),
                Code::DeadlineExceeded | Code::ResourceExhausted
            ),
            "a stalled stream is closed (DEADLINE_EXCEEDED) or, waiting for memory, refused it (RESOURCE_EXHAUSTED): {status:?}"
        );
    }
    // The owner's share, a window on each connection, and the allocator's slack: far
    // below the 384 MiB the streams sent.
    report_growth(&server, before, OWNER_SHARE + STREAMS * WINDOW + 32 * MIB);
}

#[tokio::test]
async fn clients_that_read_no_acks_are_refused_holding_no_more_than_their_windows() {
    const STREAMS: u64 = 4;
    const CHUNK: u64 = 64 << 10;
    const CHUNKS_PER_STREAM: u64 = 2000;
    const STREAM_WINDOW: u64 = 4 * MIB;
    let server = TransferdProcess::start_with_args(
        Ledger::Sqlite,
        &[
            "--http2-stream-window",
            &STREAM_WINDOW.to_string(),
            "--stream-idle-secs",
            "2",
        ],
    )
    .await;
    let session = open_session(&server, STREAMS * CHUNKS_PER_STREAM * CHUNK, CHUNK as u32).await;
    let before = server.rss_bytes();
    // Each stream sends its own 2000 chunks as fast as the server takes them, on a
    // connection that lets the server send it 1 KiB of answers and reads none. Not
    // knowing which chunks are stored, it cannot keep to its window: the server ends
    // the stream when it goes past it, or, should the acks pile up first, stops
    // reading and gives up on the client; either way it never holds what comes.
    let streams: Vec<_> = (0..STREAMS)
        .map(|stream| {
            let (endpoint, upload_id) = (server.endpoint(), session.upload_id.clone());
            tokio::spawn(async move {
                let channel = tonic::transport::Endpoint::from_shared(endpoint)
                    .unwrap()
                    .initial_stream_window_size(1024)
                    .connect()
                    .await
                    .unwrap();
                let data = bytes::Bytes::from(vec![stream as u8; CHUNK as usize]);
                let crc32c = crc32c::crc32c(&data);
                let start = UploadChunksRequest {
                    message: Some(upload_chunks_request::Message::Start(UploadStart {
                        upload_id,
                    })),
                };
                let chunks = (0..CHUNKS_PER_STREAM).map(move |i| UploadChunksRequest {
                    message: Some(upload_chunks_request::Message::Chunk(Chunk {
                        index: stream * CHUNKS_PER_STREAM + i,
                        crc32c,
                        data: data.clone(),
                    })),
                });
                let requests = futures::stream::iter(std::iter::once(start).chain(chunks))
                    .chain(futures::stream::pending());
                let mut responses = TransferServiceClient::new(channel)
                    .upload_chunks(requests)
                    .await
                    .unwrap()
                    .into_inner();
                // Reads nothing for a while, then everything the server said.
                tokio::time::sleep(Duration::from_secs(8)).await;
                loop {
                    match responses.message().await {
                        Ok(Some(_)) => {}
                        Ok(None) => panic!("the stream ended without saying why"),
                        Err(status) => return status,
                    }
                }
            })
        })
        .collect();
    for stream in streams {
        let status = tokio::time::timeout(Duration::from_secs(60), stream)
            .await
            .expect("the server gives up on a client that reads nothing")
            .unwrap();
        let why = status.message();
        assert!(
            (status.code() == Code::ResourceExhausted && why.contains("max_window in flight"))
                || (status.code() == Code::DeadlineExceeded
                    && why.contains("the client read no answers")),
            "{status:?}"
        );
    }
    // Each stream: its window of chunks in flight (in bytes) and its HTTP/2 window, and
    // slack.
    report_growth(
        &server,
        before,
        STREAMS * (session.max_window_bytes + STREAM_WINDOW) + 32 * MIB,
    );
}
