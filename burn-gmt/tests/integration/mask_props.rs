//! The mask against the host reference, on random inputs: sizes 0, 1, odd and large, ties,
//! exact and negative zeros, subnormals, NaN and infinities, f32, f16 and bf16, every CPU
//! backend.

use crate::common::{
    Float, Params, Single, assert_same, devices, devices_for, grads_for, reference_mask, values,
};
use burn_gmt::{GradMaskConfig, MaskScope, select_kth_abs};
use proptest::prelude::*;

/// Entries drawn from a mix that makes ties, zeros and special values common.
fn entry() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -4.0f64..4.0,
        2 => prop::sample::select(vec![0.0, -0.0, 0.5, -0.5, 1.0, -1.0, 2.0]),
        1 => (1u32..0x0080_0000).prop_map(|bits| f32::from_bits(bits) as f64), // f32 subnormals
        1 => prop::sample::select(vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY]),
        1 => (-30i32..30).prop_map(|e| 2f64.powi(e)),
    ]
}

fn float() -> impl Strategy<Value = Float> {
    prop::sample::select(vec![Float::F32, Float::F16, Float::BF16])
}

fn sized_values() -> impl Strategy<Value = Vec<f64>> {
    prop_oneof![
        4 => prop::collection::vec(entry(), 0..64),
        2 => prop::collection::vec(entry(), 64..700),
        1 => prop::collection::vec(entry(), 66_000..70_000),
    ]
}

/// Checks every selection path: the backend's own, the one-pass mask (selected while it
/// writes), that one with a bracket forced to miss low, to miss high and to overflow, the
/// histogram passes read by the host, and the on-device steps (run here through the host
/// bodies of `MaskOps`).
fn check_per_tensor(raw: &[f64], float: Float, ratio: f64) {
    use burn_gmt_kernels::testing::{self, BracketMiss};
    let check = || check_per_tensor_once(raw, float, ratio);
    check();
    for miss in [BracketMiss::Low, BracketMiss::High, BracketMiss::Overfull] {
        testing::with_bracket_miss(miss, check);
    }
    testing::with_one_pass_mask(check);
    testing::with_radix_select(check);
    testing::with_device_select(check);
}

fn check_per_tensor_once(raw: &[f64], float: Float, ratio: f64) {
    let vals: Vec<f64> = raw.iter().map(|&v| float.round(v)).collect();
    let (expected, expected_masked, expected_threshold) = reference_mask(&vals, ratio);
    for device in devices_for(float) {
        let module = Single::new(vals.len(), float, &device);
        let grads = grads_for(&module, float.tensor(&vals, [vals.len()], &device));
        let mut mask = GradMaskConfig::new(ratio).init().unwrap();
        let mut grads = mask.apply(&module, grads);
        let masked = grads.remove::<1>(module.weight.id).unwrap();
        assert_eq!(masked.dtype(), float.dtype());
        let context = format!("{float:?} n={} r={ratio} on {device:?}", vals.len());
        assert_same(&values(masked), &expected, &context);

        let stats = mask.last_stats();
        assert_eq!(stats.tensors.len(), 1, "{context}");
        let t = &stats.tensors[0];
        assert_eq!(t.total, vals.len() as u64, "{context}");
        assert_eq!(t.masked, expected_masked, "{context}");
        assert_eq!(t.kept, t.total - t.masked, "{context}");
        assert_eq!(
            t.non_finite,
            vals.iter().filter(|v| !v.is_finite()).count() as u64,
            "{context}"
        );
        assert_eq!(t.threshold, expected_threshold, "{context}");
        // Never fewer kept than asked.
        let k = (ratio * vals.len() as f64).floor() as u64;
        assert!(t.masked <= k, "{context}: masked {} > k {k}", t.masked);
    }
}

/// The mask of a three-parameter module (a vector, a matrix from `b`, a cube from `c`) with
/// `scope` through selection path `path` (0: the backend's, 1: radix passes, 2: the device
/// steps, 3: the one pass with a bracket forced to miss low), against the reference of the whole model (global) or of each tensor.
fn check_module(
    scope: MaskScope,
    a: &[f64],
    b: &[f64],
    c: &[f64],
    float: Float,
    ratio: f64,
    path: u8,
) {
    let rows = b.len();
    let (depth, width) = (c.len(), 3);
    let round = |v: &[f64]| v.iter().map(|&x| float.round(x)).collect::<Vec<_>>();
    let vector = round(a);
    let matrix = round(&b.iter().flat_map(|&x| [x, -x * 0.5]).collect::<Vec<_>>());
    let cube = round(&c.iter().flat_map(|&x| [x; 6]).collect::<Vec<_>>());
    let parts = [&vector, &matrix, &cube];
    let all: Vec<f64> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    // Per tensor: each part's own reference, in order; global: one over all of them.
    let (expected, expected_masked, per_tensor) = match scope {
        MaskScope::Global => {
            let (expected, masked, _) = reference_mask(&all, ratio);
            (expected, masked, None)
        }
        MaskScope::PerTensor => {
            let own: Vec<_> = parts.iter().map(|p| reference_mask(p, ratio)).collect();
            let expected = own.iter().flat_map(|(e, _, _)| e.iter().copied()).collect();
            let masked = own.iter().map(|(_, m, _)| m).sum();
            (expected, masked, Some(own))
        }
        other => panic!("no reference for {other:?}"),
    };

    for device in devices_for(float) {
        let module = Params {
            vector: burn::module::Param::from_tensor(float.tensor(
                &vector,
                [vector.len()],
                &device,
            )),
            matrix: burn::module::Param::from_tensor(float.tensor(&matrix, [rows, 2], &device)),
            cube: burn::module::Param::from_tensor(float.tensor(&cube, [depth, width, 2], &device)),
        };
        let mut grads = burn::optim::GradientsParams::new();
        grads.register(module.vector.id, module.vector.val());
        grads.register(module.matrix.id, module.matrix.val());
        grads.register(module.cube.id, module.cube.val());

        let mut mask = GradMaskConfig::new(ratio).with_scope(scope).init().unwrap();
        let mut grads = match path {
            0 => mask.apply(&module, grads),
            1 => burn_gmt_kernels::testing::with_radix_select(|| mask.apply(&module, grads)),
            2 => burn_gmt_kernels::testing::with_device_select(|| mask.apply(&module, grads)),
            _ => burn_gmt_kernels::testing::with_bracket_miss(
                burn_gmt_kernels::testing::BracketMiss::Low,
                || mask.apply(&module, grads),
            ),
        };
        let got: Vec<f64> = values(grads.remove::<1>(module.vector.id).unwrap())
            .into_iter()
            .chain(values(grads.remove::<2>(module.matrix.id).unwrap()))
            .chain(values(grads.remove::<3>(module.cube.id).unwrap()))
            .collect();
        let context = format!("{scope:?} {float:?} r={ratio} path {path} on {device:?}");
        assert_same(&got, &expected, &context);
        let stats = mask.last_stats();
        assert_eq!(stats.masked(), expected_masked, "{context}");
        assert_eq!(stats.total(), all.len() as u64, "{context}");
        if let Some(own) = &per_tensor {
            // The statistics name each tensor's own count and threshold (walk order).
            let mut by_size: Vec<_> = stats
                .tensors
                .iter()
                .map(|t| (t.total, t.masked, t.threshold))
                .collect();
            let mut wanted: Vec<_> = parts
                .iter()
                .zip(own)
                .map(|(p, (_, m, t))| (p.len() as u64, *m, *t))
                .collect();
            by_size.sort_by(|x, y| x.partial_cmp(y).unwrap());
            wanted.sort_by(|x, y| x.partial_cmp(y).unwrap());
            assert_eq!(by_size, wanted, "{context}: per-tensor statistics");
        }
        // The parameters themselves were not touched by masking their gradients.
        assert_same(&values(module.vector.val()), &vector, "parameter untouched");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn per_tensor_mask_matches_reference(raw in sized_values(), float in float(), ratio in 0.0f64..0.999) {
        check_per_tensor(&raw, float, ratio);
    }

    #[test]
    fn global_mask_matches_reference(
        a in prop::collection::vec(entry(), 1..40),
        b in prop::collection::vec(entry(), 1..8),
        c in prop::collection::vec(entry(), 1..5),
        float in float(),
        ratio in 0.0f64..0.999,
        path in 0..4u8,
    ) {
        check_module(MaskScope::Global, &a, &b, &c, float, ratio, path);
    }

    /// Several tensors masked per tensor in one step: on a device their selections share one
    /// buffer (a segment each), which the device path runs here through the host bodies.
    #[test]
    fn per_tensor_mask_of_a_module_matches_each_reference(
        a in prop::collection::vec(entry(), 1..700),
        b in prop::collection::vec(entry(), 1..300),
        c in prop::collection::vec(entry(), 1..5),
        float in float(),
        ratio in 0.0f64..0.999,
        path in 0..4u8,
    ) {
        check_module(MaskScope::PerTensor, &a, &b, &c, float, ratio, path);
    }

    #[test]
    fn select_kth_abs_matches_sort(raw in prop::collection::vec(entry(), 1..300), pick in 0.0f64..1.0) {
        let vals: Vec<f32> = raw.iter().map(|&v| v as f32).collect();
        let k = ((pick * vals.len() as f64) as usize).min(vals.len() - 1);
        let mut sorted: Vec<f64> = vals.iter().map(|v| if v.is_nan() { f64::NAN } else { v.abs() as f64 }).collect();
        sorted.sort_by(|a, b| a.partial_cmp(b).unwrap_or(if a.is_nan() { std::cmp::Ordering::Greater } else { std::cmp::Ordering::Less }));
        let expected = if sorted[k].is_nan() { f64::INFINITY } else { sorted[k] };
        for device in devices() {
            let t = burn::tensor::Tensor::<1>::from_floats(vals.as_slice(), &device);
            prop_assert_eq!(select_kth_abs(&t, k as u64), Some(expected));
            prop_assert_eq!(burn_gmt_kernels::testing::with_radix_select(|| select_kth_abs(&t, k as u64)), Some(expected));
            prop_assert_eq!(burn_gmt_kernels::testing::with_device_select(|| select_kth_abs(&t, k as u64)), Some(expected));
            prop_assert_eq!(select_kth_abs(&t, vals.len() as u64), None);
        }
    }
}

#[test]
fn edge_sizes_and_special_patterns() {
    let patterns: Vec<(&str, Vec<f64>)> = vec![
        ("empty", vec![]),
        ("one", vec![3.0]),
        ("all zeros", vec![0.0; 101]),
        (
            "signed zeros",
            (0..57)
                .map(|i| if i % 2 == 0 { 0.0 } else { -0.0 })
                .collect(),
        ),
        ("all ties", vec![-1.5; 33]),
        ("all nan", vec![f64::NAN; 10]),
        (
            "nan and inf",
            vec![
                f64::NAN,
                f64::INFINITY,
                1.0,
                f64::NEG_INFINITY,
                0.5,
                f64::NAN,
                2.0,
            ],
        ),
        (
            "subnormal ladder",
            (1..200)
                .map(|b| f32::from_bits(b * 997) as f64 * if b % 3 == 0 { -1.0 } else { 1.0 })
                .collect(),
        ),
    ];
    for (name, vals) in patterns {
        for float in [Float::F32, Float::F16, Float::BF16] {
            for ratio in [0.0, 0.1, 0.3, 0.5, 0.9, 0.999] {
                check_per_tensor(&vals, float, ratio);
                let _ = name;
            }
        }
    }
}

/// Every NaN ranks as one key above +inf, whatever its sign and payload: thresholds, counts and
/// masks match the reference (which knows one NaN), and each NaN entry keeps its bits.
#[test]
fn nan_payloads_rank_as_one_nan() {
    use burn_gmt_kernels::testing::BracketMiss;
    for float in [Float::F32, Float::F16, Float::BF16] {
        let nans = float.nan_bits();
        for n in [300usize, 70_000] {
            // Finite values (ties, zeros, subnormals via `entry`-like mixes) with a NaN of a
            // different payload every 7th entry and an infinity every 11th.
            let reals: Vec<f64> = (0..n)
                .map(|i| match i % 11 {
                    0 => f64::INFINITY,
                    1 => -0.0,
                    _ => float.round(((i * 7919) % 1013) as f64 / 97.0 - 5.0),
                })
                .collect();
            let bits: Vec<u64> = (0..n)
                .map(|i| {
                    if i % 7 == 3 {
                        nans[i % nans.len()]
                    } else {
                        float.bits(reals[i])
                    }
                })
                .collect();
            let vals: Vec<f64> = (0..n)
                .map(|i| if i % 7 == 3 { f64::NAN } else { reals[i] })
                .collect();
            for ratio in [0.3, 0.9, 0.95] {
                let (expected, expected_masked, expected_threshold) = reference_mask(&vals, ratio);
                let check = || {
                    for device in devices_for(float) {
                        let context = format!("{float:?} n={n} r={ratio} on {device:?}");
                        let module = Single::new(n, float, &device);
                        let grads = grads_for(&module, float.tensor_of_bits(&bits, &device));
                        let mut mask = GradMaskConfig::new(ratio).init().unwrap();
                        let mut grads = mask.apply(&module, grads);
                        let got = float.bits_of(grads.remove::<1>(module.weight.id).unwrap());
                        for i in 0..n {
                            let want = if vals[i].is_nan() {
                                bits[i]
                            } else {
                                float.bits(expected[i])
                            };
                            assert_eq!(got[i], want, "{context}: entry {i}");
                        }
                        let t = &mask.last_stats().tensors[0];
                        assert_eq!(t.masked, expected_masked, "{context}");
                        assert_eq!(t.threshold, expected_threshold, "{context}");
                        let non_finite = vals.iter().filter(|v| !v.is_finite()).count() as u64;
                        assert_eq!(t.non_finite, non_finite, "{context}");
                    }
                };
                check();
                for miss in [BracketMiss::Low, BracketMiss::High, BracketMiss::Overfull] {
                    burn_gmt_kernels::testing::with_bracket_miss(miss, check);
                }
                burn_gmt_kernels::testing::with_one_pass_mask(check);
                burn_gmt_kernels::testing::with_radix_select(check);
                burn_gmt_kernels::testing::with_device_select(check);
            }
        }
    }
}

#[test]
fn large_tensors_match_reference() {
    // Sizes around the 16-bit digit boundaries and beyond one million entries.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for n in [65_535usize, 65_536, 65_537, (1 << 20) + 7] {
        let vals: Vec<f64> = (0..n)
            .map(|_| {
                let r = next();
                match r % 16 {
                    0 => 0.0,
                    1 => 1e-3,
                    _ => {
                        ((r >> 11) as f64 / (1u64 << 53) as f64 - 0.5)
                            * 2f64.powi((r % 9) as i32 - 4)
                    }
                }
            })
            .collect();
        check_per_tensor(&vals, Float::F32, 0.3);
        check_per_tensor(&vals, Float::BF16, 0.4);
    }
}

#[derive(burn::module::Module, Debug)]
struct Matrix {
    weight: burn::module::Param<burn::tensor::Tensor<2>>,
}

/// A transposed (strided) gradient and one still held elsewhere, on every CPU backend and
/// through every selection path: the mask matches the reference on the logical (row-major)
/// values, and the held gradient is left untouched.
#[test]
fn strided_and_shared_gradients() {
    let (rows, cols) = (37, 301);
    let stored: Vec<f64> = (0..rows * cols)
        .map(|i| {
            let z = burn_gmt_kernels::random::mix64(i as u64);
            (((z >> 11) as f64 / (1u64 << 53) as f64) - 0.5) as f32 as f64
        })
        .collect();
    // `stored` is laid out [cols, rows]; the gradient is its transpose, [rows, cols].
    let logical: Vec<f64> = (0..rows)
        .flat_map(|r| (0..cols).map(move |c| (r, c)))
        .map(|(r, c)| stored[c * rows + r])
        .collect();
    let (expected, expected_masked, _) = reference_mask(&logical, 0.4);
    type Run = fn(&mut dyn FnMut());
    let paths: [(&str, Run); 4] = [
        ("default", |f| f()),
        ("one pass", |f| {
            burn_gmt_kernels::testing::with_one_pass_mask(f)
        }),
        ("radix", |f| burn_gmt_kernels::testing::with_radix_select(f)),
        ("device", |f| {
            burn_gmt_kernels::testing::with_device_select(f)
        }),
    ];
    for device in devices() {
        for (path, run) in paths {
            let module = Matrix {
                weight: burn::module::Param::from_tensor(Float::F32.tensor(
                    &vec![0.0; rows * cols],
                    [rows, cols],
                    &device,
                )),
            };
            let grad = Float::F32
                .tensor(&stored, [cols, rows], &device)
                .transpose();
            let held = grad.clone();
            let mut grads = Some(burn::optim::GradientsParams::new());
            grads.as_mut().unwrap().register(module.weight.id, grad);
            let mut mask = GradMaskConfig::new(0.4).init().unwrap();
            let mut out = None;
            run(&mut || out = Some(mask.apply(&module, grads.take().unwrap())));
            let masked = out.unwrap().remove::<2>(module.weight.id).unwrap();
            let context = format!("{path} on {device:?}");
            assert_same(&values(masked), &expected, &context);
            assert_eq!(mask.last_stats().masked(), expected_masked, "{context}");
            assert_same(
                &values(held),
                &logical,
                &format!("held gradient, {context}"),
            );
        }
    }
}
