//! The end-to-end test harness: a fresh migrated database per test, and small client
//! helpers built on the generated tonic client.
//!
//! What runs where:
//! - [`TestServer`] serves the real service (`transfer_service::server::Transferd`, the
//!   same code `transferd` runs) inside the test's own process, on an ephemeral loopback
//!   port; the test can stop and restart it. Most e2e, client, conformance and security
//!   tests use it.
//! - [`TransferdProcess`] runs the `transferd` binary itself (built by
//!   [`process::workspace_binary`]), for what only a real process shows: its command
//!   line, signals, restarts after a kill, and its resident memory read from /proc.
//! - The CLI tests run the `transfer` binary the same way; the polyglot tests run
//!   grpcurl and the Python client from `target/test-python`.
//!
//! [`ledger_tests!`] runs each test once per ledger, on a current-thread runtime, and a
//! [`TestServer`] runs on that same runtime: calls "at once" in such a test interleave on
//! one thread. What the server hands off still runs beside it: the short calls on its
//! control runtime, and disk writes and hashing on the blocking pool. Tests of calls
//! made at once (e2e `concurrency`) ask for a multi-thread runtime (`threads = 2;`).

#![forbid(unsafe_code)]

pub mod client;
pub mod data;
pub mod database;
pub mod lying_server;
pub mod pg_cluster;
pub mod pki;
pub mod process;
pub mod proxy;
pub mod raw_call;
pub mod s3;
pub mod server;
pub mod silent_server;
pub mod tls_postgres;

pub use client::{ChunkStream, DownloadResult, download, upload_file};
pub use data::{TestFile, crc32c, md5};
pub use database::TestDatabase;
pub use pki::TestPki;
pub use process::TransferdProcess;
pub use proxy::{CuttingProxy, Fault, RoundRobinProxy, SlowRepliesProxy};
pub use server::{Ledger, TestServer};

/// Runs each listed `async fn NAME(ledger: Ledger)` once on every ledger, as the tests
/// `NAME::on_postgres` and `NAME::on_sqlite`; on a current-thread runtime, or with
/// `threads = N;` first, on a multi-thread runtime of N workers (where "at once" must
/// mean in parallel).
#[macro_export]
macro_rules! ledger_tests {
    (threads = $threads:literal; $($test:ident),+ $(,)?) => {
        $(
            mod $test {
                #[tokio::test(flavor = "multi_thread", worker_threads = $threads)]
                async fn on_postgres() {
                    super::$test($crate::Ledger::Postgres).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = $threads)]
                async fn on_sqlite() {
                    super::$test($crate::Ledger::Sqlite).await;
                }
            }
        )+
    };
    ($($test:ident),+ $(,)?) => {
        $(
            mod $test {
                #[tokio::test]
                async fn on_postgres() {
                    super::$test($crate::Ledger::Postgres).await;
                }

                #[tokio::test]
                async fn on_sqlite() {
                    super::$test($crate::Ledger::Sqlite).await;
                }
            }
        )+
    };
}
