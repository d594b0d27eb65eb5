//! A bucket prefix claimed by one deployment (the ledger its replicas share), so that
//! two deployments never write under one prefix.

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions};

use super::{ObjectBlobStore, failed};
use crate::blob::BlobError;

impl ObjectBlobStore {
    /// Claims this store's prefix for `claimant` (one deployment: the ledger its
    /// replicas share), so that two deployments never write under one prefix. `Ok(None)`
    /// when the prefix was unclaimed (now claimed) or is `claimant`'s already;
    /// otherwise the claimant found.
    pub async fn claim(&self, claimant: &str) -> Result<Option<String>, BlobError> {
        let key = self.claim_key();
        loop {
            match self.store.get(&key).await {
                Ok(found) => {
                    let body = found
                        .bytes()
                        .await
                        .map_err(|e| failed("reading the prefix's claim", e))?;
                    let found = String::from_utf8_lossy(&body).into_owned();
                    return Ok((found != claimant).then_some(found));
                }
                Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(failed("reading the prefix's claim", error)),
            }
            let create = PutOptions::from(PutMode::Create);
            match self
                .store
                .put_opts(&key, claimant.to_owned().into(), create)
                .await
            {
                Ok(_) => return Ok(None),
                // Claimed meanwhile: read whose it is.
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => {}
                Err(error) => return Err(failed("claiming the prefix", error)),
            }
        }
    }

    /// Where the prefix's claim is kept.
    pub fn claim_key(&self) -> Path {
        self.prefix.clone().join("transfer-claim")
    }
}
