//! No access by hash: knowing another owner's content digest and size gives nothing.

use transfer_proto::v1::check_upload_response::Result as Check;
use transfer_tests::client::check;
use transfer_tests::{Ledger, TestFile, TestServer, upload_file};

const CHUNK: u32 = 4096;

async fn another_owners_md5_and_size_give_no_file_and_no_hint(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let secret = TestFile::new("key.pem", 150_043, 11);
    upload_file(&mut client, Some("victim"), &secret, CHUNK).await;

    // The attacker asks with the victim's MD5 and size, and with a wrong guess of the
    // same size: both answers are new, empty sessions, alike in every field but the id.
    let guess = TestFile::new("guess.pem", 150_043, 12);
    let Ok(Check::Session(hit)) = check(&mut client, Some("mallory"), &secret, CHUNK).await else {
        panic!("another owner's content must not be an instant upload");
    };
    let Ok(Check::Session(miss)) = check(&mut client, Some("mallory"), &guess, CHUNK).await else {
        panic!("unknown content needs an upload");
    };
    let shape = |s: &transfer_proto::v1::UploadSession| {
        (
            s.resumed,
            s.committed.clone(),
            s.chunk_size,
            s.chunk_count,
            s.max_window,
        )
    };
    assert_eq!(shape(&hit), shape(&miss));
    // And the victim's own instant upload still works.
    let Ok(Check::AlreadyStored(_)) = check(&mut client, Some("victim"), &secret, CHUNK).await
    else {
        panic!("the owner's own content is an instant upload");
    };
}

transfer_tests::ledger_tests!(another_owners_md5_and_size_give_no_file_and_no_hint);

/// The code a stream of `owner` into `upload_id` ends with.
async fn stream_code(
    client: &mut transfer_tests::client::Client,
    owner: &str,
    upload_id: &str,
) -> tonic::Code {
    stream_status(client, owner, upload_id).await.code()
}

/// The status a stream of `owner` into `upload_id` ends with.
async fn stream_status(
    client: &mut transfer_tests::client::Client,
    owner: &str,
    upload_id: &str,
) -> tonic::Status {
    match transfer_tests::ChunkStream::open(client, Some(owner), upload_id).await {
        Err(status) => status,
        Ok(mut stream) => match stream.next().await {
            Err(status) => status,
            Ok(message) => panic!("a stream into another owner's upload got {message:?}"),
        },
    }
}

/// What mallory's stream into and abort of `id` are answered, with the id itself taken
/// out: for another owner's upload in any state, word for word what an unknown id gets.
async fn answers_for(client: &mut transfer_tests::client::Client, id: &str) -> (String, String) {
    let stream = stream_status(client, "mallory", id).await;
    let abort = transfer_tests::client::abort(client, Some("mallory"), id)
        .await
        .unwrap_err();
    let shown = |s: tonic::Status| format!("{:?}: {}", s.code(), s.message().replace(id, "ID"));
    (shown(stream), shown(abort))
}

async fn another_owners_upload_is_not_found_in_every_state(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let codes = |client: &mut transfer_tests::client::Client, id: String| {
        let mut client = client.clone();
        async move {
            let stream = stream_code(&mut client, "mallory", &id).await;
            let abort = transfer_tests::client::abort(&mut client, Some("mallory"), &id)
                .await
                .unwrap_err()
                .code();
            (stream, abort)
        }
    };
    let not_found = (tonic::Code::NotFound, tonic::Code::NotFound);
    let unknown = answers_for(&mut client, &uuid::Uuid::new_v4().to_string()).await;

    let open = transfer_tests::client::open_session(
        &mut client,
        Some("alice"),
        &TestFile::new("open.bin", 10_000, 13),
        CHUNK,
    )
    .await;
    assert_eq!(
        codes(&mut client, open.upload_id.clone()).await,
        not_found,
        "open"
    );

    let aborted = transfer_tests::client::open_session(
        &mut client,
        Some("alice"),
        &TestFile::new("aborted.bin", 10_000, 14),
        CHUNK,
    )
    .await;
    transfer_tests::client::abort(&mut client, Some("alice"), &aborted.upload_id)
        .await
        .unwrap();
    assert_eq!(
        codes(&mut client, aborted.upload_id.clone()).await,
        not_found,
        "aborted"
    );
    // Alice herself is told it is closed.
    assert_eq!(
        stream_code(&mut client, "alice", &aborted.upload_id).await,
        tonic::Code::FailedPrecondition
    );

    // Declared with a wrong MD5: the upload fails when its last chunk arrives.
    let mut lying = TestFile::new("failed.bin", 10_000, 15);
    lying.md5 = vec![0; 16];
    let failed =
        transfer_tests::client::open_session(&mut client, Some("alice"), &lying, CHUNK).await;
    let mut stream =
        transfer_tests::ChunkStream::open(&mut client, Some("alice"), &failed.upload_id)
            .await
            .unwrap();
    let all: Vec<u64> = (0..failed.chunk_count).collect();
    let (_, end) = stream
        .send_windowed(&lying, CHUNK, &all, failed.max_window)
        .await;
    assert_eq!(end.unwrap_err().code(), tonic::Code::DataLoss);
    assert_eq!(
        codes(&mut client, failed.upload_id.clone()).await,
        not_found,
        "failed"
    );

    let done = upload_file(
        &mut client,
        Some("alice"),
        &TestFile::new("done.bin", 10_000, 16),
        CHUNK,
    )
    .await;
    assert_eq!(
        codes(&mut client, done.file_id.clone()).await,
        not_found,
        "complete"
    );

    for id in [
        &open.upload_id,
        &aborted.upload_id,
        &failed.upload_id,
        &done.file_id,
    ] {
        assert_eq!(answers_for(&mut client, id).await, unknown, "{id}");
    }
}

transfer_tests::ledger_tests!(another_owners_upload_is_not_found_in_every_state);
