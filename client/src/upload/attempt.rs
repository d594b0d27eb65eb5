//! One attempt of an upload: `CheckUpload`, then one stream, until the file completes
//! or the attempt is interrupted.

use transfer_proto::v1::{
    AbortUploadRequest, CheckUploadRequest, FileInfo, FileState, GetFileRequest, UploadSession,
    check_upload_response,
};
use transfer_shared::layout::ChunkLayout;

use crate::chunks::ToSend;
use crate::error::TransferError;
use crate::progress::{Reporter, TransferState};
use crate::retry::{Interruption, guarded};
use crate::source::ChunkSource;

use super::streams::{ChunkStreams, Windows};
use super::{Upload, UploadedFile, hash, prove_possession, read_error};

impl<S: ChunkSource> Upload<'_, S> {
    /// One try: `CheckUpload`, then one stream, until the file completes or the attempt
    /// is interrupted.
    pub(super) async fn attempt(
        &mut self,
        reporter: &mut Reporter,
    ) -> Result<UploadedFile, Interruption> {
        let size = self.source.size();
        let deadline = self.server.config().stall_timeout;
        let mut raw = self.server.raw();
        let mut round_trip = std::time::Duration::MAX;
        let session = loop {
            let request = CheckUploadRequest {
                name: self.name.clone(),
                size,
                md5: self.md5.map(|m| m.to_vec()).unwrap_or_default().into(),
                preferred_chunk_size: self.server.config().chunk_size,
                head_md5: self.head_md5.to_vec().into(),
                accepts_challenge: self.md5.is_some() && !self.challenged,
                proof: self.proof.clone(),
                // After an interruption, the session this upload was streaming into.
                resume_upload_id: self.session_id.clone().unwrap_or_default(),
            };
            let request = naming_upload(request, self.session_id.as_deref());
            let asked = tokio::time::Instant::now();
            let check = guarded(reporter, deadline, raw.check_upload(request))
                .await?
                .into_inner();
            // The path's round trip, and a little of the server's time.
            round_trip = round_trip.min(asked.elapsed());
            self.proof = None;
            match check.result {
                Some(check_upload_response::Result::AlreadyStored(file)) => {
                    return self.finished(file, self.chunks_sent == 0);
                }
                Some(check_upload_response::Result::Session(session)) => break session,
                // This owner may have the content: hash it all, and ask with the MD5.
                Some(check_upload_response::Result::MaybeStored(_)) if self.md5.is_none() => {
                    let md5 = hash(self.source, reporter)
                        .await
                        .map_err(Interruption::Fatal)?;
                    self.md5 = Some(md5);
                    self.streaming = None;
                }
                Some(check_upload_response::Result::MaybeStored(_)) => {
                    return Err(self.protocol("`maybe_stored` for a request with the MD5"));
                }
                // Another owner may have stored this content: prove we hold it, and
                // ask again with the proof (or, if it cannot be answered, without
                // accepting challenges).
                Some(check_upload_response::Result::Challenge(challenge)) if !self.challenged => {
                    self.challenged = true;
                    self.proof = prove_possession(self.source, &challenge, reporter)
                        .await
                        .map_err(Interruption::Fatal)?;
                }
                Some(check_upload_response::Result::Challenge(_)) => {
                    return Err(self.protocol("a possession challenge that was not asked for"));
                }
                None => return Err(self.protocol("CheckUpload answered nothing")),
            }
        };
        if self.aborted_elsewhere {
            // Asking opened a new session unless another upload of ours is running:
            // close what this call opened, and stop.
            if !session.resumed {
                let abort = AbortUploadRequest {
                    upload_id: session.upload_id.clone(),
                };
                let _ = tokio::time::timeout(deadline, raw.abort_upload(abort)).await;
            }
            return Err(Interruption::Fatal(TransferError::AbortedElsewhere {
                file: self.label.clone(),
            }));
        }
        if self.session_id.as_deref() != Some(session.upload_id.as_str()) {
            self.session_id = Some(session.upload_id.clone());
            self.acked.clear();
            self.adopted = session.resumed && self.md5.is_none();
        }
        let layout = ChunkLayout::announced(size, session.chunk_size, session.chunk_count)
            .ok_or_else(|| {
                self.protocol(format!(
                    "session of {} chunks of {} bytes does not fit a {size}-byte file",
                    session.chunk_count, session.chunk_size
                ))
            })?;
        let committed: Vec<(u64, u64)> = session
            .committed
            .iter()
            .map(|r| {
                let count = layout.chunk_count();
                (r.start.min(count), r.end.min(count))
            })
            .filter(|(start, end)| start < end)
            .collect();
        // The server commits before it acks, so what it lists covers every ack we had.
        let done_bytes: u64 = committed.iter().map(|&(s, e)| layout.bytes(s, e)).sum();
        reporter.phase(TransferState::Uploading, done_bytes, size);

        // A single pass hashes what the server already has before the stream opens: an
        // open stream that owes the server a message goes quiet meanwhile, and the
        // server closes streams quiet for long (its --stream-idle-secs).
        if let Some(streaming) = self.streaming.as_mut()
            && streaming.digest().is_none()
        {
            let first_missing = committed
                .first()
                .filter(|(start, _)| *start == 0)
                .map_or(0, |&(_, end)| end);
            streaming
                .catch_up(self.source, layout.bytes(0, first_missing))
                .await
                .map_err(|e| Interruption::Fatal(read_error(&self.label, e)))?;
        }

        let windows = windows(self.server.config(), &session);
        let to_send = ToSend::new(layout.chunk_count(), committed);
        let mut streams = ChunkStreams::open(
            self,
            &session.upload_id,
            windows,
            layout,
            to_send,
            done_bytes,
            round_trip,
        );
        // A call that could not be opened ends here like a stream that broke.
        let interrupted = match streams.run(self, reporter).await {
            Ok(done) => return Ok(done),
            Err(interruption) => interruption,
        };
        if self.adopted && !self.started_over && holds_other_content(&interrupted) {
            // The unfinished upload found by name, size and head was of another file
            // (its MD5 did not match ours): the server has closed it; start a new one.
            self.started_over = true;
            self.adopted = false;
            self.session_id = None;
            self.acked.clear();
            return Err(Interruption::Retry(
                "the unfinished upload it resumed held other content: starting over".into(),
            ));
        }
        // A session that closed under the stream may have been aborted by someone else:
        // then this upload stops rather than start a new session.
        if matches!(interrupted, Interruption::Retry(_))
            && self.session_was_aborted(&session.upload_id).await
        {
            self.aborted_elsewhere = true;
        }
        Err(interrupted)
    }

    pub(super) async fn session_was_aborted(&self, upload_id: &str) -> bool {
        let request = GetFileRequest {
            file_id: upload_id.to_owned(),
        };
        let asked = tokio::time::timeout(
            self.server.config().stall_timeout,
            self.server.raw().get_file(request),
        )
        .await;
        matches!(asked, Ok(Ok(response))
            if response.get_ref().file.as_ref().is_some_and(|f| f.state() == FileState::Aborted))
    }

    pub(super) fn finished(
        &self,
        file: FileInfo,
        instant: bool,
    ) -> Result<UploadedFile, Interruption> {
        let Some(md5) = self.md5 else {
            return Err(self.protocol("the upload completed before this client declared its MD5"));
        };
        if file.md5.as_ref() != md5 || file.size != self.source.size() {
            return Err(Interruption::Fatal(TransferError::Md5Mismatch {
                file: self.label.clone(),
                expected: hex::encode(md5),
                actual: hex::encode(&file.md5),
            }));
        }
        Ok(UploadedFile {
            file,
            instant,
            chunks_sent: self.chunks_sent,
            chunks_already_stored: self.chunks_already_stored,
            connections: self.connections,
        })
    }

    pub(super) fn protocol(&self, problem: impl Into<String>) -> Interruption {
        Interruption::Fatal(TransferError::protocol(&self.label, problem))
    }

    /// Cancels: the server's session (if any) is aborted.
    pub(super) async fn cancel(&self) -> Result<UploadedFile, TransferError> {
        if let Some(upload_id) = &self.session_id {
            let abort = AbortUploadRequest {
                upload_id: upload_id.clone(),
            };
            // Best effort, briefly: if the server cannot be reached the session stays
            // until someone aborts or finishes it.
            let deadline = self.server.config().stall_timeout;
            let _ = tokio::time::timeout(deadline, self.server.raw().abort_upload(abort)).await;
        }
        Err(TransferError::Cancelled {
            file: self.label.clone(),
        })
    }
}

/// Whether an attempt failed because its session held content other than this file's:
/// the server's MD5 differs from ours, or another client declared a different MD5.
pub(super) fn holds_other_content(interruption: &Interruption) -> bool {
    matches!(
        interruption,
        Interruption::Fatal(
            TransferError::Md5Mismatch { .. }
                | TransferError::Refused {
                    code: tonic::Code::DataLoss | tonic::Code::InvalidArgument,
                    ..
                }
        )
    )
}

/// How many chunks may be unacknowledged: on all of an upload's stripes together, this
/// client's window (in bytes and in chunks, whichever is less); on one stripe, also the
/// session's (the server refuses more on one stream). At least one either way. (A
/// server from before `max_window_bytes` sends 0 there, and only its chunk count bounds.)
fn windows(config: &crate::ClientConfig, session: &UploadSession) -> Windows {
    let chunk = u64::from(session.chunk_size.max(1));
    let in_chunks = |bytes: u64| (bytes / chunk).max(1);
    let shared = in_chunks(config.window_bytes).min(u64::from(config.window.max(1)));
    let mut per_stripe = shared.min(u64::from(session.max_window.max(1)));
    if session.max_window_bytes > 0 {
        per_stripe = per_stripe.min(in_chunks(session.max_window_bytes));
    }
    let usize_of = |chunks: u64| usize::try_from(chunks).unwrap_or(usize::MAX);
    Windows {
        per_stripe: usize_of(per_stripe),
        shared: usize_of(shared),
    }
}

/// A `CheckUpload` that resumes a session carries its id as `x-transfer-upload-id`
/// too, as the session's streams do: a load balancer hashing on it sends the whole
/// resumption to the replica that holds the session.
fn naming_upload(
    request: CheckUploadRequest,
    session_id: Option<&str>,
) -> tonic::Request<CheckUploadRequest> {
    let mut request = tonic::Request::new(request);
    if let Some(id) = session_id.and_then(|id| id.parse().ok()) {
        request.metadata_mut().insert("x-transfer-upload-id", id);
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_that_resumes_a_session_names_it_in_its_metadata() {
        let resuming = naming_upload(
            CheckUploadRequest::default(),
            Some("9d7a4d9b-faa9-4d18-b203-d3c30a37c320"),
        );
        assert_eq!(
            resuming
                .metadata()
                .get("x-transfer-upload-id")
                .map(|v| v.to_str().unwrap()),
            Some("9d7a4d9b-faa9-4d18-b203-d3c30a37c320")
        );
        let first = naming_upload(CheckUploadRequest::default(), None);
        assert!(first.metadata().get("x-transfer-upload-id").is_none());
    }

    #[test]
    fn stripes_share_the_clients_window_and_each_keeps_the_sessions() {
        let mut config = crate::ClientConfig::new("http://127.0.0.1:1");
        config.window_bytes = 128 << 20;
        let session = |chunk_size: u32, max_window: u32, max_window_bytes: u64| UploadSession {
            chunk_size,
            max_window,
            max_window_bytes,
            ..Default::default()
        };
        let windows = |per_stripe, shared| Windows { per_stripe, shared };
        // The server's 32 MiB of 4 MiB chunks on one stream; this client's 128 MiB in all.
        assert_eq!(
            windows_of(&config, session(4 << 20, 8, 32 << 20)),
            windows(8, 32)
        );
        // This client's 128 MiB below the server's 256 MiB.
        assert_eq!(
            windows_of(&config, session(4 << 20, 64, 256 << 20)),
            windows(32, 32)
        );
        // Chunks larger than either window: one at a time.
        assert_eq!(
            windows_of(&config, session(256 << 20, 1, 128 << 20)),
            windows(1, 1)
        );
        // A server from before max_window_bytes: its count alone.
        assert_eq!(windows_of(&config, session(1 << 20, 4, 0)), windows(4, 128));
        // The count cap bounds the whole upload.
        config.window = 2;
        assert_eq!(
            windows_of(&config, session(1 << 20, 64, 64 << 20)),
            windows(2, 2)
        );
    }

    fn windows_of(config: &crate::ClientConfig, session: UploadSession) -> Windows {
        windows(config, &session)
    }
}
