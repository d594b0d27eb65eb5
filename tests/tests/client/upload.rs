use std::time::Duration;

use transfer_client::{TransferError, TransferState};
use transfer_tests::{
    CuttingProxy, Fault, Ledger, SlowRepliesProxy, TestFile, TestServer, TransferdProcess, download,
};

use crate::{assert_stored, client, on_disk};

const CHUNK: u64 = 64 * 1024;

/// Waits until an upload has had chunks acknowledged.
async fn started<T>(upload: &transfer_client::TransferHandle<T>) {
    upload
        .watch()
        .wait_for(|p| p.state == TransferState::Uploading && p.bytes_done > 0)
        .await
        .expect("the upload makes progress");
}

async fn an_upload_cut_several_times_completes_without_resending_acked_chunks(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let file = TestFile::new("cut.bin", 8 << 20, 100);
    let (_dir, path) = on_disk(&file);
    // Each of the first three connections is cut after ~1.5 MiB.
    let proxy = CuttingProxy::start(server.addr, 1_500_000, 3).await;
    let client = client(proxy.endpoint());

    let uploaded = client
        .upload_path(&path)
        .wait()
        .await
        .expect("the upload completes");
    assert_eq!(proxy.cuts_made(), 3, "the connection was cut three times");
    assert!(!uploaded.instant);
    let chunks = (file.data.len() as u64).div_ceil(CHUNK);
    // Only chunks in flight at a cut (their acks never arrived) may be sent again...
    let window = client.config().window as u64;
    assert!(
        uploaded.chunks_sent <= chunks + 3 * window,
        "sent {} chunks for {chunks}: acknowledged chunks were sent again",
        uploaded.chunks_sent
    );
    // ...and the server saw a chunk twice only when the ack of its first copy was lost.
    assert!(uploaded.chunks_already_stored <= 3 * window);
    assert_eq!(
        server.chunk_rows().await,
        chunks as i64,
        "every chunk is recorded"
    );

    let mut raw = server.client().await;
    let copy = download(&mut raw, None, &uploaded.file.file_id, 0, 0)
        .await
        .unwrap();
    assert_eq!(copy.data, file.data);
}

async fn an_upload_survives_the_server_being_killed_and_restarted(ledger: Ledger) {
    let mut server = TransferdProcess::start(ledger).await;
    let file = TestFile::new("killed.bin", 24 << 20, 101);
    let (_dir, path) = on_disk(&file);
    let client = client(server.endpoint());
    let upload = client.upload_path(&path);
    let mut progress = upload.watch();
    progress
        .wait_for(|p| p.state == TransferState::Uploading && p.bytes_done > 4 << 20)
        .await
        .expect("the upload makes progress");

    server.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart().await;

    let uploaded = upload
        .wait()
        .await
        .expect("the upload completes after the restart");
    assert_eq!(uploaded.file.md5.as_ref(), file.md5.as_slice());
    let copy = client.download(&uploaded.file.file_id, _dir.path().join("copy"));
    let copy = copy.wait().await.expect("the download completes");
    assert_eq!(std::fs::read(copy.path).unwrap(), file.data);
}

async fn pause_stops_sending_and_resume_finishes_the_upload(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let file = TestFile::new("pause.bin", 16 << 20, 102);
    let (_dir, path) = on_disk(&file);
    let upload = client(server.endpoint()).upload_path(&path);
    let mut progress = upload.watch();
    progress
        .wait_for(|p| p.state == TransferState::Uploading && p.bytes_done > 0)
        .await
        .unwrap();
    upload.pause();
    progress
        .wait_for(|p| p.state == TransferState::Paused)
        .await
        .unwrap();
    let paused_at = upload.progress().bytes_done;
    let rows = server.chunk_rows().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        server.chunk_rows().await,
        rows,
        "nothing is stored while paused"
    );
    assert_eq!(upload.progress().bytes_done, paused_at);
    assert!(paused_at < file.data.len() as u64, "paused before the end");

    upload.resume();
    let uploaded = upload
        .wait()
        .await
        .expect("the upload completes after resume");
    assert!(!uploaded.instant);
    assert_stored(&server, &uploaded, &file).await;
}

async fn an_upload_paused_past_its_session_expiry_starts_over_and_completes(ledger: Ledger) {
    let server = TestServer::start_with(ledger, |settings| {
        settings.upload_expiry_secs = 1;
        settings.gc_interval_secs = 1;
    })
    .await;
    let file = TestFile::new("expired.bin", 16 << 20, 104);
    let (_dir, path) = on_disk(&file);
    let upload = client(server.endpoint()).upload_path(&path);
    let mut progress = upload.watch();
    progress
        .wait_for(|p| p.state == TransferState::Uploading && p.bytes_done > 0)
        .await
        .unwrap();
    upload.pause();
    progress
        .wait_for(|p| p.state == TransferState::Paused)
        .await
        .unwrap();
    // The server expires the session nothing happens to.
    let mut raw = server.client().await;
    let expired = transfer_proto::v1::ListFilesRequest {
        state: transfer_proto::v1::FileState::Expired.into(),
        ..Default::default()
    };
    let mut waited = 0;
    while transfer_tests::client::list_all(&mut raw, None, expired.clone())
        .await
        .is_empty()
    {
        assert!(
            waited < 300,
            "the paused upload's session did not expire within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }

    upload.resume();
    let uploaded = upload
        .wait()
        .await
        .expect("the upload starts over by itself and completes");
    assert_stored(&server, &uploaded, &file).await;
}

async fn cancel_aborts_the_session_on_the_server(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let file = TestFile::new("cancel.bin", 16 << 20, 103);
    let (_dir, path) = on_disk(&file);
    let upload = client(server.endpoint()).upload_path(&path);
    started(&upload).await;
    upload.cancel();
    let result = upload.wait().await;
    assert!(
        matches!(result, Err(TransferError::Cancelled { .. })),
        "{result:?}"
    );
    let aborted = "SELECT count(*) FROM files WHERE state = 'aborted'";
    assert_eq!(server.ledger_number(aborted).await, 1);
    assert_eq!(server.chunk_rows().await, 0);
    assert!(server.staging_files().is_empty());
}

async fn a_stored_file_uploads_instantly_without_sending_a_chunk(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let file = TestFile::new("again.bin", 3 << 20, 104);
    let (_dir, path) = on_disk(&file);
    let client = client(server.endpoint());
    let first = client.upload_path(&path).wait().await.unwrap();
    assert!(!first.instant);
    assert_eq!(first.chunks_sent, (3 << 20) / CHUNK);
    let second = client.upload_path(&path).wait().await.unwrap();
    assert!(second.instant);
    assert_eq!(second.chunks_sent, 0);
    assert_eq!(second.file.md5, first.file.md5);
}

/// A file source that counts the bytes read from it.
struct CountingSource {
    inner: transfer_client::FileSource,
    read: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl transfer_client::ChunkSource for CountingSource {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    async fn read_at(&self, offset: u64, len: usize) -> std::io::Result<bytes::Bytes> {
        self.read
            .fetch_add(len as u64, std::sync::atomic::Ordering::SeqCst);
        self.inner.read_at(offset, len).await
    }
}

/// Uploads `path` through a counting source; returns the result and the bytes read.
async fn upload_counting(
    client: &transfer_client::TransferClient,
    path: &std::path::Path,
) -> (transfer_client::UploadedFile, u64) {
    let read = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let source = CountingSource {
        inner: transfer_client::FileSource::open(path).unwrap(),
        read: std::sync::Arc::clone(&read),
    };
    let uploaded = client
        .upload_source("counted.bin", source)
        .wait()
        .await
        .unwrap();
    (uploaded, read.load(std::sync::atomic::Ordering::SeqCst))
}

async fn a_new_file_is_read_once_and_a_stored_one_is_hashed_first(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let size = 3u64 << 20;
    let file = TestFile::new("onepass.bin", size as usize, 110);
    let (_dir, path) = on_disk(&file);
    let client = client(server.endpoint());
    let head = transfer_proto::HEAD_MD5_LEN;

    let (first, read) = upload_counting(&client, &path).await;
    assert!(!first.instant);
    assert_eq!(first.file.md5.as_ref(), file.md5.as_slice());
    assert_eq!(
        read,
        size + head,
        "the head for the probe, then each byte once"
    );

    // The owner has this content: the probe says so, the client hashes, it is instant.
    let (second, read) = upload_counting(&client, &path).await;
    assert!(second.instant);
    assert_eq!(second.chunks_sent, 0);
    assert_eq!(
        read,
        size + head,
        "the head, then one hashing pass, nothing sent"
    );
}

async fn another_owners_content_is_sent_again_in_either_mode_and_stored_once(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let file = TestFile::new("popular.bin", 2 << 20, 111);
    let (_dir, path) = on_disk(&file);
    let as_owner = |owner: &str, hash_first: bool| {
        let mut config = transfer_client::ClientConfig::new(server.endpoint());
        config.owner = Some(owner.into());
        config.hash_first = hash_first;
        transfer_client::TransferClient::new(config).unwrap()
    };
    as_owner("alice", false)
        .upload_path(&path)
        .wait()
        .await
        .unwrap();
    // Single pass: bob's probe learns nothing of alice's files, so his bytes travel
    // (and the server keeps one copy).
    let bob = as_owner("bob", false)
        .upload_path(&path)
        .wait()
        .await
        .unwrap();
    assert!(!bob.instant);
    // Each completion stores its own copy; the collector deletes the spare one.
    assert_eq!(server.content_files().len(), 2);
    server.collect_garbage_now().await;
    assert_eq!(server.content_files().len(), 1);
    // Hashing first does not find it either: the whole-file MD5 names only the
    // caller's own content.
    let carol = as_owner("carol", true)
        .upload_path(&path)
        .wait()
        .await
        .unwrap();
    assert!(!carol.instant);
    assert_eq!(carol.chunks_sent, 32);
    server.collect_garbage_now().await;
    assert_eq!(server.content_files().len(), 1);
    // Each downloads exactly the bytes uploaded.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("carols");
    as_owner("carol", false)
        .download(&carol.file.file_id, &out)
        .wait()
        .await
        .unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), file.data);
}

async fn a_new_client_resumes_the_single_pass_upload_a_killed_one_left(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let file = TestFile::new("left.bin", 2 << 20, 112);
    let (_dir, path) = on_disk(&file);
    // A client that died after sending the first 12 of 32 chunks.
    let mut raw = server.client().await;
    let session = transfer_tests::client::probe_session(&mut raw, None, &file, CHUNK as u32).await;
    assert_eq!(session.chunk_count, 32);
    let mut stream = transfer_tests::ChunkStream::open(&mut raw, None, &session.upload_id)
        .await
        .unwrap();
    for index in 0..12 {
        stream
            .send_chunk(index, file.chunk(index, CHUNK as u32))
            .await;
        stream.expect_ack().await;
    }
    drop(stream);

    let uploaded = client(server.endpoint())
        .upload_path(&path)
        .wait()
        .await
        .unwrap();
    assert_eq!(uploaded.file.file_id, session.upload_id, "the same session");
    assert_eq!(uploaded.chunks_sent, 20, "only the missing chunks travel");
    assert_eq!(uploaded.file.md5.as_ref(), file.md5.as_slice());
}

async fn a_resumed_upload_that_held_another_files_chunks_starts_over_and_completes(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    // Two files with the same name, size and first MiB, different after it.
    let left = TestFile::new("same.bin", 2 << 20, 113);
    let mut data = left.data.to_vec();
    for byte in &mut data[(3 << 19)..] {
        *byte ^= 0x5A;
    }
    let file = TestFile {
        md5: transfer_tests::md5(&data),
        data: data.into(),
        ..left.clone()
    };
    assert_eq!(file.head_md5(), left.head_md5());
    // A client died after storing chunks of `left` past the head.
    let mut raw = server.client().await;
    let session = transfer_tests::client::probe_session(&mut raw, None, &left, CHUNK as u32).await;
    let mut stream = transfer_tests::ChunkStream::open(&mut raw, None, &session.upload_id)
        .await
        .unwrap();
    for index in 24..28 {
        stream
            .send_chunk(index, left.chunk(index, CHUNK as u32))
            .await;
        stream.expect_ack().await;
    }
    drop(stream);

    let (_dir, path) = on_disk(&file);
    let uploaded = client(server.endpoint())
        .upload_path(&path)
        .wait()
        .await
        .unwrap();
    assert_ne!(uploaded.file.file_id, session.upload_id, "a new session");
    assert_eq!(uploaded.file.md5.as_ref(), file.md5.as_slice());
    let copy = download(&mut raw, None, &uploaded.file.file_id, 0, 0)
        .await
        .unwrap();
    assert_eq!(copy.data, file.data);
}

#[tokio::test]
async fn an_unreachable_server_fails_after_the_retry_limit() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = transfer_client::ClientConfig::new(format!("http://{closed}"));
    config.retry.max_attempts = 2;
    config.retry.initial_backoff = Duration::from_millis(10);
    let client = transfer_client::TransferClient::new(config).unwrap();
    let file = TestFile::new("nowhere.bin", 1000, 105);
    let (_dir, path) = on_disk(&file);
    let result = client.upload_path(&path).wait().await;
    match result {
        Err(TransferError::RetriesExhausted { attempts, file, .. }) => {
            assert_eq!(attempts, 2);
            assert!(file.ends_with("nowhere.bin"));
        }
        other => panic!("expected RetriesExhausted, got {other:?}"),
    }
}

async fn a_hung_connection_is_detected_as_stalled_and_the_upload_completes(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let file = TestFile::new("hung.bin", 4 << 20, 106);
    let (_dir, path) = on_disk(&file);
    // The first connection stops forwarding after ~1 MiB but stays open.
    let proxy = CuttingProxy::with_fault(server.addr, Fault::Stall, 1 << 20, 1).await;
    let mut config = transfer_client::ClientConfig::new(proxy.endpoint());
    config.chunk_size = 64 * 1024;
    config.stall_timeout = Duration::from_millis(800);
    config.retry.initial_backoff = Duration::from_millis(20);
    let upload = transfer_client::TransferClient::new(config)
        .unwrap()
        .upload_path(&path);
    let mut retried = upload.watch();
    let saw_stall = tokio::spawn(async move {
        retried
            .wait_for(|p| matches!(&p.state, TransferState::Retrying { reason, .. } if reason.contains("stalled")))
            .await
            .is_ok()
    });
    let uploaded = tokio::time::timeout(Duration::from_secs(60), upload.wait())
        .await
        .expect("a hung connection must not hang the upload")
        .expect("the upload completes");
    assert_eq!(proxy.cuts_made(), 1);
    assert!(saw_stall.await.unwrap(), "the client reported the stall");
    assert_stored(&server, &uploaded, &file).await;
}

async fn the_first_chunks_go_out_before_the_server_answers_the_stream(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let file = TestFile::new("early.bin", 256 << 10, 108);
    let (_dir, path) = on_disk(&file);
    // Every answer from the server takes two seconds to arrive; requests arrive at once.
    let reply_delay = Duration::from_secs(2);
    let proxy = SlowRepliesProxy::start(server.addr, reply_delay).await;
    let upload = client(proxy.endpoint()).upload_path(&path);
    let mut progress = upload.watch();
    progress
        .wait_for(|p| p.state == TransferState::Uploading)
        .await
        .expect("CheckUpload answers");
    let streaming = std::time::Instant::now();
    progress
        .wait_for(|p| p.bytes_done > 0)
        .await
        .expect("a chunk is acknowledged");
    let first_ack = streaming.elapsed();
    assert!(
        first_ack >= reply_delay,
        "an ack came back in {first_ack:?}, sooner than the proxy passes replies on"
    );
    // Sent with the stream's opening, a chunk's ack is one reply delay away. Had the
    // client waited for the server's answer to the stream (its response headers), it
    // would be two. The bound between leaves a loaded machine most of a delay.
    assert!(
        first_ack < reply_delay * 7 / 4,
        "the first ack came {first_ack:?} after the stream opened: the chunks waited for the \
         server's answer, a round trip lost"
    );
    let uploaded = upload.wait().await.expect("the upload completes");
    assert_stored(&server, &uploaded, &file).await;
}

async fn an_upload_aborted_by_another_client_stops_instead_of_starting_over(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let file = TestFile::new("aborted.bin", 32 << 20, 107);
    let (_dir, path) = on_disk(&file);
    let upload = client(server.endpoint()).upload_path(&path);
    started(&upload).await;
    // Someone else (an operator who looked the session up) aborts it.
    let upload_id = server
        .ledger_text("SELECT CAST(id AS TEXT) FROM files WHERE name = 'aborted.bin'")
        .await;
    let mut raw = server.client().await;
    transfer_tests::client::abort(&mut raw, None, &upload_id)
        .await
        .unwrap();
    match upload.wait().await {
        Err(TransferError::AbortedElsewhere { file }) => assert!(file.ends_with("aborted.bin")),
        other => panic!("expected AbortedElsewhere, got {other:?}"),
    }
    let open = "SELECT count(*) FROM files WHERE state = 'uploading'";
    assert_eq!(
        server.ledger_number(open).await,
        0,
        "no new session was opened"
    );
}

#[tokio::test]
async fn a_server_address_without_a_scheme_is_refused_at_once() {
    match transfer_client::TransferClient::new(transfer_client::ClientConfig::new(
        "127.0.0.1:50051",
    )) {
        Err(TransferError::BadEndpoint { reason, .. }) => assert!(reason.contains("http://")),
        Err(other) => panic!("expected BadEndpoint, got {other:?}"),
        Ok(_) => panic!("expected BadEndpoint"),
    }
}

async fn a_single_pass_upload_cut_mid_stream_goes_on_in_its_own_session(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    // The library's default: one pass. A file of no more chunks than the window is all
    // read (so its MD5 known, and declared) before the first ack comes back.
    let file = TestFile::new("own.bin", 8 * CHUNK as usize, 109);
    let (_dir, path) = on_disk(&file);
    // The first connection is cut after ~300 KB: mid-stream, the MD5 known to the client
    // and not yet recorded by the server.
    let proxy = CuttingProxy::start(server.addr, 300_000, 1).await;
    let client = client(proxy.endpoint());
    let uploaded = client
        .upload_path(&path)
        .wait()
        .await
        .expect("the upload completes");
    assert_eq!(proxy.cuts_made(), 1);
    assert_stored(&server, &uploaded, &file).await;
    assert_eq!(
        server.ledger_number("SELECT count(*) FROM files").await,
        1,
        "one file, and no session left behind by the cut"
    );
    let window = client.config().window as u64;
    assert!(
        uploaded.chunks_sent <= 8 + window,
        "sent {} chunks for 8: the cut cost more than the chunks in flight",
        uploaded.chunks_sent
    );
}

/// A client that retries every 20-50 ms: eight attempts (the old fixed count) take
/// well under a second.
fn quick_retries(endpoint: String, retry_for: Duration) -> transfer_client::TransferClient {
    let mut config = transfer_client::ClientConfig::new(endpoint);
    config.chunk_size = CHUNK as u32;
    config.retry = transfer_client::RetryPolicy {
        retry_for,
        max_attempts: u32::MAX,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(50),
    };
    transfer_client::TransferClient::new(config).expect("a valid test client")
}

async fn an_upload_rides_out_a_server_outage_shorter_than_its_retry_deadline(ledger: Ledger) {
    // A process, so that it comes back on the same address.
    let mut server = TransferdProcess::start(ledger).await;
    let file = TestFile::new("outage.bin", 4 * CHUNK as usize, 110);
    let (dir, path) = on_disk(&file);
    server.kill();
    let client = quick_retries(server.endpoint(), Duration::from_secs(30));
    let upload = client.upload_path(&path);
    // Down for 2 s: dozens of attempts, far past the old limit of eight.
    let mut progress = upload.watch();
    progress
        .wait_for(|p| matches!(p.state, TransferState::Retrying { attempt, .. } if attempt > 8))
        .await
        .expect("the upload retries past eight attempts");
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.restart().await;
    let uploaded = tokio::time::timeout(Duration::from_secs(30), upload.wait())
        .await
        .expect("the upload finishes once the server is back")
        .expect("the upload completes");
    let copy = client.download(&uploaded.file.file_id, dir.path().join("copy"));
    let copy = copy.wait().await.expect("the download completes");
    assert_eq!(std::fs::read(copy.path).unwrap(), file.data);
}

async fn an_upload_gives_up_once_its_retry_deadline_passes_without_progress(ledger: Ledger) {
    let mut server = TransferdProcess::start(ledger).await;
    let file = TestFile::new("gone.bin", 4 * CHUNK as usize, 111);
    let (_dir, path) = on_disk(&file);
    server.kill();
    let client = quick_retries(server.endpoint(), Duration::from_secs(1));
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(30), client.upload_path(&path).wait())
        .await
        .expect("the upload gives up");
    match result {
        Err(TransferError::RetriesExhausted { waited, .. }) => {
            assert!(waited >= Duration::from_secs(1), "{waited:?}");
        }
        other => panic!("expected RetriesExhausted, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_secs(1));
}

transfer_tests::ledger_tests!(
    an_upload_rides_out_a_server_outage_shorter_than_its_retry_deadline,
    an_upload_gives_up_once_its_retry_deadline_passes_without_progress,
    a_single_pass_upload_cut_mid_stream_goes_on_in_its_own_session,
    the_first_chunks_go_out_before_the_server_answers_the_stream,
    an_upload_aborted_by_another_client_stops_instead_of_starting_over,
    a_hung_connection_is_detected_as_stalled_and_the_upload_completes,
    an_upload_cut_several_times_completes_without_resending_acked_chunks,
    an_upload_survives_the_server_being_killed_and_restarted,
    pause_stops_sending_and_resume_finishes_the_upload,
    an_upload_paused_past_its_session_expiry_starts_over_and_completes,
    cancel_aborts_the_session_on_the_server,
    a_stored_file_uploads_instantly_without_sending_a_chunk,
    a_new_file_is_read_once_and_a_stored_one_is_hashed_first,
    another_owners_content_is_sent_again_in_either_mode_and_stored_once,
    a_new_client_resumes_the_single_pass_upload_a_killed_one_left,
    a_resumed_upload_that_held_another_files_chunks_starts_over_and_completes,
);

#[tokio::test]
async fn any_async_reader_of_known_size_uploads() {
    let server = TestServer::start(Ledger::Sqlite).await;
    let file = TestFile::new("piped.bin", 3 << 20, 108);
    // A reader that cannot seek: one end of a pipe.
    let (mut writer, reader) = tokio::io::duplex(64 * 1024);
    let data = file.data.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let _ = writer.write_all(&data).await;
    });
    let uploaded = client(server.endpoint())
        .upload_reader("piped.bin", file.data.len() as u64, reader)
        .wait()
        .await
        .expect("the upload completes");
    assert_eq!(uploaded.file.md5.as_ref(), file.md5.as_slice());

    let (_, short) = tokio::io::duplex(16);
    let result = client(server.endpoint())
        .upload_reader("short.bin", 100, short)
        .wait()
        .await;
    assert!(
        matches!(result, Err(TransferError::SourceChanged { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_reader_that_stays_open_after_its_bytes_uploads_and_a_stalled_one_cancels() {
    let server = TestServer::start(Ledger::Sqlite).await;
    let file = TestFile::new("open-pipe.bin", 200_000, 109);
    let (mut writer, reader) = tokio::io::duplex(64 * 1024);
    let data = file.data.clone();
    let keep_open = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let _ = writer.write_all(&data).await;
        // The writer stays open: no end of file follows the bytes.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(writer);
    });
    let uploaded = tokio::time::timeout(
        Duration::from_secs(20),
        client(server.endpoint())
            .upload_reader("open-pipe.bin", file.data.len() as u64, reader)
            .wait(),
    )
    .await
    .expect("exactly `size` bytes are enough")
    .expect("the upload completes");
    assert_eq!(uploaded.file.md5.as_ref(), file.md5.as_slice());
    keep_open.abort();

    // A reader that never delivers: cancel still ends the transfer.
    let (_writer, silent) = tokio::io::duplex(16);
    let stuck = client(server.endpoint()).upload_reader("silent.bin", 100, silent);
    tokio::time::sleep(Duration::from_millis(200)).await;
    stuck.cancel();
    let result = tokio::time::timeout(Duration::from_secs(5), stuck.wait())
        .await
        .expect("cancel ends a transfer still reading its source");
    assert!(
        matches!(result, Err(TransferError::Cancelled { .. })),
        "{result:?}"
    );
}
