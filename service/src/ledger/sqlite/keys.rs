//! [`KeyLedger`] on the embedded SQLite file.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, params};

use super::{SqliteLedger, db_error, now_micros, time};
use crate::ledger::LedgerError;
use crate::ledger::keys::{ApiKeyRecord, KeyLedger, NewApiKey, secret_hash_from};

const KEY_COLUMNS: &str =
    "id, secret_sha256, owner, act_for_prefix, created_at, expires_at, revoked_at";

/// A key row as SQLite returns it, before checking its values.
struct RawKey {
    id: String,
    secret_sha256: Vec<u8>,
    owner: String,
    act_for_prefix: Option<String>,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
}

fn raw_key(row: &Row<'_>) -> rusqlite::Result<RawKey> {
    Ok(RawKey {
        id: row.get(0)?,
        secret_sha256: row.get(1)?,
        owner: row.get(2)?,
        act_for_prefix: row.get(3)?,
        created_at: row.get(4)?,
        expires_at: row.get(5)?,
        revoked_at: row.get(6)?,
    })
}

impl TryFrom<RawKey> for ApiKeyRecord {
    type Error = LedgerError;

    fn try_from(raw: RawKey) -> Result<Self, LedgerError> {
        Ok(ApiKeyRecord {
            id: raw.id,
            secret_sha256: secret_hash_from(&raw.secret_sha256)?,
            owner: raw.owner,
            act_for_prefix: raw.act_for_prefix,
            created_at: time(raw.created_at)?,
            expires_at: raw.expires_at.map(time).transpose()?,
            revoked_at: raw.revoked_at.map(time).transpose()?,
        })
    }
}

#[async_trait]
impl KeyLedger for SqliteLedger {
    async fn create_key(&self, key: &NewApiKey) -> Result<ApiKeyRecord, LedgerError> {
        let key = key.clone();
        self.write(move |tx| {
            let inserted = tx
                .prepare_cached(&format!(
                    "INSERT INTO api_keys (id, secret_sha256, owner, act_for_prefix, created_at, expires_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING \
                     RETURNING {KEY_COLUMNS}"
                ))
                .and_then(|mut s| {
                    s.query_row(
                        params![
                            key.id,
                            key.secret_sha256,
                            key.owner,
                            key.act_for_prefix,
                            now_micros(),
                            key.expires_at.map(|t| t.timestamp_micros()),
                        ],
                        raw_key,
                    )
                    .optional()
                })
                .map_err(db_error)?;
            match inserted {
                Some(raw) => ApiKeyRecord::try_from(raw),
                None => Err(LedgerError::AlreadyExists(format!(
                    "an API key with id {} exists",
                    key.id
                ))),
            }
        })
        .await
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, LedgerError> {
        let id = id.to_owned();
        self.with(move |conn| {
            conn.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1"))
                .and_then(|mut s| s.query_row([id], raw_key).optional())
                .map_err(db_error)?
                .map(ApiKeyRecord::try_from)
                .transpose()
        })
        .await
    }

    async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, LedgerError> {
        self.with(move |conn| {
            let mut statement = conn
                .prepare_cached(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, id"
                ))
                .map_err(db_error)?;
            let rows = statement
                .query_map([], raw_key)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(db_error)?;
            rows.into_iter().map(ApiKeyRecord::try_from).collect()
        })
        .await
    }

    async fn revoke_key(&self, id: &str) -> Result<bool, LedgerError> {
        let id = id.to_owned();
        self.write(move |tx| {
            tx.execute(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?2) WHERE id = ?1",
                params![id, now_micros()],
            )
            .map(|updated| updated > 0)
            .map_err(db_error)
        })
        .await
    }
}
