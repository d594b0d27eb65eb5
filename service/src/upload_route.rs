//! `UploadChunks` served below tonic's codec, every other method by tonic.
//!
//! The upload stream carries nearly every byte the server receives, and tonic's decoder
//! would copy each of them once more than needed (see [`crate::upload::wire`]). This
//! route reads that one method's request body with [`UploadRequests`] and writes its
//! responses as gRPC frames and trailers itself; the stream's protocol is the same
//! [`TransferApi::start_upload_stream`] that tonic's handler calls.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Frame;
use prost::Message;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service};
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use transfer_proto::v1::UploadChunksResponse;
use transfer_proto::v1::transfer_service_server::TransferServiceServer;

use crate::grpc::TransferApi;
use crate::upload::wire::UploadRequests;

const UPLOAD_CHUNKS_PATH: &str = "/transfer.v1.TransferService/UploadChunks";

/// The Transfer service, with `UploadChunks` taken off tonic's codec.
#[derive(Clone)]
pub struct UploadChunksRoute {
    api: Arc<TransferApi>,
    tonic: TransferServiceServer<TransferApi>,
    max_message_size: usize,
}

impl UploadChunksRoute {
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

    fn upload_chunks(&self, request: Request<Body>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        // tonic answers a compressed request it cannot decode the same way.
        if let Some(encoding) = parts.headers.get("grpc-encoding")
            && encoding != "identity"
        {
            let encoding = String::from_utf8_lossy(encoding.as_bytes());
            return Status::unimplemented(format!(
                "Content is compressed with `{encoding}` which isn't supported"
            ))
            .into_http();
        }
        let metadata = MetadataMap::from_headers(parts.headers);
        let inbound = UploadRequests::new(body, self.max_message_size);
        match self.api.start_upload_stream(&metadata, inbound) {
            Ok(responses) => {
                let mut response = Response::new(Body::new(ResponseBody {
                    responses: Box::pin(responses),
                    ended: false,
                }));
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/grpc"),
                );
                response
            }
            Err(status) => status.into_http(),
        }
    }
}

impl NamedService for UploadChunksRoute {
    const NAME: &'static str = <TransferServiceServer<TransferApi> as NamedService>::NAME;
}

impl Service<Request<Body>> for UploadChunksRoute {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if request.uri().path() == UPLOAD_CHUNKS_PATH {
            let response = self.upload_chunks(request);
            Box::pin(async move { Ok(response) })
        } else {
            self.tonic.call(request)
        }
    }
}

type Responses = Pin<Box<dyn Stream<Item = Result<UploadChunksResponse, Status>> + Send>>;

/// The responses as gRPC messages, then trailers with the stream's status.
struct ResponseBody {
    responses: Responses,
    ended: bool,
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let frame = match ready!(self.responses.poll_next_unpin(cx)) {
            Some(Ok(response)) => Frame::data(encode(&response)),
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
        self.ended
    }
}

/// One message with its gRPC prefix: not compressed, and its length.
fn encode(response: &UploadChunksResponse) -> Bytes {
    let len = response.encoded_len();
    let mut framed = BytesMut::with_capacity(5 + len);
    framed.put_u8(0);
    // Responses are a few dozen bytes; a length beyond u32 cannot happen.
    framed.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    response.encode_raw(&mut framed);
    framed.freeze()
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
