//! Proof of possession, for cross-owner instant upload (`PossessionChallenge` in the
//! proto): which byte ranges a challenge asks for, and the digest that answers it. The
//! server and the Rust client share this; a client in another language needs only the
//! proto, since a challenge lists its ranges.

/// Ranges one challenge asks for: someone holding half of a file's bytes (and its
/// BLAKE3) answers one challenge in 2^32.
pub const RANGE_COUNT: usize = 32;
/// Bytes in each range (the whole file, when it is shorter).
pub const RANGE_LEN: u64 = 4096;
/// Most ranges a client answers, and most bytes in one: a challenge asking for more is
/// not answered (the client uploads instead).
pub const MAX_RANGES: usize = 64;
pub const MAX_RANGE_LEN: u64 = 1 << 20;
/// Length of a challenge's key, and of both digests in a proof.
pub const DIGEST_LEN: usize = 32;

/// The ranges, as (offset, length), that a challenge with `key` asks of a `size`-byte
/// file: spread over the file by the key, so nobody can tell them before the
/// challenge. None for an empty file.
pub fn ranges_for(key: &[u8; DIGEST_LEN], size: u64) -> Vec<(u64, u64)> {
    if size == 0 {
        return Vec::new();
    }
    let len = RANGE_LEN.min(size);
    let starts = size - len + 1;
    let mut stream = blake3::Hasher::new_derive_key("transfer.v1 possession challenge ranges")
        .update(key)
        .finalize_xof();
    (0..RANGE_COUNT)
        .map(|_| {
            let mut word = [0; 8];
            stream.fill(&mut word);
            (u64::from_le_bytes(word) % starts, len)
        })
        .collect()
}

/// What answers a challenge's ranges: BLAKE3 keyed with the challenge's key, over the
/// bytes of its ranges, concatenated in the challenge's order.
pub struct RangeDigest(blake3::Hasher);

impl RangeDigest {
    pub fn new(key: &[u8; DIGEST_LEN]) -> Self {
        Self(blake3::Hasher::new_keyed(key))
    }

    /// The bytes of the next range.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn finalize(&self) -> [u8; DIGEST_LEN] {
        *self.0.finalize().as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_lie_within_the_file_and_differ_by_key() {
        for size in [1, 100, 4096, 4097, 1 << 30] {
            let ranges = ranges_for(&[1; 32], size);
            assert_eq!(ranges.len(), RANGE_COUNT);
            assert!(
                ranges
                    .iter()
                    .all(|&(o, l)| l == RANGE_LEN.min(size) && o + l <= size)
            );
            assert_eq!(
                ranges,
                ranges_for(&[1; 32], size),
                "the same key, the same ranges"
            );
        }
        assert_ne!(ranges_for(&[1; 32], 1 << 30), ranges_for(&[2; 32], 1 << 30));
        assert!(ranges_for(&[1; 32], 0).is_empty());
    }

    #[test]
    fn the_range_digest_is_keyed() {
        let digest = |key: [u8; 32]| {
            let mut d = RangeDigest::new(&key);
            d.update(b"some bytes");
            d.finalize()
        };
        assert_ne!(digest([1; 32]), digest([2; 32]));
        assert_eq!(
            digest([1; 32]),
            *blake3::keyed_hash(&[1; 32], b"some bytes").as_bytes()
        );
    }
}
