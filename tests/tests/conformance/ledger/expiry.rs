//! The [`UploadExpiry`] contract (when open uploads expire), checked on every ledger.
//!
//! [`UploadExpiry`]: transfer_service::ledger::UploadExpiry

crate::conformance_tests!(crate::ledger::expiry::suite; [
    postgres => crate::ledger::postgres(),
    sqlite => crate::ledger::sqlite(),
]; [
    an_upload_expires_only_once_past_its_expiry_and_loses_its_chunks,
    an_expiry_moves_only_later_and_only_while_the_upload_is_open,
    an_upload_extended_after_it_was_listed_does_not_expire,
]);

pub mod suite {
    use chrono::{Duration, SubsecRound, Utc};

    use super::super::support::*;

    pub async fn an_upload_expires_only_once_past_its_expiry_and_loses_its_chunks(
        b: &impl LedgerBackend,
    ) {
        let ledger = b.open().await;
        // Ledgers keep microseconds.
        let soon = (Utc::now() + Duration::seconds(10)).trunc_subsecs(6);
        let id = ledger
            .open_upload(&NewUpload {
                expires_at: soon,
                ..upload("o", "soon")
            })
            .await
            .unwrap()
            .file
            .id;
        let later = opened(&ledger, &upload("o", "later")).await;
        ledger
            .commit_chunks(id, Lease::UNTAKEN, &[chunk(0), chunk(1)])
            .await
            .unwrap();
        assert_eq!(
            ledger.get_file(id).await.unwrap().unwrap().expires_at,
            Some(soon)
        );

        assert!(
            ledger
                .expired_uploads(Utc::now(), 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            !ledger.expire_upload(id, Utc::now()).await.unwrap(),
            "not yet"
        );

        let past = soon + Duration::seconds(1);
        let due = ledger.expired_uploads(past, 10).await.unwrap();
        assert_eq!(due.iter().map(|f| f.id).collect::<Vec<_>>(), vec![id]);
        assert!(ledger.expire_upload(id, past).await.unwrap());
        let file = ledger.get_file(id).await.unwrap().unwrap();
        assert_eq!(file.state, FileState::Expired);
        assert!(ledger.committed_ranges(id).await.unwrap().is_empty());
        assert!(matches!(
            ledger.commit_chunks(id, Lease::UNTAKEN, &[chunk(2)]).await,
            Err(LedgerError::NotUploading {
                state: FileState::Expired,
                ..
            })
        ));
        assert!(
            !ledger.expire_upload(id, past).await.unwrap(),
            "expired once"
        );
        assert!(ledger.expired_uploads(past, 10).await.unwrap().is_empty());
        // The same content opens a new session; the other upload is untouched.
        assert_ne!(opened(&ledger, &upload("o", "soon")).await, id);
        assert_eq!(
            ledger.get_file(later).await.unwrap().unwrap().state,
            FileState::Uploading
        );
    }

    pub async fn an_expiry_moves_only_later_and_only_while_the_upload_is_open(
        b: &impl LedgerBackend,
    ) {
        let ledger = b.open().await;
        let id = opened(&ledger, &upload("o", "x")).await;
        let first = ledger
            .get_file(id)
            .await
            .unwrap()
            .unwrap()
            .expires_at
            .unwrap();
        let earlier = first - Duration::hours(1);
        assert_eq!(ledger.extend_upload(id, earlier).await.unwrap(), first);
        let later = (first + Duration::hours(1)).trunc_subsecs(6);
        assert_eq!(ledger.extend_upload(id, later).await.unwrap(), later);
        assert_eq!(
            ledger.get_file(id).await.unwrap().unwrap().expires_at,
            Some(later)
        );
        ledger.abort_upload(id).await.unwrap();
        assert!(matches!(
            ledger.extend_upload(id, later + Duration::hours(1)).await,
            Err(LedgerError::NotUploading { .. })
        ));
        assert!(matches!(
            ledger.extend_upload(Uuid::new_v4(), later).await,
            Err(LedgerError::NotFound(_))
        ));
    }

    pub async fn an_upload_extended_after_it_was_listed_does_not_expire(b: &impl LedgerBackend) {
        let ledger = b.open().await;
        let past = Utc::now() - Duration::seconds(1);
        let id = ledger
            .open_upload(&NewUpload {
                expires_at: past,
                ..upload("o", "busy")
            })
            .await
            .unwrap()
            .file
            .id;
        let now = Utc::now();
        assert_eq!(ledger.expired_uploads(now, 10).await.unwrap().len(), 1);
        // A stream attaches between the sweeper's list and its expiring the upload.
        ledger
            .extend_upload(id, now + Duration::hours(1))
            .await
            .unwrap();
        assert!(!ledger.expire_upload(id, now).await.unwrap());
        assert_eq!(
            ledger.get_file(id).await.unwrap().unwrap().state,
            FileState::Uploading
        );
    }
}
