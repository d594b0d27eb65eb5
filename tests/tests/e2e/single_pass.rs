//! Single-pass uploads: a probe with the head digest instead of the MD5, chunks streamed
//! while the client hashes, the whole-file MD5 declared at the end as `digest`.

use tonic::Code;
use transfer_proto::v1::check_upload_response::Result as CheckResult;
use transfer_proto::v1::{FileState, UploadSession};
use transfer_tests::client::{check, get_file, open_session, probe, probe_session};
use transfer_tests::{ChunkStream, Ledger, TestFile, TestServer, md5};

use crate::CHUNK;

type Client =
    transfer_proto::v1::transfer_service_client::TransferServiceClient<tonic::transport::Channel>;

/// Sends chunks `indexes` of `file` on a new stream of `session` and waits for their acks.
async fn send_chunks(
    client: &mut Client,
    owner: Option<&str>,
    session: &UploadSession,
    file: &TestFile,
    indexes: impl IntoIterator<Item = u64>,
) -> ChunkStream {
    let mut stream = ChunkStream::open(client, owner, &session.upload_id)
        .await
        .unwrap();
    stream.send_and_ack(file, CHUNK, indexes).await;
    stream
}

/// Uploads `file` in a single pass as `owner`: probe, every chunk, then the digest.
async fn single_pass_upload(
    client: &mut Client,
    owner: Option<&str>,
    file: &TestFile,
) -> transfer_proto::v1::FileInfo {
    let session = probe_session(client, owner, file, CHUNK).await;
    let mut stream = send_chunks(client, owner, &session, file, 0..session.chunk_count).await;
    stream.send_digest(&file.md5).await;
    stream.expect_completed().await
}

async fn a_single_pass_upload_completes_once_its_digest_arrives(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("single.bin", 6 * CHUNK as usize + 100, 300);
    let session = probe_session(&mut client, None, &file, CHUNK).await;
    assert!(!session.resumed);
    let mut stream = send_chunks(&mut client, None, &session, &file, 0..7).await;

    // Every chunk is stored, but without the MD5 nothing can be verified yet.
    let waiting = get_file(&mut client, None, &session.upload_id).await;
    assert_eq!(waiting.state(), FileState::Uploading);
    assert!(waiting.md5.is_empty(), "no MD5 is known yet");

    stream.send_digest(&file.md5).await;
    let done = stream.expect_completed().await;
    assert_eq!(done.state(), FileState::Complete);
    assert_eq!(done.md5.as_ref(), file.md5.as_slice());
    assert_eq!(server.content_files().len(), 1);
    assert!(server.staging_files().is_empty());
    let stored = std::fs::read(&server.content_files()[0]).unwrap();
    assert_eq!(stored, file.data.as_ref());
}

async fn a_digest_sent_before_the_last_chunk_completes_the_upload_with_it(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("early.bin", 3 * CHUNK as usize, 301);
    let session = probe_session(&mut client, None, &file, CHUNK).await;
    let mut stream = ChunkStream::open(&mut client, None, &session.upload_id)
        .await
        .unwrap();
    stream.send_digest(&file.md5).await;
    for index in 0..3 {
        stream.send_chunk(index, file.chunk(index, CHUNK)).await;
    }
    let (acks, end) = stream.drain().await;
    assert_eq!(acks.len(), 3);
    let done = end.unwrap().expect("completed");
    assert_eq!(done.md5.as_ref(), file.md5.as_slice());
}

async fn a_wrong_digest_fails_the_single_pass_upload_with_data_loss(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("wrong.bin", 4 * CHUNK as usize, 302);
    let session = probe_session(&mut client, None, &file, CHUNK).await;
    let mut stream = send_chunks(&mut client, None, &session, &file, 0..4).await;
    stream.send_digest(&md5(b"not this file")).await;
    let (_, end) = stream.drain().await;
    let status = end.expect_err("the upload must fail");
    assert_eq!(status.code(), Code::DataLoss, "{status:?}");
    let failed = get_file(&mut client, None, &session.upload_id).await;
    assert_eq!(failed.state(), FileState::Failed);
    assert!(server.content_files().is_empty());
    assert!(server.staging_files().is_empty());
}

async fn a_stream_that_stops_sending_without_the_digest_is_told_to_send_it(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("nodigest.bin", 2 * CHUNK as usize, 303);
    let session = probe_session(&mut client, None, &file, CHUNK).await;
    let mut stream = send_chunks(&mut client, None, &session, &file, 0..2).await;
    stream.finish_sending();
    let (_, end) = stream.drain().await;
    let status = end.expect_err("the stream cannot complete");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("digest"), "{}", status.message());

    // The session is still open: a new stream with the digest completes it.
    let mut again = ChunkStream::open(&mut client, None, &session.upload_id)
        .await
        .unwrap();
    again.send_digest(&file.md5).await;
    let done = again.expect_completed().await;
    assert_eq!(done.md5.as_ref(), file.md5.as_slice());
}

async fn a_digest_that_contradicts_the_declared_md5_is_invalid(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("twopass.bin", 2 * CHUNK as usize, 304);
    let session = open_session(&mut client, None, &file, CHUNK).await;
    let mut stream = ChunkStream::open(&mut client, None, &session.upload_id)
        .await
        .unwrap();
    stream.send_digest(&md5(b"another file")).await;
    let (_, end) = stream.drain().await;
    let status = end.expect_err("a contradicting digest is refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("digest.md5"),
        "{}",
        status.message()
    );
    // The session itself is unharmed.
    let done = single_pass_resume_with_md5(&mut client, &file, &session).await;
    assert_eq!(done.md5.as_ref(), file.md5.as_slice());
}

async fn a_digest_that_is_not_16_bytes_is_invalid(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("shortdigest.bin", CHUNK as usize, 311);
    let session = probe_session(&mut client, None, &file, CHUNK).await;
    let mut stream = ChunkStream::open(&mut client, None, &session.upload_id)
        .await
        .unwrap();
    stream.send_digest(&file.md5[..5]).await;
    let (_, end) = stream.drain().await;
    let status = end.expect_err("a malformed digest is refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("digest.md5") && status.message().contains("5 bytes"),
        "{}",
        status.message()
    );
}

async fn single_pass_resume_with_md5(
    client: &mut Client,
    file: &TestFile,
    session: &UploadSession,
) -> transfer_proto::v1::FileInfo {
    let mut stream = send_chunks(client, None, session, file, 0..session.chunk_count).await;
    stream.finish_sending();
    match stream.drain().await {
        (_, Ok(Some(done))) => done,
        other => panic!("expected completed, got {other:?}"),
    }
}

async fn the_probe_resumes_the_owners_unfinished_single_pass_upload(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("resume.bin", 8 * CHUNK as usize, 305);
    let first = probe_session(&mut client, None, &file, CHUNK).await;
    drop(send_chunks(&mut client, None, &first, &file, [0, 1, 2, 5]).await);

    let again = probe_session(&mut client, None, &file, CHUNK).await;
    assert_eq!(again.upload_id, first.upload_id);
    assert!(again.resumed);
    let committed: Vec<(u64, u64)> = again.committed.iter().map(|r| (r.start, r.end)).collect();
    assert_eq!(committed, vec![(0, 3), (5, 6)]);

    let mut stream = send_chunks(&mut client, None, &again, &file, [3, 4, 6, 7]).await;
    stream.send_digest(&file.md5).await;
    let done = stream.expect_completed().await;
    assert_eq!(done.md5.as_ref(), file.md5.as_slice());
    assert_eq!(server.content_files().len(), 1);
}

async fn a_single_pass_upload_resumes_after_a_server_restart(ledger: Ledger) {
    let mut server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("restart.bin", 9 * CHUNK as usize, 306);
    let session = probe_session(&mut client, None, &file, CHUNK).await;
    drop(send_chunks(&mut client, None, &session, &file, 0..5).await);

    server.restart().await;
    let mut client = server.client().await;
    let again = probe_session(&mut client, None, &file, CHUNK).await;
    assert_eq!(again.upload_id, session.upload_id);
    let mut stream = send_chunks(&mut client, None, &again, &file, 5..9).await;
    stream.send_digest(&file.md5).await;
    let done = stream.expect_completed().await;
    assert_eq!(done.md5.as_ref(), file.md5.as_slice());
}

async fn the_probe_says_maybe_for_the_owners_stored_file_and_the_md5_makes_it_instant(
    ledger: Ledger,
) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("mine.bin", 5 * CHUNK as usize, 307);
    single_pass_upload(&mut client, None, &file).await;

    // Same size and head: maybe stored. Any name: it is about content.
    let renamed = TestFile {
        name: "renamed.bin".into(),
        ..file.clone()
    };
    assert!(matches!(
        probe(&mut client, None, &renamed, CHUNK).await,
        Ok(CheckResult::MaybeStored(_))
    ));
    // Asked again with the MD5, it is an instant upload.
    assert!(matches!(
        check(&mut client, None, &renamed, CHUNK).await,
        Ok(CheckResult::AlreadyStored(_))
    ));
}

async fn a_file_that_only_shares_the_head_and_size_is_maybe_then_a_session_of_its_own(
    ledger: Ledger,
) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    // Past the 1 MiB head, so a change at the end leaves the head alone.
    let chunk = 512 * 1024;
    let file = TestFile::new("big.bin", 3 * chunk as usize, 309);
    let session = probe_session(&mut client, None, &file, chunk).await;
    assert_eq!(session.chunk_count, 3);
    let mut stream = ChunkStream::open(&mut client, None, &session.upload_id)
        .await
        .unwrap();
    for index in 0..3 {
        stream.send_chunk(index, file.chunk(index, chunk)).await;
    }
    stream.send_digest(&file.md5).await;
    let (_, end) = stream.drain().await;
    assert!(end.unwrap().is_some(), "completed");

    let mut data = file.data.to_vec();
    let last = data.len() - 1;
    data[last] ^= 0xFF;
    let different = TestFile {
        name: "different.bin".into(),
        md5: md5(&data),
        data: data.into(),
    };
    assert_eq!(different.head_md5(), file.head_md5());
    assert!(matches!(
        probe(&mut client, None, &different, chunk).await,
        Ok(CheckResult::MaybeStored(_))
    ));
    assert!(matches!(
        check(&mut client, None, &different, chunk).await,
        Ok(CheckResult::Session(_))
    ));
}

async fn the_probe_reveals_nothing_of_other_owners_and_their_content_is_kept_once(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("shared.bin", 4 * CHUNK as usize, 308);
    single_pass_upload(&mut client, Some("alice"), &file).await;

    // Bob learns nothing from the probe: he gets a fresh session, as for new content.
    let bobs = probe_session(&mut client, Some("bob"), &file, CHUNK).await;
    assert!(!bobs.resumed);
    assert!(bobs.committed.is_empty());
    let mut stream = send_chunks(&mut client, Some("bob"), &bobs, &file, 0..4).await;
    stream.send_digest(&file.md5).await;
    let done = stream.expect_completed().await;
    assert_eq!(done.md5.as_ref(), file.md5.as_slice());
    // Each completion stored its own copy; the collector deletes the spare ones.
    server.collect_garbage_now().await;
    assert_eq!(server.content_files().len(), 1, "one copy of the content");
    assert!(server.staging_files().is_empty());
}

async fn a_session_someone_is_streaming_into_is_not_handed_to_a_second_probe(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("busy.bin", 4 * CHUNK as usize, 310);
    let first = probe_session(&mut client, None, &file, CHUNK).await;
    // A client is uploading into it right now.
    let busy = send_chunks(&mut client, None, &first, &file, [0]).await;
    assert!(matches!(
        probe(&mut client, None, &file, CHUNK).await,
        Ok(CheckResult::MaybeStored(_))
    ));
    // Once that stream is gone, the session can be resumed.
    drop(busy);
    let mut again = None;
    // Up to 5 s: the server notices the stream's end when its task does.
    for _ in 0..250 {
        if let Ok(CheckResult::Session(session)) = probe(&mut client, None, &file, CHUNK).await {
            again = Some(session);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let again = again.expect("the session is offered once nobody streams into it");
    assert_eq!(again.upload_id, first.upload_id);
    assert!(again.resumed);
}

transfer_tests::ledger_tests!(
    a_single_pass_upload_completes_once_its_digest_arrives,
    a_digest_sent_before_the_last_chunk_completes_the_upload_with_it,
    a_wrong_digest_fails_the_single_pass_upload_with_data_loss,
    a_stream_that_stops_sending_without_the_digest_is_told_to_send_it,
    a_digest_that_contradicts_the_declared_md5_is_invalid,
    the_probe_resumes_the_owners_unfinished_single_pass_upload,
    a_single_pass_upload_resumes_after_a_server_restart,
    the_probe_says_maybe_for_the_owners_stored_file_and_the_md5_makes_it_instant,
    a_file_that_only_shares_the_head_and_size_is_maybe_then_a_session_of_its_own,
    the_probe_reveals_nothing_of_other_owners_and_their_content_is_kept_once,
    a_session_someone_is_streaming_into_is_not_handed_to_a_second_probe,
    a_digest_that_is_not_16_bytes_is_invalid,
);
