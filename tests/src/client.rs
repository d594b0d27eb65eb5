//! Small helpers over the generated tonic client. Tests that check one rule drive the
//! raw stream ([`ChunkStream`]); tests that need a file on the server use [`upload_file`].

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Status, Streaming};
use transfer_proto::v1::transfer_service_client::TransferServiceClient;
use transfer_proto::v1::{
    AbortUploadRequest, CheckUploadRequest, Chunk, ChunkAck, DeleteFileRequest, DownloadRequest,
    FileDigest, FileInfo, GetFileRequest, ListFilesRequest, ListFilesResponse, UploadChunksRequest,
    UploadChunksResponse, UploadSession, UploadStart, check_upload_response, download_response,
    upload_chunks_request, upload_chunks_response,
};

use crate::data::{TestFile, crc32c};

pub type Client = TransferServiceClient<Channel>;

/// Wraps a message in a request acting for `owner` (the default owner when `None`).
pub fn request<T>(message: T, owner: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(owner) = owner {
        request.metadata_mut().insert(
            "x-transfer-owner",
            owner.parse().expect("an owner that is valid metadata"),
        );
    }
    request
}

/// Calls `CheckUpload` for a test file with its MD5 (the two-pass way).
pub async fn check(
    client: &mut Client,
    owner: Option<&str>,
    file: &TestFile,
    chunk_size: u32,
) -> Result<check_upload_response::Result, Status> {
    ask(client, owner, file, chunk_size, Ask::Md5).await
}

/// A single-pass `CheckUpload`: the name, size and head digest, no MD5.
pub async fn probe(
    client: &mut Client,
    owner: Option<&str>,
    file: &TestFile,
    chunk_size: u32,
) -> Result<check_upload_response::Result, Status> {
    ask(client, owner, file, chunk_size, Ask::Head).await
}

/// `CheckUpload` with the MD5 and the head digest, as the client library asks; a client
/// resuming after an interruption names the session it was streaming into in
/// `upload_id` ("" for none).
pub async fn check_resuming(
    client: &mut Client,
    owner: Option<&str>,
    file: &TestFile,
    chunk_size: u32,
    upload_id: &str,
) -> Result<check_upload_response::Result, Status> {
    ask(client, owner, file, chunk_size, Ask::Resuming(upload_id)).await
}

/// What a `CheckUpload` of a test file carries besides its name and size.
enum Ask<'a> {
    Md5,
    Head,
    Resuming(&'a str),
}

async fn ask(
    client: &mut Client,
    owner: Option<&str>,
    file: &TestFile,
    chunk_size: u32,
    ask: Ask<'_>,
) -> Result<check_upload_response::Result, Status> {
    let (md5, head_md5, resume) = match ask {
        Ask::Md5 => (file.md5.clone(), Vec::new(), ""),
        Ask::Head => (Vec::new(), file.head_md5(), ""),
        Ask::Resuming(upload_id) => (file.md5.clone(), file.head_md5(), upload_id),
    };
    let message = CheckUploadRequest {
        name: file.name.clone(),
        size: file.data.len() as u64,
        md5: md5.into(),
        preferred_chunk_size: chunk_size,
        head_md5: head_md5.into(),
        resume_upload_id: resume.to_owned(),
        ..Default::default()
    };
    let response = client.check_upload(request(message, owner)).await?;
    Ok(response
        .into_inner()
        .result
        .expect("CheckUpload always answers with a result"))
}

/// A single-pass probe that must answer with a session.
pub async fn probe_session(
    client: &mut Client,
    owner: Option<&str>,
    file: &TestFile,
    chunk_size: u32,
) -> UploadSession {
    match probe(client, owner, file, chunk_size).await {
        Ok(check_upload_response::Result::Session(session)) => session,
        other => panic!("expected an upload session, got {other:?}"),
    }
}

/// `CheckUpload` that must answer with a session.
pub async fn open_session(
    client: &mut Client,
    owner: Option<&str>,
    file: &TestFile,
    chunk_size: u32,
) -> UploadSession {
    match check(client, owner, file, chunk_size).await {
        Ok(check_upload_response::Result::Session(session)) => session,
        other => panic!("expected an upload session, got {other:?}"),
    }
}

/// `GetFile`, which must succeed.
pub async fn get_file(client: &mut Client, owner: Option<&str>, file_id: &str) -> FileInfo {
    let message = GetFileRequest {
        file_id: file_id.to_owned(),
    };
    client
        .get_file(request(message, owner))
        .await
        .expect("GetFile")
        .into_inner()
        .file
        .expect("GetFile answers with the file")
}

/// `AbortUpload`.
pub async fn abort(
    client: &mut Client,
    owner: Option<&str>,
    upload_id: &str,
) -> Result<(), Status> {
    let message = AbortUploadRequest {
        upload_id: upload_id.to_owned(),
    };
    client
        .abort_upload(request(message, owner))
        .await
        .map(|_| ())
}

/// `ListFiles`.
pub async fn list_files(
    client: &mut Client,
    owner: Option<&str>,
    message: ListFilesRequest,
) -> Result<ListFilesResponse, Status> {
    client
        .list_files(request(message, owner))
        .await
        .map(|r| r.into_inner())
}

/// Every file `ListFiles` lists for `owner` with these filters, page by page.
pub async fn list_all(
    client: &mut Client,
    owner: Option<&str>,
    filters: ListFilesRequest,
) -> Vec<FileInfo> {
    let mut files = Vec::new();
    let mut page_token = String::new();
    loop {
        let message = ListFilesRequest {
            page_token: page_token.clone(),
            ..filters.clone()
        };
        let page = list_files(client, owner, message).await.expect("ListFiles");
        files.extend(page.files);
        if page.next_page_token.is_empty() {
            return files;
        }
        page_token = page.next_page_token;
    }
}

/// `DeleteFile`.
pub async fn delete_file(
    client: &mut Client,
    owner: Option<&str>,
    file_id: &str,
) -> Result<(), Status> {
    let message = DeleteFileRequest {
        file_id: file_id.to_owned(),
    };
    client
        .delete_file(request(message, owner))
        .await
        .map(|_| ())
}

/// One open `UploadChunks` stream.
pub struct ChunkStream {
    requests: Option<mpsc::Sender<UploadChunksRequest>>,
    responses: Streaming<UploadChunksResponse>,
}

impl ChunkStream {
    /// Opens a stream and sends `start` for `upload_id`.
    pub async fn open(
        client: &mut Client,
        owner: Option<&str>,
        upload_id: &str,
    ) -> Result<Self, Status> {
        let start = UploadChunksRequest {
            message: Some(upload_chunks_request::Message::Start(UploadStart {
                upload_id: upload_id.to_owned(),
            })),
        };
        Self::open_with_first(client, owner, start).await
    }

    /// Opens a stream whose first message is `first`, whatever it is.
    pub async fn open_with_first(
        client: &mut Client,
        owner: Option<&str>,
        first: UploadChunksRequest,
    ) -> Result<Self, Status> {
        let (requests, outgoing) = mpsc::channel(1024);
        requests
            .send(first)
            .await
            .expect("the request channel is open");
        let responses = client
            .upload_chunks(request(ReceiverStream::new(outgoing), owner))
            .await?
            .into_inner();
        Ok(Self {
            requests: Some(requests),
            responses,
        })
    }

    /// Sends a chunk with its correct CRC32C.
    pub async fn send_chunk(&self, index: u64, data: Bytes) {
        let crc32c = crc32c(&data);
        self.send(Chunk {
            index,
            data,
            crc32c,
        })
        .await;
    }

    pub async fn send(&self, chunk: Chunk) {
        self.send_message(UploadChunksRequest {
            message: Some(upload_chunks_request::Message::Chunk(chunk)),
        })
        .await;
    }

    pub async fn send_message(&self, message: UploadChunksRequest) {
        if let Some(requests) = &self.requests {
            // The server may already have ended the stream; the responses tell why.
            let _ = requests.send(message).await;
        }
    }

    /// Declares the whole-file MD5 (a single-pass upload's `digest`).
    pub async fn send_digest(&self, md5: &[u8]) {
        self.send_message(UploadChunksRequest {
            message: Some(upload_chunks_request::Message::Digest(FileDigest {
                md5: md5.to_vec().into(),
            })),
        })
        .await;
    }

    /// Half-closes the stream: the client sends nothing more.
    pub fn finish_sending(&mut self) {
        self.requests = None;
    }

    /// The next response; `Ok(None)` when the server ended the stream cleanly.
    pub async fn next(&mut self) -> Result<Option<upload_chunks_response::Message>, Status> {
        match self.responses.next().await {
            None => Ok(None),
            Some(Err(status)) => Err(status),
            Some(Ok(response)) => Ok(Some(
                response
                    .message
                    .expect("every UploadChunks response carries a message"),
            )),
        }
    }

    /// Sends the chunks `indexes` of `file` (at most a window of them), then reads one
    /// ack for each; returns the acks.
    pub async fn send_and_ack(
        &mut self,
        file: &TestFile,
        chunk_size: u32,
        indexes: impl IntoIterator<Item = u64>,
    ) -> Vec<ChunkAck> {
        let mut sent = 0;
        for index in indexes {
            self.send_chunk(index, file.chunk(index, chunk_size)).await;
            sent += 1;
        }
        let mut acks = Vec::with_capacity(sent);
        for _ in 0..sent {
            acks.push(self.expect_ack().await);
        }
        acks
    }

    pub async fn expect_ack(&mut self) -> ChunkAck {
        match self.next().await {
            Ok(Some(upload_chunks_response::Message::Ack(ack))) => ack,
            other => panic!("expected an ack, got {other:?}"),
        }
    }

    pub async fn expect_completed(&mut self) -> FileInfo {
        match self.next().await {
            Ok(Some(upload_chunks_response::Message::Completed(done))) => {
                done.file.expect("completed carries the file")
            }
            other => panic!("expected completed, got {other:?}"),
        }
    }

    /// Reads until the stream ends, returning the acks and how it ended.
    pub async fn drain(&mut self) -> (Vec<ChunkAck>, Result<Option<FileInfo>, Status>) {
        let mut acks = Vec::new();
        loop {
            match self.next().await {
                Ok(Some(upload_chunks_response::Message::Ack(ack))) => acks.push(ack),
                Ok(Some(upload_chunks_response::Message::Completed(done))) => {
                    return (acks, Ok(done.file));
                }
                Ok(None) => return (acks, Ok(None)),
                Err(status) => return (acks, Err(status)),
            }
        }
    }
}

/// Uploads a whole test file the way a well-behaved client does: `CheckUpload`, then the
/// missing chunks in order within the window, until `completed`.
pub async fn upload_file(
    client: &mut Client,
    owner: Option<&str>,
    file: &TestFile,
    chunk_size: u32,
) -> FileInfo {
    let session = match check(client, owner, file, chunk_size).await {
        Ok(check_upload_response::Result::AlreadyStored(info)) => return info,
        Ok(check_upload_response::Result::Session(session)) => session,
        Ok(check_upload_response::Result::MaybeStored(_)) => {
            panic!("CheckUpload with an MD5 answered maybe_stored")
        }
        Ok(check_upload_response::Result::Challenge(_)) => {
            panic!("CheckUpload without accepts_challenge answered with a challenge")
        }
        Err(status) => panic!("CheckUpload failed: {status}"),
    };
    let committed = |index: u64| {
        session
            .committed
            .iter()
            .any(|r| r.start <= index && index < r.end)
    };
    let missing: Vec<u64> = (0..session.chunk_count)
        .filter(|i| !committed(*i))
        .collect();
    let mut stream = ChunkStream::open(client, owner, &session.upload_id)
        .await
        .expect("opening UploadChunks");
    let (_, end) = stream
        .send_windowed(file, session.chunk_size, &missing, session.max_window)
        .await;
    match end {
        Ok(Some(done)) => done,
        other => panic!("upload of {} ended with {other:?}", file.name),
    }
}

impl ChunkStream {
    /// Sends the chunks `indexes` of `file` in that order, never more than `window`
    /// unacknowledged, then reads until the stream ends. Returns the acks and the end.
    pub async fn send_windowed(
        &mut self,
        file: &TestFile,
        chunk_size: u32,
        indexes: &[u64],
        window: u32,
    ) -> (Vec<ChunkAck>, Result<Option<FileInfo>, Status>) {
        let mut acks = Vec::new();
        let mut in_flight = 0;
        let mut next = indexes.iter();
        loop {
            while in_flight < window {
                let Some(&index) = next.next() else { break };
                self.send_chunk(index, file.chunk(index, chunk_size)).await;
                in_flight += 1;
            }
            if in_flight == 0 {
                self.finish_sending();
            }
            match self.next().await {
                Ok(Some(upload_chunks_response::Message::Ack(ack))) => {
                    in_flight -= 1;
                    acks.push(ack);
                }
                Ok(Some(upload_chunks_response::Message::Completed(done))) => {
                    return (acks, Ok(done.file));
                }
                Ok(None) => return (acks, Ok(None)),
                Err(status) => return (acks, Err(status)),
            }
        }
    }
}

/// What a download returned: the metadata and the bytes, every piece's CRC32C checked.
#[derive(Debug)]
pub struct DownloadResult {
    pub file: FileInfo,
    pub data: Vec<u8>,
}

pub async fn download(
    client: &mut Client,
    owner: Option<&str>,
    file_id: &str,
    offset: u64,
    length: u64,
) -> Result<DownloadResult, Status> {
    let mut stream = client
        .download(request(
            DownloadRequest {
                file_id: file_id.to_owned(),
                offset,
                length,
            },
            owner,
        ))
        .await?
        .into_inner();
    let file = match stream.next().await {
        Some(Ok(response)) => match response.message {
            Some(download_response::Message::File(file)) => file,
            other => panic!("the first download message must be the file, got {other:?}"),
        },
        Some(Err(status)) => return Err(status),
        None => panic!("download ended without a message"),
    };
    let mut data = Vec::new();
    while let Some(response) = stream.next().await {
        match response?.message {
            Some(download_response::Message::Piece(piece)) => {
                assert_eq!(
                    piece.offset,
                    offset + data.len() as u64,
                    "pieces are consecutive"
                );
                assert_eq!(piece.crc32c, crc32c(&piece.data), "piece CRC32C matches");
                data.extend_from_slice(&piece.data);
            }
            other => panic!("expected a piece, got {other:?}"),
        }
    }
    Ok(DownloadResult { file, data })
}
