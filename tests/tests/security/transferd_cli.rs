//! The `transferd` binary's own safety: it will not expose an unauthenticated server,
//! and `transferd keys` manages the keys a server checks.

use std::process::Output;

use transfer_tests::process::workspace_binary;

async fn transferd(args: &[&str]) -> Output {
    tokio::process::Command::new(workspace_binary("transferd", "transfer-service"))
        .args(args)
        .output()
        .await
        .expect("running transferd")
}

#[tokio::test]
async fn transferd_refuses_to_listen_beyond_loopback_without_tls_and_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    for extra in [&[][..], &["--api-keys"][..]] {
        let args = [&["--listen", "0.0.0.0:0", "--data-dir", data][..], extra].concat();
        let output = transferd(&args).await;
        assert!(!output.status.success(), "{args:?} must not start");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("refusing to listen on 0.0.0.0:0"),
            "{stderr}"
        );
        assert!(
            stderr.contains("--insecure"),
            "it says how to override: {stderr}"
        );
    }
}

#[tokio::test]
async fn transferd_keys_creates_lists_and_revokes_keys_in_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let keys = |args: &'static [&'static str]| {
        let data = data.to_owned();
        async move { transferd(&[&["--data-dir", &data, "keys"][..], args].concat()).await }
    };
    let created = keys(&["create", "--owner", "billing", "--expires-in", "30d"]).await;
    assert!(created.status.success(), "{created:?}");
    let stdout = String::from_utf8_lossy(&created.stdout);
    let token = stdout.lines().next().unwrap_or_default().to_owned();
    assert!(token.starts_with("tfk_"), "the token comes first: {stdout}");
    let id = token.split('_').nth(1).unwrap().to_owned();

    let listed = keys(&["list"]).await;
    let listing = String::from_utf8_lossy(&listed.stdout);
    let row = listing
        .lines()
        .find(|line| line.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} not listed: {listing}"));
    assert!(row.contains("billing") && row.ends_with("active"), "{row}");
    assert!(!listing.contains(&token), "the token is never shown again");

    let revoked = transferd(&["--data-dir", data, "keys", "revoke", &id]).await;
    assert!(revoked.status.success(), "{revoked:?}");
    let listing = String::from_utf8_lossy(&keys(&["list"]).await.stdout).into_owned();
    assert!(listing.contains("revoked"), "{listing}");

    let unknown = transferd(&["--data-dir", data, "keys", "revoke", "0123456789abcdef"]).await;
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no API key 0123456789abcdef"));
    let bad_owner = keys(&["create", "--owner", "has space"]).await;
    assert!(!bad_owner.status.success());
}
