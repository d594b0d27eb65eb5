//! The API key records: who a bearer token acts for, until when, and whether it was
//! revoked. Only a hash of each key's secret is kept (see [`crate::identity::api_key`]).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::LedgerError;
use crate::identity::api_key::SecretHash;

/// A key as the ledger keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// The key's public id (hex), part of its token.
    pub id: String,
    pub secret_sha256: SecretHash,
    /// The owner the key acts for.
    pub owner: String,
    /// When set, the key may also act for any owner whose name starts with this prefix,
    /// named per call in `x-transfer-owner` (a backend acting for its own users).
    pub act_for_prefix: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What a new key records.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: String,
    pub secret_sha256: SecretHash,
    pub owner: String,
    pub act_for_prefix: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// The durable record of API keys.
///
/// Contract for every implementation (checked by the key ledger conformance tests):
/// - `create_key` is durable when it returns; an id that exists already is refused
///   with [`LedgerError::AlreadyExists`].
/// - `api_key` returns exactly what was created, with `revoked_at` once revoked.
/// - `revoke_key` keeps the first revocation time, and says whether the key exists.
#[async_trait]
pub trait KeyLedger: Send + Sync + 'static {
    async fn create_key(&self, key: &NewApiKey) -> Result<ApiKeyRecord, LedgerError>;

    /// The key with this id, revoked or not.
    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, LedgerError>;

    /// Every key, oldest first.
    async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, LedgerError>;

    /// Marks a key revoked; `false` when there is no such key.
    async fn revoke_key(&self, id: &str) -> Result<bool, LedgerError>;
}

/// A stored secret hash back from its column.
pub(super) fn secret_hash_from(bytes: &[u8]) -> Result<SecretHash, LedgerError> {
    SecretHash::try_from(bytes)
        .map_err(|_| LedgerError::Corrupt(format!("a key secret hash of {} bytes", bytes.len())))
}
