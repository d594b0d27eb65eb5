//! The MD5 compression function (RFC 1321), arranged for a short critical path.
//!
//! Each step computes `a = b + rotl(a + f(b, c, d) + m + k, s)`, and the next step needs
//! the new `a` at once: the steps form one long chain, and the chain's length is the
//! hash's speed. Only `f(b, ..)` and what follows it must wait for `b`; `a + m + k` can
//! be summed while earlier steps run. Left alone, the compiler folds the four additions
//! into a chain that starts from `f`, putting all of them on the critical path; passing
//! `a + m + k` through an empty assembly block ([`opaque`]) keeps it a value of its own,
//! summed beforehand. That alone makes MD5 about a quarter faster on x86-64.
//! ([`std::hint::black_box`] does the same on paper, but it goes through memory, and what
//! it bought depended on how the calling crate was built (figures: BENCHMARKS.md, "Measurements behind choices in the code").)

#[rustfmt::skip]
const K: [u32; 64] = [
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
];

/// `a + m + k`, summed off the critical path (see the module's comment).
#[inline(always)]
fn ahead(a: u32, m: u32, k: u32) -> u32 {
    opaque(a.wrapping_add(m).wrapping_add(k))
}

/// `x`, as a value the compiler cannot look through: it stays in a register, and is not
/// merged into the additions around it.
#[inline(always)]
fn opaque(mut x: u32) -> u32 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the assembly is empty; it only names `x`'s register, and reads or writes
    // no memory, stack or flags.
    unsafe {
        std::arch::asm!("/* {0:e} */", inout(reg) x, options(pure, nomem, nostack, preserves_flags));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as above.
    unsafe {
        std::arch::asm!("/* {0:w} */", inout(reg) x, options(pure, nomem, nostack, preserves_flags));
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        x = std::hint::black_box(x);
    }
    x
}

/// One step: `b + rotl(f + a + m + k, s)`.
#[inline(always)]
fn step(f: u32, ahead: u32, b: u32, s: u32) -> u32 {
    f.wrapping_add(ahead).rotate_left(s).wrapping_add(b)
}

// The four rounds' functions, each written so that `b`, the newest value, enters last.

#[inline(always)]
fn ff(a: u32, b: u32, c: u32, d: u32, m: u32, k: u32, s: u32) -> u32 {
    // (b & c) | (!b & d), in two operations after `b`.
    step(d ^ (b & (c ^ d)), ahead(a, m, k), b, s)
}

#[inline(always)]
fn gg(a: u32, b: u32, c: u32, d: u32, m: u32, k: u32, s: u32) -> u32 {
    // (b & d) | (c & !d): the two masks share no bit, so | is + and `c & !d` goes
    // into the early sum.
    step(b & d, ahead(a, m, k).wrapping_add(c & !d), b, s)
}

#[inline(always)]
fn hh(a: u32, b: u32, c: u32, d: u32, m: u32, k: u32, s: u32) -> u32 {
    step(b ^ (c ^ d), ahead(a, m, k), b, s)
}

#[inline(always)]
fn ii(a: u32, b: u32, c: u32, d: u32, m: u32, k: u32, s: u32) -> u32 {
    step(c ^ (b | !d), ahead(a, m, k), b, s)
}

/// Compresses `blocks` into `state`, as md-5's `block_api::compress` does.
pub fn compress(state: &mut [u32; 4], blocks: &[[u8; 64]]) {
    for block in blocks {
        compress_block(state, block);
    }
}

#[inline]
fn compress_block(state: &mut [u32; 4], block: &[u8; 64]) {
    let mut m = [0u32; 16];
    // Byte by byte: words taken with `as_chunks` let the compiler fold the loads into
    // the additions, which measured slower (BENCHMARKS.md).
    for (word, bytes) in m.iter_mut().zip(block.chunks_exact(4)) {
        *word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    let [mut a, mut b, mut c, mut d] = *state;

    // One round: the round's function `$f` and its four rotations, then each group of
    // four steps as (first round constant, message words), written out in full.
    macro_rules! round {
        ($f:ident, [$s0:expr, $s1:expr, $s2:expr, $s3:expr], $( ($k:expr, [$m0:expr, $m1:expr, $m2:expr, $m3:expr]) ),+) => {
            $(
                a = $f(a, b, c, d, m[$m0], K[$k], $s0);
                d = $f(d, a, b, c, m[$m1], K[$k + 1], $s1);
                c = $f(c, d, a, b, m[$m2], K[$k + 2], $s2);
                b = $f(b, c, d, a, m[$m3], K[$k + 3], $s3);
            )+
        };
    }

    #[rustfmt::skip]
    round!(ff, [7, 12, 17, 22], (0, [0, 1, 2, 3]), (4, [4, 5, 6, 7]), (8, [8, 9, 10, 11]), (12, [12, 13, 14, 15]));
    #[rustfmt::skip]
    round!(gg, [5, 9, 14, 20], (16, [1, 6, 11, 0]), (20, [5, 10, 15, 4]), (24, [9, 14, 3, 8]), (28, [13, 2, 7, 12]));
    #[rustfmt::skip]
    round!(hh, [4, 11, 16, 23], (32, [5, 8, 11, 14]), (36, [1, 4, 7, 10]), (40, [13, 0, 3, 6]), (44, [9, 12, 15, 2]));
    #[rustfmt::skip]
    round!(ii, [6, 10, 15, 21], (48, [0, 7, 14, 5]), (52, [12, 3, 10, 1]), (56, [8, 15, 6, 13]), (60, [4, 11, 2, 9]));

    state[0] = state[0].wrapping_add(a);
    state[1] = state[1].wrapping_add(b);
    state[2] = state[2].wrapping_add(c);
    state[3] = state[3].wrapping_add(d);
}
