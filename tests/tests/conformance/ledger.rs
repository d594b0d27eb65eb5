//! The [`ChunkLedger`] contract, checked on every implementation.

use std::sync::Arc;

use tempfile::TempDir;
use transfer_service::ledger::{
    Blake3Digest, ChunkLedger, CommittedChunk, FileState, HashCheckpoint, LedgerError, Md5Digest,
    NewUpload, OwnerUsage, PostgresLedger, SqliteLedger,
};
use transfer_tests::{TestDatabase, md5};
use uuid::Uuid;

/// A ledger implementation under test, which can be opened again on the same storage.
pub trait LedgerBackend {
    fn open(&self) -> impl Future<Output = Arc<dyn ChunkLedger>>;
}

pub struct Postgres(TestDatabase);

impl LedgerBackend for Postgres {
    async fn open(&self) -> Arc<dyn ChunkLedger> {
        Arc::new(
            PostgresLedger::connect(&self.0.url, 8)
                .await
                .expect("opening the PostgreSQL ledger"),
        )
    }
}

pub async fn postgres() -> Postgres {
    Postgres(TestDatabase::create().await)
}

pub struct Sqlite(TempDir);

impl LedgerBackend for Sqlite {
    async fn open(&self) -> Arc<dyn ChunkLedger> {
        Arc::new(
            SqliteLedger::open(&self.0.path().join("ledger.sqlite3"), 4)
                .await
                .expect("opening the SQLite ledger"),
        )
    }
}

pub async fn sqlite() -> Sqlite {
    Sqlite(tempfile::tempdir().expect("a temporary directory"))
}

crate::conformance_tests!(crate::ledger::suite; [
    postgres => crate::ledger::postgres(),
    sqlite => crate::ledger::sqlite(),
]; [
    opening_the_same_content_twice_returns_the_same_session,
    concurrent_opens_of_the_same_content_make_one_session,
    each_owner_gets_a_session_of_its_own,
    committed_chunks_are_recorded_once,
    concurrent_commits_of_one_index_record_it_once,
    chunks_are_refused_once_an_upload_is_aborted,
    completing_makes_the_content_instant_for_its_owner_only,
    content_with_proven_possession_is_given_by_all_three_digests_and_size,
    an_instant_upload_reuses_the_owners_file_of_the_same_name,
    two_contents_with_one_md5_stay_two_contents,
    owner_usage_counts_open_uploads_and_the_bytes_an_owner_sent,
    a_closed_upload_can_be_completed_failed_or_aborted_no_more,
    a_failed_upload_forgets_its_chunks_and_frees_the_content,
    unknown_ids_are_not_found,
    committed_chunks_come_back_as_runs,
    the_open_session_of_an_owner_is_found_by_content,
    a_hash_checkpoint_is_kept_only_while_it_is_the_latest,
    the_ledger_survives_reopening,
    single_pass_uploads_are_each_their_own_session_and_get_their_md5_on_completion,
    a_head_digest_finds_only_the_owners_uploading_and_complete_files,
]);

pub mod suite {
    use super::*;

    /// Opens an upload that must open, and returns its id.
    async fn opened(ledger: &Arc<dyn ChunkLedger>, upload: &NewUpload) -> Uuid {
        ledger.open_upload(upload).await.unwrap().file.id
    }

    /// A BLAKE3 a test records as content completed from `seed`.
    fn blake3_for(seed: &str) -> Blake3Digest {
        *blake3::hash(seed.as_bytes()).as_bytes()
    }

    /// The MD5 that `upload(_, seed)` declares.
    fn md5_for(seed: &str) -> Md5Digest {
        md5(seed.as_bytes()).try_into().expect("16 bytes")
    }

    fn upload(owner: &str, seed: &str) -> NewUpload {
        NewUpload {
            owner: owner.into(),
            name: format!("{seed}.bin"),
            size: 10_000,
            md5: Some(md5_for(seed)),
            head_md5: None,
            chunk_size: 4096,
            chunk_count: 3,
        }
    }

    fn chunk(index: u64) -> CommittedChunk {
        CommittedChunk {
            index,
            size: 4096,
            crc32c: 0xDEAD_BEEF,
        }
    }

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
            .commit_chunks(id, &[chunk(2), chunk(0)])
            .await
            .unwrap();
        assert_eq!(newly, vec![0, 2]);
        let newly = ledger
            .commit_chunks(id, &[chunk(0), chunk(1)])
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
            tokio::spawn(async move { ledger.commit_chunks(id, &[chunk(1)]).await.unwrap() })
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
        ledger.commit_chunks(id, &[chunk(0)]).await.unwrap();
        ledger.abort_upload(id).await.unwrap();
        assert!(
            ledger.committed_ranges(id).await.unwrap().is_empty(),
            "chunks forgotten"
        );
        let refused = ledger.commit_chunks(id, &[chunk(1)]).await.unwrap_err();
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
            .commit_chunks(id, &[chunk(0), chunk(1), chunk(2)])
            .await
            .unwrap();
        let done = ledger
            .complete_upload(id, &md5_for("done"), &blake3_for("done"))
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
        assert!(!ledger.has_content(&blake3, size, &md5).await.unwrap());
        let before = ledger
            .add_file_for_content("bob", "copy.bin", &blake3, size, &md5, None)
            .await
            .unwrap();
        assert!(before.is_none(), "no content before completion");
        let id = opened(&ledger, &new).await;
        ledger.complete_upload(id, &md5, &blake3).await.unwrap();

        assert!(ledger.has_content(&blake3, size, &md5).await.unwrap());
        for (blake3, size, md5) in [
            (blake3_for("other"), size, md5),
            (blake3, size + 1, md5),
            (blake3, size, md5_for("other")),
        ] {
            assert!(!ledger.has_content(&blake3, size, &md5).await.unwrap());
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
            .complete_upload(done, &md5_for("done"), &blake3_for("done"))
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

    pub async fn two_contents_with_one_md5_stay_two_contents(b: &impl LedgerBackend) {
        let ledger = b.open().await;
        // Same declared MD5 and size; the server computed different BLAKE3s.
        let alices = opened(&ledger, &upload("alice", "twin")).await;
        let bobs = opened(&ledger, &upload("bob", "twin")).await;
        let a = ledger
            .complete_upload(alices, &md5_for("twin"), &blake3_for("good"))
            .await
            .unwrap();
        let b = ledger
            .complete_upload(bobs, &md5_for("twin"), &blake3_for("evil"))
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
            .complete_upload(id, &md5_for("reuse"), &blake3_for("reuse"))
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

    pub async fn a_closed_upload_can_be_completed_failed_or_aborted_no_more(
        b: &impl LedgerBackend,
    ) {
        let ledger = b.open().await;
        let id = opened(&ledger, &upload("o", "closed")).await;
        ledger
            .complete_upload(id, &md5_for("closed"), &blake3_for("closed"))
            .await
            .unwrap();
        for refused in [
            ledger
                .complete_upload(id, &md5_for("closed"), &blake3_for("closed"))
                .await
                .map(|_| ()),
            ledger.fail_upload(id, "late").await,
            ledger.abort_upload(id).await,
            ledger.commit_chunks(id, &[chunk(0)]).await.map(|_| ()),
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
        ledger.commit_chunks(id, &[chunk(0)]).await.unwrap();
        ledger.fail_upload(id, "MD5 mismatch").await.unwrap();
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
            ledger.commit_chunks(id, &[chunk(0)]).await,
            Err(LedgerError::NotFound(_))
        ));
        assert!(matches!(
            ledger.complete_upload(id, &[0; 16], &[0; 32]).await,
            Err(LedgerError::NotFound(_))
        ));
        assert!(matches!(
            ledger.abort_upload(id).await,
            Err(LedgerError::NotFound(_))
        ));
    }

    pub async fn the_ledger_survives_reopening(b: &impl LedgerBackend) {
        let id = {
            let ledger = b.open().await;
            let id = opened(&ledger, &upload("o", "persist")).await;
            ledger
                .commit_chunks(id, &[chunk(0), chunk(2)])
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

    pub async fn committed_chunks_come_back_as_runs(b: &impl LedgerBackend) {
        let ledger = b.open().await;
        let mut new = upload("o", "runs");
        new.chunk_count = 100;
        let id = ledger.open_upload(&new).await.unwrap().file.id;
        let indexes = [0, 1, 2, 5, 7, 8, 9, 99];
        let chunks: Vec<_> = indexes.iter().map(|&i| chunk(i)).collect();
        ledger.commit_chunks(id, &chunks).await.unwrap();
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
            .complete_upload(opened.id, &md5_for("find"), &blake3_for("find"))
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
        ledger.save_hash_checkpoint(id, &at(2)).await.unwrap();
        assert_eq!(ledger.hash_checkpoint(id).await.unwrap(), Some(at(2)));
        // A late save of an older checkpoint does not replace a newer one.
        ledger.save_hash_checkpoint(id, &at(1)).await.unwrap();
        assert_eq!(ledger.hash_checkpoint(id).await.unwrap(), Some(at(2)));
        drop(ledger);
        let ledger = b.open().await;
        assert_eq!(
            ledger.hash_checkpoint(id).await.unwrap(),
            Some(at(2)),
            "it survives reopening"
        );
        ledger
            .complete_upload(id, &md5_for("hash"), &blake3_for("hash"))
            .await
            .unwrap();
        assert!(matches!(
            ledger.save_hash_checkpoint(id, &at(3)).await,
            Err(LedgerError::NotUploading { .. })
        ));
    }

    fn single_pass(owner: &str, seed: &str) -> NewUpload {
        NewUpload {
            md5: None,
            head_md5: Some(md5_for(&format!("head {seed}"))),
            ..upload(owner, seed)
        }
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
            .commit_chunks(id, &[chunk(0), chunk(1), chunk(2)])
            .await
            .unwrap();
        let done = ledger
            .complete_upload(id, &md5_for("sp"), &blake3_for("sp"))
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
            .complete_upload(open.id, &md5_for("h"), &blake3_for("h"))
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
