use tonic::Code;
use transfer_proto::v1::FileState;
use transfer_tests::client::open_session;
use transfer_tests::{Ledger, TestFile, TestServer, download, upload_file};

use crate::CHUNK;

async fn a_whole_file_downloads_byte_identical_with_its_metadata(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    // Over 2 MiB: several download pieces, and a last piece that is short.
    let file = TestFile::new("big.bin", (2 << 20) + 12_345, 70);
    let done = upload_file(&mut client, None, &file, 256 * 1024).await;
    let downloaded = download(&mut client, None, &done.file_id, 0, 0)
        .await
        .unwrap();
    assert_eq!(downloaded.data, file.data);
    assert_eq!(downloaded.file.name, "big.bin");
    assert_eq!(downloaded.file.size, file.data.len() as u64);
    assert_eq!(downloaded.file.md5.as_ref(), file.md5.as_slice());
    assert_eq!(downloaded.file.state(), FileState::Complete);
}

async fn a_download_from_an_offset_returns_the_rest_of_the_file(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("offset.bin", (1 << 20) + 5_000, 71);
    let done = upload_file(&mut client, None, &file, 64 * 1024).await;
    for offset in [1, 4095, 1 << 20, file.data.len() as u64 - 1] {
        let downloaded = download(&mut client, None, &done.file_id, offset, 0)
            .await
            .unwrap();
        assert_eq!(
            downloaded.data,
            file.data[offset as usize..],
            "from offset {offset}"
        );
    }
}

async fn a_download_with_a_length_returns_that_range(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("range.bin", 100_000, 72);
    let done = upload_file(&mut client, None, &file, CHUNK).await;
    let downloaded = download(&mut client, None, &done.file_id, 1000, 5000)
        .await
        .unwrap();
    assert_eq!(downloaded.data, file.data[1000..6000]);
    // A length past the end stops at the end.
    let tail = download(&mut client, None, &done.file_id, 99_000, 5000)
        .await
        .unwrap();
    assert_eq!(tail.data, file.data[99_000..]);
}

async fn a_download_at_the_end_sends_only_the_metadata(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("end.bin", 10_000, 73);
    let done = upload_file(&mut client, None, &file, CHUNK).await;
    let downloaded = download(&mut client, None, &done.file_id, 10_000, 0)
        .await
        .unwrap();
    assert!(downloaded.data.is_empty());
    assert_eq!(downloaded.file.size, 10_000);
}

async fn a_download_past_the_end_is_out_of_range(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("short.bin", 10_000, 74);
    let done = upload_file(&mut client, None, &file, CHUNK).await;
    let status = download(&mut client, None, &done.file_id, 10_001, 0)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange);
    assert!(status.message().contains("10001"), "{}", status.message());
}

async fn downloading_an_unknown_or_malformed_id_fails_clearly(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let unknown = uuid::Uuid::new_v4().to_string();
    let status = download(&mut client, None, &unknown, 0, 0)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = download(&mut client, None, "not-an-id", 0, 0)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

async fn a_file_still_uploading_cannot_be_downloaded(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("partial.bin", 10_000, 75);
    let session = open_session(&mut client, None, &file, CHUNK).await;
    let status = download(&mut client, None, &session.upload_id, 0, 0)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("uploading"),
        "{}",
        status.message()
    );
}

transfer_tests::ledger_tests!(
    a_whole_file_downloads_byte_identical_with_its_metadata,
    a_download_from_an_offset_returns_the_rest_of_the_file,
    a_download_with_a_length_returns_that_range,
    a_download_at_the_end_sends_only_the_metadata,
    a_download_past_the_end_is_out_of_range,
    downloading_an_unknown_or_malformed_id_fails_clearly,
    a_file_still_uploading_cannot_be_downloaded,
);
