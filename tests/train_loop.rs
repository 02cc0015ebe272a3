//! burn-train integration: the mask applies to the gradient burn-train accumulated over
//! `grads_accumulation` micro-batches, once per optimizer step, through both the optimizer
//! wrapper and a `TrainStep::optimize` override with a global threshold.

mod common;

use std::sync::{Arc, Mutex};

use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use burn::module::Module;
use burn::nn::loss::{MseLoss, Reduction};
use burn::nn::{Linear, LinearConfig};
use burn::optim::lr_scheduler::constant::ConstantLr;
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::{Device, Tensor, TensorData};
use burn::train::logger::{EvaluationProgressLogger, TrainingProgressLogger};
use burn::train::metric::MetricDefinition;
use burn::train::renderer::{
    EvaluationName, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining,
};
use burn::train::{
    InferenceStep, Learner, LearnerSummary, RegressionOutput, SupervisedTraining, TrainOutput,
    TrainStep,
};
use burn_gmt::{GradMask, GradMaskConfig, MaskScope, WithGradMask};

const BATCH: usize = 4;
const MICRO_BATCHES: usize = 8;
const ACCUMULATION: usize = 4;
const LR: f64 = 0.1;
const RATIO: f64 = 0.5;

#[derive(Clone, Debug)]
struct Item {
    x: [f32; 4],
    y: [f32; 3],
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
            x: Tensor::from_data(TensorData::new(x, [n, 4]), device),
            y: Tensor::from_data(TensorData::new(y, [n, 3]), device),
        }
    }
}

fn items() -> Vec<Item> {
    (0..(BATCH * MICRO_BATCHES) as u64)
        .map(|i| {
            let v = |k: u64| {
                ((burn_gmt::kernels::random::mix64(i * 16 + k) >> 40) as f32 / (1 << 24) as f32)
                    * 2.0
                    - 1.0
            };
            Item {
                x: [v(0), v(1), v(2), v(3)],
                y: [v(4), v(5), v(6)],
            }
        })
        .collect()
}

/// The shared module-level mask of [`Model`], kept out of the module's parameters.
#[derive(Clone, Debug)]
struct SharedMask(Arc<Mutex<GradMask>>);

#[derive(Module, Debug)]
struct Model {
    hidden: Linear,
    out: Linear,
    #[module(skip)]
    mask: Option<SharedMask>,
}

impl Model {
    /// A fresh model; compared runs start from clones of one model, since Burn's RNG is
    /// shared by the tests running in parallel.
    fn new(device: &Device) -> Self {
        Self {
            hidden: LinearConfig::new(4, 8).init(device),
            out: LinearConfig::new(8, 3).init(device),
            mask: None,
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
}

impl TrainStep for Model {
    type Input = Batch;
    type Output = RegressionOutput;

    fn step(&self, batch: Batch) -> TrainOutput<RegressionOutput> {
        let item = self.forward(batch);
        TrainOutput::new(self, item.loss.backward(), item)
    }

    fn optimize(
        self,
        optim: &mut ModuleOptimizer,
        lr: ModuleLearningRate,
        grads: GradientsParams,
    ) -> Self {
        match self.mask.clone() {
            Some(mask) => {
                let grads = mask.0.lock().unwrap().apply(&self, grads);
                optim.step(lr, self, grads)
            }
            None => optim.step(lr, self, grads),
        }
    }
}

impl InferenceStep for Model {
    type Input = Batch;
    type Output = RegressionOutput;

    fn step(&self, batch: Batch) -> RegressionOutput {
        self.forward(batch)
    }
}

/// Renders nothing: the tests run headless.
struct Quiet;

impl MetricsRendererTraining for Quiet {
    fn update_train(&mut self, _state: MetricState) {}
    fn update_valid(&mut self, _state: MetricState) {}
    fn on_train_end(
        &mut self,
        _summary: Option<LearnerSummary>,
    ) -> Result<(), Box<dyn core::error::Error>> {
        Ok(())
    }
}
impl MetricsRendererEvaluation for Quiet {
    fn update_test(&mut self, _name: EvaluationName, _state: MetricState) {}
}
impl TrainingProgressLogger for Quiet {
    fn start(
        &mut self,
        _epochs: usize,
        _start: usize,
        _items: Option<usize>,
        _label: Option<&str>,
    ) {
    }
    fn update_epoch(&mut self, _epoch: usize) {}
    fn start_split(&mut self, _split: &str, _items: usize) {}
    fn update_split(&mut self, _items: usize) {}
    fn end_split(&mut self) {}
    fn end(&mut self) {}
    fn log_event_training(&mut self, _event: String) {}
}
impl EvaluationProgressLogger for Quiet {
    fn start_global_progress(&mut self, _tests: usize) {}
    fn start_test(&mut self, _name: &str, _items: usize) {}
    fn update_test_progress(&mut self, _items: usize) {}
    fn end_test(&mut self) {}
    fn end_global_progress(&mut self) {}
    fn log_event_evaluation(&mut self, _event: String) {}
}
impl MetricsRenderer for Quiet {
    fn manual_close(&mut self) {}
    fn register_metric(&mut self, _definition: MetricDefinition) {}
}

/// Trains one epoch through burn-train with gradient accumulation.
fn run_learner(model: Model, optim: ModuleOptimizer, device: &Device, name: &str) -> Model {
    let loader = || {
        DataLoaderBuilder::new(ItemBatcher)
            .batch_size(BATCH)
            .set_device(device.clone())
            .build(InMemDataset::new(items()))
    };
    let dir = std::env::temp_dir().join(format!("burn-gmt-train-{name}-{}", std::process::id()));
    let result = SupervisedTraining::new(&dir, loader(), loader())
        .grads_accumulation(ACCUMULATION)
        .num_epochs(1)
        .renderer(Box::new(Quiet))
        .launch(Learner::new(model, optim, ConstantLr::from(LR)));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        result.error.is_none(),
        "training failed: {:?}",
        result.error
    );
    result.model
}

fn batches(device: &Device) -> Vec<Batch> {
    items()
        .chunks(BATCH)
        .map(|chunk| ItemBatcher.batch(chunk.to_vec(), device))
        .collect()
}

fn weights(model: &Model) -> Vec<f64> {
    [
        model.hidden.weight.val().into_data(),
        model.out.weight.val().into_data(),
    ]
    .into_iter()
    .chain([
        model.hidden.bias.as_ref().unwrap().val().into_data(),
        model.out.bias.as_ref().unwrap().val().into_data(),
    ])
    .flat_map(|d| d.iter::<f64>().collect::<Vec<_>>())
    .collect()
}

/// The reference loop: sum the gradients of `ACCUMULATION` micro-batches, then hand them to
/// `step` once (which masks and steps).
fn manual_loop(
    mut model: Model,
    device: &Device,
    mut step: impl FnMut(Model, GradientsParams) -> Model,
) -> Model {
    for group in batches(device).chunks(ACCUMULATION) {
        let mut accumulator = GradientsAccumulator::new();
        for batch in group {
            let grads =
                GradientsParams::from_grads(model.forward(batch.clone()).loss.backward(), &model);
            accumulator.accumulate(&model, grads);
        }
        model = step(model, accumulator.grads());
    }
    model
}

#[test]
fn learner_masks_the_accumulated_gradient_once_per_step() {
    let device = Device::flex().autodiff();
    let wrapped = || ModuleOptimizer::from(SgdConfig::new().build().with_grad_mask(RATIO));
    let initial = Model::new(&device);
    let trained = run_learner(initial.clone(), wrapped(), &device, "wrapper");

    let mut optim = wrapped();
    let manual = manual_loop(initial.clone(), &device, |m, g| optim.step(LR, m, g));
    common::assert_same(
        &weights(&trained),
        &weights(&manual),
        "Learner vs manual accumulation",
    );

    // Masking every micro-batch separately (a known mistake) gives another model.
    let mut plain = ModuleOptimizer::from(SgdConfig::new().build());
    let mut per_micro = GradMaskConfig::new(RATIO).init().unwrap();
    let mut model = initial.clone();
    for group in batches(&device).chunks(ACCUMULATION) {
        let mut accumulator = GradientsAccumulator::new();
        for batch in group {
            let grads =
                GradientsParams::from_grads(model.forward(batch.clone()).loss.backward(), &model);
            accumulator.accumulate(&model, per_micro.apply(&model, grads));
        }
        model = plain.step(LR, model, accumulator.grads());
    }
    assert_ne!(
        weights(&trained),
        weights(&model),
        "per-micro-batch masking must differ"
    );
    // And so does plain SGD: the mask did something.
    let mut sgd = ModuleOptimizer::from(SgdConfig::new().build());
    let unmasked = manual_loop(initial, &device, |m, g| sgd.step(LR, m, g));
    assert_ne!(weights(&trained), weights(&unmasked));
}

#[test]
fn train_step_override_applies_a_global_mask() {
    let device = Device::flex().autodiff();
    let shared = SharedMask(Arc::new(Mutex::new(
        GradMaskConfig::new(RATIO)
            .with_scope(MaskScope::Global)
            .init()
            .unwrap(),
    )));
    let initial = Model::new(&device);
    let trained = run_learner(
        Model {
            mask: Some(shared.clone()),
            ..initial.clone()
        },
        ModuleOptimizer::from(SgdConfig::new().build()),
        &device,
        "global",
    );
    let mask = shared.0.lock().unwrap();
    assert_eq!(
        mask.steps(),
        (MICRO_BATCHES / ACCUMULATION) as u64,
        "one mask per optimizer step"
    );
    let stats = mask.last_stats();
    let total = 4 * 8 + 8 + 8 * 3 + 3;
    assert_eq!(stats.total(), total);
    assert_eq!(stats.masked(), (RATIO * total as f64).floor() as u64);
    let thresholds: Vec<Option<f64>> = stats.tensors.iter().map(|t| t.threshold).collect();
    assert!(
        thresholds
            .iter()
            .all(|t| *t == thresholds[0] && t.is_some()),
        "one global threshold: {thresholds:?}"
    );
    drop(mask);

    let mut reference_mask = GradMaskConfig::new(RATIO)
        .with_scope(MaskScope::Global)
        .init()
        .unwrap();
    let mut optim = ModuleOptimizer::from(SgdConfig::new().build());
    let manual = manual_loop(initial, &device, |m, g| {
        let g = reference_mask.apply(&m, g);
        optim.step(LR, m, g)
    });
    common::assert_same(&weights(&trained), &weights(&manual), "override vs manual");
}
