//! API keys: random bearer tokens, shown once when made and stored only as the SHA-256
//! of their secret, so a copy of the ledger grants no access.
//!
//! A token reads `tfk_<id>_<secret>`: the id (8 random bytes, hex) names the key in
//! `transferd keys list` and finds its record; the secret (32 random bytes, hex) proves
//! possession. With 256 random bits a plain SHA-256 is as good as a slow password hash.

use sha2::{Digest, Sha256};

/// What every token starts with, so that leaked tokens are easy to scan for.
pub const TOKEN_PREFIX: &str = "tfk_";
const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;

/// A SHA-256 digest of a key's secret.
pub type SecretHash = [u8; 32];

/// A key just made: the token to show once, and what the ledger keeps.
#[derive(Debug)]
pub struct IssuedKey {
    pub id: String,
    pub token: String,
    pub secret_sha256: SecretHash,
}

/// Makes a new key from the operating system's random source.
pub fn issue() -> Result<IssuedKey, getrandom::Error> {
    let mut id = [0u8; ID_BYTES];
    let mut secret = [0u8; SECRET_BYTES];
    getrandom::fill(&mut id)?;
    getrandom::fill(&mut secret)?;
    let id = hex::encode(id);
    let secret = hex::encode(secret);
    Ok(IssuedKey {
        token: format!("{TOKEN_PREFIX}{id}_{secret}"),
        secret_sha256: hash_secret(&secret),
        id,
    })
}

/// A token as a caller presented it, split into the key's id and its secret's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedKey {
    pub id: String,
    pub secret_sha256: SecretHash,
}

/// Splits a token; `None` when it is not shaped like one of ours.
pub fn parse_token(token: &str) -> Option<PresentedKey> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let is_hex = |s: &str, bytes: usize| {
        s.len() == 2 * bytes && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    if !is_hex(id, ID_BYTES) || !is_hex(secret, SECRET_BYTES) {
        return None;
    }
    Some(PresentedKey {
        id: id.to_owned(),
        secret_sha256: hash_secret(secret),
    })
}

fn hash_secret(secret: &str) -> SecretHash {
    Sha256::digest(secret.as_bytes()).into()
}

/// Compares two secret hashes in time that does not depend on where they differ.
pub fn same_secret(a: &SecretHash, b: &SecretHash) -> bool {
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Whether a key id is shaped like one (for `keys revoke ID`).
pub fn is_key_id(id: &str) -> bool {
    id.len() == 2 * ID_BYTES && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_token_parses_back_to_its_id_and_secret_hash() {
        let key = issue().unwrap();
        assert!(key.token.starts_with(TOKEN_PREFIX));
        let presented = parse_token(&key.token).unwrap();
        assert_eq!(presented.id, key.id);
        assert!(same_secret(&presented.secret_sha256, &key.secret_sha256));
        assert!(is_key_id(&key.id));
    }

    #[test]
    fn two_issued_keys_differ() {
        let (a, b) = (issue().unwrap(), issue().unwrap());
        assert_ne!(a.id, b.id);
        assert_ne!(a.token, b.token);
    }

    #[test]
    fn a_token_with_another_secret_does_not_match() {
        let key = issue().unwrap();
        let mut forged = key.token.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == '0' { '1' } else { '0' });
        let presented = parse_token(&forged).unwrap();
        assert_eq!(presented.id, key.id);
        assert!(!same_secret(&presented.secret_sha256, &key.secret_sha256));
    }

    #[test]
    fn malformed_tokens_are_not_parsed() {
        let key = issue().unwrap();
        for token in [
            "",
            "tfk_",
            "Bearer x",
            &key.token.to_uppercase(),
            &key.token[..key.token.len() - 1],
            &format!("{}0", key.token),
            &key.token.replacen("tfk_", "tfx_", 1),
            &key.token.replacen('_', "-", 2),
        ] {
            assert_eq!(parse_token(token), None, "{token:?}");
        }
    }
}
