//! The order-preserving key of `|x|` inside a kernel (see [`crate::element`]).
//!
//! A key is computed from the value's bits, never by float comparison, so the kernels agree
//! with the host bit for bit: subnormals are ranked even on a device that flushes them in
//! arithmetic, and every NaN gets the one key just above `+inf`, whatever payload the device
//! gives it (CUDA widens an f16 NaN to `0x7FFF_FFFF`, lavapipe keeps the payload).
//!
//! 32-bit floats reinterpret their bits. The 16-bit floats are widened to `f32` first (exact,
//! and a `u16` type does not exist on every runtime, WGSL among them): the `f32` key orders
//! exactly like the 16-bit key, which is enough to compare against a threshold, and
//! [`narrow_key`] rebuilds the 16-bit key itself where a histogram needs its digits.

#[cfg(not(gmt_cuda_codegen))]
use burn::tensor::DType;
use cubecl::prelude::*;

/// The float dtypes a kernel keys, a comptime value of every kernel that reads gradients: it
/// picks how [`wide_key`], [`narrow_key`] and [`value_of_key`] read and build bits, and each
/// dtype compiles to its own kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// `f32`: the key is the bits with the sign cleared.
    F32,
    /// `f16`, keyed through its exact `f32` widening.
    F16,
    /// `bf16`, keyed through its exact `f32` widening.
    Bf16,
}

impl KeyKind {
    /// The kind of `dtype`, or `None` for a dtype without kernels (`f64` and the integers).
    #[cfg(not(gmt_cuda_codegen))]
    pub fn of(dtype: DType) -> Option<Self> {
        match dtype {
            DType::F32 => Some(Self::F32),
            DType::F16 => Some(Self::F16),
            DType::BF16 => Some(Self::Bf16),
            _ => None,
        }
    }

    /// Bits of the key of the element's own width ([`narrow_key`]).
    pub fn key_bits(self) -> u32 {
        match self {
            Self::F32 => 32,
            Self::F16 | Self::Bf16 => 16,
        }
    }
}

/// Key of `+inf` as a widened `f32` key: every NaN and ±inf key is at or above it.
pub const WIDE_INF_KEY: u32 = 0x7F80_0000;
/// The wide key of every NaN: one above [`WIDE_INF_KEY`].
pub const WIDE_NAN_KEY: u32 = WIDE_INF_KEY + 1;

/// Sign-cleared `f32` bits of `x`, widened to `f32` first when `F` is a 16-bit float
/// (`kind` is not [`KeyKind::F32`]), with every NaN folded onto [`WIDE_NAN_KEY`]. Orders like
/// `|x|`, NaN above `+inf`.
#[cube]
pub fn wide_key<F: Float, N: Size>(x: Vector<F, N>, #[comptime] kind: KeyKind) -> Vector<u32, N> {
    let bits = if comptime!(kind == KeyKind::F32) {
        Vector::<u32, N>::reinterpret(x)
    } else {
        Vector::<u32, N>::reinterpret(Vector::<f32, N>::cast_from(x))
    };
    min(
        bits & Vector::new(0x7FFF_FFFFu32),
        Vector::new(WIDE_NAN_KEY),
    )
}

/// The key of the element's own width ([`crate::element::MaskElement::abs_key`]) from its
/// [`wide_key`]: unchanged for `f32`; for `f16` and `bf16`, the 16-bit pattern of the value
/// the widened `f32` holds (exact: every 16-bit value is an `f32`).
#[cube]
pub fn narrow_key(wide: u32, #[comptime] kind: KeyKind) -> u32 {
    let mut key = wide;
    if comptime!(kind == KeyKind::Bf16) {
        // bf16 is the high half of an f32; the NaN key's low bit makes 0x7F81, bf16's NaN key.
        key = (wide >> 16u32) | (wide & 1u32);
    } else if comptime!(kind == KeyKind::F16) {
        let exp = wide >> 23u32;
        let man = wide & 0x7F_FFFFu32;
        key = 0u32;
        if exp == 255u32 {
            // +inf (man 0) is 0x7C00; the NaN key (man 1) is 0x7C01, f16's NaN key.
            key = 0x7C00u32 | man;
        } else if exp >= 113u32 {
            // Normal f16: exponents 1..=30 are f32 exponents 113..=142.
            key = ((exp - 112u32) << 10u32) | (man >> 13u32);
        } else if exp >= 103u32 {
            // Subnormal f16 (m * 2^-24): a normal f32 with exponent 103..=112.
            key = (man | 0x80_0000u32) >> (126u32 - exp);
        }
    }
    key
}

/// The non-negative value whose key of the element's own width is `key` (the inverse of
/// [`narrow_key`] after [`wide_key`]), built as `f32` bits and converted exactly to `F`.
#[cube]
pub fn value_of_key<F: Float>(key: u32, #[comptime] kind: KeyKind) -> F {
    let mut bits = key;
    if comptime!(kind == KeyKind::Bf16) {
        bits = key << 16u32;
    } else if comptime!(kind == KeyKind::F16) {
        let exp = key >> 10u32;
        let man = key & 0x3FFu32;
        if exp == 31u32 {
            bits = 0x7F80_0000u32 | (man << 13u32);
        } else if exp > 0u32 {
            bits = ((exp + 112u32) << 23u32) | (man << 13u32);
        } else if man == 0u32 {
            bits = 0u32;
        } else {
            // Subnormal f16, man * 2^-24: normalise the mantissa into an f32 exponent.
            let mut m = man;
            let mut e = 113u32;
            while m < 0x400u32 {
                m <<= 1u32;
                e -= 1u32;
            }
            bits = (e << 23u32) | ((m & 0x3FFu32) << 13u32);
        }
    }
    F::cast_from(f32::reinterpret(bits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_cover_the_float_dtypes_with_kernels() {
        assert_eq!(KeyKind::of(DType::F32), Some(KeyKind::F32));
        assert_eq!(KeyKind::of(DType::F16), Some(KeyKind::F16));
        assert_eq!(KeyKind::of(DType::BF16), Some(KeyKind::Bf16));
        assert_eq!(KeyKind::of(DType::F64), None);
        assert_eq!(KeyKind::of(DType::U32), None);
        assert_eq!(KeyKind::F32.key_bits(), 32);
        assert_eq!(KeyKind::F16.key_bits(), 16);
        assert_eq!(KeyKind::Bf16.key_bits(), 16);
    }
}
