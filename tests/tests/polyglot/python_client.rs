//! The Python client (examples/python, stubs generated from proto/ at run time) and the
//! Rust CLI move the same files across languages, byte for byte.

use transfer_tests::{Ledger, TestFile, TestServer};

use crate::{hex, json_result, on_disk, python_client, rust_cli};

const CHUNK_SIZE: usize = 16 * 1024;
const WINDOW: u64 = 4;
const BREAK_AFTER: u64 = 10;

#[tokio::test]
async fn a_file_the_python_client_uploads_through_a_broken_stream_downloads_intact_with_the_rust_cli()
 {
    let server = TestServer::start(Ledger::Sqlite).await;
    let file = TestFile::new("from-python.bin", (1 << 20) + 12_345, 601);
    let (dir, path) = on_disk(&file);
    let chunk_count = file.data.len().div_ceil(CHUNK_SIZE) as u64;

    let output = python_client(
        &server,
        &[
            "upload",
            path.to_str().unwrap(),
            "--chunk-size",
            &CHUNK_SIZE.to_string(),
            "--window",
            &WINDOW.to_string(),
            "--break-after",
            &BREAK_AFTER.to_string(),
        ],
    )
    .await;
    let uploaded = json_result("the Python upload", &output);
    assert_eq!(uploaded["status"], "completed");
    assert_eq!(uploaded["state"], "FILE_STATE_COMPLETE");
    assert_eq!(uploaded["size"], file.data.len());
    assert_eq!(uploaded["md5"], hex(&file.md5).as_str());
    assert_eq!(uploaded["breaks"], 1, "the stream was broken once");
    // Every acked chunk is committed, so CheckUpload reports at least those; chunks that
    // were in flight at the break may be committed too.
    let skipped = uploaded["resumed_skipped"].as_u64().unwrap();
    assert!(
        (BREAK_AFTER..chunk_count).contains(&skipped),
        "{skipped} of {chunk_count} chunks skipped on resume"
    );
    // Before the break: the window, plus one more per ack but the last. After: only
    // the chunks CheckUpload did not report committed.
    let sent = uploaded["chunks_sent"].as_u64().unwrap();
    assert_eq!(sent, (WINDOW + BREAK_AFTER - 1) + (chunk_count - skipped));

    let file_id = uploaded["file_id"].as_str().unwrap();
    let dest = dir.path().join("copy.bin");
    let output = rust_cli(
        &server,
        &["--json", "download", file_id, "-o", dest.to_str().unwrap()],
    )
    .await;
    let downloaded = json_result("the Rust CLI download", &output);
    assert_eq!(downloaded["md5"], hex(&file.md5).as_str());
    assert_eq!(std::fs::read(&dest).unwrap(), file.data);
}

#[tokio::test]
async fn a_file_the_rust_cli_uploads_downloads_intact_with_the_python_client() {
    let server = TestServer::start(Ledger::Sqlite).await;
    // Over 1 MiB: the download arrives in several pieces.
    let file = TestFile::new("from-rust.bin", (5 << 19) + 777, 602);
    let (dir, path) = on_disk(&file);

    let output = rust_cli(&server, &["--json", "upload", path.to_str().unwrap()]).await;
    let uploaded = json_result("the Rust CLI upload", &output);
    assert_eq!(uploaded["status"], "completed");
    let file_id = uploaded["file_id"].as_str().unwrap();

    let dest = dir.path().join("nested/copy.bin");
    let output = python_client(
        &server,
        &["download", file_id, "-o", dest.to_str().unwrap()],
    )
    .await;
    let downloaded = json_result("the Python download", &output);
    assert_eq!(downloaded["status"], "completed");
    assert_eq!(downloaded["file_id"], file_id);
    assert_eq!(downloaded["md5"], hex(&file.md5).as_str());
    assert_eq!(downloaded["size"], file.data.len());
    assert_eq!(std::fs::read(&dest).unwrap(), file.data);
}

#[tokio::test]
async fn the_python_client_uploads_content_the_rust_cli_stored_instantly() {
    let server = TestServer::start(Ledger::Sqlite).await;
    let file = TestFile::new("both.bin", 200_000, 603);
    let (_dir, path) = on_disk(&file);
    let path = path.to_str().unwrap();

    let output = rust_cli(&server, &["--json", "upload", path]).await;
    json_result("the Rust CLI upload", &output);
    let output = python_client(&server, &["upload", path]).await;
    let again = json_result("the Python upload", &output);
    assert_eq!(again["status"], "already_stored");
    assert_eq!(again["instant"], true);
    assert_eq!(again["chunks_sent"], 0);
    assert_eq!(again["md5"], hex(&file.md5).as_str());
}

#[tokio::test]
async fn the_python_client_exits_non_zero_and_says_why_when_a_download_fails() {
    let server = TestServer::start(Ledger::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("never.bin");
    let missing = uuid::Uuid::new_v4().to_string();

    let output = python_client(
        &server,
        &["download", &missing, "-o", dest.to_str().unwrap()],
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty(), "no JSON result on failure");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("NOT_FOUND") && stderr.contains(&missing),
        "stderr: {stderr}"
    );
    assert!(!dest.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no partial file left behind"
    );
}

#[tokio::test]
async fn the_python_client_and_the_rust_cli_move_a_file_over_tls_with_api_keys() {
    let pki = transfer_tests::TestPki::new();
    let server = TestServer::start_with(Ledger::Sqlite, |s| {
        pki.configure_server(s, false);
        s.api_keys = true;
    })
    .await;
    let (_, token) = server.create_key("polyglot", None).await;
    let ca = pki.write("ca.pem", &pki.ca_pem());
    let file = TestFile::new("over-tls.bin", (3 << 19) + 99, 604);
    let (dir, path) = on_disk(&file);
    let localhost = format!("localhost:{}", server.addr.port());

    let python = crate::peer("TRANSFER_TEST_PYTHON");
    let output = tokio::process::Command::new(&python)
        .arg(crate::workspace_root().join("examples/python/transfer_client.py"))
        .args(["--server", &localhost, "--ca-cert", ca.to_str().unwrap()])
        .args(["--token", &token, "upload", path.to_str().unwrap()])
        .output()
        .await
        .expect("running the Python client");
    let uploaded = json_result("the Python upload over TLS", &output);
    assert_eq!(uploaded["status"], "completed");
    let file_id = uploaded["file_id"].as_str().unwrap();

    let dest = dir.path().join("copy.bin");
    let https = format!("https://{localhost}");
    let args = [
        "--ca-cert",
        ca.to_str().unwrap(),
        "--token",
        &token,
        "--json",
        "download",
        file_id,
        "-o",
        dest.to_str().unwrap(),
    ];
    let output = transfer_tests::process::transfer_cli(&https, &args).await;
    json_result("the Rust CLI download over TLS", &output);
    assert_eq!(std::fs::read(&dest).unwrap(), file.data);

    // Without the key, the Python client is refused and says so.
    let output = tokio::process::Command::new(&python)
        .arg(crate::workspace_root().join("examples/python/transfer_client.py"))
        .args(["--server", &localhost, "--ca-cert", ca.to_str().unwrap()])
        .args(["download", file_id, "-o", dest.to_str().unwrap()])
        .env_remove("TRANSFER_TOKEN")
        .output()
        .await
        .expect("running the Python client");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("UNAUTHENTICATED"), "stderr: {stderr}");
}
