//! Exact selection of a small tensor in one launch: one cube loads every key into shared
//! memory and runs the radix select there, 8 bits a pass (a 256-bin shared histogram), then
//! writes the selection's state words. It replaces the five launches of the buffer-based
//! selection ([`super::radix`], [`super::histogram`]) for tensors of at most
//! [`SMALL_SELECT_MAX_ENTRIES`] entries (biases, norms, small layers), whose cost is launches,
//! not bandwidth.

use cubecl::prelude::*;

use super::key::{KeyKind, narrow_key, wide_key};
use super::launch::LaunchPlan;
use crate::buffer::{
    SMALL_SELECT_MAX_ENTRIES, STATE_BELOW, STATE_KEY, STATE_NON_FINITE, STATE_REMAINING,
};
use burn_cubecl::tensor::CubeTensor;

/// Units of the one cube.
const UNITS: u32 = 256;
/// Bins of an 8-bit digit.
const BINS: u32 = 256;

/// Writes the [`SelectionState`](crate::buffer::SelectionState) words of the `(rank + 1)`-th smallest key of
/// `values[..len]` into `state`: the selected key, the rank left within its ties, the keys
/// below it and the keys of NaN and ±inf (at or above `inf_key`).
#[cube(launch_unchecked)]
fn radix_select_small_kernel<F: Float>(
    values: &[F],
    state: &mut [u32],
    len: u32,
    rank: u32,
    inf_key: u32,
    #[comptime] kind: KeyKind,
    #[comptime] key_bits: u32,
    #[define(F)] _dtype: ElemType,
) {
    let mut keys = Shared::<[u32]>::new_slice(SMALL_SELECT_MAX_ENTRIES);
    let hist = Shared::<[Atomic<u32>]>::new_slice(BINS as usize);
    // [0]: prefix chosen so far, [1]: rank left within it.
    let mut chosen = Shared::<[u32]>::new_slice(2usize);
    let non_finite = Shared::<[Atomic<u32>]>::new_slice(1usize);

    let mut own_non_finite = 0u32;
    let mut i = UNIT_POS;
    while i < len {
        let key = narrow_key(
            wide_key::<F, Const<1>>(Vector::new(values[i as usize]), kind).extract(0usize),
            kind,
        );
        keys[i as usize] = key;
        if key >= inf_key {
            own_non_finite += 1u32;
        }
        i += CUBE_DIM;
    }
    if UNIT_POS == 0u32 {
        chosen[0usize] = 0u32;
        chosen[1usize] = rank;
        non_finite[0usize].store(0u32);
    }
    sync_cube();
    if own_non_finite > 0u32 {
        non_finite[0usize].fetch_add(own_non_finite);
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
        while j < len {
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
        let remaining = chosen[1usize];
        state[STATE_KEY] = chosen[0usize];
        state[STATE_REMAINING] = remaining;
        // The rank is the keys below the selected one plus its place among its ties.
        state[STATE_BELOW] = rank - remaining;
        state[STATE_NON_FINITE] = non_finite[0usize].load();
    }
}

/// Launches [`radix_select_small_kernel`]: `grad` contiguous with `plan.len` entries, at most
/// [`SMALL_SELECT_MAX_ENTRIES`] and more than `rank`; `state` four `u32` words.
pub fn launch(grad: &CubeTensor, state: &CubeTensor, plan: &LaunchPlan, rank: u32, inf_key: u32) {
    assert!(plan.len <= SMALL_SELECT_MAX_ENTRIES && (rank as usize) < plan.len);
    let units = UNITS
        .min(grad.client.properties().hardware.max_units_per_cube)
        .max(1);
    // SAFETY: units read entries below `len` (the buffer's length) and shared keys below
    // `len <= SMALL_SELECT_MAX_ENTRIES`; digits index 256 bins; unit 0 writes the 4 words.
    unsafe {
        radix_select_small_kernel::launch_unchecked(
            &grad.client,
            CubeCount::new_1d(1),
            CubeDim::new_1d(units),
            grad.clone().into_buffer_arg(),
            state.clone().into_buffer_arg(),
            plan.len as u32,
            rank,
            inf_key,
            plan.kind,
            plan.kind.key_bits(),
            plan.storage,
        );
    }
}
