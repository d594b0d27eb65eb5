use transfer_proto::v1::ChunkRange;
use transfer_tests::client::open_session;
use transfer_tests::{ChunkStream, Ledger, TestFile, TestServer, download};

use crate::CHUNK;

async fn an_upload_resumes_after_a_server_restart_and_verifies_the_whole_file(ledger: Ledger) {
    let mut server = TestServer::start(ledger).await;
    let file = TestFile::new("restart.bin", 20 * CHUNK as usize + 1, 90);
    let upload_id = {
        let mut client = server.client().await;
        let session = open_session(&mut client, None, &file, CHUNK).await;
        let mut stream = ChunkStream::open(&mut client, None, &session.upload_id)
            .await
            .unwrap();
        // A prefix and a chunk past a gap, so the new server must rebuild its hash of the
        // prefix from the staged bytes and still place the later chunk.
        for index in (0..8).chain([15]) {
            stream.send_chunk(index, file.chunk(index, CHUNK)).await;
        }
        for _ in 0..9 {
            stream.expect_ack().await;
        }
        session.upload_id
    };

    server.restart().await;

    let mut client = server.client().await;
    let session = open_session(&mut client, None, &file, CHUNK).await;
    assert_eq!(session.upload_id, upload_id);
    assert_eq!(
        session.committed,
        vec![
            ChunkRange { start: 0, end: 8 },
            ChunkRange { start: 15, end: 16 }
        ]
    );
    let mut stream = ChunkStream::open(&mut client, None, &upload_id)
        .await
        .unwrap();
    for index in (8..21).filter(|i| *i != 15) {
        stream.send_chunk(index, file.chunk(index, CHUNK)).await;
    }
    let (acks, end) = stream.drain().await;
    assert_eq!(acks.len(), 12);
    let done = end
        .unwrap()
        .expect("the upload completes after the restart");
    assert_eq!(done.md5.as_ref(), file.md5.as_slice());
    let downloaded = download(&mut client, None, &done.file_id, 0, 0)
        .await
        .unwrap();
    assert_eq!(downloaded.data, file.data);
}

transfer_tests::ledger_tests!(an_upload_resumes_after_a_server_restart_and_verifies_the_whole_file,);
