//! Fused threshold kernels: one pass over the gradient, the threshold read from device memory
//! (no host round trip between selection and masking), in place.

use burn::backend::cubecl::dtype_to_storage_type;
use burn_cubecl::tensor::CubeTensor;
use cubecl::calculate_cube_count_elemwise;
use cubecl::prelude::*;

/// Zeroes, in place, the entries with `|x| < threshold[0]` (NaN compares false: kept).
#[cube(launch_unchecked)]
fn abs_threshold_mask_kernel<F: Float>(
    values: &mut [F],
    threshold: &[F],
    #[define(F)] _dtype: ElemType,
) {
    if ABSOLUTE_POS >= values.len() {
        terminate!();
    }
    let x = values[ABSOLUTE_POS];
    if F::abs(x) < threshold[0] {
        values[ABSOLUTE_POS] = F::new(0.0);
    }
}

/// Puts `previous` back into `updated`, in place, where `|grad| < threshold[0]`.
#[cube(launch_unchecked)]
fn abs_threshold_select_kernel<F: Float>(
    grad: &[F],
    threshold: &[F],
    updated: &mut [F],
    previous: &[F],
    #[define(F)] _dtype: ElemType,
) {
    if ABSOLUTE_POS >= updated.len() {
        terminate!();
    }
    if F::abs(grad[ABSOLUTE_POS]) < threshold[0] {
        updated[ABSOLUTE_POS] = previous[ABSOLUTE_POS];
    }
}

/// Launches [`abs_threshold_mask_kernel`] over `values` (contiguous, writable).
pub fn launch_abs_threshold_mask(values: &CubeTensor, threshold: CubeTensor, len: usize) {
    let client = values.client.clone();
    let cube_dim = CubeDim::new(&client, len);
    let cube_count = calculate_cube_count_elemwise(&client, len, cube_dim);
    let dtype = dtype_to_storage_type(values.dtype);
    // SAFETY: every unit checks its position against the buffer length before accessing it.
    unsafe {
        abs_threshold_mask_kernel::launch_unchecked(
            &client,
            cube_count,
            cube_dim,
            values.clone().into_buffer_arg(),
            threshold.into_buffer_arg(),
            dtype,
        );
    }
}

/// Launches [`abs_threshold_select_kernel`] writing into `updated` (contiguous, writable).
pub fn launch_abs_threshold_select(
    grad: CubeTensor,
    threshold: CubeTensor,
    updated: &CubeTensor,
    previous: CubeTensor,
    len: usize,
) {
    let client = updated.client.clone();
    let cube_dim = CubeDim::new(&client, len);
    let cube_count = calculate_cube_count_elemwise(&client, len, cube_dim);
    let dtype = dtype_to_storage_type(updated.dtype);
    // SAFETY: every unit checks its position against the output length, and the three
    // buffers have that length (checked by the caller).
    unsafe {
        abs_threshold_select_kernel::launch_unchecked(
            &client,
            cube_count,
            cube_dim,
            grad.into_buffer_arg(),
            threshold.into_buffer_arg(),
            updated.clone().into_buffer_arg(),
            previous.into_buffer_arg(),
            dtype,
        );
    }
}
