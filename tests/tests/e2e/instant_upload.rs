use transfer_proto::v1::FileState;
use transfer_proto::v1::check_upload_response::Result as Check;
use transfer_tests::client::check;
use transfer_tests::{Ledger, TestFile, TestServer, download, upload_file};

use crate::CHUNK;

async fn stored_content_is_an_instant_upload_with_no_session(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("report.bin", 100_000, 1);
    let first = upload_file(&mut client, None, &file, CHUNK).await;

    let again = TestFile {
        name: "copy-of-report.bin".into(),
        ..file.clone()
    };
    let Ok(Check::AlreadyStored(copy)) = check(&mut client, None, &again, CHUNK).await else {
        panic!("content already stored must be an instant upload");
    };
    assert_ne!(
        copy.file_id, first.file_id,
        "the caller gets a file of its own"
    );
    assert_eq!(copy.name, "copy-of-report.bin");
    assert_eq!(copy.size, 100_000);
    assert_eq!(copy.md5.as_ref(), file.md5.as_slice());
    assert_eq!(copy.state(), FileState::Complete);

    let downloaded = download(&mut client, None, &copy.file_id, 0, 0)
        .await
        .unwrap();
    assert_eq!(downloaded.data, file.data);
    assert_eq!(
        server.content_files().len(),
        1,
        "the content is stored once"
    );
}

async fn asking_again_for_the_same_name_returns_the_same_file(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("same.bin", 10_000, 2);
    let first = upload_file(&mut client, None, &file, CHUNK).await;
    let Ok(Check::AlreadyStored(again)) = check(&mut client, None, &file, CHUNK).await else {
        panic!("expected an instant upload");
    };
    assert_eq!(again.file_id, first.file_id);
}

async fn another_owners_content_travels_again_and_is_stored_once(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("shared.bin", 50_000, 3);
    let alice = upload_file(&mut client, Some("alice"), &file, CHUNK).await;

    // Bob's CheckUpload of alice's content looks exactly like one of unknown content:
    // a new session with nothing committed. The content's digest gives him nothing.
    let unknown = TestFile::new("unknown.bin", 50_000, 33);
    let Ok(Check::Session(fresh)) = check(&mut client, Some("bob"), &unknown, CHUNK).await else {
        panic!("unknown content needs an upload");
    };
    let Ok(Check::Session(bobs_session)) = check(&mut client, Some("bob"), &file, CHUNK).await
    else {
        panic!("another owner's content is never an instant upload");
    };
    assert_eq!(
        (
            bobs_session.resumed,
            bobs_session.committed.len(),
            bobs_session.chunk_count
        ),
        (fresh.resumed, fresh.committed.len(), fresh.chunk_count),
        "the answer for another owner's content is the answer for unknown content"
    );

    // Bob sends the bytes; the server keeps one copy of the content.
    let bob = upload_file(&mut client, Some("bob"), &file, CHUNK).await;
    assert_ne!(alice.file_id, bob.file_id);
    let bobs = download(&mut client, Some("bob"), &bob.file_id, 0, 0)
        .await
        .unwrap();
    assert_eq!(bobs.data, file.data);
    // Each owner sees only its own file.
    let status = download(&mut client, Some("bob"), &alice.file_id, 0, 0)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    // Each completion stored its own copy; the collector deletes the spare ones.
    server.collect_garbage_now().await;
    assert_eq!(server.content_files().len(), 1);
}

async fn same_size_with_a_different_md5_is_not_an_instant_upload(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    upload_file(&mut client, None, &TestFile::new("a.bin", 20_000, 4), CHUNK).await;
    let other = TestFile::new("b.bin", 20_000, 5);
    assert!(matches!(
        check(&mut client, None, &other, CHUNK).await,
        Ok(Check::Session(_))
    ));
}

async fn an_instant_upload_closes_the_owners_open_session_for_that_content(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("overtaken.bin", 10 * CHUNK as usize, 6);
    let alices =
        transfer_tests::client::open_session(&mut client, Some("alice"), &file, CHUNK).await;
    let mut stream =
        transfer_tests::ChunkStream::open(&mut client, Some("alice"), &alices.upload_id)
            .await
            .unwrap();
    stream.send_chunk(0, file.chunk(0, CHUNK)).await;
    stream.expect_ack().await;
    drop(stream);

    // Alice stores the same content in a single-pass upload of her own meanwhile.
    let single_pass =
        transfer_tests::client::probe_session(&mut client, Some("alice"), &file, CHUNK).await;
    assert_ne!(single_pass.upload_id, alices.upload_id);
    let mut stream =
        transfer_tests::ChunkStream::open(&mut client, Some("alice"), &single_pass.upload_id)
            .await
            .unwrap();
    stream.send_digest(&file.md5).await;
    let all: Vec<u64> = (0..single_pass.chunk_count).collect();
    let (_, end) = stream
        .send_windowed(&file, single_pass.chunk_size, &all, single_pass.max_window)
        .await;
    assert!(matches!(end, Ok(Some(_))), "{end:?}");

    let Ok(Check::AlreadyStored(copy)) = check(&mut client, Some("alice"), &file, CHUNK).await
    else {
        panic!("alice's content is stored now: an instant upload");
    };
    let old = transfer_tests::client::get_file(&mut client, Some("alice"), &alices.upload_id).await;
    assert_eq!(
        old.state(),
        FileState::Aborted,
        "the superseded session is closed"
    );
    assert_ne!(copy.file_id, alices.upload_id);
    assert!(
        server.staging_files().is_empty(),
        "its staged bytes are gone"
    );
}

transfer_tests::ledger_tests!(
    an_instant_upload_closes_the_owners_open_session_for_that_content,
    stored_content_is_an_instant_upload_with_no_session,
    asking_again_for_the_same_name_returns_the_same_file,
    another_owners_content_travels_again_and_is_stored_once,
    same_size_with_a_different_md5_is_not_an_instant_upload,
);
