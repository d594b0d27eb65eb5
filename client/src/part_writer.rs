//! Writes a download's pieces into its `.part` file beside receiving them, on a thread
//! of its own, and with direct I/O where the filesystem allows it (see
//! [`transfer_shared::direct_write`]): through the page cache every byte would be
//! copied once more by the kernel (about as much CPU as receiving it) and written back
//! late, all at once, by the final sync, which makes either durable.

use std::fs::File;
use std::io;
use std::path::Path;

use bytes::Bytes;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use transfer_shared::direct_write::DirectWriter;
use transfer_wire::aligned::BufferPool;

/// Pieces that may wait to be written before receiving waits.
const QUEUE: usize = 8;

pub(crate) struct PartWriter {
    feed: mpsc::Sender<Bytes>,
    task: JoinHandle<io::Result<()>>,
}

impl PartWriter {
    /// Writes what it is fed at `offset` onwards of `file` (open for writing at `path`).
    pub fn start(file: File, path: &Path, offset: u64, buffers: Arc<BufferPool>) -> Self {
        let mut writer = DirectWriter::new(file, path, buffers);
        let (feed, mut queue) = mpsc::channel::<Bytes>(QUEUE);
        let task = tokio::task::spawn_blocking(move || {
            let mut position = offset;
            while let Some(piece) = queue.blocking_recv() {
                writer.write_at(&piece, position)?;
                position += piece.len() as u64;
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
