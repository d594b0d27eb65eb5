//! Answers a server's possession challenge: a server that shares content across owners
//! (`--dedup-scope global`) gives a file of content another owner stored only to a
//! caller that proves it holds the bytes, by the keyed digest of byte ranges the
//! challenge names and the BLAKE3 of the whole file.

use std::io;

use transfer_proto::possession::{DIGEST_LEN, MAX_RANGE_LEN, MAX_RANGES, RangeDigest};
use transfer_proto::v1::{PossessionChallenge, PossessionProof};

use crate::source::{ChunkSource, blake3_of};

/// The proof for `challenge` about `source`, or `None` for a challenge that asks for
/// what no server should (a key of the wrong length, too many or too long ranges,
/// ranges outside the file): the upload then goes on without it. `progress` is told
/// the bytes hashed so far.
pub(crate) async fn prove(
    source: &impl ChunkSource,
    challenge: &PossessionChallenge,
    progress: impl Fn(u64),
) -> io::Result<Option<PossessionProof>> {
    let Ok(key) = <[u8; DIGEST_LEN]>::try_from(&challenge.key[..]) else {
        return Ok(None);
    };
    let size = source.size();
    let fits = |offset: u64, length: u64| {
        length <= MAX_RANGE_LEN && offset.checked_add(length).is_some_and(|end| end <= size)
    };
    if challenge.ranges.len() > MAX_RANGES
        || !challenge.ranges.iter().all(|r| fits(r.offset, r.length))
    {
        return Ok(None);
    }
    let mut digest = RangeDigest::new(&key);
    for range in &challenge.ranges {
        digest.update(&source.read_at(range.offset, range.length as usize).await?);
    }
    let blake3 = blake3_of(source, progress).await?;
    Ok(Some(PossessionProof {
        token: challenge.token.clone(),
        range_digest: digest.finalize().to_vec().into(),
        blake3: blake3.to_vec().into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use transfer_proto::v1::ByteRange;

    struct Memory(Vec<u8>);

    impl ChunkSource for Memory {
        fn size(&self) -> u64 {
            self.0.len() as u64
        }

        async fn read_at(&self, offset: u64, len: usize) -> io::Result<bytes::Bytes> {
            let start = offset as usize;
            Ok(bytes::Bytes::copy_from_slice(&self.0[start..start + len]))
        }
    }

    fn challenge(ranges: &[(u64, u64)]) -> PossessionChallenge {
        PossessionChallenge {
            token: vec![9; 73].into(),
            key: vec![5; 32].into(),
            ranges: ranges
                .iter()
                .map(|&(offset, length)| ByteRange { offset, length })
                .collect(),
        }
    }

    #[tokio::test]
    async fn the_proof_is_the_keyed_digest_of_the_ranges_and_the_files_blake3() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 13) as u8).collect();
        let proof = prove(
            &Memory(data.clone()),
            &challenge(&[(100, 10), (0, 5)]),
            |_| {},
        )
        .await
        .unwrap()
        .unwrap();
        let mut ranges = data[100..110].to_vec();
        ranges.extend_from_slice(&data[..5]);
        assert_eq!(
            &proof.range_digest[..],
            blake3::keyed_hash(&[5; 32], &ranges).as_bytes()
        );
        assert_eq!(&proof.blake3[..], blake3::hash(&data).as_bytes());
        assert_eq!(&proof.token[..], &[9; 73]);
    }

    #[tokio::test]
    async fn a_challenge_asking_for_bytes_outside_the_file_or_too_many_is_not_answered() {
        let source = Memory(vec![1; 100]);
        for ranges in [
            vec![(95, 10)],
            vec![(u64::MAX, 2)],
            vec![(0, 1); MAX_RANGES + 1],
        ] {
            assert!(
                prove(&source, &challenge(&ranges), |_| {})
                    .await
                    .unwrap()
                    .is_none()
            );
        }
        let mut bad_key = challenge(&[(0, 1)]);
        bad_key.key = vec![1; 31].into();
        assert!(prove(&source, &bad_key, |_| {}).await.unwrap().is_none());
    }
}
