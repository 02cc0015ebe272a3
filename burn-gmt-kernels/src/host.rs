//! Host (CPU) implementations of the mask operations on plain slices.
//!
//! These are what the CPU backends run and the fallback every other backend reaches through
//! [`MaskOps`](crate::MaskOps)'s default bodies. Each is one linear pass: selection is a radix
//! select over the keys of `|x|` (see [`element`](crate::element)), never a sort.

use crate::element::{BELOW_PREFIX_BIN, DIGIT_BITS, DIGITS, HISTOGRAM_LEN, MaskElement};
use crate::random::is_drawn;

/// Key bits above the digit of a pass that starts at bit `shift` (0 when none are left).
#[inline(always)]
fn high_bits(key: u64, shift: u32) -> u64 {
    key.checked_shr(shift + DIGIT_BITS).unwrap_or(0)
}

/// Adds to `hist` (length [`HISTOGRAM_LEN`]) the radix histogram of `|x|` for one pass.
///
/// Entries whose key bits above `shift + 16` equal `prefix` are counted in the bin of their
/// 16-bit digit `(key >> shift) & 0xFFFF`; entries whose high bits are below `prefix` are
/// counted in [`BELOW_PREFIX_BIN`]; the others are ignored.
pub fn abs_key_histogram<E: MaskElement>(values: &[E], shift: u32, prefix: u64, hist: &mut [u64]) {
    assert_eq!(hist.len(), HISTOGRAM_LEN, "histogram length");
    let digit_mask = (DIGITS - 1) as u64;
    if shift + DIGIT_BITS >= E::KEY_BITS && prefix == 0 {
        // First pass: every entry is in the prefix. Count in u32 (a 256 KiB table that stays
        // in L2), flushing before a bin could overflow.
        let mut local = vec![0u32; DIGITS];
        for chunk in values.chunks(u32::MAX as usize) {
            for &x in chunk {
                local[((x.abs_key() >> shift) & digit_mask) as usize] += 1;
            }
            for (total, count) in hist.iter_mut().zip(local.iter_mut()) {
                *total += *count as u64;
                *count = 0;
            }
        }
        return;
    }
    let mut below = 0u64;
    for &x in values {
        let key = x.abs_key();
        let high = high_bits(key, shift);
        if high == prefix {
            hist[((key >> shift) & digit_mask) as usize] += 1;
        } else if high < prefix {
            below += 1;
        }
    }
    hist[BELOW_PREFIX_BIN] += below;
}

/// Zeroes, in place, the entries whose `|x|` key is below `threshold_key`.
///
/// Callers keep `threshold_key` at most the key of `+inf`, so NaN and ±inf are never zeroed.
pub fn abs_threshold_mask<E: MaskElement>(values: &mut [E], threshold_key: u64) {
    let zero = E::zero();
    for x in values.iter_mut() {
        if x.abs_key() < threshold_key {
            *x = zero;
        }
    }
}

/// Writes into `updated` the entries of `previous` where the gradient's `|g|` key is below
/// `threshold_key` (those parameters must not move), leaving the rest of `updated` as is.
pub fn abs_threshold_select<E: MaskElement>(
    grad: &[E],
    threshold_key: u64,
    updated: &mut [E],
    previous: &[E],
) {
    assert!(grad.len() == updated.len() && grad.len() == previous.len(), "select lengths");
    for ((g, u), p) in grad.iter().zip(updated.iter_mut()).zip(previous) {
        if g.abs_key() < threshold_key {
            *u = *p;
        }
    }
}

/// Counts of a random mask: entries masked, and non-finite entries (never masked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RandomMaskCounts {
    /// Entries drawn and zeroed.
    pub masked: u64,
    /// NaN or infinite entries, kept whatever their draw.
    pub non_finite: u64,
}

/// What the random mask does to one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RandomDecision {
    NonFinite,
    Masked,
    Kept,
}

#[inline(always)]
fn random_decision<E: MaskElement>(x: E, index: usize, key: u64, bound: u64) -> RandomDecision {
    if x.abs_key() >= E::INF_KEY {
        RandomDecision::NonFinite
    } else if is_drawn(key, index as u64, bound) {
        RandomDecision::Masked
    } else {
        RandomDecision::Kept
    }
}

impl RandomMaskCounts {
    fn add(&mut self, decision: RandomDecision) {
        match decision {
            RandomDecision::NonFinite => self.non_finite += 1,
            RandomDecision::Masked => self.masked += 1,
            RandomDecision::Kept => {}
        }
    }
}

/// Applies the random mask in place: entry `i` (row-major index) is zeroed when drawn under
/// `(key, bound)` and finite; kept finite entries are multiplied by `scale` (1: no rescaling).
pub fn random_mask<E: MaskElement>(
    values: &mut [E],
    key: u64,
    bound: u64,
    scale: f64,
) -> RandomMaskCounts {
    let mut counts = RandomMaskCounts::default();
    for (index, x) in values.iter_mut().enumerate() {
        let decision = random_decision(*x, index, key, bound);
        match decision {
            RandomDecision::Masked => *x = E::zero(),
            RandomDecision::Kept if scale != 1.0 => *x = x.scale(scale),
            _ => {}
        }
        counts.add(decision);
    }
    counts
}

/// Counts what [`random_mask`] would do, without writing.
pub fn random_mask_count<E: MaskElement>(values: &[E], key: u64, bound: u64) -> RandomMaskCounts {
    let mut counts = RandomMaskCounts::default();
    for (index, &x) in values.iter().enumerate() {
        counts.add(random_decision(x, index, key, bound));
    }
    counts
}
