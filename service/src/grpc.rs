//! The tonic handlers: parse the request, call the protocol, convert its typed error to a
//! `Status` (in [`crate::error`]). No protocol rule lives here.

use std::sync::Arc;

use tracing::Instrument;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use transfer_proto::v1::transfer_service_server::TransferService;
use transfer_proto::v1::{
    AbortUploadRequest, AbortUploadResponse, ByteRange, CheckUploadRequest, CheckUploadResponse,
    ChunkRange, DeleteFileRequest, DeleteFileResponse, DownloadRequest, DownloadResponse,
    GetFileRequest, GetFileResponse, ListFilesRequest, ListFilesResponse, MaybeStored,
    PossessionChallenge, UploadChunksRequest, UploadChunksResponse, UploadSession,
    check_upload_response,
};

use crate::blob::BlobStore;
use crate::control::ControlPlane;
use crate::download::{DownloadPieces, download};
use crate::error::ServiceError;
use crate::files::{abort_upload, delete_file, file_info, list_files, owned_file};
use crate::identity::{CallContext, Owner};
use crate::layout::Limits;
use crate::ledger::Ledger;
use crate::request::parse_id;
use crate::telemetry::{record_status, rpc_span};
use crate::upload::SessionRegistry;
use crate::upload::check::{CheckOutcome, UploadIntent, check_upload};
use crate::upload::possession::Challenges;

/// A download's responses as tonic sends them: each error becomes a status here.
pub type DownloadStream = futures::stream::Map<
    DownloadPieces,
    fn(Result<DownloadResponse, ServiceError>) -> Result<DownloadResponse, Status>,
>;

/// An upload stream's responses as the bulk route sends them.
pub type UploadResponses = futures::stream::Map<
    ReceiverStream<Result<UploadChunksResponse, ServiceError>>,
    fn(Result<UploadChunksResponse, ServiceError>) -> Result<UploadChunksResponse, Status>,
>;

/// The one place a stream's error becomes a gRPC status. The stream logged it already,
/// where it ended, inside its RPC span (and whether or not the client still listens).
fn to_status<M>(response: Result<M, ServiceError>) -> Result<M, Status> {
    response.map_err(|error| error.status())
}

/// Responses an upload stream may queue before it waits for the client to read them.
const UPLOAD_RESPONSE_QUEUE: usize = 64;

/// Cheap to clone: a short call takes a clone to the control runtime.
#[derive(Clone)]
pub struct TransferApi {
    ledger: Arc<dyn Ledger>,
    blobs: Arc<dyn BlobStore>,
    sessions: Arc<SessionRegistry>,
    limits: Limits,
    /// Where the short calls run, away from the bulk streams.
    control: Arc<ControlPlane>,
    /// With `--dedup-scope global`: the challenges that let an owner prove it holds
    /// content another owner stored.
    challenges: Option<Arc<Challenges>>,
}

impl TransferApi {
    pub fn new(
        ledger: Arc<dyn Ledger>,
        blobs: Arc<dyn BlobStore>,
        sessions: Arc<SessionRegistry>,
        limits: Limits,
        control: Arc<ControlPlane>,
        challenges: Option<Arc<Challenges>>,
    ) -> Self {
        Self {
            ledger,
            blobs,
            sessions,
            limits,
            control,
            challenges,
        }
    }
}

impl TransferApi {
    /// The server's live upload sessions.
    pub fn sessions(&self) -> &Arc<SessionRegistry> {
        &self.sessions
    }

    /// Runs a short call on the control runtime inside its RPC span, and records its
    /// status there however it ends (a panic or the server shutting down included).
    async fn short_call<T: Send + 'static>(
        &self,
        span: tracing::Span,
        call: impl Future<Output = Result<T, Status>> + Send + 'static,
    ) -> Result<T, Status> {
        let result = self
            .control
            .run(call.instrument(span.clone()))
            .instrument(span.clone())
            .await;
        let code = result
            .as_ref()
            .map_or_else(Status::code, |_| tonic::Code::Ok);
        record_status(&span, code);
        result
    }
}

/// Who a call acts for, as the identity layer established it (see [`crate::identity`]),
/// recorded on the current span.
pub(crate) fn owner_of(extensions: &tonic::Extensions) -> Result<Owner, Status> {
    let context = CallContext::of(extensions).ok_or_else(|| {
        Status::unauthenticated("the call did not pass through the server's identity check")
    })?;
    tracing::Span::current().record("transfer.owner", context.owner.as_str());
    Ok(context.owner.clone())
}

#[tonic::async_trait]
impl TransferService for TransferApi {
    async fn check_upload(
        &self,
        request: Request<CheckUploadRequest>,
    ) -> Result<Response<CheckUploadResponse>, Status> {
        let span = rpc_span("CheckUpload", request.metadata());
        let api = self.clone();
        self.short_call(span, async move { api.check_upload_traced(request).await })
            .await
    }

    type UploadChunksStream = ReceiverStream<Result<UploadChunksResponse, Status>>;

    /// Never reached: every server serves `UploadChunks` by [`crate::bulk_route`], which
    /// reads the requests off the body itself (memory granted per message, chunk data
    /// page-aligned) and calls [`TransferApi::start_upload_stream`]. tonic's trait asks
    /// for this method all the same.
    async fn upload_chunks(
        &self,
        _request: Request<Streaming<UploadChunksRequest>>,
    ) -> Result<Response<Self::UploadChunksStream>, Status> {
        Err(Status::internal(
            "UploadChunks reached tonic's handler: the server must route it through the bulk route",
        ))
    }

    type DownloadStream = DownloadStream;

    async fn download(
        &self,
        request: Request<DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        let (metadata, extensions, request) = request.into_parts();
        self.start_download(&metadata, &extensions, request)
            .await
            .map(Response::new)
    }

    async fn abort_upload(
        &self,
        request: Request<AbortUploadRequest>,
    ) -> Result<Response<AbortUploadResponse>, Status> {
        let span = rpc_span("AbortUpload", request.metadata());
        let api = self.clone();
        let call = async move {
            let owner = owner_of(request.extensions())?;
            let id = parse_id("upload_id", &request.get_ref().upload_id)?;
            tracing::Span::current().record("transfer.upload_id", id.to_string());
            abort_upload(
                api.ledger.as_ref(),
                api.blobs.as_ref(),
                &api.sessions,
                &owner,
                id,
            )
            .await?;
            Ok(Response::new(AbortUploadResponse {}))
        };
        self.short_call(span, call).await
    }

    async fn get_file(
        &self,
        request: Request<GetFileRequest>,
    ) -> Result<Response<GetFileResponse>, Status> {
        let span = rpc_span("GetFile", request.metadata());
        let api = self.clone();
        let call = async move {
            let owner = owner_of(request.extensions())?;
            let id = parse_id("file_id", &request.get_ref().file_id)?;
            tracing::Span::current().record("transfer.file_id", id.to_string());
            let file = owned_file(api.ledger.as_ref(), &owner, id).await?;
            Ok(Response::new(GetFileResponse {
                file: Some(file_info(&file)),
            }))
        };
        self.short_call(span, call).await
    }

    async fn list_files(
        &self,
        request: Request<ListFilesRequest>,
    ) -> Result<Response<ListFilesResponse>, Status> {
        let span = rpc_span("ListFiles", request.metadata());
        let api = self.clone();
        let call = async move {
            let owner = owner_of(request.extensions())?;
            let page = list_files(api.ledger.as_ref(), &owner, request.get_ref()).await?;
            Ok(Response::new(page))
        };
        self.short_call(span, call).await
    }

    async fn delete_file(
        &self,
        request: Request<DeleteFileRequest>,
    ) -> Result<Response<DeleteFileResponse>, Status> {
        let span = rpc_span("DeleteFile", request.metadata());
        let api = self.clone();
        let call = async move {
            let owner = owner_of(request.extensions())?;
            let id = parse_id("file_id", &request.get_ref().file_id)?;
            tracing::Span::current().record("transfer.file_id", id.to_string());
            delete_file(
                api.ledger.as_ref(),
                api.blobs.as_ref(),
                &api.sessions,
                &owner,
                id,
            )
            .await?;
            Ok(Response::new(DeleteFileResponse {}))
        };
        self.short_call(span, call).await
    }
}

impl TransferApi {
    /// Starts an `UploadChunks` stream over `inbound` in a task of its own and returns
    /// its responses. Called by [`crate::bulk_route`], which reads the requests off the
    /// body itself.
    pub fn start_upload_stream(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        extensions: &tonic::Extensions,
        inbound: impl futures::Stream<Item = Result<UploadChunksRequest, ServiceError>>
        + Unpin
        + Send
        + 'static,
    ) -> Result<UploadResponses, Status> {
        let span = rpc_span("UploadChunks", metadata);
        let owner = match span.in_scope(|| owner_of(extensions)) {
            Ok(owner) => owner,
            Err(status) => {
                record_status(&span, status.code());
                return Err(status);
            }
        };
        let (outbound, responses) = mpsc::channel(UPLOAD_RESPONSE_QUEUE);
        // The stream's task carries the RPC span; it records the outcome when it ends.
        let stream =
            crate::upload::stream::run(Arc::clone(&self.sessions), owner, inbound, outbound);
        tokio::spawn(stream.instrument(span));
        Ok(ReceiverStream::new(responses).map(to_status as _))
    }

    /// Checks a `Download` request and starts streaming it.
    async fn start_download(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        extensions: &tonic::Extensions,
        request: DownloadRequest,
    ) -> Result<DownloadStream, Status> {
        let span = rpc_span("Download", metadata);
        let started = async {
            let owner = owner_of(extensions)?;
            let stream = download(
                Arc::clone(&self.ledger),
                Arc::clone(&self.blobs),
                self.sessions.draining().clone(),
                &owner,
                request,
            )
            .await?;
            Ok::<_, Status>(stream.map(to_status as _))
        };
        // A refused download ends here; a started one records its outcome when it ends.
        let result = started.instrument(span.clone()).await;
        if let Err(status) = &result {
            record_status(&span, status.code());
        }
        result
    }

    async fn check_upload_traced(
        &self,
        request: Request<CheckUploadRequest>,
    ) -> Result<Response<CheckUploadResponse>, Status> {
        let owner = owner_of(request.extensions())?;
        let intent = UploadIntent::parse(request.into_inner(), &self.limits)?;
        let span = tracing::Span::current();
        span.record("transfer.file_size", intent.size);
        let outcome = check_upload(
            self.ledger.as_ref(),
            self.blobs.as_ref(),
            &self.sessions,
            &self.limits,
            self.challenges.as_deref(),
            &owner,
            intent,
        )
        .await?;
        let result = match outcome {
            CheckOutcome::MaybeStored => check_upload_response::Result::MaybeStored(MaybeStored {}),
            CheckOutcome::Challenge(challenge) => {
                check_upload_response::Result::Challenge(PossessionChallenge {
                    token: challenge.token.into(),
                    key: challenge.key.to_vec().into(),
                    ranges: challenge
                        .ranges
                        .into_iter()
                        .map(|(offset, length)| ByteRange { offset, length })
                        .collect(),
                })
            }
            CheckOutcome::AlreadyStored(file) => {
                span.record("transfer.file_id", file.id.to_string());
                check_upload_response::Result::AlreadyStored(file_info(&file))
            }
            CheckOutcome::Session {
                file,
                resumed,
                committed,
                window,
            } => check_upload_response::Result::Session({
                span.record("transfer.upload_id", file.id.to_string());
                span.record("transfer.chunk_size", file.chunk_size);
                UploadSession {
                    resumed,
                    upload_id: file.id.to_string(),
                    chunk_size: file.chunk_size,
                    chunk_count: file.chunk_count,
                    committed: committed
                        .into_iter()
                        .map(|(start, end)| ChunkRange { start, end })
                        .collect(),
                    max_window: window.chunks,
                    max_window_bytes: window.bytes,
                    expires_at: file
                        .expires_at
                        .map(|t| std::time::SystemTime::from(t).into()),
                }
            }),
        };
        Ok(Response::new(CheckUploadResponse {
            result: Some(result),
        }))
    }
}
