//! Float element types the mask supports, seen through the order-preserving key of `|x|`.
//!
//! Clearing the sign bit of an IEEE float gives an unsigned integer that orders exactly like
//! `|x|` for every non-NaN value (−0 and +0 share key 0), puts `+inf` above every finite value
//! and every NaN above `+inf`. Selection on these keys is therefore exact, needs no float
//! comparisons and treats NaN as the largest magnitude.

use burn::tensor::{DType, bf16, f16};

/// A float element whose `|x|` can be ranked through an integer key.
pub trait MaskElement: burn::tensor::Element + bytemuck::Pod {
    /// Width of the key in bits (the element's width); a multiple of [`DIGIT_BITS`].
    const KEY_BITS: u32;
    /// Key of `+inf`: keys at or above it belong to non-finite entries.
    const INF_KEY: u64;
    /// The burn dtype of this element.
    const DTYPE: DType;

    /// The order-preserving key of `|self|`.
    fn abs_key(self) -> u64;
    /// The non-negative value whose key is `key`.
    fn from_key(key: u64) -> Self;
    /// Positive zero.
    fn zero() -> Self;
    /// `self * factor`, computed in `f32` with `factor` rounded to `f32` for the 32- and 16-bit
    /// types (in `f64` for `f64`) and rounded once to this element type: what a GPU kernel
    /// computes too, so a rescaled random mask is identical on every backend.
    fn scale(self, factor: f64) -> Self;
    /// Widening conversion, exact for every supported type.
    fn to_f64(self) -> f64;
}

/// Bits of the radix digit one histogram pass resolves.
pub const DIGIT_BITS: u32 = 16;
/// Number of radix digits, hence digit bins of a histogram.
pub const DIGITS: usize = 1 << DIGIT_BITS;
/// Length of a histogram: the digit bins, then the count of entries whose key prefix is below
/// the requested prefix (what lets a caller count masked entries without an extra pass).
pub const HISTOGRAM_LEN: usize = DIGITS + 1;
/// Index of the "below the prefix" bin of a histogram.
pub const BELOW_PREFIX_BIN: usize = DIGITS;
/// Length of a selection buffer (an on-device radix selection in progress, see
/// [`MaskOps::radix_select_start`](crate::MaskOps::radix_select_start)): a histogram, then four
/// state words: the key prefix chosen so far, the rank still sought within it, the entries
/// below the prefix chosen so far (after the last digit: below the threshold) and the
/// non-finite entries (counted by the first digit step).
pub const SELECTION_LEN: usize = HISTOGRAM_LEN + 4;
/// Index of the key prefix in a selection buffer (the first state word).
pub const SELECTION_PREFIX: usize = HISTOGRAM_LEN;
/// Index of the remaining rank in a selection buffer.
pub const SELECTION_REMAINING: usize = HISTOGRAM_LEN + 1;
/// Index of the count of entries below the chosen prefix in a selection buffer.
pub const SELECTION_BELOW: usize = HISTOGRAM_LEN + 2;
/// Index of the count of non-finite entries in a selection buffer.
pub const SELECTION_NON_FINITE: usize = HISTOGRAM_LEN + 3;
/// State words of a selection buffer, from [`SELECTION_PREFIX`] on.
pub const SELECTION_STATE_LEN: usize = 4;
/// Largest tensor selected in one step by
/// [`MaskOps::radix_select_small`](crate::MaskOps::radix_select_small): on a GPU its keys fill
/// 16 KiB of one cube's shared memory.
pub const SMALL_SELECT_MAX_ENTRIES: usize = 4096;

macro_rules! impl_mask_element {
    ($ty:ty, $bits:ty, $key_bits:expr, $inf:expr, $dtype:expr,
     to_bits: $to_bits:expr, from_bits: $from_bits:expr, scale: $scale:expr, to_f64: $to_f64:expr) => {
        impl MaskElement for $ty {
            const KEY_BITS: u32 = $key_bits;
            const INF_KEY: u64 = $inf;
            const DTYPE: DType = $dtype;

            #[inline(always)]
            fn abs_key(self) -> u64 {
                let sign: $bits = 1 << ($key_bits - 1);
                ($to_bits(self) & !sign) as u64
            }
            #[inline(always)]
            fn from_key(key: u64) -> Self {
                $from_bits(key as $bits)
            }
            #[inline(always)]
            fn zero() -> Self {
                $from_bits(0)
            }
            #[inline(always)]
            fn scale(self, factor: f64) -> Self {
                $scale(self, factor)
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                $to_f64(self)
            }
        }
    };
}

impl_mask_element!(f32, u32, 32, 0x7F80_0000, DType::F32,
    to_bits: f32::to_bits, from_bits: f32::from_bits,
    scale: |x: f32, f: f64| x * f as f32, to_f64: |x: f32| x as f64);
impl_mask_element!(f64, u64, 64, 0x7FF0_0000_0000_0000, DType::F64,
    to_bits: f64::to_bits, from_bits: f64::from_bits,
    scale: |x: f64, f: f64| x * f, to_f64: |x: f64| x);
impl_mask_element!(f16, u16, 16, 0x7C00, DType::F16,
    to_bits: f16::to_bits, from_bits: f16::from_bits,
    scale: |x: f16, f: f64| f16::from_f32(x.to_f32() * f as f32), to_f64: |x: f16| x.to_f64());
impl_mask_element!(bf16, u16, 16, 0x7F80, DType::BF16,
    to_bits: bf16::to_bits, from_bits: bf16::from_bits,
    scale: |x: bf16, f: f64| bf16::from_f32(x.to_f32() * f as f32), to_f64: |x: bf16| x.to_f64());

/// Key width in bits of a float dtype, or `None` for a dtype the mask does not support
/// (quantized and non-float dtypes).
pub fn key_bits(dtype: DType) -> Option<u32> {
    match dtype {
        DType::F32 => Some(f32::KEY_BITS),
        DType::F64 => Some(f64::KEY_BITS),
        DType::F16 => Some(f16::KEY_BITS),
        DType::BF16 => Some(bf16::KEY_BITS),
        _ => None,
    }
}

/// Key of `+inf` for a supported float dtype.
pub fn inf_key(dtype: DType) -> Option<u64> {
    match dtype {
        DType::F32 => Some(f32::INF_KEY),
        DType::F64 => Some(f64::INF_KEY),
        DType::F16 => Some(f16::INF_KEY),
        DType::BF16 => Some(bf16::INF_KEY),
        _ => None,
    }
}

/// The value of `key` in `dtype`, widened to `f64` (exact for every supported dtype).
pub fn key_to_f64(dtype: DType, key: u64) -> Option<f64> {
    match dtype {
        DType::F32 => Some(f32::from_key(key).to_f64()),
        DType::F64 => Some(f64::from_key(key)),
        DType::F16 => Some(f16::from_key(key).to_f64()),
        DType::BF16 => Some(bf16::from_key(key).to_f64()),
        _ => None,
    }
}

/// Runs `$body` with `$E` bound to the element type of `$dtype`; panics on an unsupported
/// dtype, which callers rule out earlier with [`key_bits`].
#[macro_export]
#[doc(hidden)]
macro_rules! with_mask_element {
    ($dtype:expr, $E:ident => $body:block) => {
        match $dtype {
            burn::tensor::DType::F32 => {
                type $E = f32;
                $body
            }
            burn::tensor::DType::F64 => {
                type $E = f64;
                $body
            }
            burn::tensor::DType::F16 => {
                type $E = burn::tensor::f16;
                $body
            }
            burn::tensor::DType::BF16 => {
                type $E = burn::tensor::bf16;
                $body
            }
            other => panic!("gradient masking does not support dtype {other:?}"),
        }
    };
}
