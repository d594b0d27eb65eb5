//! The [`UploadLedger`] contract (upload bookkeeping: sessions, committed chunks, checkpoints, how an upload ends), checked on every ledger.
//!
//! [`UploadLedger`]: transfer_service::ledger::UploadLedger

crate::conformance_tests!(crate::ledger::uploads::suite; [
    postgres => crate::ledger::postgres(),
    sqlite => crate::ledger::sqlite(),
]; [
    opening_the_same_content_twice_returns_the_same_session,
    concurrent_opens_of_the_same_content_make_one_session,
    each_owner_gets_a_session_of_its_own,
    committed_chunks_are_recorded_once,
    concurrent_commits_of_one_index_record_it_once,
    chunks_are_refused_once_an_upload_is_aborted,
    a_closed_upload_can_be_completed_failed_or_aborted_no_more,
    a_failed_upload_forgets_its_chunks_and_frees_the_content,
    unknown_ids_are_not_found,
    committed_chunks_come_back_as_runs,
    the_open_session_of_an_owner_is_found_by_content,
    a_hash_checkpoint_is_kept_only_while_it_is_the_latest,
    single_pass_uploads_are_each_their_own_session_and_get_their_md5_on_completion,
    the_ledger_survives_reopening,
    the_first_blob_handle_kept_stays_while_the_upload_is_open,
    receipts_come_back_by_index_as_first_recorded,
]);

pub mod suite {
    use super::super::support::*;

    pub async fn opening_the_same_content_twice_returns_the_same_session(b: &impl LedgerBackend) {
        let ledger = b.open().await;
        let first = ledger.open_upload(&upload("o", "a")).await.unwrap();
        assert!(first.created);
        assert_eq!(first.file.state, FileState::Uploading);
        assert_eq!(first.file.chunk_size, 4096);
        assert_eq!(first.file.chunk_count, 3);
        let again = ledger.open_upload(&upload("o", "a")).await.unwrap();
        assert!(!again.created);
        assert_eq!(again.file, first.file);
    }

    pub async fn concurrent_opens_of_the_same_content_make_one_session(b: &impl LedgerBackend) {
        let ledger = b.open().await;
        let opens = (0..16).map(|_| {
            let ledger = Arc::clone(&ledger);
            tokio::spawn(async move { ledger.open_upload(&upload("o", "race")).await.unwrap() })
        });
        let mut ids = Vec::new();
        let mut created = 0;
        for open in opens {
            let opened = open.await.unwrap();
            created += usize::from(opened.created);
            ids.push(opened.file.id);
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 1, "one session for all");
        assert_eq!(created, 1, "created exactly once");
    }

    pub async fn each_owner_gets_a_session_of_its_own(b: &impl LedgerBackend) {
        let ledger = b.open().await;
        let alice = ledger.open_upload(&upload("alice", "x")).await.unwrap();
        let bob = ledger.open_upload(&upload("bob", "x")).await.unwrap();
        assert_ne!(alice.file.id, bob.file.id);
        assert_eq!(bob.file.owner, "bob");
    }

    pub async fn committed_chunks_are_recorded_once(b: &impl LedgerBackend) {
        let ledger = b.open().await;
        let id = ledger.open_upload(&upload("o", "c")).await.unwrap().file.id;
        assert!(ledger.committed_ranges(id).await.unwrap().is_empty());
        let newly = ledger
            .commit_chunks(id, Lease::UNTAKEN, &[chunk(2), chunk(0)])
            .await
            .unwrap();
        assert_eq!(newly, vec![0, 2]);
        let newly = ledger
            .commit_chunks(id, Lease::UNTAKEN, &[chunk(0), chunk(1)])
            .await
            .unwrap();
        assert_eq!(
            newly,
            vec![1],
            "an index recorded before keeps its first record"
        );
        assert_eq!(ledger.committed_ranges(id).await.unwrap(), vec![(0, 3)]);
    }

    pub async fn concurrent_commits_of_one_index_record_it_once(b: &impl LedgerBackend) {
        let ledger = b.open().await;
        let id = opened(&ledger, &upload("o", "cc")).await;
        let commits = (0..8).map(|_| {
            let ledger = Arc::clone(&ledger);
            tokio::spawn(async move {
                ledger
                    .commit_chunks(id, Lease::UNTAKEN, &[chunk(1)])
                    .await
                    .unwrap()
            })
        });
        let mut newly = 0;
        for commit in commits {
            newly += commit.await.unwrap().len();
        }
        assert_eq!(newly, 1);
        assert_eq!(ledger.committed_ranges(id).await.unwrap(), vec![(1, 2)]);
    }

    pub async fn chunks_are_refused_once_an_upload_is_aborted(b: &impl LedgerBackend) {
        let ledger = b.open().await;
        let id = opened(&ledger, &upload("o", "ab")).await;
        ledger
            .commit_chunks(id, Lease::UNTAKEN, &[chunk(0)])
            .await
            .unwrap();
        ledger.abort_upload(id).await.unwrap();
        assert!(
            ledger.committed_ranges(id).await.unwrap().is_empty(),
            "chunks forgotten"
        );
        let refused = ledger
            .commit_chunks(id, Lease::UNTAKEN, &[chunk(1)])
            .await
            .unwrap_err();
        assert!(matches!(
            refused,
            LedgerError::NotUploading {
                state: FileState::Aborted,
                ..
            }
        ));
        assert_eq!(
            ledger.get_file(id).await.unwrap().unwrap().state,
            FileState::Aborted
        );
    }

    pub async fn a_closed_upload_can_be_completed_failed_or_aborted_no_more(
        b: &impl LedgerBackend,
    ) {
        let ledger = b.open().await;
        let id = opened(&ledger, &upload("o", "closed")).await;
        ledger
            .complete_upload(
                id,
                Lease::UNTAKEN,
                &md5_for("closed"),
                &blake3_for("closed"),
                &locator_for("closed"),
            )
            .await
            .unwrap();
        for refused in [
            ledger
                .complete_upload(
                    id,
                    Lease::UNTAKEN,
                    &md5_for("closed"),
                    &blake3_for("closed"),
                    &locator_for("closed"),
                )
                .await
                .map(|_| ()),
            ledger.fail_upload(id, Lease::UNTAKEN, "late").await,
            ledger.abort_upload(id).await,
            ledger
                .commit_chunks(id, Lease::UNTAKEN, &[chunk(0)])
                .await
                .map(|_| ()),
        ] {
            assert!(matches!(
                refused,
                Err(LedgerError::NotUploading {
                    state: FileState::Complete,
                    ..
                })
            ));
        }
    }

    pub async fn a_failed_upload_forgets_its_chunks_and_frees_the_content(b: &impl LedgerBackend) {
        let ledger = b.open().await;
        let new = upload("o", "fail");
        let id = ledger.open_upload(&new).await.unwrap().file.id;
        ledger
            .commit_chunks(id, Lease::UNTAKEN, &[chunk(0)])
            .await
            .unwrap();
        ledger
            .fail_upload(id, Lease::UNTAKEN, "MD5 mismatch")
            .await
            .unwrap();
        assert_eq!(
            ledger.get_file(id).await.unwrap().unwrap().state,
            FileState::Failed
        );
        assert!(ledger.committed_ranges(id).await.unwrap().is_empty());
        assert!(
            ledger
                .add_file_for_owned_content(
                    "o",
                    &new.name,
                    &new.md5.expect("an MD5"),
                    new.size,
                    None
                )
                .await
                .unwrap()
                .is_none(),
            "a failed upload stores no content"
        );
        let next = ledger.open_upload(&new).await.unwrap();
        assert!(next.created);
        assert_ne!(next.file.id, id);
    }

    pub async fn unknown_ids_are_not_found(b: &impl LedgerBackend) {
        let ledger = b.open().await;
        let id = Uuid::new_v4();
        assert!(ledger.get_file(id).await.unwrap().is_none());
        assert!(matches!(
            ledger.commit_chunks(id, Lease::UNTAKEN, &[chunk(0)]).await,
            Err(LedgerError::NotFound(_))
        ));
        assert!(matches!(
            ledger
                .complete_upload(id, Lease::UNTAKEN, &[0; 16], &[0; 32], "stored/none")
                .await,
            Err(LedgerError::NotFound(_))
        ));
        assert!(matches!(
            ledger.abort_upload(id).await,
            Err(LedgerError::NotFound(_))
        ));
    }

    pub async fn committed_chunks_come_back_as_runs(b: &impl LedgerBackend) {
        let ledger = b.open().await;
        let mut new = upload("o", "runs");
        new.chunk_count = 100;
        let id = ledger.open_upload(&new).await.unwrap().file.id;
        let indexes = [0, 1, 2, 5, 7, 8, 9, 99];
        let chunks: Vec<_> = indexes.iter().map(|&i| chunk(i)).collect();
        ledger
            .commit_chunks(id, Lease::UNTAKEN, &chunks)
            .await
            .unwrap();
        assert_eq!(
            ledger.committed_ranges(id).await.unwrap(),
            vec![(0, 3), (5, 6), (7, 10), (99, 100)]
        );
    }

    pub async fn the_open_session_of_an_owner_is_found_by_content(b: &impl LedgerBackend) {
        let ledger = b.open().await;
        let new = upload("alice", "find");
        assert!(
            ledger
                .find_open_upload("alice", &new.md5.expect("an MD5"), new.size)
                .await
                .unwrap()
                .is_none()
        );
        let opened = ledger.open_upload(&new).await.unwrap().file;
        let found = ledger
            .find_open_upload("alice", &new.md5.expect("an MD5"), new.size)
            .await
            .unwrap();
        assert_eq!(found, Some(opened.clone()));
        assert!(
            ledger
                .find_open_upload("bob", &new.md5.expect("an MD5"), new.size)
                .await
                .unwrap()
                .is_none()
        );
        ledger
            .complete_upload(
                opened.id,
                Lease::UNTAKEN,
                &md5_for("find"),
                &blake3_for("find"),
                &locator_for("find"),
            )
            .await
            .unwrap();
        assert!(
            ledger
                .find_open_upload("alice", &new.md5.expect("an MD5"), new.size)
                .await
                .unwrap()
                .is_none()
        );
    }

    pub async fn a_hash_checkpoint_is_kept_only_while_it_is_the_latest(b: &impl LedgerBackend) {
        let ledger = b.open().await;
        let id = opened(&ledger, &upload("o", "hash")).await;
        assert_eq!(ledger.hash_checkpoint(id).await.unwrap(), None);
        let at = |chunks: u64| HashCheckpoint {
            chunks,
            state: vec![chunks as u8; 24],
        };
        ledger
            .save_hash_checkpoint(id, Lease::UNTAKEN, &at(2))
            .await
            .unwrap();
        assert_eq!(ledger.hash_checkpoint(id).await.unwrap(), Some(at(2)));
        // A late save of an older checkpoint does not replace a newer one.
        ledger
            .save_hash_checkpoint(id, Lease::UNTAKEN, &at(1))
            .await
            .unwrap();
        assert_eq!(ledger.hash_checkpoint(id).await.unwrap(), Some(at(2)));
        drop(ledger);
        let ledger = b.open().await;
        assert_eq!(
            ledger.hash_checkpoint(id).await.unwrap(),
            Some(at(2)),
            "it survives reopening"
        );
        ledger
            .complete_upload(
                id,
                Lease::UNTAKEN,
                &md5_for("hash"),
                &blake3_for("hash"),
                &locator_for("hash"),
            )
            .await
            .unwrap();
        assert!(matches!(
            ledger
                .save_hash_checkpoint(id, Lease::UNTAKEN, &at(3))
                .await,
            Err(LedgerError::NotUploading { .. })
        ));
    }

    pub async fn single_pass_uploads_are_each_their_own_session_and_get_their_md5_on_completion(
        b: &impl LedgerBackend,
    ) {
        let ledger = b.open().await;
        let first = ledger.open_upload(&single_pass("o", "sp")).await.unwrap();
        let second = ledger.open_upload(&single_pass("o", "sp")).await.unwrap();
        assert!(first.created && second.created);
        assert_ne!(first.file.id, second.file.id);
        assert_eq!(first.file.md5, None);
        assert_eq!(first.file.head_md5, Some(md5_for("head sp")));

        let id = first.file.id;
        ledger
            .commit_chunks(id, Lease::UNTAKEN, &[chunk(0), chunk(1), chunk(2)])
            .await
            .unwrap();
        let done = ledger
            .complete_upload(
                id,
                Lease::UNTAKEN,
                &md5_for("sp"),
                &blake3_for("sp"),
                &locator_for("sp"),
            )
            .await
            .unwrap();
        assert_eq!(done.state, FileState::Complete);
        assert_eq!(done.md5, Some(md5_for("sp")));
        // Its content is now there for its owner's instant uploads.
        let copy = ledger
            .add_file_for_owned_content("o", "copy.bin", &md5_for("sp"), 10_000, None)
            .await
            .unwrap();
        assert!(copy.is_some());
    }

    pub async fn the_ledger_survives_reopening(b: &impl LedgerBackend) {
        let id = {
            let ledger = b.open().await;
            let id = opened(&ledger, &upload("o", "persist")).await;
            ledger
                .commit_chunks(id, Lease::UNTAKEN, &[chunk(0), chunk(2)])
                .await
                .unwrap();
            id
        };
        let ledger = b.open().await;
        let file = ledger
            .get_file(id)
            .await
            .unwrap()
            .expect("the file is still there");
        assert_eq!(file.state, FileState::Uploading);
        assert_eq!(
            ledger.committed_ranges(id).await.unwrap(),
            vec![(0, 1), (2, 3)]
        );
        let again = ledger.open_upload(&upload("o", "persist")).await.unwrap();
        assert_eq!(again.file.id, id);
    }

    pub async fn the_first_blob_handle_kept_stays_while_the_upload_is_open(b: &impl LedgerBackend) {
        let ledger = b.open().await;
        let id = opened(&ledger, &upload("o", "handle")).await;
        let file = ledger.get_file(id).await.unwrap().unwrap();
        assert_eq!(file.blob_upload, None, "nothing begun yet");
        assert_eq!(
            ledger
                .keep_blob_upload(id, Lease::UNTAKEN, "first")
                .await
                .unwrap(),
            "first"
        );
        assert_eq!(
            ledger
                .keep_blob_upload(id, Lease::UNTAKEN, "second")
                .await
                .unwrap(),
            "first",
            "a later handle gives way to the kept one"
        );
        let reopened = b.open().await;
        let file = reopened.get_file(id).await.unwrap().unwrap();
        assert_eq!(file.blob_upload.as_deref(), Some("first"));
        reopened.abort_upload(id).await.unwrap();
        assert!(matches!(
            reopened.keep_blob_upload(id, Lease::UNTAKEN, "late").await,
            Err(LedgerError::NotUploading { .. })
        ));
        assert!(matches!(
            reopened
                .keep_blob_upload(Uuid::new_v4(), Lease::UNTAKEN, "stray")
                .await,
            Err(LedgerError::NotFound(_))
        ));
    }

    pub async fn receipts_come_back_by_index_as_first_recorded(b: &impl LedgerBackend) {
        let ledger = b.open().await;
        let id = opened(&ledger, &upload("o", "receipts")).await;
        let with = |index: u64, tag: &str| CommittedChunk {
            receipt: Some(tag.to_owned()),
            ..chunk(index)
        };
        ledger
            .commit_chunks(id, Lease::UNTAKEN, &[with(2, "c"), chunk(1)])
            .await
            .unwrap();
        ledger
            .commit_chunks(id, Lease::UNTAKEN, &[with(0, "a"), with(2, "again")])
            .await
            .unwrap();
        assert_eq!(
            ledger.part_receipts(id).await.unwrap(),
            vec![(0, "a".to_owned()), (2, "c".to_owned())],
            "by index, chunks without one left out, the first record kept"
        );
        assert_eq!(
            b.open().await.part_receipts(Uuid::new_v4()).await.unwrap(),
            vec![]
        );
    }
}
