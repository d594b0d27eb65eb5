//! Many transfers at once, at most a set number running; the rest wait their turn.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::client::TransferClient;
use crate::download::DownloadedFile;
use crate::progress::TransferHandle;
use crate::upload::UploadedFile;

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
        self.client
            .spawn_upload(path.as_ref().to_owned(), Some(Arc::clone(&self.slots)))
    }

    pub fn download(
        &self,
        file_id: impl Into<String>,
        dest: impl AsRef<Path>,
    ) -> TransferHandle<DownloadedFile> {
        let slots = Some(Arc::clone(&self.slots));
        self.client
            .spawn_download(file_id.into(), dest.as_ref().to_owned(), slots)
    }
}
