//! Who a call acts for. Until authentication exists, the owner comes from the optional
//! `x-transfer-owner` request metadata, and is `default` without it.

use tonic::metadata::MetadataMap;

use crate::error::ServiceError;

/// The metadata key naming the owner a call acts for.
pub const OWNER_METADATA_KEY: &str = "x-transfer-owner";
/// The owner of calls that name none.
pub const DEFAULT_OWNER: &str = "default";
const MAX_OWNER_LEN: usize = 128;

/// A validated owner name: 1 to 128 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner(String);

impl Owner {
    pub fn from_metadata(metadata: &MetadataMap) -> Result<Self, ServiceError> {
        let Some(value) = metadata.get(OWNER_METADATA_KEY) else {
            return Ok(Owner(DEFAULT_OWNER.to_owned()));
        };
        let bad = |problem: &str| ServiceError::BadRequest {
            field: OWNER_METADATA_KEY,
            problem: problem.to_owned(),
        };
        let value = value.to_str().map_err(|_| bad("must be printable ASCII"))?;
        if value.is_empty() || value.len() > MAX_OWNER_LEN {
            return Err(bad("must be 1 to 128 characters long"));
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad("must be printable ASCII without spaces"));
        }
        Ok(Owner(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}
