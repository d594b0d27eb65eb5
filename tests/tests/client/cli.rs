use tokio::process::Command;

use transfer_tests::process::{transfer_cli, workspace_binary};
use transfer_tests::{Ledger, TestFile, TestServer};

use crate::on_disk;

async fn transfer(server: &TestServer, args: &[&str]) -> std::process::Output {
    transfer_cli(&server.endpoint(), args).await
}

fn json_lines(output: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("each stdout line is JSON"))
        .collect()
}

async fn the_cli_uploads_and_downloads_a_file_round_trip(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let file = TestFile::new("cli.bin", 3 << 20, 300);
    let (dir, path) = on_disk(&file);
    let path = path.to_str().unwrap();

    let output = transfer(&server, &["--json", "upload", path]).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let uploaded = &json_lines(&output)[0];
    assert_eq!(uploaded["status"], "completed");
    assert_eq!(uploaded["path"], path);
    assert_eq!(uploaded["size"], 3 << 20);
    assert_eq!(uploaded["instant"], false);
    let md5: String = file.md5.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(uploaded["md5"], md5.as_str());
    let file_id = uploaded["file_id"].as_str().unwrap().to_owned();

    let again = transfer(&server, &["--json", "upload", path]).await;
    assert_eq!(json_lines(&again)[0]["instant"], true);

    let dest = dir.path().join("copy.bin");
    let output = transfer(
        &server,
        &["--json", "download", &file_id, "-o", dest.to_str().unwrap()],
    )
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(json_lines(&output)[0]["status"], "completed");
    assert_eq!(std::fs::read(&dest).unwrap(), file.data);

    let stat = transfer(&server, &["--json", "stat", &file_id]).await;
    assert_eq!(json_lines(&stat)[0]["state"], "FILE_STATE_COMPLETE");
}

async fn the_cli_exit_code_tells_failure_from_usage_errors(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let usage = transfer(&server, &["upload"]).await;
    assert_eq!(usage.status.code(), Some(2));
    let no_scheme = Command::new(workspace_binary("transfer", "transfer-client"))
        .args(["--server", "127.0.0.1:1", "stat", "x"])
        .output()
        .await
        .unwrap();
    assert_eq!(
        no_scheme.status.code(),
        Some(2),
        "a bad server address is a usage error"
    );
    let missing = transfer(&server, &["upload", "/no/such/file"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/no/such/file"));
    let unknown = transfer(
        &server,
        &["--json", "stat", &uuid::Uuid::new_v4().to_string()],
    )
    .await;
    assert_eq!(unknown.status.code(), Some(1));
    assert_eq!(json_lines(&unknown)[0]["status"], "failed");
}

async fn the_cli_aborts_an_upload_in_progress_and_says_when_there_is_none(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let file = TestFile::new("abort-me.bin", 40_000, 302);
    let (_dir, path) = on_disk(&file);
    let path = path.to_str().unwrap();

    let nothing = transfer(&server, &["--json", "abort", path]).await;
    assert!(nothing.status.success());
    assert_eq!(json_lines(&nothing)[0]["status"], "nothing_in_progress");

    let mut raw = server.client().await;
    let session = transfer_tests::client::open_session(&mut raw, None, &file, 4096).await;
    let aborted = transfer(&server, &["--json", "abort", path]).await;
    assert!(aborted.status.success());
    let said = &json_lines(&aborted)[0];
    assert_eq!(said["status"], "aborted");
    assert_eq!(said["upload_id"], session.upload_id.as_str());
}

async fn the_cli_lists_files_newest_first_and_removes_them(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut ids = Vec::new();
    let mut dirs = Vec::new();
    for i in 0..3u64 {
        let file = TestFile::new(&format!("listed-{i}.bin"), 10_000, 310 + i);
        let (dir, path) = on_disk(&file);
        let output = transfer(&server, &["--json", "upload", path.to_str().unwrap()]).await;
        assert!(output.status.success());
        ids.push(
            json_lines(&output)[0]["file_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        dirs.push(dir);
    }
    let mut raw = server.client().await;
    let open = TestFile::new("open.bin", 40_000, 320);
    let session = transfer_tests::client::open_session(&mut raw, None, &open, 4096).await;

    let listed = |output: &std::process::Output| -> Vec<String> {
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        json_lines(output)
            .iter()
            .map(|f| f["file_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = transfer(&server, &["--json", "ls"]).await;
    let newest_first: Vec<String> = [session.upload_id.clone()]
        .into_iter()
        .chain(ids.iter().rev().cloned())
        .collect();
    assert_eq!(listed(&all), newest_first);
    let complete = transfer(
        &server,
        &["--json", "ls", "--state", "complete", "--limit", "2"],
    )
    .await;
    assert_eq!(listed(&complete), newest_first[1..3]);
    let named = transfer(&server, &["--json", "ls", "--prefix", "listed-0"]).await;
    assert_eq!(listed(&named), vec![ids[0].clone()]);
    let people = transfer(&server, &["ls"]).await;
    let text = String::from_utf8_lossy(&people.stdout);
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(text.lines().next().unwrap().contains("uploading"), "{text}");

    // Removing a file and an open upload; an unknown id fails, and the rest go on.
    let unknown = uuid::Uuid::new_v4().to_string();
    let removed = transfer(
        &server,
        &["--json", "rm", &ids[1], &unknown, &session.upload_id],
    )
    .await;
    assert_eq!(removed.status.code(), Some(1));
    let said = json_lines(&removed);
    assert_eq!(said[0]["status"], "deleted");
    assert_eq!(said[1]["status"], "failed");
    assert_eq!(said[2]["status"], "deleted");
    let left = transfer(&server, &["--json", "ls"]).await;
    assert_eq!(listed(&left), vec![ids[2].clone(), ids[0].clone()]);
}

transfer_tests::ledger_tests!(
    the_cli_lists_files_newest_first_and_removes_them,
    the_cli_aborts_an_upload_in_progress_and_says_when_there_is_none,
    the_cli_uploads_and_downloads_a_file_round_trip,
    the_cli_exit_code_tells_failure_from_usage_errors,
);
