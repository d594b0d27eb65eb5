//! The client's MD5, hashed beside the transfer that produces the bytes (reading a
//! file, receiving a download); see [`transfer_shared::hash_pipe`].

use transfer_md5::Md5;
use transfer_shared::hash_pipe::{HashPipe, PipeSettings};

/// Pieces that may wait for the hasher before feeding waits.
const QUEUE: usize = 8;

/// A pipe that goes on hashing from `md5`, on a blocking thread of its own for as long
/// as pieces keep coming.
pub(crate) fn md5_pipe(md5: Md5) -> HashPipe<Md5> {
    HashPipe::start(
        md5,
        PipeSettings {
            queue: QUEUE,
            slots: None,
            turn_bytes: usize::MAX,
        },
    )
}
