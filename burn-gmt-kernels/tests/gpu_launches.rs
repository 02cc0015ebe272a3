//! Kernel launches counted on the GPU under test (`burn_gmt_kernels::testing::kernel_launches`),
//! in a test binary of its own: the counter is process-wide, and one test at a time launches
//! here (`SERIAL`).
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
use burn_gmt_kernels::testing::{
    BracketMiss, batched_tensors_per_launch, kernel_launches, with_bracket_miss,
};
use common::{gpu_device, sample};

/// The launch counter is process-wide: the tests of this binary count one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

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
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Whole vectors only (no tail launch): multiples of 64 entries.
    let small = one_pass_launches(1 << 13, &device);
    assert_eq!(one_pass_launches(1 << 20, &device), small);
    let missed = with_bracket_miss(BracketMiss::Low, || one_pass_launches(1 << 13, &device));
    assert_eq!(missed, small);
    // f32: the bracket, the pass, the start, two guarded histograms and a digit step per
    // 16-bit digit, the resolve.
    assert_eq!(small, 10);
}

/// The launches of the per-tensor selections and batched masks of `count` f32 gradients
/// (what a `GradMask` step runs), their results read.
fn batched_step_launches(count: usize, device: &Device) -> u64 {
    use burn_gmt_kernels::mask::{mask_below_each, select_abs_each};
    // Sizes with a vector tail, without, and small enough for one launch alone.
    let sizes = [70_001, 5_000, 300, 4_099 * 3];
    let grads: Vec<_> = (0..count)
        .map(|i| {
            let n = sizes[i % sizes.len()];
            let values = sample::<f32>(n, 500 + i as u64);
            Tensor::<1>::from_data(TensorData::new(values, [n]), device).into_dispatch()
        })
        .collect();
    let ranks: Vec<u64> = grads
        .iter()
        .map(|g| {
            use burn::backend::TensorMetadata;
            g.shape().num_elements() as u64 / 3
        })
        .collect();
    let before = kernel_launches();
    let selection = select_abs_each(&grads, &ranks, false);
    let shared: Vec<_> = selection.shared.into_iter().map(Option::unwrap).collect();
    let slots = shared.iter().map(|s| s.slot).collect();
    let masked = mask_below_each(grads, (*shared[0].thresholds).clone(), slots);
    for grad in masked {
        Tensor::<1>::from_dispatch(grad).into_data();
    }
    kernel_launches() - before
}

/// A step's selections and masks launch as many kernels for 4 gradients as for as many as one
/// launch binds (28 on wgpu over lavapipe, which binds 31 buffers per kernel): the start, per
/// 16-bit digit a histogram launch over all of them (one more for the vector tails) and a
/// digit step, the threshold write, and the mask (one more for the tails); past that, one
/// histogram and mask launch more per that many gradients.
#[test]
fn batched_step_launches_do_not_grow_with_tensors_on_gpu() {
    let Some(device) = gpu_device("batched_step_launches_do_not_grow_with_tensors_on_gpu") else {
        return;
    };
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let four = batched_step_launches(4, &device);
    assert_eq!(four, 1 + 2 * (2 + 1) + 1 + 2);
    let per_launch = batched_tensors_per_launch();
    assert!(per_launch >= 4, "a launch binds {per_launch} gradients");
    assert_eq!(batched_step_launches(per_launch, &device), four);
    // Twice as many whole-vector pieces as one launch takes, and as many tails as it takes.
    let double = batched_step_launches(2 * per_launch, &device);
    assert_eq!(double, four + 3);
}
