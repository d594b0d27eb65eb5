//! Property tests: transfer-md5 against the md-5 crate on random data, random splits
//! and random checkpoints, on stable Rust.
//!
//! Each property runs 64 cases by default, so `cargo test` stays quick; set
//! `PROPTEST_CASES` for a long run (see docs/fuzzing.md).

use md5::Digest;
use md5::digest::common::hazmat::{SerializableState, SerializedState};
use proptest::prelude::*;
use proptest::sample::Index;
use transfer_md5::{CHECKPOINT_LEN, Md5};

/// The longest input tried: several thousand blocks, enough for any split pattern.
const MAX_LEN: usize = 256 << 10;

/// 64 cases, or `PROPTEST_CASES` when it is set.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// Deterministic bytes from a seed: random-looking data whose length shrinks.
fn bytes_from(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Data of any length up to [`MAX_LEN`]: short ones, any, and ones whose last block
/// ends at or next to an edge of the padding (55 bytes and up need a second block).
fn data() -> impl Strategy<Value = Vec<u8>> {
    let edge = (
        0..MAX_LEN / 64,
        prop::sample::select(&[0usize, 1, 54, 55, 56, 57, 62, 63][..]),
    )
        .prop_map(|(blocks, tail)| blocks * 64 + tail);
    let len = prop_oneof![0..=300usize, edge, 0..=MAX_LEN];
    (len, any::<u64>()).prop_map(|(len, seed)| bytes_from(len, seed))
}

/// `data` cut at `cuts` (any points, repeats making empty pieces).
fn pieces<'a>(data: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|cut| cut.index(data.len() + 1)).collect();
    points.sort_unstable();
    let mut pieces = Vec::with_capacity(points.len() + 1);
    let mut start = 0;
    for point in points {
        pieces.push(&data[start..point]);
        start = point;
    }
    pieces.push(&data[start..]);
    pieces
}

fn reference(data: &[u8]) -> [u8; 16] {
    md5::Md5::digest(data).into()
}

fn md5_crate_state(bytes: &[u8]) -> Option<md5::Md5> {
    let state = SerializedState::<md5::Md5>::try_from(bytes).ok()?;
    md5::Md5::deserialize(&state).ok()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn digest_matches_md5_crate_for_any_split(
        data in data(),
        cuts in prop::collection::vec(any::<Index>(), 0..64),
    ) {
        let mut ours = Md5::new();
        for piece in pieces(&data, &cuts) {
            ours.update(piece);
        }
        prop_assert_eq!(ours.len(), data.len() as u64);
        prop_assert_eq!(ours.is_empty(), data.is_empty());
        prop_assert_eq!(ours.finalize(), reference(&data));
        prop_assert_eq!(Md5::digest(&data), reference(&data));
    }

    #[test]
    fn a_checkpoint_taken_anywhere_resumes_to_the_same_digest(
        data in data(),
        at in any::<Index>(),
        cuts in prop::collection::vec(any::<Index>(), 0..16),
    ) {
        let at = at.index(data.len() + 1);
        let (head, tail) = data.split_at(at);
        let whole = reference(&data);

        let mut ours = Md5::new();
        for piece in pieces(head, &cuts) {
            ours.update(piece);
        }
        let checkpoint = ours.checkpoint();
        prop_assert_eq!(checkpoint.len(), CHECKPOINT_LEN);
        let mut theirs = md5::Md5::new();
        theirs.update(head);
        prop_assert_eq!(&checkpoint[..], &theirs.serialize()[..], "md-5's own state");

        // Resumed here, fed the rest in pieces.
        let mut resumed = Md5::from_checkpoint(&checkpoint).expect("a checkpoint it wrote");
        prop_assert_eq!(resumed.len(), at as u64);
        for piece in pieces(tail, &cuts) {
            resumed.update(piece);
        }
        prop_assert_eq!(resumed.finalize(), whole);

        // Resumed by md-5.
        let mut resumed = md5_crate_state(&checkpoint).expect("md-5 reads it");
        resumed.update(tail);
        prop_assert_eq!(<[u8; 16]>::from(resumed.finalize()), whole);

        // Checkpointing does not disturb the hasher it was taken from.
        ours.update(tail);
        prop_assert_eq!(ours.finalize(), whole);
    }

    #[test]
    fn a_checkpoint_of_the_wrong_length_is_refused(
        data in data(),
        len in prop_oneof![0..CHECKPOINT_LEN, CHECKPOINT_LEN + 1..2 * CHECKPOINT_LEN],
        filler in any::<u8>(),
    ) {
        let mut md5 = Md5::new();
        md5.update(&data);
        let mut blob = md5.checkpoint();
        blob.resize(len, filler);
        prop_assert!(Md5::from_checkpoint(&blob).is_none());
    }

    #[test]
    fn a_corrupted_checkpoint_is_accepted_exactly_when_md5_crate_accepts_it(
        data in data(),
        corruptions in prop::collection::vec((any::<Index>(), any::<u8>()), 1..4),
        rest in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut md5 = Md5::new();
        md5.update(&data);
        let mut blob = md5.checkpoint();
        for (at, byte) in &corruptions {
            *at.get_mut(&mut blob) = *byte;
        }
        match (Md5::from_checkpoint(&blob), md5_crate_state(&blob)) {
            (None, None) => {}
            (Some(mut ours), Some(mut theirs)) => {
                ours.update(&rest);
                theirs.update(&rest);
                prop_assert_eq!(ours.finalize(), <[u8; 16]>::from(theirs.finalize()));
            }
            (ours, theirs) => prop_assert!(
                false,
                "transfer-md5 accepted: {}, md-5 accepted: {}",
                ours.is_some(),
                theirs.is_some()
            ),
        }
    }

    #[test]
    fn any_checkpoint_sized_blob_is_accepted_exactly_when_md5_crate_accepts_it(
        words in prop::array::uniform24(any::<u8>()),
        tail_len in prop_oneof![0..64u8, any::<u8>()],
        tail in prop::collection::vec(any::<u8>(), 0..64),
        dirty_padding in any::<bool>(),
        rest in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        // State words and block count (any, even near the counter's wrap), then a
        // buffered tail and its zero padding, dirtied now and then.
        let mut blob = words.to_vec();
        blob.push(tail_len);
        blob.extend_from_slice(&tail[..tail.len().min(usize::from(tail_len))]);
        blob.resize(CHECKPOINT_LEN, 0);
        if dirty_padding {
            blob[CHECKPOINT_LEN - 1] |= 1;
        }
        match (Md5::from_checkpoint(&blob), md5_crate_state(&blob)) {
            (None, None) => {}
            (Some(mut ours), Some(mut theirs)) => {
                prop_assert_eq!(ours.checkpoint(), blob);
                ours.update(&rest);
                theirs.update(&rest);
                prop_assert_eq!(ours.finalize(), <[u8; 16]>::from(theirs.finalize()));
            }
            (ours, theirs) => prop_assert!(
                false,
                "transfer-md5 accepted: {}, md-5 accepted: {}",
                ours.is_some(),
                theirs.is_some()
            ),
        }
    }
}
