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

/// The content locator every store makes for upload `upload`:
/// `content/<first two hex digits of its id>/u-<id>`.
pub(super) fn upload_content_locator(upload: Uuid) -> ContentLocator {
    let id = upload.as_simple().to_string();
    ContentLocator::new(format!("content/{}/u-{id}", &id[..2]))
}

/// The fan-out directory and name a content locator is made of, if it is one a store
/// made: by the upload (`content/<xx>/u-<upload id>`), or, as content was once named,
/// by its BLAKE3 (`content/<xx>/b3-<BLAKE3 hex>-<size>`) or MD5
/// (`content/<xx>/<MD5 hex>-<size>`). Every store keeps content under these names, so
/// content copied from one to another keeps its locators.
pub(super) fn content_name(locator: &ContentLocator) -> Option<(&str, &str)> {
    let mut parts = locator.as_str().split('/');
    let (Some("content"), Some(fan_out), Some(name), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if let Some(id) = name.strip_prefix("u-") {
        let upload = Uuid::try_parse(id).ok()?;
        return (upload_content_locator(upload) == *locator).then_some((fan_out, name));
    }
    // `b3-<BLAKE3>-<size>`, or `<MD5>-<size>` for content stored before BLAKE3.
    let (digest_len, unprefixed) = match name.strip_prefix("b3-") {
        Some(rest) => (64, rest),
        None => (32, name),
    };
    let (digest, size) = unprefixed.split_once('-')?;
    let lower_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let well_formed = digest.len() == digest_len
        && lower_hex(digest)
        && fan_out.len() == 2
        && digest.starts_with(fan_out)
        && size.parse::<u64>().is_ok_and(|n| n.to_string() == size);
    well_formed.then_some((fan_out, name))
}
