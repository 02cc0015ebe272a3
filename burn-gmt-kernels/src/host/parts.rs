//! The exact selection of the `(rank + 1)`-th smallest `|x|` key of an input read in parts,
//! written once for every place the parts' values come from ([`KeyParts`]): slices on the host
//! (a CPU backend's one-step selection, [`select_abs_key`]: the one-part case), or tensors read
//! through [`MaskOps`](crate::MaskOps) on any backend (the driver's host bracket and host
//! passes). Two ways, each written once:
//! - [`select_by_bracket`]: a sample drawn from each part in proportion to its size brackets
//!   the rank, one read of each part counts it against the bracket and keeps its few keys
//!   inside, and those are selected directly;
//! - [`select_by_radix`]: one histogram of every part per 16-bit digit, summed, and a digit
//!   step on a host selection buffer ([`select_digit`]).

use crate::buffer::{
    BELOW_PREFIX_BIN, DIGITS, HISTOGRAM_LEN, SELECTION_HISTOGRAM, SelectionState, masked_entries,
    radix_passes, select_digit, selection_buffer,
};
use crate::element::MaskElement;

use super::bracket::{
    BracketScan, KeyBracket, bracket_around, sample_keys, sample_len, scan_bracket, select_among,
    select_in_bracket,
};
use super::pass::{MaskCounts, abs_key_histogram};

/// Up to this many entries, a slice's keys are selected directly.
pub(super) const DIRECT_MAX: usize = 4096;

/// The parts of one input a selection reads, and how their keys are reached: each method reads
/// every part once (a device reads them back with one read per device).
pub trait KeyParts {
    /// A key kept by a bracket scan: the element's own bits on the host, `u64` read back.
    type Key: Copy + Ord + Into<u64>;

    /// The entries of each part.
    fn sizes(&self) -> Vec<u64>;
    /// The width of the parts' keys, in bits.
    fn key_bits(&self) -> u32;
    /// The key of `+inf` in the parts' dtype.
    fn inf_key(&self) -> u64;
    /// `counts[i]` keys of part `i` at drawn positions ([`sample_keys`]), every part's in
    /// one list.
    fn sample(&self, counts: &[u64]) -> Vec<u64>;
    /// Each part read against `bracket` ([`scan_bracket`]), part `i` keeping at most
    /// `caps[i]` keys.
    fn scan(&self, bracket: KeyBracket, caps: &[u64]) -> Vec<BracketScan<Self::Key>>;
    /// Each part's radix histogram for the pass at `shift` under `prefix`
    /// ([`abs_key_histogram`]).
    fn histograms(&self, shift: u32, prefix: u64) -> Vec<Vec<u64>>;
}

/// Slices on the host (a lone slice is the one-part case).
impl<E: MaskElement> KeyParts for [&[E]] {
    type Key = E::AbsBits;

    fn sizes(&self) -> Vec<u64> {
        self.iter().map(|part| part.len() as u64).collect()
    }

    fn key_bits(&self) -> u32 {
        E::KEY_BITS
    }

    fn inf_key(&self) -> u64 {
        E::INF_KEY
    }

    fn sample(&self, counts: &[u64]) -> Vec<u64> {
        self.iter()
            .zip(counts)
            .flat_map(|(part, &count)| sample_keys(part, count))
            .collect()
    }

    fn scan(&self, bracket: KeyBracket, caps: &[u64]) -> Vec<BracketScan<E::AbsBits>> {
        self.iter()
            .zip(caps)
            .map(|(part, &cap)| scan_bracket(part, bracket, cap as usize))
            .collect()
    }

    fn histograms(&self, shift: u32, prefix: u64) -> Vec<Vec<u64>> {
        self.iter()
            .map(|part| {
                let mut hist = vec![0u64; HISTOGRAM_LEN];
                abs_key_histogram(part, shift, prefix, &mut hist);
                hist
            })
            .collect()
    }
}

/// A finished selection over parts: its state (the key, the entries below it and the
/// non-finite ones, over all parts) and what a threshold at its key does to each part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartsSelection {
    /// The selection's final state; `key` may be the NaN key (a threshold takes it at most
    /// `+inf`).
    pub state: SelectionState,
    /// Per part, in order: the entries a threshold at `state.key` (at most `+inf`) masks,
    /// and the non-finite ones.
    pub counts: Vec<MaskCounts>,
}

impl PartsSelection {
    /// The selection of `state` over parts of `sizes`: a lone part's counts are the state's,
    /// several parts' are `part_non_finite` and `part_below` (entries below `state.key`).
    fn new(
        state: SelectionState,
        sizes: &[u64],
        inf_key: u64,
        part_non_finite: impl Fn(usize) -> u64,
        part_below: impl Fn(usize) -> u64,
    ) -> Self {
        let counts = match sizes {
            [total] => vec![MaskCounts {
                masked: state.masked(*total, inf_key),
                non_finite: state.non_finite,
            }],
            _ => sizes
                .iter()
                .enumerate()
                .map(|(part, &total)| {
                    let non_finite = part_non_finite(part);
                    MaskCounts {
                        masked: masked_entries(state.key, inf_key, total, non_finite, || {
                            part_below(part)
                        }),
                        non_finite,
                    }
                })
                .collect(),
        };
        Self { state, counts }
    }
}

/// The `(rank + 1)`-th smallest key of `parts` through a sampled bracket
/// ([`select_by_bracket`]), or by the radix passes ([`select_by_radix`]) when the bracket
/// misses the rank (rarely) or holds too many keys to keep.
///
/// # Panics
/// If `rank` is not below the parts' entries.
pub fn select_parts<P: KeyParts + ?Sized>(parts: &P, rank: u64) -> PartsSelection {
    select_by_bracket(parts, rank).unwrap_or_else(|| select_by_radix(parts, rank))
}

/// The `(rank + 1)`-th smallest key of `parts` through a sampled bracket: a sample of about
/// `4·√n` keys, drawn from each part in proportion to its size, brackets the rank; one read
/// of each part counts the entries below the bracket and keeps the keys inside it (a few
/// percent of the entries; none when the bracket is one key, as with many ties), and those
/// are selected directly, a lone part's in place. `None` when the bracket misses the rank (the
/// sample was unlucky) or a part held more keys inside it than its share of the cap.
pub fn select_by_bracket<P: KeyParts + ?Sized>(parts: &P, rank: u64) -> Option<PartsSelection> {
    let sizes = parts.sizes();
    let total: u64 = sizes.iter().sum();
    let samples = sample_len(total);
    let counts: Vec<u64> = sizes.iter().map(|&n| share(samples, n, total)).collect();
    let mut sample = parts.sample(&counts);
    sample.sort_unstable();
    let bracket = bracket_around(&sample, rank, total);
    // Keys kept in all, at most: an eighth of the entries (a bracket that wide means ties).
    let cap = (total / 8).max(samples);
    let caps: Vec<u64> = sizes.iter().map(|&n| share(cap, n, total)).collect();
    let mut scans = parts.scan(bracket, &caps);
    let state = select_in_bracket(bracket, &mut scans, rank)?;
    let below = |part: usize| {
        let scan = &scans[part];
        let inside_below = scan
            .keys
            .iter()
            .filter(|&&k| Into::<u64>::into(k) < state.key);
        scan.below + inside_below.count() as u64
    };
    let non_finite = |part: usize| scans[part].non_finite;
    Some(PartsSelection::new(
        state,
        &sizes,
        parts.inf_key(),
        non_finite,
        below,
    ))
}

/// `of`'s share for a part of `n` of `total` entries, rounded up (all of it for a lone part).
fn share(of: u64, n: u64, total: u64) -> u64 {
    (u128::from(of) * u128::from(n)).div_ceil(u128::from(total)) as u64
}

/// The last-pass histogram of one part, kept sparse to count its entries below the final key.
struct LastPass {
    below: u64,
    digits: Vec<(usize, u64)>,
}

impl LastPass {
    fn of(hist: &[u64]) -> Self {
        Self {
            below: hist[BELOW_PREFIX_BIN],
            digits: hist[..DIGITS]
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(d, c)| (d, *c))
                .collect(),
        }
    }

    /// The part's entries below `key`, whose last digit this pass resolved.
    fn below(&self, key: u64) -> u64 {
        let digit = (key & (DIGITS as u64 - 1)) as usize;
        let lower: u64 = self
            .digits
            .iter()
            .filter(|(d, _)| *d < digit)
            .map(|(_, c)| c)
            .sum();
        self.below + lower
    }
}

/// The `(rank + 1)`-th smallest key of `parts` by the radix passes alone, whatever the data:
/// per 16-bit digit, every part's histogram summed into a host selection buffer and one digit
/// step ([`select_digit`]).
pub fn select_by_radix<P: KeyParts + ?Sized>(parts: &P, rank: u64) -> PartsSelection {
    let sizes = parts.sizes();
    let inf = parts.inf_key();
    let several = sizes.len() > 1;
    let mut selection = selection_buffer(rank);
    // Per part, when there are several: its non-finite entries and its last pass.
    let mut non_finite = vec![0u64; sizes.len()];
    let mut last: Vec<LastPass> = Vec::new();
    for pass in radix_passes(parts.key_bits(), inf) {
        let prefix = SelectionState::from_words(&selection).key;
        for (part, hist) in parts.histograms(pass.shift, prefix).iter().enumerate() {
            if several {
                if let Some(count) = pass.non_finite(hist) {
                    non_finite[part] = count;
                }
                if pass.last {
                    last.push(LastPass::of(hist));
                }
            }
            selection[SELECTION_HISTOGRAM..]
                .iter_mut()
                .zip(hist)
                .for_each(|(m, h)| *m += h);
        }
        select_digit(&mut selection, pass.inf_digit);
    }
    let state = SelectionState::from_words(&selection);
    let below = |part: usize| last[part].below(state.key);
    PartsSelection::new(state, &sizes, inf, |part| non_finite[part], below)
}

/// The `(rank + 1)`-th smallest `|x|` key of `values`, exactly, with the entries below it and
/// the non-finite ones: what a CPU backend selects a tensor with.
///
/// One read of `values` in the common case ([`select_parts`] of one part: a sampled bracket,
/// the radix passes when it misses), the keys inside the bracket selected in place. Small
/// inputs are selected directly.
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
    select_parts(&[values][..], rank).state
}

/// [`select_abs_key`] by the radix passes alone ([`select_by_radix`] of one part).
pub fn select_abs_key_by_radix<E: MaskElement>(values: &[E], rank: u64) -> SelectionState {
    select_by_radix(&[values][..], rank).state
}

fn count_non_finite<E: MaskElement>(values: &[E]) -> u64 {
    let inf = E::key_bits(E::INF_KEY);
    values.iter().filter(|x| x.abs_bits() >= inf).count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::bracket::SAMPLE_KEY;
    use crate::random::draw;
    use crate::test_values::{by_sort, inputs, three_parts, uniform};

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
        assert!(
            select_by_bracket(&[&values[..]][..], n / 2).is_none(),
            "the bracket misses"
        );
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

    /// Several parts select like a sort of all of them, by either way, and each part's
    /// counts are those of a threshold at the selected key.
    #[test]
    fn parts_select_and_count_like_a_sort() {
        for (name, values) in inputs(120_000) {
            let parts = three_parts(&values);
            let n = values.len() as u64;
            for rank in [0, n / 3, n / 2, n - 1] {
                let expected = by_sort(&values, rank);
                let key = expected.key.min(f32::INF_KEY);
                let counts: Vec<MaskCounts> = parts
                    .iter()
                    .map(|part| {
                        let keys = part.iter().map(|x| x.abs_key());
                        let non_finite = keys.clone().filter(|&k| k >= f32::INF_KEY).count();
                        MaskCounts {
                            masked: keys.filter(|&k| k < key).count() as u64,
                            non_finite: non_finite as u64,
                        }
                    })
                    .collect();
                let context = format!("{name}, rank {rank}");
                let bracketed = select_parts(&parts[..], rank);
                assert_eq!(bracketed.state, expected, "{context}");
                assert_eq!(bracketed.counts, counts, "{context}");
                let radix = select_by_radix(&parts[..], rank);
                assert_eq!(radix.state, expected, "radix: {context}");
                assert_eq!(radix.counts, counts, "radix: {context}");
            }
        }
    }
}
