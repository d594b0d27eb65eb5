//! A fake server that takes chunks and never acknowledges them: it records, per
//! `UploadChunks` stream and the connection it came on, which chunks arrived, so a test
//! sees exactly what a client keeps in flight.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};
use transfer_proto::v1::transfer_service_server::{TransferService, TransferServiceServer};
use transfer_proto::v1::{
    AbortUploadRequest, AbortUploadResponse, CheckUploadRequest, CheckUploadResponse,
    DownloadRequest, DownloadResponse, GetFileRequest, GetFileResponse, UploadChunksRequest,
    UploadChunksResponse, UploadSession, check_upload_response, upload_chunks_request,
};

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// What one `UploadChunks` stream brought.
#[derive(Debug, Clone)]
pub struct StreamRecord {
    /// The client's end of the connection it came on.
    pub peer: Option<SocketAddr>,
    /// Chunk indexes, in the order they arrived.
    pub chunks: Vec<u64>,
}

/// The session every `CheckUpload` gets, and what its streams brought.
pub struct SilentServer {
    pub addr: SocketAddr,
    streams: Arc<Mutex<Vec<StreamRecord>>>,
}

impl SilentServer {
    /// Serves on a loopback port; every `CheckUpload` opens `session`.
    pub async fn start(session: UploadSession) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the silent server");
        let addr = listener.local_addr().expect("its address");
        let streams = Arc::new(Mutex::new(Vec::new()));
        let service = Silent {
            session,
            streams: Arc::clone(&streams),
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TransferServiceServer::new(service))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        Self { addr, streams }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What every stream brought so far.
    pub fn streams(&self) -> Vec<StreamRecord> {
        self.streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Chunks received over all streams.
    pub fn chunks_received(&self) -> usize {
        self.streams().iter().map(|s| s.chunks.len()).sum()
    }
}

struct Silent {
    session: UploadSession,
    streams: Arc<Mutex<Vec<StreamRecord>>>,
}

#[tonic::async_trait]
impl TransferService for Silent {
    async fn check_upload(
        &self,
        _: Request<CheckUploadRequest>,
    ) -> Result<Response<CheckUploadResponse>, Status> {
        Ok(Response::new(CheckUploadResponse {
            result: Some(check_upload_response::Result::Session(self.session.clone())),
        }))
    }

    type UploadChunksStream = ResponseStream<UploadChunksResponse>;

    async fn upload_chunks(
        &self,
        request: Request<Streaming<UploadChunksRequest>>,
    ) -> Result<Response<Self::UploadChunksStream>, Status> {
        let peer = request.remote_addr();
        let mut inbound = request.into_inner();
        let streams = Arc::clone(&self.streams);
        let position = {
            let mut streams = streams.lock().unwrap_or_else(|e| e.into_inner());
            streams.push(StreamRecord {
                peer,
                chunks: Vec::new(),
            });
            streams.len() - 1
        };
        tokio::spawn(async move {
            while let Some(Ok(message)) = inbound.next().await {
                if let Some(upload_chunks_request::Message::Chunk(chunk)) = message.message {
                    let mut streams = streams.lock().unwrap_or_else(|e| e.into_inner());
                    streams[position].chunks.push(chunk.index);
                }
            }
        });
        // Never a word back.
        Ok(Response::new(Box::pin(futures::stream::pending())))
    }

    type DownloadStream = ResponseStream<DownloadResponse>;

    async fn download(
        &self,
        _: Request<DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        Err(Status::unimplemented("uploads only"))
    }

    async fn abort_upload(
        &self,
        _: Request<AbortUploadRequest>,
    ) -> Result<Response<AbortUploadResponse>, Status> {
        Ok(Response::new(AbortUploadResponse::default()))
    }

    async fn get_file(
        &self,
        _: Request<GetFileRequest>,
    ) -> Result<Response<GetFileResponse>, Status> {
        Err(Status::not_found("no such file"))
    }

    async fn list_files(
        &self,
        _: Request<transfer_proto::v1::ListFilesRequest>,
    ) -> Result<Response<transfer_proto::v1::ListFilesResponse>, Status> {
        Err(Status::unimplemented("uploads only"))
    }

    async fn delete_file(
        &self,
        _: Request<transfer_proto::v1::DeleteFileRequest>,
    ) -> Result<Response<transfer_proto::v1::DeleteFileResponse>, Status> {
        Err(Status::unimplemented("uploads only"))
    }
}
