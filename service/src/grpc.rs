//! The tonic handlers: parse the request, call the protocol, convert its typed error to a
//! `Status` (in [`crate::error`]). No protocol rule lives here.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use transfer_proto::v1::transfer_service_server::TransferService;
use transfer_proto::v1::{
    AbortUploadRequest, AbortUploadResponse, CheckUploadRequest, CheckUploadResponse, ChunkRange,
    DownloadRequest, GetFileRequest, GetFileResponse, UploadChunksRequest, UploadChunksResponse,
    UploadSession, check_upload_response,
};

use crate::blob::BlobStore;
use crate::download::{DownloadStream, download};
use crate::files::{abort_upload, file_info, owned_file};
use crate::layout::Limits;
use crate::ledger::ChunkLedger;
use crate::owner::Owner;
use crate::request::parse_id;
use crate::upload::SessionRegistry;
use crate::upload::check::{CheckOutcome, UploadIntent, check_upload};

/// Responses an upload stream may queue before it waits for the client to read them.
const UPLOAD_RESPONSE_QUEUE: usize = 64;

pub struct TransferApi {
    ledger: Arc<dyn ChunkLedger>,
    blobs: Arc<dyn BlobStore>,
    sessions: Arc<SessionRegistry>,
    limits: Limits,
}

impl TransferApi {
    pub fn new(
        ledger: Arc<dyn ChunkLedger>,
        blobs: Arc<dyn BlobStore>,
        sessions: Arc<SessionRegistry>,
        limits: Limits,
    ) -> Self {
        Self {
            ledger,
            blobs,
            sessions,
            limits,
        }
    }
}

#[tonic::async_trait]
impl TransferService for TransferApi {
    async fn check_upload(
        &self,
        request: Request<CheckUploadRequest>,
    ) -> Result<Response<CheckUploadResponse>, Status> {
        let owner = Owner::from_metadata(request.metadata())?;
        let intent = UploadIntent::parse(request.into_inner(), &self.limits)?;
        let outcome = check_upload(
            self.ledger.as_ref(),
            self.blobs.as_ref(),
            &self.sessions,
            &self.limits,
            &owner,
            intent,
        )
        .await?;
        let result = match outcome {
            CheckOutcome::AlreadyStored(file) => {
                check_upload_response::Result::AlreadyStored(file_info(&file))
            }
            CheckOutcome::Session {
                file,
                resumed,
                committed,
                max_window,
            } => check_upload_response::Result::Session(UploadSession {
                resumed,
                upload_id: file.id.to_string(),
                chunk_size: file.chunk_size,
                chunk_count: file.chunk_count,
                committed: committed
                    .into_iter()
                    .map(|(start, end)| ChunkRange { start, end })
                    .collect(),
                max_window,
            }),
        };
        Ok(Response::new(CheckUploadResponse {
            result: Some(result),
        }))
    }

    type UploadChunksStream = ReceiverStream<Result<UploadChunksResponse, Status>>;

    async fn upload_chunks(
        &self,
        request: Request<Streaming<UploadChunksRequest>>,
    ) -> Result<Response<Self::UploadChunksStream>, Status> {
        let owner = Owner::from_metadata(request.metadata())?;
        let (outbound, responses) = mpsc::channel(UPLOAD_RESPONSE_QUEUE);
        tokio::spawn(crate::upload::stream::run(
            Arc::clone(&self.sessions),
            owner,
            request.into_inner(),
            outbound,
        ));
        Ok(Response::new(ReceiverStream::new(responses)))
    }

    type DownloadStream = DownloadStream;

    async fn download(
        &self,
        request: Request<DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        let owner = Owner::from_metadata(request.metadata())?;
        let stream = download(
            self.ledger.as_ref(),
            Arc::clone(&self.blobs),
            &owner,
            request.into_inner(),
        )
        .await?;
        Ok(Response::new(stream))
    }

    async fn abort_upload(
        &self,
        request: Request<AbortUploadRequest>,
    ) -> Result<Response<AbortUploadResponse>, Status> {
        let owner = Owner::from_metadata(request.metadata())?;
        let id = parse_id("upload_id", &request.get_ref().upload_id)?;
        abort_upload(
            self.ledger.as_ref(),
            self.blobs.as_ref(),
            &self.sessions,
            &owner,
            id,
        )
        .await?;
        Ok(Response::new(AbortUploadResponse {}))
    }

    async fn get_file(
        &self,
        request: Request<GetFileRequest>,
    ) -> Result<Response<GetFileResponse>, Status> {
        let owner = Owner::from_metadata(request.metadata())?;
        let id = parse_id("file_id", &request.get_ref().file_id)?;
        let file = owned_file(self.ledger.as_ref(), &owner, id).await?;
        Ok(Response::new(GetFileResponse {
            file: Some(file_info(&file)),
        }))
    }
}
