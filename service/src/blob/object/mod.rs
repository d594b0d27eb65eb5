//! [`BlobStore`] on an object store (S3 and its compatibles; `object_store`'s in-memory
//! store in tests), through its multipart upload API.
//!
//! Keys under the store's prefix:
//! - `content/<first two hex digits of the upload uuid>/u-<upload uuid>`: complete
//!   content, made by completing the upload's multipart upload at that key (no copy, no
//!   rename). The locator is this name, as on the filesystem store, whose older names
//!   (`content/<xx>/b3-...`, `content/<xx>/<MD5>-<size>`) are read here too, so that a
//!   single node's `content/` tree copied into the bucket serves as it did.
//! - `staging/<upload uuid>/<tag>`: a marker while an upload is in progress, holding its
//!   multipart id, so staging can be listed and swept (`object_store` cannot list
//!   multipart uploads). `<tag>` is derived from the multipart id, so each multipart
//!   upload of one upload has its own marker.
//!
//! Handles are `mp/<upload uuid>/<multipart id>`. Receipts carry each part's ETag, which
//! `complete` needs back in index order: the parts are never listed from the server (one
//! server lists stale versions of a re-put part, and completing from those assembles
//! stale bytes without a word). An unfinished upload cannot be read back
//! ([`BlobStore::reads_staged`] is false).

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload};
use uuid::Uuid;

use super::names::{content_name, upload_content_locator};
use super::{
    BlobError, BlobStore, ContentLocator, Part, PartReceipt, PartRules, StagedUpload, UploadHandle,
};

mod claim;
mod listing;
mod s3;
mod staging;

pub use listing::{MultipartListing, S3MultipartListing};
pub use s3::{S3ConfigError, S3Settings, open_s3, use_ring_for_tls};

/// An object store with multipart uploads (S3, the in-memory store).
pub trait MultipartObjectStore: ObjectStore + MultipartStore {}

impl<T: ObjectStore + MultipartStore> MultipartObjectStore for T {}

pub struct ObjectBlobStore {
    store: Arc<dyn MultipartObjectStore>,
    /// Every key this store makes is under it.
    prefix: Path,
    rules: PartRules,
    /// The bucket's own list of unfinished multipart uploads, where the store has one
    /// (S3): it finds those begun without a staging marker.
    listing: Option<Arc<dyn MultipartListing>>,
}

impl ObjectBlobStore {
    /// A blob store keeping its objects under `prefix` of `store`, whose multipart
    /// uploads take parts by `rules`.
    pub fn new(store: Arc<dyn MultipartObjectStore>, prefix: Path, rules: PartRules) -> Self {
        Self {
            store,
            prefix,
            rules,
            listing: None,
        }
    }

    /// Also finds unfinished multipart uploads by listing them (see [`MultipartListing`]).
    pub fn with_listing(mut self, listing: Arc<dyn MultipartListing>) -> Self {
        self.listing = Some(listing);
        self
    }

    fn handle(upload: Uuid, multipart: &str) -> UploadHandle {
        UploadHandle::new(format!("mp/{}/{multipart}", upload.as_simple()))
    }

    /// The upload and multipart id a handle names, if this store made the handle.
    fn parse_handle(handle: &UploadHandle) -> Result<(Uuid, String), BlobError> {
        let foreign = || BlobError::ForeignName(handle.to_string());
        let rest = handle.as_str().strip_prefix("mp/").ok_or_else(foreign)?;
        let (id, multipart) = rest.split_once('/').ok_or_else(foreign)?;
        let upload = Uuid::try_parse(id).map_err(|_| foreign())?;
        let well_formed = id == upload.as_simple().to_string()
            && !multipart.is_empty()
            && !multipart.chars().any(char::is_control);
        if !well_formed {
            return Err(foreign());
        }
        Ok((upload, multipart.to_owned()))
    }

    fn locator(upload: Uuid) -> ContentLocator {
        upload_content_locator(upload)
    }

    /// The key of the content a locator names, if it is a store's locator (content
    /// copied here from a filesystem store keeps its names, older ones included).
    fn content_key(&self, locator: &ContentLocator) -> Result<Path, BlobError> {
        let (fan_out, name) =
            content_name(locator).ok_or_else(|| BlobError::ForeignName(locator.to_string()))?;
        Ok(self.prefix.clone().join("content").join(fan_out).join(name))
    }

    /// Where upload `upload`'s content is, once complete.
    fn upload_key(&self, upload: Uuid) -> Path {
        let id = upload.as_simple().to_string();
        self.prefix
            .clone()
            .join("content")
            .join(&id[..2])
            .join(format!("u-{id}"))
    }

    /// The upload whose content key `key` is, if it is one.
    fn upload_of_key(&self, key: &Path) -> Option<Uuid> {
        let name = key.filename()?;
        let upload = Uuid::try_parse(name.strip_prefix("u-")?).ok()?;
        (self.upload_key(upload) == *key).then_some(upload)
    }

    /// The size of the object at `key`, or what went wrong asking.
    async fn size_of(&self, key: &Path, missing: BlobError) -> Result<u64, BlobError> {
        match self.store.head(key).await {
            Ok(meta) => Ok(meta.size),
            Err(object_store::Error::NotFound { .. }) => Err(missing),
            Err(error) => Err(failed("reading content metadata", error)),
        }
    }
}

/// An object store error, logged here with what it says (endpoints, keys), told to
/// clients only as the action that failed.
pub(super) fn failed(action: &'static str, error: object_store::Error) -> BlobError {
    tracing::warn!(%error, "object store: {action} failed");
    BlobError::ObjectStore { action }
}

#[async_trait]
impl BlobStore for ObjectBlobStore {
    async fn free_space(&self) -> Result<Option<u64>, BlobError> {
        Ok(None)
    }

    fn part_rules(&self) -> PartRules {
        self.rules
    }

    fn reads_staged(&self) -> bool {
        false
    }

    fn read_size(&self) -> usize {
        8 << 20
    }

    async fn begin(&self, upload: Uuid, _size: u64) -> Result<UploadHandle, BlobError> {
        let multipart = self
            .store
            .create_multipart(&self.upload_key(upload))
            .await
            .map_err(|e| failed("creating a multipart upload", e))?;
        let marker = self.marker_key(upload, &multipart);
        if let Err(error) = self.store.put(&marker, multipart.clone().into()).await {
            let _ = self
                .store
                .abort_multipart(&self.upload_key(upload), &multipart)
                .await;
            return Err(failed("writing a staging marker", error));
        }
        Ok(Self::handle(upload, &multipart))
    }

    async fn put_parts(
        &self,
        upload: &UploadHandle,
        parts: &[Part],
    ) -> Result<Vec<PartReceipt>, BlobError> {
        let (id, multipart) = Self::parse_handle(upload)?;
        let key = self.upload_key(id);
        let puts = parts.iter().map(|part| {
            let (key, multipart) = (&key, &multipart);
            async move {
                let index = usize::try_from(part.index)
                    .map_err(|_| BlobError::ForeignName(format!("part {}", part.index)))?;
                let payload = PutPayload::from(part.data.clone());
                match self.store.put_part(key, multipart, index, payload).await {
                    Ok(PartId { content_id }) => Ok(PartReceipt {
                        index: part.index,
                        tag: Some(content_id),
                    }),
                    Err(error) => Err(self
                        .failed_on_upload(upload, (id, multipart), "writing a part", error)
                        .await),
                }
            }
        });
        // All at once: each part is its own request.
        futures::future::try_join_all(puts).await
    }

    async fn read_staged(
        &self,
        _upload: &UploadHandle,
        _offset: u64,
        _len: usize,
    ) -> Result<Bytes, BlobError> {
        Err(BlobError::Unsupported(
            "reading back an unfinished multipart upload",
        ))
    }

    async fn complete(
        &self,
        upload: &UploadHandle,
        parts: &[PartReceipt],
    ) -> Result<ContentLocator, BlobError> {
        let (id, multipart) = Self::parse_handle(upload)?;
        let key = self.upload_key(id);
        let mut ids = Vec::with_capacity(parts.len());
        for (expected, part) in (0u64..).zip(parts) {
            match &part.tag {
                Some(tag) if part.index == expected => ids.push(PartId {
                    content_id: tag.clone(),
                }),
                _ => return Err(BlobError::PartMissing { index: expected }),
            }
        }
        let completed = if ids.is_empty() {
            // An empty file: a multipart upload needs at least one part.
            match self.store.put(&key, PutPayload::new()).await {
                Ok(_) => {
                    let _ = self.store.abort_multipart(&key, &multipart).await;
                    Ok(())
                }
                Err(error) => Err(error),
            }
        } else {
            self.store
                .complete_multipart(&key, &multipart, ids)
                .await
                .map(|_| ())
        };
        if let Err(error) = completed {
            // Completed before (by this process or another): the key is this upload's
            // alone, so content there is this upload's.
            match self.store.head(&key).await {
                Ok(_) => {}
                Err(object_store::Error::NotFound { .. }) => {
                    let action = "completing a multipart upload";
                    let at = (id, multipart.as_str());
                    return Err(self.failed_on_upload(upload, at, action, error).await);
                }
                Err(error) => return Err(failed("reading content metadata", error)),
            }
        }
        self.drop_marker(id, &multipart).await?;
        self.abort_others(id).await;
        Ok(Self::locator(id))
    }

    async fn delete(&self, content: &ContentLocator) -> Result<(), BlobError> {
        let key = self.content_key(content)?;
        match self.store.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(failed("deleting content", error)),
        }
    }

    async fn discard(&self, upload: &UploadHandle) -> Result<(), BlobError> {
        self.abort_one(upload).await
    }

    async fn abort(&self, upload: &UploadHandle) -> Result<(), BlobError> {
        self.abort_one(upload).await?;
        let (id, _) = Self::parse_handle(upload)?;
        self.abort_others(id).await;
        Ok(())
    }

    async fn list_staged(&self) -> Result<Vec<StagedUpload>, BlobError> {
        let keys: Vec<Path> = self
            .store
            .list(Some(&self.staging_dir()))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(|e| failed("listing staging markers", e))?;
        let mut staged = Vec::with_capacity(keys.len());
        for key in &keys {
            staged.extend(self.staged_upload(key).await?);
        }
        for unmarked in self.unmarked_uploads().await? {
            if !staged.contains(&unmarked) {
                staged.push(unmarked);
            }
        }
        Ok(staged)
    }

    async fn read(
        &self,
        content: &ContentLocator,
        offset: u64,
        len: usize,
    ) -> Result<Bytes, BlobError> {
        let key = self.content_key(content)?;
        let missing = || BlobError::ContentNotFound(content.clone());
        let end = offset.saturating_add(len as u64);
        let out_of_bounds = |size: u64| BlobError::OutOfBounds {
            offset,
            len: len as u64,
            size,
        };
        if len == 0 {
            let size = self.size_of(&key, missing()).await?;
            return if offset > size {
                Err(out_of_bounds(size))
            } else {
                Ok(Bytes::new())
            };
        }
        let range: Range<u64> = offset..end;
        let options = GetOptions {
            range: Some(GetRange::Bounded(range)),
            ..GetOptions::default()
        };
        match self.store.get_opts(&key, options).await {
            Ok(found) => {
                let size = found.meta.size;
                if end > size {
                    return Err(out_of_bounds(size));
                }
                let bytes = found
                    .bytes()
                    .await
                    .map_err(|e| failed("reading content", e))?;
                if bytes.len() != len {
                    return Err(BlobError::ObjectStore {
                        action: "reading content (short read)",
                    });
                }
                Ok(bytes)
            }
            Err(object_store::Error::NotFound { .. }) => Err(missing()),
            Err(error) => {
                // A range past the end is refused by some stores; say which it was.
                let size = self.size_of(&key, missing()).await?;
                if end > size {
                    Err(out_of_bounds(size))
                } else {
                    Err(failed("reading content", error))
                }
            }
        }
    }
}
