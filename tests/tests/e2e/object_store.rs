//! `transferd` on an S3 bucket (SeaweedFS): chunk sizes the store takes, content written
//! by completing a multipart upload, the hash finished from the completed object when
//! the bytes are no longer in memory, and content deleted from the bucket by the
//! collector.

use tonic::Code;
use transfer_proto::v1::{CheckUploadRequest, check_upload_response};
use transfer_service::server::Transferd;
use transfer_tests::client::{delete_file, open_session};
use transfer_tests::s3::{S3Server, seaweedfs};
use transfer_tests::server::default_settings;
use transfer_tests::{ChunkStream, Ledger, TestFile, TestServer, download};

const MIB: usize = 1 << 20;

/// A server on a fresh prefix of the SeaweedFS bucket.
async fn server_on_s3(ledger: Ledger) -> (TestServer, &'static S3Server, String) {
    let s3 = seaweedfs();
    let url = s3.fresh_url();
    let server = TestServer::start_with(ledger, |settings| s3.configure(settings, &url)).await;
    (server, s3, url)
}

/// The bucket's keys by kind: content objects and staging markers.
async fn objects(s3: &S3Server, url: &str) -> (Vec<String>, Vec<String>) {
    let keys = s3.keys(url).await;
    let of = |kind: &str| {
        keys.iter()
            .filter(|key| key.starts_with(kind))
            .cloned()
            .collect::<Vec<_>>()
    };
    (of("content/"), of("staging/"))
}

async fn an_upload_into_a_bucket_takes_5_mib_parts_completes_and_downloads_intact(ledger: Ledger) {
    let (server, s3, url) = server_on_s3(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("s3.bin", 2 * 5 * MIB + 100, 301);
    // A client that asks for 1 MiB chunks gets S3's smallest part.
    let session = open_session(&mut client, None, &file, MIB as u32).await;
    assert_eq!(session.chunk_size, 5 * MIB as u32);
    assert_eq!(session.chunk_count, 3);
    let (_, staging) = objects(s3, &url).await;
    assert_eq!(staging.len(), 0, "staging begins with the first stream");
    let mut stream = ChunkStream::open(&mut client, None, &session.upload_id)
        .await
        .unwrap();
    stream.send_and_ack(&file, session.chunk_size, [2, 0]).await;
    let (_, staging) = objects(s3, &url).await;
    assert_eq!(staging.len(), 1, "a marker while the upload is open");
    stream
        .send_chunk(1, file.chunk(1, session.chunk_size))
        .await;
    let (_, end) = stream.drain().await;
    let done = end.unwrap().expect("the upload completes");
    assert_eq!(done.md5.as_ref(), file.md5.as_slice());
    let downloaded = download(&mut client, None, &done.file_id, 0, 0)
        .await
        .unwrap();
    assert_eq!(downloaded.data, file.data);
    let (content, staging) = objects(s3, &url).await;
    assert_eq!(content.len(), 1, "{content:?}");
    assert!(content[0].ends_with(&format!("u-{}", done.file_id.replace('-', ""))));
    assert!(staging.is_empty(), "{staging:?}");
}

async fn after_a_restart_the_hash_is_finished_from_the_completed_object(ledger: Ledger) {
    let (mut server, _, _) = server_on_s3(ledger).await;
    let file = TestFile::new("restart.bin", 3 * 5 * MIB + 7, 302);
    let upload_id = {
        let mut client = server.client().await;
        let session = open_session(&mut client, None, &file, 0).await;
        let mut stream = ChunkStream::open(&mut client, None, &session.upload_id)
            .await
            .unwrap();
        stream.send_and_ack(&file, 5 * MIB as u32, [0, 2]).await;
        session.upload_id
    };
    // The new server has neither the bytes in memory nor a way to read the unfinished
    // multipart upload back.
    server.restart().await;
    let mut client = server.client().await;
    let session = open_session(&mut client, None, &file, 0).await;
    assert_eq!(session.upload_id, upload_id);
    let mut stream = ChunkStream::open(&mut client, None, &upload_id)
        .await
        .unwrap();
    for index in [1, 3] {
        stream
            .send_chunk(index, file.chunk(index, 5 * MIB as u32))
            .await;
    }
    let (acks, end) = stream.drain().await;
    assert_eq!(acks.len(), 2);
    let done = end.unwrap().expect("the upload completes");
    assert_eq!(done.md5.as_ref(), file.md5.as_slice());
    let downloaded = download(&mut client, None, &done.file_id, 0, 0)
        .await
        .unwrap();
    assert_eq!(downloaded.data, file.data);
}

async fn bytes_unlike_the_declared_md5_fail_with_data_loss_and_leave_no_object(ledger: Ledger) {
    let (mut server, s3, url) = server_on_s3(ledger).await;
    let mut file = TestFile::new("wrong.bin", 2 * 5 * MIB, 303);
    file.md5 = vec![0x5a; 16];
    let upload_id = {
        let mut client = server.client().await;
        let session = open_session(&mut client, None, &file, 0).await;
        let mut stream = ChunkStream::open(&mut client, None, &session.upload_id)
            .await
            .unwrap();
        stream.send_and_ack(&file, 5 * MIB as u32, [1]).await;
        session.upload_id
    };
    server.restart().await;
    let mut client = server.client().await;
    let mut stream = ChunkStream::open(&mut client, None, &upload_id)
        .await
        .unwrap();
    stream.send_chunk(0, file.chunk(0, 5 * MIB as u32)).await;
    let (_, end) = stream.drain().await;
    let status = end.expect_err("the MD5 does not match");
    assert_eq!(status.code(), Code::DataLoss, "{status:?}");
    let (content, staging) = objects(s3, &url).await;
    assert!(content.is_empty(), "{content:?}");
    assert!(staging.is_empty(), "{staging:?}");
}

async fn a_deleted_files_object_is_collected_from_the_bucket(ledger: Ledger) {
    let (server, s3, url) = server_on_s3(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("doomed.bin", 6 * MIB, 304);
    let session = open_session(&mut client, None, &file, 0).await;
    let mut stream = ChunkStream::open(&mut client, None, &session.upload_id)
        .await
        .unwrap();
    stream.send_and_ack(&file, session.chunk_size, [0]).await;
    stream
        .send_chunk(1, file.chunk(1, session.chunk_size))
        .await;
    let (_, end) = stream.drain().await;
    let done = end.unwrap().expect("the upload completes");
    assert_eq!(objects(s3, &url).await.0.len(), 1);
    delete_file(&mut client, None, &done.file_id).await.unwrap();
    server.collect_garbage_now().await;
    assert_eq!(objects(s3, &url).await, (vec![], vec![]));
}

async fn a_prefix_one_ledger_claimed_refuses_a_server_on_another(ledger: Ledger) {
    let (server, s3, url) = server_on_s3(ledger).await;
    // A second single node, with an embedded ledger of its own, on the same prefix.
    let dir = tempfile::tempdir().unwrap();
    let mut settings = default_settings();
    settings.data_dir = dir.path().to_owned();
    s3.configure(&mut settings, &url);
    let refused = match Transferd::open(&settings).await {
        Ok(_) => panic!("a second deployment started on a claimed prefix"),
        Err(error) => error.to_string(),
    };
    assert!(
        refused.contains("belongs to another transferd deployment"),
        "{refused}"
    );
    assert!(refused.contains("PostgreSQL ledger"), "{refused}");
    if ledger == Ledger::Postgres {
        // A replica of the first, on its ledger, is welcome.
        let replica = server.replica().await;
        let mut client = replica.client().await;
        let file = TestFile::new("welcome.bin", 1000, 305);
        open_session(&mut client, None, &file, 0).await;
    }
}

async fn a_file_needing_more_than_10000_of_the_largest_parts_is_refused_at_once(ledger: Ledger) {
    let (server, _, _) = server_on_s3(ledger).await;
    let mut client = server.client().await;
    // 10,000 parts of the largest chunk (16 MiB by default) hold 156.25 GiB.
    let largest = 10_000 * u64::from(server.settings.max_chunk_size);
    let request = |size: u64| {
        transfer_tests::client::request(
            CheckUploadRequest {
                name: "huge.bin".into(),
                size,
                md5: vec![7; 16].into(),
                ..Default::default()
            },
            None,
        )
    };
    let status = client
        .check_upload(request(largest + 1))
        .await
        .expect_err("too many parts for the store");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains(&largest.to_string()),
        "the message names the largest file: {status:?}"
    );
    let session = client
        .check_upload(request(largest))
        .await
        .expect("the largest file the store takes")
        .into_inner();
    let Some(check_upload_response::Result::Session(session)) = session.result else {
        panic!("a session: {session:?}");
    };
    assert_eq!(session.chunk_size, server.settings.max_chunk_size);
    assert_eq!(session.chunk_count, 10_000);
}

async fn any_range_of_a_file_in_the_bucket_downloads_exactly(ledger: Ledger) {
    // The store reads 8 MiB at a time and sends 1 MiB pieces: ranges that begin and end
    // inside reads and pieces.
    let (server, _s3, _url) = server_on_s3(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("ranges.bin", 4 * 5 * MIB + 100, 302);
    let session = open_session(&mut client, None, &file, 5 * MIB as u32).await;
    let mut stream = ChunkStream::open(&mut client, None, &session.upload_id)
        .await
        .unwrap();
    for index in 0..session.chunk_count {
        stream
            .send_chunk(index, file.chunk(index, session.chunk_size))
            .await;
    }
    let (_, end) = stream.drain().await;
    let done = end.unwrap().expect("the upload completes");
    let size = file.data.len() as u64;
    let mib = MIB as u64;
    for (offset, length) in [
        (0, 0),
        (3 * mib + 7, 0),
        (8 * mib - 1, 8 * mib + 3),
        (size - 5, 0),
        (17 * mib, mib),
    ] {
        let read = download(&mut client, None, &done.file_id, offset, length)
            .await
            .unwrap();
        let end = if length == 0 { size } else { offset + length };
        assert!(
            read.data == file.data[offset as usize..end as usize],
            "bytes {offset}..{end}"
        );
    }
}

async fn staged_parts_lost_from_the_bucket_end_the_upload_with_data_loss(ledger: Ledger) {
    let (server, s3, url) = server_on_s3(ledger).await;
    let mut client = server.client().await;
    let file = TestFile::new("lost.bin", 3 * 5 * MIB, 303);
    let session = open_session(&mut client, None, &file, 5 * MIB as u32).await;
    let mut stream = ChunkStream::open(&mut client, None, &session.upload_id)
        .await
        .unwrap();
    stream.send_and_ack(&file, session.chunk_size, [0]).await;
    // A bucket rule (or a person) aborts the multipart upload under the server.
    let open = s3.multipart_uploads(&url).await;
    assert_eq!(open.len(), 1, "{open:?}");
    s3.abort_multipart(&open[0]).await;
    stream
        .send_chunk(1, file.chunk(1, session.chunk_size))
        .await;
    let (_, end) = stream.drain().await;
    let status = end.expect_err("the stream ends");
    assert_eq!(status.code(), tonic::Code::DataLoss, "{status:?}");
    assert!(
        status.message().contains("gone from the blob store"),
        "{status:?}"
    );
    assert!(
        !status.message().contains("mp/"),
        "no store name: {status:?}"
    );
}

transfer_tests::ledger_tests!(
    staged_parts_lost_from_the_bucket_end_the_upload_with_data_loss,
    a_file_needing_more_than_10000_of_the_largest_parts_is_refused_at_once,
    any_range_of_a_file_in_the_bucket_downloads_exactly,
    a_prefix_one_ledger_claimed_refuses_a_server_on_another,
    an_upload_into_a_bucket_takes_5_mib_parts_completes_and_downloads_intact,
    after_a_restart_the_hash_is_finished_from_the_completed_object,
    bytes_unlike_the_declared_md5_fail_with_data_loss_and_leave_no_object,
    a_deleted_files_object_is_collected_from_the_bucket,
);
