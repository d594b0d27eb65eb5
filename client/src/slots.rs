//! Waiting for a transfer slot when a manager limits how many run at once.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::progress::{Cancelled, Command, Reporter, TransferState};

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
