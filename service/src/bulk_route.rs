//! `UploadChunks` and `Download` served below tonic's codec, every other method by tonic.
//!
//! These two streams carry nearly every byte the server moves, and tonic's codec would
//! copy each of them once more than needed: its decoder copies every request frame into
//! a buffer of its own, its encoder every response message. Here an upload's requests
//! are read off the body by [`UploadRequests`] (chunk data landing page-aligned), and a
//! download's pieces go out as their small fields and then their data as read from disk
//! ([`transfer_wire::encode`]). The streams' protocol is the same
//! [`TransferApi::start_upload_stream`] and [`TransferApi::start_download`] that tonic's
//! handlers call.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Frame;
use prost::Message;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service};
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use transfer_proto::v1::transfer_service_server::TransferServiceServer;
use transfer_proto::v1::{
    DownloadRequest, DownloadResponse, UploadChunksResponse, download_response,
};
use transfer_wire::encode;
use transfer_wire::framer::{FramingError, MessageFramer};

use crate::error::{ServiceError, framing_status};
use crate::grpc::TransferApi;
use crate::upload::wire::UploadRequests;

const UPLOAD_CHUNKS_PATH: &str = "/transfer.v1.TransferService/UploadChunks";
const DOWNLOAD_PATH: &str = "/transfer.v1.TransferService/Download";
/// Most bytes a `DownloadRequest` may have: an id and two numbers.
const MAX_DOWNLOAD_REQUEST: usize = 64 << 10;

/// The Transfer service, with its two bulk methods taken off tonic's codec.
#[derive(Clone)]
pub struct BulkRoute {
    api: Arc<TransferApi>,
    tonic: TransferServiceServer<TransferApi>,
    max_message_size: usize,
}

impl BulkRoute {
    /// `tonic` serves every other method; it should be built on the same `api`.
    pub fn new(
        api: Arc<TransferApi>,
        tonic: TransferServiceServer<TransferApi>,
        max_message_size: usize,
    ) -> Self {
        Self {
            api,
            tonic,
            max_message_size,
        }
    }

    fn upload_chunks(&self, metadata: MetadataMap, body: Body) -> Response<Body> {
        let inbound = UploadRequests::new(body, self.max_message_size);
        match self.api.start_upload_stream(&metadata, inbound) {
            Ok(responses) => grpc_response(responses, |response: UploadChunksResponse| {
                VecDeque::from([encode::framed(&response)])
            }),
            Err(status) => status.into_http(),
        }
    }

    async fn download(api: Arc<TransferApi>, metadata: MetadataMap, body: Body) -> Response<Body> {
        let request = match unary_request(body).await {
            Ok(request) => request,
            Err(status) => return status.into_http(),
        };
        match api.start_download(&metadata, request).await {
            Ok(responses) => grpc_response(responses, |response: DownloadResponse| match response
                .message
            {
                Some(download_response::Message::Piece(piece)) => {
                    VecDeque::from(encode::framed_bulk(piece.offset, piece.crc32c, piece.data))
                }
                message => VecDeque::from([encode::framed(&DownloadResponse { message })]),
            }),
            Err(status) => status.into_http(),
        }
    }
}

/// Refuses a request whose messages are compressed, as tonic does: none is negotiated.
fn refuse_compressed(headers: &HeaderMap) -> Result<(), Status> {
    match headers.get("grpc-encoding") {
        Some(encoding) if encoding != "identity" => Err(Status::unimplemented(format!(
            "Content is compressed with `{}` which isn't supported",
            String::from_utf8_lossy(encoding.as_bytes())
        ))),
        _ => Ok(()),
    }
}

/// The one message of a unary request's body. A second message is refused as soon as
/// it arrives: nothing the client sends piles up.
async fn unary_request(mut body: Body) -> Result<DownloadRequest, Status> {
    let not_one = || {
        Status::from(ServiceError::UnexpectedMessage(
            "Download takes exactly one DownloadRequest message",
        ))
    };
    let mut framer = MessageFramer::new(MAX_DOWNLOAD_REQUEST);
    let mut messages = VecDeque::new();
    use http_body::Body as _;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(data) = frame?.into_data() {
            framer.push(data, &mut messages).map_err(framing_status)?;
            if messages.len() > 1 {
                return Err(not_one());
            }
        }
    }
    let missing = framer.missing();
    if missing > 0 {
        return Err(framing_status(FramingError::Truncated { missing }));
    }
    match (messages.pop_front(), messages.is_empty()) {
        (Some(message), true) => DownloadRequest::decode(message).map_err(|e| {
            ServiceError::BadRequest {
                field: "DownloadRequest",
                problem: format!("not a valid message: {e}"),
            }
            .into()
        }),
        _ => Err(not_one()),
    }
}

/// A gRPC response: `application/grpc` headers, then the messages of `responses` as
/// `encode` writes them, then trailers with the stream's status.
fn grpc_response<M: Send + 'static>(
    responses: impl Stream<Item = Result<M, Status>> + Send + 'static,
    encode: fn(M) -> VecDeque<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(Body::new(ResponseBody {
        responses: Box::pin(responses),
        encode,
        pieces: VecDeque::new(),
        ended: false,
    }));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

impl NamedService for BulkRoute {
    const NAME: &'static str = <TransferServiceServer<TransferApi> as NamedService>::NAME;
}

impl Service<Request<Body>> for BulkRoute {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let path = request.uri().path();
        if path != UPLOAD_CHUNKS_PATH && path != DOWNLOAD_PATH {
            return self.tonic.call(request);
        }
        let download = path == DOWNLOAD_PATH;
        let (parts, body) = request.into_parts();
        if let Err(status) = refuse_compressed(&parts.headers) {
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let metadata = MetadataMap::from_headers(parts.headers);
        if download {
            let api = Arc::clone(&self.api);
            Box::pin(async move { Ok(Self::download(api, metadata, body).await) })
        } else {
            let response = self.upload_chunks(metadata, body);
            Box::pin(async move { Ok(response) })
        }
    }
}

type Responses<M> = Pin<Box<dyn Stream<Item = Result<M, Status>> + Send>>;

/// The responses as gRPC messages, then trailers with the stream's status.
struct ResponseBody<M> {
    responses: Responses<M>,
    encode: fn(M) -> VecDeque<Bytes>,
    /// Pieces of the last message not yet sent.
    pieces: VecDeque<Bytes>,
    ended: bool,
}

impl<M> http_body::Body for ResponseBody<M> {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(piece) = self.pieces.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        let frame = match ready!(self.responses.poll_next_unpin(cx)) {
            Some(Ok(response)) => {
                let mut pieces = (self.encode)(response);
                let first = pieces.pop_front().unwrap_or_default();
                self.pieces = pieces;
                Frame::data(first)
            }
            Some(Err(status)) => {
                self.ended = true;
                Frame::trailers(trailers(&status))
            }
            None => {
                self.ended = true;
                Frame::trailers(trailers(&Status::ok("")))
            }
        };
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.pieces.is_empty()
    }
}

fn trailers(status: &Status) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    if status.add_header(&mut trailers).is_err() {
        // Only metadata that cannot be a header fails; say what went wrong instead.
        trailers.clear();
        let _ = Status::internal(status.message().escape_default().to_string())
            .add_header(&mut trailers);
    }
    trailers
}
