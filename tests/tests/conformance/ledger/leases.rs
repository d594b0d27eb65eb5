//! The [`UploadLeases`] contract, checked on every ledger: who writes an open upload,
//! and that a holder that lost its lease changes nothing.
//!
//! [`UploadLeases`]: transfer_service::ledger::UploadLeases

crate::conformance_tests!(crate::ledger::leases::suite; [
    postgres => crate::ledger::postgres(),
    sqlite => crate::ledger::sqlite(),
]; [
    a_free_lease_is_taken_and_each_taking_raises_the_epoch,
    a_live_holder_keeps_its_lease_and_is_named,
    the_lease_of_a_holder_whose_heartbeat_lapsed_is_taken_over,
    a_stalled_holders_writes_after_a_takeover_change_nothing,
    a_released_lease_is_free_and_a_forgotten_replica_holds_nothing,
    a_closed_upload_has_no_lease_to_take,
    two_replicas_taking_one_lease_at_once_get_it_once,
]);

pub mod suite {
    use super::super::support::*;
    use std::time::Duration;

    const LONG: Duration = Duration::from_secs(600);

    async fn acquired(ledger: &Arc<dyn Ledger>, id: Uuid, replica: &str) -> Lease {
        match ledger.acquire_lease(id, replica).await.unwrap() {
            LeaseOutcome::Acquired(lease) => lease,
            other => panic!("{replica} expected the lease, got {other:?}"),
        }
    }

    pub async fn a_free_lease_is_taken_and_each_taking_raises_the_epoch(b: &impl LedgerBackend) {
        let ledger = b.open().await;
        let id = opened(&ledger, &upload("o", "a")).await;
        ledger.heartbeat("a", LONG).await.unwrap();
        let first = acquired(&ledger, id, "a").await;
        assert!(first.epoch > Lease::UNTAKEN.epoch);
        // Taken again by its holder (a session started anew): a newer epoch.
        let second = acquired(&ledger, id, "a").await;
        assert_eq!(second.epoch, first.epoch + 1);
        assert_eq!(ledger.live_holder(id).await.unwrap().as_deref(), Some("a"));
    }

    pub async fn a_live_holder_keeps_its_lease_and_is_named(b: &impl LedgerBackend) {
        let ledger = b.open().await;
        let id = opened(&ledger, &upload("o", "b")).await;
        ledger.heartbeat("a", LONG).await.unwrap();
        ledger.heartbeat("b", LONG).await.unwrap();
        acquired(&ledger, id, "a").await;
        assert_eq!(
            ledger.acquire_lease(id, "b").await.unwrap(),
            LeaseOutcome::HeldBy("a".into())
        );
    }

    pub async fn the_lease_of_a_holder_whose_heartbeat_lapsed_is_taken_over(
        b: &impl LedgerBackend,
    ) {
        let ledger = b.open().await;
        let id = opened(&ledger, &upload("o", "c")).await;
        ledger
            .heartbeat("a", Duration::from_millis(1))
            .await
            .unwrap();
        let old = acquired(&ledger, id, "a").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(ledger.live_holder(id).await.unwrap(), None);
        ledger.heartbeat("b", LONG).await.unwrap();
        let new = acquired(&ledger, id, "b").await;
        assert_eq!(new.epoch, old.epoch + 1);
        // A holder that never beat at all is not alive either.
        let other = opened(&ledger, &upload("o", "c2")).await;
        acquired(&ledger, other, "never-beat").await;
        acquired(&ledger, other, "b").await;
    }

    pub async fn a_stalled_holders_writes_after_a_takeover_change_nothing(b: &impl LedgerBackend) {
        let ledger = b.open().await;
        let content = upload("o", "d");
        let id = opened(&ledger, &content).await;
        ledger
            .heartbeat("a", Duration::from_millis(1))
            .await
            .unwrap();
        let stalled = acquired(&ledger, id, "a").await;
        ledger
            .commit_chunks(id, stalled, &[chunk(0)])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        ledger.heartbeat("b", LONG).await.unwrap();
        let taker = acquired(&ledger, id, "b").await;

        // The old holder wakes up and writes as if nothing happened.
        let lost = |result: Result<(), LedgerError>, what: &str| {
            assert!(
                matches!(result, Err(LedgerError::LeaseLost(lost)) if lost == id),
                "{what}: {result:?}"
            );
        };
        lost(
            ledger
                .commit_chunks(id, stalled, &[chunk(1)])
                .await
                .map(drop),
            "commit_chunks",
        );
        let checkpoint = HashCheckpoint {
            chunks: 1,
            state: vec![1, 2, 3],
        };
        lost(
            ledger.save_hash_checkpoint(id, stalled, &checkpoint).await,
            "save_hash_checkpoint",
        );
        lost(
            ledger
                .keep_blob_upload(id, stalled, "stale/handle")
                .await
                .map(drop),
            "keep_blob_upload",
        );
        lost(
            ledger
                .complete_upload(id, stalled, &md5_for("d"), &blake3_for("d"), "stale")
                .await
                .map(drop),
            "complete_upload",
        );
        lost(
            ledger.fail_upload(id, stalled, "stale").await,
            "fail_upload",
        );

        // Nothing of it counted: the upload is open with the one chunk, and its new
        // holder goes on.
        assert_eq!(ledger.committed_ranges(id).await.unwrap(), vec![(0, 1)]);
        assert_eq!(ledger.hash_checkpoint(id).await.unwrap(), None);
        let file = ledger.get_file(id).await.unwrap().unwrap();
        assert_eq!(file.state, FileState::Uploading);
        assert_eq!(file.blob_upload, None);
        assert_eq!(
            ledger.commit_chunks(id, taker, &[chunk(1)]).await.unwrap(),
            vec![1]
        );
        ledger
            .complete_upload(id, taker, &md5_for("d"), &blake3_for("d"), "fresh")
            .await
            .unwrap();
    }

    pub async fn a_released_lease_is_free_and_a_forgotten_replica_holds_nothing(
        b: &impl LedgerBackend,
    ) {
        let ledger = b.open().await;
        let one = opened(&ledger, &upload("o", "e1")).await;
        let two = opened(&ledger, &upload("o", "e2")).await;
        ledger.heartbeat("a", LONG).await.unwrap();
        ledger.heartbeat("b", LONG).await.unwrap();
        let held = acquired(&ledger, one, "a").await;
        acquired(&ledger, two, "a").await;
        ledger.release_lease(one, held).await.unwrap();
        assert_eq!(ledger.live_holder(one).await.unwrap(), None);
        acquired(&ledger, one, "b").await;
        // Releasing under an old epoch lets go of nothing.
        ledger.release_lease(one, held).await.unwrap();
        assert_eq!(ledger.live_holder(one).await.unwrap().as_deref(), Some("b"));

        ledger.forget_replica("a").await.unwrap();
        assert_eq!(ledger.live_holder(two).await.unwrap(), None);
        acquired(&ledger, two, "b").await;
    }

    pub async fn a_closed_upload_has_no_lease_to_take(b: &impl LedgerBackend) {
        let ledger = b.open().await;
        let id = opened(&ledger, &upload("o", "f")).await;
        ledger.abort_upload(id).await.unwrap();
        assert!(matches!(
            ledger.acquire_lease(id, "a").await,
            Err(LedgerError::NotUploading {
                state: FileState::Aborted,
                ..
            })
        ));
        assert!(matches!(
            ledger.acquire_lease(Uuid::new_v4(), "a").await,
            Err(LedgerError::NotFound(_))
        ));
    }

    pub async fn two_replicas_taking_one_lease_at_once_get_it_once(b: &impl LedgerBackend) {
        let ledger = b.open().await;
        for round in 0..10 {
            let id = opened(&ledger, &upload("o", &format!("g{round}"))).await;
            ledger.heartbeat("a", LONG).await.unwrap();
            ledger.heartbeat("b", LONG).await.unwrap();
            let (a, b) = tokio::join!(ledger.acquire_lease(id, "a"), ledger.acquire_lease(id, "b"));
            let acquired = [a.unwrap(), b.unwrap()]
                .into_iter()
                .filter(|outcome| matches!(outcome, LeaseOutcome::Acquired(_)))
                .count();
            assert_eq!(acquired, 1, "round {round}");
        }
    }
}
