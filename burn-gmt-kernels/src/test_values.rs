//! Inputs the unit tests share.

#[cfg(feature = "flex")]
use burn::backend::DispatchTensor;
#[cfg(feature = "flex")]
use burn::tensor::{DType, Device, Tensor, TensorData};

use crate::buffer::SelectionState;
use crate::element::MaskElement;
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

/// The reference: sort the keys.
pub(crate) fn by_sort<E: MaskElement>(values: &[E], rank: u64) -> SelectionState {
    let mut keys: Vec<u64> = values.iter().map(|x| x.abs_key()).collect();
    keys.sort_unstable();
    let key = keys[rank as usize];
    let below = keys.iter().filter(|&&k| k < key).count() as u64;
    SelectionState {
        key,
        remaining: rank - below,
        below,
        non_finite: keys.iter().filter(|&&k| k >= E::INF_KEY).count() as u64,
    }
}

pub(crate) fn uniform(seed: u64, i: u64) -> f64 {
    (mix64(seed ^ mix64(i)) >> 11) as f64 / (1u64 << 53) as f64
}

/// Inputs that exercise every branch: spread values, heavy ties (zeros, two values),
/// sorted and periodic data (a strided sample would alias with it), non-finite entries.
pub(crate) fn inputs(n: usize) -> Vec<(&'static str, Vec<f32>)> {
    let spread = (0..n as u64)
        .map(|i| ((uniform(1, i) - 0.5) * 1e-3 * (uniform(2, i) * 20.0).exp()) as f32)
        .collect();
    let zeros = (0..n as u64)
        .map(|i| {
            if uniform(3, i) < 0.8 {
                0.0
            } else {
                uniform(4, i) as f32
            }
        })
        .collect();
    let two = (0..n as u64)
        .map(|i| if uniform(5, i) < 0.5 { 0.25 } else { -0.5 })
        .collect();
    let sorted = (0..n).map(|i| i as f32).collect();
    let periodic = (0..n).map(|i| (i % 1024) as f32 - 512.0).collect();
    let mut special: Vec<f32> = (0..n as u64).map(|i| uniform(6, i) as f32).collect();
    for (i, v) in special.iter_mut().enumerate().step_by(97) {
        *v = [f32::NAN, f32::INFINITY, -f32::INFINITY, -f32::NAN][i % 4];
    }
    vec![
        ("spread", spread),
        ("zeros", zeros),
        ("two values", two),
        ("sorted", sorted),
        ("periodic", periodic),
        ("non-finite", special),
    ]
}

/// `values` (120,000 of them) in three parts of uneven sizes, one of a single entry: an
/// input read in parts, as several tensors are.
pub(crate) fn three_parts(values: &[f32]) -> [&[f32]; 3] {
    [
        &values[..70_000],
        &values[70_000..70_001],
        &values[70_001..],
    ]
}

/// `n` values with ties, zeros and non-finite entries, from a seed.
#[cfg(feature = "flex")]
pub(crate) fn mixed_values(n: usize, seed: u64) -> Vec<f64> {
    (0..n as u64)
        .map(|i| {
            let r = mix64(seed ^ mix64(i));
            match r % 23 {
                0 => 0.0,
                1 => -0.5,
                2 if i % 5 == 0 => [f64::NAN, f64::INFINITY, -f64::INFINITY][(r % 3) as usize],
                _ => ((r >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 4.0,
            }
        })
        .collect()
}

/// A gradient of `values` in `dtype` on the Flex device.
#[cfg(feature = "flex")]
pub(crate) fn gradient(values: &[f64], dtype: DType) -> DispatchTensor {
    gradient_on(values, dtype, &Device::flex())
}

/// A gradient of `values` in `dtype` on `device`.
#[cfg(feature = "flex")]
pub(crate) fn gradient_on(values: &[f64], dtype: DType, device: &Device) -> DispatchTensor {
    let data = TensorData::new(values.to_vec(), [values.len()]);
    Tensor::<1>::from_data(data, (device, dtype)).into_dispatch()
}
