//! The optimizer wrapper: SFT at ratio 0, the two targets against their definitions, records,
//! and configuration errors.

use crate::common;

use crate::common::{assert_same, reference_mask};
use burn::module::{Module, ModuleVisitor, Param, ParamGroup, ParamId};
use burn::nn::{Linear, LinearConfig};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use burn_gmt::{GradMaskConfig, MaskScope, MaskStrategy, MaskTarget, RatioSchedule, WithGradMask};

#[derive(Module, Debug)]
struct Net {
    hidden: Linear,
    out: Linear,
}

fn net(device: &Device) -> Net {
    Net {
        hidden: LinearConfig::new(6, 16).init(device),
        out: LinearConfig::new(16, 3).init(device),
    }
}

fn grads_of(model: &Net, seed: u64, device: &Device) -> GradientsParams {
    Tensor::<1>::random([1], Distribution::Default, device); // keep the default RNG moving
    let x = inputs(seed, device);
    let y = model.out.forward(model.hidden.forward(x).tanh());
    GradientsParams::from_grads((y.clone() * y).mean().backward(), model)
}

/// Deterministic inputs from a seed (independent of Burn's RNG).
fn inputs(seed: u64, device: &Device) -> Tensor<2> {
    let values: Vec<f32> = (0..8 * 6)
        .map(|i| {
            let z = burn_gmt_kernels::random::mix64(seed * 1000 + i);
            (z >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
        })
        .collect();
    Tensor::from_data(TensorData::new(values, [8, 6]), device)
}

/// Every parameter's values, in module order, with their ids.
#[derive(Default)]
struct Collect(Vec<(ParamId, Vec<f64>)>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0
            .push((param.id, param.val().into_data().iter::<f64>().collect()));
    }
}

fn params<M: Module>(model: &M) -> Vec<(ParamId, Vec<f64>)> {
    let mut collect = Collect::default();
    model.visit(&mut collect);
    collect.0
}

/// The gradients masked per tensor by the host reference.
struct ReferenceMask<'a> {
    grads: &'a GradientsParams,
    ratio: f64,
    out: GradientsParams,
    masked: Vec<(ParamId, Vec<bool>)>,
}

impl ModuleVisitor for ReferenceMask<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let grad = self.grads.get::<D>(param.id).unwrap();
        let shape = grad.shape();
        let values: Vec<f64> = grad.into_data().iter::<f64>().collect();
        let (masked_values, _, threshold) = reference_mask(&values, self.ratio);
        let threshold = threshold.unwrap_or(0.0);
        self.masked.push((
            param.id,
            values
                .iter()
                .map(|v| v.is_finite() && v.abs() < threshold)
                .collect(),
        ));
        let data = TensorData::new(masked_values.iter().map(|&v| v as f32).collect(), shape);
        self.out
            .register::<D>(param.id, Tensor::from_data(data, &param.val().device()));
    }
}

fn reference_masked(
    model: &Net,
    grads: &GradientsParams,
    ratio: f64,
) -> (GradientsParams, Vec<(ParamId, Vec<bool>)>) {
    let mut visitor = ReferenceMask {
        grads,
        ratio,
        out: GradientsParams::new(),
        masked: Vec::new(),
    };
    model.visit(&mut visitor);
    (visitor.out, visitor.masked)
}

fn sgd() -> SgdConfig {
    SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new()))
        .with_weight_decay(Some(WeightDecayConfig::new(0.01)))
}

fn adamw() -> AdamWConfig {
    AdamWConfig::new().with_weight_decay(0.05)
}

#[test]
fn ratio_zero_is_bit_identical_to_the_inner_optimizer() {
    for device in common::devices() {
        let device = device.autodiff();
        type Pair = (ModuleOptimizer, ModuleOptimizer);
        let pairs: Vec<(&str, Pair)> = vec![
            (
                "sgd",
                (
                    ModuleOptimizer::from(sgd().build()),
                    ModuleOptimizer::from(sgd().build().with_grad_mask(0.0)),
                ),
            ),
            (
                "adamw",
                (
                    ModuleOptimizer::from(adamw().build()),
                    ModuleOptimizer::from(adamw().build().with_grad_mask(0.0)),
                ),
            ),
        ];
        for (name, (mut plain, mut masked)) in pairs {
            let mut a = net(&device);
            let mut b = a.clone();
            for step in 0..4 {
                a = plain.step(1e-2, a.clone(), grads_of(&a, step, &device));
                b = masked.step(1e-2, b.clone(), grads_of(&b, step, &device));
            }
            for ((_, pa), (_, pb)) in params(&a).iter().zip(params(&b).iter()) {
                assert_same(pb, pa, &format!("{name} on {device:?}"));
            }
        }
    }
}

#[test]
fn gradient_target_equals_the_inner_optimizer_fed_the_masked_gradient() {
    for device in common::devices() {
        let device = device.autodiff();
        for ratio in [0.3, 0.7] {
            let mut plain = ModuleOptimizer::from(adamw().build());
            let mut masked = ModuleOptimizer::from(adamw().build().with_grad_mask(ratio));
            let mut a = net(&device);
            let mut b = a.clone();
            for step in 0..4 {
                let grads = grads_of(&a, step, &device);
                let (reference, _) = reference_masked(&a, &grads, ratio);
                a = plain.step(1e-2, a.clone(), reference);
                b = masked.step(1e-2, b.clone(), grads_of(&b, step, &device));
                for ((_, pa), (_, pb)) in params(&a).iter().zip(params(&b).iter()) {
                    assert_same(pb, pa, &format!("r={ratio} step {step} on {device:?}"));
                }
            }
        }
    }
}

/// The Update target's check, on the backends' own way of masking and through the one-pass
/// mask (whose threshold is selected while it masks, then holds the parameters).
#[test]
fn update_target_holds_masked_parameters_still() {
    check_update_target();
    burn_gmt_kernels::testing::with_one_pass_mask(check_update_target);
}

fn check_update_target() {
    for device in common::devices() {
        let device = device.autodiff();
        for (name, inner) in [
            ("sgd", ModuleOptimizer::from(sgd().build())),
            ("adamw", ModuleOptimizer::from(adamw().build())),
        ] {
            let config = GradMaskConfig::new(0.4).with_target(MaskTarget::Update);
            let mut masked = match name {
                "sgd" => ModuleOptimizer::from(sgd().build().with_grad_mask_config(config)),
                _ => ModuleOptimizer::from(adamw().build().with_grad_mask_config(config)),
            };
            // The plain optimizer fed the masked gradient on the same parameters keeps the
            // same state as the wrapped inner optimizer.
            let mut plain = inner;
            let mut model = net(&device);
            let mut moved_by_state = 0;
            for step in 0..4 {
                let grads = grads_of(&model, step, &device);
                let (reference, masked_entries) = reference_masked(&model, &grads, 0.4);
                let before = params(&model);
                let free = params(&plain.step(1e-2, model.clone(), reference));
                model = masked.step(1e-2, model.clone(), grads_of(&model, step, &device));
                let after = params(&model);
                for (((id, old), (_, new)), ((_, free), (mid, mask))) in before
                    .iter()
                    .zip(&after)
                    .zip(free.iter().zip(&masked_entries))
                {
                    assert_eq!(id, mid);
                    for i in 0..old.len() {
                        if mask[i] {
                            assert_eq!(
                                new[i].to_bits(),
                                old[i].to_bits(),
                                "{name} step {step}: masked entry {i} moved"
                            );
                            moved_by_state += usize::from(free[i] != old[i]);
                        } else {
                            assert_eq!(
                                new[i].to_bits(),
                                free[i].to_bits(),
                                "{name} step {step}: kept entry {i}"
                            );
                        }
                    }
                }
            }
            // Without the Update target, momentum and weight decay would have moved them.
            assert!(
                moved_by_state > 0,
                "{name}: the test must see masked entries the inner optimizer moves"
            );
        }
    }
}

#[test]
fn records_resume_bit_identically_including_random_masks() {
    let device = Device::flex().autodiff();
    // The wrapper refuses HFT (it needs the module's blocks).
    let strategies = common::strategies(7, 2)
        .into_iter()
        .filter(|s| !matches!(s, MaskStrategy::Hft { .. }));
    for strategy in strategies {
        let config = GradMaskConfig::new(0.5)
            .with_strategy(strategy)
            .with_warmup_steps(3);
        let build = || ModuleOptimizer::from(adamw().build().with_grad_mask_config(config.clone()));
        let mut original = build();
        let mut model = net(&device);
        for step in 0..3 {
            model = original.step(1e-2, model.clone(), grads_of(&model, step, &device));
        }
        let path = std::env::temp_dir().join(format!(
            "burn-gmt-record-{}-{strategy:?}.bpk",
            std::process::id()
        ));
        original.save(&path).unwrap();
        // The record is read lazily: keep the file until the resumed steps ran.
        let mut resumed = build().load(&path).unwrap();
        let mut fresh = build(); // no state: must differ, so the test can fail

        let (mut a, mut b, mut c) = (model.clone(), model.clone(), model);
        for step in 3..6 {
            a = original.step(1e-2, a.clone(), grads_of(&a, step, &device));
            b = resumed.step(1e-2, b.clone(), grads_of(&b, step, &device));
            c = fresh.step(1e-2, c.clone(), grads_of(&c, step, &device));
        }
        for ((_, pa), (_, pb)) in params(&a).iter().zip(params(&b).iter()) {
            assert_same(pb, pa, &format!("{strategy:?}"));
        }
        let _ = std::fs::remove_file(&path);
        assert_ne!(
            params(&a)[0].1,
            params(&c)[0].1,
            "{strategy:?}: a fresh optimizer must differ"
        );
    }
}

#[test]
fn stats_handle_reports_the_latest_step() {
    let device = Device::flex().autodiff();
    let wrapped = SgdConfig::new().build().with_grad_mask(0.25);
    let stats = wrapped.stats_handle();
    let mut optim = ModuleOptimizer::from(wrapped);
    let mut model = net(&device);
    for step in 0..2 {
        model = optim.step(1e-2, model.clone(), grads_of(&model, step, &device));
    }
    let latest = stats.latest();
    assert_eq!(latest.step, 1);
    assert_eq!(latest.tensors.len(), 4);
    for t in &latest.tensors {
        let k = (0.25 * t.total as f64).floor() as u64;
        assert_eq!(t.masked, k, "{t:?}");
        // A threshold is selected exactly when something is to be masked.
        assert_eq!(t.threshold.is_some(), k > 0, "{t:?}");
    }
}

/// `with_param_paths` names each tensor's statistics by its module path, and `collect_norms`
/// measures `‖g‖²` and `‖kept‖²` as the host computes them from the same gradients and the
/// masked ones (the SGD step reveals which entries were kept).
#[test]
fn wrapper_names_params_by_path_and_measures_norms() {
    let device = Device::flex().autodiff();
    for strategy in [
        MaskStrategy::Magnitude,
        MaskStrategy::Random {
            seed: 3,
            rescale: true,
        },
    ] {
        let model = net(&device);
        let config = GradMaskConfig::new(0.3)
            .with_strategy(strategy)
            .with_collect_norms(true);
        let wrapped = SgdConfig::new()
            .build()
            .with_grad_mask_config(config)
            .with_param_paths(&model);
        let stats = wrapped.stats_handle();
        let mut optim = ModuleOptimizer::from(wrapped);
        let grads = grads_of(&model, 5, &device);
        let raw = params_of_grads(&model, &grads);
        let before = params(&model);
        let lr = 0.5;
        let after = params(&optim.step(lr, model, grads));

        let latest = stats.latest();
        let names: Vec<&str> = latest.tensors.iter().map(|t| t.param.as_str()).collect();
        assert_eq!(
            names,
            ["hidden.weight", "hidden.bias", "out.weight", "out.bias"],
            "{strategy:?}"
        );
        for (((t, g), (_, b)), (_, a)) in latest.tensors.iter().zip(&raw).zip(&before).zip(&after) {
            // SGD: θ' = θ − lr·masked; an entry was kept where θ moved.
            let kept: f64 = g
                .iter()
                .zip(b.iter().zip(a))
                .filter(|(_, (b, a))| b != a)
                .map(|(g, _)| g * g)
                .sum();
            let all: f64 = g.iter().map(|g| g * g).sum();
            let (got_all, got_kept) = t.norms_sq.expect("norms measured");
            let close = |x: f64, y: f64| (x - y).abs() <= 1e-5 * y.max(1e-12);
            assert!(
                close(got_all, all),
                "{strategy:?} {}: {got_all} vs {all}",
                t.param
            );
            assert!(
                close(got_kept, kept),
                "{strategy:?} {}: {got_kept} vs {kept}",
                t.param
            );
        }
        let share = latest.kept_norm_fraction().unwrap();
        assert!(share > 0.0 && share < 1.0, "{strategy:?}: {share}");
    }

    // A module whose shapes do not match what is stepped keeps the stream names.
    let model = net(&device);
    let other = Net {
        hidden: LinearConfig::new(7, 16).init(&device),
        out: LinearConfig::new(16, 3).init(&device),
    };
    let wrapped = SgdConfig::new()
        .build()
        .with_grad_mask(0.3)
        .with_param_paths(&other);
    let stats = wrapped.stats_handle();
    let mut optim = ModuleOptimizer::from(wrapped);
    let grads = grads_of(&model, 1, &device);
    let _ = optim.step(0.1, model, grads);
    let names: Vec<String> = stats
        .latest()
        .tensors
        .into_iter()
        .map(|t| t.param)
        .collect();
    assert_eq!(names, ["stream 0", "hidden.bias", "out.weight", "out.bias"]);
    assert!(stats.latest().kept_norm_fraction().is_none());
}

#[test]
fn invalid_configs_name_the_field() {
    for ratio in [f64::NAN, -0.1, 1.0, 1.5, f64::INFINITY] {
        let err = GradMaskConfig::new(ratio).init().unwrap_err().to_string();
        assert!(err.contains("GradMaskConfig.ratio"), "{err}");
        let err = SgdConfig::new()
            .build()
            .try_with_grad_mask(ratio)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("GradMaskConfig.ratio"), "{err}");
    }
    let hft = GradMaskConfig::new(0.5)
        .with_strategy(MaskStrategy::Hft {
            seed: 0,
            stage_steps: 0,
        })
        .with_target(MaskTarget::Update);
    assert!(
        hft.init()
            .unwrap_err()
            .to_string()
            .contains("GradMaskConfig.strategy")
    );
    let global = GradMaskConfig::new(0.3).with_scope(MaskScope::Global);
    let err = SgdConfig::new()
        .build()
        .try_with_grad_mask_config(global)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("GradMaskConfig.scope"), "{err}");
    let unmasked = GradMaskConfig::new(0.3)
        .with_unmasked(Some(burn::module::ParamGroup::from_predicate("bias")));
    let err = SgdConfig::new()
        .build()
        .try_with_grad_mask_config(unmasked)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("GradMaskConfig.unmasked"), "{err}");
    let groups = GradMaskConfig::new(0.3).with_groups(vec![burn_gmt::MaskGroup::new(
        burn::module::ParamGroup::from_predicate("bias"),
        0.1,
    )]);
    let err = SgdConfig::new()
        .build()
        .try_with_grad_mask_config(groups)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("GradMaskConfig.groups"), "{err}");
    let norms = GradMaskConfig::new(0.3)
        .with_collect_stats(false)
        .with_collect_norms(true);
    let err = norms.validate().unwrap_err().to_string();
    assert!(err.contains("GradMaskConfig.collect_norms"), "{err}");
}

/// The wrapper's recipe for groups (see the crate docs): `ModuleOptimizer::with_group` gives
/// the group its own optimizer, here unwrapped (never masked) or wrapped at another ratio.
#[test]
fn with_group_gives_a_group_its_own_mask() {
    let device = Device::flex().autodiff();
    let model = net(&device);
    let grads = grads_of(&model, 3, &device);
    let expected_grads = params_of_grads(&model, &grads);
    let lr = 0.5;
    let mut optim = ModuleOptimizer::from(SgdConfig::new().build().with_grad_mask(0.5))
        .with_group(
            burn::module::ParamGroup::from_paths(vec!["out.weight"]),
            SgdConfig::new().build(),
            None,
        )
        .with_group(
            burn::module::ParamGroup::from_paths(vec!["hidden.bias"]),
            SgdConfig::new().build().with_grad_mask(0.25),
            None,
        );
    let before = params(&model);
    let after = params(&optim.step(lr, model, grads));
    // hidden.weight, hidden.bias, out.weight, out.bias: entries left where they were.
    let held: Vec<usize> = before
        .iter()
        .zip(&after)
        .map(|((_, b), (_, a))| b.iter().zip(a).filter(|(b, a)| b == a).count())
        .collect();
    let len = |i: usize| expected_grads[i].len();
    assert_eq!(held[0], len(0) / 2, "hidden.weight at 0.5");
    assert_eq!(held[1], len(1) / 4, "hidden.bias at 0.25");
    assert_eq!(held[2], 0, "out.weight unmasked");
    assert_eq!(held[3], len(3) / 2, "out.bias at 0.5");
}

/// Each parameter's gradient values, in module order.
fn params_of_grads(model: &Net, grads: &GradientsParams) -> Vec<Vec<f64>> {
    struct Read<'a>(&'a GradientsParams, Vec<Vec<f64>>);
    impl ModuleVisitor for Read<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let grad = self.0.get::<D>(param.id).unwrap();
            self.1.push(grad.into_data().iter::<f64>().collect());
        }
    }
    let mut read = Read(grads, Vec::new());
    model.visit(&mut read);
    read.1
}

#[test]
#[should_panic(expected = "GradMaskConfig.ratio")]
fn with_grad_mask_panics_on_an_invalid_ratio() {
    let _ = AdamWConfig::new().build().with_grad_mask(1.0);
}

#[test]
fn config_round_trips_through_json() {
    use burn::config::Config;
    let config = GradMaskConfig::new(0.25)
        .with_scope(MaskScope::Global)
        .with_target(MaskTarget::Update)
        .with_strategy(MaskStrategy::Random {
            seed: 9,
            rescale: true,
        })
        .with_warmup_steps(10)
        .with_schedule(RatioSchedule::Piecewise {
            points: vec![(5, 0.1), (20, 0.4)],
        });
    let path = std::env::temp_dir().join(format!("burn-gmt-config-{}.json", std::process::id()));
    config.save(&path).unwrap();
    let loaded = GradMaskConfig::load(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(loaded.ratio, 0.25);
    assert_eq!(loaded.scope, MaskScope::Global);
    assert_eq!(loaded.target, MaskTarget::Update);
    assert_eq!(
        loaded.strategy,
        MaskStrategy::Random {
            seed: 9,
            rescale: true
        }
    );
    assert_eq!(loaded.warmup_steps, 10);
    assert_eq!(loaded.schedule, config.schedule);
    assert!(loaded.collect_stats);
}

/// The wrapper with `reselect_every(3)`: between selections each tensor is masked against the
/// threshold kept in its state (statistics count what that masks), and a checkpoint taken
/// mid-window resumes with that threshold: bitwise the uninterrupted run.
///
/// Checked on the backend's own way of masking and through the one-pass mask, whose threshold
/// is kept as the one it selected.
#[test]
fn wrapper_keeps_the_threshold_between_selections_and_across_records() {
    check_kept_threshold();
    burn_gmt_kernels::testing::with_one_pass_mask(check_kept_threshold);
}

fn check_kept_threshold() {
    let device = Device::flex().autodiff();
    let config = GradMaskConfig::new(0.5).with_reselect_every(3);
    let make = || {
        let masked = adamw().build().with_grad_mask_config(config.clone());
        let handle = masked.stats_handle();
        (ModuleOptimizer::from(masked), handle)
    };
    let model = net(&device);
    let (mut optim, handle) = make();
    let mut uninterrupted = model.clone();
    let mut thresholds = Vec::new();
    for step in 0..6u64 {
        let grads = grads_of(&uninterrupted, step, &device);
        let expected = params_of_grads(&uninterrupted, &grads);
        uninterrupted = optim.step(1e-2, uninterrupted, grads);
        let stats = handle.latest();
        if step % 3 == 0 {
            thresholds = stats.tensors.iter().map(|t| t.threshold.unwrap()).collect();
        }
        for ((t, threshold), g) in stats.tensors.iter().zip(&thresholds).zip(&expected) {
            let below = g.iter().filter(|v| v.abs() < *threshold).count() as u64;
            assert_eq!(t.masked, below, "step {step}: {}", t.param);
        }
    }

    // The same run, saved after step 1 (mid-window) and resumed in a fresh optimizer.
    let (mut optim, _) = make();
    let mut resumed = model;
    for step in 0..6u64 {
        if step == 2 {
            let record = optim.to_record();
            optim = make().0.load_record(record);
        }
        let grads = grads_of(&resumed, step, &device);
        resumed = optim.step(1e-2, resumed, grads);
    }
    assert_eq!(params(&resumed), params(&uninterrupted));
}

/// The wrapper's record is a superset of the inner optimizer's: a plain AdamW checkpoint
/// resumes under `.with_grad_mask` with its moments, and a wrapper's checkpoint resumes under
/// plain AdamW. With a ratio of 0 the wrapper steps as AdamW does, so both resumed runs must
/// equal the uninterrupted plain run bit for bit; moments started from zero would not.
#[test]
fn records_cross_between_the_plain_and_the_wrapped_optimizer() {
    let device = Device::flex().autodiff();
    let plain = || ModuleOptimizer::from(adamw().build());
    let wrapped = || ModuleOptimizer::from(adamw().build().with_grad_mask(0.0));
    let start = net(&device);
    // Two steps with `first`, then two with `then`, loaded from `first`'s record or fresh.
    let run = |first: ModuleOptimizer, then: ModuleOptimizer, load: bool| {
        let mut optim = first;
        let mut model = start.clone();
        let mut then = Some(then);
        for step in 0..4u64 {
            if step == 2 {
                let next = then.take().unwrap();
                optim = match load {
                    true => next.load_record(optim.to_record()),
                    false => next,
                };
            }
            let grads = grads_of(&model, step, &device);
            model = optim.step(1e-2, model, grads);
        }
        params(&model)
    };
    let uninterrupted = run(plain(), plain(), true);
    assert_eq!(
        run(plain(), wrapped(), true),
        uninterrupted,
        "plain -> wrapped"
    );
    assert_eq!(
        run(wrapped(), plain(), true),
        uninterrupted,
        "wrapped -> plain"
    );
    assert_eq!(
        run(wrapped(), wrapped(), true),
        uninterrupted,
        "wrapped -> wrapped"
    );
    // Without the record the moments restart: the comparison above can fail.
    assert_ne!(run(plain(), wrapped(), false), uninterrupted);
}

/// Clipping by value and the mask, in the order each front door applies them: the wrapper
/// runs inside `ModuleOptimizer::step`, after its clipping (clip, then mask); `GradMask` runs
/// before the optimizer (mask, then clip). With a bound below most `|g|`, the clipped entries
/// tie at the bound and ties at the threshold are kept: clip-then-mask keeps what the host
/// reference keeps of the clipped gradient (more than `1 - r`), mask-then-clip keeps exactly
/// `n - floor(r·n)` of each tensor.
#[test]
fn the_wrapper_masks_clipped_gradients_and_grad_mask_masks_before_clipping() {
    use burn::optim::grad_clipping::GradientClippingConfig;
    let device = Device::flex().autodiff();
    let ratio = 0.3;
    let model = net(&device);
    let raw = params_of_grads(&model, &grads_of(&model, 1, &device));
    // A bound below every tensor's threshold (its `floor(r·n)`-th smallest |g|), so that in
    // each tensor more than `1 - r` of the entries clip to it (and tie there).
    let bound = raw
        .iter()
        .map(|g| {
            let mut magnitudes: Vec<f64> = g.iter().map(|v| v.abs()).collect();
            magnitudes.sort_by(f64::total_cmp);
            magnitudes[(ratio * g.len() as f64).floor() as usize]
        })
        .fold(f64::INFINITY, f64::min) as f32
        / 2.0;
    let clipping = || GradientClippingConfig::Value(bound).init();

    let masked = SgdConfig::new().build().with_grad_mask(ratio);
    let handle = masked.stats_handle();
    let mut optim = ModuleOptimizer::from(masked).with_grad_clipping(clipping());
    let _ = optim.step(1e-2, model.clone(), grads_of(&model, 1, &device));
    let clip_then_mask: Vec<u64> = raw
        .iter()
        .map(|g| {
            let clipped: Vec<f64> = g
                .iter()
                .map(|v| v.clamp(-f64::from(bound), f64::from(bound)))
                .collect();
            let (_, masked, _) = reference_mask(&clipped, ratio);
            g.len() as u64 - masked
        })
        .collect();
    let kept: Vec<u64> = handle.latest().tensors.iter().map(|t| t.kept).collect();
    assert_eq!(kept, clip_then_mask, "the wrapper: clip, then mask");

    let mut mask = GradMaskConfig::new(ratio).init().unwrap();
    let mut optim = SgdConfig::new().init().with_grad_clipping(clipping());
    let _ = mask.step(
        &mut optim,
        1e-2,
        model.clone(),
        grads_of(&model, 1, &device),
    );
    let mask_then_clip: Vec<u64> = raw
        .iter()
        .map(|g| g.len() as u64 - (ratio * g.len() as f64).floor() as u64)
        .collect();
    let kept: Vec<u64> = mask.last_stats().tensors.iter().map(|t| t.kept).collect();
    assert_eq!(kept, mask_then_clip, "GradMask: mask, then clip");
    // The bound really clips: every tensor the ratio masks anything of keeps more when
    // clipped first.
    for ((a, b), g) in clip_then_mask.iter().zip(&mask_then_clip).zip(&raw) {
        let masks_something = (ratio * g.len() as f64).floor() > 0.0;
        assert!(
            a > b || !masks_something && a == b,
            "{clip_then_mask:?} against {mask_then_clip:?}"
        );
    }
}

/// Attention projections of one shape: a wrong name passes every shape check.
#[derive(Module, Debug)]
struct Projections {
    q: Linear,
    k: Linear,
    v: Linear,
}

/// Each parameter's reference threshold at `ratio`, by path: what names a statistic's
/// tensor when every tensor has the same shape.
fn reference_thresholds(
    model: &Projections,
    grads: &GradientsParams,
    ratio: f64,
) -> Vec<(String, f64)> {
    let linears = [("q", &model.q), ("k", &model.k), ("v", &model.v)];
    let mut out = Vec::new();
    for (name, linear) in linears {
        let weight = grads.get::<2>(linear.weight.id).unwrap();
        let bias = grads.get::<1>(linear.bias.as_ref().unwrap().id).unwrap();
        for (leaf, values) in [
            (
                "weight",
                weight.into_data().iter::<f64>().collect::<Vec<_>>(),
            ),
            ("bias", bias.into_data().iter::<f64>().collect()),
        ] {
            let threshold = common::reference_mask(&values, ratio).2.unwrap();
            out.push((format!("{name}.{leaf}"), threshold));
        }
    }
    out
}

/// A wrapper that steps a group of the parameters (`ModuleOptimizer::with_group`), or the
/// parameters no group takes (the fallback optimizer), names each statistic after its own
/// tensor (the thresholds say which it is), and one named for the whole module refuses at
/// its second step.
#[test]
fn wrapper_in_a_group_names_its_own_parameters() {
    let device = Device::flex().autodiff();
    let ratio = 0.3;
    let model = Projections {
        q: LinearConfig::new(8, 8).init(&device),
        k: LinearConfig::new(8, 8).init(&device),
        v: LinearConfig::new(8, 8).init(&device),
    };
    let x = Tensor::<2>::random([5, 8], Distribution::Default, &device);
    let grads = || {
        let x = x.clone();
        let y = model.q.forward(x.clone()) * 2.0 + model.k.forward(x.clone()) * model.v.forward(x);
        GradientsParams::from_grads((y.clone() * y).mean().backward(), &model)
    };
    let expected = reference_thresholds(&model, &grads(), ratio);
    let thresholds_of = |paths: &[&str]| -> Vec<(String, f64)> {
        let mut wanted: Vec<_> = expected
            .iter()
            .filter(|(p, _)| paths.contains(&p.as_str()))
            .cloned()
            .collect();
        wanted.sort_by(|a, b| a.0.cmp(&b.0));
        wanted
    };
    let named = |stats: &burn_gmt::MaskStatsHandle| -> Vec<(String, f64)> {
        let mut got: Vec<_> = stats
            .latest()
            .tensors
            .into_iter()
            .map(|t| (t.param, t.threshold.unwrap()))
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        got
    };
    let group = ParamGroup::from_any_predicates(vec!["q.", "v."]);

    // The wrapper steps the group.
    let masked = SgdConfig::new()
        .build()
        .with_grad_mask(ratio)
        .with_group_paths(&model, &group);
    let stats = masked.stats_handle();
    let mut optim =
        ModuleOptimizer::from(SgdConfig::new().build()).with_group(group.clone(), masked, None);
    let _ = optim.step(0.1, model.clone(), grads());
    assert_eq!(
        named(&stats),
        thresholds_of(&["q.weight", "q.bias", "v.weight", "v.bias"])
    );

    // The wrapper is the fallback: it steps what the group does not take.
    let rest = ParamGroup::all().exclude(group.clone());
    let masked = SgdConfig::new()
        .build()
        .with_grad_mask(ratio)
        .with_group_paths(&model, &rest);
    let stats = masked.stats_handle();
    let mut optim =
        ModuleOptimizer::from(masked).with_group(group.clone(), SgdConfig::new().build(), None);
    let _ = optim.step(0.1, model.clone(), grads());
    assert_eq!(named(&stats), thresholds_of(&["k.weight", "k.bias"]));

    // Named for the whole module while stepping the group: refused at the second step.
    let masked = SgdConfig::new()
        .build()
        .with_grad_mask(ratio)
        .with_param_paths(&model);
    let mut optim = ModuleOptimizer::from(SgdConfig::new().build()).with_group(group, masked, None);
    let stepped = optim.step(0.1, model.clone(), grads());
    let second = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        optim.step(0.1, stepped, grads());
    }));
    let message = *second.expect_err("refused").downcast::<String>().unwrap();
    assert!(
        message.starts_with("GradMasked was named for 6 trainable parameters but stepped 4")
            && message.contains("with_group_paths"),
        "{message}"
    );
}
