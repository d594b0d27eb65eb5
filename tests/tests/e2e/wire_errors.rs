//! Bad gRPC framing on the two methods the server reads below tonic's codec
//! (`UploadChunks`, `Download`): each is answered with a clear status, sent here as raw
//! HTTP/2 requests, as a broken or hostile peer would send them.

use tonic::Code;
use transfer_tests::raw_call::{self, Then, framed};
use transfer_tests::{Ledger, TestServer};

const UPLOAD_CHUNKS: &str = "/transfer.v1.TransferService/UploadChunks";
const DOWNLOAD: &str = "/transfer.v1.TransferService/Download";

/// Sends `body` (then its end) to `path` and returns the call's final status.
async fn final_status(
    server: &TestServer,
    path: &'static str,
    headers: &[(&'static str, &'static str)],
    body: Vec<u8>,
) -> tonic::Status {
    raw_call::final_status(&server.endpoint(), path, headers, body, Then::End).await
}

async fn an_upload_message_that_is_not_protobuf_is_invalid_argument(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    // Field 1 declared 100 bytes long, with 2 present.
    let status = final_status(&server, UPLOAD_CHUNKS, &[], framed(0, &[0x0a, 100, 1, 2])).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("not a valid UploadChunksRequest"),
        "{}",
        status.message()
    );
}

async fn an_upload_cut_inside_a_message_is_invalid_argument(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut body = framed(0, &[0; 100]);
    body.truncate(40);
    let status = final_status(&server, UPLOAD_CHUNKS, &[], body).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .contains("ended inside a message (65 of its bytes missing)"),
        "{}",
        status.message()
    );
}

async fn a_compressed_message_without_an_encoding_is_a_protocol_error(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let status = final_status(&server, UPLOAD_CHUNKS, &[], framed(1, &[0; 8])).await;
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(
        status.message().contains("compressed flag"),
        "{}",
        status.message()
    );
}

async fn a_compressed_request_is_unimplemented_on_both_bulk_methods(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    for path in [UPLOAD_CHUNKS, DOWNLOAD] {
        let status = final_status(&server, path, &[("grpc-encoding", "gzip")], vec![]).await;
        assert_eq!(status.code(), Code::Unimplemented, "{path}: {status:?}");
        assert!(status.message().contains("gzip"), "{}", status.message());
    }
}

async fn a_download_request_that_is_missing_or_malformed_is_refused(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    // No message at all: tonic answers as gRPC servers do for a unary call.
    let status = final_status(&server, DOWNLOAD, &[], vec![]).await;
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(
        status.message().contains("Missing request message"),
        "{}",
        status.message()
    );
    // A message that does not decode is the sender's fault.
    let status = final_status(&server, DOWNLOAD, &[], framed(0, &[0x0a, 100])).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("not a valid DownloadRequest"),
        "{}",
        status.message()
    );
    // Nor does a field that should be UTF-8 and is not.
    let status = final_status(&server, DOWNLOAD, &[], framed(0, &[0x0a, 2, 0xff, 0xfe])).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
}

transfer_tests::ledger_tests!(
    an_upload_message_that_is_not_protobuf_is_invalid_argument,
    an_upload_cut_inside_a_message_is_invalid_argument,
    a_compressed_message_without_an_encoding_is_a_protocol_error,
    a_compressed_request_is_unimplemented_on_both_bulk_methods,
    a_download_request_that_is_missing_or_malformed_is_refused,
);
