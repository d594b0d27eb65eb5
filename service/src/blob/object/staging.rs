//! The staging markers of an object store's uploads: `staging/<upload>/<tag>`, each
//! holding one multipart upload's id, written just after it is created and deleted
//! just after it is completed or aborted. `object_store` cannot list multipart uploads;
//! the markers make them listable, and tell every server's "no such upload" alike.

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use uuid::Uuid;

use super::{ObjectBlobStore, failed};
use crate::blob::{BlobError, StagedUpload, UploadHandle};

impl ObjectBlobStore {
    pub(super) fn staging_dir(&self) -> Path {
        self.prefix.clone().join("staging")
    }

    /// The marker of multipart upload `multipart` of upload `upload`.
    pub(super) fn marker_key(&self, upload: Uuid, multipart: &str) -> Path {
        self.staging_dir()
            .join(upload.as_simple().to_string())
            .join(marker_tag(multipart))
    }

    /// Whether a multipart upload is still open, by its marker: written just after the
    /// multipart upload was created and deleted just after it was completed or aborted.
    /// (Servers differ on what a call on a finished multipart upload gets: 404, 500, or
    /// for the in-memory store a generic error; the marker says the same everywhere.)
    pub(super) async fn is_staged(&self, upload: Uuid, multipart: &str) -> Result<bool, BlobError> {
        match self.store.head(&self.marker_key(upload, multipart)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(error) => Err(failed("reading a staging marker", error)),
        }
    }

    /// What a failed call on a multipart upload means: that it is no longer open (when
    /// its marker is gone), or the store's failure.
    pub(super) async fn failed_on_upload(
        &self,
        handle: &UploadHandle,
        (upload, multipart): (Uuid, &str),
        action: &'static str,
        error: object_store::Error,
    ) -> BlobError {
        if matches!(error, object_store::Error::NotFound { .. }) {
            return BlobError::UploadNotFound(handle.clone());
        }
        match self.is_staged(upload, multipart).await {
            Ok(false) => BlobError::UploadNotFound(handle.clone()),
            Ok(true) => failed(action, error),
            Err(unknown) => unknown,
        }
    }

    /// Aborts one multipart upload and drops its marker.
    pub(super) async fn abort_one(&self, upload: &UploadHandle) -> Result<(), BlobError> {
        let (id, multipart) = Self::parse_handle(upload)?;
        let aborted = self
            .store
            .abort_multipart(&self.upload_key(id), &multipart)
            .await;
        if let Err(error) = aborted {
            let action = "aborting a multipart upload";
            match self
                .failed_on_upload(upload, (id, &multipart), action, error)
                .await
            {
                // Aborted or completed before: nothing staged is left.
                BlobError::UploadNotFound(_) => {}
                failure => return Err(failure),
            }
        }
        self.drop_marker(id, &multipart).await
    }

    /// Aborts every multipart upload of upload `upload` still open: ones begun by a
    /// replica that died before the ledger kept its handle (another replica's then
    /// became the upload's), found by their markers and, where the bucket can list
    /// them, at the upload's key (a replica killed before it wrote the marker leaves one
    /// without). Called once the kept one completed or was aborted; what fails here
    /// stays for the start-up sweep.
    pub(super) async fn abort_others(&self, upload: Uuid) {
        self.abort_marked(upload).await;
        let Some(listing) = &self.listing else {
            return;
        };
        let key = self.upload_key(upload);
        let open = match listing.list_open(&key).await {
            Ok(open) => open,
            Err(error) => {
                tracing::warn!(%upload, %error, "could not list an upload's multipart uploads");
                return;
            }
        };
        for other in open.into_iter().filter(|open| open.key == key) {
            let handle = Self::handle(upload, &other.multipart);
            if let Err(error) = self.abort_one(&handle).await {
                tracing::warn!(%upload, %error, "could not abort an upload's other staging");
            }
        }
    }

    /// Unfinished multipart uploads at content keys that have no marker, where the
    /// bucket can list them.
    pub(super) async fn unmarked_uploads(&self) -> Result<Vec<StagedUpload>, BlobError> {
        let Some(listing) = &self.listing else {
            return Ok(Vec::new());
        };
        let content = self.prefix.clone().join("content");
        let open = listing.list_open(&content).await.map_err(|error| {
            tracing::warn!(%error, "object store: listing multipart uploads failed");
            BlobError::ObjectStore {
                action: "listing multipart uploads",
            }
        })?;
        Ok(open
            .into_iter()
            .filter_map(|open| {
                let upload = self.upload_of_key(&open.key)?;
                Some(StagedUpload {
                    upload,
                    handle: Self::handle(upload, &open.multipart),
                })
            })
            .collect())
    }

    /// Aborts the multipart uploads of `upload` that have a marker.
    async fn abort_marked(&self, upload: Uuid) {
        let dir = self.staging_dir().join(upload.as_simple().to_string());
        let keys: Result<Vec<Path>, _> = self
            .store
            .list(Some(&dir))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await;
        let keys = match keys {
            Ok(keys) => keys,
            Err(error) => {
                tracing::warn!(%upload, %error, "could not list an upload's other staging");
                return;
            }
        };
        for key in keys {
            let staged = match self.staged_upload(&key).await {
                Ok(Some(staged)) => staged,
                Ok(None) => continue,
                Err(error) => {
                    tracing::warn!(%upload, %error, "could not read a staging marker");
                    continue;
                }
            };
            if let Err(error) = self.abort_one(&staged.handle).await {
                tracing::warn!(%upload, %error, "could not abort an upload's other staging");
            }
        }
    }

    /// Deletes a marker; succeeds if there is none.
    pub(super) async fn drop_marker(&self, upload: Uuid, multipart: &str) -> Result<(), BlobError> {
        match self.store.delete(&self.marker_key(upload, multipart)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(failed("deleting a staging marker", error)),
        }
    }

    /// The staged upload a marker found by listing names, or `None` for a key this store
    /// did not make.
    pub(super) async fn staged_upload(
        &self,
        key: &Path,
    ) -> Result<Option<StagedUpload>, BlobError> {
        let mut parts = key.parts().map(|part| part.as_ref().to_owned());
        let (Some(tag), Some(id)) = (parts.next_back(), parts.next_back()) else {
            return Ok(None);
        };
        let Some(upload) = Uuid::try_parse(&id)
            .ok()
            .filter(|upload| upload.as_simple().to_string() == id)
        else {
            return Ok(None);
        };
        let body = match self.store.get(key).await {
            Ok(found) => found
                .bytes()
                .await
                .map_err(|e| failed("reading a staging marker", e))?,
            // Completed or aborted since it was listed.
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(failed("reading a staging marker", error)),
        };
        let Ok(multipart) = String::from_utf8(body.to_vec()) else {
            return Ok(None);
        };
        if marker_tag(&multipart) != tag {
            return Ok(None);
        }
        Ok(Some(StagedUpload {
            upload,
            handle: Self::handle(upload, &multipart),
        }))
    }
}

/// A short name derived from a multipart id (which may be long and need not be a
/// valid key segment).
fn marker_tag(multipart: &str) -> String {
    hex::encode(&blake3::hash(multipart.as_bytes()).as_bytes()[..8])
}
