//! The names a blob store makes and its callers keep: upload handles, part receipts,
//! content locators; and the content address the server computes.

use std::fmt;

use uuid::Uuid;

/// How a store names an upload in progress: made by [`super::BlobStore::begin`], kept
/// in the ledger with the upload, handed back on every later call.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UploadHandle(String);

/// What a store returns for one part written, to hand back to
/// [`super::BlobStore::complete`]. A store that needs nothing kept returns receipts
/// with no tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartReceipt {
    pub index: u64,
    pub tag: Option<String>,
}

/// Where complete content is stored: made by [`super::BlobStore::complete`], kept in the
/// ledger with the content.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContentLocator(String);

/// An upload a store has staging for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedUpload {
    pub upload: Uuid,
    pub handle: UploadHandle,
}

macro_rules! kept_name {
    ($name:ident) => {
        impl $name {
            /// A name as the ledger kept it.
            pub fn new(name: impl Into<String>) -> Self {
                Self(name.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

kept_name!(UploadHandle);
kept_name!(ContentLocator);
