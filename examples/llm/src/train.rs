//! Fine-tuning the top of the model on the cached residual stream, through burn-train's
//! `Learner`: AdamW (epsilon 1e-8) on `f32` master weights, linear warm-up then cosine decay,
//! the dev split scored after every epoch, and one of the arms: plain SFT, GMT per tensor on
//! the gradient or on the update (the optimizer wrapper), a random mask of the same ratio, and
//! HFT or GMT with one global threshold (a [`GradMask`] in a
//! [`burn_gmt::MaskedModel`]). SFT, GMT, random and HFT are set up as in the GMT study
//! ([`burn_gmt_lab::methods::method_parts`]).

use std::path::Path;
use std::sync::Arc;

use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::InMemDataset;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
use burn::optim::lr_scheduler::linear::LinearLrSchedulerConfig;
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::optim::lr_scheduler::sequential::SequentialLrSchedulerConfig;
use burn::optim::{AdamWConfig, ModuleOptimizer};
use burn::tensor::{Device, Tensor};
use burn::train::metric::{AccuracyMetric, LossMetric};
use burn::train::{
    ClassificationOutput, InferenceStep, Learner, LearnerModel, SupervisedTraining, TrainOutput,
    TrainStep,
};
use burn_gmt::metric::MaskMetric;
use burn_gmt::{GradMask, GradMaskConfig, MaskStatsHandle, MaskTarget, MaskedModel, WithGradMask};
use burn_gmt_lab::methods::{Method, method_parts};
use burn_gmt_lab::progress::LineRenderer;

use crate::LlmError;
use crate::cache::{Cached, CachedBatch, CachedBatcher, answer_logits, answer_loss};
use crate::model::Top;

/// A fine-tuning arm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arm {
    /// One of the study's methods (SFT, GMT on the gradient, global GMT, random, HFT).
    Method(Method),
    /// GMT per tensor with [`MaskTarget::Update`]: the entries of the smallest-|g| fraction
    /// `r` keep their value at this step (their optimizer moments still move).
    GmtUpdate(f64),
}

impl Arm {
    /// Name in tables, logs and folder names.
    pub fn name(&self) -> String {
        match self {
            Arm::Method(m) => m.name(),
            Arm::GmtUpdate(r) => format!("GMT update r={r}"),
        }
    }

    /// A folder name for the arm's runs.
    pub fn folder(&self) -> String {
        self.name().replace([' ', '=', '(', ')'], "_")
    }

    /// The optimizer, the module-level mask and the handle on the mask statistics.
    fn parts(
        &self,
        adamw: &AdamWConfig,
        seed: u64,
        hft_stage_steps: u64,
    ) -> (ModuleOptimizer, Option<GradMask>, Option<MaskStatsHandle>) {
        match *self {
            Arm::Method(m) => method_parts(m, adamw, seed, hft_stage_steps),
            Arm::GmtUpdate(r) => {
                let wrapped = adamw
                    .build()
                    .with_grad_mask_config(GradMaskConfig::new(r).with_target(MaskTarget::Update));
                let stats = wrapped.stats_handle();
                (ModuleOptimizer::from(wrapped), None, Some(stats))
            }
        }
    }
}

/// The arms `--method NAME` selects, with mask ratio `ratio`: `all` is the five the
/// experiment compares (global GMT only by name: see the README's note).
pub fn parse_arms(name: &str, ratio: f64) -> Result<Vec<Arm>, LlmError> {
    let one = |m| vec![Arm::Method(m)];
    Ok(match name {
        "sft" => one(Method::Sft),
        "gmt" => one(Method::Gmt(ratio)),
        "gmt-update" => vec![Arm::GmtUpdate(ratio)],
        "gmt-global" => one(Method::GmtGlobal(ratio)),
        "random" => one(Method::Random(ratio)),
        "hft" => one(Method::Hft),
        "all" => vec![
            Arm::Method(Method::Sft),
            Arm::Method(Method::Gmt(ratio)),
            Arm::GmtUpdate(ratio),
            Arm::Method(Method::Random(ratio)),
            Arm::Method(Method::Hft),
        ],
        other => {
            return Err(LlmError::Usage(format!(
                "--method: unknown method `{other}` (sft, gmt, gmt-update, gmt-global, random, hft, all)"
            )));
        }
    })
}

/// The arms of `finetune --method name`: SFT first, which every other arm is compared with,
/// then the named arm (`sft` and `all` as [`parse_arms`] gives them).
pub fn finetune_arms(name: &str, ratio: f64) -> Result<Vec<Arm>, LlmError> {
    let mut arms = parse_arms(name, ratio)?;
    if arms.first() != Some(&Arm::Method(Method::Sft)) {
        arms.insert(0, Arm::Method(Method::Sft));
    }
    Ok(arms)
}

impl TrainStep for Top {
    type Input = CachedBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: CachedBatch) -> TrainOutput<ClassificationOutput> {
        let item = self.classify(batch);
        TrainOutput::new(self, item.loss.backward(), item)
    }
}

impl InferenceStep for Top {
    type Input = CachedBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: CachedBatch) -> ClassificationOutput {
        self.classify(batch)
    }
}

impl Top {
    /// The answer tokens' loss and logits of a batch.
    fn classify(&self, batch: CachedBatch) -> ClassificationOutput {
        let logits = answer_logits(self, &batch);
        ClassificationOutput {
            loss: answer_loss(logits.clone(), batch.targets.clone()),
            output: logits,
            targets: batch.targets,
        }
    }

    /// The trained weights (the blocks and the final norm, not the frozen head), flat, in
    /// module order.
    pub fn trained_weights(&self) -> Vec<f32> {
        struct Collect(Vec<f32>);
        impl ModuleVisitor for Collect {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.0.extend(
                    param
                        .val()
                        .into_data()
                        .try_into_vec_as::<f32>()
                        .expect("f32 weights"),
                );
            }
        }
        let mut collect = Collect(Vec::new());
        self.visit_trained(&mut collect);
        collect.0
    }
}

/// Schedule and sizes of a fine-tuning run.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Passes over the training examples (the dev split is scored after each).
    pub epochs: usize,
    /// Examples per optimizer step.
    pub batch: usize,
    /// Optimizer steps of linear warm-up (from a tenth of the peak rate).
    pub warmup: usize,
    /// Peak learning rate.
    pub lr: f64,
}

impl Schedule {
    /// Optimizer steps over `train` examples.
    pub fn steps(&self, train: usize) -> usize {
        self.epochs * train.div_ceil(self.batch.max(1))
    }

    /// Linear warm-up over `warmup` steps, then cosine decay to zero over the rest.
    fn lr_scheduler(&self, steps: usize) -> Result<ModuleLrScheduler, LlmError> {
        let bad = |e: String| LlmError::Usage(format!("learning-rate schedule: {e}"));
        let warmup = self.warmup.min(steps.saturating_sub(1));
        if warmup == 0 {
            return CosineAnnealingLrSchedulerConfig::new(self.lr, steps.max(1))
                .init()
                .map_err(bad);
        }
        SequentialLrSchedulerConfig::new(
            vec![
                LinearLrSchedulerConfig::new(self.lr / 10.0, self.lr, warmup).into(),
                CosineAnnealingLrSchedulerConfig::new(self.lr, steps - warmup).into(),
            ],
            vec![warmup],
        )
        .init()
        .map_err(bad)
    }
}

fn loader(
    examples: Vec<Cached>,
    batch: usize,
    shuffle: Option<u64>,
    device: &Device,
) -> Arc<dyn DataLoader<CachedBatch>> {
    let builder = DataLoaderBuilder::new(CachedBatcher)
        .batch_size(batch)
        .num_workers(1)
        .set_device(device.clone());
    match shuffle {
        Some(seed) => builder.shuffle(seed),
        None => builder,
    }
    .build(InMemDataset::new(examples))
}

/// What a fine-tuning run gives back.
pub struct Outcome {
    /// The fine-tuned top (without autodiff).
    pub top: Top,
    /// Wall time per optimizer step (validation included), in milliseconds.
    pub step_ms: f64,
    /// Fraction of gradient entries kept at the last step (1 without a mask).
    pub kept: f64,
    /// Mean training loss of each epoch.
    pub train_curve: Vec<f64>,
    /// Mean dev loss after each epoch (a mean of batch means).
    pub dev_curve: Vec<f64>,
}

/// Fine-tunes `top` with `arm` on `train` (shuffled by `seed` each epoch), scoring `dev` after
/// each epoch; logs and burn-train's files go to `dir`.
#[allow(clippy::too_many_arguments)]
pub fn finetune(
    top: Top,
    arm: Arm,
    schedule: &Schedule,
    train: &[Cached],
    dev: &[Cached],
    seed: u64,
    dir: &Path,
    device: &Device,
) -> Result<Outcome, LlmError> {
    if train.is_empty() || dev.is_empty() {
        return Err(LlmError::Usage("no training or dev example".into()));
    }
    let steps = schedule.steps(train.len());
    let adamw = AdamWConfig::new().with_epsilon(1e-8).with_weight_decay(0.0);
    // HFT stages of a quarter of the run, so the frozen half is re-drawn a few times.
    let stage_steps = (steps as u64 / 4).max(1);
    let (optim, mask, stats) = arm.parts(&adamw, seed, stage_steps);
    let final_stats = stats.clone();
    // Training runs on the autodiff device; the batches go there too.
    let train_device = device.clone().autodiff();
    let top = top.fork(&train_device).train();
    let lr = schedule.lr_scheduler(steps)?;
    let run = Run {
        dir,
        train: loader(train.to_vec(), schedule.batch, Some(seed), &train_device),
        dev: loader(dev.to_vec(), schedule.batch, None, &train_device),
        epochs: schedule.epochs,
        stats,
    };
    let start = std::time::Instant::now();
    let top = match mask {
        Some(mask) => run
            .launch(Learner::new(MaskedModel::new(top, mask), optim, lr))?
            .into_model(),
        None => run.launch(Learner::new(top, optim, lr))?,
    };
    let elapsed = start.elapsed().as_secs_f64();
    Ok(Outcome {
        top,
        step_ms: elapsed * 1e3 / steps as f64,
        kept: final_stats.map_or(1.0, |s| s.latest().kept_fraction()),
        train_curve: epoch_means(dir, "train", schedule.epochs),
        dev_curve: epoch_means(dir, "valid", schedule.epochs),
    })
}

/// One burn-train run's set-up, for either model type.
struct Run<'a> {
    dir: &'a Path,
    train: Arc<dyn DataLoader<CachedBatch>>,
    dev: Arc<dyn DataLoader<CachedBatch>>,
    epochs: usize,
    stats: Option<MaskStatsHandle>,
}

impl Run<'_> {
    /// Trains with burn-train, showing the mask statistics (kept share, mean threshold,
    /// non-finite entries) among the metrics when the arm has a mask.
    fn launch<M>(self, learner: Learner<M>) -> Result<M, LlmError>
    where
        M: LearnerModel,
        M: TrainStep<Input = CachedBatch, Output = ClassificationOutput>,
        M: InferenceStep<Input = CachedBatch, Output = ClassificationOutput>,
    {
        let label = self
            .dir
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned());
        let mut training = SupervisedTraining::new(self.dir, self.train, self.dev)
            .metrics((LossMetric::new(), AccuracyMetric::new()))
            .num_epochs(self.epochs)
            .renderer(Box::new(LineRenderer::new(label)));
        if let Some(stats) = self.stats {
            training = training
                .metric_train_numeric(MaskMetric::kept(&stats))
                .metric_train_numeric(MaskMetric::threshold(&stats))
                .metric_train_numeric(MaskMetric::non_finite(&stats));
        }
        let result = training.launch(learner);
        match result.error {
            Some(error) => Err(LlmError::Format(format!("training failed: {error}"))),
            None => Ok(result.model),
        }
    }
}

/// burn-train's logged loss (`{split}/epoch-N/Loss.log`), averaged per epoch.
fn epoch_means(dir: &Path, split: &str, epochs: usize) -> Vec<f64> {
    (1..=epochs)
        .filter_map(|epoch| {
            let text = std::fs::read_to_string(dir.join(format!("{split}/epoch-{epoch}/Loss.log")))
                .ok()?;
            let values: Vec<f64> = text
                .lines()
                .filter_map(|l| l.split(',').next()?.trim().parse().ok())
                .collect();
            (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::cache_examples;
    use crate::model::{Llama, LlamaConfig};
    use crate::task::Example;
    use crate::testing::{self, tiny_model_file};

    fn tiny_examples(n: usize) -> Vec<Example> {
        (0..n as u32)
            .map(|i| Example {
                prompt: vec![1, 40 + i % 7, 7, 200 - i % 5],
                answer: vec![3 + i % 4, 99, 2],
            })
            .collect()
    }

    #[test]
    fn one_epoch_of_each_arm_trains_the_top() {
        let device = testing::device();
        let (gguf, _, _) = tiny_model_file(5);
        let config = LlamaConfig::from_gguf(&gguf, 64).unwrap();
        let base = Llama::from_gguf(&gguf, &config, &device).unwrap();
        let cached = cache_examples(&base, &tiny_examples(8), 1, 4, &device).unwrap();
        let top = base.top(1).unwrap();
        let before = top.trained_weights();
        let schedule = Schedule {
            epochs: 1,
            batch: 4,
            warmup: 1,
            lr: 1e-2,
        };
        let dir = std::env::temp_dir().join(format!("burn-gmt-llm-test-{}", std::process::id()));
        let mut sft_moved = None;
        for arm in parse_arms("all", 0.5).unwrap() {
            let outcome = finetune(
                top.clone(),
                arm,
                &schedule,
                &cached,
                &cached[..2],
                0,
                &dir.join(arm.folder()),
                &device,
            )
            .unwrap_or_else(|e| panic!("{}: {e}", arm.name()));
            let after = outcome.top.trained_weights();
            assert_eq!(after.len(), before.len());
            assert_eq!(outcome.dev_curve.len(), 1, "{}", arm.name());
            let moved = after.iter().zip(&before).filter(|(a, b)| a != b).count();
            // SFT moves every weight with a gradient; a mask of ratio 0.5 (HFT: half the
            // units of each category) holds a good part of them still at the first step.
            match (arm, sft_moved) {
                (Arm::Method(Method::Sft), _) => {
                    assert_eq!(outcome.kept, 1.0);
                    assert!(moved > before.len() / 2, "SFT moved only {moved}");
                    sft_moved = Some(moved);
                }
                (_, Some(sft)) => {
                    assert!(outcome.kept < 0.9, "{}: kept {}", arm.name(), outcome.kept);
                    assert!(
                        moved > 0 && moved < sft,
                        "{}: moved {moved}, SFT {sft}",
                        arm.name()
                    );
                }
                (_, None) => unreachable!("SFT runs first"),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// One AdamW step of the top on the cache moves the top's weights as one step through the
    /// whole model does, with the embedding and the blocks below frozen.
    #[test]
    fn a_step_on_the_cache_is_a_step_through_the_frozen_whole() {
        use crate::cache::{CachedBatcher, answer_loss};
        use crate::task::LlmBatcher;
        use burn::data::dataloader::batcher::Batcher;
        use burn::optim::GradientsParams;
        let device = testing::device();
        let train_device = device.clone().autodiff();
        let (gguf, _, _) = tiny_model_file(6);
        let config = LlamaConfig::from_gguf(&gguf, 64).unwrap();
        let base = Llama::from_gguf(&gguf, &config, &device).unwrap();
        let examples = tiny_examples(4);
        let adamw = AdamWConfig::new().with_epsilon(1e-8).with_weight_decay(0.0);
        let lr = 1e-2;

        let cached = cache_examples(&base, &examples, 1, 4, &device).unwrap();
        let top = base.top(1).unwrap().fork(&train_device).train();
        let batch = CachedBatcher.batch(cached, &train_device);
        let loss = top.classify(batch).loss;
        let grads = GradientsParams::from_grads(loss.backward(), &top);
        let on_cache = adamw.init().step(lr, top, grads).trained_weights();

        let whole = base.clone().freeze_below(1).fork(&train_device).train();
        let batch = LlmBatcher.batch(examples, &train_device);
        let hidden = whole.hidden(batch.inputs, None);
        let [b, t, d] = hidden.dims();
        let logits = whole.logits(hidden.reshape([b * t, d]).select(0, batch.positions));
        let loss = answer_loss(logits, batch.targets);
        let grads = GradientsParams::from_grads(loss.backward(), &whole);
        let stepped = adamw.init().step(lr, whole, grads);
        let through_whole = stepped.top(1).unwrap().trained_weights();

        let start = base.top(1).unwrap().trained_weights();
        assert_eq!(on_cache.len(), through_whole.len());
        let mut moved = 0;
        for ((a, b), s) in on_cache.iter().zip(&through_whole).zip(&start) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            moved += usize::from(a != s);
        }
        assert!(moved > on_cache.len() / 2, "the step moved only {moved}");
        // Nothing below the top moved: the frozen prefix got no gradient.
        let block = start.len() - config.d_model;
        assert_eq!(
            stepped.top(2).unwrap().trained_weights()[..block],
            base.top(2).unwrap().trained_weights()[..block]
        );
    }

    /// The cached-prefix path on the real model: the top 2 of 30 blocks trained for a few
    /// steps on the cache of the 28 below; the training loss falls.
    #[test]
    #[ignore = "needs models/SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch-smollm2.sh)"]
    fn smollm2_top_blocks_learn_on_the_cache() {
        use crate::gguf::Gguf;
        use crate::task::{problem_examples, problems};
        use crate::tokenizer::Tokenizer;
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf");
        let gguf = Gguf::open(&path).unwrap();
        let tokenizer = Tokenizer::from_gguf(&gguf).unwrap();
        let device = testing::device();
        let config = LlamaConfig::from_gguf(&gguf, 128).unwrap();
        let model = Llama::from_gguf(&gguf, &config, &device).unwrap();
        let examples = problem_examples(&tokenizer, &problems(false, 32, 3).unwrap()).unwrap();
        let cached = cache_examples(&model, &examples, config.layers - 2, 16, &device).unwrap();
        let schedule = Schedule {
            epochs: 3,
            batch: 8,
            warmup: 2,
            lr: 3e-4,
        };
        let dir = std::env::temp_dir().join(format!("burn-gmt-llm-real-{}", std::process::id()));
        let outcome = finetune(
            model.top(2).unwrap(),
            Arm::Method(Method::Sft),
            &schedule,
            &cached,
            &cached[..8],
            0,
            &dir,
            &device,
        )
        .unwrap();
        let curve = &outcome.train_curve;
        assert_eq!(curve.len(), 3);
        assert!(curve[2] < 0.8 * curve[0], "training loss {curve:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn arms_parse_by_name() {
        assert_eq!(
            parse_arms("gmt", 0.2).unwrap(),
            [Arm::Method(Method::Gmt(0.2))]
        );
        assert_eq!(
            parse_arms("gmt-update", 0.3).unwrap(),
            [Arm::GmtUpdate(0.3)]
        );
        assert_eq!(parse_arms("all", 0.3).unwrap().len(), 5);
        // `finetune --method gmt` runs SFT first, which GMT is compared with.
        assert_eq!(
            finetune_arms("gmt", 0.2).unwrap(),
            [Arm::Method(Method::Sft), Arm::Method(Method::Gmt(0.2))]
        );
        assert_eq!(
            finetune_arms("sft", 0.2).unwrap(),
            [Arm::Method(Method::Sft)]
        );
        assert_eq!(
            finetune_arms("all", 0.3).unwrap(),
            parse_arms("all", 0.3).unwrap()
        );
        assert!(parse_arms("lora", 0.3).is_err());
    }

    #[test]
    fn warm_up_rises_then_cosine_decays() {
        let schedule = Schedule {
            epochs: 1,
            batch: 1,
            warmup: 4,
            lr: 1e-3,
        };
        let mut lr = schedule.lr_scheduler(20).unwrap();
        let rates: Vec<f64> = (0..20).map(|_| lr.step().base()).collect();
        assert!((rates[0] - 1e-4).abs() < 1e-12, "{rates:?}");
        assert!(rates[..4].windows(2).all(|w| w[1] > w[0]), "{rates:?}");
        assert!((rates[4] - 1e-3).abs() < 1e-9, "{rates:?}");
        assert!(rates[4..].windows(2).all(|w| w[1] < w[0]), "{rates:?}");
    }
}
