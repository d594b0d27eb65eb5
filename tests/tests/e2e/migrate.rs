use transfer_proto::v1::ChunkRange;
use transfer_proto::v1::check_upload_response::Result as Check;
use transfer_tests::client::{check, open_session};
use transfer_tests::process::workspace_binary;
use transfer_tests::{
    ChunkStream, Ledger, TestDatabase, TestFile, TestServer, download, upload_file,
};

use crate::CHUNK;

#[tokio::test]
async fn migrate_ledger_moves_a_server_from_the_embedded_ledger_to_postgres() {
    let mut server = TestServer::start(Ledger::Sqlite).await;
    let mut client = server.client().await;
    let done = TestFile::new("done.bin", 10 * CHUNK as usize, 120);
    let stored = upload_file(&mut client, None, &done, CHUNK).await;
    let partial = TestFile::new("partial.bin", 10 * CHUNK as usize, 121);
    let session = open_session(&mut client, None, &partial, CHUNK).await;
    let mut stream = ChunkStream::open(&mut client, None, &session.upload_id)
        .await
        .unwrap();
    stream.send_and_ack(&partial, CHUNK, 0..4).await;
    drop(stream);
    let (kept, _) = server.create_key("alice", Some("users/")).await;
    let (revoked, _) = server.create_key("bob", None).await;
    server.revoke_key(&revoked).await;
    server.stop().await;

    let postgres = TestDatabase::create().await;
    let output = tokio::process::Command::new(workspace_binary("transferd", "transfer-service"))
        .arg("--data-dir")
        .arg(server.data_dir())
        .args(["migrate-ledger", "--to", &postgres.url])
        .output()
        .await
        .expect("running transferd migrate-ledger");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        said.contains("copied 2 files, 14 chunks, 1 content records and 2 API keys"),
        "{said}"
    );

    let url = postgres.url.clone();
    server.restart_with(|s| s.database_url = Some(url)).await;
    // The keys came along, the revoked one revoked.
    let keys = server.open_ledger().await.list_keys().await.unwrap();
    let key = |id: &str| keys.iter().find(|k| k.id == id).expect("a copied key");
    assert_eq!(key(&kept).owner, "alice");
    assert_eq!(key(&kept).act_for_prefix.as_deref(), Some("users/"));
    assert!(key(&kept).revoked_at.is_none());
    assert!(key(&revoked).revoked_at.is_some());
    let mut client = server.client().await;
    let copy = download(&mut client, None, &stored.file_id, 0, 0)
        .await
        .unwrap();
    assert_eq!(
        copy.data, done.data,
        "the stored file downloads from the new ledger"
    );
    assert!(matches!(
        check(&mut client, None, &done, CHUNK).await,
        Ok(Check::AlreadyStored(_))
    ));
    let resumed = open_session(&mut client, None, &partial, CHUNK).await;
    assert_eq!(resumed.upload_id, session.upload_id);
    assert_eq!(resumed.committed, vec![ChunkRange { start: 0, end: 4 }]);
    let finished = upload_file(&mut client, None, &partial, CHUNK).await;
    assert_eq!(finished.md5.as_ref(), partial.md5.as_slice());
    drop(server);
}
