//! `DeleteFile`: a file forgotten in whatever state; its content left to the garbage
//! collector.

use uuid::Uuid;

use super::{abort_upload, owned_file};
use crate::blob::BlobStore;
use crate::error::ServiceError;
use crate::identity::Owner;
use crate::ledger::{FileState, Ledger, LedgerError};
use crate::upload::SessionRegistry;

/// Deletes `owner`'s file `id`. An open upload is aborted first (its session stopped,
/// its staging dropped); the content of a complete file stays until no file refers to it
/// and the grace period has passed (see [`crate::garbage`]).
pub async fn delete_file(
    ledger: &dyn Ledger,
    blobs: &dyn BlobStore,
    sessions: &SessionRegistry,
    owner: &Owner,
    id: Uuid,
) -> Result<(), ServiceError> {
    // An upload may complete while it is being aborted: then the complete file is
    // deleted instead. Nothing reopens a closed upload, so the second round ends it.
    for _ in 0..2 {
        let file = owned_file(ledger, owner, id).await?;
        if file.state == FileState::Uploading {
            match abort_upload(ledger, blobs, sessions, owner, id).await {
                Ok(()) | Err(ServiceError::UploadNotOpen { .. }) => {}
                Err(ServiceError::UploadNotFound(id)) => {
                    return Err(ServiceError::FileNotFound(id));
                }
                Err(error) => return Err(error),
            }
        }
        match ledger.delete_file(owner.as_str(), id).await {
            Ok(Some(_)) => return Ok(()),
            // Deleted by a concurrent call.
            Ok(None) => return Err(ServiceError::FileNotFound(id)),
            Err(LedgerError::StillUploading(_)) => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Err(ServiceError::Ledger(LedgerError::RetryableConflict(
        format!("upload {id} kept changing state while it was deleted"),
    )))
}
