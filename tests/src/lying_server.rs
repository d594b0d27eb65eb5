//! A fake server that lies about a download in one way per file id (a piece whose
//! CRC32C does not match, a gap between pieces, a wrong MD5, a short file): what every
//! client must refuse, never writing a file.

use std::net::SocketAddr;
use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};
use transfer_proto::v1::transfer_service_server::{TransferService, TransferServiceServer};
use transfer_proto::v1::{
    AbortUploadRequest, AbortUploadResponse, CheckUploadRequest, CheckUploadResponse, DataPiece,
    DownloadRequest, DownloadResponse, FileInfo, FileState, GetFileRequest, GetFileResponse,
    UploadChunksRequest, UploadChunksResponse, download_response,
};

use crate::{TestFile, crc32c};

/// The file ids the server answers, each with a word the client's refusal must name.
pub const LIES: [(&str, &str); 4] = [
    ("corrupt-piece", "CRC32C"),
    ("offset-gap", "offset"),
    ("wrong-md5", "MD5"),
    ("short", "byte"),
];

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Serves `Download` only, lying the way the file id names.
struct LyingServer {
    file: TestFile,
}

impl LyingServer {
    /// The answer to a download of `lie` from `offset` (as a resuming client asks).
    fn responses(&self, lie: &str, offset: u64) -> Result<Vec<DownloadResponse>, Status> {
        let mut info = FileInfo {
            file_id: lie.to_owned(),
            name: self.file.name.clone(),
            size: self.file.data.len() as u64,
            md5: self.file.md5.clone().into(),
            state: FileState::Complete.into(),
            ..Default::default()
        };
        let mut pieces: Vec<DataPiece> = self
            .file
            .data
            .chunks(1000)
            .enumerate()
            .map(|(i, data)| DataPiece {
                offset: i as u64 * 1000,
                data: Bytes::copy_from_slice(data),
                crc32c: crc32c(data),
            })
            .collect();
        match lie {
            "corrupt-piece" => {
                let mut data = pieces[1].data.to_vec();
                data[7] ^= 0x20;
                pieces[1].data = data.into();
            }
            "offset-gap" => pieces.remove(1).offset = 0,
            "wrong-md5" => info.md5 = vec![0; 16].into(),
            "short" => drop(pieces.pop()),
            _ => return Err(Status::not_found(format!("no lie {lie}"))),
        }
        let file = std::iter::once(download_response::Message::File(info));
        let pieces = pieces
            .into_iter()
            .filter(|piece| piece.offset >= offset)
            .map(download_response::Message::Piece);
        Ok(file
            .chain(pieces)
            .map(|message| DownloadResponse {
                message: Some(message),
            })
            .collect())
    }
}

#[tonic::async_trait]
impl TransferService for LyingServer {
    async fn check_upload(
        &self,
        _: Request<CheckUploadRequest>,
    ) -> Result<Response<CheckUploadResponse>, Status> {
        Err(Status::unimplemented("download only"))
    }

    type UploadChunksStream = ResponseStream<UploadChunksResponse>;

    async fn upload_chunks(
        &self,
        _: Request<Streaming<UploadChunksRequest>>,
    ) -> Result<Response<Self::UploadChunksStream>, Status> {
        Err(Status::unimplemented("download only"))
    }

    type DownloadStream = ResponseStream<DownloadResponse>;

    async fn download(
        &self,
        request: Request<DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        let request = request.get_ref();
        let responses = self.responses(&request.file_id, request.offset)?;
        Ok(Response::new(Box::pin(tokio_stream::iter(
            responses.into_iter().map(Ok),
        ))))
    }

    async fn abort_upload(
        &self,
        _: Request<AbortUploadRequest>,
    ) -> Result<Response<AbortUploadResponse>, Status> {
        Err(Status::unimplemented("download only"))
    }

    async fn get_file(
        &self,
        _: Request<GetFileRequest>,
    ) -> Result<Response<GetFileResponse>, Status> {
        Err(Status::unimplemented("download only"))
    }

    async fn list_files(
        &self,
        _: Request<transfer_proto::v1::ListFilesRequest>,
    ) -> Result<Response<transfer_proto::v1::ListFilesResponse>, Status> {
        Err(Status::unimplemented("download only"))
    }

    async fn delete_file(
        &self,
        _: Request<transfer_proto::v1::DeleteFileRequest>,
    ) -> Result<Response<transfer_proto::v1::DeleteFileResponse>, Status> {
        Err(Status::unimplemented("download only"))
    }
}

/// Serves `file`, lied about, on a loopback port.
pub async fn start_lying_server(file: TestFile) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TransferServiceServer::new(LyingServer { file }))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}
