//! Fused abs-threshold select (for `MaskTarget::Update`): one pass, in place,
//! `updated[i] = key(|grad[i]|) < key(T) ? previous[i] : updated[i]`, with `T = threshold[0]`
//! read from device memory.

use cubecl::prelude::*;

use super::key::{KeyKind, wide_key};
use super::launch::{Grid, PartKernel, PlannedKernel};
#[cfg(not(gmt_cuda_codegen))]
use super::launch::{LaunchPlan, assert_threshold};
#[cfg(not(gmt_cuda_codegen))]
use burn_cubecl::tensor::CubeTensor;

/// The buffers of the select kernel.
#[derive(CubeLaunch, CubeType)]
pub struct HoldArgs<F: Float, N: Size> {
    /// The gradient that decides.
    grad: Box<[Vector<F, N>]>,
    /// The threshold, one entry.
    threshold: Box<[F]>,
    /// The updated values, written in place.
    updated: Box<[Vector<F, N>]>,
    /// The values before the update.
    previous: Box<[Vector<F, N>]>,
}

/// The select kernel family: masked parameters hold still.
pub struct Hold;

#[cube]
impl<F: Float, N: Size> PartKernel<F, N> for Hold {
    type Args = HoldArgs<F, N>;

    /// Puts `previous` back into `updated` at this unit's position, in place, where the
    /// gradient's `|g|` key is below the key of `threshold[0]`.
    fn run(args: &mut HoldArgs<F, N>, start: usize, end: usize, #[comptime] kind: KeyKind) {
        let pos = start + ABSOLUTE_POS;
        if pos < end {
            let limit = wide_key::<F, N>(Vector::new(args.threshold[0]), kind);
            let below = wide_key::<F, N>(args.grad[pos], kind).less_than(&limit);
            args.updated[pos] = select_many(below, args.previous[pos], args.updated[pos]);
        }
    }
}

// SAFETY: a unit touches the three vector buffers at its own position only, after checking it
// against `end`; `launch` gives a threshold of at least one entry.
unsafe impl PlannedKernel for Hold {
    type Args<F: Float, N: Size> = HoldArgs<F, N>;
    type Part<F: Float, N: Size> = Hold;
    const GRID: Grid = Grid::Elementwise;
}

/// Writes into `updated` (contiguous, writable) against `threshold[0]`; `grad` and `previous`
/// are contiguous with the same `plan.len` entries and dtype.
#[cfg(not(gmt_cuda_codegen))]
pub fn launch(
    grad: &CubeTensor,
    threshold: &CubeTensor,
    updated: &CubeTensor,
    previous: &CubeTensor,
    plan: &LaunchPlan,
) {
    assert_threshold(threshold);
    plan.launch::<Hold>(|| {
        HoldArgsLaunch::new(
            grad.clone().into_buffer_arg(),
            threshold.clone().into_buffer_arg(),
            updated.clone().into_buffer_arg(),
            previous.clone().into_buffer_arg(),
        )
    });
}
