use tokio::process::Command;
use transfer_tests::process::workspace_binary;

#[tokio::test]
async fn logs_are_json_lines_with_the_json_log_format() {
    let dir = tempfile::tempdir().unwrap();
    let to = format!("sqlite://{}", dir.path().join("copy.sqlite3").display());
    let output = Command::new(workspace_binary("transferd", "transfer-service"))
        .arg("--log-format")
        .arg("json")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["migrate-ledger", "--to", &to])
        .env("RUST_LOG", "info")
        .output()
        .await
        .expect("running transferd");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let logs = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    assert!(!lines.is_empty(), "something was logged");
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string())
    );
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "copying the ledger"),
        "{logs}"
    );
}
