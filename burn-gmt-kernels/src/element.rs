//! Float element types the mask supports, seen through the order-preserving key of `|x|`.
//!
//! Clearing the sign bit of an IEEE float gives an unsigned integer that orders exactly like
//! `|x|` for every non-NaN value (−0 and +0 share key 0) and puts `+inf` above every finite
//! value. Every NaN, whatever its sign and payload, gets the one key just above `+inf`
//! ([`MaskElement::NAN_KEY`]): devices differ in what they do with NaN payloads (CUDA turns an
//! f16 NaN widened to f32 into `0x7FFF_FFFF`, the host keeps its payload), and a key must not
//! depend on that. Selection on these keys is therefore exact, needs no float comparisons,
//! treats NaN as the largest magnitude and gives the same histograms on every backend.

use burn::tensor::{DType, bf16, f16};

/// A float element whose `|x|` can be ranked through an integer key.
pub trait MaskElement: burn::tensor::Element + bytemuck::Pod {
    /// Width of the key in bits (the element's width); a multiple of
    /// [`DIGIT_BITS`](crate::buffer::DIGIT_BITS).
    const KEY_BITS: u32;
    /// Key of `+inf`: keys at or above it belong to non-finite entries.
    const INF_KEY: u64;
    /// Key of every NaN (`INF_KEY + 1`), whatever its sign and payload.
    const NAN_KEY: u64 = Self::INF_KEY + 1;
    /// The burn dtype of this element.
    const DTYPE: DType;

    /// The element's bits as an unsigned integer of its own width.
    type AbsBits: Copy + Ord + Default + Into<u64> + Send + Sync + bytemuck::Pod;

    /// The order-preserving key of `|self|`; [`NAN_KEY`](Self::NAN_KEY) for every NaN.
    fn abs_key(self) -> u64;
    /// The sign-cleared bits of `self`, in the element's own width: they order like `|self|`
    /// below `+inf` and put every NaN above it, which is all a comparison against a threshold
    /// key (at most [`INF_KEY`](Self::INF_KEY)) needs. Native-width compares vectorise.
    fn abs_bits(self) -> Self::AbsBits;
    /// A key of at most [`INF_KEY`](Self::INF_KEY) in the element's own width, to compare
    /// [`abs_bits`](Self::abs_bits) against.
    fn key_bits(key: u64) -> Self::AbsBits;
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

macro_rules! impl_mask_element {
    ($ty:ty, $bits:ty, $key_bits:expr, $inf:expr, $dtype:expr,
     to_bits: $to_bits:expr, from_bits: $from_bits:expr, scale: $scale:expr, to_f64: $to_f64:expr) => {
        impl MaskElement for $ty {
            const KEY_BITS: u32 = $key_bits;
            const INF_KEY: u64 = $inf;
            const DTYPE: DType = $dtype;
            type AbsBits = $bits;

            #[inline(always)]
            fn abs_key(self) -> u64 {
                // Any NaN payload folds onto the one NaN key just above +inf (in the element's
                // own width, where the min vectorises).
                self.abs_bits().min(Self::NAN_KEY as $bits) as u64
            }
            #[inline(always)]
            fn abs_bits(self) -> $bits {
                let sign: $bits = 1 << ($key_bits - 1);
                $to_bits(self) & !sign
            }
            #[inline(always)]
            fn key_bits(key: u64) -> $bits {
                assert!(
                    key <= Self::NAN_KEY,
                    "gradient mask: key {key:#x} above the NaN key"
                );
                key as $bits
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

#[cfg(test)]
mod tests {
    use super::*;

    /// NaN bit patterns of every kind: quiet and signalling, both signs, several payloads.
    fn nan_bits(bits: u32) -> Vec<u64> {
        let exp_mask: u64 = match bits {
            16 => 0x7C00,
            32 => 0x7F80_0000,
            _ => unreachable!(),
        };
        let man_bits = if bits == 16 { 10 } else { 23 };
        let sign = 1u64 << (bits - 1);
        let quiet = 1u64 << (man_bits - 1);
        let top = (1u64 << man_bits) - 1;
        [quiet, 1, quiet | 1, top, quiet | 0x5, top ^ quiet]
            .into_iter()
            .flat_map(|payload| [exp_mask | payload, sign | exp_mask | payload])
            .collect()
    }

    #[test]
    fn every_nan_has_the_one_nan_key() {
        for bits in nan_bits(32) {
            let x = f32::from_bits(bits as u32);
            assert!(x.is_nan());
            assert_eq!(x.abs_key(), f32::NAN_KEY, "f32 {bits:#x}");
        }
        let f16_nans = nan_bits(16);
        for &bits in &f16_nans {
            let x = f16::from_bits(bits as u16);
            assert!(x.is_nan());
            assert_eq!(x.abs_key(), f16::NAN_KEY, "f16 {bits:#x}");
        }
        // bf16 has f32's exponent over an 7-bit mantissa: the top halves of f32 NaNs.
        for bits in nan_bits(32).into_iter().map(|b| b >> 16) {
            let x = bf16::from_bits(bits as u16);
            if x.is_nan() {
                assert_eq!(x.abs_key(), bf16::NAN_KEY, "bf16 {bits:#x}");
            }
        }
        for payload in [1u64, 0x8_0000_0000_0000, 0xF_FFFF_FFFF_FFFF] {
            for sign in [0, 1u64 << 63] {
                let x = f64::from_bits(sign | 0x7FF0_0000_0000_0000 | payload);
                assert_eq!(x.abs_key(), f64::NAN_KEY);
            }
        }
        assert_eq!(f32::NAN_KEY, 0x7F80_0001);
        assert_eq!(f16::NAN_KEY, 0x7C01);
        assert_eq!(bf16::NAN_KEY, 0x7F81);
    }

    #[test]
    fn keys_order_like_magnitudes() {
        // Every f16 pattern against an f64 sort of the magnitudes (NaN above +inf).
        let mut values: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
        values.sort_by(|a, b| {
            let (a, b) = (a.to_f64().abs(), b.to_f64().abs());
            match (a.is_nan(), b.is_nan()) {
                (false, false) => a.partial_cmp(&b).unwrap(),
                (x, y) => x.cmp(&y),
            }
        });
        for pair in values.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let same = a.to_f64().abs() == b.to_f64().abs() || (a.is_nan() && b.is_nan());
            if same {
                assert_eq!(a.abs_key(), b.abs_key(), "{a} {b}");
            } else {
                assert!(a.abs_key() < b.abs_key(), "{a} {b}");
            }
        }
        assert_eq!((-0.0f32).abs_key(), 0.0f32.abs_key());
        assert_eq!(f32::INFINITY.abs_key(), f32::INF_KEY);
        assert_eq!(f32::NEG_INFINITY.abs_key(), f32::INF_KEY);
        assert!(f32::MAX.abs_key() < f32::INF_KEY);
        assert_eq!(f32::from_bits(1).abs_key(), 1);
    }

    /// Comparing native-width bits against a threshold decides as comparing keys does, for
    /// every f16 pattern (NaN payloads included) and thresholds up to +inf.
    #[test]
    fn native_bits_compare_like_keys() {
        for threshold in [0u64, 1, 0x3C00, 0x7BFF, f16::INF_KEY] {
            for bits in 0..=u16::MAX {
                let x = f16::from_bits(bits);
                let below = x.abs_bits() < f16::key_bits(threshold);
                assert_eq!(
                    below,
                    x.abs_key() < threshold,
                    "{bits:#x} vs {threshold:#x}"
                );
            }
        }
        for x in [
            f32::NAN,
            -f32::NAN,
            f32::from_bits(0x7F80_0001),
            f32::INFINITY,
            1.0,
            -0.0,
        ] {
            let inf = f32::key_bits(f32::INF_KEY);
            assert_eq!(x.abs_bits() >= inf, x.abs_key() >= f32::INF_KEY, "{x}");
        }
    }

    #[test]
    fn keys_round_trip_through_values() {
        for key in [0u64, 1, 0x3C00, 0x7BFF, 0x7C00] {
            assert_eq!(f16::from_key(key).abs_key(), key);
            assert_eq!(
                key_to_f64(DType::F16, key),
                Some(f16::from_key(key).to_f64())
            );
        }
        for x in [0.0f32, 1e-45, 0.375, 3.4e38, f32::INFINITY] {
            assert_eq!(f32::from_key(x.abs_key()), x);
            assert_eq!(key_to_f64(DType::F32, x.abs_key()), Some(x as f64));
        }
        assert_eq!(key_bits(DType::BF16), Some(16));
        assert_eq!(inf_key(DType::F64), Some(f64::INF_KEY));
        assert_eq!(key_bits(DType::I32), None);
        assert_eq!(bf16::from_f64(-3.0).scale(0.5).to_f64(), -1.5);
    }
}
