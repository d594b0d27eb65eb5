//! The `UploadChunks` call made below tonic's codec: each chunk message goes out as two
//! HTTP/2 body pieces, its prefix and small fields, then its data as it was read, with
//! no copy (tonic's encoder would copy every message; see [`transfer_wire::encode`]).
//! The call itself and its responses are [`crate::grpc_call`]'s; [`OpeningUpload`] lets
//! chunks go out before the call's response headers are back.

use futures::{Stream, StreamExt};
use opentelemetry::context::FutureExt as _;
use tokio::task::JoinHandle;
use tonic::Status;
use tonic::body::Body;
use tracing::Instrument as _;
use transfer_proto::v1::{UploadChunksRequest, UploadChunksResponse, upload_chunks_request};
use transfer_wire::encode::{self, MessagesBody, Outgoing};

use crate::grpc_call::{CallTarget, ResponseStream, call};

const PATH: &str = "/transfer.v1.TransferService/UploadChunks";

/// The responses of an `UploadChunks` call.
pub(crate) type UploadResponses = ResponseStream<UploadChunksResponse>;

/// An `UploadChunks` call started on a task of its own, then its responses.
///
/// A call's future resolves only once the server's response headers are back, a round
/// trip after the request went out. The requests flow as soon as the call is sent, so
/// the caller can send its first window of chunks meanwhile instead of a round trip
/// later; it reads [`OpeningUpload::next`] to learn how the call went. Dropping this
/// abandons the call.
pub(crate) struct OpeningUpload {
    state: Opening,
}

enum Opening {
    Sent(JoinHandle<Result<UploadResponses, Status>>),
    Open(Box<UploadResponses>),
    Failed,
}

impl OpeningUpload {
    /// Starts the call on `channel`, sending `requests`; see [`upload_chunks`].
    pub(crate) fn start(
        target: CallTarget,
        requests: impl Stream<Item = UploadChunksRequest> + Send + 'static,
    ) -> Self {
        // The call's metadata carries the caller's trace context: the task runs in the
        // caller's span and OpenTelemetry context.
        let call = upload_chunks(target, requests)
            .with_current_context()
            .in_current_span();
        Self {
            state: Opening::Sent(tokio::spawn(call)),
        }
    }

    /// The next response; the call's error if it could not be made. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Option<Result<UploadChunksResponse, Status>> {
        loop {
            match &mut self.state {
                Opening::Sent(call) => {
                    let opened = call.await;
                    match opened {
                        Ok(Ok(responses)) => self.state = Opening::Open(Box::new(responses)),
                        Ok(Err(status)) => {
                            self.state = Opening::Failed;
                            return Some(Err(status));
                        }
                        Err(ended) => {
                            self.state = Opening::Failed;
                            return Some(Err(Status::internal(format!(
                                "the UploadChunks call ended without an answer: {ended}"
                            ))));
                        }
                    }
                }
                Opening::Open(responses) => return responses.next().await,
                Opening::Failed => return None,
            }
        }
    }
}

impl Drop for OpeningUpload {
    fn drop(&mut self) {
        if let Opening::Sent(call) = &self.state {
            call.abort();
        }
    }
}

/// Starts an `UploadChunks` call on `target` sending `requests`.
pub(crate) async fn upload_chunks(
    target: CallTarget,
    requests: impl Stream<Item = UploadChunksRequest> + Send + 'static,
) -> Result<UploadResponses, Status> {
    let body = MessagesBody::new(requests.map(encode_request), None);
    call(target, PATH, Body::new(body)).await
}

/// One request as gRPC message pieces: a chunk as its fields, then its data uncopied;
/// anything else in one piece.
fn encode_request(request: UploadChunksRequest) -> Outgoing {
    match request.message {
        Some(upload_chunks_request::Message::Chunk(chunk)) => {
            encode::framed_bulk(chunk.index, chunk.crc32c, chunk.data).into()
        }
        message => encode::framed(&UploadChunksRequest { message }).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    use bytes::Bytes;
    use prost::Message;
    use transfer_proto::v1::{Chunk, UploadStart};
    use transfer_wire::encode::PREFIX_LEN;

    fn encode(request: UploadChunksRequest) -> VecDeque<Bytes> {
        match encode_request(request) {
            Outgoing::Message(pieces) => pieces,
            Outgoing::Trailers(_) => panic!("a request is never trailers"),
        }
    }

    fn joined(pieces: VecDeque<Bytes>) -> Vec<u8> {
        pieces.into_iter().flat_map(|p| p.to_vec()).collect()
    }

    fn unframed(framed: &[u8]) -> UploadChunksRequest {
        let len = u32::from_be_bytes([framed[1], framed[2], framed[3], framed[4]]) as usize;
        assert_eq!(framed[0], 0);
        assert_eq!(framed.len(), PREFIX_LEN + len);
        UploadChunksRequest::decode(&framed[PREFIX_LEN..]).unwrap()
    }

    #[test]
    fn a_chunk_goes_out_as_its_fields_then_its_data_uncopied_and_decodes_the_same() {
        for (index, crc32c, len) in [(0, 0, 0), (7, 0xdead_beef, 1000), (u64::MAX, 1, 300_000)] {
            let data = Bytes::from((0..len).map(|i| i as u8).collect::<Vec<_>>());
            let request = UploadChunksRequest {
                message: Some(upload_chunks_request::Message::Chunk(Chunk {
                    index,
                    data: data.clone(),
                    crc32c,
                })),
            };
            let pieces = encode(request.clone());
            assert_eq!(pieces.len(), 2);
            assert_eq!(pieces[1].as_ptr(), data.as_ptr(), "the data is not copied");
            assert_eq!(unframed(&joined(pieces)), request);
        }
    }

    #[test]
    fn other_messages_go_out_whole() {
        let request = UploadChunksRequest {
            message: Some(upload_chunks_request::Message::Start(UploadStart {
                upload_id: "an id".into(),
            })),
        };
        let pieces = encode(request.clone());
        assert_eq!(pieces.len(), 1);
        assert_eq!(unframed(&joined(pieces)), request);
    }
}
