//! `UploadChunks` served below tonic's codec, every other method by tonic.
//!
//! This stream carries nearly every byte an upload moves, and tonic's decoder would copy
//! each request frame into a buffer of its own. Here the requests are read off the body
//! by [`UploadRequests`], chunk data landing page-aligned. The stream's protocol is the
//! same [`TransferApi::start_upload_stream`] that tonic's handler calls, and the call's
//! identity comes from the request's extensions like everywhere else
//! ([`crate::identity`]). (Downloads go through tonic: sending their pieces uncopied here
//! gained nothing measurable.)

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use http::{HeaderMap, HeaderValue, Request, Response};
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service};
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use transfer_proto::v1::UploadChunksResponse;
use transfer_proto::v1::transfer_service_server::TransferServiceServer;
use transfer_wire::encode::{self, MessagesBody, Outgoing};

use crate::grpc::{TransferApi, owner_of};
use crate::upload::wire::UploadRequests;

const UPLOAD_CHUNKS_PATH: &str = "/transfer.v1.TransferService/UploadChunks";

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

    fn upload_chunks(
        &self,
        metadata: MetadataMap,
        extensions: http::Extensions,
        body: Body,
    ) -> Response<Body> {
        let owner = match owner_of(&extensions) {
            Ok(owner) => owner,
            Err(status) => return status.into_http(),
        };
        let memory = self.api.sessions().memory().for_owner(&owner);
        let buffers = Arc::clone(self.api.sessions().buffers());
        let inbound = UploadRequests::new(body, self.max_message_size, memory, buffers);
        match self
            .api
            .start_upload_stream(&metadata, &extensions, inbound)
        {
            Ok(responses) => grpc_response(responses, |response: UploadChunksResponse| {
                encode::framed(&response).into()
            }),
            Err(status) => status.into_http(),
        }
    }
}

/// Refuses a request whose messages are compressed, as tonic does: none is negotiated.
fn refuse_compressed(headers: &HeaderMap) -> Result<(), Status> {
    match headers.get("grpc-encoding") {
        Some(encoding) if encoding != "identity" => Err(Status::unimplemented(format!(
            "Content is compressed with {} which isn't supported",
            crate::request::quoted(&String::from_utf8_lossy(encoding.as_bytes()))
        ))),
        _ => Ok(()),
    }
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

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        <TransferServiceServer<TransferApi> as Service<Request<Body>>>::poll_ready(
            &mut self.tonic,
            cx,
        )
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if request.uri().path() != UPLOAD_CHUNKS_PATH {
            return self.tonic.call(request);
        }
        let (parts, body) = request.into_parts();
        if let Err(status) = refuse_compressed(&parts.headers) {
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let metadata = MetadataMap::from_headers(parts.headers);
        let response = self.upload_chunks(metadata, parts.extensions, body);
        Box::pin(async move { Ok(response) })
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
