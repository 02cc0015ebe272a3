//! Kernel launches counted on the GPU under test (`burn_gmt_kernels::testing::kernel_launches`),
//! in a test binary of its own: the counter is process-wide, and one test at a time launches
//! here.
//!
//! Without a device the test prints `skipped: <name> (no ... device)` and passes, unless
//! `GMT_REQUIRE_WGPU=1` (wgpu) or `GMT_REQUIRE_GPU=1` turns a missing device into a failure.
#![cfg(all(
    feature = "testing",
    any(feature = "wgpu", feature = "cuda", feature = "rocm")
))]

#[allow(dead_code)]
mod common;

use burn::backend::Dispatch;
use burn::tensor::{Device, Tensor, TensorData};
use burn_gmt_kernels::MaskOps;
use burn_gmt_kernels::testing::{BracketMiss, kernel_launches, with_bracket_miss};
use common::{gpu_device, sample};

/// The launches of one one-pass mask of `n` f32 entries at the median, its result read.
fn one_pass_launches(n: usize, device: &Device) -> u64 {
    let values = sample::<f32>(n, 401);
    let grad = Tensor::<1>::from_data(TensorData::new(values, [n]), device).into_dispatch();
    let before = kernel_launches();
    let (masked, state) = <Dispatch as MaskOps>::abs_key_mask_rank(grad, n as u64 / 2);
    Tensor::<1>::from_dispatch(masked).into_data();
    Tensor::<1, burn::tensor::Int>::from_dispatch(state).into_data();
    kernel_launches() - before
}

/// The one-pass mask launches as many kernels whatever its size and its route (the guarded
/// histograms of the route not taken are launched and end at once).
#[test]
fn one_pass_launches_do_not_depend_on_size_or_route_on_gpu() {
    let Some(device) = gpu_device("one_pass_launches_do_not_depend_on_size_or_route_on_gpu") else {
        return;
    };
    // Whole vectors only (no tail launch): multiples of 64 entries.
    let small = one_pass_launches(1 << 13, &device);
    assert_eq!(one_pass_launches(1 << 20, &device), small);
    let missed = with_bracket_miss(BracketMiss::Low, || one_pass_launches(1 << 13, &device));
    assert_eq!(missed, small);
    // f32: the bracket, the pass, the start, two guarded histograms and a digit step per
    // 16-bit digit, the resolve.
    assert_eq!(small, 10);
}
