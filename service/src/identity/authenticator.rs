//! Decides who a call acts for from its credential: a bearer API key, a client
//! certificate, or, with no authentication configured, the `x-transfer-owner` metadata.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::connections::AdmittedInfo;
use chrono::{DateTime, Utc};
use http::HeaderMap;
use http::header::AUTHORIZATION;
use tonic::transport::server::TlsConnectInfo;

use super::api_key::{PresentedKey, parse_token, same_secret};
use super::certificate::{CertificateOwnerError, owner_of_certificate};
use super::owner::{OWNER_METADATA_KEY, Owner, OwnerError};
use super::{CallContext, Principal};
use crate::ledger::{ApiKeyRecord, KeyLedger, LedgerError};

/// How long a verified key is trusted without asking the ledger again: a revoked key is
/// refused on every server at most this long after `transferd keys revoke`.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(5);
/// Most keys held in the cache; past it the cache starts over.
const KEY_CACHE_LIMIT: usize = 10_000;
/// Key lookups in the ledger at once: a flood of made-up keys queues here instead of
/// taking every ledger connection from the calls that have a valid one.
const CONCURRENT_LOOKUPS: usize = 4;

/// Why a call was refused before it reached a handler.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "this server requires a credential: an API key as `authorization: Bearer <key>`{}",
        if *.certificates { ", or a client certificate" } else { "" }
    )]
    MissingCredential { certificates: bool },
    #[error("the authorization header {0}")]
    MalformedAuthorization(&'static str),
    #[error("the API key is not valid")]
    InvalidKey,
    #[error("API key {id} was revoked")]
    RevokedKey { id: String },
    #[error("API key {id} expired at {at}")]
    ExpiredKey { id: String, at: DateTime<Utc> },
    #[error(transparent)]
    Certificate(#[from] CertificateOwnerError),
    #[error("{OWNER_METADATA_KEY}: {0}")]
    BadOwner(OwnerError),
    #[error("{OWNER_METADATA_KEY} is given more than once")]
    RepeatedOwner,
    #[error("this credential may not act for owner {owner}")]
    MayNotActFor { owner: Owner },
    /// Shown to the caller without the ledger's details (logged instead).
    #[error("API keys cannot be checked now; try again")]
    Ledger(#[from] LedgerError),
}

/// Checks credentials; cheap to share between connections.
pub struct Authenticator {
    keys: Option<KeyVerifier>,
    certificates: bool,
}

impl Authenticator {
    /// No authentication: the owner is what `x-transfer-owner` says (the default owner
    /// without it). Only for a server that listens on loopback.
    pub fn trusting_owner_metadata() -> Self {
        Self {
            keys: None,
            certificates: false,
        }
    }

    /// Calls must carry an API key found in `keys` (when given) or a client certificate
    /// (when `certificates`), or both may be accepted.
    pub fn new(keys: Option<Arc<dyn KeyLedger>>, certificates: bool) -> Self {
        Self {
            keys: keys.map(KeyVerifier::new),
            certificates,
        }
    }

    /// Whether calls must prove who they are.
    pub fn requires_credentials(&self) -> bool {
        self.keys.is_some() || self.certificates
    }

    /// The call context for a request with these headers, on a connection whose
    /// details tonic put in `extensions`.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        extensions: &http::Extensions,
    ) -> Result<CallContext, AuthError> {
        let requested = requested_owner(headers)?;
        if !self.requires_credentials() {
            return Ok(CallContext {
                owner: requested.unwrap_or_else(Owner::default_owner),
                principal: Principal::Unauthenticated,
            });
        }
        if let (Some(keys), Some(token)) = (&self.keys, bearer_token(headers)?) {
            let key = keys.verify(token).await?;
            let owner = acting_owner(&key, requested)?;
            return Ok(CallContext {
                owner,
                principal: Principal::ApiKey { id: key.id },
            });
        }
        if self.certificates
            && let Some(der) = peer_certificate(extensions)
        {
            let owner = owner_of_certificate(&der)?;
            if let Some(requested) = requested.filter(|r| *r != owner) {
                return Err(AuthError::MayNotActFor { owner: requested });
            }
            return Ok(CallContext {
                owner,
                principal: Principal::Certificate,
            });
        }
        Err(AuthError::MissingCredential {
            certificates: self.certificates,
        })
    }
}

/// The owner named in `x-transfer-owner`, if any.
fn requested_owner(headers: &HeaderMap) -> Result<Option<Owner>, AuthError> {
    let mut values = headers.get_all(OWNER_METADATA_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthError::RepeatedOwner);
    }
    Owner::parse(value.as_bytes())
        .map(Some)
        .map_err(AuthError::BadOwner)
}

/// The token of an `authorization: Bearer <token>` header, if there is one.
fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthError::MalformedAuthorization("is given more than once"));
    }
    let value = value
        .to_str()
        .map_err(|_| AuthError::MalformedAuthorization("is not printable ASCII"))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(Some(token.trim())),
        _ => Err(AuthError::MalformedAuthorization(
            "must be `Bearer <API key>`",
        )),
    }
}

/// The first certificate the client presented, when the connection is TLS.
fn peer_certificate(extensions: &http::Extensions) -> Option<Vec<u8>> {
    let tls = extensions.get::<TlsConnectInfo<AdmittedInfo>>()?;
    let chain = tls.peer_certs()?;
    chain.first().map(|c| c.as_ref().to_vec())
}

/// Who a call with `key` acts for: the key's owner, or the owner it names, where the
/// key may act for that owner.
fn acting_owner(key: &ApiKeyRecord, requested: Option<Owner>) -> Result<Owner, AuthError> {
    let own = || {
        Owner::parse(key.owner.as_bytes()).map_err(|_| {
            AuthError::Ledger(LedgerError::Corrupt(format!(
                "API key {} has an invalid owner",
                key.id
            )))
        })
    };
    let Some(requested) = requested else {
        return own();
    };
    let may = requested.as_str() == key.owner
        || key
            .act_for_prefix
            .as_deref()
            .is_some_and(|prefix| !prefix.is_empty() && requested.as_str().starts_with(prefix));
    if may {
        Ok(requested)
    } else {
        Err(AuthError::MayNotActFor { owner: requested })
    }
}

/// Checks bearer tokens against the ledger, keeping verified keys for
/// [`KEY_CACHE_TTL`].
struct KeyVerifier {
    ledger: Arc<dyn KeyLedger>,
    /// What the ledger said of a key id, and when: its record, or that it has none.
    cache: Mutex<HashMap<String, (Option<ApiKeyRecord>, Instant)>>,
    lookups: tokio::sync::Semaphore,
}

impl KeyVerifier {
    fn new(ledger: Arc<dyn KeyLedger>) -> Self {
        Self {
            ledger,
            cache: Mutex::new(HashMap::new()),
            lookups: tokio::sync::Semaphore::new(CONCURRENT_LOOKUPS),
        }
    }

    /// The record of a valid, unrevoked, unexpired key whose token this is.
    async fn verify(&self, token: &str) -> Result<ApiKeyRecord, AuthError> {
        let presented = parse_token(token).ok_or(AuthError::InvalidKey)?;
        let record = match self.cached(&presented.id) {
            Some(known) => known,
            None => {
                // The semaphore is never closed.
                let _turn = self.lookups.acquire().await;
                let found =
                    self.ledger.api_key(&presented.id).await.inspect_err(
                        |error| tracing::warn!(%error, "could not look up an API key"),
                    )?;
                self.remember(&presented.id, found.clone());
                found
            }
        };
        check(&presented, record.ok_or(AuthError::InvalidKey)?)
    }

    fn cached(&self, id: &str) -> Option<Option<ApiKeyRecord>> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache
            .get(id)
            .filter(|(_, fetched)| fetched.elapsed() < KEY_CACHE_TTL)
            .map(|(record, _)| record.clone())
    }

    fn remember(&self, id: &str, record: Option<ApiKeyRecord>) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= KEY_CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(id.to_owned(), (record, Instant::now()));
    }
}

/// Whether the presented secret is the key's, and the key still valid.
fn check(presented: &PresentedKey, record: ApiKeyRecord) -> Result<ApiKeyRecord, AuthError> {
    if !same_secret(&presented.secret_sha256, &record.secret_sha256) {
        return Err(AuthError::InvalidKey);
    }
    if record.revoked_at.is_some() {
        return Err(AuthError::RevokedKey { id: record.id });
    }
    if let Some(at) = record.expires_at.filter(|at| *at <= Utc::now()) {
        return Err(AuthError::ExpiredKey { id: record.id, at });
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(prefix: Option<&str>) -> ApiKeyRecord {
        ApiKeyRecord {
            id: "0123456789abcdef".into(),
            secret_sha256: [0; 32],
            owner: "backend".into(),
            act_for_prefix: prefix.map(str::to_owned),
            created_at: Utc::now(),
            expires_at: None,
            revoked_at: None,
        }
    }

    fn owner(name: &str) -> Option<Owner> {
        Some(Owner::parse(name.as_bytes()).unwrap())
    }

    #[test]
    fn a_key_acts_for_its_owner_unless_it_names_another_it_may_act_for() {
        let bound = key(None);
        assert_eq!(acting_owner(&bound, None).unwrap().as_str(), "backend");
        assert_eq!(
            acting_owner(&bound, owner("backend")).unwrap().as_str(),
            "backend"
        );
        assert!(matches!(
            acting_owner(&bound, owner("alice")),
            Err(AuthError::MayNotActFor { .. })
        ));
        let delegating = key(Some("users/"));
        assert_eq!(
            acting_owner(&delegating, owner("users/alice"))
                .unwrap()
                .as_str(),
            "users/alice"
        );
        assert!(matches!(
            acting_owner(&delegating, owner("admins/bob")),
            Err(AuthError::MayNotActFor { .. })
        ));
    }

    #[test]
    fn a_repeated_owner_header_is_refused_rather_than_one_of_them_picked() {
        let mut headers = HeaderMap::new();
        headers.append(OWNER_METADATA_KEY, "alice".parse().unwrap());
        headers.append(OWNER_METADATA_KEY, "bob".parse().unwrap());
        assert!(matches!(
            requested_owner(&headers),
            Err(AuthError::RepeatedOwner)
        ));
    }

    #[test]
    fn only_bearer_authorization_is_understood() {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, "Basic YTpi".parse().unwrap());
        assert!(bearer_token(&headers).is_err());
        headers.insert(AUTHORIZATION, "bearer tfk_x".parse().unwrap());
        assert_eq!(bearer_token(&headers).unwrap(), Some("tfk_x"));
    }

    #[test]
    fn a_revoked_or_expired_key_is_refused_even_with_the_right_secret() {
        let presented = PresentedKey {
            id: "0123456789abcdef".into(),
            secret_sha256: [0; 32],
        };
        assert!(check(&presented, key(None)).is_ok());
        let mut revoked = key(None);
        revoked.revoked_at = Some(Utc::now());
        assert!(matches!(
            check(&presented, revoked),
            Err(AuthError::RevokedKey { .. })
        ));
        let mut expired = key(None);
        expired.expires_at = Some(Utc::now() - chrono::Duration::seconds(1));
        assert!(matches!(
            check(&presented, expired),
            Err(AuthError::ExpiredKey { .. })
        ));
        let mut other = key(None);
        other.secret_sha256 = [1; 32];
        assert!(matches!(
            check(&presented, other),
            Err(AuthError::InvalidKey)
        ));
    }
}
