//! The service's typed errors, and their one conversion to a gRPC [`Status`].

use tonic::{Code, Status};
use uuid::Uuid;

use crate::blob::BlobError;
use crate::ledger::{FileState, LedgerError};
use transfer_proto::{REASON_METADATA, REASON_STORAGE_FULL};
use transfer_wire::framer::FramingError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{field}: {problem}")]
    BadRequest {
        field: &'static str,
        problem: String,
    },
    #[error("file size {size} bytes exceeds this server's maximum of {max} bytes")]
    FileTooLarge { size: u64, max: u64 },
    #[error("no upload session {0}")]
    UploadNotFound(Uuid),
    /// Another replica took the upload over: streams go on there.
    #[error("upload {0} moved to another server; resume it (send what is missing)")]
    MovedAway(Uuid),
    /// Another replica writes the upload and did not let go in time.
    #[error("upload {0} is being written through another server; try again shortly")]
    HeldElsewhere(Uuid),
    #[error("no file {0}")]
    FileNotFound(Uuid),
    #[error("file {0} was deleted while it was being read")]
    FileDeleted(Uuid),
    #[error("upload {id} is {state}: it accepts no more chunks{}", expired_hint(*.state))]
    UploadNotOpen { id: Uuid, state: FileState },
    #[error("file {id} is {state}, not complete: it cannot be read yet")]
    FileNotComplete { id: Uuid, state: FileState },
    #[error("offset {offset} is past the end of the file ({size} bytes)")]
    OffsetPastEnd { offset: u64, size: u64 },
    #[error(
        "more than {window} chunks ({bytes} bytes) sent without acknowledgement: keep at most the session's max_window in flight"
    )]
    WindowExceeded { window: u32, bytes: u64 },
    #[error("{0}")]
    UnexpectedMessage(&'static str),
    #[error("message {index} of the stream is not a valid UploadChunksRequest: {reason}")]
    MalformedMessage { index: u64, reason: String },
    #[error(
        "whole-file MD5 mismatch: declared {declared}, computed {computed} from the received chunks; the upload failed and its chunks were discarded"
    )]
    Md5Mismatch { declared: String, computed: String },
    #[error("stored data of upload {id} is missing or unreadable: {reason}")]
    StoredDataLost { id: Uuid, reason: String },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(
        "the upload session closed while this stream was using it: call CheckUpload and continue"
    )]
    SessionClosed,
    #[error(
        "every chunk is stored but the whole-file MD5 is missing: a single-pass upload completes once the client sends it as `digest`"
    )]
    DigestMissing,
    #[error(
        "this owner has {open} uploads open, the most this server allows: complete or abort one first"
    )]
    TooManyOpenUploads { open: u64 },
    #[error(
        "this owner has {files} files, the most this server allows: delete some (DeleteFile) first"
    )]
    TooManyFiles { files: u64 },
    #[error(
        "a {size}-byte upload would bring this owner to {would_hold} bytes of files and open uploads, over its quota of {quota} bytes"
    )]
    OverQuota {
        size: u64,
        would_hold: u64,
        quota: u64,
    },
    #[error("{waited_for} within {seconds} s: the stream is closed (it holds server memory)")]
    StreamDeadline {
        waited_for: &'static str,
        seconds: u64,
    },
    /// The operating system's random source failed.
    #[error("the server could not draw random bytes: {0}")]
    Randomness(String),
    /// One error told to several streams of a session.
    #[error(transparent)]
    Shared(std::sync::Arc<ServiceError>),
    /// A large message found no room in the server's memory for upload streams.
    #[error("{0}")]
    NoMemory(transfer_wire::memory::MemoryRefused),
    /// The request stream's gRPC framing is broken.
    #[error(transparent)]
    Framing(FramingError),
    /// The request stream failed below gRPC (a reset stream, a broken connection), with
    /// the code the transport gave it.
    #[error("{message}")]
    Transport { code: Code, message: String },
    /// The client stopped reading the answers.
    #[error("the client closed the stream")]
    ClientGone,
    /// The server is stopping: what was acked is stored.
    #[error(
        "the server is shutting down; every acknowledged chunk is stored: resume (on another server, or once this one is back)"
    )]
    ShuttingDown,
}

/// What a client resuming an expired upload should do.
fn expired_hint(state: FileState) -> &'static str {
    match state {
        FileState::Expired => {
            " (nothing happened to it for the server's expiry period, and its chunks are gone): upload the file again"
        }
        _ => "",
    }
}

impl ServiceError {
    pub fn code(&self) -> Code {
        match self {
            ServiceError::Shared(error) => error.code(),
            ServiceError::BadRequest { .. }
            | ServiceError::UnexpectedMessage(_)
            | ServiceError::MalformedMessage { .. } => Code::InvalidArgument,
            ServiceError::FileTooLarge { .. }
            | ServiceError::WindowExceeded { .. }
            | ServiceError::TooManyOpenUploads { .. }
            | ServiceError::TooManyFiles { .. }
            | ServiceError::OverQuota { .. }
            | ServiceError::NoMemory(_) => Code::ResourceExhausted,
            ServiceError::UploadNotFound(_)
            | ServiceError::FileNotFound(_)
            | ServiceError::FileDeleted(_) => Code::NotFound,
            // An expired session is gone, as far as a client resuming it can tell.
            ServiceError::UploadNotOpen {
                state: FileState::Expired,
                ..
            }
            | ServiceError::Ledger(LedgerError::NotUploading {
                state: FileState::Expired,
                ..
            }) => Code::NotFound,
            ServiceError::UploadNotOpen { .. }
            | ServiceError::FileNotComplete { .. }
            | ServiceError::DigestMissing => Code::FailedPrecondition,
            ServiceError::OffsetPastEnd { .. } => Code::OutOfRange,
            ServiceError::StreamDeadline { .. } => Code::DeadlineExceeded,
            ServiceError::Md5Mismatch { .. } | ServiceError::StoredDataLost { .. } => {
                Code::DataLoss
            }
            ServiceError::Ledger(LedgerError::NotFound(_)) => Code::NotFound,
            ServiceError::Ledger(LedgerError::NotUploading { .. }) => Code::FailedPrecondition,
            // gRPC's code for a concurrency conflict: the client retries.
            ServiceError::Ledger(LedgerError::RetryableConflict(_)) => Code::Aborted,
            ServiceError::Ledger(LedgerError::Unavailable(_) | LedgerError::LeaseLost(_))
            | ServiceError::MovedAway(_)
            | ServiceError::HeldElsewhere(_)
            | ServiceError::SessionClosed
            | ServiceError::ShuttingDown => Code::Unavailable,
            ServiceError::Ledger(_) | ServiceError::Randomness(_) => Code::Internal,
            ServiceError::Blob(BlobError::ContentNotFound(_)) => Code::DataLoss,
            ServiceError::Blob(BlobError::NoSpace { .. }) => Code::ResourceExhausted,
            // Most often a store that cannot be reached for a moment: the client retries.
            ServiceError::Blob(BlobError::ObjectStore { .. }) => Code::Unavailable,
            ServiceError::Blob(_) => Code::Internal,
            ServiceError::Framing(error) => match error {
                // As tonic answers these, so clients see the same codes on every method.
                FramingError::Compressed | FramingError::BadFlag(_) => Code::Internal,
                FramingError::TooLarge { .. } => Code::OutOfRange,
                // tonic says Internal; the fault is the sender's, and the message says
                // what it is.
                FramingError::Truncated { .. } => Code::InvalidArgument,
            },
            ServiceError::Transport { code, .. } => *code,
            ServiceError::ClientGone => Code::Cancelled,
        }
    }
}

impl ServiceError {
    /// Logs a failure that is the server's (not the caller's) fault. A shared error was
    /// logged once where it was made, not for every stream told of it.
    pub fn log_if_server_fault(&self) {
        let code = self.code();
        let clients_fault = matches!(
            self,
            ServiceError::Shared(_) | ServiceError::Framing(_) | ServiceError::Transport { .. }
        );
        if !clients_fault && matches!(code, Code::Internal | Code::Unavailable | Code::DataLoss) {
            tracing::warn!(error = %self, ?code, "request failed");
        }
    }
}

/// The failure of a request body from tonic's transport, with the code it gave.
impl crate::upload::wire::BodyFailure for Status {
    fn into_error(self) -> ServiceError {
        ServiceError::Transport {
            code: self.code(),
            message: self.message().to_owned(),
        }
    }
}

impl ServiceError {
    /// The status a client is told, without logging: for errors logged where they were
    /// made (a stream's, inside its RPC span).
    pub fn status(&self) -> Status {
        let mut status = Status::new(self.code(), self.to_string());
        if let Some(reason) = self.reason() {
            status.metadata_mut().insert(
                REASON_METADATA,
                tonic::metadata::MetadataValue::from_static(reason),
            );
        }
        status
    }

    /// What a client can act on beyond the code, as the `x-transfer-reason` metadata:
    /// `storage-full` for a RESOURCE_EXHAUSTED worth retrying once space is freed (not
    /// one the request itself caused, like a file over the size limit).
    fn reason(&self) -> Option<&'static str> {
        match self {
            ServiceError::Shared(error) => error.reason(),
            ServiceError::Blob(BlobError::NoSpace { .. }) => Some(REASON_STORAGE_FULL),
            _ => None,
        }
    }
}

impl From<ServiceError> for Status {
    fn from(error: ServiceError) -> Self {
        error.log_if_server_fault();
        error.status()
    }
}
