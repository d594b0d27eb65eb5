//! Completing a session: the whole-file digests checked against the declared MD5, the
//! content stored at its address, the file recorded (or the upload failed).

use super::actor::Session;
use super::task::Stop;
use super::*;
use crate::blob::{BlobError, ContentLocator, PartReceipt};
use crate::error::ServiceError;
use crate::ledger::{FileRecord, FileState, HashCheckpoint, LedgerError, Md5Digest};
use crate::metrics::metrics;
use crate::upload::hasher::OrderedHasher;

impl Session {
    /// All chunks are committed: verify the whole-file MD5 and complete (or fail) the file.
    pub(super) async fn finish(&mut self) -> Result<(), Stop> {
        let result = self.verify_and_complete().await;
        match result {
            Ok(file) => self.tell_all(|| SessionEvent::Completed(file.clone())),
            Err(error) => self.fail_streams(error),
        }
        Err(Stop::Closed)
    }

    /// The stored bytes do not have the declared MD5: the upload fails and its bytes go
    /// (the staged ones, and the `content` made of them when hashing needed it made).
    pub(super) async fn mismatch(
        &self,
        declared: Md5Digest,
        computed: Md5Digest,
        content: Option<&ContentLocator>,
    ) -> Result<FileRecord, ServiceError> {
        let error = ServiceError::Md5Mismatch {
            declared: hex::encode(declared),
            computed: hex::encode(computed),
        };
        self.registry
            .ledger
            .fail_upload(self.id(), self.lease, &error.to_string())
            .await?;
        if let Some(content) = content {
            self.registry.blobs.delete(content).await?;
        }
        self.registry.blobs.abort(&self.staged).await?;
        Err(error)
    }

    /// Makes the staged parts the content, from the receipts the ledger kept.
    async fn complete_blob(&self) -> Result<ContentLocator, ServiceError> {
        let receipts: Vec<PartReceipt> = self
            .registry
            .ledger
            .part_receipts(self.id())
            .await?
            .into_iter()
            .map(|(index, tag)| PartReceipt {
                index,
                tag: Some(tag),
            })
            .collect();
        match self.registry.blobs.complete(&self.staged, &receipts).await {
            Ok(locator) => Ok(locator),
            Err(BlobError::UploadNotFound(_)) => Err(ServiceError::StoredDataLost {
                id: self.id(),
                reason: "neither the content nor the staged upload is stored".into(),
            }),
            Err(error) => Err(error.into()),
        }
    }

    /// Feeds `hasher` the content's bytes past what it has hashed: what a store that
    /// cannot read back unfinished uploads could not give it before.
    async fn hash_rest_from(
        &self,
        hasher: &OrderedHasher,
        content: &ContentLocator,
    ) -> Result<(), ServiceError> {
        /// Bytes read at once: one ranged GET on an object store.
        const PIECE: u64 = 8 << 20;
        let size = self.layout.size;
        let mut offset = self.frontier.hashed_bytes();
        let rest = size - offset;
        metrics().bytes_rehashed.add(rest, &[]);
        tracing::info!(upload = %self.id(), bytes = rest, "hashing the rest from the completed content");
        while offset < size {
            let len = (size - offset).min(PIECE);
            let bytes = self
                .registry
                .blobs
                .read(content, offset, len as usize)
                .await
                .map_err(|e| ServiceError::StoredDataLost {
                    id: self.id(),
                    reason: format!("reading the completed content back to hash it: {e}"),
                })?;
            hasher.feed(bytes).await;
            offset += len;
        }
        Ok(())
    }

    pub(super) async fn verify_and_complete(&mut self) -> Result<FileRecord, ServiceError> {
        let id = self.id();
        let lost = |reason: &str| ServiceError::StoredDataLost {
            id,
            reason: reason.into(),
        };
        let declared = self
            .declared_md5
            .ok_or_else(|| lost("no whole-file MD5 was declared"))?;
        if self.computed.is_none() {
            // The hasher must have every chunk before it can say the digest.
            self.advance_hash().await?;
        }
        // The content, when made before hashing was done.
        let mut content = None;
        let computed = match (self.computed, self.frontier.take_hasher()) {
            (Some(digests), _) => digests,
            (None, Some(hasher)) => {
                if !self.frontier.all_hashed() {
                    // The store could not give back what the hasher missed (an object
                    // store cannot read an unfinished upload); the content it makes can.
                    let made = self.complete_blob().await?;
                    self.hash_rest_from(&hasher, &made).await?;
                    content = Some(made);
                }
                // The content's BLAKE3 (and a single-pass upload's MD5) are nowhere
                // else: save the final hash state before the staged bytes move, so a
                // restart in between still finds the content.
                if let Ok(state) = hasher.checkpoint().await.await {
                    let checkpoint = HashCheckpoint {
                        chunks: self.layout.chunk_count(),
                        state,
                    };
                    self.registry
                        .ledger
                        .save_hash_checkpoint(id, self.lease, &checkpoint)
                        .await?;
                }
                hasher
                    .finish()
                    .await
                    .ok_or_else(|| lost("hashing the upload failed"))?
            }
            (None, None) => return Err(lost("the upload's hash state was lost")),
        };
        self.computed = Some(computed);
        if computed.md5 != declared {
            return self
                .mismatch(declared, computed.md5, content.as_ref())
                .await;
        }
        let blobs = &self.registry.blobs;
        let ledger = &self.registry.ledger;
        let locator = match content {
            Some(made) => made,
            None => self.complete_blob().await?,
        };
        let file = match ledger
            .complete_upload(
                id,
                self.lease,
                &computed.md5,
                &computed.blake3,
                locator.as_str(),
            )
            .await
        {
            Ok(file) => file,
            // Aborted, expired or deleted meanwhile: nobody will ever refer to this copy.
            // (Completed meanwhile, by another session of the same upload, it is that
            // completion's content: the locator is the upload's own, and stays.)
            Err(
                error @ (LedgerError::NotFound(_)
                | LedgerError::NotUploading {
                    state: FileState::Aborted | FileState::Expired | FileState::Failed,
                    ..
                }),
            ) => {
                if let Err(delete) = blobs.delete(&locator).await {
                    tracing::warn!(upload = %id, %delete, "could not delete the content of an upload closed while it completed");
                }
                return Err(error.into());
            }
            Err(error) => return Err(error.into()),
        };
        let took = (chrono::Utc::now() - file.created_at)
            .to_std()
            .unwrap_or_default();
        metrics().upload_duration.record(took.as_secs_f64(), &[]);
        Ok(file)
    }
}
