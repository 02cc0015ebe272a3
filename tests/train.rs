//! burn-train end to end: `Learner` + `SupervisedTraining` with `grads_accumulation(4)` must
//! mask the gradient *accumulated* over the micro-batches, once per optimizer step, both through
//! the optimizer wrapper (per-tensor threshold) and through a `TrainStep::optimize` override
//! holding a [`GradMask`] with one global threshold.
//!
//! Every run is compared bitwise with two references: a manual loop built from the same Burn
//! pieces (`GradientsAccumulator`, the same optimizer type, `GradMask::apply`), and for SGD an
//! independent host computation (f32 sums in burn-train's order, the sort-based
//! `burn_gmt_lab::testing::reference_mask`, `θ − lr·g` in f32) that uses neither burn-gmt nor
//! Burn's optimizer.
//!
//! Facts about burn-train 0.22.1 these tests rely on (and would catch a change of):
//! - `SingleDeviceTrainEpoch::run` (`learner/supervised/strategies/single/epoch.rs`) *sums* the
//!   micro-batch gradients with `GradientsAccumulator` (`grad.add(new)`, a left fold); it does not
//!   average them.
//! - It steps when `accumulation` micro-batches are in, **or when the epoch's last batch is**: a
//!   trailing partial group (here 2 of 4 micro-batches) still gets one optimizer step.
//! - The learning-rate scheduler advances once per optimizer step, before it.
//! - Headless: without burn's `tui` feature the default renderer is the CLI one (prints progress
//!   to stdout, reads nothing); the tests pass a renderer that does nothing, an in-memory metric
//!   logger and no application logger, so nothing is printed and only the artifact directory is
//!   touched.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::InMemDataset;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::nn::Linear;
use burn::nn::loss::{MseLoss, Reduction};
use burn::optim::lr_scheduler::constant::ConstantLr;
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::{Device, Tensor, TensorData};
use burn::train::logger::InMemoryMetricLogger;
use burn::train::{
    InferenceStep, Learner, RegressionOutput, SupervisedTraining, TrainOutput, TrainStep,
};
use burn_gmt::metric::MaskMetric;
use burn_gmt::{GradMask, GradMaskConfig, MaskScope, MaskStats, WithGradMask};
use burn_gmt_lab::testing::{Quiet, assert_same, reference_mask, seeded_linear, tempdir, uniform};

/// Items per micro-batch.
const BATCH: usize = 4;
/// Micro-batches in the epoch: not a multiple of `ACCUMULATION`, so the last group is partial.
const MICRO_BATCHES: usize = 14;
const ACCUMULATION: usize = 4;
/// Optimizer steps in the epoch: 4 + 4 + 4 + 2 micro-batches.
const STEPS: usize = MICRO_BATCHES.div_ceil(ACCUMULATION);
/// A power of two, so `g·lr` is exact and the host reference of SGD is bitwise whatever
/// precision the backend multiplies the scalar in.
const LR: f64 = 0.125;
const ADAMW_LR: f64 = 1e-2;
const RATIO: f64 = 0.5;
const D_IN: usize = 4;
const D_HIDDEN: usize = 8;
const D_OUT: usize = 3;
/// Parameter entries: two weights and two biases.
const ENTRIES: u64 = (D_IN * D_HIDDEN + D_HIDDEN + D_HIDDEN * D_OUT + D_OUT) as u64;

#[derive(Clone, Debug)]
struct Item {
    x: [f32; D_IN],
    y: [f32; D_OUT],
}

fn items() -> Vec<Item> {
    (0..(BATCH * MICRO_BATCHES) as u64)
        .map(|i| Item {
            x: std::array::from_fn(|k| uniform(1, i * 16 + k as u64, 1.0)),
            y: std::array::from_fn(|k| uniform(2, i * 16 + k as u64, 1.0)),
        })
        .collect()
}

#[derive(Clone, Debug)]
struct Batch {
    x: Tensor<2>,
    y: Tensor<2>,
}

#[derive(Clone)]
struct ItemBatcher;

impl Batcher<Item, Batch> for ItemBatcher {
    fn batch(&self, items: Vec<Item>, device: &Device) -> Batch {
        let n = items.len();
        let x: Vec<f32> = items.iter().flat_map(|i| i.x).collect();
        let y: Vec<f32> = items.iter().flat_map(|i| i.y).collect();
        Batch {
            x: Tensor::from_data(TensorData::new(x, [n, D_IN]), device),
            y: Tensor::from_data(TensorData::new(y, [n, D_OUT]), device),
        }
    }
}

/// The micro-batches in the order the (unshuffled) data loader yields them.
fn batches(device: &Device) -> Vec<Batch> {
    items()
        .chunks(BATCH)
        .map(|chunk| ItemBatcher.batch(chunk.to_vec(), device))
        .collect()
}

/// The module-level mask shared between the model (which burn-train clones and moves) and the
/// test, with the statistics of every step it masked.
#[derive(Clone, Debug)]
struct SharedMask {
    mask: Arc<Mutex<GradMask>>,
    history: Arc<Mutex<Vec<MaskStats>>>,
}

impl SharedMask {
    fn new(config: GradMaskConfig) -> Self {
        Self {
            mask: Arc::new(Mutex::new(config.init().unwrap())),
            history: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

#[derive(Module, Debug)]
struct Model {
    hidden: Linear,
    out: Linear,
    /// Not a parameter: the derive skips it in visits, maps and records.
    #[module(skip)]
    mask: Option<SharedMask>,
}

impl Model {
    fn new(device: &Device) -> Self {
        Self {
            hidden: seeded_linear(D_IN, D_HIDDEN, 10, device),
            out: seeded_linear(D_HIDDEN, D_OUT, 20, device),
            mask: None,
        }
    }

    fn with_mask(self, mask: &SharedMask) -> Self {
        Self {
            mask: Some(mask.clone()),
            ..self
        }
    }

    fn forward(&self, batch: Batch) -> RegressionOutput {
        let output = self.out.forward(self.hidden.forward(batch.x).tanh());
        let loss = MseLoss::new().forward(output.clone(), batch.y.clone(), Reduction::Mean);
        RegressionOutput {
            loss,
            output,
            targets: batch.y,
        }
    }

    fn grads(&self, batch: &Batch) -> GradientsParams {
        GradientsParams::from_grads(self.forward(batch.clone()).loss.backward(), self)
    }
}

impl TrainStep for Model {
    type Input = Batch;
    type Output = RegressionOutput;

    fn step(&self, batch: Batch) -> TrainOutput<RegressionOutput> {
        let item = self.forward(batch);
        TrainOutput::new(self, item.loss.backward(), item)
    }

    /// burn-train calls this once per optimizer step, with the accumulated gradients.
    fn optimize(
        self,
        optim: &mut ModuleOptimizer,
        lr: ModuleLearningRate,
        grads: GradientsParams,
    ) -> Self {
        let Some(shared) = self.mask.clone() else {
            return optim.step(lr, self, grads);
        };
        let mut mask = shared.mask.lock().unwrap();
        let grads = mask.apply(&self, grads);
        shared
            .history
            .lock()
            .unwrap()
            .push(mask.last_stats().clone());
        drop(mask);
        optim.step(lr, self, grads)
    }
}

impl InferenceStep for Model {
    type Input = Batch;
    type Output = RegressionOutput;

    fn step(&self, batch: Batch) -> RegressionOutput {
        self.forward(batch)
    }
}

/// One epoch of burn-train: no shuffling, fixed batch size, `grads_accumulation(4)`, constant
/// learning rate.
fn run_learner(model: Model, optim: ModuleOptimizer, lr: f64, device: &Device) -> Model {
    let loader = || loader(device);
    let dir = tempdir();
    let result = SupervisedTraining::new(&dir, loader(), loader())
        .grads_accumulation(ACCUMULATION)
        .num_epochs(1)
        .renderer(Box::new(Quiet))
        .with_metric_logger(InMemoryMetricLogger::new())
        .with_application_logger(None)
        .launch(Learner::new(model, optim, ConstantLr::from(lr)));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        result.error.is_none(),
        "training failed: {:?}",
        result.error
    );
    result.model
}

fn loader(device: &Device) -> Arc<dyn DataLoader<Batch>> {
    DataLoaderBuilder::new(ItemBatcher)
        .batch_size(BATCH)
        .set_device(device.clone())
        .build(InMemDataset::new(items()))
}

/// The manual loop: for each group of (up to) `ACCUMULATION` micro-batches, accumulate the
/// gradients as burn-train does, then hand them to `step` once.
fn manual_loop(
    mut model: Model,
    device: &Device,
    mut step: impl FnMut(Model, GradientsParams) -> Model,
) -> Model {
    for group in batches(device).chunks(ACCUMULATION) {
        let mut accumulator = GradientsAccumulator::new();
        for batch in group {
            accumulator.accumulate(&model, model.grads(batch));
        }
        model = step(model, accumulator.grads());
    }
    model
}

/// Host copies of a module's parameters, or of their gradients, in module order.
struct ReadParams<'a> {
    grads: Option<&'a GradientsParams>,
    out: Vec<(ParamId, Vec<f32>)>,
}

impl ModuleVisitor for ReadParams<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let tensor = match self.grads {
            Some(grads) => grads
                .get::<D>(param.id)
                .expect("every parameter has a gradient"),
            None => param.val(),
        };
        self.out
            .push((param.id, tensor.into_data().iter::<f32>().collect()));
    }
}

fn read(model: &Model, grads: Option<&GradientsParams>) -> Vec<(ParamId, Vec<f32>)> {
    let mut reader = ReadParams {
        grads,
        out: Vec::new(),
    };
    model.visit(&mut reader);
    reader.out
}

/// Every parameter entry of `model`, in module order.
fn weights(model: &Model) -> Vec<f64> {
    read(model, None)
        .into_iter()
        .flat_map(|(_, v)| v)
        .map(f64::from)
        .collect()
}

/// Replaces every parameter's value by host values, keeping its id.
struct WriteParams(HashMap<ParamId, Vec<f32>>);

impl ModuleMapper for WriteParams {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let values = self
            .0
            .remove(&param.id)
            .expect("a host value per parameter");
        param.map(|tensor| {
            Tensor::from_data(TensorData::new(values, tensor.dims()), &tensor.device())
                .require_grad()
        })
    }
}

/// Where the host reference masks.
#[derive(Clone, Copy, Debug)]
enum Masking {
    /// No mask: plain SGD.
    Off,
    /// The accumulated gradient, once per optimizer step (GMT).
    Accumulated(MaskScope),
    /// Each micro-batch's gradient, per tensor, before accumulating (a known mistake).
    EachMicroBatch,
}

/// How the host reference combines the micro-batch gradients.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Combine {
    /// burn-train's `GradientsAccumulator`: a left-fold sum in f32.
    Sum,
    /// The paper's Γ = (1/N) Σ ∇: what burn-train does *not* do.
    Mean,
}

/// Masks each tensor of `grads` with its own threshold; returns the thresholds.
fn mask_per_tensor(grads: &mut [Vec<f32>]) -> Vec<Option<f64>> {
    grads
        .iter_mut()
        .map(|g| {
            let values: Vec<f64> = g.iter().map(|&v| v.into()).collect();
            let (masked, _, threshold) = reference_mask(&values, RATIO);
            *g = masked.into_iter().map(|v| v as f32).collect();
            threshold
        })
        .collect()
}

/// Masks all tensors of `grads` with one threshold over their concatenation.
fn mask_global(grads: &mut [Vec<f32>]) -> Option<f64> {
    let values: Vec<f64> = grads.iter().flatten().map(|&v| v.into()).collect();
    let (masked, _, threshold) = reference_mask(&values, RATIO);
    let mut masked = masked.into_iter();
    for g in grads.iter_mut() {
        g.iter_mut()
            .for_each(|v| *v = masked.next().unwrap() as f32);
    }
    threshold
}

/// Plain SGD on the host, the gradients coming from Burn's autodiff on the current values.
/// Returns the final parameters and the thresholds of every step (one per tensor, or one).
fn host_sgd(
    initial: &Model,
    device: &Device,
    masking: Masking,
    combine: Combine,
) -> (Vec<f64>, Vec<Vec<Option<f64>>>) {
    let mut model = initial.clone();
    let mut params = read(&model, None);
    let mut thresholds = Vec::new();
    for group in batches(device).chunks(ACCUMULATION) {
        let mut sum: Option<Vec<Vec<f32>>> = None;
        for batch in group {
            let mut grads: Vec<Vec<f32>> = read(&model, Some(&model.grads(batch)))
                .into_iter()
                .map(|(_, g)| g)
                .collect();
            if let Masking::EachMicroBatch = masking {
                mask_per_tensor(&mut grads);
            }
            sum = Some(match sum {
                None => grads,
                Some(mut acc) => {
                    for (a, g) in acc.iter_mut().zip(&grads) {
                        a.iter_mut().zip(g).for_each(|(a, g)| *a += g);
                    }
                    acc
                }
            });
        }
        let mut grads = sum.unwrap();
        if combine == Combine::Mean {
            let n = group.len() as f32;
            grads.iter_mut().flatten().for_each(|g| *g /= n);
        }
        thresholds.push(match masking {
            Masking::Accumulated(MaskScope::PerTensor) => mask_per_tensor(&mut grads),
            Masking::Accumulated(MaskScope::Global) => vec![mask_global(&mut grads)],
            Masking::Accumulated(other) => panic!("no reference for {other:?}"),
            Masking::Off | Masking::EachMicroBatch => Vec::new(),
        });
        let lr = LR as f32;
        for ((_, p), g) in params.iter_mut().zip(&grads) {
            p.iter_mut().zip(g).for_each(|(p, g)| *p -= g * lr);
        }
        model = model.map(&mut WriteParams(params.iter().cloned().collect()));
    }
    let flat = params
        .into_iter()
        .flat_map(|(_, v)| v)
        .map(f64::from)
        .collect();
    (flat, thresholds)
}

/// Sizes of the parameter tensors, in module order.
fn sizes() -> Vec<u64> {
    [D_IN * D_HIDDEN, D_HIDDEN, D_HIDDEN * D_OUT, D_OUT]
        .map(|n| n as u64)
        .to_vec()
}

#[test]
fn learner_sgd_wrapper_masks_the_accumulated_gradient_once_per_step() {
    let device = Device::flex().autodiff();
    let initial = Model::new(&device);
    let wrapped = || SgdConfig::new().build().with_grad_mask(RATIO);

    let optim = wrapped();
    let stats = optim.stats_handle();
    let trained = weights(&run_learner(
        initial.clone(),
        ModuleOptimizer::from(optim),
        LR,
        &device,
    ));

    // Same Burn pieces by hand: accumulate, then one step of the same wrapped optimizer.
    let mut optim = ModuleOptimizer::from(wrapped());
    let manual = manual_loop(initial.clone(), &device, |m, g| optim.step(LR, m, g));
    assert_same(&trained, &weights(&manual), "Learner vs manual loop");

    // Independent host reference: f32 sums in burn-train's order, the sort-based reference
    // mask per tensor, θ − lr·g. Bitwise: the gradients come from the same autodiff ops on the
    // same values, sums are done in the same order in f32, the mask only zeroes entries, and
    // lr is a power of two, so the only rounding left is the one f32 subtraction on both sides.
    let (host, thresholds) = host_sgd(
        &initial,
        &device,
        Masking::Accumulated(MaskScope::PerTensor),
        Combine::Sum,
    );
    assert_same(&trained, &host, "Learner vs host reference");
    assert_eq!(thresholds.len(), STEPS);

    // The wrapper masked STEPS times (not MICRO_BATCHES times), with the reference thresholds.
    let last = stats.latest();
    assert_eq!(last.step, STEPS as u64 - 1, "one mask per optimizer step");
    assert_eq!(last.tensors.len(), 4);
    for (size, threshold) in sizes().into_iter().zip(&thresholds[STEPS - 1]) {
        let tensor = last
            .tensors
            .iter()
            .find(|t| t.total == size)
            .unwrap_or_else(|| panic!("no statistics for the tensor of {size} entries"));
        assert_eq!(tensor.masked, (RATIO * size as f64).floor() as u64);
        assert_eq!(tensor.threshold, *threshold, "tensor of {size} entries");
    }

    // The test tells GMT apart from the mistakes it guards against.
    let (each, _) = host_sgd(&initial, &device, Masking::EachMicroBatch, Combine::Sum);
    assert_ne!(
        trained, each,
        "masking each micro-batch must give another model"
    );
    let (mean, _) = host_sgd(
        &initial,
        &device,
        Masking::Accumulated(MaskScope::PerTensor),
        Combine::Mean,
    );
    assert_ne!(trained, mean, "burn-train sums the micro-batch gradients");
    let (plain, _) = host_sgd(&initial, &device, Masking::Off, Combine::Sum);
    assert_ne!(trained, plain, "the mask changed the training");
    let before = weights(&initial);
    assert_ne!(trained, before, "the model trained");
}

#[test]
fn learner_adamw_wrapper_matches_the_manual_loop() {
    let device = Device::flex().autodiff();
    let initial = Model::new(&device);
    let wrapped = || AdamWConfig::new().build().with_grad_mask(RATIO);

    let trained = weights(&run_learner(
        initial.clone(),
        ModuleOptimizer::from(wrapped()),
        ADAMW_LR,
        &device,
    ));
    // AdamW carries moments from step to step: the Learner must keep the wrapper's state.
    let mut optim = ModuleOptimizer::from(wrapped());
    let manual = manual_loop(initial.clone(), &device, |m, g| optim.step(ADAMW_LR, m, g));
    assert_same(
        &trained,
        &weights(&manual),
        "Learner vs manual loop (AdamW)",
    );

    // Masking each micro-batch, then plain AdamW on the sum: another model.
    let mut plain = ModuleOptimizer::from(AdamWConfig::new().build());
    let mut per_micro = GradMaskConfig::new(RATIO).init().unwrap();
    let mut model = initial.clone();
    for group in batches(&device).chunks(ACCUMULATION) {
        let mut accumulator = GradientsAccumulator::new();
        for batch in group {
            let grads = per_micro.apply(&model, model.grads(batch));
            accumulator.accumulate(&model, grads);
        }
        model = plain.step(ADAMW_LR, model, accumulator.grads());
    }
    assert_ne!(
        trained,
        weights(&model),
        "per-micro-batch masking must differ"
    );
    let mut plain = ModuleOptimizer::from(AdamWConfig::new().build());
    let unmasked = manual_loop(initial, &device, |m, g| plain.step(ADAMW_LR, m, g));
    assert_ne!(trained, weights(&unmasked), "the mask changed the training");
}

#[test]
fn train_step_override_applies_one_global_threshold_per_step() {
    let device = Device::flex().autodiff();
    let initial = Model::new(&device);
    let global = GradMaskConfig::new(RATIO).with_scope(MaskScope::Global);
    let shared = SharedMask::new(global.clone());
    let trained = weights(&run_learner(
        initial.clone().with_mask(&shared),
        ModuleOptimizer::from(SgdConfig::new().build()),
        LR,
        &device,
    ));

    // The reference: the same loop by hand with GradMask::apply + ModuleOptimizer::step.
    let mut mask = global.init().unwrap();
    let mut optim = ModuleOptimizer::from(SgdConfig::new().build());
    let mut manual_stats = Vec::new();
    let manual = manual_loop(initial.clone(), &device, |m, g| {
        let g = mask.apply(&m, g);
        manual_stats.push(mask.last_stats().clone());
        optim.step(LR, m, g)
    });
    assert_same(&trained, &weights(&manual), "override vs manual loop");

    // And the host reference: one threshold over the concatenated accumulated gradient.
    let (host, thresholds) = host_sgd(
        &initial,
        &device,
        Masking::Accumulated(MaskScope::Global),
        Combine::Sum,
    );
    assert_same(&trained, &host, "override vs host reference");

    // The mask really ran inside burn-train, once per optimizer step.
    assert_eq!(shared.mask.lock().unwrap().steps(), STEPS as u64);
    let history = shared.history.lock().unwrap().clone();
    assert_eq!(history.len(), STEPS, "one mask per optimizer step");
    assert_eq!(history, manual_stats, "the same statistics as by hand");
    assert_eq!(
        shared.mask.lock().unwrap().last_stats(),
        &history[STEPS - 1]
    );
    let mut uneven = false;
    for (step, (stats, threshold)) in history.iter().zip(&thresholds).enumerate() {
        assert_eq!(stats.step, step as u64);
        assert_eq!(stats.ratio, RATIO);
        assert_eq!(stats.total(), ENTRIES);
        assert_eq!(stats.masked(), (RATIO * ENTRIES as f64).floor() as u64);
        assert_eq!(stats.tensors.len(), 4);
        for t in &stats.tensors {
            assert_eq!(t.threshold, threshold[0], "step {step}: {}", t.param);
            assert!(t.threshold.is_some());
        }
        // A global threshold masks the tensors unevenly; a per-tensor one would mask
        // floor(r·n) of each.
        uneven |= stats
            .tensors
            .iter()
            .zip(sizes())
            .any(|(t, n)| t.masked != (RATIO * n as f64).floor() as u64);
    }
    assert!(uneven, "the global threshold never masked unevenly");

    // The scope matters: a per-tensor mask in the same override gives another model.
    let per_tensor = SharedMask::new(GradMaskConfig::new(RATIO));
    let per_tensor_trained = weights(&run_learner(
        initial.with_mask(&per_tensor),
        ModuleOptimizer::from(SgdConfig::new().build()),
        LR,
        &device,
    ));
    assert_eq!(per_tensor.mask.lock().unwrap().steps(), STEPS as u64);
    assert_ne!(
        trained, per_tensor_trained,
        "global vs per-tensor threshold"
    );
}

/// The library's metrics in a real `Learner` run, written by burn-train's file logger: the
/// kept share matches the count a per-tensor mask must keep (distinct gradient values, so
/// exactly `floor(r·n)` entries of each tensor go) once the first optimizer step is done, and
/// the other metrics carry the handle's statistics of the last step.
#[test]
fn learner_logs_the_mask_metrics() {
    let device = Device::flex().autodiff();
    let initial = Model::new(&device);
    let config = GradMaskConfig::new(RATIO).with_collect_norms(true);
    let optim = SgdConfig::new()
        .build()
        .with_grad_mask_config(config)
        .with_param_paths(&initial);
    let stats = optim.stats_handle();
    let dir = tempdir();
    let result = SupervisedTraining::new(&dir, loader(&device), loader(&device))
        .grads_accumulation(ACCUMULATION)
        .num_epochs(1)
        .renderer(Box::new(Quiet))
        .with_application_logger(None)
        .metric_train_numeric(MaskMetric::kept(&stats))
        .metric_train_numeric(MaskMetric::threshold(&stats))
        .metric_train_numeric(MaskMetric::non_finite(&stats))
        .metric_train_numeric(MaskMetric::kept_norm(&stats).unwrap())
        .metric_train_numeric(MaskMetric::kept(&stats).for_params("out."))
        .launch(Learner::new(
            initial,
            ModuleOptimizer::from(optim),
            ConstantLr::from(LR),
        ));
    assert!(result.error.is_none(), "{:?}", result.error);
    let logged = |name: &str| -> Vec<f64> {
        let file = dir.join("train/epoch-1").join(format!("{name}.log"));
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        // One `value,count` line per iteration, then the epoch's `mean,final`.
        text.lines()
            .filter(|line| !line.ends_with(",final"))
            .map(|line| line.split(',').next().unwrap().parse().unwrap())
            .collect()
    };

    let masked: u64 = sizes()
        .iter()
        .map(|&n| (RATIO * n as f64).floor() as u64)
        .sum();
    // As `MaskStats::kept_fraction` rounds it.
    let percent = |kept: u64, total: u64| 100.0 * (kept as f64 / total as f64);
    let expected_kept = percent(ENTRIES - masked, ENTRIES);
    let kept = logged("Mask_kept");
    assert_eq!(kept.len(), MICRO_BATCHES, "one value per iteration");
    // Until the first optimizer step nothing is masked yet.
    let stepped = kept.iter().filter(|&&k| k == expected_kept).count();
    assert!(stepped >= MICRO_BATCHES - ACCUMULATION, "{kept:?}");
    assert!(
        kept.iter().all(|&k| k == expected_kept || k == 100.0),
        "{kept:?}"
    );

    let out: u64 = sizes()[2..].iter().sum();
    let out_masked: u64 = sizes()[2..]
        .iter()
        .map(|&n| (RATIO * n as f64).floor() as u64)
        .sum();
    let out_kept = logged("Mask_kept_[out.]");
    assert_eq!(out_kept.last(), Some(&percent(out - out_masked, out)));

    let last = stats.latest();
    let names: Vec<&str> = last.tensors.iter().map(|t| t.param.as_str()).collect();
    assert_eq!(
        names,
        ["hidden.weight", "hidden.bias", "out.weight", "out.bias"]
    );
    assert_eq!(logged("Mask_non-finite").last(), Some(&0.0));
    let threshold = logged("Mask_threshold");
    assert_eq!(threshold.last(), last.mean_threshold().as_ref());
    let norm = *logged("Mask_norm_kept").last().unwrap();
    assert_eq!(norm, 100.0 * last.kept_norm_fraction().unwrap());
    // The mask keeps the largest entries: more of the norm than of the count.
    assert!(norm > expected_kept && norm < 100.0, "{norm}");
    let _ = std::fs::remove_dir_all(&dir);
}
