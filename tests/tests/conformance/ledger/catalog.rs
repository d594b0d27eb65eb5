//! The [`FileCatalog`] contract (the file catalog: files by owner, head digest and usage), checked on every ledger.
//!
//! [`FileCatalog`]: transfer_service::ledger::FileCatalog

crate::conformance_tests!(crate::ledger::catalog::suite; [
    postgres => crate::ledger::postgres(),
    sqlite => crate::ledger::sqlite(),
]; [
    owner_usage_counts_open_uploads_and_the_bytes_an_owner_sent,
    a_head_digest_finds_only_the_owners_uploading_and_complete_files,
    a_listing_pages_through_the_owners_files_newest_first,
    a_listing_filters_by_state_and_name_prefix,
    a_deleted_file_is_gone_for_good_and_only_its_owner_deletes_it,
    an_open_upload_is_not_deleted,
    an_owners_file_count_follows_every_file_made_and_deleted,
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
                Lease::UNTAKEN,
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
                bytes: 20_000,
                // Open, complete, aborted and the instant copy.
                files: 4,
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
            .complete_upload(
                open.id,
                Lease::UNTAKEN,
                &md5_for("h"),
                &blake3_for("h"),
                &locator_for("h"),
            )
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

    /// Opens uploads `seeds` for `owner` one after another, completes those whose seed
    /// starts with "done", and returns them newest first.
    async fn files(ledger: &Arc<dyn Ledger>, owner: &str, seeds: &[&str]) -> Vec<Uuid> {
        let mut ids = Vec::new();
        for seed in seeds {
            let id = opened(ledger, &upload(owner, seed)).await;
            if seed.starts_with("done") {
                ledger
                    .complete_upload(
                        id,
                        Lease::UNTAKEN,
                        &md5_for(seed),
                        &blake3_for(seed),
                        &locator_for(seed),
                    )
                    .await
                    .unwrap();
            }
            ids.push(id);
            // Distinct creation times on clocks that tick coarsely.
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        ids.reverse();
        ids
    }

    fn ids(files: &[transfer_service::ledger::FileRecord]) -> Vec<Uuid> {
        files.iter().map(|f| f.id).collect()
    }

    pub async fn a_listing_pages_through_the_owners_files_newest_first(b: &impl LedgerBackend) {
        let ledger = b.open().await;
        let newest_first = files(&ledger, "o", &["a", "b", "done c", "d", "e"]).await;
        files(&ledger, "someone else", &["a", "done x"]).await;
        let mut listed = Vec::new();
        let mut after = None;
        loop {
            let listing = FileListing {
                after,
                limit: 2,
                ..FileListing::default()
            };
            let page = ledger.list_files("o", &listing).await.unwrap();
            assert!(page.len() <= 2);
            let Some(last) = page.last() else { break };
            after = Some(last.list_position());
            listed.extend(ids(&page));
        }
        assert_eq!(listed, newest_first, "every file once, newest first");
        // Files of the same moment are ordered by id, so no page boundary skips one.
        let all = ledger
            .list_files(
                "o",
                &FileListing {
                    limit: 100,
                    ..FileListing::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(ids(&all), newest_first);
        assert!(
            ledger
                .list_files(
                    "nobody",
                    &FileListing {
                        limit: 100,
                        ..FileListing::default()
                    }
                )
                .await
                .unwrap()
                .is_empty()
        );
    }

    pub async fn a_listing_filters_by_state_and_name_prefix(b: &impl LedgerBackend) {
        let ledger = b.open().await;
        let newest_first = files(&ledger, "o", &["done 1", "open 2", "done 3", "gone 4"]).await;
        ledger.abort_upload(newest_first[0]).await.unwrap();
        let list = |state: Option<FileState>, prefix: &str| {
            let ledger = Arc::clone(&ledger);
            let listing = FileListing {
                state,
                name_prefix: prefix.to_owned(),
                limit: 100,
                after: None,
            };
            async move { ids(&ledger.list_files("o", &listing).await.unwrap()) }
        };
        assert_eq!(
            list(Some(FileState::Complete), "").await,
            vec![newest_first[1], newest_first[3]]
        );
        assert_eq!(
            list(Some(FileState::Uploading), "").await,
            vec![newest_first[2]]
        );
        assert_eq!(
            list(Some(FileState::Aborted), "").await,
            vec![newest_first[0]]
        );
        assert!(list(Some(FileState::Failed), "").await.is_empty());
        assert_eq!(
            list(None, "done").await,
            vec![newest_first[1], newest_first[3]]
        );
        assert_eq!(
            list(Some(FileState::Complete), "done 3").await,
            vec![newest_first[1]]
        );
        assert!(list(None, "done 3.bin and more").await.is_empty());
        // A prefix is bytes of a name, not a pattern.
        assert!(list(None, "%").await.is_empty());
        assert!(list(None, "_one").await.is_empty());
    }

    pub async fn a_deleted_file_is_gone_for_good_and_only_its_owner_deletes_it(
        b: &impl LedgerBackend,
    ) {
        let ledger = b.open().await;
        let done = files(&ledger, "o", &["done"]).await[0];
        let aborted = files(&ledger, "o", &["aborted"]).await[0];
        ledger.abort_upload(aborted).await.unwrap();
        assert!(
            ledger
                .delete_file("someone else", done)
                .await
                .unwrap()
                .is_none()
        );
        assert!(ledger.get_file(done).await.unwrap().is_some());
        for id in [done, aborted] {
            let deleted = ledger
                .delete_file("o", id)
                .await
                .unwrap()
                .expect("the file");
            assert_eq!(deleted.id, id);
            assert!(ledger.get_file(id).await.unwrap().is_none());
            assert!(ledger.delete_file("o", id).await.unwrap().is_none());
        }
        assert_eq!(
            ledger.owner_usage("o").await.unwrap(),
            OwnerUsage::default()
        );
    }

    pub async fn an_open_upload_is_not_deleted(b: &impl LedgerBackend) {
        let ledger = b.open().await;
        let open = opened(&ledger, &upload("o", "open")).await;
        ledger
            .commit_chunks(open, Lease::UNTAKEN, &[chunk(0)])
            .await
            .unwrap();
        assert!(matches!(
            ledger.delete_file("o", open).await,
            Err(LedgerError::StillUploading(id)) if id == open
        ));
        assert_eq!(ledger.committed_ranges(open).await.unwrap(), vec![(0, 1)]);
    }

    pub async fn an_owners_file_count_follows_every_file_made_and_deleted(b: &impl LedgerBackend) {
        let ledger = b.open().await;
        let count = |owner: &'static str| {
            let ledger = Arc::clone(&ledger);
            async move { ledger.owner_files(owner).await.unwrap() }
        };
        assert_eq!(count("o").await, 0);
        let done = files(&ledger, "o", &["done"]).await[0];
        let aborted = files(&ledger, "o", &["aborted"]).await[0];
        ledger.abort_upload(aborted).await.unwrap();
        // Opening the same content again makes no second file.
        opened(&ledger, &upload("o", "open")).await;
        opened(&ledger, &upload("o", "open")).await;
        ledger
            .add_file_for_owned_content("o", "copy", &md5_for("done"), 10_000, None)
            .await
            .unwrap()
            .expect("the owner's content");
        assert_eq!(
            count("o").await,
            4,
            "complete, aborted, open and the instant copy"
        );
        ledger.delete_file("o", done).await.unwrap();
        ledger.delete_file("o", aborted).await.unwrap();
        assert_eq!(count("o").await, 2);
        assert_eq!(count("someone else").await, 0);
    }
}
