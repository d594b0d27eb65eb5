//! Resources a client can make the server hold are bounded: a stream that sends no
//! `start`, goes silent or sends half a message is closed with DEADLINE_EXCEEDED saying
//! which (a client that reads no answers: see `upload::stream`'s tests), and unary
//! requests are small.

use std::time::{Duration, Instant};

use prost::Message;
use tonic::Code;
use transfer_proto::v1::{
    CheckUploadRequest, UploadChunksRequest, UploadStart, upload_chunks_request,
};
use transfer_tests::raw_call::{self, Then, framed};
use transfer_tests::{Ledger, TestFile, TestServer};

const UPLOAD_CHUNKS: &str = "/transfer.v1.TransferService/UploadChunks";
const CHUNK: u32 = 1024;
/// What a test waits at most for a deadline of one second to close a stream.
const GRACE: Duration = Duration::from_secs(20);

async fn strict_server(ledger: Ledger) -> TestServer {
    TestServer::start_with(ledger, |s| {
        s.first_message_secs = 1;
        s.stream_idle_secs = 1;
    })
    .await
}

/// Sends `body` (which then stalls) to UploadChunks and returns the call's final status
/// and how long it took to come.
async fn status_of_stalled_upload(server: &TestServer, body: Vec<u8>) -> (tonic::Status, Duration) {
    let started = Instant::now();
    let status = tokio::time::timeout(GRACE, StallingUpload::send(&server.endpoint(), body))
        .await
        .expect("the server closes the stream by itself");
    (status, started.elapsed())
}

/// The prefix of a `len`-byte message and `sent` bytes of it.
pub fn half_a_message(len: u32, sent: usize) -> Vec<u8> {
    let mut body = vec![0];
    body.extend_from_slice(&len.to_be_bytes());
    body.resize(5 + sent, 0x12);
    body
}

/// An UploadChunks call whose body sends some bytes and then stalls, on a connection
/// of its own.
pub struct StallingUpload;

impl StallingUpload {
    /// Sends `body` to the server at `endpoint` and waits for the call's final status.
    pub async fn send(endpoint: &str, body: Vec<u8>) -> tonic::Status {
        raw_call::final_status(endpoint, UPLOAD_CHUNKS, &[], body, Then::Stall).await
    }
}

/// An open session's `start` message, framed.
async fn start_of_a_session(server: &TestServer) -> Vec<u8> {
    let file = TestFile::new("slow.bin", 10 * CHUNK as usize, 31);
    let session =
        transfer_tests::client::open_session(&mut server.client().await, None, &file, CHUNK).await;
    framed(
        0,
        &UploadChunksRequest {
            message: Some(upload_chunks_request::Message::Start(UploadStart {
                upload_id: session.upload_id,
            })),
        }
        .encode_to_vec(),
    )
}

async fn a_stream_that_sends_no_start_is_closed(ledger: Ledger) {
    let server = strict_server(ledger).await;
    let (status, took) = status_of_stalled_upload(&server, Vec::new()).await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("no `start` message"),
        "{status:?}"
    );
    assert!(
        took >= Duration::from_secs(1),
        "not before the deadline: {took:?}"
    );
}

async fn a_silent_stream_is_closed(ledger: Ledger) {
    let server = strict_server(ledger).await;
    let start = start_of_a_session(&server).await;
    let (status, _) = status_of_stalled_upload(&server, start).await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("no chunk was stored"),
        "{status:?}"
    );
}

async fn a_half_sent_message_is_closed(ledger: Ledger) {
    let server = strict_server(ledger).await;
    let mut body = start_of_a_session(&server).await;
    body.extend_from_slice(&half_a_message(1 << 20, 100));
    let (status, _) = status_of_stalled_upload(&server, body).await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("sent too slowly"), "{status:?}");
}

async fn a_unary_request_over_16_kib_is_refused(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let status = client
        .check_upload(CheckUploadRequest {
            name: "x".repeat(64 << 10),
            size: 1,
            md5: vec![0; 16].into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
}

transfer_tests::ledger_tests!(
    a_stream_that_sends_no_start_is_closed,
    a_silent_stream_is_closed,
    a_half_sent_message_is_closed,
    a_unary_request_over_16_kib_is_refused,
);

async fn an_owner_past_its_open_uploads_or_its_quota_is_refused_and_others_are_not(ledger: Ledger) {
    let server = TestServer::start_with(ledger, |s| {
        s.max_open_uploads_per_owner = 2;
        s.owner_quota_bytes = 100_000;
    })
    .await;
    let client = server.client().await;
    let file = |seed: u64, size: usize| TestFile::new(&format!("f{seed}.bin"), size, seed);
    let check = |owner: &'static str, file: TestFile| {
        let mut client = client.clone();
        async move { transfer_tests::client::check(&mut client, Some(owner), &file, CHUNK).await }
    };

    // Two open uploads, then no third; asking again for an open one still answers.
    check("alice", file(1, 10_000)).await.unwrap();
    check("alice", file(2, 10_000)).await.unwrap();
    let third = check("alice", file(3, 10_000)).await.unwrap_err();
    assert_eq!(third.code(), Code::ResourceExhausted, "{third:?}");
    assert!(third.message().contains("2 uploads open"), "{third:?}");
    assert!(
        check("alice", file(1, 10_000)).await.is_ok(),
        "its own open session"
    );
    assert!(
        check("bob", file(3, 10_000)).await.is_ok(),
        "another owner is not limited"
    );

    // Promised bytes count against the quota until the upload is gone.
    let Ok(transfer_proto::v1::check_upload_response::Result::Session(big)) =
        check("carol", file(4, 60_000)).await
    else {
        panic!("a session for carol");
    };
    let over = check("carol", file(5, 50_000)).await.unwrap_err();
    assert_eq!(over.code(), Code::ResourceExhausted, "{over:?}");
    assert!(over.message().contains("quota of 100000 bytes"), "{over:?}");
    transfer_tests::client::abort(&mut server.client().await, Some("carol"), &big.upload_id)
        .await
        .unwrap();
    assert!(
        check("carol", file(5, 50_000)).await.is_ok(),
        "room again after the abort"
    );
}

async fn check_uploads_sent_at_once_open_no_more_sessions_than_the_cap(ledger: Ledger) {
    let server = TestServer::start_with(ledger, |s| s.max_open_uploads_per_owner = 3).await;
    let client = server.client().await;
    let asks: Vec<_> = (0..12)
        .map(|seed| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let file = TestFile::new(&format!("f{seed}.bin"), 10_000, seed);
                transfer_tests::client::check(&mut client, Some("alice"), &file, CHUNK).await
            })
        })
        .collect();
    let mut opened = 0;
    for ask in asks {
        match ask.await.unwrap() {
            Ok(_) => opened += 1,
            Err(status) => assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}"),
        }
    }
    assert_eq!(opened, 3, "exactly the cap, however the asks interleave");
}

transfer_tests::ledger_tests!(
    an_owner_past_its_open_uploads_or_its_quota_is_refused_and_others_are_not,
    check_uploads_sent_at_once_open_no_more_sessions_than_the_cap,
);

/// A GetFile call on `channel`, and the code it ends with.
async fn get_code(channel: tonic::transport::Channel) -> Code {
    let mut client =
        transfer_proto::v1::transfer_service_client::TransferServiceClient::new(channel);
    client
        .get_file(transfer_proto::v1::GetFileRequest {
            file_id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .unwrap_err()
        .code()
}

/// A client waiting to connect to `server`.
fn lazy_channel(server: &TestServer) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(server.endpoint())
        .unwrap()
        .connect_lazy()
}

async fn connections_past_the_cap_wait_while_every_one_has_a_call_open(ledger: Ledger) {
    let server = TestServer::start_with(ledger, |s| {
        s.max_connections = 2;
        s.first_message_secs = 4;
    })
    .await;
    // Two connections, each with a call open: an upload stream that sends nothing, until
    // its deadline ends it after 4 s.
    for _ in 0..2 {
        let endpoint = server.endpoint();
        tokio::spawn(async move { StallingUpload::send(&endpoint, Vec::new()).await });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let code = tokio::time::timeout(GRACE, get_code(lazy_channel(&server)))
        .await
        .expect("served once a connection had no call open");
    assert_eq!(code, Code::NotFound);
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "a third connection is not served while both have a call open: served after {:?}",
        started.elapsed()
    );
}

async fn idle_connections_make_room_for_a_waiting_client(ledger: Ledger) {
    let server = TestServer::start_with(ledger, |s| s.max_connections = 2).await;
    // Two connections that never send a thing hold both slots...
    let addr = server.endpoint().replace("http://", "");
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // ...until a client waits: then the one idle longest is closed for it.
    let code = tokio::time::timeout(GRACE, get_code(lazy_channel(&server)))
        .await
        .expect("served once an idle connection made room");
    assert_eq!(code, Code::NotFound);
    let mut closed = 0;
    for mut connection in idle {
        let mut sink = Vec::new();
        // Closed: reading ends (after the server's HTTP/2 settings, if it sent them).
        let read = tokio::time::timeout(
            Duration::from_secs(1),
            tokio::io::AsyncReadExt::read_to_end(&mut connection, &mut sink),
        )
        .await;
        if read.is_ok() {
            closed += 1;
        }
    }
    assert!(closed >= 1, "an idle connection was closed to make room");
}

async fn a_connection_with_no_call_open_is_closed_after_the_idle_time(ledger: Ledger) {
    let server = TestServer::start_with(ledger, |s| {
        s.connection_idle_secs = 1;
        s.stream_idle_secs = 4;
    })
    .await;
    let addr = server.endpoint().replace("http://", "");
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let started = Instant::now();
    let mut sink = Vec::new();
    // The read ends (cleanly or with a reset) only when the server closes it.
    let _ended = tokio::time::timeout(
        GRACE,
        tokio::io::AsyncReadExt::read_to_end(&mut silent, &mut sink),
    )
    .await
    .expect("the server closes the idle connection");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // A connection with a call open stays until the call ends, here by its own deadline.
    let start = start_of_a_session(&server).await;
    let (status, took) = status_of_stalled_upload(&server, start).await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("no chunk was stored"),
        "{status:?}"
    );
    assert!(took >= Duration::from_secs(4), "{took:?}");
}

transfer_tests::ledger_tests!(
    connections_past_the_cap_wait_while_every_one_has_a_call_open,
    idle_connections_make_room_for_a_waiting_client,
    a_connection_with_no_call_open_is_closed_after_the_idle_time,
);

async fn a_stream_of_messages_that_store_nothing_is_closed(ledger: Ledger) {
    let server = strict_server(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("busy.bin", 4 * CHUNK as usize, 33);
    let session = transfer_tests::client::open_session(&mut client, None, &file, CHUNK).await;
    let mut stream = transfer_tests::ChunkStream::open(&mut client, None, &session.upload_id)
        .await
        .unwrap();
    // A chunk with a wrong CRC32C, again and again, each answered with a rejection.
    let started = Instant::now();
    let status = loop {
        assert!(started.elapsed() < GRACE, "the stream was never closed");
        stream
            .send(transfer_proto::v1::Chunk {
                index: 0,
                data: file.chunk(0, CHUNK),
                crc32c: 0,
            })
            .await;
        match stream.next().await {
            Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(200)).await,
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("store nothing"), "{status:?}");
}

transfer_tests::ledger_tests!(a_stream_of_messages_that_store_nothing_is_closed);
