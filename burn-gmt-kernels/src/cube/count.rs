//! Counts of a gradient against a threshold (for `MaskStats`): entries whose `|x|` key is
//! below the threshold's key (what the mask zeroes) and non-finite entries (never masked).
//! One read pass, counted per unit, merged per cube in shared memory, then one global atomic
//! per counter and cube ([`count_entries`], which the random-mask counts share with their own
//! [`MaskedRule`]).

use cubecl::prelude::*;

use super::key::{KeyKind, WIDE_INF_KEY, wide_key};
use super::launch::{Grid, PartKernel, PlannedKernel};
#[cfg(not(gmt_cuda_codegen))]
use super::launch::{LaunchPlan, assert_threshold};
#[cfg(not(gmt_cuda_codegen))]
use burn_cubecl::tensor::CubeTensor;

/// The buffers of the threshold count kernel.
#[derive(CubeLaunch, CubeType)]
pub struct CountArgs<F: Float, N: Size> {
    /// The gradient.
    values: Box<[Vector<F, N>]>,
    /// The threshold, one entry.
    threshold: Box<[F]>,
    /// `[masked, non-finite]`, added to.
    counts: Box<[Atomic<u32>]>,
}

/// The threshold count kernel family.
pub struct ThresholdCount;

#[cube]
impl<F: Float, N: Size> PartKernel<F, N> for ThresholdCount {
    type Args = CountArgs<F, N>;

    /// Adds to `counts[0]` the entries of this unit's positions below the threshold key and
    /// to `counts[1]` the non-finite ones.
    fn run(args: &mut CountArgs<F, N>, start: usize, end: usize, #[comptime] kind: KeyKind) {
        let limit = wide_key::<F, N>(Vector::new(args.threshold[0]), kind).extract(0usize);
        let rule = BelowKey { limit };
        count_entries::<F, N, BelowKey>(&args.values, &mut args.counts, &rule, start, end, kind);
    }
}

/// Which entries a counting kernel counts as masked.
#[cube]
pub trait MaskedRule: CubeType + Send + Sync + 'static {
    /// Whether the entry of wide key `key` ([`wide_key`]) at `index` (in entries) is masked.
    fn is_masked(&self, key: u32, index: usize) -> bool;
}

/// The threshold rule: keys below `limit` are masked.
#[derive(CubeType)]
struct BelowKey {
    limit: u32,
}

#[cube]
impl MaskedRule for BelowKey {
    fn is_masked(&self, key: u32, _index: usize) -> bool {
        key < self.limit
    }
}

/// Adds to `counts[0]` the entries of this unit's positions in `start..end` (a grid-stride
/// loop over vectors) that `rule` masks and to `counts[1]` the non-finite ones.
#[cube]
pub fn count_entries<F: Float, N: Size, R: MaskedRule>(
    values: &[Vector<F, N>],
    counts: &mut [Atomic<u32>],
    rule: &R,
    start: usize,
    end: usize,
    #[comptime] kind: KeyKind,
) {
    let mut masked = 0u32;
    let mut non_finite = 0u32;
    let stride = CUBE_COUNT * (CUBE_DIM as usize);
    let mut pos = start + ABSOLUTE_POS;
    while pos < end {
        let keys = wide_key::<F, N>(values[pos], kind);
        #[unroll]
        for lane in 0..N::value() {
            let key = keys.extract(lane);
            if rule.is_masked(key, pos * N::value() + lane) {
                masked += 1u32;
            }
            if key >= WIDE_INF_KEY {
                non_finite += 1u32;
            }
        }
        pos += stride;
    }
    add_cube_counts(counts, 0usize, masked, non_finite);
}

// SAFETY: a unit reads `values` at positions in `start..end` only (the grid-stride loop stops
// at `end`); `launch` gives a threshold of at least one entry and two counters.
unsafe impl PlannedKernel for ThresholdCount {
    type Args<F: Float, N: Size> = CountArgs<F, N>;
    type Part<F: Float, N: Size> = ThresholdCount;
    const GRID: Grid = Grid::Reduction;
}

/// Adds every unit's two counts to `counts[at]` and `counts[at + 1]`: summed per cube in
/// shared memory, then one global atomic per counter and cube. Every unit of the cube must
/// call it.
#[cube]
pub fn add_cube_counts(counts: &mut [Atomic<u32>], at: usize, first: u32, second: u32) {
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
        counts[at].fetch_add(local[0usize].load());
        counts[at + 1usize].fetch_add(local[1usize].load());
    }
}

/// Checks that `counts` holds the two counters [`add_cube_counts`] adds to.
#[cfg(not(gmt_cuda_codegen))]
pub fn assert_counters(counts: &CubeTensor) {
    assert!(
        counts.meta.num_elements() >= 2,
        "gradient mask: two counters"
    );
}

/// Adds the counts of `values` (contiguous, `plan.len` entries) against `threshold[0]` to
/// `counts` (two zeroed `u32` counters).
#[cfg(not(gmt_cuda_codegen))]
pub fn launch(values: &CubeTensor, threshold: &CubeTensor, counts: &CubeTensor, plan: &LaunchPlan) {
    assert_threshold(threshold);
    assert_counters(counts);
    plan.launch::<ThresholdCount>(|| {
        CountArgsLaunch::new(
            values.clone().into_buffer_arg(),
            threshold.clone().into_buffer_arg(),
            counts.clone().into_buffer_arg(),
        )
    });
}
