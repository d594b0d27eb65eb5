//! The content index: which content is stored, and which owner has it as a file.
//!
//! What instant upload asks. An owner's file is found by the digests of its content; a
//! file for another owner's content is made only once possession is proven (see
//! [`crate::upload::possession`]).

use async_trait::async_trait;

use super::{Blake3Digest, FileRecord, LedgerError, Md5Digest};

/// Stored content, by its digests, and the files that hold it.
///
/// Contract for every implementation (checked by the ledger conformance tests):
/// - Each method is atomic and durable once it returns `Ok`.
/// - Content is recorded once per BLAKE3 (and once per MD5 and size in the older index),
///   however many files refer to it; two contents with one MD5 are two contents.
/// - Instant upload answers from the owner's own files only: another owner's content is
///   never handed out by its digest.
#[async_trait]
pub trait ContentIndex: Send + Sync + 'static {
    /// If `owner` has a complete file with this MD5 and size, records that it has the
    /// content also as a complete file named `name` with head digest `head_md5` (or
    /// returns the owner's complete file of that name and content, if there is one).
    /// `None` when the owner has no such file, whoever else stored the content.
    async fn add_file_for_owned_content(
        &self,
        owner: &str,
        name: &str,
        md5: &Md5Digest,
        size: u64,
        head_md5: Option<&Md5Digest>,
    ) -> Result<Option<FileRecord>, LedgerError>;

    /// Where content with this BLAKE3, size and MD5 is stored (whoever stored it), if it
    /// is.
    async fn stored_content(
        &self,
        blake3: &Blake3Digest,
        size: u64,
        md5: &Md5Digest,
    ) -> Result<Option<String>, LedgerError>;

    /// Where the content of a complete file is stored: found by its BLAKE3, or for a
    /// file completed before content was identified by BLAKE3, by its MD5 and size.
    async fn content_locator(&self, file: &FileRecord) -> Result<Option<String>, LedgerError>;

    /// Records that `owner` has the stored content with this BLAKE3, size and MD5 (its
    /// possession proven) as a complete file named `name`, or returns the owner's
    /// complete file of that name and content if it has one. `None` when no such
    /// content is stored.
    async fn add_file_for_content(
        &self,
        owner: &str,
        name: &str,
        blake3: &Blake3Digest,
        size: u64,
        md5: &Md5Digest,
        head_md5: Option<&Md5Digest>,
    ) -> Result<Option<FileRecord>, LedgerError>;
}
