//! Column values to records and back, checked the same way on every dialect.

use uuid::Uuid;

use super::{Blake3Digest, FileState, Lease, LedgerError, Md5Digest};

/// Why a session write to an upload changed nothing, from its state and lease epoch
/// (`None`: no such upload): unknown, closed, or taken over by another replica under a
/// newer lease. A write that should have changed something and found none of these
/// lost a race: try again.
pub(super) fn not_writable(
    id: Uuid,
    found: Option<(FileState, u64)>,
    lease: Option<Lease>,
) -> LedgerError {
    match found {
        None => LedgerError::NotFound(id),
        Some((state, _)) if state != FileState::Uploading => {
            LedgerError::NotUploading { id, state }
        }
        Some((_, epoch)) if lease.is_some_and(|lease| lease.epoch != epoch) => {
            LedgerError::LeaseLost(id)
        }
        Some(_) => LedgerError::RetryableConflict(format!("upload {id} changed while written")),
    }
}

/// A nullable BLAKE3 column's value.
pub(super) fn blake3_from(bytes: Option<&[u8]>) -> Result<Option<Blake3Digest>, LedgerError> {
    bytes
        .map(|b| {
            Blake3Digest::try_from(b)
                .map_err(|_| LedgerError::Corrupt(format!("a BLAKE3 of {} bytes", b.len())))
        })
        .transpose()
}

/// A nullable MD5 column's value.
pub(super) fn digest_from(bytes: Option<&[u8]>) -> Result<Option<Md5Digest>, LedgerError> {
    bytes
        .map(|b| {
            Md5Digest::try_from(b)
                .map_err(|_| LedgerError::Corrupt(format!("an MD5 of {} bytes", b.len())))
        })
        .transpose()
}

/// A size or index as the databases store it (signed 64-bit).
pub(super) fn to_i64(value: u64) -> Result<i64, LedgerError> {
    i64::try_from(value)
        .map_err(|_| LedgerError::Database(format!("{value} is too large to record")))
}

/// A stored size or index back; negative means the ledger was tampered with.
pub(super) fn to_u64(value: i64) -> Result<u64, LedgerError> {
    u64::try_from(value).map_err(|_| LedgerError::Corrupt(format!("negative value {value}")))
}

pub(super) fn parse_state(s: &str) -> Result<FileState, LedgerError> {
    FileState::parse(s).ok_or_else(|| LedgerError::Corrupt(format!("unknown file state {s:?}")))
}
