//! What an owner does with its files: `GetFile`, `AbortUpload`, `ListFiles`
//! ([`list`]), `DeleteFile` ([`delete`]), and how a file record is shown to clients.

mod delete;
mod list;

pub use delete::delete_file;
pub use list::list_files;

use std::time::SystemTime;

use transfer_proto::v1::{self as proto, FileInfo};
use uuid::Uuid;

use crate::blob::{BlobStore, UploadHandle};
use crate::error::ServiceError;
use crate::identity::Owner;
use crate::ledger::{FileCatalog, FileRecord, FileState, Ledger};
use crate::upload::SessionRegistry;

/// A file of `owner` by id; another owner's file is reported as missing.
pub async fn owned_file(
    ledger: &dyn FileCatalog,
    owner: &Owner,
    id: Uuid,
) -> Result<FileRecord, ServiceError> {
    match ledger.get_file(id).await? {
        Some(file) if file.owner == owner.as_str() => Ok(file),
        _ => Err(ServiceError::FileNotFound(id)),
    }
}

/// Cancels an open upload: the ledger forgets its chunks, the session stops writing,
/// and the staged bytes are removed.
pub async fn abort_upload(
    ledger: &dyn Ledger,
    blobs: &dyn BlobStore,
    sessions: &SessionRegistry,
    owner: &Owner,
    id: Uuid,
) -> Result<(), ServiceError> {
    let file = owned_file(ledger, owner, id).await.map_err(|e| match e {
        ServiceError::FileNotFound(id) => ServiceError::UploadNotFound(id),
        other => other,
    })?;
    match file.state {
        FileState::Uploading => ledger.abort_upload(id).await?,
        // Aborting again finishes what an interrupted abort (or expiry) may have left.
        FileState::Aborted | FileState::Expired => {}
        FileState::Complete | FileState::Failed => {
            return Err(ServiceError::UploadNotOpen {
                id,
                state: file.state,
            });
        }
    }
    sessions.closed(id, FileState::Aborted).await;
    // Read again now that the session has stopped: a stream may have begun staging
    // since the first read. An upload no stream ever began has no staging.
    let file = ledger.get_file(id).await?.unwrap_or(file);
    if let Some(handle) = &file.blob_upload {
        blobs.abort(&UploadHandle::new(handle.as_str())).await?;
    }
    Ok(())
}

pub fn file_info(file: &FileRecord) -> FileInfo {
    FileInfo {
        file_id: file.id.to_string(),
        name: file.name.clone(),
        size: file.size,
        md5: file.md5.map(|m| m.to_vec()).unwrap_or_default().into(),
        state: proto_state(file.state).into(),
        failure: file.failure.clone().unwrap_or_default(),
        created_at: Some(SystemTime::from(file.created_at).into()),
        completed_at: file.completed_at.map(|t| SystemTime::from(t).into()),
    }
}

fn proto_state(state: FileState) -> proto::FileState {
    match state {
        FileState::Uploading => proto::FileState::Uploading,
        FileState::Complete => proto::FileState::Complete,
        FileState::Aborted => proto::FileState::Aborted,
        FileState::Failed => proto::FileState::Failed,
        FileState::Expired => proto::FileState::Expired,
    }
}
