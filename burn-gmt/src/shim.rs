//! TEMPORARY: the target interface of `burn_gmt_kernels::mask`, over today's kernels API.
#![allow(dead_code)]

use burn::backend::{Dispatch, DispatchTensor};
use burn::tensor::{DType, Device, Tensor};
use burn_gmt_kernels::MaskOps;

pub(crate) use burn_gmt_kernels::element::key_bits;
pub(crate) use burn_gmt_kernels::select::{
    PendingStats, count_unselected, select_abs, select_abs_each, threshold_tensor,
};

pub(crate) fn count_below(
    grad: &DispatchTensor,
    threshold: &DispatchTensor,
    value: Option<f64>,
) -> PendingStats {
    burn_gmt_kernels::select::count_against(grad, threshold, value)
}

pub(crate) fn count_random(grad: &DispatchTensor, key: u64, bound: u64) -> PendingStats {
    let counts = <Dispatch as MaskOps>::random_mask_count(grad, key, bound);
    PendingStats::counted(grad, Tensor::from_dispatch(counts))
}

pub(crate) fn mask_below(grad: DispatchTensor, threshold: DispatchTensor) -> DispatchTensor {
    <Dispatch as MaskOps>::abs_threshold_mask(grad, threshold)
}

pub(crate) fn mask_random(
    grad: DispatchTensor,
    key: u64,
    bound: u64,
    scale: f64,
) -> DispatchTensor {
    <Dispatch as MaskOps>::random_mask(grad, key, bound, scale)
}

pub(crate) fn hold_below(
    marker: DispatchTensor,
    threshold: DispatchTensor,
    updated: DispatchTensor,
    previous: DispatchTensor,
) -> DispatchTensor {
    <Dispatch as MaskOps>::abs_threshold_select(marker, threshold, updated, previous)
}

pub(crate) fn _unused(_: DType, _: &Device) {}
