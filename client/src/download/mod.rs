//! Downloading: stream into `<dest>.part` from where an earlier run stopped (over
//! several connections on a long path, see [`receive`]), check every piece's CRC32C
//! and the whole file's MD5, then rename into place.

mod receive;

use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};

use futures::StreamExt;
use std::sync::Arc;
use tokio::fs::{File, OpenOptions};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use transfer_md5::Md5;

use tokio::sync::Semaphore;
use transfer_proto::v1::{DownloadRequest, FileInfo, FileState, download_response};

use crate::connection::ServerConnection;
use crate::error::TransferError;
use crate::hash_pipe::md5_pipe;
use crate::part_writer::PartWriter;
use crate::progress::{Command, Reporter, TransferState};
use crate::retry::{Ending, Interruption, Retrier};
use crate::slots::take_slot;
use receive::{Receiver, Receiving};

/// A finished download.
#[derive(Debug, Clone, PartialEq)]
pub struct DownloadedFile {
    pub file: FileInfo,
    pub path: PathBuf,
    /// Bytes that were already in `<dest>.part` when this download started.
    pub resumed_from: u64,
    /// The most connections it received over at once (see
    /// [`crate::ClientConfig::connections_per_file`]).
    pub connections: u32,
}

/// Where a download keeps its bytes until they are verified.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut part = dest.as_os_str().to_owned();
    part.push(".part");
    PathBuf::from(part)
}

/// The MD5 of the `.part` file's first `len` bytes.
struct PartHash {
    md5: Md5,
    len: u64,
}

struct Download<'a> {
    server: &'a ServerConnection,
    file_id: String,
    label: String,
    dest: PathBuf,
    part: PathBuf,
    hash: PartHash,
    /// The most connections received over at once.
    connections: u32,
}

pub(crate) async fn download(
    server: ServerConnection,
    file_id: String,
    dest: PathBuf,
    mut reporter: Reporter,
    slots: Option<Arc<Semaphore>>,
) -> Result<DownloadedFile, TransferError> {
    let part = part_path(&dest);
    let resumed_from = tokio::fs::metadata(&part).await.map_or(0, |m| m.len());
    let mut download = Download {
        server: &server,
        file_id,
        label: reporter.name(),
        dest,
        part,
        hash: PartHash {
            md5: Md5::new(),
            len: 0,
        },
        connections: 0,
    };
    let mut retrier = Retrier::new(&server.config().retry);
    let mut slot = None;
    loop {
        if reporter.command() != Command::Run {
            // A paused transfer gives its slot to a queued one.
            slot = None;
            if reporter.until_running().await.is_err() {
                return download.cancel().await;
            }
        }
        if slot.is_none() && slots.is_some() {
            slot = match take_slot(slots.as_ref(), &mut reporter).await {
                Ok(slot) => slot,
                Err(_) => return download.cancel().await,
            };
        }
        let had = download.hash.len;
        let interruption = match download.attempt(&mut reporter).await {
            Ok(file) => {
                return Ok(DownloadedFile {
                    file,
                    path: download.dest,
                    resumed_from,
                    connections: download.connections,
                });
            }
            Err(interruption) => interruption,
        };
        let progressed = download.hash.len > had;
        match retrier
            .after(interruption, progressed, &server, &mut reporter)
            .await
        {
            Ok(()) => {}
            Err(Ending::Cancelled) => return download.cancel().await,
            Err(Ending::Fatal(error)) => return Err(error),
        }
    }
}

impl Download<'_> {
    fn write_error(&self, source: io::Error) -> Interruption {
        Interruption::Fatal(TransferError::Write {
            file: self.part.display().to_string(),
            source,
        })
    }

    /// How a refused download ends. A `.part` file longer than the file is not this
    /// file's: it is emptied and the download starts over. No such file, a file not
    /// complete (uploading, aborted, failed), a malformed id: asking again will not change
    /// the answer.
    async fn refused(&self, part: &mut File, offset: u64, status: &tonic::Status) -> Interruption {
        match status.code() {
            tonic::Code::OutOfRange if offset > 0 => match part.set_len(0).await {
                Ok(()) => Interruption::Retry("the .part file was longer than the file".into()),
                Err(e) => self.write_error(e),
            },
            tonic::Code::NotFound
            | tonic::Code::FailedPrecondition
            | tonic::Code::InvalidArgument => {
                Interruption::Fatal(TransferError::refused(&self.label, status))
            }
            _ => Interruption::from_status(&self.label, status),
        }
    }

    fn protocol(&self, problem: impl Into<String>) -> Interruption {
        Interruption::Fatal(TransferError::protocol(&self.label, problem))
    }

    /// Opens the `.part` file and brings the hash up to its length.
    async fn open_part(&mut self) -> Result<(File, u64), Interruption> {
        let mut part = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.part)
            .await
            .map_err(|e| self.write_error(e))?;
        let len = part
            .metadata()
            .await
            .map_err(|e| self.write_error(e))?
            .len();
        if len < self.hash.len {
            // Someone shortened the file: hash it again from the start.
            self.hash = PartHash {
                md5: Md5::new(),
                len: 0,
            };
        }
        if self.hash.len < len {
            part.seek(SeekFrom::Start(self.hash.len))
                .await
                .map_err(|e| self.write_error(e))?;
            let mut buf = vec![0; 1 << 20];
            while self.hash.len < len {
                let want = (len - self.hash.len).min(buf.len() as u64) as usize;
                let got = part
                    .read(&mut buf[..want])
                    .await
                    .map_err(|e| self.write_error(e))?;
                if got == 0 {
                    break;
                }
                self.hash.md5.update(&buf[..got]);
                self.hash.len += got as u64;
            }
        }
        part.seek(SeekFrom::Start(self.hash.len))
            .await
            .map_err(|e| self.write_error(e))?;
        Ok((part, self.hash.len))
    }

    async fn attempt(&mut self, reporter: &mut Reporter) -> Result<FileInfo, Interruption> {
        let (mut part, offset) = self.open_part().await?;
        let request = DownloadRequest {
            file_id: self.file_id.clone(),
            offset,
            length: 0,
        };
        let stall = self.server.config().stall_timeout;
        let asked = tokio::time::Instant::now();
        // Opening waits at most the stall timeout, and gives way to pause and cancel.
        let opened = tokio::select! {
            opened = tokio::time::timeout(stall, self.server.download_pieces(0, &request)) => opened,
            command = reporter.command_changed() => {
                return Err(match command {
                    Command::Cancel => Interruption::Cancelled,
                    Command::Pause | Command::Run => Interruption::Paused,
                });
            }
        };
        let mut stream = match opened {
            Err(_) => return Err(Interruption::Stalled(format!("no answer within {stall:?}"))),
            Ok(Ok(stream)) => stream,
            // Refusals come back here or as the first message, depending on the transport.
            Ok(Err(status)) => return Err(self.refused(&mut part, offset, &status).await),
        };
        let file = match tokio::time::timeout(stall, stream.next()).await {
            Ok(Some(Ok(response))) => match response.message {
                Some(download_response::Message::File(file)) => file,
                _ => return Err(self.protocol("the first Download message is not the file")),
            },
            Ok(Some(Err(status))) => return Err(self.refused(&mut part, offset, &status).await),
            Ok(None) => return Err(Interruption::Retry("the download ended at once".into())),
            Err(_) => {
                return Err(Interruption::Stalled(
                    "no answer: the stream is stalled".into(),
                ));
            }
        };
        if file.state() != FileState::Complete {
            return Err(Interruption::Fatal(TransferError::Refused {
                file: self.label.clone(),
                code: tonic::Code::FailedPrecondition,
                message: format!("file {} is not complete", self.file_id),
            }));
        }
        reporter.phase(TransferState::Downloading, offset, file.size);

        // Hashing and writing run beside receiving: MD5 is the slowest step.
        let pipe = md5_pipe(std::mem::take(&mut self.hash.md5));
        let writing = part.try_clone().await.map_err(|e| self.write_error(e))?;
        let writer = PartWriter::start(
            writing.into_std().await,
            &self.part,
            offset,
            Arc::clone(self.server.buffers()),
        );
        let mut receiver = Receiver::new(
            Receiving {
                server: self.server,
                label: &self.label,
                file_id: &self.file_id,
                file: &file,
                writer: &writer,
                pipe: &pipe,
            },
            stream.boxed(),
            offset,
            asked,
        );
        let received = receiver.run(reporter).await;
        self.hash.len = receiver.written();
        self.connections = self.connections.max(receiver.most_lanes());
        drop(receiver);
        // Everything received is written (or the writer failed) before anything else:
        // `.part` then holds exactly what was hashed, or less, which the next attempt
        // notices.
        let written = writer.finish().await;
        match pipe.finish().await {
            Some(md5) => self.hash.md5 = md5,
            // The hash of what is in `.part` is lost: it is read back next attempt,
            // rather than verifying the file against a hash of nothing.
            None => {
                self.hash = PartHash {
                    md5: Md5::new(),
                    len: 0,
                };
                return Err(Interruption::Retry("hashing the download failed".into()));
            }
        }
        written.map_err(|e| self.write_error(e))?;
        let received = received?;
        if received != file.size {
            return Err(Interruption::Retry(format!(
                "the download ended at byte {received} of {}",
                file.size
            )));
        }

        reporter.state(TransferState::Verifying);
        let actual = self.hash.md5.clone().finalize();
        if actual.as_slice() != file.md5.as_ref() {
            drop(part);
            let _ = tokio::fs::remove_file(&self.part).await;
            self.hash = PartHash {
                md5: Md5::new(),
                len: 0,
            };
            return Err(Interruption::Fatal(TransferError::Md5Mismatch {
                file: self.label.clone(),
                expected: hex::encode(&file.md5),
                actual: hex::encode(actual),
            }));
        }
        part.sync_all().await.map_err(|e| self.write_error(e))?;
        drop(part);
        tokio::fs::rename(&self.part, &self.dest)
            .await
            .map_err(|e| self.write_error(e))?;
        // Make the rename itself durable.
        if let Some(dir) = self.dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            let synced = File::open(dir).await;
            if let Ok(dir) = synced {
                let _ = dir.sync_all().await;
            }
        }
        Ok(file)
    }

    async fn cancel(&self) -> Result<DownloadedFile, TransferError> {
        let _ = tokio::fs::remove_file(&self.part).await;
        Err(TransferError::Cancelled {
            file: self.label.clone(),
        })
    }
}
