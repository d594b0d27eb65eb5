//! What an attacker can make the real `transferd` process hold, measured from /proc.
//! A stream that names no session cannot make the server take a chunk's buffer at
//! all; an owner's half-sent chunks take at most the owner's share of the memory for
//! messages being read, the rest waiting in HTTP/2 windows; every stalled stream is
//! closed at its deadline.

use std::time::Duration;

use prost::Message;
use tonic::Code;
use transfer_proto::v1::transfer_service_client::TransferServiceClient;
use transfer_proto::v1::{
    CheckUploadRequest, UploadChunksRequest, UploadStart, check_upload_response,
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
    let mut client = TransferServiceClient::connect(server.endpoint())
        .await
        .unwrap();
    let checked = client
        .check_upload(CheckUploadRequest {
            name: "big.bin".into(),
            size: STREAMS * 16 * MIB,
            md5: vec![7; 16].into(),
            preferred_chunk_size: 16 * MIB as u32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let Some(check_upload_response::Result::Session(session)) = checked.result else {
        panic!("a session: {checked:?}");
    };
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
