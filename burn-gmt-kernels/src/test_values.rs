//! Inputs the unit tests share.

use crate::random::mix64;

/// `n` values, about a fifth drawn from `special` and the rest made by `spread` from a draw;
/// `seed` picks the sequence.
fn awkward<T: Copy>(n: usize, seed: u64, special: &[T], spread: impl Fn(u64) -> T) -> Vec<T> {
    (0..n as u64)
        .map(|i| {
            let draw = mix64(seed ^ mix64(i));
            match draw % 10 {
                0 | 1 => special[((draw >> 8) % special.len() as u64) as usize],
                _ => spread(draw),
            }
        })
        .collect()
}

/// `n` f32 values, about a fifth of them awkward for a key (NaN of several payloads and signs,
/// infinities, the smallest subnormal, signed zeros, ties at ±1), the rest spread over
/// `[-4, 4)`; `seed` picks the sequence.
pub(crate) fn awkward_f32(n: usize, seed: u64) -> Vec<f32> {
    let special = [
        f32::NAN,
        -f32::NAN,
        f32::from_bits(0x7F80_0001),
        f32::from_bits(0xFFC0_1234),
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::from_bits(1),
        -0.0,
        0.0,
        1.0,
        -1.0,
    ];
    awkward(n, seed, &special, |draw| {
        ((draw >> 16) % 8_000) as f32 / 1_000.0 - 4.0
    })
}

/// `n` 16-bit float bits (f16 or bf16: +inf at `inf`, 1.0 at `one`), about a fifth awkward as
/// in [`awkward_f32`] (quiet and signalling NaN of several payloads and signs, infinities, the
/// smallest subnormal, signed zeros, ±1), the rest any finite value of either sign.
pub(crate) fn awkward_bits16(n: usize, seed: u64, inf: u16, one: u16) -> Vec<u16> {
    // The quiet bit is the top bit of the mantissa, just below the exponent's lowest bit.
    let quiet = inf | (inf & inf.wrapping_neg()) >> 1;
    let special = [
        quiet,
        0x8000 | quiet,
        inf + 1,
        inf | 0x15,
        0xFFFF,
        inf,
        0x8000 | inf,
        1,
        0x8000,
        0,
        one,
        0x8000 | one,
    ];
    awkward(n, seed, &special, |draw| {
        ((draw >> 16) % u64::from(inf)) as u16 | ((draw >> 40) as u16 & 0x8000)
    })
}
