//! Two and three `transferd` replicas on one PostgreSQL ledger and one SeaweedFS bucket,
//! behind a round-robin proxy (a new connection goes to the next replica, no affinity),
//! killed with SIGKILL and started again one at a time, and every connection cut at
//! once, while uploads run: every upload completes byte for byte, none twice, each chunk
//! recorded once, and nothing is left in the bucket or the ledger that is not a file's. And a replica frozen past its lease
//! finds, once it wakes, that another took its upload over and its writes do not count.

use std::time::Duration;

use tonic::Code;
use transfer_proto::v1::check_upload_response;
use transfer_proto::v1::transfer_service_client::TransferServiceClient;
use transfer_tests::client::{Client, check_resuming, probe_session};
use transfer_tests::process::TransferdProcess;
use transfer_tests::proxy::RoundRobinProxy;
use transfer_tests::s3::seaweedfs;
use transfer_tests::{ChunkStream, TestDatabase, TestFile, download};

use crate::{UploadsUnderway, committed_indexes, figure, on_disk, scaled, sessions_left};

const MIB: usize = 1 << 20;
/// S3's smallest part: the chunk size on an object store.
const PART: u32 = 5 << 20;

async fn connect(server: &TransferdProcess) -> Client {
    TransferServiceClient::connect(server.endpoint())
        .await
        .expect("connecting to a replica")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_through_three_replicas_killed_and_cut_off_complete_once_and_leave_nothing_behind()
{
    uploads_survive_replica_faults(3, 19).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_through_two_replicas_killed_and_cut_off_complete_once_and_leave_nothing_behind() {
    uploads_survive_replica_faults(2, 23).await;
}

/// Uploads through `count` replicas while, in turn, one replica is killed and started
/// again and every connection is cut; then checks what they left.
async fn uploads_survive_replica_faults(count: usize, seed: u64) {
    let db = TestDatabase::create().await;
    let s3 = seaweedfs();
    let url = s3.fresh_url();
    let mut args = s3.transferd_args(&url);
    args.extend(
        [
            "--lease-secs",
            "2",
            "--gc-grace-secs",
            "0",
            "--gc-interval-secs",
            "1",
        ]
        .map(str::to_owned),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut replicas = Vec::new();
    for _ in 0..count {
        replicas.push(TransferdProcess::start_on_database(&db.url, &args).await);
    }
    let proxy = RoundRobinProxy::start(replicas.iter().map(|r| r.addr).collect()).await;

    let mut rng = fastrand::Rng::with_seed(seed);
    let files: Vec<TestFile> = (0..scaled(8, 20))
        .map(|i| {
            let size = rng.usize(1..=4) * 5 * MIB - rng.usize(0..MIB);
            TestFile::new(&format!("replicated-{i}.bin"), size, 600 + i as u64)
        })
        .collect();
    let (_dir, paths) = on_disk(&files);
    let uploads = UploadsUnderway::start(&proxy.endpoint(), &paths);
    let (mut kills, mut cuts) = (0, 0);
    for round in 0..scaled(4, 10) {
        if !uploads.moved_more(4 << 20).await {
            break;
        }
        if round % 2 == 1 {
            cuts += proxy.cut_all();
            continue;
        }
        let victim = &mut replicas[(round / 2) % count];
        victim.kill();
        tokio::time::sleep(Duration::from_millis(rng.u64(50..500))).await;
        victim.restart().await;
        kills += 1;
    }
    assert!(kills >= 1, "no kill landed while uploads ran");
    let uploaded = uploads.completed().await;
    figure("replica kills during uploads", kills);
    figure("connections cut during uploads", cuts);

    // Every file reads back byte for byte, through any replica.
    let mut raw = TransferServiceClient::connect(proxy.endpoint())
        .await
        .expect("connecting through the proxy");
    for (file, done) in files.iter().zip(&uploaded) {
        let read = download(&mut raw, None, &done.file.file_id, 0, 0)
            .await
            .expect("download");
        assert!(
            read.data == file.data,
            "{} arrives byte for byte",
            file.name
        );
    }
    assert_eq!(sessions_left(&mut raw).await, 0, "no session left behind");

    // The ledger: each file complete once, with its chunks recorded once each.
    let ledger = db.client().await;
    let complete: i64 = ledger
        .query_one("SELECT count(*) FROM files WHERE state = 'complete'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(complete, files.len() as i64, "each upload completed once");

    // The bucket: once the collector has run, exactly the content the ledger holds,
    // and no multipart upload still open.
    // (Beside the deployment's claim on the prefix.)
    let content = || async {
        let mut keys = s3.keys(&url).await;
        let claim = keys.iter().position(|key| key == "transfer-claim");
        keys.remove(claim.expect("the prefix is claimed"));
        keys
    };
    let mut objects = Vec::new();
    for _ in 0..100 {
        objects = content().await;
        if objects == held(&ledger).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        objects,
        held(&ledger).await,
        "the bucket holds the ledger's content only"
    );
    assert_eq!(objects.len(), files.len());
    // Not one multipart upload left open: not even one a kill left between a replica
    // creating it and writing its staging marker (completing an upload aborts every
    // other multipart upload at its key, listed from the bucket).
    let open = s3.multipart_uploads(&url).await;
    assert!(open.is_empty(), "multipart uploads left open: {open:?}");
}

/// The locators of the content the ledger holds, sorted.
async fn held(ledger: &tokio_postgres::Client) -> Vec<String> {
    let rows = ledger
        .query("SELECT locator FROM content_blobs ORDER BY locator", &[])
        .await
        .unwrap();
    rows.iter().map(|row| row.get::<_, String>(0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stalled_past_its_lease_finds_on_waking_that_its_writes_no_longer_count() {
    let db = TestDatabase::create().await;
    let s3 = seaweedfs();
    let url = s3.fresh_url();
    let mut args = s3.transferd_args(&url);
    args.extend(["--lease-secs", "1"].map(str::to_owned));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stalled = TransferdProcess::start_on_database(&db.url, &args).await;
    let taker = TransferdProcess::start_on_database(&db.url, &args).await;
    let file = TestFile::new("stalled.bin", 2 * PART as usize + 4096, 650);

    let mut at_stalled = connect(&stalled).await;
    let session = probe_session(&mut at_stalled, None, &file, PART).await;
    let mut old = ChunkStream::open(&mut at_stalled, None, &session.upload_id)
        .await
        .unwrap();
    old.send_and_ack(&file, PART, [0]).await;
    // The holder stops in its tracks (a long GC pause, a frozen VM); a chunk reaches it
    // meanwhile and waits in its socket.
    stalled.pause();
    old.send_chunk(2, file.chunk(2, PART)).await;

    // Its lease lapses; the other replica takes the upload over and goes on.
    let mut at_taker = connect(&taker).await;
    let mut new = ChunkStream::open(&mut at_taker, None, &session.upload_id)
        .await
        .unwrap();
    new.send_and_ack(&file, PART, [1]).await;

    // The stalled replica wakes up and handles the chunk it was sent: stored in the
    // bucket, but its commit, under the old lease, is refused and its stream told so.
    stalled.resume();
    let (_, end) = old.drain().await;
    let status = end.expect_err("the stalled holder's stream ends");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let resumed = match check_resuming(&mut at_taker, None, &file, PART, &session.upload_id).await {
        Ok(check_upload_response::Result::Session(session)) => session,
        other => panic!("the session resumes: {other:?}"),
    };
    assert_eq!(
        committed_indexes(&resumed),
        [0, 1],
        "the stalled holder's late chunk was not recorded"
    );
    new.send_chunk(2, file.chunk(2, PART)).await;
    // (A single-pass upload: its MD5 comes last.)
    new.send_digest(&file.md5).await;
    let (_, end) = new.drain().await;
    let done = end
        .unwrap()
        .expect("the upload completes at its new holder");
    let read = download(&mut at_taker, None, &done.file_id, 0, 0)
        .await
        .expect("download");
    assert!(read.data == file.data, "the file arrives byte for byte");
}
