//! Which blob store `transferd` keeps bytes in: the data directory (the default), or an
//! S3 bucket (`--blob-store s3://bucket/prefix`, Amazon's or an S3-compatible server's).

use std::path::Path;
use std::sync::Arc;

use transfer_wire::aligned::BufferPool;

use crate::blob::{BlobError, BlobStore, FsBlobStore, S3ConfigError, S3Settings, open_s3};
use crate::ledger::{Ledger, LedgerError};

/// The blob store's flags. The S3 ones fall back to the standard `AWS_*` variables
/// (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`) and to the instance's role.
#[derive(Debug, Clone, clap::Args)]
pub struct BlobStoreSettings {
    /// Where uploads and content are stored: `s3://BUCKET[/PREFIX]` for an S3 bucket;
    /// without it, the data directory.
    #[arg(long, env = "TRANSFERD_BLOB_STORE")]
    pub blob_store: Option<String>,

    /// The S3 endpoint, for an S3-compatible server (`http://` only when named here).
    #[arg(long, env = "TRANSFERD_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// The bucket's region.
    #[arg(long, env = "TRANSFERD_S3_REGION")]
    pub s3_region: Option<String>,

    /// The access key id (prefer AWS_ACCESS_KEY_ID or a role: flags show in `ps`).
    #[arg(long, env = "TRANSFERD_S3_ACCESS_KEY_ID", hide_env_values = true)]
    pub s3_access_key_id: Option<String>,

    /// The secret access key (prefer AWS_SECRET_ACCESS_KEY or a role: flags show in `ps`).
    #[arg(long, env = "TRANSFERD_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,

    /// Address the bucket as `https://BUCKET.HOST/` rather than `https://HOST/BUCKET/`.
    #[arg(long, env = "TRANSFERD_S3_VIRTUAL_HOSTED_STYLE")]
    pub s3_virtual_hosted_style: bool,

    /// Sign each part's bytes (SigV4 with the payload's SHA-256) rather than send
    /// `UNSIGNED-PAYLOAD`. Default: only over plain `http://`, where the signature is the
    /// bytes' only check in transit; over TLS it hashes every byte again for nothing
    /// TLS does not already give (AWS's SDKs do the same).
    #[arg(long, env = "TRANSFERD_S3_SIGN_PAYLOAD")]
    pub s3_sign_payload: Option<bool>,
}

/// Why the blob store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BlobStoreError {
    #[error("opening the data directory failed: {0}")]
    DataDir(#[from] BlobError),
    #[error(transparent)]
    S3(#[from] S3ConfigError),
    #[error("the object store failed at start-up: {0}")]
    Unreachable(BlobError),
    #[error("the ledger failed at start-up: {0}")]
    Ledger(#[from] LedgerError),
    /// The prefix belongs to another deployment (another ledger).
    #[error("{}", claimed_message(url, key, claimant, *embedded))]
    ClaimedByAnother {
        url: String,
        key: String,
        claimant: String,
        embedded: bool,
    },
}

/// What an operator is told when a bucket prefix is another deployment's.
fn claimed_message(url: &str, key: &str, claimant: &str, embedded: bool) -> String {
    let whose = format!(
        "{url} belongs to another transferd deployment ({claimant}, written at {key}): replicas that share a bucket prefix must share one ledger"
    );
    if embedded {
        format!(
            "{whose}. An embedded SQLite ledger serves one replica only: to run several, give them one PostgreSQL ledger (--database-url postgres://...), or give this one a prefix of its own"
        )
    } else {
        format!(
            "{whose}. After moving a deployment onto this ledger with `transferd migrate-ledger`, delete {key} and start again"
        )
    }
}

impl BlobStoreSettings {
    /// Whether blobs go to an object store other replicas may share.
    pub fn is_object_store(&self) -> bool {
        self.blob_store.is_some()
    }

    /// Opens the configured store; the data directory's unless `--blob-store` names one.
    /// (No claim: for tools beside a server, see [`BlobStoreSettings::open_claimed`].)
    pub fn open(
        &self,
        data_dir: &Path,
        buffers: Arc<BufferPool>,
    ) -> Result<Arc<dyn BlobStore>, BlobStoreError> {
        match &self.blob_store {
            None => Ok(Arc::new(FsBlobStore::open(data_dir, buffers)?)),
            Some(url) => Ok(Arc::new(open_s3(url, &self.s3_settings())?)),
        }
    }

    /// Opens the configured store for a server on `ledger` (`embedded`: a SQLite ledger):
    /// an object store's prefix is claimed for the ledger's deployment first, and one
    /// claimed by another refuses to start.
    pub async fn open_claimed(
        &self,
        data_dir: &Path,
        buffers: Arc<BufferPool>,
        ledger: &dyn Ledger,
        embedded: bool,
    ) -> Result<Arc<dyn BlobStore>, BlobStoreError> {
        let Some(url) = &self.blob_store else {
            return self.open(data_dir, buffers);
        };
        let store = open_s3(url, &self.s3_settings())?;
        let claimant = format!("transfer ledger {}", ledger.ledger_id().await?);
        if let Some(claimant) = store
            .claim(&claimant)
            .await
            .map_err(BlobStoreError::Unreachable)?
        {
            return Err(BlobStoreError::ClaimedByAnother {
                url: url.clone(),
                key: store.claim_key().to_string(),
                claimant,
                embedded,
            });
        }
        Ok(Arc::new(store))
    }

    fn s3_settings(&self) -> S3Settings {
        S3Settings {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            access_key_id: self.s3_access_key_id.clone(),
            secret_access_key: self.s3_secret_access_key.clone(),
            session_token: None,
            virtual_hosted_style: self.s3_virtual_hosted_style,
            sign_payload: self.s3_sign_payload,
        }
    }

    /// Where blobs go, for the start-up log.
    pub fn describe(&self, data_dir: &Path) -> String {
        match &self.blob_store {
            None => format!("the data directory {}", data_dir.display()),
            Some(url) => match &self.s3_endpoint {
                Some(endpoint) => format!("{url} at {endpoint}"),
                None => url.clone(),
            },
        }
    }
}
