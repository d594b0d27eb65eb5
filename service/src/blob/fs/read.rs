//! Reading stored bytes back: content with direct I/O into the server's buffers (it
//! was written around the page cache), staged bytes through the cache.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use transfer_wire::aligned::{self, BufferPool};

use super::io;
use crate::blob::BlobError;

/// Offset, length and memory alignment direct I/O needs (the common logical block size).
const DIRECT_ALIGN: usize = aligned::ALIGN;

/// Opens complete content for direct (`O_DIRECT`) reads: stored content was written
/// around the page cache, so a buffered read would fetch it from disk into the cache
/// and then copy it, costing several times the CPU of a direct read
/// (figures: BENCHMARKS.md, "Measurements behind choices in the code").
pub(super) fn open_direct_read(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

/// Reads `len` bytes at `offset` from a file opened with `O_DIRECT`: the aligned blocks
/// around them, into an aligned buffer, of which the wanted bytes are a slice.
pub(super) fn read_direct(
    buffers: &Arc<BufferPool>,
    file: &File,
    offset: u64,
    len: usize,
) -> std::io::Result<Bytes> {
    let first = offset - offset % DIRECT_ALIGN as u64;
    let skip = (offset - first) as usize;
    let span = (skip + len).next_multiple_of(DIRECT_ALIGN);
    buffers.read_aligned(span, skip, len, |buffer| {
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

pub(super) fn read_at(file: &File, offset: u64, len: usize, size: u64) -> Result<Bytes, BlobError> {
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
