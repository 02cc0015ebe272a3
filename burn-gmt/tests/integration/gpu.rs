//! The mask on the GPU under test (wgpu, on Mesa's lavapipe in CI: a real Vulkan driver on
//! the CPU; CUDA or ROCm when built with those features), against the host reference.
//! Without a device each test reports itself skipped, unless `GMT_REQUIRE_WGPU=1` (wgpu) or
//! `GMT_REQUIRE_GPU=1` turns a missing device into a failure.
#![cfg(any(feature = "wgpu", feature = "cuda", feature = "rocm"))]

use burn::module::{Module, Param};
use burn::optim::GradientsParams;
use burn::tensor::{DType, Device, Tensor, TensorData, bf16, f16};
use burn_gmt::{GradMaskConfig, MaskScope, MaskStrategy, MaskTarget, select_kth_abs};
use burn_gmt_kernels::host;
use burn_gmt_kernels::testing::with_radix_select;

use crate::common::{
    self, Float, Params, Single, TestFloat, assert_same, gpu_device, grads_for, has_dtype,
    reference_mask, values,
};

/// The shared sampler's f32 values (zeros of both signs, ties, subnormals, NaN, ±inf, many
/// binades), in f64.
fn sample(n: usize, seed: u64) -> Vec<f64> {
    common::sample::<f32>(n, seed)
        .into_iter()
        .map(|x| x as f64)
        .collect()
}

#[test]
fn per_tensor_mask_matches_reference_on_gpu() {
    let Some(device) = gpu_device("per_tensor_mask_matches_reference_on_gpu") else {
        return;
    };
    let test = "per_tensor_mask_matches_reference_on_gpu";
    let floats: Vec<Float> = [Float::F32, Float::F16, Float::BF16]
        .into_iter()
        .filter(|f| has_dtype(&device, f.dtype(), test))
        .collect();
    for n in [1, 2, 3, 255, 256, 257, 4095, 70_000, (1 << 20) + 7] {
        for &float in &floats {
            let vals: Vec<f64> = sample(n, n as u64)
                .iter()
                .map(|&v| float.round(v))
                .collect();
            for ratio in [0.3, 0.7] {
                let (expected, masked, threshold) = reference_mask(&vals, ratio);
                let module = Single::new(n, float, &device);
                let mut mask = GradMaskConfig::new(ratio).init().unwrap();
                let mut out = mask.apply(
                    &module,
                    grads_for(&module, float.tensor(&vals, [n], &device)),
                );
                let got = values(out.remove::<1>(module.weight.id).unwrap());
                assert_same(&got, &expected, &format!("gpu {float:?} n={n} r={ratio}"));
                assert_eq!(mask.last_stats().masked(), masked);
                assert_eq!(mask.last_stats().tensors[0].threshold, threshold);
            }
        }
    }
}

/// A step of several tensors masked per tensor: the two large ones go through the device
/// steps together (one selection buffer, a segment each, one digit step per pass for both),
/// the small one through the one-launch selection; each must match its own reference, with
/// its own statistics, in every float type the device stores.
#[test]
fn per_tensor_mask_of_several_tensors_matches_reference_on_gpu() {
    let test = "per_tensor_mask_of_several_tensors_matches_reference_on_gpu";
    let Some(device) = gpu_device(test) else {
        return;
    };
    let floats: Vec<Float> = [Float::F32, Float::F16, Float::BF16]
        .into_iter()
        .filter(|f| has_dtype(&device, f.dtype(), test))
        .collect();
    for float in floats {
        let round = |v: Vec<f64>| v.into_iter().map(|x| float.round(x)).collect::<Vec<_>>();
        let (a, b, c) = (
            round(sample(70_000, 11)),
            round(sample(3 * 4099, 12)),
            round(sample(30, 13)),
        );
        let module = Params {
            vector: Param::from_tensor(float.tensor(&a, [a.len()], &device)),
            matrix: Param::from_tensor(float.tensor(&b, [4099, 3], &device)),
            cube: Param::from_tensor(float.tensor(&c, [2, 3, 5], &device)),
        };
        let mut grads = burn::optim::GradientsParams::new();
        grads.register(module.vector.id, module.vector.val());
        grads.register(module.matrix.id, module.matrix.val());
        grads.register(module.cube.id, module.cube.val());
        let mut mask = GradMaskConfig::new(0.3).init().unwrap();
        let mut out = mask.apply(&module, grads);
        let got = [
            values(out.remove::<1>(module.vector.id).unwrap()),
            values(out.remove::<2>(module.matrix.id).unwrap()),
            values(out.remove::<3>(module.cube.id).unwrap()),
        ];
        let stats = &mask.last_stats().tensors;
        for (part, (vals, got)) in [&a, &b, &c].into_iter().zip(&got).enumerate() {
            let (expected, masked, threshold) = reference_mask(vals, 0.3);
            let context = format!("{float:?} tensor {part} of {}", vals.len());
            assert_same(got, &expected, &context);
            let own = stats
                .iter()
                .find(|t| t.total == vals.len() as u64)
                .expect("statistics of every tensor");
            assert_eq!(
                (own.masked, own.threshold),
                (masked, threshold),
                "{context}"
            );
        }
    }
}

#[test]
fn global_random_and_update_paths_run_on_gpu() {
    let Some(device) = gpu_device("global_random_and_update_paths_run_on_gpu") else {
        return;
    };
    let (a, b, c) = (sample(300, 1), sample(40, 2), sample(30, 3));
    let module = Params {
        vector: Param::from_tensor(Float::F32.tensor(&a, [300], &device)),
        matrix: Param::from_tensor(Float::F32.tensor(&b, [8, 5], &device)),
        cube: Param::from_tensor(Float::F32.tensor(&c, [2, 3, 5], &device)),
    };
    let grads = || {
        let mut g = burn::optim::GradientsParams::new();
        g.register(module.vector.id, module.vector.val());
        // A transposed (non-contiguous) gradient.
        g.register(
            module.matrix.id,
            Float::F32.tensor(&b, [5, 8], &device).transpose(),
        );
        g.register(module.cube.id, module.cube.val());
        g
    };
    let transposed: Vec<f64> = (0..8)
        .flat_map(|i| (0..5).map(move |j| (i, j)))
        .map(|(i, j)| b[j * 8 + i])
        .collect();
    let all: Vec<f64> = a
        .iter()
        .chain(&transposed)
        .chain(&c)
        .copied()
        .map(|v| v as f32 as f64)
        .collect();
    let (expected, _, _) = reference_mask(&all, 0.4);
    let mut mask = GradMaskConfig::new(0.4)
        .with_scope(MaskScope::Global)
        .init()
        .unwrap();
    let mut out = mask.apply(&module, grads());
    let got: Vec<f64> = values(out.remove::<1>(module.vector.id).unwrap())
        .into_iter()
        .chain(values(out.remove::<2>(module.matrix.id).unwrap()))
        .chain(values(out.remove::<3>(module.cube.id).unwrap()))
        .collect();
    assert_same(&got, &expected, "global on the gpu");

    // The random mask draws the same entries on every backend.
    let config = GradMaskConfig::new(0.3).with_strategy(MaskStrategy::Random {
        seed: 4,
        rescale: true,
    });
    let mut on_gpu = config.init().unwrap();
    let mut on_flex = config.init().unwrap();
    let flex = Device::flex();
    let flex_module = Params {
        vector: Param::from_tensor(Float::F32.tensor(&a, [300], &flex)),
        matrix: Param::from_tensor(Float::F32.tensor(&b, [8, 5], &flex)),
        cube: Param::from_tensor(Float::F32.tensor(&c, [2, 3, 5], &flex)),
    };
    let mut flex_grads = burn::optim::GradientsParams::new();
    flex_grads.register(flex_module.vector.id, flex_module.vector.val());
    let mut gpu_grads = burn::optim::GradientsParams::new();
    gpu_grads.register(module.vector.id, module.vector.val());
    let x = values(
        on_gpu
            .apply(&module, gpu_grads)
            .remove::<1>(module.vector.id)
            .unwrap(),
    );
    let y = values(
        on_flex
            .apply(&flex_module, flex_grads)
            .remove::<1>(flex_module.vector.id)
            .unwrap(),
    );
    assert_same(&x, &y, "random mask, gpu vs flex");

    // Update target through the optimizer wrapper: masked parameters stay put.
    use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
    use burn_gmt::WithGradMask;
    let autodiff = device.clone().autodiff();
    let model = Single {
        weight: Param::from_tensor(Float::F32.tensor(&a, [300], &autodiff).require_grad()),
    };
    let config = GradMaskConfig::new(0.5).with_target(MaskTarget::Update);
    let wrapped = AdamWConfig::new()
        .with_weight_decay(0.1)
        .build()
        .with_grad_mask_config(config);
    let stats = wrapped.stats_handle();
    let mut optim = ModuleOptimizer::from(wrapped);
    let loss = model.weight.val().powi_scalar(2).sum();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let g = values(grads.get::<1>(model.weight.id).unwrap());
    let (_, _, threshold) = reference_mask(&g, 0.5);
    let before = values(model.weight.val());
    let model = optim.step(1e-2, model, grads);
    let after = values(model.weight.val());
    for i in 0..before.len() {
        if g[i].is_finite() && g[i].abs() < threshold.unwrap() {
            assert_eq!(
                after[i].to_bits(),
                before[i].to_bits(),
                "masked entry {i} moved on the gpu"
            );
        }
    }
    // The wrapper's statistics, left on the device during the step, read on request.
    let (_, masked, threshold) = reference_mask(&g, 0.5);
    let latest = stats.latest();
    assert_eq!(latest.tensors.len(), 1);
    let t = &latest.tensors[0];
    assert_eq!((t.total, t.masked), (g.len() as u64, masked), "{t:?}");
    assert_eq!(t.threshold, threshold, "{t:?}");
    assert_eq!(
        stats.latest(),
        latest,
        "a second read gives the same statistics"
    );

    let t = Float::F32.tensor(&all, [all.len()], &device);
    let mut sorted: Vec<f64> = all
        .iter()
        .map(|v| if v.is_nan() { f64::INFINITY } else { v.abs() })
        .collect();
    sorted.sort_by(|x, y| x.partial_cmp(y).unwrap());
    assert_eq!(select_kth_abs(&t, 100), Some(sorted[100]));
}

// The selection and the mask of every dtype the device has, bit for bit against a host sort.

const SIZES: [usize; 9] = [1, 2, 3, 255, 256, 257, 4095, 1 << 20, (1 << 20) + 7];

fn tensor<E: TestFloat, const D: usize>(
    values: &[E],
    shape: [usize; D],
    device: &Device,
) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), (device, E::DTYPE))
}

fn read<E: TestFloat, const D: usize>(tensor: Tensor<D>) -> Vec<E> {
    tensor.into_data().try_to_vec::<E>().expect("dtype")
}

fn assert_bits<E: TestFloat>(got: &[E], expected: &[E], context: &str) {
    assert_eq!(got.len(), expected.len(), "{context}: length");
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert_eq!(
            g.bits(),
            e.bits(),
            "{context}: entry {i}: got {g:?}, expected {e:?}"
        );
    }
}

fn host_mask<E: TestFloat>(values: &[E], threshold: E) -> Vec<E> {
    let mut out = values.to_vec();
    host::abs_threshold_mask(&mut out, threshold.abs_key());
    out
}

/// The (k+1)-th smallest |x| by a host sort, NaN above +inf, at most +inf.
fn kth_by_sort<E: TestFloat>(values: &[E], k: usize) -> f64 {
    let mut keys: Vec<u64> = values.iter().map(|x| x.abs_key()).collect();
    keys.sort_unstable();
    E::from_key(keys[k].min(E::INF_KEY)).to_f64()
}

#[test]
fn select_kth_abs_matches_host_sort_on_gpu() {
    let Some(device) = gpu_device("select_kth_abs_matches_host_sort_on_gpu") else {
        return;
    };
    fn check<E: TestFloat>(device: &Device) {
        for (case, n) in SIZES.into_iter().enumerate() {
            let values = common::sample::<E>(n, case as u64 + 51);
            let grad = tensor(&values, [n], device);
            for k in [0, n / 10, n * 3 / 10, n / 2, n - 1] {
                let expected = kth_by_sort(&values, k);
                // Large inputs take the histogram passes anyway; force them for small ones.
                let got = with_radix_select(|| select_kth_abs(&grad, k as u64)).unwrap();
                assert_eq!(
                    got.to_bits(),
                    expected.to_bits(),
                    "select_kth_abs {:?} n={n} k={k}",
                    E::DTYPE
                );
            }
        }
    }
    check::<f32>(&device);
    if has_dtype(
        &device,
        DType::F16,
        "select_kth_abs_matches_host_sort_on_gpu",
    ) {
        check::<f16>(&device);
    }
    if has_dtype(
        &device,
        DType::BF16,
        "select_kth_abs_matches_host_sort_on_gpu",
    ) {
        check::<bf16>(&device);
    }
}

#[derive(Module, Debug)]
struct Weight {
    weight: Param<Tensor<1>>,
}

#[test]
fn grad_mask_matches_host_sort_on_gpu() {
    let Some(device) = gpu_device("grad_mask_matches_host_sort_on_gpu") else {
        return;
    };
    fn check<E: TestFloat>(device: &Device) {
        for (case, n) in SIZES.into_iter().enumerate() {
            let values = common::sample::<E>(n, case as u64 + 61);
            let module = Weight {
                weight: Param::from_tensor(tensor(&vec![E::zero(); n], [n], device)),
            };
            for ratio in [0.3, 0.7] {
                let k = (ratio * n as f64).floor() as usize;
                let expected = if k == 0 {
                    values.clone()
                } else {
                    let threshold = E::from_key(E::from_f64(kth_by_sort(&values, k)).abs_key());
                    host_mask(&values, threshold)
                };
                let mut grads = GradientsParams::new();
                grads.register(module.weight.id, tensor(&values, [n], device));
                let mut mask = GradMaskConfig::new(ratio).init().unwrap();
                let mut out = mask.apply(&module, grads);
                let got = read::<E, 1>(out.remove::<1>(module.weight.id).unwrap());
                let context = format!("GradMask {:?} n={n} ratio={ratio}", E::DTYPE);
                assert_bits(&got, &expected, &context);
                // The statistics, counted on the device and read once, exactly.
                let stats = mask.last_stats();
                let t = &stats.tensors[0];
                let threshold_key = if k == 0 {
                    0
                } else {
                    E::from_f64(kth_by_sort(&values, k)).abs_key()
                };
                let masked = values
                    .iter()
                    .filter(|v| v.abs_key() < threshold_key)
                    .count() as u64;
                let non_finite = values.iter().filter(|v| v.abs_key() >= E::INF_KEY).count() as u64;
                assert_eq!(
                    (t.total, t.masked, t.non_finite),
                    (n as u64, masked, non_finite),
                    "{context}: statistics"
                );
                let threshold = (k > 0).then(|| E::from_key(threshold_key).to_f64());
                assert_eq!(t.threshold, threshold, "{context}: threshold");
            }
        }
    }
    check::<f32>(&device);
    if has_dtype(&device, DType::F16, "grad_mask_matches_host_sort_on_gpu") {
        check::<f16>(&device);
    }
    if has_dtype(&device, DType::BF16, "grad_mask_matches_host_sort_on_gpu") {
        check::<bf16>(&device);
    }
}
