use tonic::Code;
use transfer_proto::v1::FileState;
use transfer_tests::client::{get_file, open_session};
use transfer_tests::{ChunkStream, Ledger, TestFile, TestServer, md5, upload_file};

use crate::CHUNK;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn a_whole_file_md5_mismatch_fails_the_upload_with_data_loss(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let real = TestFile::new("lying.bin", 5 * CHUNK as usize, 40);
    let declared = md5(b"something else entirely");
    let lying = TestFile {
        md5: declared.clone(),
        ..real.clone()
    };
    let session = open_session(&mut client, None, &lying, CHUNK).await;
    let mut stream = ChunkStream::open(&mut client, None, &session.upload_id)
        .await
        .unwrap();
    for index in 0..5 {
        stream.send_chunk(index, real.chunk(index, CHUNK)).await;
    }
    let (acks, end) = stream.drain().await;
    assert_eq!(acks.len(), 5);
    let status = end.expect_err("the upload must fail");
    assert_eq!(status.code(), Code::DataLoss);
    assert!(
        status.message().contains(&hex(&declared)),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains(&hex(&real.md5)),
        "{}",
        status.message()
    );

    let file = get_file(&mut client, None, &session.upload_id).await;
    assert_eq!(file.state(), FileState::Failed);
    assert!(
        file.failure.contains(&hex(&declared)),
        "failure: {}",
        file.failure
    );
    assert!(
        server.staging_files().is_empty(),
        "the staged bytes are discarded"
    );
    assert!(
        server.content_files().is_empty(),
        "nothing was stored as content"
    );

    // The same content with its true MD5 uploads normally, in a new session.
    let again = open_session(&mut client, None, &real, CHUNK).await;
    assert_ne!(again.upload_id, session.upload_id);
    assert!(again.committed.is_empty());
    let done = upload_file(&mut client, None, &real, CHUNK).await;
    assert_eq!(done.md5.as_ref(), real.md5.as_slice());
}

transfer_tests::ledger_tests!(a_whole_file_md5_mismatch_fails_the_upload_with_data_loss,);
