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

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use http::{HeaderMap, HeaderValue, Request, Response};
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
use transfer_wire::body::{BodyEvent, FramedBody};
use transfer_wire::encode::{self, MessagesBody, Outgoing};
use transfer_wire::framer::FramingError;

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
                encode::framed(&response).into()
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
                    encode::framed_bulk(piece.offset, piece.crc32c, piece.data).into()
                }
                message => encode::framed(&DownloadResponse { message }).into(),
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
async fn unary_request(body: Body) -> Result<DownloadRequest, Status> {
    let not_one = || {
        Status::from(ServiceError::UnexpectedMessage(
            "Download takes exactly one DownloadRequest message",
        ))
    };
    let mut body = FramedBody::new(body, MAX_DOWNLOAD_REQUEST);
    let mut request = None;
    loop {
        match std::future::poll_fn(|cx| body.poll_event(cx)).await {
            BodyEvent::Message(_) if request.is_some() => return Err(not_one()),
            BodyEvent::Message(message) => request = Some(message),
            BodyEvent::Trailers(_) | BodyEvent::End { .. } => break,
            BodyEvent::Broken(error) => return Err(framing_status(error)),
            BodyEvent::Failed(status) => return Err(status),
        }
    }
    let missing = body.missing();
    if missing > 0 {
        return Err(framing_status(FramingError::Truncated { missing }));
    }
    let message = request.ok_or_else(not_one)?;
    DownloadRequest::decode(message).map_err(|e| {
        ServiceError::BadRequest {
            field: "DownloadRequest",
            problem: format!("not a valid message: {e}"),
        }
        .into()
    })
}

/// A gRPC response: `application/grpc` headers, then the messages of `responses` as
/// `encode` writes them, then trailers with the stream's status.
fn grpc_response<M: Send + 'static>(
    responses: impl Stream<Item = Result<M, Status>> + Send + 'static,
    encode: fn(M) -> Outgoing,
) -> Response<Body> {
    let items = responses.map(move |response| match response {
        Ok(message) => encode(message),
        Err(status) => Outgoing::Trailers(trailers(&status)),
    });
    let body = MessagesBody::new(items, Some(trailers(&Status::ok(""))));
    let mut response = Response::new(Body::new(body));
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
