//! A full disk, as a real `transferd` on a small filesystem of its own meets it: new
//! uploads refused at CheckUpload with RESOURCE_EXHAUSTED (`storage-full`, saying how
//! short it is), space reserved when an upload begins, and a client that waits for room
//! rather than fail.

use std::time::Duration;

use tonic::Code;
use transfer_proto::v1::check_upload_response::Result as Answer;
use transfer_proto::v1::transfer_service_client::TransferServiceClient;
use transfer_proto::v1::{ListFilesRequest, UploadSession};
use transfer_tests::client::{Client, check, delete_file, list_all};
use transfer_tests::process::TransferdProcess;
use transfer_tests::{ChunkStream, Ledger, TestFile, download, upload_file};

const MIB: u32 = 1 << 20;
/// The filesystem the server stores on: room for one 5 MiB file, not two.
const DISK: u64 = 8 << 20;

async fn small_disk_server(ledger: Ledger) -> (TransferdProcess, Client) {
    let server = TransferdProcess::start_on_small_disk(
        ledger,
        DISK,
        &["--gc-grace-secs", "0", "--gc-interval-secs", "1"],
    )
    .await;
    let client = TransferServiceClient::connect(server.endpoint())
        .await
        .expect("connecting to transferd");
    (server, client)
}

fn is_storage_full(status: &tonic::Status) -> bool {
    status.code() == Code::ResourceExhausted
        && status
            .metadata()
            .get("x-transfer-reason")
            .is_some_and(|reason| reason == "storage-full")
}

async fn session(client: &mut Client, file: &TestFile) -> UploadSession {
    match check(client, None, file, MIB).await {
        Ok(Answer::Session(session)) => session,
        other => panic!("expected a session for {}, got {other:?}", file.name),
    }
}

async fn a_full_disk_refuses_a_new_upload_at_check_upload_until_space_is_freed(ledger: Ledger) {
    let (_server, mut client) = small_disk_server(ledger).await;
    let first = TestFile::new("first.bin", 5 * MIB as usize, 170);
    let stored = upload_file(&mut client, None, &first, MIB).await;

    let second = TestFile::new("second.bin", 5 * MIB as usize, 171);
    let status = check(&mut client, None, &second, MIB).await.unwrap_err();
    assert!(is_storage_full(&status), "{status:?}");
    let said = status.message();
    assert!(said.contains("full") && said.contains("short"), "{said}");
    assert!(
        !said.contains("/tmp"),
        "the server's paths stay its own: {said}"
    );
    let listed = list_all(&mut client, None, ListFilesRequest::default()).await;
    assert_eq!(listed.len(), 1, "no session was opened for it");

    // Deleting the first file frees its space once the collector has run.
    delete_file(&mut client, None, &stored.file_id)
        .await
        .unwrap();
    for _ in 0..300 {
        match check(&mut client, None, &second, MIB).await {
            Ok(Answer::Session(_)) => {
                let done = upload_file(&mut client, None, &second, MIB).await;
                let read = download(&mut client, None, &done.file_id, 0, 0)
                    .await
                    .unwrap();
                assert!(read.data == second.data);
                return;
            }
            Err(status) if is_storage_full(&status) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("{other:?}"),
        }
    }
    panic!("the space of the deleted file was not freed within 30 s");
}

async fn an_upload_that_begins_reserves_its_space_and_the_next_is_refused_at_its_start(
    ledger: Ledger,
) {
    let (_server, mut client) = small_disk_server(ledger).await;
    let one = TestFile::new("one.bin", 5 * MIB as usize, 172);
    let two = TestFile::new("two.bin", 5 * MIB as usize, 173);
    // Both are announced while nothing is reserved yet.
    let first = session(&mut client, &one).await;
    let second = session(&mut client, &two).await;

    // The first stream reserves all of the first file's space at once.
    let mut stream = ChunkStream::open(&mut client, None, &first.upload_id)
        .await
        .unwrap();
    stream.send_and_ack(&one, MIB, 0..1).await;

    // The second cannot begin: refused before any byte is taken, none recorded.
    let status = match ChunkStream::open(&mut client, None, &second.upload_id).await {
        Err(status) => status,
        Ok(mut refused) => {
            refused.send_chunk(0, two.chunk(0, MIB)).await;
            refused.drain().await.1.unwrap_err()
        }
    };
    assert!(is_storage_full(&status), "{status:?}");
    assert!(session(&mut client, &two).await.committed.is_empty());

    // The first completes in the space it reserved.
    stream.send_and_ack(&one, MIB, 1..5).await;
    let done = stream.expect_completed().await;
    let read = download(&mut client, None, &done.file_id, 0, 0)
        .await
        .unwrap();
    assert!(read.data == one.data);
}

async fn the_client_waits_for_room_and_completes_once_space_is_freed(ledger: Ledger) {
    let (server, mut client) = small_disk_server(ledger).await;
    let first = TestFile::new("first.bin", 5 * MIB as usize, 174);
    let stored = upload_file(&mut client, None, &first, MIB).await;

    let second = TestFile::new("second.bin", 5 * MIB as usize, 175);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("second.bin");
    std::fs::write(&path, &second.data).unwrap();
    let mut config = transfer_client::ClientConfig::new(server.endpoint());
    config.retry.retry_for = Duration::from_secs(60);
    let library = transfer_client::TransferClient::new(config).unwrap();
    let upload = library.upload_path(&path);
    // It is refused for room, and waits.
    let mut progress = upload.watch();
    progress
        .wait_for(|p| {
            matches!(&p.state, transfer_client::TransferState::Retrying { reason, .. }
                if reason.contains("full"))
        })
        .await
        .unwrap();

    delete_file(&mut client, None, &stored.file_id)
        .await
        .unwrap();
    let uploaded = tokio::time::timeout(Duration::from_secs(60), upload.wait())
        .await
        .expect("the upload completes once the collector freed the space")
        .expect("the upload completes");
    let read = download(&mut client, None, &uploaded.file.file_id, 0, 0)
        .await
        .unwrap();
    assert!(read.data == second.data);
}

transfer_tests::ledger_tests!(
    a_full_disk_refuses_a_new_upload_at_check_upload_until_space_is_freed,
    an_upload_that_begins_reserves_its_space_and_the_next_is_refused_at_its_start,
    the_client_waits_for_room_and_completes_once_space_is_freed,
);
