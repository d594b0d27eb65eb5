//! Test content and digests.

use bytes::Bytes;
use md5::{Digest, Md5};

pub fn md5(data: &[u8]) -> Vec<u8> {
    Md5::digest(data).to_vec()
}

pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Deterministic pseudo-random content of a given size, different per seed.
#[derive(Clone)]
pub struct TestFile {
    pub name: String,
    pub data: Bytes,
    pub md5: Vec<u8>,
}

impl TestFile {
    pub fn new(name: &str, size: usize, seed: u64) -> Self {
        // xorshift64*: fast, and content differs between seeds.
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut data = Vec::with_capacity(size + 8);
        while data.len() < size {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            data.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        data.truncate(size);
        let md5 = md5(&data);
        Self {
            name: name.to_owned(),
            data: Bytes::from(data),
            md5,
        }
    }

    /// MD5 of the first min(size, 1 MiB) bytes: what a single-pass probe asks with.
    pub fn head_md5(&self) -> Vec<u8> {
        md5(&self.data[..self.data.len().min(transfer_proto::HEAD_MD5_LEN as usize)])
    }

    /// Chunk `index` for a chunk size.
    pub fn chunk(&self, index: u64, chunk_size: u32) -> Bytes {
        let start = (index * u64::from(chunk_size)) as usize;
        let end = (start + chunk_size as usize).min(self.data.len());
        self.data.slice(start..end)
    }
}
