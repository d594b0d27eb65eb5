//! The [`ContentGarbage`] contract (content no file refers to, collected after a grace
//! period; blobs queued for deletion), checked on every ledger, races included.
//!
//! [`ContentGarbage`]: transfer_service::ledger::ContentGarbage

crate::conformance_tests!(crate::ledger::garbage::suite; [
    postgres => crate::ledger::postgres(),
    sqlite => crate::ledger::sqlite(),
]; [
    content_is_collected_only_once_its_last_file_is_gone_and_the_grace_has_passed,
    a_completion_of_stored_content_keeps_the_first_copy_and_queues_its_own,
    a_file_made_for_orphaned_content_keeps_it,
    content_stored_again_after_it_was_collected_is_stored_anew,
    two_files_of_one_content_deleted_at_once_leave_it_orphaned,
    the_collector_never_takes_content_from_a_racing_instant_upload,
    the_collector_never_takes_content_from_a_racing_completion,
]);

pub mod suite {
    use std::time::Duration;

    use super::super::support::*;
    use transfer_service::ledger::FileRecord;

    const NOW: Duration = Duration::ZERO;
    const AN_HOUR: Duration = Duration::from_secs(3600);
    const SIZE: u64 = 10_000;

    /// A complete file of `owner` holding content `content`, completed at `locator`.
    async fn stored(
        ledger: &Arc<dyn Ledger>,
        owner: &str,
        content: &str,
        locator: &str,
    ) -> FileRecord {
        let id = opened(ledger, &upload(owner, content)).await;
        ledger
            .complete_upload(
                id,
                Lease::UNTAKEN,
                &md5_for(content),
                &blake3_for(content),
                locator,
            )
            .await
            .unwrap()
    }

    async fn queued(ledger: &Arc<dyn Ledger>) -> Vec<String> {
        ledger.queued_garbage(100).await.unwrap()
    }

    async fn is_stored(ledger: &Arc<dyn Ledger>, content: &str) -> Option<String> {
        ledger
            .stored_content(&blake3_for(content), SIZE, &md5_for(content))
            .await
            .unwrap()
    }

    pub async fn content_is_collected_only_once_its_last_file_is_gone_and_the_grace_has_passed(
        b: &impl LedgerBackend,
    ) {
        let ledger = b.open().await;
        let first = stored(&ledger, "alice", "c", "loc/a").await;
        let copy = ledger
            .add_file_for_owned_content("alice", "copy", &md5_for("c"), SIZE, None)
            .await
            .unwrap()
            .expect("alice's content");
        ledger.delete_file("alice", first.id).await.unwrap();
        assert_eq!(
            ledger.collect_orphans(NOW, 10).await.unwrap(),
            0,
            "the copy refers to it"
        );
        assert_eq!(is_stored(&ledger, "c").await.as_deref(), Some("loc/a"));

        ledger.delete_file("alice", copy.id).await.unwrap();
        assert_eq!(
            ledger.collect_orphans(AN_HOUR, 10).await.unwrap(),
            0,
            "within the grace"
        );
        assert!(queued(&ledger).await.is_empty());
        assert_eq!(ledger.collect_orphans(NOW, 10).await.unwrap(), 1);
        assert_eq!(queued(&ledger).await, vec!["loc/a".to_owned()]);
        assert_eq!(is_stored(&ledger, "c").await, None);
        assert_eq!(
            ledger.collect_orphans(NOW, 10).await.unwrap(),
            0,
            "collected once"
        );
        ledger.forget_garbage("loc/a").await.unwrap();
        ledger.forget_garbage("loc/a").await.unwrap();
        assert!(queued(&ledger).await.is_empty());
    }

    pub async fn a_completion_of_stored_content_keeps_the_first_copy_and_queues_its_own(
        b: &impl LedgerBackend,
    ) {
        let ledger = b.open().await;
        let first = stored(&ledger, "alice", "c", "loc/a").await;
        let second = stored(&ledger, "bob", "c", "loc/b").await;
        for file in [&first, &second] {
            assert_eq!(
                ledger.content_locator(file).await.unwrap().as_deref(),
                Some("loc/a")
            );
        }
        assert_eq!(queued(&ledger).await, vec!["loc/b".to_owned()]);
        assert_eq!(ledger.collect_orphans(NOW, 10).await.unwrap(), 0);
    }

    pub async fn a_file_made_for_orphaned_content_keeps_it(b: &impl LedgerBackend) {
        let ledger = b.open().await;
        let first = stored(&ledger, "alice", "c", "loc/a").await;
        ledger.delete_file("alice", first.id).await.unwrap();
        // A completion of the same content takes the mark off.
        let second = stored(&ledger, "bob", "c", "loc/b").await;
        assert_eq!(ledger.collect_orphans(NOW, 10).await.unwrap(), 0);
        assert_eq!(
            ledger.content_locator(&second).await.unwrap().as_deref(),
            Some("loc/a")
        );
        // So does a file made for it by proof of possession.
        ledger.delete_file("bob", second.id).await.unwrap();
        let proven = ledger
            .add_file_for_content("carol", "c", &blake3_for("c"), SIZE, &md5_for("c"), None)
            .await
            .unwrap()
            .expect("the content is still stored");
        assert_eq!(ledger.collect_orphans(NOW, 10).await.unwrap(), 0);
        assert_eq!(
            ledger.content_locator(&proven).await.unwrap().as_deref(),
            Some("loc/a")
        );
        assert_eq!(queued(&ledger).await, vec!["loc/b".to_owned()]);
    }

    pub async fn content_stored_again_after_it_was_collected_is_stored_anew(
        b: &impl LedgerBackend,
    ) {
        let ledger = b.open().await;
        let first = stored(&ledger, "alice", "c", "loc/a").await;
        ledger.delete_file("alice", first.id).await.unwrap();
        assert_eq!(ledger.collect_orphans(NOW, 10).await.unwrap(), 1);
        ledger.forget_garbage("loc/a").await.unwrap();
        assert!(
            ledger
                .add_file_for_content("carol", "c", &blake3_for("c"), SIZE, &md5_for("c"), None)
                .await
                .unwrap()
                .is_none(),
            "collected content is not stored"
        );
        let again = stored(&ledger, "bob", "c", "loc/b").await;
        assert_eq!(
            ledger.content_locator(&again).await.unwrap().as_deref(),
            Some("loc/b")
        );
        assert!(queued(&ledger).await.is_empty());
    }

    pub async fn two_files_of_one_content_deleted_at_once_leave_it_orphaned(
        b: &impl LedgerBackend,
    ) {
        let ledger = b.open().await;
        for round in 0..10 {
            let content = format!("c{round}");
            let first = stored(&ledger, "alice", &content, &format!("loc/{round}")).await;
            let copy = ledger
                .add_file_for_owned_content("alice", "copy", &md5_for(&content), SIZE, None)
                .await
                .unwrap()
                .expect("alice's content");
            let (one, two) = tokio::join!(
                ledger.delete_file("alice", first.id),
                ledger.delete_file("alice", copy.id)
            );
            one.unwrap().expect("deleted");
            two.unwrap().expect("deleted");
            assert_eq!(
                ledger.collect_orphans(NOW, 10).await.unwrap(),
                1,
                "round {round}: the last delete marked it"
            );
        }
    }

    /// After a race: a file the race made has its content stored, under a locator not
    /// queued for deletion.
    async fn keeps_its_content(ledger: &Arc<dyn Ledger>, file: &FileRecord) {
        let locator = ledger
            .content_locator(file)
            .await
            .unwrap()
            .expect("a file made in the race has its content");
        assert!(
            !queued(ledger).await.contains(&locator),
            "{locator} is queued for deletion while a file refers to it"
        );
    }

    pub async fn the_collector_never_takes_content_from_a_racing_instant_upload(
        b: &impl LedgerBackend,
    ) {
        let ledger = b.open().await;
        for round in 0..20 {
            let content = format!("c{round}");
            let first = stored(&ledger, "alice", &content, &format!("loc/{round}")).await;
            let collector = async {
                ledger.delete_file("alice", first.id).await.unwrap();
                ledger.collect_orphans(NOW, 10).await.unwrap()
            };
            let (md5, blake3) = (md5_for(&content), blake3_for(&content));
            // The owner copying its own file, and another owner that proved possession.
            let (_, own, proven) = tokio::join!(
                collector,
                ledger.add_file_for_owned_content("alice", "copy", &md5, SIZE, None),
                ledger.add_file_for_content("bob", "proven", &blake3, SIZE, &md5, None),
            );
            for made in [own.unwrap(), proven.unwrap()].iter().flatten() {
                keeps_its_content(&ledger, made).await;
            }
        }
    }

    pub async fn the_collector_never_takes_content_from_a_racing_completion(
        b: &impl LedgerBackend,
    ) {
        let ledger = b.open().await;
        for round in 0..20 {
            let content = format!("c{round}");
            let first = stored(&ledger, "alice", &content, &format!("loc/a{round}")).await;
            let open = opened(&ledger, &upload("bob", &content)).await;
            let collector = async {
                ledger.delete_file("alice", first.id).await.unwrap();
                ledger.collect_orphans(NOW, 10).await.unwrap()
            };
            let (md5, blake3) = (md5_for(&content), blake3_for(&content));
            let locator = format!("loc/b{round}");
            let completion = ledger.complete_upload(open, Lease::UNTAKEN, &md5, &blake3, &locator);
            let (_, completed) = tokio::join!(collector, completion);
            keeps_its_content(&ledger, &completed.unwrap()).await;
        }
    }
}
