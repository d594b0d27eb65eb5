use tonic::Code;
use transfer_proto::v1::CheckUploadRequest;
use transfer_tests::client::request;
use transfer_tests::{Ledger, TestServer, md5};

fn valid() -> CheckUploadRequest {
    CheckUploadRequest {
        name: "file.bin".into(),
        size: 1000,
        md5: md5(b"x").into(),
        preferred_chunk_size: 0,
        ..Default::default()
    }
}

async fn status_of(
    server: &TestServer,
    message: CheckUploadRequest,
    owner: Option<&str>,
) -> tonic::Status {
    server
        .client()
        .await
        .check_upload(request(message, owner))
        .await
        .expect_err("the request must be refused")
}

async fn an_md5_that_is_not_16_bytes_is_invalid(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let hex_digest = CheckUploadRequest {
        md5: b"9dd4e461268c8034f5c8564e155c67a6".to_vec().into(),
        ..valid()
    };
    let status = status_of(&server, hex_digest, None).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("md5"), "{}", status.message());
    assert!(
        status.message().contains("32 bytes"),
        "{}",
        status.message()
    );
}

async fn an_empty_overlong_or_nul_name_is_invalid(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    for name in [String::new(), "n".repeat(1025), "nul\0name".into()] {
        let status = status_of(&server, CheckUploadRequest { name, ..valid() }, None).await;
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().starts_with("name:"),
            "{}",
            status.message()
        );
    }
}

async fn a_file_over_the_size_limit_is_resource_exhausted(ledger: Ledger) {
    let server = TestServer::start_with(ledger, |s| s.max_file_size = 1 << 20).await;
    let too_big = CheckUploadRequest {
        size: (1 << 20) + 1,
        ..valid()
    };
    let status = status_of(&server, too_big, None).await;
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().contains("1048576"), "{}", status.message());
}

async fn a_preferred_chunk_size_is_clamped_to_the_servers_bounds(ledger: Ledger) {
    let server = TestServer::start_with(ledger, |s| {
        s.min_chunk_size = 4096;
        s.max_chunk_size = 1 << 20;
    })
    .await;
    let mut client = server.client().await;
    for (preferred, expected) in [(1, 4096), (u32::MAX, 1 << 20), (0, 64 * 1024)] {
        let message = CheckUploadRequest {
            preferred_chunk_size: preferred,
            md5: md5(&preferred.to_le_bytes()).into(),
            size: 10 << 20,
            ..valid()
        };
        let answer = client.check_upload(message).await.unwrap().into_inner();
        let Some(transfer_proto::v1::check_upload_response::Result::Session(session)) =
            answer.result
        else {
            panic!("expected a session");
        };
        assert_eq!(session.chunk_size, expected, "preferred {preferred}");
        assert_eq!(session.chunk_count, (10u64 << 20).div_ceil(expected.into()));
    }
}

async fn a_malformed_owner_is_invalid(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let status = status_of(&server, valid(), Some(&"o".repeat(200))).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("x-transfer-owner"),
        "{}",
        status.message()
    );
}

async fn neither_an_md5_nor_a_head_digest_is_invalid(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let nothing = CheckUploadRequest {
        md5: Default::default(),
        ..valid()
    };
    let status = status_of(&server, nothing, None).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("head_md5"),
        "{}",
        status.message()
    );

    let short_head = CheckUploadRequest {
        md5: Default::default(),
        head_md5: vec![1, 2, 3].into(),
        ..valid()
    };
    let status = status_of(&server, short_head, None).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("head_md5") && status.message().contains("3 bytes"),
        "{}",
        status.message()
    );
}

transfer_tests::ledger_tests!(
    neither_an_md5_nor_a_head_digest_is_invalid,
    an_md5_that_is_not_16_bytes_is_invalid,
    an_empty_overlong_or_nul_name_is_invalid,
    a_file_over_the_size_limit_is_resource_exhausted,
    a_preferred_chunk_size_is_clamped_to_the_servers_bounds,
    a_malformed_owner_is_invalid,
);
