use transfer_proto::v1::ChunkOutcome;
use transfer_tests::client::open_session;
use transfer_tests::{ChunkStream, Ledger, TestFile, TestServer, download, upload_file};

use crate::CHUNK;

async fn two_clients_uploading_the_same_content_at_once_end_with_one_correct_file(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let file = TestFile::new("race.bin", 64 * CHUNK as usize + 5, 60);
    let mut uploads = Vec::new();
    for _ in 0..2 {
        let mut client = server.client().await;
        let file = file.clone();
        uploads.push(tokio::spawn(async move {
            let done = upload_file(&mut client, None, &file, CHUNK).await;
            download(&mut client, None, &done.file_id, 0, 0)
                .await
                .unwrap()
                .data
        }));
    }
    for upload in uploads {
        assert_eq!(upload.await.unwrap(), file.data);
    }
    assert_eq!(server.content_files().len(), 1, "no duplicate blob");
    assert!(server.staging_files().is_empty());
}

async fn two_owners_uploading_the_same_content_at_once_share_one_blob(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let file = TestFile::new("race2.bin", 64 * CHUNK as usize, 61);
    let mut uploads = Vec::new();
    for owner in ["alice", "bob"] {
        let mut client = server.client().await;
        let file = file.clone();
        uploads.push(tokio::spawn(async move {
            let done = upload_file(&mut client, Some(owner), &file, CHUNK).await;
            download(&mut client, Some(owner), &done.file_id, 0, 0)
                .await
                .unwrap()
                .data
        }));
    }
    for upload in uploads {
        assert_eq!(upload.await.unwrap(), file.data);
    }
    assert_eq!(server.content_files().len(), 1, "no duplicate blob");
    assert!(server.staging_files().is_empty());
}

async fn two_streams_on_one_session_store_each_chunk_once(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("shared-session.bin", 32 * CHUNK as usize, 62);
    let session = open_session(&mut client, None, &file, CHUNK).await;
    let mut streams = Vec::new();
    // Both streams attach (each has chunk 0 acked) before either sends the rest.
    let attached = std::sync::Arc::new(tokio::sync::Barrier::new(2));
    for _ in 0..2 {
        let mut client = server.client().await;
        let upload_id = session.upload_id.clone();
        let file = file.clone();
        let attached = attached.clone();
        streams.push(tokio::spawn(async move {
            let mut stream = ChunkStream::open(&mut client, None, &upload_id)
                .await
                .unwrap();
            stream.send_chunk(0, file.chunk(0, CHUNK)).await;
            stream.expect_ack().await;
            attached.wait().await;
            for index in 1..32 {
                stream.send_chunk(index, file.chunk(index, CHUNK)).await;
                if index % 8 == 0 {
                    // Stay within the window.
                    for _ in 0..8 {
                        match stream.next().await.unwrap() {
                            Some(transfer_proto::v1::upload_chunks_response::Message::Ack(ack)) => {
                                assert_ne!(ack.outcome(), ChunkOutcome::BadChecksum);
                            }
                            Some(_) => return true,
                            None => return false,
                        }
                    }
                }
            }
            let (_, end) = stream.drain().await;
            end.unwrap().is_some()
        }));
    }
    for stream in streams {
        assert!(
            stream.await.unwrap(),
            "each stream hears that the upload completed"
        );
    }
    let rows = server.chunk_rows().await;
    assert_eq!(rows, 32);
    let downloaded = download(&mut client, None, &session.upload_id, 0, 0)
        .await
        .unwrap();
    assert_eq!(downloaded.data, file.data);
}

transfer_tests::ledger_tests!(
    two_clients_uploading_the_same_content_at_once_end_with_one_correct_file,
    two_owners_uploading_the_same_content_at_once_share_one_blob,
    two_streams_on_one_session_store_each_chunk_once,
);
