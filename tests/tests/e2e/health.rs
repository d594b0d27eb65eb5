use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use transfer_tests::{Ledger, TestServer};

async fn the_health_service_reports_transfer_as_serving(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut health = HealthClient::new(server.channel().await);
    for service in ["", "transfer.v1.TransferService"] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            response.status(),
            ServingStatus::Serving,
            "service {service:?}"
        );
    }
}

/// The services a server lists through reflection v1alpha (what grpcurl 1.8 asks).
async fn listed_services(server: &TestServer) -> Result<Vec<String>, tonic::Status> {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut client = ServerReflectionClient::new(server.channel().await);
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    let answer = answers.message().await?.expect("one answer");
    match answer.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            Ok(list.service.into_iter().map(|s| s.name).collect())
        }
        other => panic!("expected a service list, got {other:?}"),
    }
}

async fn reflection_lists_the_api_and_can_be_turned_off(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let services = listed_services(&server)
        .await
        .expect("reflection is on by default");
    assert!(
        services.contains(&"transfer.v1.TransferService".to_owned()),
        "{services:?}"
    );
    assert!(
        services.contains(&"grpc.health.v1.Health".to_owned()),
        "{services:?}"
    );

    let quiet = TestServer::start_with(ledger, |s| s.reflection = false).await;
    let status = listed_services(&quiet)
        .await
        .expect_err("reflection is off");
    assert_eq!(status.code(), tonic::Code::Unimplemented);
}

transfer_tests::ledger_tests!(
    reflection_lists_the_api_and_can_be_turned_off,
    the_health_service_reports_transfer_as_serving,
);
