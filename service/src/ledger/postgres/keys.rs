//! [`KeyLedger`] on PostgreSQL.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::{PostgresLedger, db_error};
use crate::ledger::LedgerError;
use crate::ledger::keys::{ApiKeyRecord, KeyLedger, NewApiKey, secret_hash_from};

const KEY_COLUMNS: &str =
    "id, secret_sha256, owner, act_for_prefix, created_at, expires_at, revoked_at";

fn key_from_row(row: &Row) -> Result<ApiKeyRecord, LedgerError> {
    Ok(ApiKeyRecord {
        id: row.get("id"),
        secret_sha256: secret_hash_from(row.get("secret_sha256"))?,
        owner: row.get("owner"),
        act_for_prefix: row.get("act_for_prefix"),
        created_at: row.get("created_at"),
        expires_at: row.get("expires_at"),
        revoked_at: row.get("revoked_at"),
    })
}

#[async_trait]
impl KeyLedger for PostgresLedger {
    async fn create_key(&self, key: &NewApiKey) -> Result<ApiKeyRecord, LedgerError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "INSERT INTO api_keys (id, secret_sha256, owner, act_for_prefix, expires_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING \
                     RETURNING {KEY_COLUMNS}"
                ),
                &[
                    &key.id,
                    &key.secret_sha256.as_slice(),
                    &key.owner,
                    &key.act_for_prefix,
                    &key.expires_at,
                ],
            )
            .await
            .map_err(db_error)?;
        match row {
            Some(row) => key_from_row(&row),
            None => Err(LedgerError::AlreadyExists(format!(
                "an API key with id {} exists",
                key.id
            ))),
        }
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, LedgerError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"))
            .await
            .map_err(db_error)?;
        let row = client
            .query_opt(&statement, &[&id])
            .await
            .map_err(db_error)?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, LedgerError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, id"),
                &[],
            )
            .await
            .map_err(db_error)?;
        rows.iter().map(key_from_row).collect()
    }

    async fn revoke_key(&self, id: &str) -> Result<bool, LedgerError> {
        let client = self.client().await?;
        let updated = client
            .execute(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(db_error)?;
        Ok(updated > 0)
    }
}
