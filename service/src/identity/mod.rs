//! Who a call acts for, decided in one place for every call.
//!
//! [`IdentityLayer`] sits in front of every service the server mounts (Transfer, health,
//! reflection). It asks the [`Authenticator`] for the call's [`CallContext`], puts it in
//! the request's extensions, and only then lets the call through; a call without a valid
//! credential is answered `UNAUTHENTICATED` (or `PERMISSION_DENIED`) right there.
//! Handlers read the owner from the extensions and nowhere else ([`CallContext::of`]).

pub mod api_key;
mod authenticator;
mod certificate;
mod layer;
mod owner;

pub use authenticator::{AuthError, Authenticator, KEY_CACHE_TTL};
pub use certificate::{CertificateOwnerError, owner_of_certificate};
pub use layer::IdentityLayer;
pub use owner::{DEFAULT_OWNER, MAX_OWNER_LEN, OWNER_METADATA_KEY, Owner, OwnerError};

/// What proved the caller's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No authentication is configured: a loopback-only server trusts the
    /// `x-transfer-owner` metadata as it is.
    Unauthenticated,
    /// A bearer API key, by its id.
    ApiKey { id: String },
    /// A client certificate verified by the TLS handshake.
    Certificate,
}

/// Who a call acts for, and how that was established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    pub owner: Owner,
    pub principal: Principal,
}

impl CallContext {
    /// The context [`IdentityLayer`] put on a request. `None` only for a request that
    /// did not pass through it, which the handlers refuse.
    pub fn of(extensions: &http::Extensions) -> Option<&CallContext> {
        extensions.get::<CallContext>()
    }
}
