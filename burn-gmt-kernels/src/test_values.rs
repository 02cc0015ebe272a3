//! Inputs the unit tests share.

use crate::random::mix64;

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
    (0..n as u64)
        .map(|i| {
            let draw = mix64(seed ^ mix64(i));
            match draw % 10 {
                0 | 1 => special[((draw >> 8) % special.len() as u64) as usize],
                _ => ((draw >> 16) % 8_000) as f32 / 1_000.0 - 4.0,
            }
        })
        .collect()
}
