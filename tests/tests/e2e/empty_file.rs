use transfer_proto::v1::check_upload_response::Result as Check;
use transfer_tests::client::{check, open_session};
use transfer_tests::{ChunkStream, Ledger, TestFile, TestServer, download};

use crate::CHUNK;

async fn a_zero_byte_file_uploads_downloads_and_is_then_instant(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let empty = TestFile::new("empty.txt", 0, 50);
    let session = open_session(&mut client, None, &empty, CHUNK).await;
    assert_eq!(session.chunk_count, 0);

    let mut stream = ChunkStream::open(&mut client, None, &session.upload_id)
        .await
        .unwrap();
    let done = stream.expect_completed().await;
    assert_eq!(done.size, 0);
    assert_eq!(done.md5.as_ref(), empty.md5.as_slice());

    let downloaded = download(&mut client, None, &done.file_id, 0, 0)
        .await
        .unwrap();
    assert!(downloaded.data.is_empty());
    assert_eq!(downloaded.file.size, 0);

    let again = TestFile::new("another-empty.txt", 0, 51);
    assert!(matches!(
        check(&mut client, None, &again, CHUNK).await,
        Ok(Check::AlreadyStored(_))
    ));
}

transfer_tests::ledger_tests!(a_zero_byte_file_uploads_downloads_and_is_then_instant,);
