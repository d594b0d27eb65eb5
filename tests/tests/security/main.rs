//! The attack suite: the real `transferd` attacked the way a tenant or a stranger on the
//! network would, on both ledgers, each case asserting the refusal.

mod by_hash;
mod collision;
mod identity;
mod limits;
mod memory;
mod possession;
mod tls;
mod transferd_cli;

use std::path::PathBuf;

use transfer_client::{ClientConfig, TransferClient};

/// A client of the library acting with `token` (and for `owner`, when given) at
/// `endpoint`.
pub fn client_with(endpoint: &str, token: Option<&str>, owner: Option<&str>) -> TransferClient {
    let mut config = ClientConfig::new(endpoint);
    config.token = token.map(Into::into);
    config.owner = owner.map(str::to_owned);
    TransferClient::new(config).expect("a valid client configuration")
}

/// A file of `size` random bytes in a temporary directory.
pub fn local_file(dir: &tempfile::TempDir, name: &str, size: usize, seed: u64) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, transfer_tests::TestFile::new(name, size, seed).data)
        .expect("writing a local file");
    path
}
