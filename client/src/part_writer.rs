//! Writes a download's pieces into its `.part` file beside receiving them, on a thread
//! of its own, and with direct I/O where the filesystem allows it.
//!
//! Through the page cache every byte is copied once more by the kernel (about as much
//! CPU as receiving it) and then written back late, all at once, by the final sync.
//! Direct I/O writes from a page-aligned buffer straight to the device as the download
//! goes. The unaligned tail of the file, and filesystems that refuse direct I/O, go
//! through the cache as before; the final `sync_all` makes either durable.

use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Alignment of direct I/O: a page, a multiple of common block sizes.
const ALIGN: usize = transfer_wire::aligned::ALIGN;
/// Pieces that may wait to be written before receiving waits.
const QUEUE: usize = 8;

pub(crate) struct PartWriter {
    feed: mpsc::Sender<Bytes>,
    task: JoinHandle<io::Result<()>>,
}

impl PartWriter {
    /// Writes what it is fed at `offset` onwards of `file` (open for writing at `path`).
    pub fn start(file: File, path: &Path, offset: u64) -> Self {
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok();
        let (feed, mut queue) = mpsc::channel::<Bytes>(QUEUE);
        let task = tokio::task::spawn_blocking(move || {
            let mut writer = Writer {
                file,
                direct,
                aligned: Vec::new(),
                position: offset,
            };
            while let Some(piece) = queue.blocking_recv() {
                writer.write(&piece)?;
            }
            Ok(())
        });
        Self { feed, task }
    }

    /// Queues the next piece; waits while the writer is behind. An error means the
    /// writer has stopped: [`PartWriter::finish`] tells why.
    pub async fn write(&self, piece: Bytes) -> Result<(), ()> {
        self.feed.send(piece).await.map_err(|_| ())
    }

    /// Writes everything queued and stops.
    pub async fn finish(self) -> io::Result<()> {
        drop(self.feed);
        self.task.await.map_err(io::Error::other)?
    }
}

struct Writer {
    file: File,
    direct: Option<File>,
    /// Reused buffer that holds a piece from a page-aligned start.
    aligned: Vec<u8>,
    position: u64,
}

impl Writer {
    fn write(&mut self, piece: &[u8]) -> io::Result<()> {
        let mut done = 0;
        if let Some(direct) = &self.direct
            && self.position.is_multiple_of(ALIGN as u64)
        {
            let len = piece.len() / ALIGN * ALIGN;
            if len > 0 {
                // Pieces gathered by `grpc_call` arrive aligned; others are copied.
                let buf = if transfer_wire::aligned::is_aligned(piece) {
                    &piece[..len]
                } else {
                    if self.aligned.len() < len + ALIGN {
                        self.aligned = vec![0; len + ALIGN];
                    }
                    let start = self.aligned.as_ptr().align_offset(ALIGN);
                    let buf = &mut self.aligned[start..start + len];
                    buf.copy_from_slice(&piece[..len]);
                    buf
                };
                match direct.write_all_at(buf, self.position) {
                    Ok(()) => done = len,
                    // Some filesystems open with O_DIRECT but refuse its writes.
                    Err(e) if e.kind() == ErrorKind::InvalidInput => self.direct = None,
                    Err(e) => return Err(e),
                }
            }
        }
        self.file
            .write_all_at(&piece[done..], self.position + done as u64)?;
        self.position += piece.len() as u64;
        Ok(())
    }
}
