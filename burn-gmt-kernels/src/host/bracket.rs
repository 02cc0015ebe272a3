//! The sampled bracket: a sample of the keys brackets the sought rank, one read of each part
//! counts the entries below the bracket and keeps the few keys inside it
//! ([`scan_bracket`], in vector code where the CPU has it), and those are selected directly
//! ([`select_in_bracket`]).

use crate::bracket_simd;
use crate::buffer::SelectionState;
use crate::element::MaskElement;
use crate::random::draw;
use rayon::prelude::*;

use super::pass::task_len;

/// Keys drawn to bracket the sought rank among `n`: about `4·√n`, which balances sorting the
/// sample against selecting among the keys the bracket keeps (a share of about `3/√sample`).
pub fn sample_len(n: u64) -> u64 {
    (4.0 * (n as f64).sqrt()).clamp(256.0, 16_384.0) as u64
}
/// The draw key of the sample positions (any constant: positions only need to avoid the
/// aliasing a fixed stride has with periodic data).
pub(super) const SAMPLE_KEY: u64 = 0x5e1e_c7ed;

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
    let (lo_at, hi_at) = bracket_positions(sample.len(), rank, n);
    KeyBracket {
        lo: lo_at.map_or(0, |at| sample[at]),
        last: hi_at.map_or(u64::MAX, |at| sample[at]),
    }
}

/// Where in a sorted sample of `samples` keys the bracket around the `(rank + 1)`-th
/// smallest of `n` keys has its ends ([`bracket_around`]): the positions of its lowest and
/// highest keys, `None` past the sample's first or last key (the bracket then starts at key 0
/// or ends above every key). The device bracket picks the same positions among its sample.
pub fn bracket_positions(samples: usize, rank: u64, n: u64) -> (Option<usize>, Option<usize>) {
    let samples_f = samples as f64;
    let q = (rank as f64 + 0.5) / n as f64;
    let center = q * samples_f;
    let spread = 3.5 * (samples_f * q * (1.0 - q)).sqrt() + 2.0;
    let (lo_at, hi_at) = ((center - spread).floor(), (center + spread).ceil());
    (
        (lo_at >= 0.0).then_some(lo_at as usize),
        (hi_at < samples_f).then_some(hi_at as usize),
    )
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
    match locate_rank(bracket, below, inside, non_finite, rank) {
        RankInBracket::Missed => return None,
        RankInBracket::Found(state) => return Some(state),
        RankInBracket::AmongKeys => {}
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

/// Where the `(rank + 1)`-th smallest key lies against a bracket, from what a read counted:
/// the rule the bracket selection and the one-pass mask share.
pub(super) enum RankInBracket {
    /// Below or above the bracket: the read cannot give it.
    Missed,
    /// The bracket holds one key, which is therefore the one sought.
    Found(SelectionState),
    /// Among the bracket's keys, at rank `rank - below` there.
    AmongKeys,
}

/// Places `rank` against `bracket`, given the entries a read found `below` it, `inside` it
/// and `non_finite`.
pub(super) fn locate_rank(
    bracket: KeyBracket,
    below: u64,
    inside: u64,
    non_finite: u64,
    rank: u64,
) -> RankInBracket {
    if rank < below || rank >= below + inside {
        RankInBracket::Missed
    } else if bracket.lo == bracket.last {
        RankInBracket::Found(SelectionState {
            key: bracket.lo,
            remaining: rank - below,
            below,
            non_finite,
        })
    } else {
        RankInBracket::AmongKeys
    }
}

/// The key of rank `rank` among `keys`, with `below_keys` entries known to lie below all
/// of them and `non_finite` entries in all.
pub(super) fn select_among<K: Copy + Ord + Into<u64>>(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::{by_sort, inputs, three_parts};

    /// An input read in parts (several tensors) selects like a sort of all of it: samples in
    /// proportion to the parts, one scan each, the selection over the scans' words.
    #[test]
    fn a_bracket_over_parts_matches_a_sort() {
        for (name, values) in inputs(120_000) {
            let parts = three_parts(&values);
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
