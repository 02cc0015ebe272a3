//! Fused abs-threshold select (for `MaskTarget::Update`): one pass, in place,
//! `updated[i] = key(|grad[i]|) < key(T) ? previous[i] : updated[i]`, with `T = threshold[0]`
//! read from device memory.

use cubecl::prelude::*;

use super::key::wide_key;
use super::{Launch, LaunchPlan};
use burn_cubecl::tensor::CubeTensor;

/// Puts `previous` back into `updated[start..end]`, in place, where the gradient's `|g|` key is
/// below the key of `threshold[0]`.
#[cube(launch_unchecked, address_type = "dynamic")]
fn abs_threshold_select_kernel<F: Float, N: Size>(
    grad: &[Vector<F, N>],
    threshold: &[F],
    updated: &mut [Vector<F, N>],
    previous: &[Vector<F, N>],
    start: usize,
    end: usize,
    #[comptime] kind: u32,
    #[define(F)] _dtype: ElemType,
) {
    let pos = start + ABSOLUTE_POS;
    if pos >= end {
        terminate!();
    }
    let limit = wide_key::<F, N>(Vector::new(threshold[0]), kind);
    let below = wide_key::<F, N>(grad[pos], kind).less_than(&limit);
    updated[pos] = select_many(below, previous[pos], updated[pos]);
}

/// Launches [`abs_threshold_select_kernel`] writing into `updated` (contiguous, writable);
/// `grad` and `previous` are contiguous with the same `plan.len` entries and dtype.
pub fn launch(
    grad: &CubeTensor,
    threshold: &CubeTensor,
    updated: &CubeTensor,
    previous: &CubeTensor,
    plan: &LaunchPlan,
) {
    for launch in plan.launches() {
        let Launch {
            vector_size,
            start,
            end,
            cube_count,
            cube_dim,
        } = launch;
        // SAFETY: every unit checks its position against `end`, which is within the
        // `plan.len` entries of each of the three buffers; the threshold holds one entry.
        unsafe {
            abs_threshold_select_kernel::launch_unchecked(
                &updated.client,
                cube_count,
                cube_dim,
                plan.address_type,
                vector_size,
                grad.clone().into_buffer_arg(),
                threshold.clone().into_buffer_arg(),
                updated.clone().into_buffer_arg(),
                previous.clone().into_buffer_arg(),
                start,
                end,
                plan.kind,
                plan.storage,
            );
        }
    }
}
