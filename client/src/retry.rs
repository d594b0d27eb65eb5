//! Which failures a transfer retries, and which end it.

use tonic::{Code, Status};

use crate::error::TransferError;

/// How an attempt ended, when it did not finish the transfer.
pub(crate) enum Interruption {
    /// Worth another attempt after a backoff: a broken stream, a lost connection, a
    /// restarting server, a session that closed under us.
    Retry(String),
    /// The caller paused: wait for resume, then carry on.
    Paused,
    /// The caller cancelled.
    Cancelled,
    /// The transfer cannot succeed.
    Fatal(TransferError),
}

impl Interruption {
    /// Classifies a gRPC status from the server or the transport.
    pub fn from_status(file: &str, status: &Status) -> Self {
        match status.code() {
            Code::Unavailable
            | Code::Unknown
            | Code::Internal
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
            // The session closed or vanished under us (completed by another client,
            // aborted, restarted): asking CheckUpload again finds out what to do.
            | Code::FailedPrecondition
            | Code::NotFound => Interruption::Retry(format!("{:?}: {}", status.code(), status.message())),
            _ => Interruption::Fatal(TransferError::refused(file, status)),
        }
    }
}
