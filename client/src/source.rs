//! Where upload bytes come from: anything that can read a byte range of a known size.

use std::fs::File;
use std::io::{self, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeek, AsyncSeekExt};
use tokio::sync::Mutex;
use transfer_md5::Md5;
use transfer_wire::aligned::BufferPool;

/// Bytes of a known size, readable at any offset (chunks are re-read when they must be
/// sent again, so nothing holds the whole file in memory).
pub trait ChunkSource: Send + Sync + 'static {
    fn size(&self) -> u64;

    /// Reads exactly `len` bytes at `offset`.
    fn read_at(&self, offset: u64, len: usize) -> impl Future<Output = io::Result<Bytes>> + Send;
}

/// Idle read buffers one file keeps for reuse: a window of chunks at the defaults
/// (16 of 4 MiB, each with a page for alignment).
const READ_POOL_BYTES: usize = 16 * ((4 << 20) + transfer_wire::aligned::ALIGN);

/// A local file, read with positioned reads on the blocking pool.
pub struct FileSource {
    file: Arc<File>,
    size: u64,
    /// A window of chunks is read, sent and dropped at a time: with buffers of its own
    /// to reuse, the next chunks are read into memory already mapped rather than fresh
    /// memory zeroed and faulted in again (the process's pool keeps one chunk's worth):
    /// less CPU on the client, and a smaller resident set, since the allocator kept
    /// freed chunks fragmented (figures: BENCHMARKS.md, "Measurements behind choices in the code"). The buffers are freed
    /// with the last chunk once the file is done.
    buffers: Arc<BufferPool>,
}

impl FileSource {
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            file: Arc::new(file),
            size,
            buffers: BufferPool::new(READ_POOL_BYTES),
        })
    }
}

impl ChunkSource for FileSource {
    fn size(&self) -> u64 {
        self.size
    }

    async fn read_at(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        let file = Arc::clone(&self.file);
        let buffers = Arc::clone(&self.buffers);
        tokio::task::spawn_blocking(move || {
            buffers.read_aligned(len, 0, len, |buf| {
                file.read_exact_at(buf, offset).map(|()| len)
            })
        })
        .await
        .map_err(io::Error::other)?
    }
}

/// Any async reader that can seek, with the size the caller states.
pub struct ReaderSource<R> {
    reader: Mutex<R>,
    size: u64,
}

impl<R> ReaderSource<R> {
    pub fn new(reader: R, size: u64) -> Self {
        Self {
            reader: Mutex::new(reader),
            size,
        }
    }
}

impl<R: AsyncRead + AsyncSeek + Unpin + Send + 'static> ChunkSource for ReaderSource<R> {
    fn size(&self) -> u64 {
        self.size
    }

    async fn read_at(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        let mut reader = self.reader.lock().await;
        reader.seek(SeekFrom::Start(offset)).await?;
        let mut buf = BytesMut::zeroed(len);
        reader.read_exact(&mut buf).await?;
        Ok(buf.freeze())
    }
}

/// The MD5 of the first min(size, 1 MiB) bytes: what a single-pass probe asks with.
pub(crate) async fn head_md5_of(source: &impl ChunkSource) -> io::Result<[u8; 16]> {
    let head = source
        .read_at(0, source.size().min(transfer_proto::HEAD_MD5_LEN) as usize)
        .await?;
    Ok(Md5::digest(&head))
}

/// Bytes to read per step while hashing.
const HASH_PIECE: u64 = 4 << 20;

/// The MD5 of a whole source, reading the next piece while the last one is hashed.
/// `progress` is told the bytes hashed so far.
pub(crate) async fn md5_of(
    source: &impl ChunkSource,
    progress: impl Fn(u64),
) -> io::Result<[u8; 16]> {
    let md5 = digest_of(source, Md5::new(), |md5, bytes| md5.update(bytes), progress).await?;
    Ok(md5.finalize())
}

/// The BLAKE3 of a whole source, as [`md5_of`].
pub(crate) async fn blake3_of(
    source: &impl ChunkSource,
    progress: impl Fn(u64),
) -> io::Result<[u8; 32]> {
    let hasher = blake3::Hasher::new();
    let hasher = digest_of(
        source,
        hasher,
        |hasher, bytes| {
            hasher.update(bytes);
        },
        progress,
    )
    .await?;
    Ok(*hasher.finalize().as_bytes())
}

/// `hasher` fed the whole source by `update`, reading the next piece while the last
/// one is hashed.
async fn digest_of<H: Send + 'static>(
    source: &impl ChunkSource,
    mut hasher: H,
    update: fn(&mut H, &[u8]),
    progress: impl Fn(u64),
) -> io::Result<H> {
    let size = source.size();
    let piece = |offset: u64| ((size - offset).min(HASH_PIECE)) as usize;
    let mut offset = 0;
    let mut next = if size > 0 {
        Some(source.read_at(0, piece(0)).await?)
    } else {
        None
    };
    while let Some(bytes) = next.take() {
        offset += bytes.len() as u64;
        let hashing = tokio::task::spawn_blocking(move || {
            update(&mut hasher, &bytes);
            hasher
        });
        let reading = async {
            if offset < size {
                source.read_at(offset, piece(offset)).await.map(Some)
            } else {
                Ok(None)
            }
        };
        let (hashed, read) = tokio::join!(hashing, reading);
        hasher = hashed.map_err(io::Error::other)?;
        next = read?;
        progress(offset);
    }
    Ok(hasher)
}
