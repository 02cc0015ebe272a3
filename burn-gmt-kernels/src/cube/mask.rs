//! Fused abs-threshold mask: one pass, in place, `values[i] = key(|values[i]|) < key(T) ? 0
//! : values[i]` with `T = threshold[0]` read from device memory (no host round trip between
//! selection and masking).

use cubecl::prelude::*;

use super::key::{KeyKind, wide_key};
use super::launch::{Grid, PartKernel, PlannedKernel};
#[cfg(not(gmt_cuda_codegen))]
use super::launch::{LaunchPlan, assert_threshold};
#[cfg(not(gmt_cuda_codegen))]
use burn_cubecl::tensor::CubeTensor;

/// The buffers of the mask kernel.
#[derive(CubeLaunch, CubeType)]
pub struct MaskArgs<F: Float, N: Size> {
    /// The gradient, masked in place.
    values: Box<[Vector<F, N>]>,
    /// The threshold, one entry.
    threshold: Box<[F]>,
}

/// The mask kernel family.
pub struct Mask;

#[cube]
impl<F: Float, N: Size> PartKernel<F, N> for Mask {
    type Args = MaskArgs<F, N>;

    /// Zeroes, in place, the entry at this unit's position if its `|x|` key is below the key
    /// of `threshold[0]`. NaN and `±inf` are never below a threshold of at most `+inf`.
    fn run(args: &mut MaskArgs<F, N>, start: usize, end: usize, #[comptime] kind: KeyKind) {
        let pos = start + ABSOLUTE_POS;
        if pos < end {
            let limit = wide_key::<F, N>(Vector::new(args.threshold[0]), kind);
            args.values[pos] = mask_below_limit::<F, N>(args.values[pos], &limit, kind);
        }
    }
}

/// `x` with the lanes whose `|x|` key is below `limit` (the threshold's key, from
/// [`wide_key`]) zeroed: what every mask kernel writes.
#[cube]
pub fn mask_below_limit<F: Float, N: Size>(
    x: Vector<F, N>,
    limit: &Vector<u32, N>,
    #[comptime] kind: KeyKind,
) -> Vector<F, N> {
    let below = wide_key::<F, N>(x, kind).less_than(limit);
    select_many(below, Vector::new(F::new(0.0)), x)
}

// SAFETY: a unit touches `values` at its own position only, after checking it against `end`;
// `launch` gives a threshold of at least one entry.
unsafe impl PlannedKernel for Mask {
    type Args<F: Float, N: Size> = MaskArgs<F, N>;
    type Part<F: Float, N: Size> = Mask;
    const GRID: Grid = Grid::Elementwise;
}

/// Masks the `plan.len` entries of `values` (contiguous, writable, of the plan's dtype) in
/// place against `threshold` (one entry of that dtype).
#[cfg(not(gmt_cuda_codegen))]
pub fn launch(values: &CubeTensor, threshold: &CubeTensor, plan: &LaunchPlan) {
    assert_threshold(threshold);
    plan.launch::<Mask>(|| {
        MaskArgsLaunch::new(
            values.clone().into_buffer_arg(),
            threshold.clone().into_buffer_arg(),
        )
    });
}
