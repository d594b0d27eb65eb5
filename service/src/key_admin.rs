//! `transferd keys create|list|revoke`: API keys managed offline against the ledger.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::Utc;

use crate::config::KeysCommand;
use crate::identity::Owner;
use crate::identity::api_key::{self, is_key_id};
use crate::ledger::{ApiKeyRecord, KeyLedger, LedgerError, NewApiKey};

#[derive(Debug, thiserror::Error)]
pub enum KeyAdminError {
    #[error("--owner {0}")]
    BadOwner(crate::identity::OwnerError),
    #[error("--act-for-prefix must be 1 to 128 printable ASCII characters without spaces")]
    BadPrefix,
    #[error("--expires-in is too long")]
    BadExpiry,
    #[error("{0:?} is not a key id (16 hex digits, as `transferd keys list` shows)")]
    BadId(String),
    #[error("no API key {0}")]
    NoSuchKey(String),
    #[error("the operating system's random source failed: {0}")]
    Random(getrandom::Error),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Runs a `keys` command; returns what to print on standard output.
pub async fn run(keys: &dyn KeyLedger, command: &KeysCommand) -> Result<String, KeyAdminError> {
    match command {
        KeysCommand::Create {
            owner,
            act_for_prefix,
            expires_in,
        } => create(keys, owner, act_for_prefix.as_deref(), *expires_in).await,
        KeysCommand::List => list(keys).await,
        KeysCommand::Revoke { id } => {
            if !is_key_id(id) {
                return Err(KeyAdminError::BadId(id.clone()));
            }
            match keys.revoke_key(id).await? {
                true => Ok(format!(
                    "revoked API key {id}; servers refuse it within {} seconds\n",
                    crate::identity::KEY_CACHE_TTL.as_secs()
                )),
                false => Err(KeyAdminError::NoSuchKey(id.clone())),
            }
        }
    }
}

async fn create(
    keys: &dyn KeyLedger,
    owner: &str,
    act_for_prefix: Option<&str>,
    expires_in: Option<Duration>,
) -> Result<String, KeyAdminError> {
    let owner = Owner::parse(owner.as_bytes()).map_err(KeyAdminError::BadOwner)?;
    if let Some(prefix) = act_for_prefix {
        Owner::parse(prefix.as_bytes()).map_err(|_| KeyAdminError::BadPrefix)?;
    }
    let expires_at = expires_in
        .map(|d| {
            chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| Utc::now().checked_add_signed(d))
                .ok_or(KeyAdminError::BadExpiry)
        })
        .transpose()?;
    let issued = api_key::issue().map_err(KeyAdminError::Random)?;
    let record = keys
        .create_key(&NewApiKey {
            id: issued.id,
            secret_sha256: issued.secret_sha256,
            owner: owner.as_str().to_owned(),
            act_for_prefix: act_for_prefix.map(str::to_owned),
            expires_at,
        })
        .await?;
    let mut out = String::new();
    let _ = writeln!(out, "{}", issued.token);
    let _ = writeln!(
        out,
        "# API key {} for owner {}{}{}. The token above is shown only now: keep it \
         secret; send it as `authorization: Bearer <token>`.",
        record.id,
        record.owner,
        record
            .act_for_prefix
            .as_deref()
            .map(|p| format!(", may act for owners starting with {p:?}"))
            .unwrap_or_default(),
        record
            .expires_at
            .map(|t| format!(", expires {}", t.to_rfc3339()))
            .unwrap_or_default(),
    );
    Ok(out)
}

async fn list(keys: &dyn KeyLedger) -> Result<String, KeyAdminError> {
    let mut out = String::from("ID\tOWNER\tACT_FOR_PREFIX\tCREATED\tEXPIRES\tSTATE\n");
    for key in keys.list_keys().await? {
        let _ = writeln!(out, "{}", row(&key));
    }
    Ok(out)
}

fn row(key: &ApiKeyRecord) -> String {
    let state = match (key.revoked_at, key.expires_at) {
        (Some(at), _) => format!("revoked {}", at.to_rfc3339()),
        (None, Some(at)) if at <= Utc::now() => "expired".to_owned(),
        _ => "active".to_owned(),
    };
    format!(
        "{}\t{}\t{}\t{}\t{}\t{state}",
        key.id,
        key.owner,
        key.act_for_prefix.as_deref().unwrap_or("-"),
        key.created_at.to_rfc3339(),
        key.expires_at
            .map_or_else(|| "never".to_owned(), |t| t.to_rfc3339()),
    )
}
