//! What can go wrong with a transfer, saying which file and what.

use std::io;

/// A transfer failed. Every variant names the file (a path, or a file id for downloads).
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: io::Error,
    },
    #[error("{file}: cannot write: {source}")]
    Write {
        file: String,
        #[source]
        source: io::Error,
    },
    #[error("invalid server address {endpoint:?}: {reason}")]
    BadEndpoint { endpoint: String, reason: String },
    #[error("{file}: the server refused: {message} ({code:?})")]
    Refused {
        file: String,
        code: tonic::Code,
        message: String,
    },
    #[error("{file}: chunk {index} was rejected {attempts} times: {detail}")]
    ChunkRejected {
        file: String,
        index: u64,
        attempts: u32,
        detail: String,
    },
    #[error(
        "{file}: gave up after {attempts} attempts without progress over {waited:?}; last error: {last}"
    )]
    RetriesExhausted {
        file: String,
        attempts: u32,
        /// How long it retried without progress.
        waited: std::time::Duration,
        last: String,
    },
    #[error("{file}: MD5 mismatch: expected {expected}, got {actual}")]
    Md5Mismatch {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("{file}: the file changed while it was being transferred, or was not the size given")]
    SourceChanged { file: String },
    #[error("{file}: the server answered against the protocol: {problem}")]
    Protocol { file: String, problem: String },
    #[error("{file}: cancelled")]
    Cancelled { file: String },
    #[error("{file}: the upload session was aborted by another client")]
    AbortedElsewhere { file: String },
}

impl TransferError {
    pub(crate) fn refused(file: &str, status: &tonic::Status) -> Self {
        TransferError::Refused {
            file: file.to_owned(),
            code: status.code(),
            message: status.message().to_owned(),
        }
    }

    pub(crate) fn protocol(file: &str, problem: impl Into<String>) -> Self {
        TransferError::Protocol {
            file: file.to_owned(),
            problem: problem.into(),
        }
    }
}
