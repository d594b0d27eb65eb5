//! Beyond the shared ledger contract: the PostgreSQL ledger's connections for requests
//! live on the runtime it is given (the server's control runtime, see
//! `transfer_service::control`), and the ledger still answers once that runtime is gone.

use std::time::Duration;

use transfer_service::ledger::{FileCatalog, PostgresLedger};
use transfer_tests::TestDatabase;
use uuid::Uuid;

/// Waits up to five seconds for the ledger to hold `expected` connections to its
/// database (a closed connection's server process can linger a moment); returns the
/// last count. `checker` is the test's own connection, left out of the count.
async fn wait_for_connections(checker: &tokio_postgres::Client, expected: i64) -> i64 {
    let mut count = -1;
    for _ in 0..100 {
        count = checker
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .expect("counting connections")
            .get(0);
        if count == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_connections_run_on_the_given_runtime_and_are_made_in_place_once_it_is_gone() {
    let database = TestDatabase::create().await;
    let checker = database.client().await;
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
        wait_for_connections(&checker, 1).await,
        1,
        "one request connection is open"
    );

    // A connection is a task on the runtime that made it: with that runtime gone, the
    // connection closes. Dropping a runtime blocks until its tasks are gone.
    tokio::task::spawn_blocking(move || drop(control))
        .await
        .expect("dropping the runtime");
    assert_eq!(
        wait_for_connections(&checker, 0).await,
        0,
        "the request connection closed with its runtime"
    );

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
        wait_for_connections(&checker, 1).await,
        1,
        "a new request connection is open"
    );
}
