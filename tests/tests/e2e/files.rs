//! `ListFiles` and `DeleteFile`: an owner's files, a page at a time, and deleted in any
//! state; another owner's are NOT_FOUND.

use tonic::Code;
use transfer_proto::v1::{FileInfo, FileState, ListFilesRequest};
use transfer_tests::client::{check, delete_file, get_file, list_all, list_files, open_session};
use transfer_tests::{ChunkStream, Ledger, TestFile, TestServer, download, upload_file};

use crate::CHUNK;

fn ids(files: &[FileInfo]) -> Vec<String> {
    files.iter().map(|f| f.file_id.clone()).collect()
}

async fn an_owner_lists_its_files_newest_first_page_by_page(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let mut newest_first = Vec::new();
    for i in 0..5u8 {
        let file = TestFile::new(
            &format!("report-{i}.csv"),
            5000 + usize::from(i),
            90 + u64::from(i),
        );
        newest_first.push(upload_file(&mut client, None, &file, CHUNK).await.file_id);
    }
    let open = TestFile::new("notes.txt", 3 * CHUNK as usize, 96);
    newest_first.push(
        open_session(&mut client, None, &open, CHUNK)
            .await
            .upload_id,
    );
    newest_first.reverse();
    upload_file(
        &mut client,
        Some("mallory"),
        &TestFile::new("m.bin", 100, 97),
        CHUNK,
    )
    .await;

    let pages = ListFilesRequest {
        page_size: 2,
        ..Default::default()
    };
    let first = list_files(&mut client, None, pages.clone()).await.unwrap();
    assert_eq!(ids(&first.files), newest_first[..2]);
    assert!(!first.next_page_token.is_empty());
    assert_eq!(ids(&list_all(&mut client, None, pages).await), newest_first);

    let complete = ListFilesRequest {
        state: FileState::Complete.into(),
        ..Default::default()
    };
    assert_eq!(
        ids(&list_all(&mut client, None, complete).await),
        newest_first[1..]
    );
    let uploading = ListFilesRequest {
        state: FileState::Uploading.into(),
        ..Default::default()
    };
    assert_eq!(
        ids(&list_all(&mut client, None, uploading).await),
        newest_first[..1]
    );
    let named = ListFilesRequest {
        name_prefix: "report-3".into(),
        ..Default::default()
    };
    let found = list_all(&mut client, None, named).await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].name, "report-3.csv");
    assert_eq!(found[0].state(), FileState::Complete);

    let theirs = list_all(&mut client, Some("mallory"), ListFilesRequest::default()).await;
    assert_eq!(theirs.len(), 1, "only the caller's own files");
    let nobody = list_all(&mut client, Some("nobody"), ListFilesRequest::default()).await;
    assert!(nobody.is_empty());
}

async fn a_listing_with_a_bad_token_or_state_is_an_invalid_argument(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    for (request, field) in [
        (
            ListFilesRequest {
                page_token: "not a token".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            ListFilesRequest {
                state: 42,
                ..Default::default()
            },
            "state",
        ),
        (
            ListFilesRequest {
                name_prefix: "x".repeat(1025),
                ..Default::default()
            },
            "name_prefix",
        ),
        (
            ListFilesRequest {
                name_prefix: "a\0b".into(),
                ..Default::default()
            },
            "name_prefix",
        ),
    ] {
        let status = list_files(&mut client, None, request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains(field), "{}", status.message());
    }
    // A page size past the most is the most, not an error.
    let large = ListFilesRequest {
        page_size: 1_000_000,
        ..Default::default()
    };
    assert!(list_files(&mut client, None, large).await.is_ok());
}

async fn a_deleted_file_is_not_found_by_any_call(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("gone.bin", 3 * CHUNK as usize + 5, 98);
    let done = upload_file(&mut client, None, &file, CHUNK).await;

    // Another owner cannot delete it, and learns nothing by trying.
    let status = delete_file(&mut client, Some("mallory"), &done.file_id)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let unknown = uuid::Uuid::new_v4().to_string();
    let unknown_status = delete_file(&mut client, Some("mallory"), &unknown)
        .await
        .unwrap_err();
    assert_eq!(
        status.message().replace(&done.file_id, "ID"),
        unknown_status.message().replace(&unknown, "ID"),
        "another owner's file reads as no file"
    );
    assert_eq!(
        get_file(&mut client, None, &done.file_id).await.file_id,
        done.file_id
    );

    delete_file(&mut client, None, &done.file_id).await.unwrap();
    let gone = |status: tonic::Status| {
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    };
    gone(
        client
            .get_file(transfer_proto::v1::GetFileRequest {
                file_id: done.file_id.clone(),
            })
            .await
            .unwrap_err(),
    );
    gone(
        download(&mut client, None, &done.file_id, 0, 0)
            .await
            .unwrap_err(),
    );
    gone(
        delete_file(&mut client, None, &done.file_id)
            .await
            .unwrap_err(),
    );
    assert!(
        list_all(&mut client, None, ListFilesRequest::default())
            .await
            .is_empty()
    );
    let status = delete_file(&mut client, None, "not-a-uuid")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

async fn deleting_an_open_upload_aborts_it_and_drops_its_staging(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("half.bin", 8 * CHUNK as usize, 99);
    let session = open_session(&mut client, None, &file, CHUNK).await;
    let mut stream = ChunkStream::open(&mut client, None, &session.upload_id)
        .await
        .unwrap();
    stream.send_and_ack(&file, CHUNK, 0..3).await;
    assert_eq!(server.staging_files().len(), 1);

    delete_file(&mut client, None, &session.upload_id)
        .await
        .unwrap();

    stream.send_chunk(3, file.chunk(3, CHUNK)).await;
    let status = stream.drain().await.1.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(server.staging_files().is_empty());
    assert_eq!(server.chunk_rows().await, 0);
    let status = client
        .get_file(transfer_proto::v1::GetFileRequest {
            file_id: session.upload_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    // The same file starts afresh.
    let again = open_session(&mut client, None, &file, CHUNK).await;
    assert_ne!(again.upload_id, session.upload_id);
    assert!(again.committed.is_empty());
    assert!(matches!(
        check(&mut client, None, &file, CHUNK).await,
        Ok(transfer_proto::v1::check_upload_response::Result::Session(
            _
        ))
    ));
}

async fn an_owner_at_its_file_cap_gets_no_new_file_but_resumes_and_deletes(ledger: Ledger) {
    let server = TestServer::start_with(ledger, |settings| settings.max_files_per_owner = 2).await;
    let mut client = server.client().await;
    let stored = TestFile::new("stored.bin", 3 * CHUNK as usize, 180);
    let done = upload_file(&mut client, None, &stored, CHUNK).await;
    let open = TestFile::new("open.bin", 3 * CHUNK as usize, 181);
    let session = open_session(&mut client, None, &open, CHUNK).await;

    let third = TestFile::new("third.bin", 3 * CHUNK as usize, 182);
    let copy = TestFile {
        name: "copy.bin".into(),
        ..stored.clone()
    };
    for refused in [&third, &copy] {
        let status = check(&mut client, None, refused, CHUNK).await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("2 files"), "{}", status.message());
    }
    // Its open upload resumes, and another owner is not held back.
    let resumed = open_session(&mut client, None, &open, CHUNK).await;
    assert_eq!(resumed.upload_id, session.upload_id);
    upload_file(&mut client, Some("someone-else"), &third, CHUNK).await;

    delete_file(&mut client, None, &done.file_id).await.unwrap();
    upload_file(&mut client, None, &third, CHUNK).await;
}

transfer_tests::ledger_tests!(
    an_owner_at_its_file_cap_gets_no_new_file_but_resumes_and_deletes,
    an_owner_lists_its_files_newest_first_page_by_page,
    a_listing_with_a_bad_token_or_state_is_an_invalid_argument,
    a_deleted_file_is_not_found_by_any_call,
    deleting_an_open_upload_aborts_it_and_drops_its_staging,
);
