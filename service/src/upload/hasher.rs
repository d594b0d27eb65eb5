//! The whole-file digests, computed exactly once, in order, off the receive path: the
//! MD5 the client declares, and the BLAKE3 that identifies the content on the server
//! (see [`super::content_digest`]).
//!
//! Chunks are committed in any order, but the digests must see the bytes in order. The
//! session feeds the hasher the contiguous prefix of committed chunks as it grows; the
//! hashing itself runs on Tokio's blocking pool, so receiving, writing and hashing
//! overlap. A checkpoint (both states) lets a later session task resume hashing where
//! this one stopped instead of reading the prefix back from storage.

use bytes::Bytes;
use tokio::sync::oneshot;
use transfer_md5::Md5;
use transfer_shared::hash_pipe::{Digest, HashPipe, PipeSettings};

pub use transfer_shared::hash_pipe::HashingSlots;

use super::content_digest::{Blake3Digest, Blake3Stream};
use crate::ledger::Md5Digest;

/// How many chunks may wait for the hasher before feeding it waits. Chunks waiting here
/// are already acknowledged, so they are memory on top of the client's window: two
/// keep the hasher busy without holding more.
const QUEUE_CHUNKS: usize = 2;

/// Most bytes one upload hashes before it lets others have its hashing slot.
const SLOT_SHARE: usize = 64 << 20;

/// The first byte of a checkpoint: its format. Version 1 (no version byte) held only
/// the MD5 state; a session that finds one hashes its prefix again.
const CHECKPOINT_VERSION: u8 = 2;

/// Both digests of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileDigests {
    pub md5: Md5Digest,
    pub blake3: Blake3Digest,
}

/// Both digests' states, fed the same bytes.
struct FileHasher {
    md5: Md5,
    blake3: Blake3Stream,
}

impl FileHasher {
    fn new() -> Self {
        Self {
            md5: Md5::new(),
            blake3: Blake3Stream::new(),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        self.md5.update(bytes);
        self.blake3.update(bytes);
    }

    fn len(&self) -> u64 {
        self.md5.len()
    }

    /// `[version][MD5 state][BLAKE3 state]`.
    fn checkpoint(&self) -> Vec<u8> {
        let mut state = vec![CHECKPOINT_VERSION];
        state.extend_from_slice(&self.md5.checkpoint());
        state.extend_from_slice(&self.blake3.checkpoint());
        state
    }

    fn from_checkpoint(state: &[u8]) -> Option<Self> {
        let (&version, rest) = state.split_first()?;
        if version != CHECKPOINT_VERSION || rest.len() < transfer_md5::CHECKPOINT_LEN {
            return None;
        }
        let (md5, blake3) = rest.split_at(transfer_md5::CHECKPOINT_LEN);
        let hasher = Self {
            md5: Md5::from_checkpoint(md5)?,
            blake3: Blake3Stream::resume(blake3)?,
        };
        (hasher.md5.len() == hasher.blake3.len()).then_some(hasher)
    }

    fn finalize(self) -> FileDigests {
        FileDigests {
            blake3: self.blake3.finalize(),
            md5: self.md5.finalize(),
        }
    }
}

impl Digest for FileHasher {
    fn update(&mut self, bytes: &[u8]) {
        FileHasher::update(self, bytes);
    }
}

/// Hashes bytes fed in file order in a background task, taking turns on the server's
/// hashing slots.
pub struct OrderedHasher(HashPipe<FileHasher>);

impl OrderedHasher {
    /// Starts hashing from the beginning of a file, on one of `slots` at a time.
    pub fn start(slots: &HashingSlots) -> Self {
        Self::resume_from(FileHasher::new(), slots)
    }

    /// Starts from a checkpoint taken by [`OrderedHasher::checkpoint`] after the first
    /// `bytes` bytes of the file; `None` if it is not a valid state of that many bytes
    /// in this version's format (resuming from it would only end in a mismatch).
    pub fn resume(checkpoint: &[u8], bytes: u64, slots: &HashingSlots) -> Option<Self> {
        FileHasher::from_checkpoint(checkpoint)
            .filter(|hasher| hasher.len() == bytes)
            .map(|hasher| Self::resume_from(hasher, slots))
    }

    fn resume_from(hasher: FileHasher, slots: &HashingSlots) -> Self {
        Self(HashPipe::start(
            hasher,
            PipeSettings {
                queue: QUEUE_CHUNKS,
                slots: Some(slots.clone()),
                turn_bytes: SLOT_SHARE,
            },
        ))
    }

    /// Feeds the next bytes of the file. Waits while the hasher is behind.
    pub async fn feed(&self, bytes: Bytes) {
        self.0.feed(bytes).await;
    }

    /// Asks for the state after everything fed so far; the answer comes once that is
    /// hashed, so the caller need not wait for it.
    pub async fn checkpoint(&self) -> oneshot::Receiver<Vec<u8>> {
        self.0.look(FileHasher::checkpoint).await
    }

    /// The digests of everything fed. `None` if the hashing task was lost.
    pub async fn finish(self) -> Option<FileDigests> {
        Some(self.0.finish().await?.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digests_of(data: &[u8]) -> FileDigests {
        FileDigests {
            md5: Md5::digest(data),
            blake3: *blake3::hash(data).as_bytes(),
        }
    }

    #[tokio::test]
    async fn pieces_fed_in_order_hash_like_the_whole() {
        let hasher = OrderedHasher::start(&HashingSlots::per_core());
        for piece in [&b"hello "[..], b"large ", b"world"] {
            hasher.feed(Bytes::copy_from_slice(piece)).await;
        }
        assert_eq!(
            hasher.finish().await,
            Some(digests_of(b"hello large world"))
        );
    }

    #[tokio::test]
    async fn a_checkpoint_resumes_where_it_was_taken_and_only_there() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (head, tail) = data.split_at(4099);
        let first = OrderedHasher::start(&HashingSlots::per_core());
        first.feed(Bytes::copy_from_slice(head)).await;
        let checkpoint = first.checkpoint().await.await.unwrap();
        // Bytes fed after the checkpoint are not part of it.
        first.feed(Bytes::from_static(b"ignored")).await;
        drop(first);

        assert!(
            OrderedHasher::resume(
                &checkpoint,
                head.len() as u64 + 1,
                &HashingSlots::per_core()
            )
            .is_none(),
            "a checkpoint of another length"
        );
        let second =
            OrderedHasher::resume(&checkpoint, head.len() as u64, &HashingSlots::per_core())
                .expect("a valid checkpoint");
        second.feed(Bytes::copy_from_slice(tail)).await;
        assert_eq!(second.finish().await, Some(digests_of(&data)));
    }

    #[test]
    fn a_malformed_checkpoint_is_refused() {
        assert!(OrderedHasher::resume(b"not an md5 state", 0, &HashingSlots::per_core()).is_none());
    }

    #[tokio::test]
    async fn a_checkpoint_of_the_md5_alone_from_before_version_2_is_not_resumed() {
        let mut md5 = Md5::new();
        md5.update([7; 100]);
        assert!(OrderedHasher::resume(&md5.checkpoint(), 100, &HashingSlots::per_core()).is_none());
        let hasher = OrderedHasher::start(&HashingSlots::per_core());
        hasher.feed(Bytes::from_static(&[7; 100])).await;
        let checkpoint = hasher.checkpoint().await.await.unwrap();
        assert_eq!(checkpoint[0], CHECKPOINT_VERSION);
        let resumed = OrderedHasher::resume(&checkpoint, 100, &HashingSlots::per_core())
            .expect("a version 2 checkpoint");
        assert_eq!(resumed.finish().await, Some(digests_of(&[7; 100])));
    }
}
