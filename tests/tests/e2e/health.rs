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

transfer_tests::ledger_tests!(the_health_service_reports_transfer_as_serving,);
