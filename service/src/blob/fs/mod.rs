//! [`BlobStore`] on a local filesystem.
//!
//! Layout under the root directory, which is also what handles and locators say:
//! - `staging/<upload uuid>`: an upload in progress, written part by part at offsets
//!   (its handle is this path);
//! - `content/<first two hex digits of the upload uuid>/u-<upload uuid>`: complete
//!   content, each completed upload under its own name (its locator is this path; the
//!   ledger decides which copy of a content stays). Content completed before uploads
//!   were named so is at `content/<xx>/b3-<BLAKE3 hex>-<size>` or, before BLAKE3 named
//!   content, `content/<xx>/<MD5 hex>-<size>` (`xx`: the digest's first two).
//!
//! Only names this store made are accepted back, so only server-made ids and digests
//! become file names. Receipts carry nothing: parts are written in place. Blocking file
//! I/O runs on Tokio's blocking pool.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use uuid::Uuid;

mod read;
mod space;

use super::names::{content_name, upload_content_locator};
use super::{BlobError, BlobStore, ContentLocator, Part, PartReceipt, StagedUpload, UploadHandle};
use read::{open_direct_read, read_at, read_direct};
use transfer_shared::direct_write::DirectWriter;
use transfer_wire::aligned::BufferPool;

pub struct FsBlobStore {
    /// The store's directory: where a full disk is reported, and free space measured.
    root: PathBuf,
    staging: PathBuf,
    content: PathBuf,
    /// Where content read back with direct I/O, and parts copied to align them, go.
    buffers: Arc<BufferPool>,
}

impl FsBlobStore {
    /// Opens (creating if needed) a store rooted at `root`, reading into buffers of
    /// `buffers`.
    pub fn open(root: &Path, buffers: Arc<BufferPool>) -> Result<Self, BlobError> {
        let staging = root.join("staging");
        let content = root.join("content");
        for dir in [&staging, &content] {
            fs::create_dir_all(dir).map_err(io("creating the storage directories"))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
            staging,
            content,
            buffers,
        })
    }

    fn handle(upload: Uuid) -> UploadHandle {
        UploadHandle::new(format!("staging/{}", upload.as_simple()))
    }

    /// The upload a handle names, if this store made the handle.
    fn upload_of(handle: &UploadHandle) -> Result<Uuid, BlobError> {
        handle
            .as_str()
            .strip_prefix("staging/")
            .and_then(|id| Uuid::try_parse(id).ok())
            .filter(|upload| Self::handle(*upload) == *handle)
            .ok_or_else(|| BlobError::ForeignName(handle.to_string()))
    }

    /// The staging file a handle names, if this store made the handle.
    fn staging_path(&self, handle: &UploadHandle) -> Result<PathBuf, BlobError> {
        let upload = Self::upload_of(handle)?;
        Ok(self.staging.join(upload.as_simple().to_string()))
    }

    /// Where the content of upload `upload` goes when it completes.
    fn locator(upload: Uuid) -> ContentLocator {
        upload_content_locator(upload)
    }

    /// The content file a locator names, if this store made the locator (by the upload,
    /// or, as it once did, by the content's BLAKE3 or MD5).
    fn content_path(&self, locator: &ContentLocator) -> Result<PathBuf, BlobError> {
        let (fan_out, name) =
            content_name(locator).ok_or_else(|| BlobError::ForeignName(locator.to_string()))?;
        Ok(self.content.join(fan_out).join(name))
    }
}

fn io(action: &'static str) -> impl FnOnce(std::io::Error) -> BlobError {
    move |source| BlobError::Io { action, source }
}

/// Runs blocking file work off the async runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, BlobError> + Send + 'static,
) -> Result<T, BlobError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| BlobError::Io {
            action: "running a storage task",
            source: std::io::Error::other(e),
        })?
}

/// Makes a directory entry (a created or renamed file) durable.
fn sync_dir(dir: &Path) -> Result<(), BlobError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing a directory"))
}

fn open_staged(path: &Path, upload: &UploadHandle, write: bool) -> Result<File, BlobError> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .open(path)
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound => BlobError::UploadNotFound(upload.clone()),
            _ => BlobError::Io {
                action: "opening a staged upload",
                source: e,
            },
        })
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn free_space(&self) -> Result<Option<u64>, BlobError> {
        let root = self.root.clone();
        blocking(move || space::free_space(&root).map_err(io("measuring free space")))
            .await
            .map(Some)
    }

    async fn begin(&self, upload: Uuid, size: u64) -> Result<UploadHandle, BlobError> {
        let handle = Self::handle(upload);
        let path = self.staging_path(&handle)?;
        let dir = self.staging.clone();
        blocking(move || {
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io("creating a staged upload"))?;
            if file.metadata().map_err(io("reading staged size"))?.len() != size {
                // The whole upload's space now, so a full disk refuses it here rather
                // than part way through.
                if let Err(error) = space::reserve(&file, size) {
                    drop(file);
                    let _ = fs::remove_file(&path);
                    return Err(io("reserving space for a staged upload")(error));
                }
            }
            file.sync_all().map_err(io("syncing a staged upload"))?;
            sync_dir(&dir)
        })
        .await
        .map_err(|e| space::full_disk_told(e, &self.root, Some(size)))?;
        Ok(handle)
    }

    async fn put_parts(
        &self,
        upload: &UploadHandle,
        parts: &[Part],
    ) -> Result<Vec<PartReceipt>, BlobError> {
        let path = self.staging_path(upload)?;
        let needed = parts.iter().map(|p| p.data.len() as u64).sum();
        let receipts = parts
            .iter()
            .map(|part| PartReceipt {
                index: part.index,
                tag: None,
            })
            .collect();
        let parts = parts.to_vec();
        let upload = upload.clone();
        let buffers = Arc::clone(&self.buffers);
        blocking(move || {
            // Direct I/O skips copying every byte into the page cache (the costliest
            // thing the server did per byte after MD5); where the filesystem refuses it,
            // or for a part's unaligned tail, writes go through the cache.
            let mut writer = DirectWriter::new(open_staged(&path, &upload, true)?, &path, buffers);
            for part in &parts {
                writer
                    .write_at(&part.data, part.offset)
                    .map_err(io("writing a part"))?;
            }
            // One sync for the whole batch: the parts are durable before anyone acks them
            // (direct writes may still sit in the device's cache until then).
            writer
                .file()
                .sync_data()
                .map_err(io("syncing written parts"))
        })
        .await
        .map_err(|e| space::full_disk_told(e, &self.root, Some(needed)))?;
        Ok(receipts)
    }

    async fn read_staged(
        &self,
        upload: &UploadHandle,
        offset: u64,
        len: usize,
    ) -> Result<Bytes, BlobError> {
        let path = self.staging_path(upload)?;
        let upload = upload.clone();
        blocking(move || {
            let file = open_staged(&path, &upload, false)?;
            let size = file.metadata().map_err(io("reading staged size"))?.len();
            read_at(&file, offset, len, size)
        })
        .await
    }

    async fn complete(
        &self,
        upload: &UploadHandle,
        _parts: &[PartReceipt],
    ) -> Result<ContentLocator, BlobError> {
        let staged = self.staging_path(upload)?;
        let id = Self::upload_of(upload)?;
        let staging_dir = self.staging.clone();
        let content_root = self.content.clone();
        let locator = Self::locator(id);
        let target = self.content_path(&locator)?;
        // The fan-out directory the locator names.
        let dir = target
            .parent()
            .map_or_else(|| content_root.clone(), Path::to_path_buf);
        let upload = upload.clone();
        blocking(move || {
            let file = match open_staged(&staged, &upload, false) {
                Ok(file) => file,
                // Completed before: the staging moved into place.
                Err(BlobError::UploadNotFound(_))
                    if target.try_exists().map_err(io("looking up content"))? =>
                {
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            file.sync_all().map_err(io("syncing a staged upload"))?;
            drop(file);
            if !dir.exists() {
                fs::create_dir_all(&dir).map_err(io("creating a content directory"))?;
                sync_dir(&content_root)?;
            }
            fs::rename(&staged, &target).map_err(io("moving an upload into place"))?;
            sync_dir(&dir)?;
            sync_dir(&staging_dir)
        })
        .await
        .map_err(|e| space::full_disk_told(e, &self.root, None))?;
        Ok(locator)
    }

    async fn delete(&self, content: &ContentLocator) -> Result<(), BlobError> {
        let path = self.content_path(content)?;
        blocking(move || {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(io("deleting content")(e)),
            }
            match path.parent() {
                Some(dir) => sync_dir(dir),
                None => Ok(()),
            }
        })
        .await
    }

    async fn abort(&self, upload: &UploadHandle) -> Result<(), BlobError> {
        let path = self.staging_path(upload)?;
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BlobError::Io {
                action: "removing a staged upload",
                source: e,
            }),
        })
        .await
    }

    async fn list_staged(&self) -> Result<Vec<StagedUpload>, BlobError> {
        let dir = self.staging.clone();
        blocking(move || {
            let mut staged = Vec::new();
            for entry in fs::read_dir(&dir).map_err(io("listing staged uploads"))? {
                let entry = entry.map_err(io("listing staged uploads"))?;
                // Anything not named by an upload id is not ours: leave it alone.
                if let Some(id) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| Uuid::try_parse(n).ok())
                {
                    staged.push(StagedUpload {
                        upload: id,
                        handle: Self::handle(id),
                    });
                }
            }
            Ok(staged)
        })
        .await
    }

    async fn read(
        &self,
        content: &ContentLocator,
        offset: u64,
        len: usize,
    ) -> Result<Bytes, BlobError> {
        let path = self.content_path(content)?;
        let content = content.clone();
        let buffers = Arc::clone(&self.buffers);
        blocking(move || {
            let not_found = |e: std::io::Error| match e.kind() {
                ErrorKind::NotFound => BlobError::ContentNotFound(content.clone()),
                _ => BlobError::Io {
                    action: "opening content",
                    source: e,
                },
            };
            let in_bounds = |file: &File| {
                let size = file.metadata().map_err(io("reading content size"))?.len();
                if offset.checked_add(len as u64).is_none_or(|end| end > size) {
                    return Err(BlobError::OutOfBounds {
                        offset,
                        len: len as u64,
                        size,
                    });
                }
                Ok(size)
            };
            match open_direct_read(&path) {
                Ok(file) => {
                    in_bounds(&file)?;
                    match read_direct(&buffers, &file, offset, len) {
                        Ok(bytes) => return Ok(bytes),
                        // The filesystem refused direct I/O after all: read through the
                        // cache.
                        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                        Err(e) => return Err(io("reading stored bytes")(e)),
                    }
                }
                Err(e) if e.kind() == ErrorKind::NotFound => return Err(not_found(e)),
                Err(_) => {}
            }
            let file = File::open(&path).map_err(not_found)?;
            let size = in_bounds(&file)?;
            read_at(&file, offset, len, size)
        })
        .await
    }
}
