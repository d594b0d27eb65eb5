//! The client's public face: the calls that start transfers on a server connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use transfer_proto::v1::{
    AbortUploadRequest, CheckUploadRequest, FileInfo, GetFileRequest, check_upload_response,
};

use crate::config::ClientConfig;
use crate::connection::{RawClient, ServerConnection};
use crate::download::{DownloadedFile, download};
use crate::error::TransferError;
use crate::progress::TransferHandle;
use crate::source::{ChunkSource, FileSource, head_md5_of, md5_of};
use crate::upload::{UploadedFile, upload};

/// A client of one Transfer server. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct TransferClient {
    server: ServerConnection,
}

/// What aborting the upload of a local file did.
#[derive(Debug, Clone, PartialEq)]
pub enum AbortOutcome {
    /// The open session was aborted.
    Aborted { upload_id: String },
    /// No upload of this content was in progress.
    NothingInProgress,
    /// The content is already stored: there was nothing to abort.
    AlreadyStored(FileInfo),
}

impl TransferClient {
    /// A client for `config.endpoint`. Connects on first use, and reconnects by itself.
    pub fn new(config: ClientConfig) -> Result<Self, TransferError> {
        Ok(Self {
            server: ServerConnection::new(config)?,
        })
    }

    /// The generated client, for calls the high-level API does not cover.
    pub fn raw(&self) -> RawClient {
        self.server.raw()
    }

    pub fn config(&self) -> &ClientConfig {
        self.server.config()
    }

    /// Uploads a local file. The handle reports progress and takes pause, resume, cancel.
    pub fn upload_path(&self, path: impl AsRef<Path>) -> TransferHandle<UploadedFile> {
        self.spawn_upload(path.as_ref().to_owned(), None)
    }

    /// Starts uploading `path`, once a slot of `slots` (if any) is free.
    pub(crate) fn spawn_upload(
        &self,
        path: PathBuf,
        slots: Option<Arc<Semaphore>>,
    ) -> TransferHandle<UploadedFile> {
        let server = self.server.clone();
        TransferHandle::spawn(path.display().to_string(), move |reporter| async move {
            let source = FileSource::open(&path).map_err(|source| TransferError::Read {
                file: path.display().to_string(),
                source,
            })?;
            upload(server, upload_name(&path), source, reporter, slots).await
        })
    }

    /// Uploads any source of known size under `name`.
    pub fn upload_source(
        &self,
        name: impl Into<String>,
        source: impl ChunkSource,
    ) -> TransferHandle<UploadedFile> {
        let name = name.into();
        let server = self.server.clone();
        TransferHandle::spawn(name.clone(), move |reporter| {
            upload(server, name, source, reporter, None)
        })
    }

    /// Uploads what an async reader yields, `size` bytes, under `name`. The reader need
    /// not seek: its bytes are first copied to a temporary file (chunks may have to be
    /// sent again, and MD5 needs the whole content first), so memory stays bounded.
    /// Exactly `size` bytes are read; a reader that ends sooner fails the upload.
    pub fn upload_reader(
        &self,
        name: impl Into<String>,
        size: u64,
        reader: impl AsyncRead + Unpin + Send + 'static,
    ) -> TransferHandle<UploadedFile> {
        let name = name.into();
        let server = self.server.clone();
        TransferHandle::spawn(name.clone(), move |mut reporter| async move {
            // Spooling can take as long as the reader does: cancel must still work.
            let label = name.clone();
            let spooling = spool(&label, size, reader);
            tokio::pin!(spooling);
            let spool = loop {
                tokio::select! {
                    spooled = &mut spooling => break spooled?,
                    command = reporter.command_changed() => if command == crate::progress::Command::Cancel {
                        return Err(TransferError::Cancelled { file: name.clone() });
                    },
                }
            };
            let source = FileSource::open(spool.path()).map_err(|source| TransferError::Read {
                file: name.clone(),
                source,
            })?;
            upload(server, name, source, reporter, None).await
        })
    }

    /// Downloads a file into `dest`, resuming from `<dest>.part` if an earlier run left one.
    pub fn download(
        &self,
        file_id: impl Into<String>,
        dest: impl AsRef<Path>,
    ) -> TransferHandle<DownloadedFile> {
        self.spawn_download(file_id.into(), dest.as_ref().to_owned(), None)
    }

    /// Starts downloading, once a slot of `slots` (if any) is free.
    pub(crate) fn spawn_download(
        &self,
        file_id: String,
        dest: PathBuf,
        slots: Option<Arc<Semaphore>>,
    ) -> TransferHandle<DownloadedFile> {
        let server = self.server.clone();
        TransferHandle::spawn(dest.display().to_string(), move |reporter| {
            download(server, file_id, dest, reporter, slots)
        })
    }

    /// A file's metadata.
    pub async fn stat(&self, file_id: &str) -> Result<FileInfo, TransferError> {
        let response = self
            .raw()
            .get_file(GetFileRequest {
                file_id: file_id.to_owned(),
            })
            .await
            .map_err(|s| TransferError::refused(file_id, &s))?;
        response
            .into_inner()
            .file
            .ok_or_else(|| TransferError::protocol(file_id, "GetFile answered without a file"))
    }

    /// Aborts the server's open upload session for a local file (found by its content).
    pub async fn abort_path(&self, path: impl AsRef<Path>) -> Result<AbortOutcome, TransferError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let read_error = |source| TransferError::Read {
            file: file.clone(),
            source,
        };
        let source = FileSource::open(path).map_err(read_error)?;
        let head_md5 = head_md5_of(&source).await.map_err(read_error)?;
        let ask = |md5: Option<[u8; 16]>| CheckUploadRequest {
            name: upload_name(path),
            size: source.size(),
            md5: md5.map(|m| m.to_vec()).unwrap_or_default().into(),
            preferred_chunk_size: self.config().chunk_size,
            head_md5: head_md5.to_vec().into(),
            ..Default::default()
        };
        let refused = |s: tonic::Status| TransferError::refused(&file, &s);
        // A single-pass upload in progress is found by the probe; one that hashed first,
        // by the MD5.
        let probe = self.raw().check_upload(ask(None)).await.map_err(refused)?;
        if let Some(check_upload_response::Result::Session(session)) = probe.into_inner().result {
            // Asking opened a session if none was in progress: abort it either way.
            self.raw()
                .abort_upload(AbortUploadRequest {
                    upload_id: session.upload_id.clone(),
                })
                .await
                .map_err(refused)?;
            if session.resumed {
                return Ok(AbortOutcome::Aborted {
                    upload_id: session.upload_id,
                });
            }
        }
        let md5 = md5_of(&source, |_| {}).await.map_err(read_error)?;
        let check = self
            .raw()
            .check_upload(ask(Some(md5)))
            .await
            .map_err(refused)?;
        match check.into_inner().result {
            Some(check_upload_response::Result::AlreadyStored(info)) => {
                Ok(AbortOutcome::AlreadyStored(info))
            }
            Some(check_upload_response::Result::Session(session)) => {
                // Asking opened a session if none was in progress: abort it either way.
                self.raw()
                    .abort_upload(AbortUploadRequest {
                        upload_id: session.upload_id.clone(),
                    })
                    .await
                    .map_err(|s| TransferError::refused(&file, &s))?;
                Ok(if session.resumed {
                    AbortOutcome::Aborted {
                        upload_id: session.upload_id,
                    }
                } else {
                    AbortOutcome::NothingInProgress
                })
            }
            Some(check_upload_response::Result::MaybeStored(_)) => Err(TransferError::protocol(
                &file,
                "`maybe_stored` for a request with the MD5",
            )),
            Some(check_upload_response::Result::Challenge(_)) => Err(TransferError::protocol(
                &file,
                "a possession challenge that was not asked for",
            )),
            None => Err(TransferError::protocol(
                &file,
                "CheckUpload answered nothing",
            )),
        }
    }
}

/// Copies exactly `size` bytes of a reader into a temporary file, removed when dropped.
/// It does not wait for the reader to end after them: a pipe may stay open.
async fn spool(
    name: &str,
    size: u64,
    mut reader: impl AsyncRead + Unpin,
) -> Result<tempfile::NamedTempFile, TransferError> {
    let read_error = |source| TransferError::Read {
        file: name.to_owned(),
        source,
    };
    let spool = tempfile::NamedTempFile::new().map_err(read_error)?;
    let mut file = tokio::fs::File::from_std(spool.reopen().map_err(read_error)?);
    let copied = tokio::io::copy(&mut (&mut reader).take(size), &mut file)
        .await
        .map_err(read_error)?;
    file.flush().await.map_err(read_error)?;
    if copied != size {
        return Err(TransferError::SourceChanged {
            file: name.to_owned(),
        });
    }
    Ok(spool)
}

/// The name a local file is uploaded under: its file name.
fn upload_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}
