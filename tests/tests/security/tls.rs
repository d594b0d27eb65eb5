//! TLS: the library and raw clients over TLS, client certificates naming the owner,
//! and what a client without the right certificate or without TLS gets.

use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use transfer_client::{ClientConfig, ClientIdentity, TransferClient};
use transfer_proto::v1::GetFileRequest;
use transfer_proto::v1::transfer_service_client::TransferServiceClient;
use transfer_tests::{Ledger, TestPki, TestServer};

use crate::local_file;

fn https(server: &TestServer) -> String {
    format!("https://localhost:{}", server.addr.port())
}

fn tls_client(
    server: &TestServer,
    pki: &TestPki,
    token: Option<&str>,
    identity: Option<transfer_tests::pki::Pem>,
) -> TransferClient {
    let mut config = tls_config(server, pki, identity);
    config.token = token.map(Into::into);
    TransferClient::new(config).expect("a valid TLS client configuration")
}

/// Settings for `server` over TLS, trusting `pki`, with a client certificate if given.
fn tls_config(
    server: &TestServer,
    pki: &TestPki,
    identity: Option<transfer_tests::pki::Pem>,
) -> ClientConfig {
    let mut config = ClientConfig::new(https(server));
    config.ca_certificate = Some(pki.ca_pem().into_bytes());
    config.client_identity = identity.map(|pem| ClientIdentity {
        certificate_pem: pem.certificate.into_bytes(),
        key_pem: pem.key.into_bytes(),
    });
    config
}

async fn the_library_uploads_and_downloads_over_tls_with_an_api_key(ledger: Ledger) {
    let pki = TestPki::new();
    let server = TestServer::start_with(ledger, |s| {
        pki.configure_server(s, false);
        s.api_keys = true;
    })
    .await;
    let (_, token) = server.create_key("alice", None).await;
    let client = tls_client(&server, &pki, Some(&token), None);
    let dir = tempfile::tempdir().unwrap();
    let path = local_file(&dir, "secret.bin", 300_000, 21);
    let uploaded = client
        .upload_path(&path)
        .wait()
        .await
        .expect("upload over TLS");
    let out = dir.path().join("back.bin");
    client
        .download(&uploaded.file.file_id, &out)
        .wait()
        .await
        .expect("download over TLS");
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&path).unwrap());
}

async fn plaintext_to_a_tls_port_gets_no_answer(ledger: Ledger) {
    let pki = TestPki::new();
    let server = TestServer::start_with(ledger, |s| {
        pki.configure_server(s, false);
        s.api_keys = true;
    })
    .await;
    let (_, token) = server.create_key("alice", None).await;
    let plain = crate::client_with(&server.endpoint(), Some(&token), None);
    let refused = plain
        .stat(&uuid::Uuid::new_v4().to_string())
        .await
        .unwrap_err();
    assert!(
        !refused.to_string().contains("NotFound"),
        "a plaintext call must not reach the service: {refused}"
    );
}

async fn a_client_certificate_names_the_owner(ledger: Ledger) {
    let pki = TestPki::new();
    let server = TestServer::start_with(ledger, |s| pki.configure_server(s, true)).await;
    let billing = pki.client("ignored-cn", Some("spiffe://example.org/billing"));
    let client = tls_client(&server, &pki, None, Some(billing.clone()));
    let dir = tempfile::tempdir().unwrap();
    let path = local_file(&dir, "invoice.pdf", 20_000, 22);
    let file = client
        .upload_path(&path)
        .wait()
        .await
        .expect("mTLS upload")
        .file;

    // Another certificate (owner by common name) sees nothing of billing's.
    let ops = pki.client("ops", None);
    let other = tls_client(&server, &pki, None, Some(ops));
    let hidden = other.stat(&file.file_id).await.unwrap_err();
    assert!(hidden.to_string().contains("NotFound"), "{hidden}");
    // Billing's certificate naming another owner in the header is refused.
    let mut config = tls_config(&server, &pki, Some(billing));
    config.owner = Some("ops".into());
    let spoofing = TransferClient::new(config).unwrap();
    let denied = spoofing.stat(&file.file_id).await.unwrap_err();
    assert!(denied.to_string().contains("PermissionDenied"), "{denied}");
}

async fn a_certificate_from_another_ca_or_none_is_refused(ledger: Ledger) {
    let pki = TestPki::new();
    let server = TestServer::start_with(ledger, |s| pki.configure_server(s, true)).await;
    let stranger = TestPki::named("Some other CA").client("alice", None);
    let tls = |identity: Option<transfer_tests::pki::Pem>| {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(pki.ca_pem()))
            .domain_name("localhost");
        if let Some(pem) = identity {
            tls = tls.identity(Identity::from_pem(pem.certificate, pem.key));
        }
        tls
    };
    for identity in [Some(stranger), None] {
        let endpoint = Endpoint::from_shared(https(&server))
            .unwrap()
            .tls_config(tls(identity))
            .unwrap();
        // The handshake fails, or the first call on the connection does.
        let result = match endpoint.connect().await {
            Err(_) => Err(Code::Unavailable),
            Ok(channel) => TransferServiceClient::new(channel)
                .get_file(GetFileRequest {
                    file_id: uuid::Uuid::new_v4().to_string(),
                })
                .await
                .map(|_| ())
                .map_err(|s| s.code()),
        };
        let code = result.expect_err("no valid client certificate, no call");
        // Refused by the TLS handshake itself, not by the identity layer behind it.
        assert!(
            !matches!(code, Code::NotFound | Code::Unauthenticated),
            "the connection must fail: {code:?}"
        );
    }
}

transfer_tests::ledger_tests!(
    the_library_uploads_and_downloads_over_tls_with_an_api_key,
    plaintext_to_a_tls_port_gets_no_answer,
    a_client_certificate_names_the_owner,
    a_certificate_from_another_ca_or_none_is_refused,
);

#[tokio::test]
async fn the_postgres_ledger_connects_over_verified_tls() {
    let pki = TestPki::new();
    let pg = transfer_tests::tls_postgres::TlsPostgres::start(&pki);
    let ca = pki.write("db-ca.pem", &pki.ca_pem());
    let url = pg.url(&ca);
    // The cluster takes TLS connections only: a ledger open proves TLS was used.
    let server =
        TestServer::start_with(Ledger::Sqlite, |s| s.database_url = Some(url.clone())).await;
    let dir = tempfile::tempdir().unwrap();
    let path = local_file(&dir, "over-tls.bin", 100_000, 23);
    let client = crate::client_with(&server.endpoint(), None, None);
    client
        .upload_path(&path)
        .wait()
        .await
        .expect("upload with a TLS ledger");

    // A CA that did not sign the database's certificate: the ledger does not open.
    let stranger = TestPki::named("Some other CA");
    let wrong = stranger.write("other-ca.pem", &stranger.ca_pem());
    let refused =
        transfer_service::ledger::LedgerLocation::from_url(Some(&pg.url(&wrong)), dir.path())
            .unwrap()
            .open(2, None)
            .await;
    assert!(
        refused.is_err(),
        "a database certificate from another CA is refused"
    );
}
