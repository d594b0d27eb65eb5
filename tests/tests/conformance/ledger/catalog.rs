//! The [`FileCatalog`] contract (the file catalog: files by owner, head digest and usage), checked on every ledger.
//!
//! [`FileCatalog`]: transfer_service::ledger::FileCatalog

crate::conformance_tests!(crate::ledger::catalog::suite; [
    postgres => crate::ledger::postgres(),
    sqlite => crate::ledger::sqlite(),
]; [
    owner_usage_counts_open_uploads_and_the_bytes_an_owner_sent,
    a_head_digest_finds_only_the_owners_uploading_and_complete_files,
]);

pub mod suite {
    use super::super::support::*;

    pub async fn owner_usage_counts_open_uploads_and_the_bytes_an_owner_sent(
        b: &impl LedgerBackend,
    ) {
        let ledger = b.open().await;
        let usage = |owner: &'static str| {
            let ledger = Arc::clone(&ledger);
            async move { ledger.owner_usage(owner).await.unwrap() }
        };
        assert_eq!(usage("o").await, OwnerUsage::default());
        opened(&ledger, &upload("o", "open")).await;
        let done = opened(&ledger, &upload("o", "done")).await;
        let gone = opened(&ledger, &upload("o", "gone")).await;
        ledger
            .complete_upload(
                done,
                &md5_for("done"),
                &blake3_for("done"),
                &locator_for("done"),
            )
            .await
            .unwrap();
        ledger.abort_upload(gone).await.unwrap();
        // An instant copy of its own content costs the owner nothing more.
        ledger
            .add_file_for_owned_content("o", "copy.bin", &md5_for("done"), 10_000, None)
            .await
            .unwrap()
            .expect("the owner's content");
        assert_eq!(
            usage("o").await,
            OwnerUsage {
                open_uploads: 1,
                bytes: 20_000
            }
        );
        assert_eq!(usage("someone else").await, OwnerUsage::default());
    }

    pub async fn a_head_digest_finds_only_the_owners_uploading_and_complete_files(
        b: &impl LedgerBackend,
    ) {
        let ledger = b.open().await;
        let head = md5_for("head h");
        let find = |owner: &'static str| {
            let ledger = Arc::clone(&ledger);
            async move {
                ledger
                    .files_with_head(owner, 10_000, &head, 10)
                    .await
                    .unwrap()
            }
        };
        assert!(find("alice").await.is_empty());

        let open = ledger
            .open_upload(&single_pass("alice", "h"))
            .await
            .unwrap()
            .file;
        assert_eq!(find("alice").await, vec![open.clone()]);
        assert!(find("bob").await.is_empty(), "only the owner's own files");
        assert!(
            ledger
                .files_with_head("alice", 10_001, &head, 10)
                .await
                .unwrap()
                .is_empty(),
            "only the same size"
        );

        ledger
            .complete_upload(open.id, &md5_for("h"), &blake3_for("h"), &locator_for("h"))
            .await
            .unwrap();
        let found = find("alice").await;
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].state, FileState::Complete);

        let aborted = ledger
            .open_upload(&single_pass("alice", "h"))
            .await
            .unwrap()
            .file;
        ledger.abort_upload(aborted.id).await.unwrap();
        assert_eq!(
            find("alice").await.len(),
            1,
            "an aborted upload is not found"
        );

        // An instant upload records the head it was asked with.
        ledger
            .add_file_for_owned_content("alice", "c.bin", &md5_for("h"), 10_000, Some(&head))
            .await
            .unwrap()
            .expect("alice has this content");
        assert_eq!(find("alice").await.len(), 2);
    }
}
