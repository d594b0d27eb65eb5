//! The start-up sweep of staging left behind by uploads that closed.

use std::sync::Arc;

use crate::blob::{BlobStore, StagedUpload};
use crate::ledger::{FileState, Ledger};

/// Removes staged bytes whose upload is no longer open: left behind when the server
/// stopped between closing an upload in the ledger and dropping its staging.
pub async fn sweep_orphaned_staging(ledger: Arc<dyn Ledger>, blobs: Arc<dyn BlobStore>) {
    let staged = match blobs.list_staged().await {
        Ok(staged) => staged,
        Err(error) => {
            tracing::warn!(%error, "could not list staged uploads to sweep");
            return;
        }
    };
    for StagedUpload { upload: id, handle } in staged {
        let open = match ledger.get_file(id).await {
            Ok(file) => file.is_some_and(|f| f.state == FileState::Uploading),
            Err(error) => {
                tracing::warn!(%error, "could not sweep staged uploads");
                return;
            }
        };
        if !open {
            match blobs.abort(&handle).await {
                Ok(()) => tracing::info!(upload = %id, "removed staging of a closed upload"),
                Err(error) => tracing::warn!(upload = %id, %error, "could not remove staging"),
            }
        }
    }
}
