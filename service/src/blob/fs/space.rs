//! Disk space: staging reserved when an upload begins, free space told, and a full disk
//! reported as that (with what is free) rather than as an I/O failure.

use std::fs::File;
use std::path::Path;

use crate::blob::BlobError;

/// Reserves `size` bytes for a staged upload, so that writing its parts later cannot run
/// out of space. Where the filesystem cannot reserve (no `fallocate`), the file is only
/// sized, sparse.
pub(super) fn reserve(file: &File, size: u64) -> std::io::Result<()> {
    if size == 0 {
        return file.set_len(0);
    }
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, size) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NOSYS) => file.set_len(size),
        Err(errno) => Err(errno.into()),
    }
}

/// Bytes an unprivileged writer can still put on the filesystem holding `dir`.
pub(super) fn free_space(dir: &Path) -> std::io::Result<u64> {
    let stats = rustix::fs::statvfs(dir)?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// `error` as [`BlobError::NoSpace`] when the filesystem holding `dir` is full (or the
/// writer's quota is), with what is free now; otherwise unchanged.
pub(super) fn full_disk_told(error: BlobError, dir: &Path, needed: Option<u64>) -> BlobError {
    let out_of_space = matches!(
        &error,
        BlobError::Io { source, .. }
            if matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
    );
    if !out_of_space {
        return error;
    }
    let available = free_space(dir).ok();
    tracing::warn!(store = %dir.display(), ?needed, ?available, "the blob store is full");
    BlobError::NoSpace { needed, available }
}
