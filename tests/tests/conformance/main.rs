//! Conformance suites: one set of test functions per storage trait, run against every
//! implementation, so all backends keep the same contract (the trait docs state it);
//! and what one backend promises beyond it (`blob_fs`, `postgres_runtime`).

mod blob;
mod blob_fs;
mod blob_s3;
mod copy;
mod keys;
mod ledger;
mod migrations;
mod postgres_runtime;

/// Instantiates a suite for each backend: one `#[tokio::test]` per listed function in a
/// module per backend, each test with a fresh backend from that backend's factory.
#[macro_export]
macro_rules! conformance_tests {
    ($suite:path; [$($backend:ident => $factory:expr),+ $(,)?]; $tests:tt) => {
        $( $crate::conformance_tests!(@backend $suite, $backend => $factory; $tests); )+
    };
    (@backend $suite:path, $backend:ident => $factory:expr; [$($test:ident),+ $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    use $suite as suite;
                    let backend = $factory.await;
                    suite::$test(&backend).await;
                }
            )+
        }
    };
}
