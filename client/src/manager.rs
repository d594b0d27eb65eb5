//! Many transfers at once, at most a set number running; the rest wait their turn.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::client::TransferClient;
use crate::download::DownloadedFile;
use crate::progress::{Cancelled, Command, Reporter, TransferHandle, TransferState};
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

/// Waits for a free slot when the transfer is managed, reporting it as queued meanwhile.
/// `Err` when the caller cancels first.
pub(crate) async fn take_slot(
    slots: Option<&Arc<Semaphore>>,
    reporter: &mut Reporter,
) -> Result<Option<OwnedSemaphorePermit>, Cancelled> {
    let Some(slots) = slots else {
        return Ok(None);
    };
    if let Ok(permit) = Arc::clone(slots).try_acquire_owned() {
        return Ok(Some(permit));
    }
    reporter.state(TransferState::Queued);
    let acquire = Arc::clone(slots).acquire_owned();
    tokio::pin!(acquire);
    loop {
        tokio::select! {
            permit = &mut acquire => return Ok(permit.ok()),
            command = reporter.command_changed() => if command == Command::Cancel {
                return Err(Cancelled);
            },
        }
    }
}
