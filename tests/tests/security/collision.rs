//! MD5 collisions substitute nothing: content is stored by the BLAKE3 the server
//! computes, so two files with one MD5 are two contents, and each owner downloads
//! exactly the bytes it uploaded.

use transfer_tests::{Ledger, TestServer};

use crate::client_with;

/// The MD5 collision pair Wang, Feng, Lai and Yu published in 2004 (as shown on
/// Peter Selinger's "MD5 Collision Demo" page): 128 bytes each, differing in 6 bytes.
const GOOD: &str = "d131dd02c5e6eec4693d9a0698aff95c2fcab58712467eab4004583eb8fb7f89\
                    55ad340609f4b30283e488832571415a085125e8f7cdc99fd91dbdf280373c5b\
                    d8823e3156348f5bae6dacd436c919c6dd53e2b487da03fd02396306d248cda0\
                    e99f33420f577ee8ce54b67080a80d1ec69821bcb6a8839396f9652b6ff72a70";
const EVIL: &str = "d131dd02c5e6eec4693d9a0698aff95c2fcab50712467eab4004583eb8fb7f89\
                    55ad340609f4b30283e4888325f1415a085125e8f7cdc99fd91dbd7280373c5b\
                    d8823e3156348f5bae6dacd436c919c6dd53e23487da03fd02396306d248cda0\
                    e99f33420f577ee8ce54b67080280d1ec69821bcb6a8839396f965ab6ff72a70";

fn bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

async fn an_md5_collision_gives_each_owner_its_own_bytes(ledger: Ledger) {
    let (good, evil) = (bytes(GOOD), bytes(EVIL));
    assert_ne!(good, evil);
    assert_eq!(
        transfer_tests::md5(&good),
        transfer_tests::md5(&evil),
        "a real collision"
    );

    let server = TestServer::start(ledger).await;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, data: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, data).unwrap();
        path
    };
    // The attacker stores the evil twin first, under the victim's file name.
    let mallory = client_with(&server.endpoint(), None, Some("mallory"));
    let evil_file = mallory
        .upload_path(write("contract.bin", &evil))
        .wait()
        .await
        .unwrap()
        .file;

    // Victims upload the good twin every way the library and CLI do.
    for (victim, hash_first) in [("single-pass", false), ("hash-first", true)] {
        let mut config = transfer_client::ClientConfig::new(server.endpoint());
        config.owner = Some(victim.into());
        config.hash_first = hash_first;
        let client = transfer_client::TransferClient::new(config).unwrap();
        let uploaded = client
            .upload_path(write("contract.bin", &good))
            .wait()
            .await
            .unwrap();
        assert!(
            !uploaded.instant,
            "{victim}: nothing of mallory's is reused"
        );
        let out = dir.path().join(format!("{victim}.out"));
        client
            .download(&uploaded.file.file_id, &out)
            .wait()
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(&out).unwrap(),
            good,
            "{victim} gets the good twin"
        );
    }
    let cli = transfer_tests::process::transfer_cli(
        &server.endpoint(),
        &[
            "--owner",
            "cli-user",
            "--json",
            "upload",
            write("contract.bin", &good).to_str().unwrap(),
        ],
    )
    .await;
    assert!(cli.status.success(), "{cli:?}");

    let out = dir.path().join("mallory.out");
    mallory
        .download(&evil_file.file_id, &out)
        .wait()
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(&out).unwrap(),
        evil,
        "mallory keeps her own bytes"
    );
    // Each completion stored its own copy; the collector deletes the spare ones.
    server.collect_garbage_now().await;
    assert_eq!(
        server.content_files().len(),
        2,
        "two contents, each stored once"
    );
}

transfer_tests::ledger_tests!(an_md5_collision_gives_each_owner_its_own_bytes);
