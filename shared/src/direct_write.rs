//! Writes at offsets of a file with direct I/O where the filesystem allows it.
//!
//! Through the page cache every byte is copied once more by the kernel and written back
//! late, all at once, by the next sync; direct I/O writes from a page-aligned buffer
//! straight to the device. Whole blocks from an aligned offset go direct; the rest (a
//! ragged tail, an unaligned offset, a filesystem that refuses direct I/O) goes through
//! the cache. Either way the caller's sync makes the writes durable.

use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use std::sync::Arc;

use transfer_wire::aligned::{ALIGN, BufferPool, is_aligned};

/// A file written at offsets, directly where it can be.
pub struct DirectWriter {
    file: File,
    /// The same file opened with `O_DIRECT`, while the filesystem takes such writes.
    direct: Option<File>,
    /// Where data that does not start on a page is copied for a direct write.
    buffers: Arc<BufferPool>,
    /// Bytes written around the page cache so far.
    direct_bytes: u64,
}

impl DirectWriter {
    /// Writes to `file`, open for writing at `path`, and to `path` opened again with
    /// `O_DIRECT` if the filesystem allows it; data that does not start on a page is
    /// copied into a buffer of `buffers` first.
    pub fn new(file: File, path: &Path, buffers: Arc<BufferPool>) -> Self {
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok();
        Self {
            file,
            direct,
            buffers,
            direct_bytes: 0,
        }
    }

    /// Whether writes still go around the page cache (the filesystem allowed `O_DIRECT`
    /// and has refused no write yet).
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Bytes written around the page cache so far.
    pub fn direct_bytes(&self) -> u64 {
        self.direct_bytes
    }

    /// The file, for syncing what was written.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Writes all of `data` at `offset`.
    pub fn write_at(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        let mut done = 0;
        if let Some(direct) = &self.direct
            && offset.is_multiple_of(ALIGN as u64)
        {
            let len = data.len() / ALIGN * ALIGN;
            if len > 0 {
                // Chunks and pieces gathered off the network arrive aligned; others are
                // copied.
                let copied;
                let buf = if is_aligned(data) {
                    &data[..len]
                } else {
                    copied = self.buffers.copy_aligned(&data[..len]);
                    &copied[..]
                };
                match direct.write_all_at(buf, offset) {
                    Ok(()) => {
                        done = len;
                        self.direct_bytes += len as u64;
                    }
                    // Some filesystems open with O_DIRECT but refuse its writes (or this
                    // block size): the cache it is, from now on.
                    Err(e) if e.kind() == ErrorKind::InvalidInput => self.direct = None,
                    Err(e) => return Err(e),
                }
            }
        }
        self.file.write_all_at(&data[done..], offset + done as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of `size` bytes at `path`, open for writing.
    fn sized(path: &Path, size: usize) -> File {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .expect("a file");
        file.set_len(size as u64).expect("sized");
        file
    }

    #[test]
    fn aligned_data_at_aligned_offsets_goes_direct_where_the_filesystem_allows_it() {
        // On the disk the workspace is built on, as a server's data directory would be
        // (not a tmpfs /tmp, which refuses O_DIRECT): the writes that every chunk makes.
        let dir = tempfile::tempdir_in(concat!(env!("CARGO_MANIFEST_DIR"), "/../target"))
            .expect("a directory");
        let path = dir.path().join("f");
        let size = 8 * ALIGN;
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 253) as u8).collect();
        let pool = BufferPool::new(transfer_wire::aligned::DEFAULT_POOL_BYTES);
        let mut writer = DirectWriter::new(sized(&path, size), &path, pool.clone());
        let allowed = writer.is_direct();
        for (start, end) in [(4 * ALIGN, size), (0, 4 * ALIGN)] {
            let piece = pool.copy_aligned(&data[start..end]);
            assert!(is_aligned(&piece));
            writer.write_at(&piece, start as u64).expect("a write");
        }
        writer.file().sync_all().expect("a sync");
        assert_eq!(std::fs::read(&path).expect("the file"), data);
        if allowed {
            assert_eq!(
                writer.direct_bytes(),
                size as u64,
                "every aligned byte went around the page cache"
            );
        }
    }

    #[test]
    fn writes_land_at_their_offsets_aligned_or_not_in_any_order() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("f");
        let size = 5 * ALIGN + 123;
        let data: Vec<u8> = (0..size).map(|i| (i * 13 % 251) as u8).collect();
        let pool = BufferPool::new(transfer_wire::aligned::DEFAULT_POOL_BYTES);
        let mut writer = DirectWriter::new(sized(&path, size), &path, pool);
        // An aligned block copied from an unaligned start, an unaligned offset, the
        // ragged tail first, and a whole aligned run.
        let pieces = [
            (4 * ALIGN, size),
            (100, ALIGN),
            (ALIGN, 4 * ALIGN),
            (0, 100),
        ];
        for (start, end) in pieces {
            let unaligned = [&[0u8][..], &data[start..end]].concat();
            writer
                .write_at(&unaligned[1..], start as u64)
                .expect("a write");
        }
        writer.file().sync_all().expect("a sync");
        assert_eq!(std::fs::read(&path).expect("the file"), data);
    }
}
