//! The exact per-tensor mask in one read-write pass ([`mask_smallest`]): the sampled bracket
//! of [`select_by_bracket`](super::select_by_bracket), and one pass that reads each entry once
//! and writes it once, masking while it scans.
//!
//! # Why it is exact
//!
//! The pass cannot zero entries in place: it learns only at its end, from its count of the
//! entries below the bracket, whether the threshold lies inside the bracket. When the
//! threshold lies below the bracket's low edge (a miss low), some entries the pass zeroed
//! must be kept, and a zeroed value is gone. Saving what it zeroes in a safety band below the
//! edge only moves the problem: a threshold below the band, or a band that overflows, loses
//! entries again, and a band that can never overflow is a copy of every masked entry.
//!
//! So the pass writes into a second buffer and only reads its input: one read and one write of
//! each entry, the traffic of an in-place pass (with non-temporal stores where the vector code
//! runs, which do not read the destination first). Each entry is written once: zero when its
//! key is below `z = min(lo, +inf key)`, as it is otherwise. Then:
//! - when the rank falls among the entries inside the bracket (`below <= rank < below +
//!   inside`) and every inside key was kept, the threshold key `T` (selected among the kept
//!   keys, its rank among them `rank - below`) satisfies `lo <= T <= last`. An entry below `z`
//!   is finite and below `T`: masked, as it must be. An entry above `last` is at least `T`:
//!   kept, as it must be. An entry inside the bracket was written as it is and was kept with
//!   its position: the fix-up zeroes it exactly when its key is below `min(T, +inf key)`, the
//!   masking rule of [`abs_threshold_mask`](super::abs_threshold_mask). A non-finite entry is
//!   never zeroed: its key is at least `+inf`'s, so at least `z`, and at least `min(T, +inf)`.
//! - otherwise (a miss on either side, or more keys inside than the buffer holds) the input
//!   is intact, and today's two passes run from it into the output: an exact selection
//!   ([`select_parts`]), then a masked copy at its threshold.
//!
//! Either way the output is the exact mask and the state is the exact selection's, whatever
//! the ties, signed zeros, subnormals, NaN payloads and infinities (the keys are
//! [`MaskElement::abs_key`]'s, compared in the element's own bits as every pass does).
//!
//! The bracket layout (`lo..=last`, [`KeyBracket`]), the rank bookkeeping (`below`, `inside`,
//! the rank among the kept keys) and this argument are the same for a device's kernels: a
//! pass that compacts the bracket's keys and positions, a selection among them, a fix-up
//! scatter, and the same fall-back from an input left intact.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::bracket_simd::{self, KeyBounds, MaskOut};
use crate::buffer::SelectionState;
use crate::element::MaskElement;
use crate::select::route::forced_miss;

use super::bracket::{
    KeyBracket, RankInBracket, bracket_around, locate_rank, sample_keys, sample_len, select_among,
};
use super::parts::{DIRECT_MAX, select_parts};
use super::pass::task_len;

/// A bracket that misses, forced by tests (`burn_gmt_kernels::testing::with_bracket_miss`,
/// with the `testing` feature) to check that [`mask_smallest`] stays exact when its bracket
/// does not hold the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BracketMiss {
    /// The bracket lies above every key: the pass zeroes every finite entry, and the count
    /// shows the threshold below the bracket.
    Low,
    /// The bracket holds only the key 0: the pass zeroes nothing, and the count shows the
    /// threshold above the bracket (for a rank past the zeros).
    High,
    /// The bracket of the sample, with room for one key: the buffer overflows.
    Overfull,
}

/// Zeroes into `output` the `rank` smallest `|x|` of `input` (NaN ranking above `+inf`;
/// NaN and ±inf never zeroed, the threshold taken at most `+inf`), copying the others, and
/// returns the exact selection's state, as [`select_abs_key`](super::select_abs_key) gives
/// it. One read of `input` and one write of `output` in the common case; why it is exact in
/// every case is argued at the top of its source file, `host/onepass.rs`.
///
/// # Panics
/// If `rank` is not below `input.len()`, or `output` has another length.
pub fn mask_smallest<E: MaskElement>(input: &[E], output: &mut [E], rank: u64) -> SelectionState {
    let n = input.len();
    assert!(rank < n as u64, "gradient mask: rank {rank} of {n} entries");
    assert_eq!(output.len(), n, "gradient mask: one-pass output length");
    if n <= DIRECT_MAX {
        let state = super::select_abs_key(input, rank);
        copy_masked(input, output, state.key);
        return state;
    }
    let samples = sample_len(n as u64);
    let mut sample = sample_keys(input, samples);
    sample.sort_unstable();
    let mut bracket = bracket_around(&sample, rank, n as u64);
    // Keys kept in all, at most: an eighth of the entries (a bracket that wide means ties).
    let mut cap = (n / 8).max(samples as usize);
    match forced_miss() {
        Some(BracketMiss::Low) => {
            bracket = KeyBracket {
                lo: E::NAN_KEY + 1,
                last: u64::MAX,
            }
        }
        Some(BracketMiss::High) => bracket = KeyBracket { lo: 0, last: 0 },
        Some(BracketMiss::Overfull) => cap = 1,
        None => {}
    }
    match mask_in_bracket(input, output, bracket, cap, rank) {
        Some(state) => state,
        None => {
            // The input is intact: today's two passes, from it.
            let state = select_parts(&[input][..], rank).state;
            copy_masked(input, output, state.key);
            state
        }
    }
}

/// What one task's share of the pass found: its counts, and its kept keys with their
/// positions in the task's slice.
struct TaskPass<K> {
    below: u64,
    inside: u64,
    non_finite: u64,
    keys: Vec<K>,
    positions: Vec<u32>,
}

/// The pass against `bracket`, then, when it holds the rank and kept every key inside it,
/// the selection among those keys and the fix-up; `None` otherwise (the output then holds
/// nothing of use, the input is intact).
fn mask_in_bracket<E: MaskElement>(
    input: &[E],
    output: &mut [E],
    bracket: KeyBracket,
    cap: usize,
    rank: u64,
) -> Option<SelectionState> {
    let n = input.len();
    let edges = Edges::<E>::new(bracket);
    let task = task_len(n);
    // Each task its share of the cap (the whole cap when there is one task).
    let task_cap = (cap * task.min(n)).div_ceil(n);
    let tasks: Vec<TaskPass<E::AbsBits>> = input
        .par_chunks(task)
        .zip(output.par_chunks_mut(task))
        .map(|(input, output)| edges.pass(input, output, task_cap))
        .collect();
    let below: u64 = tasks.iter().map(|t| t.below).sum();
    let inside: u64 = tasks.iter().map(|t| t.inside).sum();
    let non_finite: u64 = tasks.iter().map(|t| t.non_finite).sum();
    match locate_rank(bracket, below, inside, non_finite, rank) {
        RankInBracket::Missed => return None,
        // One key inside: it is the threshold, and the pass kept every entry at it.
        RankInBracket::Found(state) => return Some(state),
        RankInBracket::AmongKeys => {}
    }
    if tasks.iter().any(|t| t.keys.len() as u64 != t.inside) {
        return None;
    }
    let mut keys: Vec<E::AbsBits> = tasks.iter().flat_map(|t| t.keys.iter().copied()).collect();
    let state = select_among(&mut keys, rank - below, below, non_finite);
    let threshold = E::key_bits(state.key.min(E::INF_KEY));
    let zero: E::AbsBits = bytemuck::cast(E::zero());
    output
        .par_chunks_mut(task)
        .zip(&tasks)
        .for_each(|(output, task)| {
            let bits: &mut [E::AbsBits] = bytemuck::cast_slice_mut(output);
            for (&key, &at) in task.keys.iter().zip(&task.positions) {
                if key < threshold {
                    bits[at as usize] = zero;
                }
            }
        });
    Some(state)
}

/// `input` written to `output` with the entries whose key is below `key` (taken at most
/// `+inf`'s) zeroed: the masking pass of the two-pass way, into a second buffer.
fn copy_masked<E: MaskElement>(input: &[E], output: &mut [E], key: u64) {
    let threshold = E::key_bits(key.min(E::INF_KEY));
    let zero: E::AbsBits = bytemuck::cast(E::zero());
    let task = task_len(input.len());
    input
        .par_chunks(task)
        .zip(output.par_chunks_mut(task))
        .for_each(move |(input, output)| {
            let (zero, threshold) = (zero, threshold);
            let input: &[E::AbsBits] = bytemuck::cast_slice(input);
            let output: &mut [E::AbsBits] = bytemuck::cast_slice_mut(output);
            for (o, &bits) in output.iter_mut().zip(input) {
                let x: E = bytemuck::cast(bits);
                *o = if x.abs_bits() < threshold { zero } else { bits };
            }
        });
}

/// The bracket of a one-pass mask in an element's own bits: inside `lo..=last`, zeroed below
/// `zero` (`lo`, at most `+inf`), non-finite from `inf` up, every key clamped to `nan` first.
struct Edges<E: MaskElement> {
    lo: E::AbsBits,
    last: E::AbsBits,
    zero: E::AbsBits,
    inf: E::AbsBits,
    nan: E::AbsBits,
    /// Whether keys are kept: not when the bracket is one key (the threshold, if inside).
    keep: bool,
}

impl<E: MaskElement> Edges<E> {
    fn new(bracket: KeyBracket) -> Self {
        Self {
            lo: E::key_bits(bracket.lo.min(E::NAN_KEY)),
            last: E::key_bits(bracket.last.min(E::NAN_KEY)),
            zero: E::key_bits(bracket.lo.min(E::INF_KEY)),
            inf: E::key_bits(E::INF_KEY),
            nan: E::key_bits(E::NAN_KEY),
            keep: bracket.lo != bracket.last,
        }
    }

    /// One task's pass (fewer than 2^32 entries): in vector code where the CPU has it (for
    /// `f32`, `f16` and `bf16`), the portable loop otherwise.
    fn pass(&self, input: &[E], output: &mut [E], cap: usize) -> TaskPass<E::AbsBits> {
        let cap = if self.keep { cap } else { 0 };
        let simd = bracket_simd::best().and_then(|isa| match std::mem::size_of::<E::AbsBits>() {
            4 => self.pass_simd::<u32>(isa, input, output, cap),
            2 => self.pass_simd::<u16>(isa, input, output, cap),
            _ => None,
        });
        let mut pass = simd.unwrap_or_else(|| self.pass_portable(input, output, cap));
        if !self.keep {
            // No keys were asked for: "inside" counts them, none is missing.
            pass.keys.clear();
        }
        pass
    }

    /// [`pass`](Self::pass) in the vector code `isa`, the elements read as lanes `L` of
    /// their own width, or `None` when they are not.
    fn pass_simd<L: bracket_simd::KeyLane>(
        &self,
        isa: bracket_simd::Isa,
        input: &[E],
        output: &mut [E],
        cap: usize,
    ) -> Option<TaskPass<E::AbsBits>> {
        let lanes: &[L] = bytemuck::try_cast_slice(input).ok()?;
        let values: &mut [L] = bytemuck::try_cast_slice_mut(output).ok()?;
        let word = |bits: E::AbsBits| u32::try_from(bits.into()).ok();
        let bounds = KeyBounds {
            lo: word(self.lo)?,
            last: word(self.last)?,
            inf: word(self.inf)?,
            nan: word(self.nan)?,
        };
        let zero = word(self.zero)?;
        if std::mem::size_of::<L>() != std::mem::size_of::<E::AbsBits>() {
            return None;
        }
        // Uninitialised room: the pass writes the kept ones from the start, and zeroing a
        // buffer of an eighth of the entries cost more than the pass's writes to it.
        let mut keys: Vec<E::AbsBits> = Vec::with_capacity(cap + 16);
        let mut positions: Vec<u32> = Vec::with_capacity(cap + 16);
        let room = &mut keys.spare_capacity_mut()[..cap + 16];
        // SAFETY: `L` is `E::AbsBits`'s width (checked above) and both are unsigned integers
        // of that width (`u32` or `u16`), so the same size and alignment; the slice covers
        // the same room.
        let room: &mut [MaybeUninit<L>] =
            unsafe { std::slice::from_raw_parts_mut(room.as_mut_ptr().cast(), room.len()) };
        let out = MaskOut {
            values,
            keys: room,
            positions: &mut positions.spare_capacity_mut()[..cap + 16],
            cap,
        };
        let (below, non_finite, inside) = bracket_simd::mask_keys(isa, lanes, bounds, zero, out)?;
        let kept = inside.min(cap);
        // SAFETY: the pass wrote the first `min(inside, cap)` keys and positions.
        unsafe {
            keys.set_len(kept);
            positions.set_len(kept);
        }
        Some(TaskPass {
            below: below.into(),
            inside: inside as u64,
            non_finite: non_finite.into(),
            keys,
            positions,
        })
    }

    /// [`pass`](Self::pass) in portable code, branch-free with wrapping `u32` counters (as
    /// the bracket scan's portable loop): every key and its position are written at the end
    /// of the kept ones, which advances past them only when the key is inside.
    fn pass_portable(&self, input: &[E], output: &mut [E], cap: usize) -> TaskPass<E::AbsBits> {
        // The edges in registers: read through `self`, the stores might alias them.
        let (lo, last, zero_edge, inf, nan) = (self.lo, self.last, self.zero, self.inf, self.nan);
        let zero: E::AbsBits = bytemuck::cast(E::zero());
        let input: &[E::AbsBits] = bytemuck::cast_slice(input);
        let output: &mut [E::AbsBits] = bytemuck::cast_slice_mut(output);
        let (mut below, mut non_finite) = (0u32, 0u32);
        // Uninitialised room, as in the vector code.
        let mut keys: Vec<E::AbsBits> = Vec::with_capacity(cap + 1);
        let mut positions: Vec<u32> = Vec::with_capacity(cap + 1);
        let (key_room, position_room) = (
            &mut keys.spare_capacity_mut()[..cap + 1],
            &mut positions.spare_capacity_mut()[..cap + 1],
        );
        let mut kept = 0usize;
        for (at, (o, &bits)) in output.iter_mut().zip(input).enumerate() {
            let x: E = bytemuck::cast(bits);
            let key = x.abs_bits().min(nan);
            below = below.wrapping_add(u32::from(key < lo));
            non_finite = non_finite.wrapping_add(u32::from(key >= inf));
            *o = if key < zero_edge { zero } else { bits };
            let slot = kept.min(cap);
            key_room[slot] = MaybeUninit::new(key);
            position_room[slot] = MaybeUninit::new(at as u32);
            kept = kept.wrapping_add(usize::from((key >= lo) & (key <= last)));
        }
        // SAFETY: each key and position up to the last kept was written before `kept`
        // advanced past it.
        unsafe {
            keys.set_len(kept.min(cap));
            positions.set_len(kept.min(cap));
        }
        TaskPass {
            below: below.into(),
            inside: kept as u64,
            non_finite: non_finite.into(),
            keys,
            positions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select::route::with_forced_miss;
    use crate::test_values::{awkward_bits16, by_sort, inputs};
    use burn::tensor::{bf16, f16};

    /// The mask a sort gives: the state of the selection, and the input with the entries
    /// below its threshold (at most `+inf`) zeroed, compared bit for bit.
    fn check<E: MaskElement>(values: &[E], rank: u64, context: &str) {
        let expected = by_sort(values, rank);
        let threshold = E::key_bits(expected.key.min(E::INF_KEY));
        let zero: E::AbsBits = bytemuck::cast(E::zero());
        let masked: Vec<E::AbsBits> = values
            .iter()
            .map(|&x| match x.abs_bits() < threshold {
                true => zero,
                false => bytemuck::cast(x),
            })
            .collect();
        let mut output = vec![E::zero(); values.len()];
        let state = mask_smallest(values, &mut output, rank);
        assert_eq!(state, expected, "{context}: state");
        let got: &[E::AbsBits] = bytemuck::cast_slice(&output);
        assert!(got == masked.as_slice(), "{context}: masked values");
    }

    /// Every input, rank and forced miss, on f32 and on f16 and bf16 read from the same
    /// awkward values: the one pass gives the mask and the state a sort gives. At 300,000
    /// entries the pass runs in two tasks where there are two threads.
    #[test]
    fn the_one_pass_matches_a_sort_on_every_side_of_the_bracket() {
        let misses = [
            None,
            Some(BracketMiss::Low),
            Some(BracketMiss::High),
            Some(BracketMiss::Overfull),
        ];
        for n in [1, 4096, 4097, 70_000, 300_000] {
            for (name, values) in inputs(n) {
                let last = n as u64 - 1;
                let half: Vec<f16> = values.iter().map(|&x| f16::from_f32(x)).collect();
                let brain: Vec<bf16> = values.iter().map(|&x| bf16::from_f32(x)).collect();
                for rank in [0, last / 3, (7 * last) / 10, last] {
                    for miss in misses {
                        let context = format!("{name} n={n} rank {rank} {miss:?}");
                        let run = |f: &dyn Fn()| match miss {
                            Some(miss) => with_forced_miss(miss, f),
                            None => f(),
                        };
                        run(&|| check(&values, rank, &format!("f32 {context}")));
                        run(&|| check(&half, rank, &format!("f16 {context}")));
                        run(&|| check(&brain, rank, &format!("bf16 {context}")));
                    }
                }
            }
        }
    }

    /// 16-bit values of every finite magnitude and the awkward ones (NaN payloads of both
    /// signs, infinities, subnormals), and f64, through the one pass.
    #[test]
    fn sixteen_bit_and_f64_values_match_a_sort() {
        let bits = awkward_bits16(50_000, 0x61, 0x7C00, 0x3C00);
        let half: Vec<f16> = bits.iter().map(|&b| f16::from_bits(b)).collect();
        let bits = awkward_bits16(50_000, 0x62, 0x7F80, 0x3F80);
        let brain: Vec<bf16> = bits.iter().map(|&b| bf16::from_bits(b)).collect();
        let wide: Vec<f64> = crate::test_values::awkward_f32(50_000, 0x63)
            .into_iter()
            .map(f64::from)
            .collect();
        for rank in [0, 10_000, 25_000, 45_000, 49_999] {
            for miss in [None, Some(BracketMiss::Low), Some(BracketMiss::Overfull)] {
                let context = format!("rank {rank} {miss:?}");
                let run = |f: &dyn Fn()| match miss {
                    Some(miss) => with_forced_miss(miss, f),
                    None => f(),
                };
                run(&|| check(&half, rank, &format!("f16 {context}")));
                run(&|| check(&brain, rank, &format!("bf16 {context}")));
                run(&|| check(&wide, rank, &format!("f64 {context}")));
            }
        }
    }

    /// One task's pass by a plain filter: the reference each code is checked against.
    fn plain<E: MaskElement>(
        values: &[E],
        edges: &Edges<E>,
        cap: usize,
    ) -> (Vec<E::AbsBits>, TaskPass<E::AbsBits>) {
        let key = |x: &E| x.abs_bits().min(edges.nan);
        let zero: E::AbsBits = bytemuck::cast(E::zero());
        let written = values
            .iter()
            .map(|x| match key(x) < edges.zero {
                true => zero,
                false => bytemuck::cast(*x),
            })
            .collect();
        let inside: Vec<(E::AbsBits, u32)> = (0..values.len())
            .map(|at| (key(&values[at]), at as u32))
            .filter(|(k, _)| *k >= edges.lo && *k <= edges.last)
            .collect();
        let below = values.iter().filter(|x| key(x) < edges.lo).count() as u64;
        let non_finite = values.iter().filter(|x| key(x) >= edges.inf).count() as u64;
        let kept = &inside[..inside.len().min(cap)];
        let pass = TaskPass {
            below,
            inside: inside.len() as u64,
            non_finite,
            keys: kept.iter().map(|p| p.0).collect(),
            positions: kept.iter().map(|p| p.1).collect(),
        };
        (written, pass)
    }

    /// Every code of the pass this CPU has (the portable loop, AVX2, AVX-512), at lengths around the vector widths, output offsets that are
    /// not aligned, brackets of every width and caps that overflow, against [`plain`].
    fn check_codes<E: MaskElement>(values: &[E], name: &str) {
        let mut sorted: Vec<u64> = values.iter().map(|x| x.abs_key()).collect();
        sorted.sort_unstable();
        let n = values.len();
        for (lo_at, width) in [(0.0, 0.1), (0.3, 0.2), (0.9, 0.2), (0.97, 1.0)] {
            let Some(&lo) = sorted.get((lo_at * n as f64) as usize) else {
                continue;
            };
            let last = sorted[(((lo_at + width) * n as f64) as usize).min(n - 1)];
            let edges = Edges::<E>::new(KeyBracket { lo, last });
            for cap in [n, n / 5, 3] {
                let (expected_written, expected) = plain(values, &edges, cap);
                for offset in [0, 1, 3] {
                    // The output starts `offset` entries into a buffer: not aligned.
                    let mut buffer = vec![E::zero(); n + offset];
                    let mut codes = vec![("portable", None)];
                    for isa in [bracket_simd::Isa::Avx512, bracket_simd::Isa::Avx2] {
                        codes.push(("vector", Some(isa)));
                    }
                    for (code, isa) in codes {
                        {
                            let output = &mut buffer[offset..];
                            let pass = match isa {
                                None => Some(edges.pass_portable(values, output, cap)),
                                Some(isa) => match std::mem::size_of::<E::AbsBits>() {
                                    4 => edges.pass_simd::<u32>(isa, values, output, cap),
                                    2 => edges.pass_simd::<u16>(isa, values, output, cap),
                                    _ => None,
                                },
                            };
                            // A vector code this CPU lacks, or a width it does not take.
                            let Some(pass) = pass else { continue };
                            let context = format!(
                                "{name} {code} {isa:?} n={n} lo={lo:#x} last={last:#x} cap={cap} offset={offset}"
                            );
                            let written: &[E::AbsBits] = bytemuck::cast_slice(&buffer[offset..]);
                            assert!(written == expected_written.as_slice(), "{context}: written");
                            assert_eq!(
                                (pass.below, pass.inside, pass.non_finite),
                                (expected.below, expected.inside, expected.non_finite),
                                "{context}: counts"
                            );
                            assert!(pass.keys == expected.keys, "{context}: keys");
                            assert_eq!(pass.positions, expected.positions, "{context}: positions");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_code_of_the_pass_matches_a_plain_filter() {
        for n in [1, 7, 8, 9, 15, 16, 17, 33, 100, 5_000] {
            let values = crate::test_values::awkward_f32(n, 0x64);
            check_codes(&values, "f32");
            let half: Vec<f16> = awkward_bits16(n, 0x65, 0x7C00, 0x3C00)
                .into_iter()
                .map(f16::from_bits)
                .collect();
            check_codes(&half, "f16");
            let brain: Vec<bf16> = awkward_bits16(n, 0x66, 0x7F80, 0x3F80)
                .into_iter()
                .map(bf16::from_bits)
                .collect();
            check_codes(&brain, "bf16");
            let wide: Vec<f64> = values.iter().map(|&x| f64::from(x)).collect();
            check_codes(&wide, "f64");
        }
    }
}
