//! Transfer driven by peers in other languages and tools: grpcurl, and a Python client
//! generated from the proto. `scripts/test` installs them (TRANSFER_TEST_PYTHON,
//! TRANSFER_TEST_GRPCURL); without them these tests fail with a message saying so.

mod grpcurl;
mod python_client;
mod python_verifies;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;

use tempfile::TempDir;
use tokio::process::Command;
use transfer_tests::{TestFile, TestServer};

/// A peer program `scripts/test` installs, named by an environment variable. Fails the
/// test, never skips it, when the variable is unset.
pub fn peer(variable: &str) -> PathBuf {
    match std::env::var_os(variable) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => panic!(
            "{variable} is not set: run the tests with scripts/test, which installs the \
             Python test peers (grpcio, grpcio-tools, grpcurl) into target/test-python \
             and sets TRANSFER_TEST_PYTHON and TRANSFER_TEST_GRPCURL"
        ),
    }
}

/// The repository's root directory.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace root")
}

/// Runs `examples/python/transfer_client.py` against the test server. Async: the server
/// runs on this test's runtime.
pub async fn python_client(server: &TestServer, args: &[&str]) -> Output {
    python_client_at(server.addr, args).await
}

/// Runs `examples/python/transfer_client.py` against the server at `addr`.
pub async fn python_client_at(addr: SocketAddr, args: &[&str]) -> Output {
    let python = peer("TRANSFER_TEST_PYTHON");
    Command::new(&python)
        .arg(workspace_root().join("examples/python/transfer_client.py"))
        .arg("--server")
        .arg(addr.to_string())
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {} (TRANSFER_TEST_PYTHON): {e}", python.display()))
}

/// Runs the Rust `transfer` CLI against the test server.
pub async fn rust_cli(server: &TestServer, args: &[&str]) -> Output {
    transfer_tests::process::transfer_cli(&server.endpoint(), args).await
}

/// The JSON object a command printed last on stdout, once it has exited 0.
pub fn json_result(what: &str, output: &Output) -> serde_json::Value {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{what} failed ({}): {stderr}",
        output.status
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("{what} printed nothing; stderr: {stderr}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{what} printed no JSON ({e}): {stdout}"))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a test file into a fresh directory.
pub fn on_disk(file: &TestFile) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join(&file.name);
    std::fs::write(&path, &file.data).expect("writing the test file");
    (dir, path)
}
