//! Beyond the shared ledger contract: the PostgreSQL ledger's connections for requests
//! live on the runtime it is given (the server's control runtime, see
//! `transfer_service::control`), and the ledger still answers once that runtime is gone.

use std::time::Duration;

use transfer_service::ledger::{ChunkLedger, PostgresLedger};
use transfer_tests::TestDatabase;
use uuid::Uuid;

/// Connections to `database` other than the one asking.
async fn connections_to(database: &TestDatabase) -> i64 {
    database
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .expect("counting connections")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_connections_run_on_the_given_runtime_and_are_made_in_place_once_it_is_gone() {
    let database = TestDatabase::create().await;
    let control = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime for requests");
    let ledger = PostgresLedger::connect_serving_requests_on(
        &database.url,
        8,
        Some(control.handle().clone()),
    )
    .await
    .expect("opening the PostgreSQL ledger");
    let unknown = Uuid::new_v4();
    assert!(
        ledger.get_file(unknown).await.expect("a lookup").is_none(),
        "an unknown id has no file"
    );
    assert_eq!(
        connections_to(&database).await,
        1,
        "one request connection is open"
    );

    // A connection is a task on the runtime that made it: with that runtime gone, the
    // connection closes. Dropping a runtime blocks until its tasks are gone.
    tokio::task::spawn_blocking(move || drop(control))
        .await
        .expect("dropping the runtime");
    let mut open = connections_to(&database).await;
    for _ in 0..100 {
        if open == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        open = connections_to(&database).await;
    }
    assert_eq!(open, 0, "the request connection closed with its runtime");

    // The pool drops the closed connection and makes a new one here instead.
    assert!(
        ledger
            .get_file(unknown)
            .await
            .expect("a lookup after the request runtime is gone")
            .is_none(),
        "an unknown id still has no file"
    );
    assert_eq!(
        connections_to(&database).await,
        1,
        "a new request connection is open"
    );
}
