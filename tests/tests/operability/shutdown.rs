//! How `transferd` stops on SIGTERM, as a supervisor sees it: the exit status and what it
//! says, with and without calls still running after the grace period.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use transfer_tests::client::probe_session;
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
    let file = TestFile::new("running.bin", 1 << 20, 7);
    let session = probe_session(&mut client, None, &file, 64 << 10).await;
    // A stream that stays open past the grace.
    let _stream = ChunkStream::open(&mut client, None, &session.upload_id)
        .await
        .expect("an open stream");
    let (status, stderr) = terminate(child).await;
    assert!(
        !status.success(),
        "a forced stop must not look clean: {status}"
    );
    assert!(
        stderr.contains("still running after the 1s shutdown grace"),
        "{stderr}"
    );
}

async fn transfer_service_client(endpoint: &str) -> transfer_tests::client::Client {
    let channel = tonic::transport::Channel::from_shared(endpoint.to_owned())
        .expect("an endpoint")
        .connect()
        .await
        .expect("a connection");
    transfer_tests::client::Client::new(channel)
}
