use md5::Digest;
use md5::digest::common::hazmat::{SerializableState, SerializedState};

use super::*;

/// Deterministic bytes that are not a simple pattern.
fn bytes(len: usize, seed: u64) -> Vec<u8> {
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

fn reference(data: &[u8]) -> [u8; 16] {
    md5::Md5::digest(data).into()
}

#[test]
fn the_rfc_1321_test_suite_gives_its_digests() {
    let suite = [
        ("", "d41d8cd98f00b204e9800998ecf8427e"),
        ("a", "0cc175b9c0f1b6a831c399e269772661"),
        ("abc", "900150983cd24fb0d6963f7d28e17f72"),
        ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
        (
            "abcdefghijklmnopqrstuvwxyz",
            "c3fcd3d76192e4007dfb496cca67e13b",
        ),
        (
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
            "d174ab98d277d9f5a5611c2c9f419d9f",
        ),
        (
            "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
            "57edf4a22be3c955ac49da2e2107b67a",
        ),
    ];
    for (input, expected) in suite {
        let digest: String = Md5::digest(input)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(digest, expected, "MD5 of {input:?}");
    }
}

#[test]
fn every_length_around_the_block_and_padding_edges_matches_md5() {
    for len in (0..=300).chain([4095, 4096, 4097, 65_536, 1 << 20, (1 << 20) + 57]) {
        let data = bytes(len, len as u64);
        assert_eq!(Md5::digest(&data), reference(&data), "{len} bytes");
    }
}

#[test]
fn feeding_in_pieces_gives_the_digest_of_the_whole() {
    let data = bytes(20_000, 7);
    for seed in 0..50u64 {
        let mut md5 = Md5::new();
        let mut rest = &data[..];
        let cuts = bytes(64, seed);
        let mut i = 0;
        while !rest.is_empty() {
            // Pieces of 0 to 510 bytes, so many straddle a block edge.
            let take = (usize::from(cuts[i % cuts.len()]) * 2).min(rest.len());
            md5.update(&rest[..take]);
            rest = &rest[take..];
            i += 1;
        }
        assert_eq!(md5.len(), data.len() as u64);
        assert_eq!(md5.finalize(), reference(&data), "split {seed}");
    }
}

#[test]
fn compress_matches_md5s_own_on_any_blocks() {
    let data = bytes(64 * 100, 3);
    let blocks = data.as_chunks::<64>().0;
    let mut ours = [1, 2, 3, 4];
    let mut theirs = ours;
    compress(&mut ours, blocks);
    md5::block_api::compress(&mut theirs, blocks);
    assert_eq!(ours, theirs);
}

#[test]
fn checkpoints_are_md5s_serialized_state_and_resume_either_way() {
    for len in [0, 1, 55, 56, 63, 64, 65, 127, 128, 1000, 4096 + 17] {
        let (head, tail) = {
            let data = bytes(len + 300, len as u64 + 11);
            let (h, t) = data.split_at(len);
            (h.to_vec(), t.to_vec())
        };
        let whole = reference(&[&head[..], &tail[..]].concat());

        let mut ours = Md5::new();
        ours.update(&head);
        let mut theirs = md5::Md5::new();
        theirs.update(&head);
        let serialized = theirs.serialize();
        assert_eq!(ours.checkpoint(), serialized.to_vec(), "{len} bytes");

        // md-5's checkpoint, resumed here.
        let mut resumed = Md5::from_checkpoint(&serialized).expect("md-5's state");
        resumed.update(&tail);
        assert_eq!(resumed.finalize(), whole, "{len} bytes, md-5 to ours");

        // Ours, resumed by md-5.
        let state = SerializedState::<md5::Md5>::try_from(&ours.checkpoint()[..]).unwrap();
        let mut resumed = md5::Md5::deserialize(&state).expect("our state");
        resumed.update(&tail);
        assert_eq!(
            <[u8; 16]>::from(resumed.finalize()),
            whole,
            "{len} bytes, ours to md-5"
        );
    }
}

#[test]
fn a_malformed_checkpoint_is_refused() {
    let mut md5 = Md5::new();
    md5.update(b"some bytes");
    let good = md5.checkpoint();
    assert!(Md5::from_checkpoint(&good).is_some());
    assert!(
        Md5::from_checkpoint(&good[..good.len() - 1]).is_none(),
        "short"
    );
    let mut long_tail = good.clone();
    long_tail[24] = 64;
    assert!(
        Md5::from_checkpoint(&long_tail).is_none(),
        "tail of a whole block"
    );
    let mut dirty = good;
    dirty[CHECKPOINT_LEN - 1] = 1;
    assert!(
        Md5::from_checkpoint(&dirty).is_none(),
        "bytes past the tail"
    );
}
