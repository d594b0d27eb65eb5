//! Many transfers at once, at most a set number running; the rest wait their turn.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::client::{TransferClient, upload_name};
use crate::download::{DownloadedFile, download};
use crate::error::TransferError;
use crate::progress::TransferHandle;
use crate::source::FileSource;
use crate::upload::{UploadedFile, upload};

/// Runs transfers with a limit on how many run at once. Queued transfers report
/// [`crate::TransferState::Queued`] and start as slots free up; one failing transfer
/// does not stop the others.
#[derive(Clone)]
pub struct TransferManager {
    client: TransferClient,
    slots: Arc<Semaphore>,
}

impl TransferManager {
    pub fn new(client: TransferClient, max_concurrent: usize) -> Self {
        Self {
            client,
            slots: Arc::new(Semaphore::new(max_concurrent.max(1))),
        }
    }

    pub fn upload_path(&self, path: impl AsRef<Path>) -> TransferHandle<UploadedFile> {
        let path = path.as_ref().to_owned();
        let (client, slots) = (self.client.clone(), Arc::clone(&self.slots));
        TransferHandle::spawn(path.display().to_string(), move |reporter| async move {
            let slot = slots.acquire_owned().await.ok();
            let source = FileSource::open(&path).map_err(|source| TransferError::Read {
                file: path.display().to_string(),
                source,
            })?;
            upload(client, upload_name(&path), source, reporter, slot).await
        })
    }

    pub fn download(
        &self,
        file_id: impl Into<String>,
        dest: impl AsRef<Path>,
    ) -> TransferHandle<DownloadedFile> {
        let (file_id, dest) = (file_id.into(), dest.as_ref().to_owned());
        let (client, slots) = (self.client.clone(), Arc::clone(&self.slots));
        TransferHandle::spawn(dest.display().to_string(), move |reporter| async move {
            let slot = slots.acquire_owned().await.ok();
            download(client, file_id, dest, reporter, slot).await
        })
    }
}
