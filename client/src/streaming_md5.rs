//! The whole-file MD5 of a single-pass upload, computed from the chunks as they are
//! sent instead of in a pass of its own.
//!
//! Chunks go out in ascending order, so each byte range is fed once, the first time it
//! is read. Ranges the server already had (a resumed session) are read only to be
//! hashed; chunks sent again after an interruption were hashed the first time.

use std::io;

use bytes::Bytes;
use transfer_md5::Md5;

use crate::hash_pipe::md5_pipe;
use crate::source::ChunkSource;
use transfer_shared::hash_pipe::HashPipe;

/// Most bytes read at once while catching up over ranges that are not sent.
const CATCH_UP_PIECE: u64 = 4 << 20;

pub(crate) struct StreamingMd5 {
    pipe: Option<HashPipe<Md5>>,
    /// Bytes `[0, hashed)` are fed.
    hashed: u64,
    md5: Option<[u8; 16]>,
}

impl StreamingMd5 {
    pub fn new() -> Self {
        Self {
            pipe: Some(md5_pipe(Md5::new())),
            hashed: 0,
            md5: None,
        }
    }

    /// The digest, once [`StreamingMd5::finish`] has computed it.
    pub fn digest(&self) -> Option<[u8; 16]> {
        self.md5
    }

    /// Feeds the bytes before `offset` that were not fed yet, reading them from `source`.
    pub async fn catch_up(&mut self, source: &impl ChunkSource, offset: u64) -> io::Result<()> {
        while self.hashed < offset {
            let len = (offset - self.hashed).min(CATCH_UP_PIECE);
            let bytes = source.read_at(self.hashed, len as usize).await?;
            self.feed(bytes).await;
        }
        Ok(())
    }

    /// Offers the bytes read at `offset`: fed if they are the next ones.
    pub async fn offer(&mut self, offset: u64, bytes: &Bytes) {
        if offset == self.hashed {
            self.feed(bytes.clone()).await;
        }
    }

    async fn feed(&mut self, bytes: Bytes) {
        if let Some(pipe) = &self.pipe {
            self.hashed += bytes.len() as u64;
            pipe.feed(bytes).await;
        }
    }

    /// Feeds whatever is left of `source` and computes the digest (once).
    pub async fn finish(&mut self, source: &impl ChunkSource) -> io::Result<[u8; 16]> {
        if let Some(md5) = self.md5 {
            return Ok(md5);
        }
        self.catch_up(source, source.size()).await?;
        let pipe = self
            .pipe
            .take()
            .ok_or_else(|| io::Error::other("the MD5 was already finished"))?;
        let md5 = pipe
            .finish()
            .await
            .ok_or_else(|| io::Error::other("the hashing task was lost"))?
            .finalize();
        self.md5 = Some(md5);
        Ok(md5)
    }
}
