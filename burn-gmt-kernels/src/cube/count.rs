//! Counts of a gradient against a threshold (for `MaskStats`): entries whose `|x|` key is
//! below the threshold's key (what the mask zeroes) and non-finite entries (never masked).
//! One read pass, counted per unit, merged per cube in shared memory, then one global atomic
//! per counter and cube ([`add_cube_counts`], shared with the random-mask counts).

use cubecl::prelude::*;

use super::key::{WIDE_INF_KEY, wide_key};
use super::{Launch, LaunchPlan};
use burn_cubecl::tensor::CubeTensor;

/// Adds to `counts[0]` the entries of `values[start..end]` below the threshold key and to
/// `counts[1]` the non-finite ones.
#[cube(launch_unchecked, address_type = "dynamic")]
fn abs_threshold_count_kernel<F: Float, N: Size>(
    values: &[Vector<F, N>],
    threshold: &[F],
    counts: &mut [Atomic<u32>],
    start: usize,
    end: usize,
    #[comptime] kind: u32,
    #[define(F)] _dtype: ElemType,
) {
    let limit = wide_key::<F, N>(Vector::new(threshold[0]), kind).extract(0usize);
    let mut masked = 0u32;
    let mut non_finite = 0u32;
    let stride = CUBE_COUNT * (CUBE_DIM as usize);
    let mut pos = start + ABSOLUTE_POS;
    while pos < end {
        let keys = wide_key::<F, N>(values[pos], kind);
        #[unroll]
        for lane in 0..N::value() {
            let key = keys.extract(lane);
            if key < limit {
                masked += 1u32;
            }
            if key >= WIDE_INF_KEY {
                non_finite += 1u32;
            }
        }
        pos += stride;
    }
    add_cube_counts(counts, masked, non_finite);
}

/// Adds every unit's two counts to `counts[0]` and `counts[1]`: summed per cube in shared
/// memory, then one global atomic per counter and cube. Every unit of the cube must call it.
#[cube]
pub fn add_cube_counts(counts: &mut [Atomic<u32>], first: u32, second: u32) {
    let local = Shared::<[Atomic<u32>]>::new_slice(2usize);
    if UNIT_POS == 0u32 {
        local[0usize].store(0u32);
        local[1usize].store(0u32);
    }
    sync_cube();
    if first > 0u32 {
        local[0usize].fetch_add(first);
    }
    if second > 0u32 {
        local[1usize].fetch_add(second);
    }
    sync_cube();
    if UNIT_POS == 0u32 {
        counts[0usize].fetch_add(local[0usize].load());
        counts[1usize].fetch_add(local[1usize].load());
    }
}

/// Adds the counts of `values` (contiguous, `plan.len` entries) against `threshold` to
/// `counts` (two zeroed `u32` counters).
pub fn launch(values: &CubeTensor, threshold: &CubeTensor, counts: &CubeTensor, plan: &LaunchPlan) {
    let client = &values.client;
    for launch in plan.reduction_launches() {
        let Launch {
            vector_size,
            start,
            end,
            cube_count,
            cube_dim,
        } = launch;
        // SAFETY: every unit reads positions in `start..end`, within the `plan.len` entries;
        // the threshold holds one entry and the counts two.
        unsafe {
            abs_threshold_count_kernel::launch_unchecked(
                client,
                cube_count,
                cube_dim,
                plan.address_type,
                vector_size,
                values.clone().into_buffer_arg(),
                threshold.clone().into_buffer_arg(),
                counts.clone().into_buffer_arg(),
                start,
                end,
                plan.kind,
                plan.storage,
            );
        }
    }
}
