//! The module-level mask: partial gradients, unmasked groups, the random and HFT baselines,
//! warm-up, non-finite gradients and the Update target through `GradMask::step`.

use crate::common;

use crate::common::{Float, Params, assert_same, reference_mask, values};
use burn::module::{Module, Param, ParamGroup};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Tensor};
use burn_gmt::{
    GradMaskConfig, MaskGroup, MaskScope, MaskStrategy, MaskTarget, RatioSchedule, WithGradMask,
};

fn sample(n: usize, seed: u64) -> Vec<f64> {
    (0..n as u64)
        .map(|i| {
            let z = burn_gmt_kernels::random::mix64(seed.wrapping_mul(7919) ^ i);
            // Non-zero, distinct magnitudes.
            ((z >> 11) as f64 / (1u64 << 53) as f64 + 1e-3) * if z & 1 == 0 { 1.0 } else { -1.0 }
        })
        .map(|v| v as f32 as f64)
        .collect()
}

fn params_module(device: &Device) -> Params {
    Params {
        vector: Param::from_tensor(Float::F32.tensor(&sample(40, 1), [40], device)),
        matrix: Param::from_tensor(Float::F32.tensor(&sample(24, 2), [6, 4], device)),
        cube: Param::from_tensor(Float::F32.tensor(&sample(30, 3), [2, 3, 5], device)),
    }
}

/// Gradients equal to the parameter values (distinct, non-zero).
fn grads_like(module: &Params) -> GradientsParams {
    let mut grads = GradientsParams::new();
    grads.register(module.vector.id, module.vector.val());
    grads.register(module.matrix.id, module.matrix.val());
    grads.register(module.cube.id, module.cube.val());
    grads
}

#[test]
fn partial_gradients_are_skipped() {
    for device in common::devices() {
        let module = params_module(&device);
        for scope in [MaskScope::PerTensor, MaskScope::Global] {
            let mut grads = GradientsParams::new();
            grads.register(module.matrix.id, module.matrix.val());
            let mut mask = GradMaskConfig::new(0.5).with_scope(scope).init().unwrap();
            let mut out = mask.apply(&module, grads);
            assert_eq!(out.len(), 1);
            assert!(out.remove::<1>(module.vector.id).is_none());
            let matrix = values(out.remove::<2>(module.matrix.id).unwrap());
            let (expected, _, _) = reference_mask(&sample(24, 2), 0.5);
            assert_same(&matrix, &expected, &format!("{scope:?}"));
            assert_eq!(mask.last_stats().tensors.len(), 1);
        }
    }
}

#[test]
fn unmasked_group_is_left_alone() {
    for device in common::devices() {
        let module = params_module(&device);
        let config = GradMaskConfig::new(0.5)
            .with_scope(MaskScope::Global)
            .with_unmasked(Some(ParamGroup::from_predicate("vector")));
        let mut mask = config.init().unwrap();
        let mut out = mask.apply(&module, grads_like(&module));
        assert_same(
            &values(out.remove::<1>(module.vector.id).unwrap()),
            &sample(40, 1),
            "unmasked",
        );
        let rest: Vec<f64> = sample(24, 2).into_iter().chain(sample(30, 3)).collect();
        let (expected, _, _) = reference_mask(&rest, 0.5);
        let got: Vec<f64> = values(out.remove::<2>(module.matrix.id).unwrap())
            .into_iter()
            .chain(values(out.remove::<3>(module.cube.id).unwrap()))
            .collect();
        assert_same(&got, &expected, "global over the rest");
        let paths: Vec<&str> = mask
            .last_stats()
            .tensors
            .iter()
            .map(|t| t.param.as_str())
            .collect();
        assert_eq!(paths, ["matrix", "cube"]);
    }
}

#[test]
fn random_mask_is_seeded_counted_and_rescaled() {
    let device = Device::flex();
    let module = Params {
        vector: Param::from_tensor(Float::F32.tensor(&sample(20_000, 4), [20_000], &device)),
        matrix: Param::from_tensor(Float::F32.tensor(&sample(24, 2), [6, 4], &device)),
        cube: Param::from_tensor(Float::F32.tensor(&sample(30, 3), [2, 3, 5], &device)),
    };
    let ratio = 0.3;
    let run = |seed: u64, rescale: bool| {
        let config =
            GradMaskConfig::new(ratio).with_strategy(MaskStrategy::Random { seed, rescale });
        let mut mask = config.init().unwrap();
        let mut out = mask.apply(&module, grads_like(&module));
        (
            values(out.remove::<1>(module.vector.id).unwrap()),
            mask.last_stats().clone(),
        )
    };
    let (a, stats) = run(5, false);
    let (b, _) = run(5, false);
    let (c, _) = run(6, false);
    let (scaled, _) = run(5, true);
    assert_same(&a, &b, "same seed, same mask");
    assert_ne!(a, c, "another seed, another mask");

    let zeros = a.iter().filter(|v| **v == 0.0).count() as u64;
    assert_eq!(
        stats.tensors[0].masked, zeros,
        "stats count what was zeroed"
    );
    let sigma = (20_000.0 * ratio * (1.0 - ratio)).sqrt();
    assert!(
        (zeros as f64 - 20_000.0 * ratio).abs() < 5.0 * sigma,
        "{zeros}"
    );
    let original = sample(20_000, 4);
    for ((m, s), o) in a.iter().zip(&scaled).zip(&original) {
        let expected = if *m == 0.0 {
            0.0
        } else {
            // Rescaled in f32 (what every backend computes), rounded once.
            (*o as f32 * (1.0 / (1.0 - ratio)) as f32) as f64
        };
        if *m != 0.0 {
            assert_eq!(m, o, "kept entries unchanged without rescale");
        }
        assert_eq!(s.to_bits(), expected.to_bits(), "rescaled entry");
    }
}

/// A transformer block's matrices, named as in a Llama block.
#[derive(Module, Debug)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
}

#[derive(Module, Debug)]
struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

#[derive(Module, Debug)]
struct Block {
    attention: Attention,
    mlp: Mlp,
}

/// Two blocks and a head outside them.
#[derive(Module, Debug)]
struct Blocks {
    blocks: Vec<Block>,
    head: Linear,
}

fn blocks(device: &Device) -> Blocks {
    let linear = || LinearConfig::new(4, 4).init(device);
    let block = || Block {
        attention: Attention {
            q: linear(),
            k: linear(),
            v: linear(),
            o: linear(),
        },
        mlp: Mlp {
            gate: linear(),
            up: linear(),
            down: linear(),
        },
    };
    Blocks {
        blocks: vec![block(), block()],
        head: linear(),
    }
}

impl Blocks {
    /// Every linear, with the category HFT halves it in.
    fn linears(&self) -> Vec<(String, &Linear)> {
        let mut out = Vec::new();
        for (i, b) in self.blocks.iter().enumerate() {
            let a = &b.attention;
            for l in [&a.q, &a.k, &a.v, &a.o] {
                out.push((format!("block {i} attention"), l));
            }
            for l in [&b.mlp.gate, &b.mlp.up, &b.mlp.down] {
                out.push((format!("block {i} mlp"), l));
            }
        }
        out.push(("head".into(), &self.head));
        out
    }

    fn loss(&self, device: &Device) -> Tensor<1> {
        let mut x = Tensor::<2>::ones([2, 4], device);
        for b in &self.blocks {
            let a = &b.attention;
            x =
                a.o.forward(a.q.forward(x.clone()) * a.k.forward(x.clone()) + a.v.forward(x));
            let m = &b.mlp;
            x = m.down.forward(m.gate.forward(x.clone()) * m.up.forward(x));
        }
        self.head.forward(x).sum()
    }
}

/// HFT as in its paper: per block, half of the attention matrices and half of the MLP
/// matrices (one or two of three, at random) are frozen for a stage, a Linear's weight and
/// bias together; frozen means not moved at all (AdamW's weight decay included), while the
/// others move; the draw holds for a stage and is re-drawn at the next.
#[test]
fn hft_freezes_half_of_each_blocks_matrices_by_category() {
    let device = Device::flex().autodiff();
    let config = GradMaskConfig::new(0.5)
        .with_strategy(MaskStrategy::Hft {
            seed: 11,
            stage_steps: 2,
        })
        .with_target(MaskTarget::Update);
    let mut mask = config.init().unwrap();
    let mut optim = AdamWConfig::new().with_weight_decay(0.1).init();
    let mut model = blocks(&device);
    let mut stages: Vec<Vec<bool>> = Vec::new();
    let mut mlp_counts = std::collections::BTreeSet::new();
    for step in 0..16 {
        let grads = GradientsParams::from_grads(model.loss(&device).backward(), &model);
        let before: Vec<(Vec<f64>, Vec<f64>)> = model
            .linears()
            .iter()
            .map(|(_, l)| {
                (
                    values(l.weight.val()),
                    values(l.bias.as_ref().unwrap().val()),
                )
            })
            .collect();
        model = mask.step(&mut optim, 1e-2, model, grads);
        let mut frozen = Vec::new();
        let mut per_category: std::collections::BTreeMap<String, (usize, usize)> =
            Default::default();
        for ((category, l), (w, b)) in model.linears().into_iter().zip(&before) {
            let weight_still = values(l.weight.val()) == *w;
            let bias_still = values(l.bias.as_ref().unwrap().val()) == *b;
            assert_eq!(
                weight_still, bias_still,
                "step {step}: a Linear freezes whole"
            );
            let entry = per_category.entry(category).or_default();
            entry.0 += usize::from(weight_still);
            entry.1 += 1;
            frozen.push(weight_still);
        }
        for (category, (still, of)) in &per_category {
            match of {
                4 => assert_eq!(*still, 2, "step {step}: {category}"),
                3 => {
                    assert!((1..=2).contains(still), "step {step}: {category}");
                    mlp_counts.insert(*still);
                }
                _ => assert!(*still <= 1, "step {step}: {category}"),
            }
        }
        let stats = mask.last_stats();
        let frozen_entries = frozen.iter().filter(|&&f| f).count() as u64 * (16 + 4);
        assert_eq!(stats.masked(), frozen_entries, "step {step}");
        if step % 2 == 0 {
            stages.push(frozen);
        } else {
            assert_eq!(
                stages.last().unwrap(),
                &frozen,
                "the draw holds for a stage"
            );
        }
    }
    assert!(
        stages.iter().any(|s| s != &stages[0]),
        "the frozen half is re-drawn across stages"
    );
    assert_eq!(
        mlp_counts.into_iter().collect::<Vec<_>>(),
        vec![1, 2],
        "an odd category freezes one or two of three"
    );
}

/// With `collect_norms`, a tensor HFT freezes keeps none of its gradient norm and an unfrozen
/// one all of it: the norms against the gradients read on the host.
#[test]
fn hft_norms_count_frozen_tensors_as_dropped() {
    let device = Device::flex().autodiff();
    let config = GradMaskConfig::new(0.5)
        .with_strategy(MaskStrategy::Hft {
            seed: 3,
            stage_steps: 1,
        })
        .with_target(MaskTarget::Update)
        .with_collect_norms(true);
    let mut mask = config.init().unwrap();
    let mut optim = AdamWConfig::new().init();
    let model = blocks(&device);
    let grads = GradientsParams::from_grads(model.loss(&device).backward(), &model);
    // Each gradient's squared norm, in module order (the statistics' order).
    struct Squares<'a>(&'a GradientsParams, Vec<f64>);
    impl burn::module::ModuleVisitor for Squares<'_> {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            let g = values(self.0.get::<D>(param.id).unwrap());
            self.1.push(g.iter().map(|v| v * v).sum());
        }
    }
    let mut squares = Squares(&grads, Vec::new());
    model.visit(&mut squares);
    let squares = squares.1;
    let _ = mask.step(&mut optim, 1e-2, model, grads);
    let stats = mask.last_stats();
    assert_eq!(stats.tensors.len(), squares.len());
    let mut frozen = 0;
    for (t, expected) in stats.tensors.iter().zip(&squares) {
        let (all, kept) = t.norms_sq.expect("norms measured");
        assert!((all - expected).abs() <= 1e-5 * expected, "{}", t.param);
        if t.masked == t.total {
            frozen += 1;
            assert_eq!(kept, 0.0, "{} is frozen", t.param);
        } else {
            assert_eq!(kept, all, "{} is whole", t.param);
        }
    }
    assert!(frozen > 0 && frozen < squares.len(), "{frozen} frozen");
    let share = stats.kept_norm_fraction().unwrap();
    assert!(share > 0.0 && share < 1.0, "{share}");
}

/// HFT needs the Update target and the module's structure: refused otherwise, naming the
/// field.
#[test]
fn hft_is_refused_without_update_or_through_the_wrapper() {
    let hft = GradMaskConfig::new(0.5).with_strategy(MaskStrategy::Hft {
        seed: 0,
        stage_steps: 4,
    });
    let err = hft.init().unwrap_err().to_string();
    assert!(err.contains("GradMaskConfig.target"), "{err}");
    let update = hft.with_target(MaskTarget::Update);
    assert!(update.init().is_ok());
    let err = burn::optim::SgdConfig::new()
        .build()
        .try_with_grad_mask_config(update)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("GradMaskConfig.strategy"), "{err}");
}

#[test]
fn warmup_ramps_the_ratio() {
    let device = Device::flex();
    let module = params_module(&device);
    let mut mask = GradMaskConfig::new(0.4)
        .with_warmup_steps(4)
        .init()
        .unwrap();
    for step in 0..6u64 {
        let _ = mask.apply(&module, grads_like(&module));
        let stats = mask.last_stats();
        let ratio = 0.4 * (step.min(4) as f64) / 4.0;
        assert_eq!(stats.step, step);
        assert_eq!(stats.ratio, ratio);
        assert_eq!(stats.tensors[0].masked, (ratio * 40.0).floor() as u64);
    }
    assert_eq!(mask.steps(), 6);
}

/// A piecewise schedule drives the ratio of every step.
#[test]
fn schedule_drives_the_ratio() {
    let device = Device::flex();
    let module = params_module(&device);
    let config = GradMaskConfig::new(0.1).with_schedule(RatioSchedule::Piecewise {
        points: vec![(2, 0.5), (4, 0.5), (6, 0.2)],
    });
    // Written out by hand: 0.1 → 0.5 over steps 0..2, flat to 4, down to 0.2 at 6.
    let expected = [0.1, 0.3, 0.5, 0.5, 0.5, 0.35, 0.2, 0.2];
    let mut mask = config.init().unwrap();
    for (step, ratio) in expected.iter().enumerate() {
        let _ = mask.apply(&module, grads_like(&module));
        let stats = mask.last_stats();
        assert!(
            (stats.ratio - ratio).abs() < 1e-12,
            "step {step}: {}",
            stats.ratio
        );
        assert_eq!(stats.tensors[0].masked, (stats.ratio * 40.0).floor() as u64);
    }
}

#[test]
fn non_finite_gradients_are_kept_and_counted() {
    for device in common::devices() {
        let mut raw = sample(40, 1);
        raw[3] = f64::NAN;
        raw[7] = f64::INFINITY;
        raw[8] = f64::NEG_INFINITY;
        let module = params_module(&device);
        let mut grads = GradientsParams::new();
        grads.register(module.vector.id, Float::F32.tensor(&raw, [40], &device));
        // Masking (almost) everything still leaves the non-finite entries in place.
        let mut mask = GradMaskConfig::new(0.99).init().unwrap();
        let mut out = mask.apply(&module, grads);
        let got = values(out.remove::<1>(module.vector.id).unwrap());
        assert!(got[3].is_nan());
        assert_eq!(got[7], f64::INFINITY);
        assert_eq!(got[8], f64::NEG_INFINITY);
        let t = &mask.last_stats().tensors[0];
        assert_eq!(t.non_finite, 3);
        // floor(0.99 · 40) = 39 exceeds the 37 finite entries: all finite ones are masked.
        assert_eq!(t.masked, 37, "{t:?}");
        assert_eq!(t.threshold, Some(f64::INFINITY));
    }
}

#[test]
fn global_update_target_through_step_holds_masked_parameters() {
    let device = Device::flex().autodiff();
    let model = params_module(&device);
    let model = Params {
        vector: Param::from_tensor(model.vector.val().require_grad()),
        matrix: Param::from_tensor(model.matrix.val().require_grad()),
        cube: Param::from_tensor(model.cube.val().require_grad()),
    };
    let mut optim = AdamWConfig::new().with_weight_decay(0.1).init();
    let mut mask = GradMaskConfig::new(0.5)
        .with_scope(MaskScope::Global)
        .with_target(MaskTarget::Update)
        .init()
        .unwrap();
    let mut model = model;
    for step in 0..3 {
        let loss = (model.vector.val().powi_scalar(2).sum()
            + model.matrix.val().powi_scalar(3).sum()
            + model.cube.val().sin().sum())
        .mul_scalar(step as f64 + 1.0);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let all_grads: Vec<f64> = values(grads.get::<1>(model.vector.id).unwrap())
            .into_iter()
            .chain(values(grads.get::<2>(model.matrix.id).unwrap()))
            .chain(values(grads.get::<3>(model.cube.id).unwrap()))
            .collect();
        let (_, _, threshold) = reference_mask(&all_grads, 0.5);
        let threshold = threshold.unwrap();
        let before: Vec<f64> = values(model.vector.val())
            .into_iter()
            .chain(values(model.matrix.val()))
            .chain(values(model.cube.val()))
            .collect();
        model = mask.step(&mut optim, 1e-2, model, grads);
        let after: Vec<f64> = values(model.vector.val())
            .into_iter()
            .chain(values(model.matrix.val()))
            .chain(values(model.cube.val()))
            .collect();
        let mut held = 0;
        for i in 0..before.len() {
            if all_grads[i].abs() < threshold {
                assert_eq!(
                    after[i].to_bits(),
                    before[i].to_bits(),
                    "step {step}: masked entry {i} moved"
                );
                held += 1;
            } else {
                assert_ne!(
                    after[i], before[i],
                    "step {step}: kept entry {i} did not move"
                );
            }
        }
        assert_eq!(held as u64, mask.last_stats().masked());
        assert!(
            model.vector.val().is_require_grad(),
            "parameters stay trainable"
        );
    }
}

/// A global threshold over gradients on two devices (two CPU backends): the histograms are
/// merged on the host, the threshold written on both devices, and the mask matches a host sort
/// of every entry.
#[cfg(feature = "ndarray")]
#[test]
fn global_scope_across_devices_matches_reference() {
    #[allow(deprecated)]
    let other = Device::ndarray();
    let flex = Device::flex();
    let raw = [sample(40, 1), sample(24, 2), sample(30, 3)];
    let module = Params {
        vector: Param::from_tensor(Float::F32.tensor(&raw[0], [40], &flex)),
        matrix: Param::from_tensor(Float::F32.tensor(&raw[1], [6, 4], &other)),
        cube: Param::from_tensor(Float::F32.tensor(&raw[2], [2, 3, 5], &flex)),
    };
    let mut mask = GradMaskConfig::new(0.3)
        .with_scope(MaskScope::Global)
        .init()
        .unwrap();
    let mut grads = mask.apply(&module, grads_like(&module));
    let got: Vec<f64> = [
        values(grads.remove::<1>(module.vector.id).unwrap()),
        values(grads.remove::<2>(module.matrix.id).unwrap()),
        values(grads.remove::<3>(module.cube.id).unwrap()),
    ]
    .concat();
    let (expected, masked, threshold) = reference_mask(&raw.concat(), 0.3);
    assert_same(&got, &expected, "global mask over two devices");
    let stats = mask.last_stats();
    assert_eq!(stats.masked(), masked);
    assert!(stats.tensors.iter().all(|t| t.threshold == threshold));
}

/// Per-group ratios and scopes: each group masked with its own ratio and scope, the rest with
/// the config's, each against a host sort of its own entries.
#[test]
fn groups_have_their_own_ratio_and_scope() {
    let device = Device::flex();
    let module = params_module(&device);
    let raw = [sample(40, 1), sample(24, 2), sample(30, 3)];
    // "matrix" alone at 0.5; "vector" and "cube" together under one threshold at 0.25; nothing
    // left for the default ratio of 0.9.
    let config = GradMaskConfig::new(0.9).with_groups(vec![
        MaskGroup::new(ParamGroup::from_paths(vec!["matrix"]), 0.5),
        MaskGroup::new(ParamGroup::from_paths(vec!["vector", "cube"]), 0.25)
            .with_scope(Some(MaskScope::Global)),
    ]);
    let mut mask = config.init().unwrap();
    let mut grads = mask.apply(&module, grads_like(&module));
    let vector = values(grads.remove::<1>(module.vector.id).unwrap());
    let matrix = values(grads.remove::<2>(module.matrix.id).unwrap());
    let cube = values(grads.remove::<3>(module.cube.id).unwrap());

    assert_same(&matrix, &reference_mask(&raw[1], 0.5).0, "matrix group");
    let (joint, joint_masked, _) = reference_mask(&[raw[0].clone(), raw[2].clone()].concat(), 0.25);
    assert_same(&[vector, cube].concat(), &joint, "global group");
    let stats = mask.last_stats();
    assert_eq!(stats.masked(), 12 + joint_masked);

    // The first matching group wins, `unmasked` over all; the default ratio serves the rest.
    let config = GradMaskConfig::new(0.5)
        .with_unmasked(Some(ParamGroup::from_paths(vec!["cube"])))
        .with_groups(vec![
            MaskGroup::new(ParamGroup::from_paths(vec!["vector", "cube"]), 0.1),
            MaskGroup::new(ParamGroup::from_paths(vec!["vector"]), 0.7),
        ]);
    let mut mask = config.init().unwrap();
    let _ = mask.apply(&module, grads_like(&module));
    let masked: Vec<(String, u64)> = mask
        .last_stats()
        .tensors
        .iter()
        .map(|t| (t.param.clone(), t.masked))
        .collect();
    assert_eq!(
        masked,
        [("vector".to_string(), 4), ("matrix".to_string(), 12)]
    );

    let bad = GradMaskConfig::new(0.5).with_groups(vec![MaskGroup::new(
        ParamGroup::from_paths(vec!["cube"]),
        1.0,
    )]);
    let err = bad.validate().unwrap_err().to_string();
    assert!(
        err.contains("GradMaskConfig.groups") && err.contains("group 0"),
        "{err}"
    );
}

/// `reselect_every(3)`: the threshold selected at steps 0, 3, 6 masks the steps after it; each
/// step checked against a host sort (selection steps) or the kept threshold (the others), on
/// the backend's own way of masking and through the one-pass mask.
#[test]
fn reselect_every_keeps_the_threshold_between_selections() {
    check_reselect_every();
    burn_gmt_kernels::testing::with_one_pass_mask(check_reselect_every);
}

fn check_reselect_every() {
    let device = Device::flex();
    let module = common::Single::new(500, Float::F32, &device);
    let mut mask = GradMaskConfig::new(0.4)
        .with_reselect_every(3)
        .init()
        .unwrap();
    let mut kept = f64::NAN;
    for step in 0..7u64 {
        let mut raw = sample(500, 100 + step);
        raw[7] = f64::NAN;
        let grads = common::grads_for(&module, Float::F32.tensor(&raw, [500], &device));
        let got = values(
            mask.apply(&module, grads)
                .remove::<1>(module.weight.id)
                .unwrap(),
        );
        let (expected, masked) = if step % 3 == 0 {
            let (expected, masked, threshold) = reference_mask(&raw, 0.4);
            kept = threshold.unwrap();
            (expected, masked)
        } else {
            let below = |v: f64| v.is_finite() && v.abs() < kept;
            let expected: Vec<f64> = raw
                .iter()
                .map(|&v| if below(v) { 0.0 } else { v })
                .collect();
            let masked = raw.iter().filter(|&&v| below(v)).count() as u64;
            (expected, masked)
        };
        assert_same(&got, &expected, &format!("step {step}"));
        let t = &mask.last_stats().tensors[0];
        assert_eq!((t.masked, t.non_finite), (masked, 1), "step {step}");
        assert_eq!(t.threshold, Some(kept), "step {step}");
    }
    for (config, field) in [
        (
            GradMaskConfig::new(0.3).with_reselect_every(0),
            "reselect_every",
        ),
        (
            GradMaskConfig::new(0.3)
                .with_reselect_every(2)
                .with_strategy(MaskStrategy::Random {
                    seed: 1,
                    rescale: false,
                }),
            "reselect_every",
        ),
    ] {
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains(&format!("GradMaskConfig.{field}")), "{err}");
    }
}
