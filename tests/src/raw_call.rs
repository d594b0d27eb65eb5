//! gRPC calls made by hand on HTTP/2, as a broken or hostile peer sends them: a body of
//! exactly the bytes given (framing and all), and the call's final status.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request};
use http_body::{Body as _, Frame};
use tonic::body::Body;
use tonic::codegen::Service;

/// How a raw request body ends once its bytes are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// The body ends: a complete request.
    End,
    /// Nothing more comes, and the body never ends: a stalled client.
    Stall,
}

/// A request body of exactly these bytes, then its end or a stall.
struct RawBody {
    bytes: Option<Bytes>,
    then: Then,
}

impl http_body::Body for RawBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        match (self.bytes.take(), self.then) {
            (Some(bytes), _) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
            (None, Then::End) => Poll::Ready(None),
            (None, Then::Stall) => Poll::Pending,
        }
    }
}

/// `message` with gRPC's 5-byte prefix and compression `flag`.
pub fn framed(flag: u8, message: &[u8]) -> Vec<u8> {
    let mut framed = vec![flag];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

/// Sends `body` to `path` at `endpoint` with `headers`, on a connection of its own, and
/// returns the call's final status: from the headers of a trailers-only answer, or from
/// the trailers.
pub async fn final_status(
    endpoint: &str,
    path: &'static str,
    headers: &[(&'static str, &'static str)],
    body: Vec<u8>,
    then: Then,
) -> tonic::Status {
    let mut channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .expect("a valid endpoint")
        .connect_lazy();
    let mut request = Request::new(Body::new(RawBody {
        bytes: Some(body.into()),
        then,
    }));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = http::Uri::from_static(path);
    request.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(*name, HeaderValue::from_static(value));
    }
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .expect("the channel is ready");
    let response = channel.call(request).await.expect("an HTTP response");
    if let Some(status) = tonic::Status::from_header_map(response.headers()) {
        return status;
    }
    let mut body = response.into_body();
    let mut trailers = HeaderMap::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(found) = frame.expect("a body frame").into_trailers() {
            trailers = found;
        }
    }
    tonic::Status::from_header_map(&trailers).expect("trailers with grpc-status")
}
