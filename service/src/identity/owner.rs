//! Owner names: who files belong to. Every file, upload and content reference is scoped
//! to one owner; another owner's are reported as missing.

use std::fmt;

/// The metadata key naming the owner a call acts for: trusted as it is without
/// authentication (loopback only), and with it, only where the credential may act for
/// that owner.
pub const OWNER_METADATA_KEY: &str = "x-transfer-owner";
/// The owner of calls that name none when no authentication is configured.
pub const DEFAULT_OWNER: &str = "default";
/// Longest owner name, in bytes.
pub const MAX_OWNER_LEN: usize = 128;

/// A validated owner name: 1 to 128 printable ASCII characters, no spaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner(String);

/// Why a name is not a valid owner.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnerError {
    #[error("must be 1 to {MAX_OWNER_LEN} characters long, got {0} bytes")]
    Length(usize),
    #[error("must be printable ASCII without spaces")]
    Characters,
}

impl Owner {
    /// Checks a name from metadata, a key record or a certificate.
    pub fn parse(name: &[u8]) -> Result<Self, OwnerError> {
        if name.is_empty() || name.len() > MAX_OWNER_LEN {
            return Err(OwnerError::Length(name.len()));
        }
        if !name.iter().all(u8::is_ascii_graphic) {
            return Err(OwnerError::Characters);
        }
        // Printable ASCII is UTF-8.
        String::from_utf8(name.to_vec())
            .map(Owner)
            .map_err(|_| OwnerError::Characters)
    }

    /// The owner of unauthenticated calls that name none.
    pub fn default_owner() -> Self {
        Owner(DEFAULT_OWNER.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_is_printable_ascii_of_1_to_128_bytes() {
        assert_eq!(Owner::parse(b"alice").unwrap().as_str(), "alice");
        assert_eq!(
            Owner::parse(b"spiffe://example.org/billing")
                .unwrap()
                .as_str(),
            "spiffe://example.org/billing"
        );
        assert_eq!(Owner::parse(b""), Err(OwnerError::Length(0)));
        assert_eq!(Owner::parse(&[b'a'; 129]), Err(OwnerError::Length(129)));
        assert_eq!(Owner::parse(b"a b"), Err(OwnerError::Characters));
        assert_eq!(Owner::parse(b"a\x1b[31m"), Err(OwnerError::Characters));
        assert_eq!(Owner::parse("ä".as_bytes()), Err(OwnerError::Characters));
    }
}
