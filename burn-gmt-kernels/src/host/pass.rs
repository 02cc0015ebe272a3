//! The one-read passes over a slice: a radix histogram, the threshold mask and its hold and
//! count, the random mask and its count. The hot loops of a CPU mask: each is written to
//! vectorise, over parallel chunks of at least [`PARALLEL_CHUNK`] entries.

use crate::buffer::{BELOW_PREFIX_BIN, DIGIT_BITS, DIGITS, HISTOGRAM_LEN};
use crate::element::MaskElement;
use crate::random::is_drawn;
use rayon::prelude::*;

/// Key bits above the digit of a pass that starts at bit `shift` (0 when none are left).
#[inline(always)]
fn high_bits(key: u64, shift: u32) -> u64 {
    key.checked_shr(shift + DIGIT_BITS).unwrap_or(0)
}

/// Fewest entries per parallel task: enough to pay for the task's own 256 KiB histogram.
pub(super) const PARALLEL_CHUNK: usize = 1 << 18;

/// Entries per parallel task: one task per thread, no smaller than [`PARALLEL_CHUNK`], and
/// below `u32::MAX` so a task's histogram can count in u32.
pub(super) fn task_len(n: usize) -> usize {
    n.div_ceil(rayon::current_num_threads())
        .clamp(PARALLEL_CHUNK, u32::MAX as usize)
}

/// Adds to `hist` (length [`HISTOGRAM_LEN`]) the radix histogram of `|x|` for one pass.
///
/// Entries whose key bits above `shift + 16` equal `prefix` are counted in the bin of their
/// 16-bit digit `(key >> shift) & 0xFFFF`; entries whose high bits are below `prefix` are
/// counted in [`BELOW_PREFIX_BIN`]; the others are ignored. Large inputs are split across
/// threads, each with its own histogram, summed at the end.
pub fn abs_key_histogram<E: MaskElement>(values: &[E], shift: u32, prefix: u64, hist: &mut [u64]) {
    assert_eq!(hist.len(), HISTOGRAM_LEN, "histogram length");
    let partial = |chunk: &[E]| {
        let mut local = vec![0u32; HISTOGRAM_LEN];
        histogram_chunk(chunk, shift, prefix, &mut local);
        local
    };
    let partials: Vec<Vec<u32>> = values
        .par_chunks(task_len(values.len()))
        .map(partial)
        .collect();
    for local in partials {
        hist.iter_mut().zip(local).for_each(|(h, c)| *h += c as u64);
    }
}

/// One chunk's histogram in u32 counts (a chunk is shorter than `u32::MAX`).
fn histogram_chunk<E: MaskElement>(values: &[E], shift: u32, prefix: u64, hist: &mut [u32]) {
    let digit_mask = (DIGITS - 1) as u64;
    if shift + DIGIT_BITS >= E::KEY_BITS && prefix == 0 {
        // First pass: every entry is in the prefix.
        for &x in values {
            hist[((x.abs_key() >> shift) & digit_mask) as usize] += 1;
        }
        return;
    }
    let mut below = 0u32;
    for &x in values {
        let key = x.abs_key();
        let high = high_bits(key, shift);
        // Branch-free: in a later pass most entries fall outside the prefix, on either side.
        below += u32::from(high < prefix);
        if high == prefix {
            hist[((key >> shift) & digit_mask) as usize] += 1;
        }
    }
    hist[BELOW_PREFIX_BIN] += below;
}

/// Zeroes, in place, the entries whose `|x|` key is below `threshold_key`.
///
/// Callers keep `threshold_key` at most the key of `+inf`, so NaN and ±inf are never zeroed.
pub fn abs_threshold_mask<E: MaskElement>(values: &mut [E], threshold_key: u64) {
    let zero = E::zero();
    let threshold = E::key_bits(threshold_key);
    let len = task_len(values.len());
    let zero: E::AbsBits = bytemuck::cast(zero);
    let bits: &mut [E::AbsBits] = bytemuck::cast_slice_mut(values);
    bits.par_chunks_mut(len).for_each(move |chunk| {
        // A select of the element's bits rather than a branch, against values held in
        // registers: the compiler vectorises it. (Read through the closure's references,
        // `zero` and `threshold` might alias the chunk, and the loop stayed scalar.)
        let (zero, threshold) = (zero, threshold);
        for b in chunk.iter_mut() {
            let bits = *b;
            let x: E = bytemuck::cast(bits);
            *b = if x.abs_bits() < threshold { zero } else { bits };
        }
    });
}

/// Writes into `updated` the entries of `previous` where the gradient's `|g|` key is below
/// `threshold_key` (those parameters must not move), leaving the rest of `updated` as is.
pub fn abs_threshold_select<E: MaskElement>(
    grad: &[E],
    threshold_key: u64,
    updated: &mut [E],
    previous: &[E],
) {
    assert!(
        grad.len() == updated.len() && grad.len() == previous.len(),
        "select lengths"
    );
    let threshold = E::key_bits(threshold_key);
    for ((g, u), p) in grad.iter().zip(updated.iter_mut()).zip(previous) {
        // Both values loaded first: a select of values, not of their addresses, vectorises.
        let (held, moved) = (*p, *u);
        *u = if g.abs_bits() < threshold {
            held
        } else {
            moved
        };
    }
}

/// What a mask does to a gradient: the entries it zeroes, and the NaN and ±inf entries it
/// never touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MaskCounts {
    /// Entries masked (below the threshold, or drawn).
    pub masked: u64,
    /// NaN or infinite entries, kept whatever their magnitude or draw.
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
    if x.abs_bits() >= E::key_bits(E::INF_KEY) {
        RandomDecision::NonFinite
    } else if is_drawn(key, index as u64, bound) {
        RandomDecision::Masked
    } else {
        RandomDecision::Kept
    }
}

impl MaskCounts {
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
) -> MaskCounts {
    let mut counts = MaskCounts::default();
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
pub fn random_mask_count<E: MaskElement>(values: &[E], key: u64, bound: u64) -> MaskCounts {
    let mut counts = MaskCounts::default();
    for (index, &x) in values.iter().enumerate() {
        counts.add(random_decision(x, index, key, bound));
    }
    counts
}

/// Counts `values` against `threshold_key` (at most the key of `+inf`): what
/// [`abs_threshold_mask`] zeroes (`|x|` key below it) and the non-finite entries.
pub fn abs_threshold_count<E: MaskElement>(values: &[E], threshold_key: u64) -> MaskCounts {
    let (threshold, inf) = (E::key_bits(threshold_key), E::key_bits(E::INF_KEY));
    // Wrapping u32 counters over a chunk of fewer than 2^32 entries ([`task_len`]): the loop
    // vectorises, where overflow-checked adds would not.
    let count = |chunk: &[E]| {
        let (masked, non_finite) = chunk.iter().fold((0u32, 0u32), |(masked, non_finite), x| {
            let bits = x.abs_bits();
            (
                masked.wrapping_add(u32::from(bits < threshold)),
                non_finite.wrapping_add(u32::from(bits >= inf)),
            )
        });
        (u64::from(masked), u64::from(non_finite))
    };
    let (masked, non_finite) = values
        .par_chunks(task_len(values.len()))
        .map(count)
        .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    MaskCounts { masked, non_finite }
}
