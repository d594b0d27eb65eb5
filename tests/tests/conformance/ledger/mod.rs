//! The ledger's contracts, one suite per trait ([`uploads`], [`catalog`], [`contents`],
//! [`garbage`], [`expiry`], [`leases`];
//! the export's in `copy`, the keys' in `keys`), each run on both dialects.

use std::sync::Arc;

use tempfile::TempDir;
use transfer_service::ledger::{Ledger, PostgresLedger, SqliteLedger};
use transfer_tests::TestDatabase;

/// A ledger implementation under test, which can be opened again on the same storage.
pub trait LedgerBackend {
    fn open(&self) -> impl Future<Output = Arc<dyn Ledger>>;
}

pub struct Postgres(TestDatabase);

impl LedgerBackend for Postgres {
    async fn open(&self) -> Arc<dyn Ledger> {
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
    async fn open(&self) -> Arc<dyn Ledger> {
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

mod catalog;
mod contents;
mod expiry;
mod garbage;
mod leases;
mod uploads;

/// What the suites share: records to write and the imports they all use.
pub mod support {
    pub use super::LedgerBackend;
    pub use std::sync::Arc;
    pub use transfer_service::ledger::{
        Blake3Digest, CommittedChunk, FileListing, FileState, HashCheckpoint, Lease, LeaseOutcome,
        Ledger, LedgerError, Md5Digest, NewUpload, OwnerUsage,
    };
    pub use transfer_tests::md5;
    pub use uuid::Uuid;

    /// Opens an upload that must open, and returns its id.
    pub async fn opened(ledger: &Arc<dyn Ledger>, upload: &NewUpload) -> Uuid {
        ledger.open_upload(upload).await.unwrap().file.id
    }

    /// A BLAKE3 a test records as content completed from `seed`.
    pub fn blake3_for(seed: &str) -> Blake3Digest {
        *blake3::hash(seed.as_bytes()).as_bytes()
    }

    /// The MD5 that `upload(_, seed)` declares.
    pub fn md5_for(seed: &str) -> Md5Digest {
        md5(seed.as_bytes()).try_into().expect("16 bytes")
    }

    pub fn upload(owner: &str, seed: &str) -> NewUpload {
        NewUpload {
            owner: owner.into(),
            name: format!("{seed}.bin"),
            size: 10_000,
            md5: Some(md5_for(seed)),
            head_md5: None,
            chunk_size: 4096,
            chunk_count: 3,
            expires_at: chrono::Utc::now() + chrono::Duration::days(1),
        }
    }

    pub fn chunk(index: u64) -> CommittedChunk {
        CommittedChunk {
            index,
            size: 4096,
            crc32c: 0xDEAD_BEEF,
            receipt: None,
        }
    }

    /// A single-pass upload: no MD5 until it completes, a head digest from `seed`.
    pub fn single_pass(owner: &str, seed: &str) -> NewUpload {
        NewUpload {
            md5: None,
            head_md5: Some(md5_for(&format!("head {seed}"))),
            ..upload(owner, seed)
        }
    }

    /// Where a test says content completed from `seed` is stored.
    pub fn locator_for(seed: &str) -> String {
        format!("stored/{seed}")
    }
}
