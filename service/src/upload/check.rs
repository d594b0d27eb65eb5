//! `CheckUpload`: instant upload when the content is stored, otherwise the upload session.

use transfer_proto::v1::CheckUploadRequest;

use tracing::{Instrument, info_span};

use super::SessionRegistry;
use crate::blob::BlobStore;
use crate::error::ServiceError;
use crate::files::abort_upload;
use crate::layout::{ChunkLayout, Limits};
use crate::ledger::{ChunkLedger, FileRecord, Md5Digest, NewUpload};
use crate::owner::Owner;
use crate::request::parse_md5;

const MAX_NAME_LEN: usize = 1024;

/// A validated `CheckUpload` request.
#[derive(Debug, Clone)]
pub struct UploadIntent {
    pub name: String,
    pub size: u64,
    pub md5: Md5Digest,
    pub preferred_chunk_size: u32,
}

impl UploadIntent {
    pub fn parse(request: CheckUploadRequest, limits: &Limits) -> Result<Self, ServiceError> {
        if request.name.is_empty() || request.name.len() > MAX_NAME_LEN {
            return Err(ServiceError::BadRequest {
                field: "name",
                problem: format!(
                    "must be 1 to {MAX_NAME_LEN} bytes long, got {} bytes",
                    request.name.len()
                ),
            });
        }
        if request.name.contains('\0') {
            return Err(ServiceError::BadRequest {
                field: "name",
                problem: "must not contain NUL characters".into(),
            });
        }
        let md5 = parse_md5("md5", &request.md5)?;
        if request.size > limits.max_file_size {
            return Err(ServiceError::FileTooLarge {
                size: request.size,
                max: limits.max_file_size,
            });
        }
        Ok(Self {
            name: request.name,
            size: request.size,
            md5,
            preferred_chunk_size: request.preferred_chunk_size,
        })
    }
}

/// The answer to `CheckUpload`.
#[derive(Debug, Clone)]
pub enum CheckOutcome {
    /// The content is stored; the owner now has this complete file.
    AlreadyStored(FileRecord),
    /// Stream the missing chunks into this session.
    Session {
        file: FileRecord,
        /// False when this call opened the session.
        resumed: bool,
        /// Committed chunks as half-open index ranges.
        committed: Vec<(u64, u64)>,
        max_window: u32,
    },
}

pub async fn check_upload(
    ledger: &dyn ChunkLedger,
    blobs: &dyn BlobStore,
    sessions: &SessionRegistry,
    limits: &Limits,
    owner: &Owner,
    intent: UploadIntent,
) -> Result<CheckOutcome, ServiceError> {
    if let Some(file) = ledger
        .add_file_for_stored_content(owner.as_str(), &intent.name, &intent.md5, intent.size)
        .instrument(info_span!("ledger.add_file_for_stored_content"))
        .await?
    {
        // The owner may have had a session for this content open when another upload
        // stored it: that session is no longer needed.
        if let Some(open) = ledger
            .find_open_upload(owner.as_str(), &intent.md5, intent.size)
            .instrument(info_span!("ledger.find_open_upload"))
            .await?
        {
            match abort_upload(ledger, blobs, sessions, owner, open.id).await {
                Ok(()) | Err(ServiceError::UploadNotOpen { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        crate::metrics::metrics().instant_uploads.add(1, &[]);
        return Ok(CheckOutcome::AlreadyStored(file));
    }

    let chunk_size = limits.choose_chunk_size(intent.preferred_chunk_size);
    let opened = ledger
        .open_upload(&NewUpload {
            owner: owner.as_str().to_owned(),
            name: intent.name,
            size: intent.size,
            md5: intent.md5,
            chunk_size,
            chunk_count: ChunkLayout::new(intent.size, chunk_size).chunk_count(),
        })
        .instrument(info_span!("ledger.open_upload"))
        .await?;
    let committed = if opened.created {
        Vec::new()
    } else {
        ledger
            .committed_ranges(opened.file.id)
            .instrument(info_span!("ledger.committed_ranges"))
            .await?
    };
    Ok(CheckOutcome::Session {
        resumed: !opened.created,
        file: opened.file,
        committed,
        max_window: limits.max_window,
    })
}
