//! Parsing of request fields shared by several RPCs.

use uuid::Uuid;

use crate::error::ServiceError;
use crate::ledger::Md5Digest;

/// Parses a file or upload id (a UUID in text form).
pub fn parse_id(field: &'static str, text: &str) -> Result<Uuid, ServiceError> {
    Uuid::parse_str(text).map_err(|_| ServiceError::BadRequest {
        field,
        problem: format!("{text:?} is not a UUID"),
    })
}

/// Parses an MD5 digest given as 16 raw bytes.
pub fn parse_md5(field: &'static str, bytes: &[u8]) -> Result<Md5Digest, ServiceError> {
    Md5Digest::try_from(bytes).map_err(|_| ServiceError::BadRequest {
        field,
        problem: format!(
            "must be the 16 raw bytes of an MD5 digest, got {} bytes",
            bytes.len()
        ),
    })
}
