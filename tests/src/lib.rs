//! The end-to-end test harness: a fresh migrated database per test, the real `transferd`
//! on an ephemeral port, and small client helpers built on the generated tonic client.

#![forbid(unsafe_code)]

pub mod client;
pub mod data;
pub mod database;
pub mod lying_server;
pub mod pki;
pub mod process;
pub mod proxy;
pub mod raw_call;
pub mod server;
pub mod tls_postgres;

pub use client::{ChunkStream, DownloadResult, download, upload_file};
pub use data::{TestFile, crc32c, md5};
pub use database::TestDatabase;
pub use pki::TestPki;
pub use process::TransferdProcess;
pub use proxy::{CuttingProxy, Fault, SlowRepliesProxy};
pub use server::{Ledger, TestServer};

/// Runs each listed `async fn NAME(ledger: Ledger)` once on every ledger, as the tests
/// `NAME::on_postgres` and `NAME::on_sqlite`.
#[macro_export]
macro_rules! ledger_tests {
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
