//! Exact selection among at most [`SMALL_SELECT_MAX_ENTRIES`] keys in one launch: one cube
//! loads the keys into shared memory and runs the radix select there, 8 bits a pass (a
//! 256-bin shared histogram). Two uses:
//! - a small tensor's whole selection, its state words written: it replaces the five
//!   launches of the buffer-based selection ([`super::radix`], [`super::histogram`]) for
//!   tensors of at most [`SMALL_SELECT_MAX_ENTRIES`] entries (biases, norms, small layers),
//!   whose cost is launches, not bandwidth;
//! - the bracket of a one-pass mask ([`super::onepass`]): a sample of a tensor's keys, and
//!   the two sample keys around the sought rank.

use cubecl::prelude::*;

use super::key::{KeyKind, narrow_key, wide_key};
#[cfg(not(gmt_cuda_codegen))]
use super::launch::{LaunchPlan, count_launch};
use crate::buffer::{
    SELECTION_STATE_LEN, SMALL_SELECT_MAX_ENTRIES, STATE_BELOW, STATE_KEY, STATE_NON_FINITE,
    STATE_REMAINING, WORK_BELOW, WORK_INSIDE, WORK_LAST, WORK_LEN, WORK_LO, WORK_NON_FINITE,
    WORK_ROUTE,
};
#[cfg(not(gmt_cuda_codegen))]
use burn_cubecl::tensor::CubeTensor;

/// Units of the one cube.
#[cfg(not(gmt_cuda_codegen))]
const UNITS: u32 = 256;
/// Bins of an 8-bit digit.
const BINS: u32 = 256;

/// What a launch of [`radix_select_small_kernel`] selects and where it writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SmallSelect {
    /// The whole selection of a tensor of at most [`SMALL_SELECT_MAX_ENTRIES`] entries: its
    /// state words.
    State,
    /// The bracket of a one-pass mask ([`super::onepass`]): the keys of two ranks among a
    /// sample of the tensor, written to its work words.
    Bracket,
}

/// A `u32` hash of `i` (a multiply-xorshift finaliser): where in its stratum sample `i` is
/// drawn, so that the sample does not alias with periodic data.
#[cube]
fn jitter(i: u32) -> u32 {
    let mut x = i * 0x9E37_79B1u32;
    x ^= x >> 15u32;
    x *= 0x85EB_CA77u32;
    x ^ (x >> 13u32)
}

/// Radix select in one cube over keys in shared memory, 8 bits a pass (a 256-bin shared
/// histogram).
///
/// With `mode` [`SmallSelect::State`]: writes the
/// [`SelectionState`](crate::buffer::SelectionState) words of the `(rank + 1)`-th smallest
/// key of `values[..len]` into `state`: the selected key, the rank left within its ties, the
/// keys below it and the keys of NaN and ±inf (at or above `inf_key`).
///
/// With `mode` [`SmallSelect::Bracket`]: draws `samples` keys of `values[..len]`, one per
/// stratum of `len / samples` entries at a hashed offset, selects the keys of ranks `rank`
/// and `rank_hi` among them (the bracket's ends; `u32::MAX` for an end past the sample: key
/// 0, or above every key) and writes them to the work words of a one-pass mask at
/// `state[work_start..]`, clearing its counters; `forced` (tests only) replaces them with a
/// bracket that misses: 1 above every finite key, 2 at key 0.
#[cube(launch_unchecked, create_dummy_kernel)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn radix_select_small_kernel<F: Float>(
    values: &[F],
    state: &mut [u32],
    len: u32,
    samples: u32,
    rank: u32,
    rank_hi: u32,
    inf_key: u32,
    work_start: usize,
    forced: u32,
    #[comptime] mode: SmallSelect,
    #[comptime] kind: KeyKind,
    #[comptime] key_bits: u32,
    #[define(F)] _dtype: ElemType,
) {
    let mut keys = Shared::<[u32]>::new_slice(SMALL_SELECT_MAX_ENTRIES);
    let hist = Shared::<[Atomic<u32>]>::new_slice(BINS as usize);
    // [0]: prefix chosen so far, [1]: rank left within it, [2 + s]: the key of selection s.
    let mut chosen = Shared::<[u32]>::new_slice(4usize);
    let non_finite = Shared::<[Atomic<u32>]>::new_slice(1usize);

    let bracket = comptime!(mode == SmallSelect::Bracket);
    let mut count = len;
    let mut stratum = 1u32;
    if bracket {
        count = samples;
        stratum = len / samples;
    }
    let mut own_non_finite = 0u32;
    let mut i = UNIT_POS;
    while i < count {
        let mut pos = i;
        if bracket {
            pos = i * stratum + jitter(i) % stratum;
        }
        let key = narrow_key(
            wide_key::<F, Const<1>>(Vector::new(values[pos as usize]), kind).extract(0usize),
            kind,
        );
        keys[i as usize] = key;
        if key >= inf_key {
            own_non_finite += 1u32;
        }
        i += CUBE_DIM;
    }
    if UNIT_POS == 0u32 {
        non_finite[0usize].store(0u32);
    }
    sync_cube();
    if own_non_finite > 0u32 {
        non_finite[0usize].fetch_add(own_non_finite);
    }

    let selections = comptime!(if bracket { 2u32 } else { 1u32 });
    #[unroll]
    for selection in 0..selections {
        if UNIT_POS == 0u32 {
            let mut sought = rank;
            if comptime!(selection == 1u32) {
                sought = rank_hi;
            }
            // An end past the sample selects nothing; any rank keeps the loop in bounds.
            chosen[0usize] = 0u32;
            chosen[1usize] = u32::min(sought, count - 1u32);
        }
        #[unroll]
        for pass in 0..key_bits / 8u32 {
            let shift = key_bits - 8u32 * (pass + 1u32);
            let mut bin = UNIT_POS;
            while bin < BINS {
                hist[bin as usize].store(0u32);
                bin += CUBE_DIM;
            }
            sync_cube();
            let prefix = chosen[0usize];
            let mut j = UNIT_POS;
            while j < count {
                let key = keys[j as usize];
                // The first pass takes every key (no bits above it to compare).
                let mut in_prefix = true;
                if comptime!(pass > 0u32) {
                    in_prefix = key >> (shift + 8u32) == prefix;
                }
                if in_prefix {
                    hist[((key >> shift) & 0xFFu32) as usize].fetch_add(1u32);
                }
                j += CUBE_DIM;
            }
            sync_cube();
            if UNIT_POS == 0u32 {
                let remaining = chosen[1usize];
                let mut before = 0u32;
                let mut digit = 0u32;
                let mut found = false;
                for d in 0..BINS {
                    let count = hist[d as usize].load();
                    if !found {
                        if remaining < before + count {
                            digit = d;
                            found = true;
                        } else {
                            before += count;
                        }
                    }
                }
                chosen[0usize] = (prefix << 8u32) | digit;
                chosen[1usize] = remaining - before;
            }
            sync_cube();
        }
        if UNIT_POS == 0u32 {
            chosen[(2u32 + selection) as usize] = chosen[0usize];
        }
    }

    if UNIT_POS == 0u32 {
        if bracket {
            let mut lo = chosen[2usize];
            let mut last = chosen[3usize];
            if rank == u32::MAX {
                lo = 0u32;
            }
            if rank_hi == u32::MAX {
                last = u32::MAX;
            }
            if forced == 1u32 {
                lo = inf_key;
                last = inf_key;
            } else if forced == 2u32 {
                lo = 0u32;
                last = 0u32;
            }
            state[work_start + WORK_LO] = lo;
            state[work_start + WORK_LAST] = last;
            state[work_start + WORK_BELOW] = 0u32;
            state[work_start + WORK_INSIDE] = 0u32;
            state[work_start + WORK_NON_FINITE] = 0u32;
            state[work_start + WORK_ROUTE] = 0u32;
        } else {
            let remaining = chosen[1usize];
            state[STATE_KEY] = chosen[0usize];
            state[STATE_REMAINING] = remaining;
            // The rank is the keys below the selected one plus its place among its ties.
            state[STATE_BELOW] = rank - remaining;
            state[STATE_NON_FINITE] = non_finite[0usize].load();
        }
    }
}

/// Launches [`radix_select_small_kernel`] for a whole selection: `grad` contiguous with
/// `plan.len` entries, at most [`SMALL_SELECT_MAX_ENTRIES`] and more than `rank`; `state` four
/// `u32` words.
#[cfg(not(gmt_cuda_codegen))]
pub fn launch(grad: &CubeTensor, state: &CubeTensor, plan: &LaunchPlan, rank: u32, inf_key: u32) {
    assert!(plan.len <= SMALL_SELECT_MAX_ENTRIES && (rank as usize) < plan.len);
    assert!(state.meta.num_elements() >= SELECTION_STATE_LEN);
    let samples = plan.len as u32;
    launch_mode(
        grad,
        state,
        plan,
        [rank, 0, samples],
        0,
        0,
        inf_key,
        SmallSelect::State,
    );
}

/// The ends of a one-pass bracket ([`SmallSelect::Bracket`]): the sample's size and the
/// positions in it of the bracket's lowest and highest keys (`None` past its ends), and the
/// miss tests force, if any (1 low, 2 high).
#[cfg(not(gmt_cuda_codegen))]
pub struct BracketSample {
    /// Keys drawn, at most [`SMALL_SELECT_MAX_ENTRIES`] and at most the tensor's entries.
    pub samples: u32,
    /// Position of the bracket's lowest key in the sorted sample.
    pub lo_at: Option<u32>,
    /// Position of its highest key.
    pub hi_at: Option<u32>,
    /// The miss tests force (0: none).
    pub forced: u32,
}

/// Launches [`radix_select_small_kernel`] to bracket a one-pass mask of `grad` (contiguous,
/// `plan.len` entries): the work words at `buffer[work_start..]`.
#[cfg(not(gmt_cuda_codegen))]
pub fn launch_bracket(
    grad: &CubeTensor,
    buffer: &CubeTensor,
    plan: &LaunchPlan,
    sample: &BracketSample,
    work_start: usize,
    inf_key: u32,
) {
    assert!(
        sample.samples > 0
            && sample.samples as usize <= SMALL_SELECT_MAX_ENTRIES.min(plan.len)
            && sample.lo_at.is_none_or(|at| at < sample.samples)
            && sample.hi_at.is_none_or(|at| at < sample.samples)
    );
    assert!(work_start + WORK_LEN <= buffer.meta.num_elements());
    let ranks = [
        sample.lo_at.unwrap_or(u32::MAX),
        sample.hi_at.unwrap_or(u32::MAX),
        sample.samples,
    ];
    let mode = SmallSelect::Bracket;
    launch_mode(
        grad,
        buffer,
        plan,
        ranks,
        work_start,
        sample.forced,
        inf_key,
        mode,
    );
}

/// One launch of [`radix_select_small_kernel`]; `ranks` are `[rank, rank_hi, samples]`.
#[allow(clippy::too_many_arguments)]
#[cfg(not(gmt_cuda_codegen))]
fn launch_mode(
    grad: &CubeTensor,
    state: &CubeTensor,
    plan: &LaunchPlan,
    ranks: [u32; 3],
    work_start: usize,
    forced: u32,
    inf_key: u32,
    mode: SmallSelect,
) {
    let [rank, rank_hi, samples] = ranks;
    let units = UNITS
        .min(grad.client.properties().hardware.max_units_per_cube)
        .max(1);
    count_launch();
    // SAFETY: units read entries below `len` (the buffer's length: a sample position is
    // below `samples * (len / samples) <= len`) and shared keys below `samples` or `len`,
    // both at most `SMALL_SELECT_MAX_ENTRIES` (checked by the callers); digits index 256
    // bins; unit 0 writes the 4 state words or the `WORK_LEN` work words at `work_start`,
    // within `state` (checked by the callers).
    unsafe {
        radix_select_small_kernel::launch_unchecked(
            &grad.client,
            CubeCount::new_1d(1),
            CubeDim::new_1d(units),
            grad.clone().into_buffer_arg(),
            state.clone().into_buffer_arg(),
            plan.len as u32,
            samples,
            rank,
            rank_hi,
            inf_key,
            work_start,
            forced,
            mode,
            plan.kind,
            plan.kind.key_bits(),
            plan.storage,
        );
    }
}
