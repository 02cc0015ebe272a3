//! Fused abs-threshold mask: one pass, in place, `values[i] = key(|values[i]|) < key(T) ? 0
//! : values[i]` with `T = threshold[0]` read from device memory (no host round trip between
//! selection and masking).

use cubecl::prelude::*;

use super::key::wide_key;
use super::{Launch, LaunchPlan};
use burn_cubecl::tensor::CubeTensor;

/// Zeroes, in place, the entries of `values[start..end]` whose `|x|` key is below the key of
/// `threshold[0]`. NaN and `±inf` are never below a threshold of at most `+inf`.
#[cube(launch_unchecked, address_type = "dynamic")]
fn abs_threshold_mask_kernel<F: Float, N: Size>(
    values: &mut [Vector<F, N>],
    threshold: &[F],
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
    let x = values[pos];
    let below = wide_key::<F, N>(x, kind).less_than(&limit);
    values[pos] = select_many(below, Vector::new(F::new(0.0)), x);
}

/// Launches [`abs_threshold_mask_kernel`] over the `plan.len` entries of `values` (contiguous,
/// writable, of the plan's dtype): a vectorized launch over the whole vectors, then a scalar
/// one over the tail, if any.
pub fn launch(values: &CubeTensor, threshold: &CubeTensor, plan: &LaunchPlan) {
    for launch in plan.launches() {
        let Launch {
            vector_size,
            start,
            end,
            cube_count,
            cube_dim,
        } = launch;
        // SAFETY: every unit checks its position against `end`, which is within the
        // `plan.len` entries of the buffer; the threshold holds one entry.
        unsafe {
            abs_threshold_mask_kernel::launch_unchecked(
                &values.client,
                cube_count,
                cube_dim,
                plan.address_type,
                vector_size,
                values.clone().into_buffer_arg(),
                threshold.clone().into_buffer_arg(),
                start,
                end,
                plan.kind,
                plan.storage,
            );
        }
    }
}
