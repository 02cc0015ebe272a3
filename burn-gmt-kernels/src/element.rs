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
    /// Width of the key in bits (the element's width); a multiple of [`DIGIT_BITS`].
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

/// Bits of the radix digit one histogram pass resolves.
pub const DIGIT_BITS: u32 = 16;
/// Number of radix digits, hence digit bins of a histogram.
pub const DIGITS: usize = 1 << DIGIT_BITS;
/// Length of a histogram: the digit bins, then the count of entries whose key prefix is below
/// the requested prefix (what lets a caller count masked entries without an extra pass).
pub const HISTOGRAM_LEN: usize = DIGITS + 1;
/// Index of the "below the prefix" bin of a histogram.
pub const BELOW_PREFIX_BIN: usize = DIGITS;
/// Words of a selection's state ([`SelectionState`]): what a one-step selection returns and
/// what a selection buffer begins with.
pub const SELECTION_STATE_LEN: usize = 4;
/// Length of one segment of a selection buffer (an on-device radix selection in progress,
/// see [`MaskOps::radix_select_start`](crate::MaskOps::radix_select_start)): the state words,
/// then a histogram. A buffer holds one segment per selection made together. Read a segment
/// with [`SelectionState::from_words`] and [`selection_histogram`].
pub const SELECTION_LEN: usize = SELECTION_STATE_LEN + HISTOGRAM_LEN;
/// Most selections one selection buffer holds: 256 segments are 64 MiB of counters (a model
/// with more tensors is selected in several buffers, one after the other).
pub const SELECTION_MAX_SEGMENTS: usize = 256;

/// The selections held by `len` counters: a selection buffer's segments, or 1 for the state
/// words alone (what a one-step selection returns).
///
/// # Panics
/// If `len` is neither [`SELECTION_STATE_LEN`] nor a positive multiple of [`SELECTION_LEN`].
pub fn selection_segments(len: usize) -> usize {
    match len {
        SELECTION_STATE_LEN => 1,
        _ if len > 0 && len.is_multiple_of(SELECTION_LEN) => len / SELECTION_LEN,
        _ => panic!("gradient mask: {len} counters are not a selection buffer"),
    }
}

/// Where the words of selection `segment` begin in a buffer of `len` counters
/// ([`selection_segments`]): `segment` segments in.
pub fn selection_segment_start(len: usize, segment: usize) -> usize {
    match len {
        SELECTION_STATE_LEN => segment * SELECTION_STATE_LEN,
        _ => segment * SELECTION_LEN,
    }
}
// Where the state words and the histogram sit in a selection buffer; the kernels and the host
// bodies use these, everything else reads a `SelectionState`.
pub(crate) const STATE_KEY: usize = 0;
pub(crate) const STATE_REMAINING: usize = 1;
pub(crate) const STATE_BELOW: usize = 2;
pub(crate) const STATE_NON_FINITE: usize = 3;
pub(crate) const SELECTION_HISTOGRAM: usize = SELECTION_STATE_LEN;

/// Where an exact selection stands: during a radix selection, the key prefix chosen so far;
/// at its end, the selected key and the counts that give a gradient's statistics with no
/// counting pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SelectionState {
    /// The key prefix chosen so far; at the end, the selected key (NaN ranks above `+inf`,
    /// every NaN as [`MaskElement::NAN_KEY`]).
    pub key: u64,
    /// The rank still sought among the entries that share the prefix; at the end, the place
    /// of the sought rank among the ties of `key`.
    pub remaining: u64,
    /// Entries whose key is below the prefix; at the end, below `key`.
    pub below: u64,
    /// NaN and infinite entries (counted by the first digit step).
    pub non_finite: u64,
}

impl SelectionState {
    /// The state at the start of a selection of the `(rank + 1)`-th smallest key.
    pub fn start(rank: u64) -> Self {
        Self {
            remaining: rank,
            ..Self::default()
        }
    }

    /// The state held by the first [`SELECTION_STATE_LEN`] words of `words`: a selection
    /// buffer or the state words of a one-step selection, both of which begin with it.
    ///
    /// # Panics
    /// If `words` is shorter than [`SELECTION_STATE_LEN`].
    pub fn from_words(words: &[u64]) -> Self {
        assert!(
            words.len() >= SELECTION_STATE_LEN,
            "gradient mask: a selection state has {SELECTION_STATE_LEN} words, got {}",
            words.len()
        );
        Self {
            key: words[STATE_KEY],
            remaining: words[STATE_REMAINING],
            below: words[STATE_BELOW],
            non_finite: words[STATE_NON_FINITE],
        }
    }

    /// The state as its words, in the order [`from_words`](Self::from_words) reads them.
    pub fn to_words(self) -> [u64; SELECTION_STATE_LEN] {
        let mut words = [0; SELECTION_STATE_LEN];
        words[STATE_KEY] = self.key;
        words[STATE_REMAINING] = self.remaining;
        words[STATE_BELOW] = self.below;
        words[STATE_NON_FINITE] = self.non_finite;
        words
    }

    /// Entries below the selected threshold of a finished selection of a tensor of `total`
    /// entries, `key` taken at most `inf_key` (a threshold of `+inf` masks every finite entry,
    /// which "below" does not count when the sought rank fell among the non-finite keys).
    pub fn masked(&self, total: u64, inf_key: u64) -> u64 {
        if self.key >= inf_key {
            total - self.non_finite
        } else {
            self.below
        }
    }
}

/// The histogram of a selection buffer (its words after the state).
pub fn selection_histogram(words: &[u64]) -> &[u64] {
    &words[SELECTION_HISTOGRAM..]
}

/// Largest tensor selected in one step by
/// [`MaskOps::abs_key_select`](crate::MaskOps::abs_key_select): on a GPU its keys fill
/// 16 KiB of one cube's shared memory.
pub const SMALL_SELECT_MAX_ENTRIES: usize = 4096;

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
                debug_assert!(key <= Self::NAN_KEY);
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

    #[test]
    fn a_selection_state_reads_from_a_buffer_or_its_state_words() {
        let state = SelectionState {
            key: 0x3F80,
            remaining: 2,
            below: 7,
            non_finite: 1,
        };
        let mut buffer = vec![0u64; SELECTION_LEN];
        buffer[..SELECTION_STATE_LEN].copy_from_slice(&state.to_words());
        buffer[SELECTION_HISTOGRAM + 5] = 9;
        assert_eq!(SelectionState::from_words(&buffer), state);
        assert_eq!(SelectionState::from_words(&state.to_words()), state);
        assert_eq!(selection_histogram(&buffer).len(), HISTOGRAM_LEN);
        assert_eq!(selection_histogram(&buffer)[5], 9);
        assert_eq!(SelectionState::start(11).to_words(), [0, 11, 0, 0]);
        // Below `+inf` the masked entries are those below the key; at `+inf`, every finite one.
        assert_eq!(state.masked(10, f32::INF_KEY), 7);
        let at_inf = SelectionState {
            key: f32::NAN_KEY,
            ..state
        };
        assert_eq!(at_inf.masked(10, f32::INF_KEY), 9);
    }

    #[test]
    #[should_panic(expected = "a selection state has 4 words")]
    fn a_short_state_is_refused() {
        SelectionState::from_words(&[1, 2, 3]);
    }
}
