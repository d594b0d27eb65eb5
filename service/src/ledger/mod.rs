//! The chunk ledger: the durable record of files, upload sessions, committed chunks,
//! stored content and API keys.
//!
//! The ledger only records; the protocol rules (which index is valid, when a session is
//! complete) live in [`crate::upload`]. It is seen through one small trait per concern,
//! so each part of the service asks only for what it uses:
//! - [`UploadLedger`]: open sessions, committed chunks, hash checkpoints, how each ends;
//! - [`UploadExpiry`]: when open sessions expire;
//! - [`FileCatalog`]: files by id and by owner;
//! - [`ContentIndex`]: stored content by its digests, for instant upload;
//! - [`ContentGarbage`]: content no file refers to, and blobs waiting to be deleted;
//! - [`LedgerExport`]: every record out and back in, for `migrate-ledger`;
//! - [`KeyLedger`]: API keys.
//!
//! [`Ledger`] is all of them: what a database ([`SqliteLedger`], [`PostgresLedger`])
//! implements and what [`LedgerLocation::open`] returns. Every implementation makes each
//! method atomic: when it returns `Ok`, what it recorded survives a crash (the one
//! exception is said at [`UploadLedger::open_upload`]).

mod catalog;
mod columns;
mod contents;
mod dump;
mod error;
mod expiry;
mod garbage;
pub mod keys;
mod leases;
mod location;
mod postgres;
mod records;
mod sqlite;
mod uploads;

pub use catalog::FileCatalog;
pub use contents::ContentIndex;
pub use dump::{
    ChunkDump, ContentDump, CopyReport, FileDump, LedgerExport, copy_keys, copy_ledger,
};
pub use error::LedgerError;
pub use expiry::UploadExpiry;
pub use garbage::ContentGarbage;
pub use keys::{ApiKeyRecord, KeyLedger, NewApiKey};
pub use leases::{Lease, LeaseOutcome, UploadLeases};
pub use location::LedgerLocation;
pub use postgres::PostgresLedger;
pub use records::{
    Blake3Digest, CommittedChunk, FileListing, FileRecord, FileState, HashCheckpoint, ListPosition,
    Md5Digest, NewUpload, OpenedUpload, OwnerUsage,
};
pub use sqlite::SqliteLedger;
pub use uploads::UploadLedger;

/// A whole ledger: every record kind, in one database.
pub trait Ledger:
    UploadLedger
    + UploadLeases
    + UploadExpiry
    + FileCatalog
    + ContentIndex
    + ContentGarbage
    + LedgerExport
    + KeyLedger
{
}

impl<L> Ledger for L where
    L: UploadLedger
        + UploadLeases
        + UploadExpiry
        + FileCatalog
        + ContentIndex
        + ContentGarbage
        + LedgerExport
        + KeyLedger
{
}
