//! One identity seam: every call of every service needs a credential when
//! authentication is on, and a credential acts only for the owners it may.

use std::time::{Duration, Instant};

use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use transfer_proto::v1::{
    AbortUploadRequest, CheckUploadRequest, DownloadRequest, GetFileRequest, UploadChunksRequest,
    UploadStart, upload_chunks_request,
};
use transfer_tests::{Ledger, TestServer};

use crate::{client_with, local_file};

async fn keyed_server(ledger: Ledger) -> TestServer {
    TestServer::start_with(ledger, |s| s.api_keys = true).await
}

/// The code of every Transfer RPC (bulk ones included), health and reflection, called
/// with the client's metadata (and `token` on the health and reflection calls).
async fn codes_of_every_rpc(
    server: &TestServer,
    client: &transfer_client::TransferClient,
    token: Option<&str>,
) -> Vec<(&'static str, Code)> {
    let mut raw = client.raw();
    let id = uuid::Uuid::new_v4().to_string();
    let mut codes = Vec::new();
    let check = raw
        .check_upload(CheckUploadRequest {
            name: "x".into(),
            size: 1,
            md5: vec![0; 16].into(),
            ..Default::default()
        })
        .await;
    codes.push(("CheckUpload", check.err().map_or(Code::Ok, |s| s.code())));
    let get = raw
        .get_file(GetFileRequest {
            file_id: id.clone(),
        })
        .await;
    codes.push(("GetFile", get.err().map_or(Code::Ok, |s| s.code())));
    let abort = raw
        .abort_upload(AbortUploadRequest {
            upload_id: id.clone(),
        })
        .await;
    codes.push(("AbortUpload", abort.err().map_or(Code::Ok, |s| s.code())));
    let download = match raw
        .download(DownloadRequest {
            file_id: id.clone(),
            ..Default::default()
        })
        .await
    {
        Err(status) => status.code(),
        Ok(stream) => first_code(stream.into_inner()).await,
    };
    codes.push(("Download", download));
    let start = UploadChunksRequest {
        message: Some(upload_chunks_request::Message::Start(UploadStart {
            upload_id: id,
        })),
    };
    let upload = match raw.upload_chunks(tokio_stream::iter([start])).await {
        Err(status) => status.code(),
        Ok(stream) => first_code(stream.into_inner()).await,
    };
    codes.push(("UploadChunks", upload));
    // Health and reflection, on a channel of their own.
    let mut health = HealthClient::with_interceptor(server.channel().await, bearer(token));
    let health = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await;
    codes.push(("Health/Check", health.err().map_or(Code::Ok, |s| s.code())));
    codes.push(("Reflection", reflection_code(server, token).await));
    codes
}

/// The code a streaming call's first answer ends with: OK if it sends a message.
async fn first_code<T>(mut answers: tonic::Streaming<T>) -> Code {
    answers.message().await.err().map_or(Code::Ok, |s| s.code())
}

/// Adds `authorization: Bearer <token>` to every call, when there is a token.
fn bearer(
    token: Option<&str>,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    let header = token.and_then(|t| {
        format!("Bearer {t}")
            .parse::<tonic::metadata::AsciiMetadataValue>()
            .ok()
    });
    move |mut request| {
        if let Some(value) = &header {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The code of a reflection v1alpha `ListServices`, with `token` when given.
async fn reflection_code(server: &TestServer, token: Option<&str>) -> Code {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut client =
        ServerReflectionClient::with_interceptor(server.channel().await, bearer(token));
    match client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
    {
        Err(status) => status.code(),
        Ok(answers) => first_code(answers.into_inner()).await,
    }
}

async fn every_rpc_is_refused_without_a_credential(ledger: Ledger) {
    let server = keyed_server(ledger).await;
    let anonymous = client_with(&server.endpoint(), None, Some("alice"));
    for (rpc, code) in codes_of_every_rpc(&server, &anonymous, None).await {
        assert_eq!(code, Code::Unauthenticated, "{rpc} without a credential");
    }
    let (_, real) = server.create_key("alice", None).await;
    let unknown_id =
        "tfk_0123456789abcdef_0000000000000000000000000000000000000000000000000000000000000000";
    // The real key's id with another secret.
    let mut wrong_secret = real.clone();
    let last = wrong_secret.pop().unwrap();
    wrong_secret.push(if last == '0' { '1' } else { '0' });
    for forged in [unknown_id, wrong_secret.as_str(), "Bearer", "tfk_short"] {
        let client = client_with(&server.endpoint(), Some(forged), None);
        for (rpc, code) in codes_of_every_rpc(&server, &client, Some(forged)).await {
            assert_eq!(code, Code::Unauthenticated, "{rpc} with {forged:?}");
        }
    }
}

async fn an_expired_key_or_two_authorization_headers_are_refused(ledger: Ledger) {
    let server = keyed_server(ledger).await;
    let (_, token) = server
        .create_key_expiring("alice", chrono::Utc::now() - chrono::Duration::seconds(1))
        .await;
    let expired = client_with(&server.endpoint(), Some(&token), None);
    let refused = expired
        .stat(&uuid::Uuid::new_v4().to_string())
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("Unauthenticated"), "{refused}");
    assert!(refused.to_string().contains("expired"), "{refused}");

    let (_, alices) = server.create_key("alice", None).await;
    let (_, bobs) = server.create_key("bob", None).await;
    let mut raw = server.client().await;
    let mut request = tonic::Request::new(GetFileRequest {
        file_id: uuid::Uuid::new_v4().to_string(),
    });
    for token in [&alices, &bobs] {
        let value = format!("Bearer {token}").parse().unwrap();
        request.metadata_mut().append("authorization", value);
    }
    let status = raw.get_file(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("more than once"), "{status:?}");
}

async fn a_valid_key_passes_every_rpc_to_its_handler(ledger: Ledger) {
    let server = keyed_server(ledger).await;
    let (_, token) = server.create_key("alice", None).await;
    let alice = client_with(&server.endpoint(), Some(&token), None);
    for (rpc, code) in codes_of_every_rpc(&server, &alice, Some(&token)).await {
        let expected = match rpc {
            "CheckUpload" | "Health/Check" | "Reflection" => Code::Ok,
            _ => Code::NotFound,
        };
        assert_eq!(code, expected, "{rpc} with alice's key");
    }
}

async fn a_key_acts_for_its_own_owner_and_no_other(ledger: Ledger) {
    let server = keyed_server(ledger).await;
    let (_, alices_key) = server.create_key("alice", None).await;
    let (_, bobs_key) = server.create_key("bob", None).await;
    let dir = tempfile::tempdir().unwrap();
    let path = local_file(&dir, "letter.txt", 50_000, 7);
    let alice = client_with(&server.endpoint(), Some(&alices_key), None);
    let uploaded = alice
        .upload_path(&path)
        .wait()
        .await
        .expect("alice uploads");
    let file_id = uploaded.file.file_id.clone();

    let bob = client_with(&server.endpoint(), Some(&bobs_key), None);
    let stat = bob
        .stat(&file_id)
        .await
        .expect_err("bob cannot see alice's file");
    assert!(stat.to_string().contains("NotFound"), "{stat}");
    let out = dir.path().join("stolen");
    let download = bob.download(&file_id, &out).wait().await;
    assert!(download.is_err(), "bob cannot download alice's file");
    assert!(!out.exists());

    // Bob's key naming alice as the owner: refused, not honoured.
    let spoofing = client_with(&server.endpoint(), Some(&bobs_key), Some("alice"));
    let refused = spoofing.stat(&file_id).await.expect_err("header spoofing");
    assert!(
        refused.to_string().contains("PermissionDenied"),
        "{refused}"
    );
    // Alice's key naming her own name is fine.
    let explicit = client_with(&server.endpoint(), Some(&alices_key), Some("alice"));
    assert_eq!(explicit.stat(&file_id).await.unwrap().file_id, file_id);
}

async fn a_backend_key_acts_for_owners_under_its_prefix_only(ledger: Ledger) {
    let server = keyed_server(ledger).await;
    let (_, key) = server.create_key("backend", Some("users/")).await;
    let dir = tempfile::tempdir().unwrap();
    let path = local_file(&dir, "a.bin", 10_000, 8);
    let for_ann = client_with(&server.endpoint(), Some(&key), Some("users/ann"));
    let anns = for_ann
        .upload_path(&path)
        .wait()
        .await
        .expect("upload for ann");
    let for_ben = client_with(&server.endpoint(), Some(&key), Some("users/ben"));
    let stat = for_ben
        .stat(&anns.file.file_id)
        .await
        .expect_err("ben is not ann");
    assert!(stat.to_string().contains("NotFound"), "{stat}");
    let outside = client_with(&server.endpoint(), Some(&key), Some("admins/root"));
    let refused = outside
        .stat(&anns.file.file_id)
        .await
        .expect_err("outside the prefix");
    assert!(
        refused.to_string().contains("PermissionDenied"),
        "{refused}"
    );
}

async fn a_revoked_key_is_refused_within_seconds(ledger: Ledger) {
    let server = keyed_server(ledger).await;
    let (id, token) = server.create_key("alice", None).await;
    let alice = client_with(&server.endpoint(), Some(&token), None);
    let mut raw = alice.raw();
    let get = GetFileRequest {
        file_id: uuid::Uuid::new_v4().to_string(),
    };
    assert_eq!(
        raw.get_file(get.clone()).await.unwrap_err().code(),
        Code::NotFound
    );
    server.revoke_key(&id).await;
    let revoked = Instant::now();
    // The documented bound is KEY_CACHE_TTL; allow a loaded machine some slack.
    let limit = transfer_service::identity::KEY_CACHE_TTL + Duration::from_secs(5);
    loop {
        let code = raw.get_file(get.clone()).await.unwrap_err().code();
        if code == Code::Unauthenticated {
            break;
        }
        assert_eq!(code, Code::NotFound);
        assert!(
            revoked.elapsed() < limit,
            "a revoked key still works after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn without_authentication_the_owner_header_is_trusted_on_loopback(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let dir = tempfile::tempdir().unwrap();
    let path = local_file(&dir, "dev.bin", 1000, 9);
    let alice = client_with(&server.endpoint(), None, Some("alice"));
    let file = alice.upload_path(&path).wait().await.unwrap().file;
    let bob = client_with(&server.endpoint(), None, Some("bob"));
    assert!(bob.stat(&file.file_id).await.is_err());
    assert_eq!(
        alice.stat(&file.file_id).await.unwrap().file_id,
        file.file_id
    );
}

transfer_tests::ledger_tests!(
    every_rpc_is_refused_without_a_credential,
    an_expired_key_or_two_authorization_headers_are_refused,
    a_valid_key_passes_every_rpc_to_its_handler,
    a_key_acts_for_its_own_owner_and_no_other,
    a_backend_key_acts_for_owners_under_its_prefix_only,
    a_revoked_key_is_refused_within_seconds,
    without_authentication_the_owner_header_is_trusted_on_loopback,
);
