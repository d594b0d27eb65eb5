//! [`BlobStore`] on a local filesystem.
//!
//! Layout under the root directory:
//! - `staging/<upload uuid>`: an upload in progress, written part by part at offsets;
//! - `content/<first two hex digits of md5>/<md5 hex>-<size>`: complete content.
//!
//! Only server-made ids and digests become file names. Blocking file I/O runs on
//! Tokio's blocking pool.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use uuid::Uuid;

use super::{BlobError, BlobStore, ContentKey, Part};
use transfer_wire::aligned;

pub struct FsBlobStore {
    staging: PathBuf,
    content: PathBuf,
}

impl FsBlobStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: &Path) -> Result<Self, BlobError> {
        let staging = root.join("staging");
        let content = root.join("content");
        for dir in [&staging, &content] {
            fs::create_dir_all(dir).map_err(io("creating the storage directories"))?;
        }
        Ok(Self { staging, content })
    }

    fn staging_path(&self, upload: Uuid) -> PathBuf {
        self.staging.join(upload.as_simple().to_string())
    }

    fn content_dir(&self, key: &ContentKey) -> PathBuf {
        self.content.join(hex::encode([key.fan_out()]))
    }

    fn content_path(&self, key: &ContentKey) -> PathBuf {
        self.content_dir(key).join(key.to_string())
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

fn open_staged(path: &Path, upload: Uuid, write: bool) -> Result<File, BlobError> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .open(path)
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound => BlobError::UploadNotFound(upload),
            _ => BlobError::Io {
                action: "opening a staged upload",
                source: e,
            },
        })
}

/// Offset, length and memory alignment direct I/O needs (the common logical block size).
const DIRECT_ALIGN: usize = aligned::ALIGN;

/// Opens a staged upload for direct (`O_DIRECT`) writes.
fn open_direct(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

/// Opens complete content for direct (`O_DIRECT`) reads: stored content was written
/// around the page cache, so a buffered read would fetch it from disk into the cache
/// and then copy it, costing several times the CPU of a direct read
/// (figures: BENCHMARKS.md, "Measurements behind choices in the code").
fn open_direct_read(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

/// Reads `len` bytes at `offset` from a file opened with `O_DIRECT`: the aligned blocks
/// around them, into an aligned buffer, of which the wanted bytes are a slice.
fn read_direct(file: &File, offset: u64, len: usize) -> std::io::Result<Bytes> {
    let first = offset - offset % DIRECT_ALIGN as u64;
    let skip = (offset - first) as usize;
    let span = (skip + len).next_multiple_of(DIRECT_ALIGN);
    aligned::read_aligned(span, skip, len, |buffer| {
        let mut done = 0;
        while done < buffer.len() {
            match file.read_at(&mut buffer[done..], first + done as u64) {
                Ok(0) => break,
                Ok(n) => {
                    done += n;
                    // A read that ends off a block boundary ended at the end of the file.
                    if done % DIRECT_ALIGN != 0 {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    })
}

fn read_at(file: &File, offset: u64, len: usize, size: u64) -> Result<Bytes, BlobError> {
    if offset.checked_add(len as u64).is_none_or(|end| end > size) {
        return Err(BlobError::OutOfBounds {
            offset,
            len: len as u64,
            size,
        });
    }
    let mut buf = BytesMut::zeroed(len);
    file.read_exact_at(&mut buf, offset)
        .map_err(io("reading stored bytes"))?;
    Ok(buf.freeze())
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn begin(&self, upload: Uuid, size: u64) -> Result<(), BlobError> {
        let path = self.staging_path(upload);
        let dir = self.staging.clone();
        blocking(move || {
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io("creating a staged upload"))?;
            if file.metadata().map_err(io("reading staged size"))?.len() != size {
                file.set_len(size).map_err(io("sizing a staged upload"))?;
            }
            file.sync_all().map_err(io("syncing a staged upload"))?;
            sync_dir(&dir)
        })
        .await
    }

    async fn put_parts(&self, upload: Uuid, parts: &[Part]) -> Result<(), BlobError> {
        let path = self.staging_path(upload);
        let parts = parts.to_vec();
        blocking(move || {
            let file = open_staged(&path, upload, true)?;
            // Direct I/O skips copying every byte into the page cache (the costliest
            // thing the server did per byte after MD5); where the filesystem refuses it,
            // or for a part's unaligned tail, writes go through the cache.
            let mut direct = open_direct(&path).ok();
            for part in &parts {
                let direct_len = match &direct {
                    Some(file) if part.offset % DIRECT_ALIGN as u64 == 0 => {
                        let len = part.data.len() / DIRECT_ALIGN * DIRECT_ALIGN;
                        // The stream hands over aligned chunks; anyone else's are copied.
                        let copy;
                        let buf = if aligned::is_aligned(&part.data) {
                            &part.data[..len]
                        } else {
                            copy = aligned::copy_aligned(&part.data[..len]);
                            &copy[..]
                        };
                        match file.write_all_at(buf, part.offset) {
                            Ok(()) => len,
                            // Some filesystems open with O_DIRECT but refuse the writes
                            // (or this block size): write through the cache instead.
                            Err(e) if e.kind() == ErrorKind::InvalidInput => {
                                direct = None;
                                0
                            }
                            Err(e) => return Err(io("writing a part")(e)),
                        }
                    }
                    _ => 0,
                };
                if direct_len < part.data.len() {
                    file.write_all_at(&part.data[direct_len..], part.offset + direct_len as u64)
                        .map_err(io("writing a part"))?;
                }
            }
            // One sync for the whole batch: the parts are durable before anyone acks them
            // (direct writes may still sit in the device's cache until then).
            file.sync_data().map_err(io("syncing written parts"))
        })
        .await
    }

    async fn read_staged(&self, upload: Uuid, offset: u64, len: usize) -> Result<Bytes, BlobError> {
        let path = self.staging_path(upload);
        blocking(move || {
            let file = open_staged(&path, upload, false)?;
            let size = file.metadata().map_err(io("reading staged size"))?.len();
            read_at(&file, offset, len, size)
        })
        .await
    }

    async fn complete(&self, upload: Uuid, key: &ContentKey) -> Result<(), BlobError> {
        let staged = self.staging_path(upload);
        let staging_dir = self.staging.clone();
        let content_root = self.content.clone();
        let dir = self.content_dir(key);
        let target = self.content_path(key);
        blocking(move || {
            let file = open_staged(&staged, upload, false)?;
            file.sync_all().map_err(io("syncing a staged upload"))?;
            drop(file);
            if !dir.exists() {
                fs::create_dir_all(&dir).map_err(io("creating a content directory"))?;
                sync_dir(&content_root)?;
            }
            if target.exists() {
                // The same content was completed by another upload: keep one copy.
                fs::remove_file(&staged).map_err(io("removing a duplicate upload"))?;
            } else {
                fs::rename(&staged, &target).map_err(io("moving an upload into place"))?;
            }
            // Synced either way: whether the content was there already must not show
            // in how long completing takes.
            sync_dir(&dir)?;
            sync_dir(&staging_dir)
        })
        .await
    }

    async fn abort(&self, upload: Uuid) -> Result<(), BlobError> {
        let path = self.staging_path(upload);
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

    async fn list_staged(&self) -> Result<Vec<Uuid>, BlobError> {
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
                    staged.push(id);
                }
            }
            Ok(staged)
        })
        .await
    }

    async fn content_exists(&self, key: &ContentKey) -> Result<bool, BlobError> {
        let path = self.content_path(key);
        blocking(move || path.try_exists().map_err(io("looking up content"))).await
    }

    async fn read(&self, key: &ContentKey, offset: u64, len: usize) -> Result<Bytes, BlobError> {
        let path = self.content_path(key);
        let key = *key;
        blocking(move || {
            let not_found = |e: std::io::Error| match e.kind() {
                ErrorKind::NotFound => BlobError::ContentNotFound(key),
                _ => BlobError::Io {
                    action: "opening content",
                    source: e,
                },
            };
            if offset
                .checked_add(len as u64)
                .is_none_or(|end| end > key.size())
            {
                return Err(BlobError::OutOfBounds {
                    offset,
                    len: len as u64,
                    size: key.size(),
                });
            }
            match open_direct_read(&path) {
                Ok(file) => match read_direct(&file, offset, len) {
                    Ok(bytes) => return Ok(bytes),
                    // The filesystem refused direct I/O after all: read through the cache.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                    Err(e) => return Err(io("reading stored bytes")(e)),
                },
                Err(e) if e.kind() == ErrorKind::NotFound => return Err(not_found(e)),
                Err(_) => {}
            }
            let file = File::open(&path).map_err(not_found)?;
            read_at(&file, offset, len, key.size())
        })
        .await
    }
}
