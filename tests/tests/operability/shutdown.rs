//! How `transferd` stops on SIGTERM, as a supervisor sees it: the exit status and what it
//! says, with and without calls still running after the grace period.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use transfer_tests::client::{check_resuming, probe_session};
use transfer_tests::process::workspace_binary;
use transfer_tests::{ChunkStream, TestFile};

/// A `transferd` on an embedded ledger with a one-second shutdown grace.
async fn start(dir: &std::path::Path) -> (Child, String) {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|probe| probe.local_addr())
        .expect("a free port");
    let child = Command::new(workspace_binary("transferd", "transfer-service"))
        .args(["--listen", &addr.to_string(), "--shutdown-grace-secs", "1"])
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting transferd");
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return (child, format!("http://{addr}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("transferd did not start listening on {addr}");
}

/// Sends SIGTERM and waits (at most 30 s) for the exit; returns its status and stderr.
async fn terminate(mut child: Child) -> (std::process::ExitStatus, String) {
    let pid = child.id().expect("a running transferd").to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("running kill");
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("transferd exits after SIGTERM")
        .expect("its exit status");
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr).await;
    }
    (status, stderr)
}

#[tokio::test]
async fn sigterm_with_nothing_running_stops_cleanly() {
    let dir = tempfile::tempdir().expect("a data directory");
    let (child, _) = start(dir.path()).await;
    let (status, stderr) = terminate(child).await;
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("transferd stopped"), "{stderr}");
}

#[tokio::test]
async fn a_stop_forced_by_calls_still_running_after_the_grace_exits_non_zero_and_says_so() {
    let dir = tempfile::tempdir().expect("a data directory");
    let (child, endpoint) = start(dir.path()).await;
    let mut client = transfer_service_client(&endpoint).await;
    // A ledger that does not answer (here: its database locked by someone else) holds a
    // call past the grace; a drain cannot end it.
    let ledger = rusqlite::Connection::open(dir.path().join("ledger.sqlite3")).expect("the ledger");
    ledger
        .execute_batch("BEGIN EXCLUSIVE")
        .expect("locking the ledger");
    let file = TestFile::new("running.bin", 1 << 20, 7);
    let stuck =
        tokio::spawn(async move { probe_session(&mut client, None, &file, 64 << 10).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, stderr) = terminate(child).await;
    assert!(
        !status.success(),
        "a forced stop must not look clean: {status}"
    );
    assert!(
        stderr.contains("still running after the 1s shutdown grace"),
        "{stderr}"
    );
    stuck.abort();
    drop(ledger);
}

#[tokio::test]
async fn sigterm_drains_an_upload_its_acked_chunks_are_stored_and_the_stream_is_told_to_resume() {
    let dir = tempfile::tempdir().expect("a data directory");
    let (child, endpoint) = start(dir.path()).await;
    let mut client = transfer_service_client(&endpoint).await;
    let chunk = 64 << 10;
    let file = TestFile::new("draining.bin", 64 * chunk as usize, 8);
    let session = probe_session(&mut client, None, &file, chunk).await;
    let mut stream = ChunkStream::open(&mut client, None, &session.upload_id)
        .await
        .expect("an open stream");
    stream.send_and_ack(&file, chunk, 0..4).await;
    // Chunks in flight when the signal comes.
    for index in 4..12 {
        stream.send_chunk(index, file.chunk(index, chunk)).await;
    }
    let terminated = tokio::spawn(terminate(child));
    let (acks, ended) = stream.drain().await;
    let status = ended.expect_err("the stream ends without completing");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("shutting down"),
        "{}",
        status.message()
    );
    let (exit, stderr) = terminated.await.unwrap();
    assert!(
        exit.success(),
        "a drained server stops within the grace: {exit}: {stderr}"
    );

    // Every chunk acked before or during the drain is stored.
    let (_again, endpoint) = start(dir.path()).await;
    let mut client = transfer_service_client(&endpoint).await;
    let resumed = match check_resuming(&mut client, None, &file, chunk, &session.upload_id).await {
        Ok(transfer_proto::v1::check_upload_response::Result::Session(session)) => session,
        other => panic!("the session resumes: {other:?}"),
    };
    assert_eq!(resumed.upload_id, session.upload_id);
    let committed: Vec<u64> = resumed
        .committed
        .iter()
        .flat_map(|range| range.start..range.end)
        .collect();
    let mut acked: Vec<u64> = (0..4).chain(acks.iter().map(|ack| ack.index)).collect();
    acked.sort_unstable();
    acked.dedup();
    for index in &acked {
        assert!(
            committed.contains(index),
            "acked chunk {index} is stored: {committed:?}"
        );
    }
}

async fn transfer_service_client(endpoint: &str) -> transfer_tests::client::Client {
    let channel = tonic::transport::Channel::from_shared(endpoint.to_owned())
        .expect("an endpoint")
        .connect()
        .await
        .expect("a connection");
    transfer_tests::client::Client::new(channel)
}
