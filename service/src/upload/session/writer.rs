//! A batch of chunks written to the blob store (durably), then committed to the ledger.

use std::sync::Arc;

use tracing::Instrument;
use uuid::Uuid;

use super::*;
use crate::blob::{BlobError, Part, UploadHandle};
use crate::error::ServiceError;
use crate::ledger::{CommittedChunk, Lease};
use crate::metrics::metrics;

/// Writes a batch's chunks to the blob store (durably), then records them in the
/// ledger. Owns what it needs, so the session can feed the hasher meanwhile.
pub(super) async fn write_and_commit(
    registry: Arc<SessionRegistry>,
    id: Uuid,
    lease: Lease,
    staged: UploadHandle,
    parts: Vec<Part>,
    mut rows: Vec<CommittedChunk>,
    parent: tracing::Span,
) -> Result<(), ServiceError> {
    let put = registry
        .blobs
        .put_parts(&staged, &parts)
        .instrument(tracing::info_span!(parent: &parent, "blob.put_parts", chunks = parts.len()))
        .await;
    let receipts = match put {
        Ok(receipts) => receipts,
        Err(error @ BlobError::UploadNotFound(_)) => {
            return Err(closed_or(&registry, id, error).await);
        }
        Err(error) => return Err(error.into()),
    };
    // The receipts go into the same ledger transaction as the chunks they are for.
    for receipt in receipts {
        if let Some(row) = rows.iter_mut().find(|row| row.index == receipt.index) {
            row.receipt = receipt.tag;
        }
    }
    let started = std::time::Instant::now();
    let committed = registry
        .ledger
        .commit_chunks(id, lease, &rows)
        .instrument(
            tracing::info_span!(parent: &parent, "ledger.commit_chunks", chunks = rows.len()),
        )
        .await;
    metrics()
        .ledger_transaction_duration
        .record(started.elapsed().as_secs_f64(), &[]);
    // This task is the session's only writer, so every chunk it commits is new.
    committed?;
    Ok(())
}

/// What a vanished staged upload means: the upload was closed meanwhile where this
/// session could not see it (aborted, expired or failed through another replica, which
/// dropped its staging), said as such; or, while the ledger still has it open, that its
/// stored parts are lost (a bucket rule aborted them, say): DATA_LOSS, not a failure
/// worth retrying, and no store's name for it.
async fn closed_or(registry: &SessionRegistry, id: Uuid, error: BlobError) -> ServiceError {
    match registry.ledger.get_file(id).await {
        Ok(Some(file)) if file.state != crate::ledger::FileState::Uploading => {
            ServiceError::UploadNotOpen {
                id,
                state: file.state,
            }
        }
        Ok(None) => ServiceError::UploadNotFound(id),
        Ok(Some(_)) => ServiceError::StoredDataLost {
            id,
            reason: "its staged parts are gone from the blob store: abort it and upload again"
                .into(),
        },
        Err(_) => error.into(),
    }
}
