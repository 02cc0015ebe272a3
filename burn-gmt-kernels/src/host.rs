//! Host (CPU) implementations of the mask operations on plain slices.
//!
//! These are what the CPU backends run and the fallback every other backend reaches through
//! [`MaskOps`](crate::MaskOps)'s default bodies. Each is one linear pass: selection is a radix
//! select over the keys of `|x|` (see [`element`](crate::element)), never a sort.

use crate::bracket_simd;
use crate::element::{
    BELOW_PREFIX_BIN, DIGIT_BITS, DIGITS, HISTOGRAM_LEN, MaskElement, SELECTION_HISTOGRAM,
    SELECTION_LEN, SELECTION_STATE_LEN, SelectionState,
};
use crate::random::{draw, is_drawn};
use rayon::prelude::*;

/// Key bits above the digit of a pass that starts at bit `shift` (0 when none are left).
#[inline(always)]
fn high_bits(key: u64, shift: u32) -> u64 {
    key.checked_shr(shift + DIGIT_BITS).unwrap_or(0)
}

/// Fewest entries per parallel task: enough to pay for the task's own 256 KiB histogram.
const PARALLEL_CHUNK: usize = 1 << 18;

/// Entries per parallel task: one task per thread, no smaller than [`PARALLEL_CHUNK`], and
/// below `u32::MAX` so a task's histogram can count in u32.
fn task_len(n: usize) -> usize {
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

/// The bin of `counts` that holds the entry of 0-based rank `rank`, and the entries counted in
/// the bins before it: one radix digit of a selection.
///
/// # Panics
/// If `rank` is not below the entries counted (a rank past the end).
pub fn digit_of_rank(counts: &[u64], rank: u64) -> (usize, u64) {
    let mut before = 0u64;
    let digit = counts
        .iter()
        .position(|&count| {
            let found = rank < before + count;
            if !found {
                before += count;
            }
            found
        })
        .expect("gradient mask: rank below the number of entries in the prefix");
    (digit, before)
}

/// One step of a radix selection on a selection buffer (layout of [`SELECTION_LEN`]: the
/// state, then a histogram): finds the digit bin that holds the remaining rank, appends that
/// digit to the prefix, takes the entries of the lower bins off the remaining rank, records
/// the entries below the new prefix (the "below" bin plus the lower bins: after the last
/// digit, the entries below the threshold) and clears the histogram for the next pass. On the
/// first pass `inf_digit` is the digit of the `+inf` key and the bins from it up (the
/// non-finite entries) are recorded too; later passes pass [`DIGITS`] and leave that count
/// alone.
///
/// # Panics
/// If the buffer has another length, or the remaining rank is not below the number of
/// entries counted in the digit bins (the caller asked for a rank past the end).
pub fn select_digit(selection: &mut [u64], inf_digit: u32) {
    assert_eq!(selection.len(), SELECTION_LEN, "selection buffer length");
    let (state_words, hist) = selection.split_at_mut(SELECTION_HISTOGRAM);
    let mut state = SelectionState::from_words(state_words);
    let (digit, before) = digit_of_rank(&hist[..DIGITS], state.remaining);
    if (inf_digit as usize) < DIGITS {
        state.non_finite = hist[inf_digit as usize..DIGITS].iter().sum();
    }
    state.below = hist[BELOW_PREFIX_BIN] + before;
    state.key = (state.key << DIGIT_BITS) | digit as u64;
    state.remaining -= before;
    state_words.copy_from_slice(&state.to_words());
    hist.fill(0);
}

/// A selection buffer at the start of a selection of the `(rank + 1)`-th smallest key.
pub fn selection_buffer(rank: u64) -> Vec<u64> {
    let mut words = vec![0u64; SELECTION_LEN];
    words[..SELECTION_STATE_LEN].copy_from_slice(&SelectionState::start(rank).to_words());
    words
}

/// Up to this many entries, the keys are selected directly.
const DIRECT_MAX: usize = 4096;

/// Keys drawn to bracket the sought rank among `n`: about `4·√n`, which balances sorting the
/// sample against selecting among the keys the bracket keeps (a share of about `3/√sample`).
pub fn sample_len(n: u64) -> u64 {
    (4.0 * (n as f64).sqrt()).clamp(256.0, 16_384.0) as u64
}
/// The draw key of the sample positions (any constant: positions only need to avoid the
/// aliasing a fixed stride has with periodic data).
const SAMPLE_KEY: u64 = 0x5e1e_c7ed;

/// `count` keys of `values` (not empty) at drawn positions, in draw order: a sample to bracket
/// a rank with ([`bracket_around`]).
pub fn sample_keys<E: MaskElement>(values: &[E], count: u64) -> Vec<u64> {
    let n = values.len() as u64;
    (0..count)
        .map(|i| values[(draw(SAMPLE_KEY, i) % n) as usize].abs_key())
        .collect()
}

/// The keys `lo..=last` a selection expects its rank among: from a sample, the keys within
/// 3.5 standard deviations of a sample quantile's position around the rank's (and two more
/// entries), so that it misses about once in 2,000 selections. `last` may exceed every key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyBracket {
    /// The lowest key of the bracket.
    pub lo: u64,
    /// The highest key of the bracket (`u64::MAX`: above every key).
    pub last: u64,
}

/// The bracket around the `(rank + 1)`-th smallest of `n` keys, from a sorted sample of them.
///
/// # Panics
/// If `sample` is empty.
pub fn bracket_around(sample: &[u64], rank: u64, n: u64) -> KeyBracket {
    let samples = sample.len() as f64;
    let q = (rank as f64 + 0.5) / n as f64;
    let center = q * samples;
    let spread = 3.5 * (samples * q * (1.0 - q)).sqrt() + 2.0;
    let (lo_at, hi_at) = ((center - spread).floor(), (center + spread).ceil());
    let lo = if lo_at < 0.0 {
        0
    } else {
        sample[lo_at as usize]
    };
    let last = if hi_at < samples {
        sample[hi_at as usize]
    } else {
        u64::MAX
    };
    KeyBracket { lo, last }
}

/// What one read of a tensor finds against a [`KeyBracket`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BracketScan<K> {
    /// Entries whose key is below the bracket.
    pub below: u64,
    /// Entries whose key is inside it.
    pub inside: u64,
    /// NaN and infinite entries.
    pub non_finite: u64,
    /// The keys inside the bracket (none when the bracket is one key, or when they were more
    /// than the cap: `overflow`).
    pub keys: Vec<K>,
    /// More keys were inside than the cap allowed to keep.
    pub overflow: bool,
}

impl<K: Copy + Into<u64>> BracketScan<K> {
    /// The scan as words, as [`MaskOps::abs_key_bracket`](crate::MaskOps::abs_key_bracket)
    /// returns it: `[below, inside, non_finite, overflow, keys...]`.
    pub fn to_words(&self) -> Vec<u64> {
        let head = [
            self.below,
            self.inside,
            self.non_finite,
            u64::from(self.overflow),
        ];
        head.into_iter()
            .chain(self.keys.iter().map(|&k| k.into()))
            .collect()
    }
}

impl BracketScan<u64> {
    /// The scan [`to_words`](Self::to_words) wrote.
    ///
    /// # Panics
    /// If `words` has fewer than four words.
    pub fn from_words(words: &[u64]) -> Self {
        let [below, inside, non_finite, overflow] = words[..4]
            .try_into()
            .expect("gradient mask: a bracket scan has four words and its keys");
        Self {
            below,
            inside,
            non_finite,
            overflow: overflow != 0,
            keys: words[4..].to_vec(),
        }
    }
}

/// Counts `values` against `bracket` and, unless it is one key, keeps the keys inside it, up
/// to `cap` of them: one read, in parallel chunks.
pub fn scan_bracket<E: MaskElement>(
    values: &[E],
    bracket: KeyBracket,
    cap: usize,
) -> BracketScan<E::AbsBits> {
    let bounds = Bounds::<E> {
        lo: E::key_bits(bracket.lo.min(E::NAN_KEY)),
        last: E::key_bits(bracket.last.min(E::NAN_KEY)),
        inf: E::key_bits(E::INF_KEY),
        nan: E::key_bits(E::NAN_KEY),
    };
    let keep = bracket.lo != bracket.last;
    let chunk_len = task_len(values.len());
    // Each chunk its share of the cap (the whole cap when there is one chunk).
    let chunk_cap = (cap * chunk_len.min(values.len())).div_ceil(values.len().max(1));
    let chunks: Vec<BracketScan<E::AbsBits>> = values
        .par_chunks(chunk_len)
        .map(|chunk| bounds.scan(chunk, keep, chunk_cap))
        .collect();
    let mut chunks = chunks.into_iter();
    let mut scan = chunks.next().unwrap_or_default();
    for chunk in chunks {
        scan.below += chunk.below;
        scan.inside += chunk.inside;
        scan.non_finite += chunk.non_finite;
        scan.overflow |= chunk.overflow;
        scan.keys.extend(chunk.keys);
    }
    scan
}

/// The `(rank + 1)`-th smallest key of an input read as `scans` (one per part, all against
/// `bracket`), or `None` when the bracket misses the rank or a part kept too few of its keys.
/// A lone scan's keys are selected in place (their order changes, not their set).
pub fn select_in_bracket<K: Copy + Ord + Into<u64>>(
    bracket: KeyBracket,
    scans: &mut [BracketScan<K>],
    rank: u64,
) -> Option<SelectionState> {
    let below = scans.iter().map(|s| s.below).sum::<u64>();
    let inside = scans.iter().map(|s| s.inside).sum::<u64>();
    let non_finite = scans.iter().map(|s| s.non_finite).sum::<u64>();
    if rank < below || rank >= below + inside {
        return None;
    }
    if bracket.lo == bracket.last {
        return Some(SelectionState {
            key: bracket.lo,
            remaining: rank - below,
            below,
            non_finite,
        });
    }
    if scans.iter().any(|s| s.overflow) {
        return None;
    }
    let state = match scans {
        [one] => select_among(&mut one.keys, rank - below, below, non_finite),
        _ => {
            let mut keys: Vec<K> = scans.iter().flat_map(|s| s.keys.iter().copied()).collect();
            select_among(&mut keys, rank - below, below, non_finite)
        }
    };
    Some(state)
}

/// The `(rank + 1)`-th smallest `|x|` key of `values`, exactly, with the entries below it and
/// the non-finite ones: what a CPU backend selects a tensor with.
///
/// One read of `values` in the common case: a sample of about `4·√n` keys brackets the rank,
/// one pass counts the entries below the bracket and keeps the keys inside it (a few percent
/// of the entries), and those are selected directly. A bracket that misses the rank (the
/// sample was unlucky) or holds too many keys falls back to the radix passes
/// ([`select_abs_key_by_radix`]); a bracket of one key (ties, such as many zeros) keeps
/// nothing but a count. Small inputs are selected directly.
///
/// # Panics
/// If `rank` is not below `values.len()`.
pub fn select_abs_key<E: MaskElement>(values: &[E], rank: u64) -> SelectionState {
    assert!(
        rank < values.len() as u64,
        "gradient mask: rank {rank} of {} entries",
        values.len()
    );
    if values.len() <= DIRECT_MAX {
        let mut keys: Vec<u64> = values.iter().map(|x| x.abs_key()).collect();
        return select_among(&mut keys, rank, 0, count_non_finite::<E>(values));
    }
    bracketed(values, rank).unwrap_or_else(|| select_abs_key_by_radix(values, rank))
}

/// The key of rank `rank` among `keys`, with `below_keys` entries known to lie below all
/// of them and `non_finite` entries in all.
fn select_among<K: Copy + Ord + Into<u64>>(
    keys: &mut [K],
    rank: u64,
    below_keys: u64,
    non_finite: u64,
) -> SelectionState {
    let (lower, key, _) = keys.select_nth_unstable(rank as usize);
    let key = *key;
    let below = below_keys + lower.iter().filter(|&&k| k < key).count() as u64;
    SelectionState {
        key: key.into(),
        remaining: below_keys + rank - below,
        below,
        non_finite,
    }
}

fn count_non_finite<E: MaskElement>(values: &[E]) -> u64 {
    let inf = E::key_bits(E::INF_KEY);
    values.iter().filter(|x| x.abs_bits() >= inf).count() as u64
}

/// The bracket of a selection in an element's own bits.
struct Bounds<E: MaskElement> {
    lo: E::AbsBits,
    last: E::AbsBits,
    inf: E::AbsBits,
    nan: E::AbsBits,
}

impl<E: MaskElement> Bounds<E> {
    /// Counts `chunk` (fewer than 2^32 entries, as [`task_len`] makes them) against the
    /// bracket and, with `keep`, collects the keys inside it, up to `cap` of them (then only
    /// counts): 16 or 8 keys at a time where the CPU has AVX-512 or AVX2 ([`bracket_simd`],
    /// for `f32`, `f16` and `bf16`), the portable loop otherwise.
    fn scan(&self, chunk: &[E], keep: bool, cap: usize) -> BracketScan<E::AbsBits> {
        // Before the keys are allocated: most CPUs have the code, the others pay nothing.
        let simd =
            keep.then(bracket_simd::best).flatten().and_then(|isa| {
                match std::mem::size_of::<E::AbsBits>() {
                    4 => self.scan_simd::<u32>(isa, chunk, cap),
                    2 => self.scan_simd::<u16>(isa, chunk, cap),
                    _ => None,
                }
            });
        simd.unwrap_or_else(|| self.scan_portable(chunk, keep, cap))
    }

    /// [`scan`](Self::scan) in the vector code `isa`, reading the elements as lanes `L` of
    /// their own width, or `None` when they are not.
    fn scan_simd<L: bracket_simd::KeyLane>(
        &self,
        isa: bracket_simd::Isa,
        chunk: &[E],
        cap: usize,
    ) -> Option<BracketScan<E::AbsBits>> {
        let values: &[L] = bytemuck::try_cast_slice(chunk).ok()?;
        let word = |bits: E::AbsBits| u32::try_from(bits.into()).ok();
        let bounds = bracket_simd::KeyBounds {
            lo: word(self.lo)?,
            last: word(self.last)?,
            inf: word(self.inf)?,
            nan: word(self.nan)?,
        };
        let mut keys = vec![E::AbsBits::default(); cap + 16];
        let lanes: &mut [L] = bytemuck::try_cast_slice_mut(&mut keys).ok()?;
        let (below, non_finite, inside) = bracket_simd::scan_keys(isa, values, bounds, lanes, cap)?;
        keys.truncate(inside.min(cap));
        Some(BracketScan {
            below: below.into(),
            inside: inside as u64,
            non_finite: non_finite.into(),
            overflow: inside > cap,
            keys,
        })
    }

    /// [`scan`](Self::scan) in portable code. Branch-free, with wrapping `u32` counters: the
    /// counting vectorises, and the keys are kept by writing every key at the end of the kept
    /// ones and advancing past it only when it is inside (a few percent of the entries, in no
    /// predictable order).
    fn scan_portable(&self, chunk: &[E], keep: bool, cap: usize) -> BracketScan<E::AbsBits> {
        // The bounds in registers: read through `self`, the stores into `keys` might alias them.
        // A key is the element's bits in its own width with every NaN folded onto the one NaN
        // key: [`MaskElement::abs_key`] as an integer.
        let (lo, last, inf, nan) = (self.lo, self.last, self.inf, self.nan);
        let (mut below, mut non_finite, mut inside) = (0u32, 0u32, 0u32);
        let mut keys = Vec::new();
        if keep {
            keys = vec![E::AbsBits::default(); cap + 1];
            let mut kept = 0usize;
            for &x in chunk {
                let key = x.abs_bits().min(nan);
                below = below.wrapping_add(u32::from(key < lo));
                non_finite = non_finite.wrapping_add(u32::from(key >= inf));
                keys[kept.min(cap)] = key;
                kept = kept.wrapping_add(usize::from((key >= lo) & (key <= last)));
            }
            inside = kept as u32;
            keys.truncate(kept.min(cap));
        } else {
            for &x in chunk {
                let key = x.abs_bits().min(nan);
                below = below.wrapping_add(u32::from(key < lo));
                non_finite = non_finite.wrapping_add(u32::from(key >= inf));
                inside = inside.wrapping_add(u32::from((key >= lo) & (key <= last)));
            }
        }
        BracketScan {
            below: below.into(),
            inside: inside.into(),
            non_finite: non_finite.into(),
            overflow: keep && inside as usize > cap,
            keys,
        }
    }
}

/// [`select_abs_key`] through a sampled bracket, or `None` when the bracket misses the rank
/// or holds too many keys to keep.
fn bracketed<E: MaskElement>(values: &[E], rank: u64) -> Option<SelectionState> {
    let n = values.len() as u64;
    let mut sample = sample_keys(values, sample_len(n));
    sample.sort_unstable();
    let bracket = bracket_around(&sample, rank, n);
    // Keys kept in all, at most: an eighth of the entries (a bracket that wide means ties).
    let cap = (n / 8).max(sample_len(n)) as usize;
    let mut scan = scan_bracket(values, bracket, cap);
    select_in_bracket(bracket, std::slice::from_mut(&mut scan), rank)
}

/// [`select_abs_key`] by the radix passes alone: one [`abs_key_histogram`] and
/// [`select_digit`] per 16-bit digit of the key, whatever the data.
pub fn select_abs_key_by_radix<E: MaskElement>(values: &[E], rank: u64) -> SelectionState {
    let mut selection = selection_buffer(rank);
    for pass in 0..E::KEY_BITS / DIGIT_BITS {
        let shift = E::KEY_BITS - DIGIT_BITS * (pass + 1);
        let prefix = SelectionState::from_words(&selection).key;
        abs_key_histogram(values, shift, prefix, &mut selection[SELECTION_HISTOGRAM..]);
        // The first pass also counts the non-finite entries (digits from +inf's up).
        let inf_digit = match pass {
            0 => (E::INF_KEY >> shift) as u32,
            _ => DIGITS as u32,
        };
        select_digit(&mut selection, inf_digit);
    }
    SelectionState::from_words(&selection)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::mix64;

    /// The reference: sort the keys.
    fn by_sort<E: MaskElement>(values: &[E], rank: u64) -> SelectionState {
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

    fn uniform(seed: u64, i: u64) -> f64 {
        (mix64(seed ^ mix64(i)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Inputs that exercise every branch: spread values, heavy ties (zeros, two values),
    /// sorted and periodic data (a strided sample would alias with it), non-finite entries.
    fn inputs(n: usize) -> Vec<(&'static str, Vec<f32>)> {
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

    #[test]
    fn selection_matches_a_sort() {
        for n in [1, 2, 4096, 4097, 50_000, 300_000] {
            for (name, values) in inputs(n) {
                let last = n as u64 - 1;
                for rank in [0, 1.min(last), last / 3, last / 2, (9 * last) / 10, last] {
                    let expected = by_sort(&values, rank);
                    assert_eq!(
                        select_abs_key(&values, rank),
                        expected,
                        "{name}, n = {n}, rank {rank}"
                    );
                    assert_eq!(
                        select_abs_key_by_radix(&values, rank),
                        expected,
                        "radix: {name}, n = {n}, rank {rank}"
                    );
                }
            }
        }
    }

    /// A bracket that misses the rank falls back to the radix passes: a sample that sees
    /// only the first value of two (placed where the sample never looks) brackets wrongly.
    #[test]
    fn a_missed_bracket_falls_back() {
        let n = 100_000u64;
        let looked: std::collections::HashSet<u64> = (0..sample_len(n))
            .map(|i| draw(SAMPLE_KEY, i) % n)
            .collect();
        let values: Vec<f32> = (0..n)
            .map(|i| {
                if looked.contains(&i) {
                    1.0
                } else {
                    2.0 + i as f32
                }
            })
            .collect();
        assert!(bracketed(&values, n / 2).is_none(), "the bracket misses");
        assert_eq!(select_abs_key(&values, n / 2), by_sort(&values, n / 2));
    }

    #[test]
    fn other_float_types_match_a_sort() {
        let values: Vec<burn::tensor::f16> = (0..20_000u64)
            .map(|i| burn::tensor::f16::from_f64((uniform(7, i) - 0.5) * 100.0))
            .collect();
        let values64: Vec<f64> = (0..20_000u64).map(|i| uniform(8, i) - 0.5).collect();
        // NaN of several payloads, infinities, subnormals and ties, through the bracket scan.
        let awkward = crate::test_values::awkward_f32(20_000, 9);
        let awkward16: Vec<burn::tensor::bf16> = awkward
            .iter()
            .map(|&x| burn::tensor::bf16::from_f32(x))
            .collect();
        for rank in [0, 7_000, 19_999] {
            assert_eq!(select_abs_key(&values, rank), by_sort(&values, rank));
            assert_eq!(select_abs_key(&values64, rank), by_sort(&values64, rank));
            assert_eq!(select_abs_key(&awkward16, rank), by_sort(&awkward16, rank));
        }
    }

    /// An input read in parts (several tensors) selects like a sort of all of it: samples in
    /// proportion to the parts, one scan each, the selection over the scans' words.
    #[test]
    fn a_bracket_over_parts_matches_a_sort() {
        for (name, values) in inputs(120_000) {
            let parts = [
                &values[..70_000],
                &values[70_000..70_001],
                &values[70_001..],
            ];
            let n = values.len() as u64;
            let samples = sample_len(n);
            for rank in [0, n / 3, n / 2, n - 1] {
                let mut sample: Vec<u64> = parts
                    .iter()
                    .flat_map(|p| sample_keys(p, (samples * p.len() as u64).div_ceil(n)))
                    .collect();
                sample.sort_unstable();
                let bracket = bracket_around(&sample, rank, n);
                let mut scans: Vec<BracketScan<u64>> = parts
                    .iter()
                    .map(|p| BracketScan::from_words(&scan_bracket(p, bracket, p.len()).to_words()))
                    .collect();
                let got = select_in_bracket(bracket, &mut scans, rank);
                assert_eq!(got, Some(by_sort(&values, rank)), "{name}, rank {rank}");
            }
        }
    }

    /// A bracket placed away from the rank is refused, and so is one whose part kept too few keys.
    #[test]
    fn a_bracket_that_misses_or_overflows_is_refused() {
        let values: Vec<f32> = (0..10_000).map(|i| i as f32).collect();
        let bracket = KeyBracket {
            lo: 100f32.abs_key(),
            last: 200f32.abs_key(),
        };
        let mut scan = scan_bracket(&values, bracket, 1_000);
        assert_eq!((scan.below, scan.inside, scan.keys.len()), (100, 101, 101));
        let scans = std::slice::from_mut(&mut scan);
        assert_eq!(select_in_bracket(bracket, scans, 50), None);
        assert_eq!(select_in_bracket(bracket, scans, 250), None);
        let expected = Some(by_sort(&values, 150));
        assert_eq!(select_in_bracket(bracket, scans, 150), expected);
        let small_cap = scan_bracket(&values, bracket, 10);
        assert!(small_cap.overflow);
        assert_eq!(select_in_bracket(bracket, &mut [small_cap], 150), None);
    }

    /// The bracket scan (in vector code where the CPU has it) against a plain filter of the
    /// keys, at lengths around the vector widths, with NaN of every payload, infinities,
    /// subnormals and ties, caps that hold every key or overflow, brackets of every width.
    #[test]
    fn bracket_scan_matches_a_plain_filter() {
        for n in [0usize, 1, 15, 16, 17, 33, 1_000, 65_537] {
            let values = crate::test_values::awkward_f32(n, 7);
            let keys: Vec<u64> = values.iter().map(|x| x.abs_key()).collect();
            let mut sorted = keys.clone();
            sorted.sort_unstable();
            for (lo_at, width) in [(0.0, 0.1), (0.3, 0.2), (0.9, 0.2), (0.5, 0.0)] {
                let Some(&lo) = sorted.get((lo_at * n as f64) as usize) else {
                    continue;
                };
                let last = sorted[(((lo_at + width) * n as f64) as usize).min(n - 1)];
                let bracket = KeyBracket { lo, last };
                let inside: Vec<u64> = keys
                    .iter()
                    .copied()
                    .filter(|k| (lo..=last).contains(k))
                    .collect();
                for cap in [n, inside.len(), inside.len().saturating_sub(1), 3] {
                    let context = format!("n={n} lo={lo:#x} last={last:#x} cap={cap}");
                    let scan = scan_bracket(&values, bracket, cap);
                    assert_eq!(
                        scan.below,
                        keys.iter().filter(|&&k| k < lo).count() as u64,
                        "{context}"
                    );
                    assert_eq!(scan.inside, inside.len() as u64, "{context}");
                    let non_finite = keys.iter().filter(|&&k| k >= f32::INF_KEY).count() as u64;
                    assert_eq!(scan.non_finite, non_finite, "{context}");
                    // One chunk here (under `PARALLEL_CHUNK` entries): its cap is the cap.
                    assert_eq!(scan.overflow, lo != last && inside.len() > cap, "{context}");
                    if lo != last && !scan.overflow {
                        let got: Vec<u64> = scan.keys.iter().map(|&k| k.into()).collect();
                        assert_eq!(got, inside, "{context}: kept keys, in order");
                    }
                }
            }
        }
    }
}
