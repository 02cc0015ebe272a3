//! Kernel launches of a `GradMask` step on the GPU under test, counted by
//! `burn_gmt_kernels::testing::kernel_launches`, in a test binary of its own: the counter is
//! process-wide, and only this test launches here.
//!
//! Without a device the test prints `skipped: <name> (no ... device)` and passes, unless
//! `GMT_REQUIRE_WGPU=1` (wgpu) or `GMT_REQUIRE_GPU=1` turns a missing device into a failure.
#![cfg(any(feature = "wgpu", feature = "cuda", feature = "rocm"))]

#[allow(dead_code)]
#[path = "integration/common/mod.rs"]
mod common;

use burn::module::{Module, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use burn_gmt::GradMaskConfig;
use burn_gmt_kernels::testing::{batched_tensors_per_launch, kernel_launches};
use common::{gpu_device, reference_mask, sample, values};

/// A model of any number of parameter tensors.
#[derive(Module, Debug)]
struct Many {
    weights: Vec<Param<Tensor<2>>>,
}

/// Shapes with and without a vector tail, and small enough for a one-launch selection alone.
const SHAPES: [[usize; 2]; 4] = [[70_001, 1], [100, 50], [30, 10], [4_099, 3]];

/// One `GradMask::apply` of a model of `count` f32 tensors, its gradients read and checked
/// against the host reference; the kernels it launched.
fn step_launches(count: usize, device: &Device) -> u64 {
    let inputs: Vec<Vec<f32>> = (0..count)
        .map(|i| {
            let [rows, cols] = SHAPES[i % SHAPES.len()];
            sample::<f32>(rows * cols, 700 + i as u64)
        })
        .collect();
    let tensor = |i: usize| {
        let shape = SHAPES[i % SHAPES.len()];
        Tensor::<2>::from_data(TensorData::new(inputs[i].clone(), shape), device)
    };
    let model = Many {
        weights: (0..count).map(|i| Param::from_tensor(tensor(i))).collect(),
    };
    let mut grads = GradientsParams::new();
    for (i, weight) in model.weights.iter().enumerate() {
        grads.register(weight.id, tensor(i));
    }
    let mut mask = GradMaskConfig::new(0.3).init().unwrap();
    let before = kernel_launches();
    let mut out = mask.apply(&model, grads);
    let got: Vec<Vec<f64>> = model
        .weights
        .iter()
        .map(|w| values(out.remove::<2>(w.id).expect("a masked gradient")))
        .collect();
    let launches = kernel_launches() - before;
    for (i, (got, input)) in got.iter().zip(&inputs).enumerate() {
        let input: Vec<f64> = input.iter().map(|&x| f64::from(x)).collect();
        let (expected, _, _) = reference_mask(&input, 0.3);
        common::assert_same(got, &expected, &format!("tensor {i} of {count}"));
    }
    launches
}

/// The launches of an f32 step of `count` tensors of [`SHAPES`] when one launch binds at most
/// `per_launch` gradients: the selection start, per 16-bit digit the histogram launches over
/// the gradients' whole vectors and over their tails (shapes 0 and 3 have one), then a digit
/// step; the threshold write; the mask launches, as the histogram's.
fn expected_launches(count: usize, per_launch: usize) -> u64 {
    let tails = (0..count).filter(|i| i % 4 == 0 || i % 4 == 3).count();
    let passes = (count.div_ceil(per_launch) + tails.div_ceil(per_launch)) as u64;
    1 + 2 * (passes + 1) + 1 + passes
}

/// A `GradMask` step launches the same kernels for 4 tensors as for as many as one launch
/// binds (`LIST_MAX_TENSORS`, or fewer where the device binds fewer buffers per kernel: 28 on
/// wgpu over lavapipe), and past that one histogram and mask launch more per that many
/// tensors, never a launch per tensor. The masks are exact either way.
#[test]
fn grad_mask_step_launches_do_not_grow_with_tensors_on_gpu() {
    let Some(device) = gpu_device("grad_mask_step_launches_do_not_grow_with_tensors_on_gpu") else {
        return;
    };
    let four = step_launches(4, &device);
    let per_launch = batched_tensors_per_launch();
    assert!(per_launch >= 4, "a launch binds {per_launch} gradients");
    let full = step_launches(per_launch, &device);
    let forty = step_launches(40, &device);
    println!(
        "GradMask step launches: 4 tensors {four}, {per_launch} tensors {full}, 40 tensors {forty}"
    );
    assert_eq!(four, 1 + 2 * (2 + 1) + 1 + 2);
    assert_eq!(full, four);
    assert_eq!(forty, expected_launches(40, per_launch));
}
