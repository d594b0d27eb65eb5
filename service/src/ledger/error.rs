//! What goes wrong in a ledger, by what a caller can do about it.

use uuid::Uuid;

use super::FileState;

/// What went wrong in the ledger, by what a caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("no file {0} in the ledger")]
    NotFound(Uuid),
    #[error("upload {id} is {state}, not open")]
    NotUploading { id: Uuid, state: FileState },
    /// Another replica took the upload's session over: this one's writes no longer count.
    #[error("upload {0} is being written by another server now")]
    LeaseLost(Uuid),
    /// Only a file whose upload is over can be deleted: abort an open upload first.
    #[error("upload {0} is still open")]
    StillUploading(Uuid),
    /// A record named another that is gone (a foreign key found nothing): content the
    /// garbage collector forgot while the write was under way.
    #[error("a record the write refers to is gone: {0}")]
    ReferenceGone(String),
    /// The database could not be reached, or went away: try again later.
    #[error("the ledger database could not be reached: {0}")]
    Unavailable(String),
    /// The transaction lost to a concurrent one (a serialization failure, a deadlock, a
    /// busy database): try it again.
    #[error("the ledger's transaction lost to a concurrent one: {0}")]
    RetryableConflict(String),
    /// The schema refused the write (a unique, check, foreign-key or not-null
    /// constraint): a bug, not a moment's bad luck.
    #[error("the ledger refused a write its schema forbids: {0}")]
    Constraint(String),
    /// Any other failure of the database.
    #[error("the ledger database failed: {0}")]
    Database(String),
    #[error("the ledger holds a value it cannot read: {0}")]
    Corrupt(String),
    /// A record asked to be created exists already (an API key id, on import).
    #[error("the record exists already: {0}")]
    AlreadyExists(String),
}
