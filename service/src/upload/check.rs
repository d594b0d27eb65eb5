//! `CheckUpload`: instant upload when the content is stored, otherwise the upload session.
//!
//! A single-pass upload asks with the head digest instead of the MD5. The answer comes
//! only from the caller's own files: "maybe stored" when it has a complete file of that
//! size and head (the client then hashes and asks with the MD5, which makes it instant),
//! its open single-pass session for the same name, size and head (to resume), "maybe
//! stored" again for any other upload of that size and head, or a new session.
//!
//! A client asking again after an interruption names the session it was streaming into
//! (`resume_upload_id`): unless the content is stored, that session is the answer while
//! it is open and the caller's, even with the MD5 the session has not recorded yet and
//! while the broken stream still counts as attached. So no interruption leaves a session
//! behind or starts the file over.
//!
//! With `--dedup-scope global`, content another owner stored may answer too, but only
//! after the caller proves it holds the bytes ([`super::possession`]).

use transfer_proto::v1::CheckUploadRequest;

use tracing::{Instrument, info_span};

use super::SessionRegistry;
use super::possession::{Challenge, Challenges, PROOF_FLOOR, Proof, at_least, proven_content};
use crate::blob::{BlobError, BlobStore};
use crate::error::ServiceError;
use crate::files::abort_upload;
use crate::identity::Owner;
use crate::layout::{ChunkLayout, Limits, Window};
use crate::ledger::{FileRecord, FileState, Ledger, Md5Digest, NewUpload};
use crate::request::{parse_id, parse_md5};
use uuid::Uuid;

const MAX_NAME_LEN: usize = 1024;

/// A validated `CheckUpload` request.
#[derive(Debug, Clone)]
pub struct UploadIntent {
    pub name: String,
    pub size: u64,
    /// `None` for a single-pass upload, which gives `head_md5` instead.
    pub md5: Option<Md5Digest>,
    pub head_md5: Option<Md5Digest>,
    pub preferred_chunk_size: u32,
    /// The client can answer a possession challenge.
    pub accepts_challenge: bool,
    /// Its answer to one.
    pub proof: Option<Proof>,
    /// The session the client was streaming into before an interruption.
    pub resume: Option<Uuid>,
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
        let optional = |field, bytes: &[u8]| match bytes.is_empty() {
            true => Ok(None),
            false => parse_md5(field, bytes).map(Some),
        };
        let md5 = optional("md5", &request.md5)?;
        let head_md5 = optional("head_md5", &request.head_md5)?;
        if md5.is_none() && head_md5.is_none() {
            return Err(ServiceError::BadRequest {
                field: "md5",
                problem:
                    "must be the 16 raw bytes of the file's MD5 digest; or, for a single-pass \
                          upload, leave it empty and set head_md5"
                        .into(),
            });
        }
        if request.size > limits.max_file_size {
            return Err(ServiceError::FileTooLarge {
                size: request.size,
                max: limits.max_file_size,
            });
        }
        let proof = request.proof.map(Proof::parse).transpose()?;
        let resume = match request.resume_upload_id.as_str() {
            "" => None,
            id => Some(parse_id("resume_upload_id", id)?),
        };
        Ok(Self {
            name: request.name,
            size: request.size,
            md5,
            head_md5,
            preferred_chunk_size: request.preferred_chunk_size,
            accepts_challenge: request.accepts_challenge,
            proof,
            resume,
        })
    }
}

/// The answer to `CheckUpload`.
#[derive(Debug, Clone)]
pub enum CheckOutcome {
    /// The content is stored; the owner now has this complete file.
    AlreadyStored(FileRecord),
    /// A single-pass probe matched one of the owner's files: ask again with the MD5.
    MaybeStored,
    /// Prove that you hold the content (whether or not another owner stored it).
    Challenge(Challenge),
    /// Stream the missing chunks into this session.
    Session {
        file: FileRecord,
        /// False when this call opened the session.
        resumed: bool,
        /// Committed chunks as half-open index ranges.
        committed: Vec<(u64, u64)>,
        /// What one stream may have unacknowledged.
        window: Window,
    },
}

pub async fn check_upload(
    ledger: &dyn Ledger,
    blobs: &dyn BlobStore,
    sessions: &SessionRegistry,
    limits: &Limits,
    challenges: Option<&Challenges>,
    owner: &Owner,
    intent: UploadIntent,
) -> Result<CheckOutcome, ServiceError> {
    if let Some(md5) = &intent.md5
        && file_cap_reached(ledger, limits, owner).await?.is_none()
        && let Some(file) = ledger
            .add_file_for_owned_content(
                owner.as_str(),
                &intent.name,
                md5,
                intent.size,
                intent.head_md5.as_ref(),
            )
            .instrument(info_span!("ledger.add_file_for_owned_content"))
            .await?
    {
        return instant(ledger, blobs, sessions, owner, &intent, file).await;
    }
    // An interrupted upload goes on in its own session, whatever else would match.
    if let Some(open) = resumable(ledger, owner, &intent).await? {
        return session(ledger, limits, open, true).await;
    }
    let Some(md5) = intent.md5 else {
        return probe(ledger, blobs, sessions, limits, owner, intent).await;
    };
    if let Some(challenges) = challenges {
        if let Some(proof) = &intent.proof {
            // However a proof fails, its answer comes no sooner than a proof's floor.
            let checking =
                proven_content(challenges, ledger, blobs, owner, &md5, intent.size, proof);
            let proven = at_least(PROOF_FLOOR, checking)
                .instrument(info_span!("possession.verify"))
                .await?;
            if let Some(blake3) = proven
                && file_cap_reached(ledger, limits, owner).await?.is_none()
                && let Some(file) = ledger
                    .add_file_for_content(
                        owner.as_str(),
                        &intent.name,
                        &blake3,
                        intent.size,
                        &md5,
                        intent.head_md5.as_ref(),
                    )
                    .instrument(info_span!("ledger.add_file_for_content"))
                    .await?
            {
                return instant(ledger, blobs, sessions, owner, &intent, file).await;
            }
        } else if intent.accepts_challenge
            && ledger
                .find_open_upload(owner.as_str(), &md5, intent.size)
                .instrument(info_span!("ledger.find_open_upload"))
                .await?
                .is_none()
        {
            // Asked whatever is stored: the challenge itself tells nothing.
            return Ok(CheckOutcome::Challenge(challenges.issue(
                owner,
                &md5,
                intent.size,
            )?));
        }
    }

    open_session(ledger, blobs, sessions, limits, owner, intent).await
}

/// The caller's own open session that it names to resume, if it still fits the request.
/// Any other id (unknown, another owner's, closed) is as if none were named: the
/// answer must not tell them apart.
async fn resumable(
    ledger: &dyn Ledger,
    owner: &Owner,
    intent: &UploadIntent,
) -> Result<Option<FileRecord>, ServiceError> {
    let Some(id) = intent.resume else {
        return Ok(None);
    };
    let file = ledger
        .get_file(id)
        .instrument(info_span!("ledger.get_file"))
        .await?;
    Ok(file.filter(|file| {
        file.owner == owner.as_str()
            && file.state == FileState::Uploading
            && file.size == intent.size
            && (intent.md5.is_none() || file.md5.is_none() || file.md5 == intent.md5)
    }))
}

/// The owner now has `file` without sending a byte.
async fn instant(
    ledger: &dyn Ledger,
    blobs: &dyn BlobStore,
    sessions: &SessionRegistry,
    owner: &Owner,
    intent: &UploadIntent,
    file: FileRecord,
) -> Result<CheckOutcome, ServiceError> {
    // The owner may have had a session for this content open when another upload
    // stored it, or be resuming one: neither is needed any more.
    let mut unneeded = Vec::new();
    if let Some(md5) = &intent.md5
        && let Some(open) = ledger
            .find_open_upload(owner.as_str(), md5, intent.size)
            .instrument(info_span!("ledger.find_open_upload"))
            .await?
    {
        unneeded.push(open.id);
    }
    if let Some(resumed) = resumable(ledger, owner, intent).await? {
        unneeded.push(resumed.id);
    }
    unneeded.dedup();
    for id in unneeded {
        match abort_upload(ledger, blobs, sessions, owner, id).await {
            Ok(()) | Err(ServiceError::UploadNotOpen { .. }) => {}
            Err(error) => return Err(error),
        }
    }
    crate::metrics::metrics().instant_uploads.add(1, &[]);
    Ok(CheckOutcome::AlreadyStored(file))
}

/// How many of the owner's files with the same size and head a probe looks at.
const PROBE_LIMIT: usize = 16;

/// A single-pass probe: answers from the owner's own files only.
async fn probe(
    ledger: &dyn Ledger,
    blobs: &dyn BlobStore,
    sessions: &SessionRegistry,
    limits: &Limits,
    owner: &Owner,
    intent: UploadIntent,
) -> Result<CheckOutcome, ServiceError> {
    let Some(head) = intent.head_md5 else {
        return Err(ServiceError::BadRequest {
            field: "head_md5",
            problem: "is required when md5 is empty".into(),
        });
    };
    let matches = ledger
        .files_with_head(owner.as_str(), intent.size, &head, PROBE_LIMIT)
        .instrument(info_span!("ledger.files_with_head"))
        .await?;
    // The owner has a complete file like it: hash and ask with the MD5, which makes the
    // upload instant if it is that content (an unfinished upload of the same name, size
    // and head must not make the client send it all again).
    if matches.iter().any(|f| f.state == FileState::Complete) {
        return Ok(CheckOutcome::MaybeStored);
    }
    // The owner's own unfinished single-pass upload of this file: resume it, unless a
    // client is streaming into it right now (a second file with the same name, size and
    // head, uploaded at the same time, must not share its session; it is "maybe" below).
    // Should the file have changed meanwhile, the whole-file MD5 at the end tells.
    for open in matches
        .iter()
        .filter(|f| f.state == FileState::Uploading && f.md5.is_none() && f.name == intent.name)
    {
        if !sessions.in_use_anywhere(open.id).await? {
            return session(ledger, limits, open.clone(), true).await;
        }
    }
    if !matches.is_empty() {
        return Ok(CheckOutcome::MaybeStored);
    }
    open_session(ledger, blobs, sessions, limits, owner, intent).await
}

/// Opens an upload session (or, for an MD5 the owner is already uploading, finds it).
async fn open_session(
    ledger: &dyn Ledger,
    blobs: &dyn BlobStore,
    sessions: &SessionRegistry,
    limits: &Limits,
    owner: &Owner,
    intent: UploadIntent,
) -> Result<CheckOutcome, ServiceError> {
    // The owner's own open session for this content costs nothing new.
    if let Some(md5) = &intent.md5
        && let Some(open) = ledger
            .find_open_upload(owner.as_str(), md5, intent.size)
            .instrument(info_span!("ledger.find_open_upload"))
            .await?
    {
        return session(ledger, limits, open, true).await;
    }
    // The caps are checked and the session recorded under the owner's lock, so uploads
    // opened at the same moment cannot pass them together.
    let _opening = sessions.opening(owner).await;
    within_owner_limits(ledger, limits, owner, intent.size).await?;
    has_room_for(blobs, intent.size).await?;
    let chunk_size = limits
        .choose_chunk_size(intent.preferred_chunk_size, intent.size, blobs.part_rules())
        .ok_or(ServiceError::FileTooLarge {
            size: intent.size,
            max: limits.largest_file_for(blobs.part_rules()),
        })?;
    let opened = ledger
        .open_upload(&NewUpload {
            owner: owner.as_str().to_owned(),
            name: intent.name,
            size: intent.size,
            md5: intent.md5,
            head_md5: intent.head_md5,
            chunk_size,
            chunk_count: ChunkLayout::new(intent.size, chunk_size).chunk_count(),
            expires_at: limits.expiry_from_now(),
        })
        .instrument(info_span!("ledger.open_upload"))
        .await?;
    session(ledger, limits, opened.file, !opened.created).await
}

/// Refuses a new session the blob store has no room for now (uploads that began have
/// their space reserved already), rather than fail it part way through.
async fn has_room_for(blobs: &dyn BlobStore, size: u64) -> Result<(), ServiceError> {
    let free = blobs
        .free_space()
        .instrument(info_span!("blob.free_space"))
        .await?;
    match free {
        Some(available) if size > available => Err(BlobError::NoSpace {
            needed: Some(size),
            available: Some(available),
        }
        .into()),
        _ => Ok(()),
    }
}

/// How many files `owner` has when that is the most it may have; `None` while it may
/// have one more. An owner at its cap gets no instant copy and no new session (refused
/// where the session would open), but resumes the uploads it has.
async fn file_cap_reached(
    ledger: &dyn Ledger,
    limits: &Limits,
    owner: &Owner,
) -> Result<Option<u64>, ServiceError> {
    let files = ledger
        .owner_files(owner.as_str())
        .instrument(info_span!("ledger.owner_files"))
        .await?;
    Ok((files >= limits.max_files_per_owner).then_some(files))
}

/// Refuses a new session that would take `owner` past its file cap, its open-upload cap
/// or its quota.
async fn within_owner_limits(
    ledger: &dyn Ledger,
    limits: &Limits,
    owner: &Owner,
    size: u64,
) -> Result<(), ServiceError> {
    let usage = ledger
        .owner_usage(owner.as_str())
        .instrument(info_span!("ledger.owner_usage"))
        .await?;
    if usage.files >= limits.max_files_per_owner {
        return Err(ServiceError::TooManyFiles { files: usage.files });
    }
    if usage.open_uploads >= limits.max_open_uploads_per_owner {
        return Err(ServiceError::TooManyOpenUploads {
            open: usage.open_uploads,
        });
    }
    let would_hold = usage.bytes.saturating_add(size);
    if would_hold > limits.owner_quota_bytes {
        return Err(ServiceError::OverQuota {
            size,
            would_hold,
            quota: limits.owner_quota_bytes,
        });
    }
    Ok(())
}

/// The answer for an open session: with its committed chunks when it is resumed.
async fn session(
    ledger: &dyn Ledger,
    limits: &Limits,
    file: FileRecord,
    resumed: bool,
) -> Result<CheckOutcome, ServiceError> {
    let mut file = file;
    let committed = if resumed {
        // A session resumed is a session in use: it lives another expiry period.
        file.expires_at = Some(
            ledger
                .extend_upload(file.id, limits.expiry_from_now())
                .instrument(info_span!("ledger.extend_upload"))
                .await?,
        );
        ledger
            .committed_ranges(file.id)
            .instrument(info_span!("ledger.committed_ranges"))
            .await?
    } else {
        Vec::new()
    };
    let window = limits.window_for(file.chunk_size);
    Ok(CheckOutcome::Session {
        resumed,
        file,
        committed,
        window,
    })
}
