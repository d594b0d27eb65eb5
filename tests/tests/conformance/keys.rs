//! The [`KeyLedger`] contract, checked on every implementation.

use std::sync::Arc;

use chrono::{Duration, Utc};
use tempfile::TempDir;
use transfer_service::ledger::{KeyLedger, LedgerError, NewApiKey, PostgresLedger, SqliteLedger};
use transfer_tests::TestDatabase;

/// A key ledger under test, which can be opened again on the same storage.
pub trait KeyBackend {
    fn open(&self) -> impl Future<Output = Arc<dyn KeyLedger>>;
}

pub struct Postgres(TestDatabase);

impl KeyBackend for Postgres {
    async fn open(&self) -> Arc<dyn KeyLedger> {
        let ledger = PostgresLedger::connect(&self.0.url, 4)
            .await
            .expect("opening the PostgreSQL ledger");
        Arc::new(ledger)
    }
}

pub async fn postgres() -> Postgres {
    Postgres(TestDatabase::create().await)
}

pub struct Sqlite(TempDir);

impl KeyBackend for Sqlite {
    async fn open(&self) -> Arc<dyn KeyLedger> {
        let ledger = SqliteLedger::open(&self.0.path().join("ledger.sqlite3"), 2)
            .await
            .expect("opening the SQLite ledger");
        Arc::new(ledger)
    }
}

pub async fn sqlite() -> Sqlite {
    Sqlite(tempfile::tempdir().expect("a temporary directory"))
}

crate::conformance_tests!(crate::keys::suite; [
    postgres => crate::keys::postgres(),
    sqlite => crate::keys::sqlite(),
]; [
    a_created_key_reads_back_exactly,
    a_key_id_is_taken_once,
    revoking_keeps_the_first_time_and_tells_unknown_ids,
    keys_are_listed_oldest_first_and_survive_reopening,
]);

pub mod suite {
    use super::*;

    fn key(id: &str, owner: &str) -> NewApiKey {
        NewApiKey {
            id: id.to_owned(),
            secret_sha256: [id.len() as u8; 32],
            owner: owner.to_owned(),
            act_for_prefix: None,
            expires_at: None,
        }
    }

    pub async fn a_created_key_reads_back_exactly(b: &impl KeyBackend) {
        let keys = b.open().await;
        let expires = Utc::now() + Duration::days(3);
        let new = NewApiKey {
            act_for_prefix: Some("users/".into()),
            expires_at: Some(expires),
            secret_sha256: [7; 32],
            ..key("00000000000000aa", "backend")
        };
        let created = keys.create_key(&new).await.unwrap();
        assert_eq!(created.id, "00000000000000aa");
        assert_eq!(created.owner, "backend");
        assert_eq!(created.secret_sha256, [7; 32]);
        assert_eq!(created.act_for_prefix.as_deref(), Some("users/"));
        // Times keep microseconds on both dialects.
        assert_eq!(
            created.expires_at.map(|t| t.timestamp_micros()),
            Some(expires.timestamp_micros())
        );
        assert_eq!(created.revoked_at, None);
        assert_eq!(keys.api_key(&created.id).await.unwrap(), Some(created));
        assert_eq!(keys.api_key("00000000000000ab").await.unwrap(), None);
    }

    pub async fn a_key_id_is_taken_once(b: &impl KeyBackend) {
        let keys = b.open().await;
        keys.create_key(&key("00000000000000bb", "alice"))
            .await
            .unwrap();
        let again = keys.create_key(&key("00000000000000bb", "mallory")).await;
        assert!(
            matches!(again, Err(LedgerError::AlreadyExists(_))),
            "{again:?}"
        );
        let kept = keys.api_key("00000000000000bb").await.unwrap().unwrap();
        assert_eq!(kept.owner, "alice", "the first key is kept as it was");
    }

    pub async fn revoking_keeps_the_first_time_and_tells_unknown_ids(b: &impl KeyBackend) {
        let keys = b.open().await;
        keys.create_key(&key("00000000000000cc", "alice"))
            .await
            .unwrap();
        assert!(keys.revoke_key("00000000000000cc").await.unwrap());
        let first = keys
            .api_key("00000000000000cc")
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .expect("revoked");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert!(keys.revoke_key("00000000000000cc").await.unwrap());
        let again = keys.api_key("00000000000000cc").await.unwrap().unwrap();
        assert_eq!(again.revoked_at, Some(first));
        assert!(!keys.revoke_key("00000000000000dd").await.unwrap());
    }

    pub async fn keys_are_listed_oldest_first_and_survive_reopening(b: &impl KeyBackend) {
        let keys = b.open().await;
        for id in ["00000000000000e1", "00000000000000e2", "00000000000000e3"] {
            keys.create_key(&key(id, "o")).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        drop(keys);
        let reopened = b.open().await;
        let ids: Vec<String> = reopened
            .list_keys()
            .await
            .unwrap()
            .into_iter()
            .map(|k| k.id)
            .collect();
        assert_eq!(
            ids,
            ["00000000000000e1", "00000000000000e2", "00000000000000e3"]
        );
    }
}
