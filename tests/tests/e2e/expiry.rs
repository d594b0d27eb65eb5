//! Upload expiry: a session nothing happens to for the expiry period is closed with its
//! chunks and staged bytes; one in use lives on; resuming an expired one is NOT_FOUND,
//! saying so.

use std::time::{Duration, SystemTime};

use tonic::Code;
use transfer_proto::v1::check_upload_response::Result as Answer;
use transfer_proto::v1::{FileState, GetFileRequest, ListFilesRequest};
use transfer_tests::client::{Client, check, get_file, list_all, open_session};
use transfer_tests::{ChunkStream, Ledger, TestFile, TestServer, upload_file};

use crate::CHUNK;

/// Waits (polling, up to 30 s) until upload `id` is in `state`.
async fn until_state(client: &mut Client, id: &str, state: FileState) {
    for _ in 0..300 {
        if get_file(client, None, id).await.state() == state {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("upload {id} did not become {state:?} within 30 s");
}

/// Waits (polling, up to 10 s) until the server holds no staging: the sweeper drops it
/// just after it closes the upload in the ledger.
async fn until_no_staging(server: &TestServer) {
    for _ in 0..100 {
        if server.staging_files().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the expired upload's staging was not dropped within 10 s");
}

/// A server whose uploads expire after a second, swept every second.
async fn expiring_server(ledger: Ledger) -> TestServer {
    TestServer::start_with(ledger, |settings| {
        settings.upload_expiry_secs = 1;
        settings.gc_interval_secs = 1;
    })
    .await
}

async fn an_abandoned_upload_expires_with_its_chunks_and_staged_bytes(ledger: Ledger) {
    let server = expiring_server(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("abandoned.bin", 6 * CHUNK as usize, 160);
    let session = open_session(&mut client, None, &file, CHUNK).await;
    let mut stream = ChunkStream::open(&mut client, None, &session.upload_id)
        .await
        .unwrap();
    stream.send_and_ack(&file, CHUNK, 0..2).await;
    drop(stream);

    until_state(&mut client, &session.upload_id, FileState::Expired).await;
    until_no_staging(&server).await;
    assert_eq!(server.chunk_rows().await, 0, "its chunks went");
    let expired = list_all(
        &mut client,
        None,
        ListFilesRequest {
            state: FileState::Expired.into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(expired.len(), 1);

    // Resuming it is NOT_FOUND, and says why.
    let status = match ChunkStream::open(&mut client, None, &session.upload_id).await {
        Err(status) => status,
        Ok(mut stream) => {
            stream.send_chunk(2, file.chunk(2, CHUNK)).await;
            stream.drain().await.1.unwrap_err()
        }
    };
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("expired"), "{}", status.message());
    // Asking again starts afresh.
    let again = open_session(&mut client, None, &file, CHUNK).await;
    assert_ne!(again.upload_id, session.upload_id);
    assert!(!again.resumed && again.committed.is_empty());
}

async fn an_upload_being_streamed_into_outlives_the_expiry_period(ledger: Ledger) {
    let server = expiring_server(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("slow.bin", 8 * CHUNK as usize, 161);
    let session = open_session(&mut client, None, &file, CHUNK).await;
    let mut stream = ChunkStream::open(&mut client, None, &session.upload_id)
        .await
        .unwrap();
    // One chunk every 400 ms: the whole upload takes three expiry periods, and the
    // sweeper runs several times while the stream is attached.
    for index in 0..8 {
        stream.send_and_ack(&file, CHUNK, index..index + 1).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let done = stream.expect_completed().await;
    assert_eq!(done.state(), FileState::Complete);
}

async fn an_upload_session_says_when_it_expires_and_resuming_moves_it_later(ledger: Ledger) {
    let server = TestServer::start_with(ledger, |settings| {
        settings.upload_expiry_secs = 3600;
    })
    .await;
    let mut client = server.client().await;
    let file = TestFile::new("dated.bin", 3 * CHUNK as usize, 162);
    let expiry = |session: &transfer_proto::v1::UploadSession| -> SystemTime {
        SystemTime::try_from(session.expires_at.expect("an expiry")).expect("a valid time")
    };
    let opened = open_session(&mut client, None, &file, CHUNK).await;
    let in_an_hour = SystemTime::now() + Duration::from_secs(3600);
    let first = expiry(&opened);
    assert!(
        first <= in_an_hour && first > in_an_hour - Duration::from_secs(60),
        "an hour from now: {first:?}"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let resumed = open_session(&mut client, None, &file, CHUNK).await;
    assert!(resumed.resumed);
    assert!(expiry(&resumed) > first, "resuming is activity");
    // A complete upload no longer expires.
    upload_file(&mut client, None, &file, CHUNK).await;
    assert!(matches!(
        check(&mut client, None, &file, CHUNK).await,
        Ok(Answer::AlreadyStored(_))
    ));
}

async fn uploads_that_expired_while_the_server_was_down_expire_when_it_starts(ledger: Ledger) {
    let mut server = TestServer::start_with(ledger, |settings| {
        settings.upload_expiry_secs = 1;
        // No sweep while it runs: only the one at start-up.
        settings.gc_interval_secs = 3600;
    })
    .await;
    let mut client = server.client().await;
    let file = TestFile::new("left.bin", 4 * CHUNK as usize, 163);
    // The sweep at this server's start-up has run already: give it time to.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let session = open_session(&mut client, None, &file, CHUNK).await;
    let mut stream = ChunkStream::open(&mut client, None, &session.upload_id)
        .await
        .unwrap();
    stream.send_and_ack(&file, CHUNK, 0..1).await;
    drop(stream);
    server.stop().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.restart().await;
    let mut client = server.client().await;
    until_state(&mut client, &session.upload_id, FileState::Expired).await;
    until_no_staging(&server).await;
    let status = client
        .get_file(GetFileRequest {
            file_id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

transfer_tests::ledger_tests!(
    an_abandoned_upload_expires_with_its_chunks_and_staged_bytes,
    an_upload_being_streamed_into_outlives_the_expiry_period,
    an_upload_session_says_when_it_expires_and_resuming_moves_it_later,
    uploads_that_expired_while_the_server_was_down_expire_when_it_starts,
);
