//! Garbage: content no file refers to any more, and blobs waiting to be deleted.
//!
//! Collection is crash-safe because every step is a ledger fact before the store acts:
//! deleting a file marks content it was the last to refer to (`orphaned_at`); content
//! that stayed unreferenced for the grace period is forgotten and its locator queued,
//! in one transaction; the collector deletes queued blobs and only then forgets their
//! locators. A kill between any two steps leaves a state the next pass finishes.

use std::time::Duration;

use async_trait::async_trait;

use super::LedgerError;

/// Orphaned content and the queue of blobs to delete.
///
/// Contract for every implementation (checked by the ledger conformance tests):
/// - Content a file refers to is never collected, whatever runs concurrently: a file
///   made for it while it is being collected fails (with
///   [`LedgerError::ReferenceGone`]) or keeps it.
/// - Content is collected only once no file has referred to it for `grace`; a file
///   made for orphaned content (a completion, an instant upload) takes the mark away.
/// - A locator is queued once, and stays queued until [`ContentGarbage::forget_garbage`].
/// - A completion whose content was stored already queues its own copy's locator (see
///   [`super::UploadLedger::complete_upload`]).
#[async_trait]
pub trait ContentGarbage: Send + Sync + 'static {
    /// Forgets up to `limit` contents that no file has referred to for at least `grace`
    /// and queues their locators for deletion; takes the mark off content a file refers
    /// to again. Returns how many contents were collected.
    async fn collect_orphans(&self, grace: Duration, limit: usize) -> Result<u64, LedgerError>;

    /// Up to `limit` locators of blobs to delete, oldest first.
    async fn queued_garbage(&self, limit: usize) -> Result<Vec<String>, LedgerError>;

    /// Forgets a queued locator, once its blob is deleted.
    async fn forget_garbage(&self, locator: &str) -> Result<(), LedgerError>;
}
