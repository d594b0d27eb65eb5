//! One data directory, one `transferd`: a second process on the same embedded ledger
//! would reset the first's heartbeat and race its sessions, so it refuses to start.

use std::time::Duration;

use tokio::process::Command;
use transfer_proto::v1::transfer_service_client::TransferServiceClient;
use transfer_tests::process::{TransferdProcess, workspace_binary};
use transfer_tests::{Ledger, TestFile};

#[tokio::test]
async fn a_second_transferd_on_the_same_data_directory_refuses_to_start_and_the_first_serves_on() {
    let first = TransferdProcess::start(Ledger::Sqlite).await;
    let second = Command::new(workspace_binary("transferd", "transfer-service"))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(first.data_dir())
        .env_remove("TRANSFERD_DATABASE_URL")
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), second)
        .await
        .expect("the second transferd exits at once")
        .expect("running transferd");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{said}");
    assert!(
        said.contains("in use by another transferd") && said.contains("PostgreSQL"),
        "{said}"
    );

    // The first still serves: an upload opens.
    let mut client = TransferServiceClient::connect(first.endpoint())
        .await
        .unwrap();
    let file = TestFile::new("still-here.bin", 1000, 1);
    transfer_tests::client::open_session(&mut client, None, &file, 0).await;
}
