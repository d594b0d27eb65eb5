//! The [`ContentIndex`] contract (the content index: instant upload by digest, for the owner, or with possession proven), checked on every ledger.
//!
//! [`ContentIndex`]: transfer_service::ledger::ContentIndex

crate::conformance_tests!(crate::ledger::contents::suite; [
    postgres => crate::ledger::postgres(),
    sqlite => crate::ledger::sqlite(),
]; [
    completing_makes_the_content_instant_for_its_owner_only,
    content_with_proven_possession_is_given_by_all_three_digests_and_size,
    two_contents_with_one_md5_stay_two_contents,
    an_instant_upload_reuses_the_owners_file_of_the_same_name,
    content_is_found_where_its_first_upload_stored_it,
]);

pub mod suite {
    use super::super::support::*;

    pub async fn completing_makes_the_content_instant_for_its_owner_only(b: &impl LedgerBackend) {
        let ledger = b.open().await;
        let new = upload("alice", "done");
        let none = ledger
            .add_file_for_owned_content(
                "alice",
                "copy.bin",
                &new.md5.expect("an MD5"),
                new.size,
                None,
            )
            .await
            .unwrap();
        assert!(none.is_none(), "no content before completion");
        let id = ledger.open_upload(&new).await.unwrap().file.id;
        ledger
            .commit_chunks(id, Lease::UNTAKEN, &[chunk(0), chunk(1), chunk(2)])
            .await
            .unwrap();
        let done = ledger
            .complete_upload(
                id,
                Lease::UNTAKEN,
                &md5_for("done"),
                &blake3_for("done"),
                &locator_for("done"),
            )
            .await
            .unwrap();
        assert_eq!(done.state, FileState::Complete);
        assert!(done.completed_at.is_some());

        let foreign = ledger
            .add_file_for_owned_content(
                "bob",
                "copy.bin",
                &new.md5.expect("an MD5"),
                new.size,
                None,
            )
            .await
            .unwrap();
        assert!(
            foreign.is_none(),
            "another owner's content is never given by its digest"
        );
        let copy = ledger
            .add_file_for_owned_content(
                "alice",
                "copy.bin",
                &new.md5.expect("an MD5"),
                new.size,
                None,
            )
            .await
            .unwrap()
            .expect("the owner's content is stored now");
        assert_ne!(copy.id, id);
        assert_eq!(copy.owner, "alice");
        assert_eq!(copy.name, "copy.bin");
        assert_eq!(copy.state, FileState::Complete);
        assert_eq!((copy.md5, copy.size), (new.md5, new.size));
        let other_size = ledger
            .add_file_for_owned_content(
                "alice",
                "copy.bin",
                &new.md5.expect("an MD5"),
                new.size + 1,
                None,
            )
            .await
            .unwrap();
        assert!(
            other_size.is_none(),
            "content is found by MD5 and size together"
        );
    }

    pub async fn content_with_proven_possession_is_given_by_all_three_digests_and_size(
        b: &impl LedgerBackend,
    ) {
        let ledger = b.open().await;
        let new = upload("alice", "proven");
        let (md5, blake3, size) = (md5_for("proven"), blake3_for("proven"), new.size);
        assert_eq!(
            ledger.stored_content(&blake3, size, &md5).await.unwrap(),
            None
        );
        let before = ledger
            .add_file_for_content("bob", "copy.bin", &blake3, size, &md5, None)
            .await
            .unwrap();
        assert!(before.is_none(), "no content before completion");
        let id = opened(&ledger, &new).await;
        ledger
            .complete_upload(id, Lease::UNTAKEN, &md5, &blake3, "stored/proven")
            .await
            .unwrap();

        assert_eq!(
            ledger
                .stored_content(&blake3, size, &md5)
                .await
                .unwrap()
                .as_deref(),
            Some("stored/proven")
        );
        for (blake3, size, md5) in [
            (blake3_for("other"), size, md5),
            (blake3, size + 1, md5),
            (blake3, size, md5_for("other")),
        ] {
            assert_eq!(
                ledger.stored_content(&blake3, size, &md5).await.unwrap(),
                None
            );
            let none = ledger
                .add_file_for_content("bob", "copy.bin", &blake3, size, &md5, None)
                .await
                .unwrap();
            assert!(none.is_none(), "every digest and the size must match");
        }
        let head = md5_for("head");
        let copy = ledger
            .add_file_for_content("bob", "copy.bin", &blake3, size, &md5, Some(&head))
            .await
            .unwrap()
            .expect("stored content");
        assert_ne!(copy.id, id);
        assert_eq!(
            (copy.owner.as_str(), copy.name.as_str()),
            ("bob", "copy.bin")
        );
        assert_eq!(copy.state, FileState::Complete);
        assert_eq!(
            (copy.md5, copy.size, copy.content_blake3, copy.head_md5),
            (Some(md5), size, Some(blake3), Some(head))
        );
        let again = ledger
            .add_file_for_content("bob", "copy.bin", &blake3, size, &md5, None)
            .await
            .unwrap()
            .expect("stored content");
        assert_eq!(
            again.id, copy.id,
            "the owner's file of that name and content"
        );
    }

    pub async fn two_contents_with_one_md5_stay_two_contents(b: &impl LedgerBackend) {
        let ledger = b.open().await;
        // Same declared MD5 and size; the server computed different BLAKE3s.
        let alices = opened(&ledger, &upload("alice", "twin")).await;
        let bobs = opened(&ledger, &upload("bob", "twin")).await;
        let a = ledger
            .complete_upload(
                alices,
                Lease::UNTAKEN,
                &md5_for("twin"),
                &blake3_for("good"),
                &locator_for("good"),
            )
            .await
            .unwrap();
        let b = ledger
            .complete_upload(
                bobs,
                Lease::UNTAKEN,
                &md5_for("twin"),
                &blake3_for("evil"),
                &locator_for("evil"),
            )
            .await
            .unwrap();
        assert_eq!(a.content_blake3, Some(blake3_for("good")));
        assert_eq!(b.content_blake3, Some(blake3_for("evil")));
        // Each owner's instant upload names the content that owner stored.
        let again = |owner: &'static str| {
            let ledger = Arc::clone(&ledger);
            async move {
                ledger
                    .add_file_for_owned_content(owner, "again.bin", &md5_for("twin"), 10_000, None)
                    .await
                    .unwrap()
                    .expect("the owner has this content")
                    .content_blake3
            }
        };
        assert_eq!(again("alice").await, Some(blake3_for("good")));
        assert_eq!(again("bob").await, Some(blake3_for("evil")));
        assert_eq!(
            ledger.get_file(bobs).await.unwrap().unwrap().content_blake3,
            Some(blake3_for("evil"))
        );
    }

    pub async fn an_instant_upload_reuses_the_owners_file_of_the_same_name(b: &impl LedgerBackend) {
        let ledger = b.open().await;
        let new = upload("o", "reuse");
        let id = ledger.open_upload(&new).await.unwrap().file.id;
        ledger
            .complete_upload(
                id,
                Lease::UNTAKEN,
                &md5_for("reuse"),
                &blake3_for("reuse"),
                &locator_for("reuse"),
            )
            .await
            .unwrap();
        let again = ledger
            .add_file_for_owned_content("o", &new.name, &new.md5.expect("an MD5"), new.size, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.id, id);
        let renamed = ledger
            .add_file_for_owned_content(
                "o",
                "other-name.bin",
                &new.md5.expect("an MD5"),
                new.size,
                None,
            )
            .await
            .unwrap()
            .unwrap();
        assert_ne!(renamed.id, id);
    }

    pub async fn content_is_found_where_its_first_upload_stored_it(b: &impl LedgerBackend) {
        let ledger = b.open().await;
        let (md5, blake3) = (md5_for("placed"), blake3_for("placed"));
        let first = opened(&ledger, &upload("alice", "placed")).await;
        let first = ledger
            .complete_upload(first, Lease::UNTAKEN, &md5, &blake3, "stored/first")
            .await
            .unwrap();
        let second = opened(&ledger, &upload("bob", "placed")).await;
        let second = ledger
            .complete_upload(second, Lease::UNTAKEN, &md5, &blake3, "stored/second")
            .await
            .unwrap();
        let copy = ledger
            .add_file_for_owned_content("bob", "copy.bin", &md5, 10_000, None)
            .await
            .unwrap()
            .expect("bob has this content");
        for file in [&first, &second, &copy] {
            assert_eq!(
                ledger.content_locator(file).await.unwrap().as_deref(),
                Some("stored/first"),
                "{}",
                file.name
            );
        }
        assert_eq!(
            ledger
                .stored_content(&blake3, 10_000, &md5)
                .await
                .unwrap()
                .as_deref(),
            Some("stored/first")
        );
        let unknown = opened(&ledger, &upload("alice", "unknown")).await;
        let unknown = ledger.get_file(unknown).await.unwrap().unwrap();
        assert_eq!(
            ledger.content_locator(&unknown).await.unwrap(),
            None,
            "an open upload has no content yet"
        );
    }
}
