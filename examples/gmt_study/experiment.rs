//! The study's runs: pre-training (cached under a hash of its configuration), fine-tuning one
//! method from one checkpoint with one seed and learning rate, and scoring.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataloader::batcher::Batcher;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor};
use burn::train::metric::{AccuracyMetric, LossMetric};
use burn::train::{Learner, SupervisedTraining, TrainStep};
use burn_gmt::{GradMask, MaskedModel};

use burn_gmt_lab::data::{
    self, BASE, DATA_VERSION, Draw, LmBatch, LmBatcher, PAD, Problem, Split, TARGET,
};
use burn_gmt_lab::hash::stable_hash_bytes;
use burn_gmt_lab::methods::Method;
use burn_gmt_lab::model::{LmConfig, TinyLm, answer_loss};
use burn_gmt_lab::progress;
use burn_gmt_lab::random::{Rng, SplitMix64, stream};
use burn_gmt_lab::testing::param_values;
use burn_gmt_lab::timing::{Timing, median, ms, time_once};

/// Optimizer steps of each fine-tuning run left out of the step time: the first builds the
/// AdamW moments and, on a GPU, compiles kernels (as in the step benchmark).
pub const WARM_UP_STEPS: usize = 3;

/// Sizes, schedule and design of one preset.
#[derive(Debug, Clone)]
pub struct Preset {
    pub name: &'static str,
    pub lm: LmConfig,
    /// Pre-training on the base skills (each checkpoint from its own seed).
    pub pretrain_items: usize,
    pub pretrain_epochs: usize,
    pub pretrain_lr: f64,
    pub batch: usize,
    /// Fine-tuning set: size, fraction of wrong answers, and the digits its inputs use in
    /// their first `restricted` places (`0..digit_limit`; dev and test inputs use all ten
    /// everywhere).
    pub finetune_items: usize,
    pub noise: f64,
    pub digit_limit: usize,
    pub restricted: usize,
    pub finetune_epochs: usize,
    pub dev_items: usize,
    pub test_items: usize,
    /// Base-skill items scored for retention (all skills in turn).
    pub base_items: usize,
    /// AdamW's epsilon in fine-tuning (Burn's default is 1e-5; the paper's stack uses 1e-8).
    pub adam_epsilon: f64,
    /// Learning rates tried for every method, ×√2 apart.
    pub lr_grid: Vec<f64>,
    /// How many times a method's grid may be extended by a ×√2 step where its choice lands
    /// on an edge.
    pub max_grid_extensions: usize,
    /// The grid runs on the first `grid_checkpoints` checkpoints with the `selection_seed`,
    /// which no test run uses (test seeds are `0..seeds`).
    pub grid_checkpoints: usize,
    pub selection_seed: u64,
    /// The test runs: every checkpoint × every seed.
    pub checkpoints: usize,
    pub seeds: u64,
    /// HFT re-draws its frozen half every `hft_stage_epochs` epochs.
    pub hft_stage_epochs: usize,
    pub methods: Vec<Method>,
}

impl Preset {
    pub fn finetune_steps(&self) -> usize {
        self.finetune_items.div_ceil(self.batch) * self.finetune_epochs
    }

    pub fn pretrain_steps(&self) -> usize {
        self.pretrain_items.div_ceil(self.batch) * self.pretrain_epochs
    }

    /// Optimizer steps of one HFT stage.
    pub fn hft_stage_steps(&self) -> usize {
        self.finetune_items.div_ceil(self.batch) * self.hft_stage_epochs
    }
}

/// The fixed evaluation sets, the same for every run.
pub struct EvalSets {
    /// Target task, clean, every digit: chooses the learning rate.
    pub dev: Vec<Problem>,
    /// Target task, clean, every digit: the final target score.
    pub test: Vec<Problem>,
    /// The test items with a digit where the fine-tuning inputs never have it.
    pub test_shifted: Vec<Problem>,
    /// Base skills, clean: retention.
    pub base: Vec<Problem>,
}

impl EvalSets {
    pub fn new(preset: &Preset) -> Self {
        let test = Draw::clean(TARGET, Split::Test, preset.test_items, 2).problems();
        let test_shifted = test
            .iter()
            .filter(|p| {
                p.digits()[..preset.restricted]
                    .iter()
                    .any(|&d| d >= preset.digit_limit)
            })
            .cloned()
            .collect();
        Self {
            dev: Draw::clean(TARGET, Split::Dev, preset.dev_items, 3).problems(),
            test,
            test_shifted,
            base: Draw::clean(BASE, Split::Test, preset.base_items, 1).problems(),
        }
    }
}

/// The fine-tuning set of seed `seed`: noisy, inputs restricted as the preset says.
pub fn finetune_set(preset: &Preset, seed: u64) -> Vec<Problem> {
    Draw {
        tasks: TARGET,
        split: Split::Train,
        count: preset.finetune_items,
        digit_limit: preset.digit_limit,
        restricted: preset.restricted,
        noise: preset.noise,
        seed: 100 + seed,
    }
    .problems()
}

/// A pre-trained model on disk and its scores before fine-tuning.
pub struct Checkpoint {
    pub path: PathBuf,
    /// Exact match on the base skills.
    pub base: f64,
    /// Exact match on the target test split (before any fine-tuning).
    pub target: f64,
    /// Its parameters, flat in module order (θ₀ of the mechanism's distances).
    pub params: Vec<f64>,
    /// Whether it came from the cache.
    pub cached: bool,
}

/// Everything that decides what pre-training `index` produces: the cache key.
fn pretrain_description(preset: &Preset, index: usize, device_name: &str) -> String {
    format!(
        "gmt_study pre-training, data v{DATA_VERSION}\nmodel {:?}\nskills {BASE:?}\nitems {} \
         (train split, seed {})\nepochs {}\nbatch {}\nAdamW weight decay 0.01, cosine from lr \
         {}\ninit seed {index}\ndevice {device_name}\n",
        preset.lm,
        preset.pretrain_items,
        10 + index,
        preset.pretrain_epochs,
        preset.batch,
        preset.pretrain_lr,
    )
}

/// Pre-trained checkpoint `index`: loaded from `cache` when a checkpoint of the same
/// configuration is there (its description, stored beside it, must match in full), else
/// trained through burn-train and stored.
pub fn checkpoint(
    preset: &Preset,
    index: usize,
    device: &Device,
    device_name: &str,
    cache: &Path,
    sets: &EvalSets,
) -> Checkpoint {
    let description = pretrain_description(preset, index, device_name);
    let hash = stable_hash_bytes(description.as_bytes());
    let path = cache.join(format!("pretrained-{hash:016x}.bpk"));
    let described = path.with_extension("txt");
    let cached =
        path.exists() && std::fs::read_to_string(&described).is_ok_and(|d| d == description);
    if cached {
        println!("checkpoint {index}: cached {}", path.display());
    } else {
        println!(
            "checkpoint {index}: pre-training on the base skills ({} items, {} epochs)",
            preset.pretrain_items, preset.pretrain_epochs
        );
        let train_device = device.clone().autodiff();
        train_device.seed(index as u64);
        let lm = preset.lm.init(&train_device);
        let train_set =
            Draw::clean(BASE, Split::Train, preset.pretrain_items, 10 + index as u64).problems();
        let lm = pretrain(
            preset,
            &cache.join(format!("runs/pretrain-{index}")),
            lm,
            train_set,
            sets.base[..256.min(sets.base.len())].to_vec(),
            index as u64,
            &train_device,
        );
        std::fs::create_dir_all(cache).expect("create the checkpoint cache");
        lm.save_file(&path)
            .expect("save the pre-trained checkpoint");
        std::fs::write(&described, &description).expect("describe the checkpoint");
    }
    let lm = load(preset, &path, device);
    Checkpoint {
        base: evaluate(&lm, &sets.base, device).0,
        target: evaluate(&lm, &sets.test, device).0,
        params: param_values(&lm).concat(),
        path,
        cached,
    }
}

/// The model of a checkpoint, on `device`.
pub fn load(preset: &Preset, path: &Path, device: &Device) -> TinyLm {
    preset.lm.init(device).load_file(path)
}

fn loader(
    problems: Vec<Problem>,
    batch: usize,
    seed: u64,
    device: &Device,
) -> Arc<dyn burn::data::dataloader::DataLoader<data::LmBatch>> {
    DataLoaderBuilder::new(LmBatcher)
        .batch_size(batch)
        .shuffle(seed)
        .num_workers(1)
        .set_device(device.clone())
        .build(data::dataset(problems))
}

/// Pre-training through burn-train's `Learner` (AdamW, cosine schedule).
fn pretrain(
    preset: &Preset,
    dir: &Path,
    lm: TinyLm,
    train_set: Vec<Problem>,
    valid_set: Vec<Problem>,
    seed: u64,
    device: &Device,
) -> TinyLm {
    let scheduler =
        CosineAnnealingLrSchedulerConfig::new(preset.pretrain_lr, preset.pretrain_steps())
            .init()
            .expect("valid schedule");
    let learner = Learner::new(
        lm,
        AdamWConfig::new().with_weight_decay(0.01).init(),
        scheduler,
    );
    let training = SupervisedTraining::new(
        dir,
        loader(train_set, preset.batch, seed, device),
        loader(valid_set, 256, seed, device),
    )
    .metrics((LossMetric::new(), AccuracyMetric::new().with_pad_token(PAD)))
    .num_epochs(preset.pretrain_epochs)
    .renderer(Box::new(progress::LineRenderer::new(format!(
        "pretrain-{seed}"
    ))));
    let result = training.launch(learner);
    if let Some(error) = result.error {
        panic!("pre-training failed: {error}");
    }
    result.model
}

/// One fine-tuning run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunSpec {
    pub checkpoint: usize,
    pub seed: u64,
    pub method: Method,
    pub lr: f64,
}

/// What a fine-tuning run measured.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Dev exact match after each epoch.
    pub dev_curve: Vec<f64>,
    /// Target exact match and loss on the test split, at the end of fine-tuning.
    pub target: f64,
    pub target_loss: f64,
    /// Target exact match on the test items with a digit fine-tuning never showed.
    pub target_shifted: f64,
    /// Base-skill exact match at the end, and as a fraction of the checkpoint's.
    pub base: f64,
    pub retention: f64,
    /// Median optimizer step (forward, backward, mask, update), device synchronised, after
    /// the warm-up: wall clock and process CPU time, in ms.
    pub step_ms: f64,
    pub step_cpu_ms: f64,
    /// What the mask did over the run.
    pub mechanism: Mechanism,
    /// The parameters at the end, flat in module order.
    pub params: Vec<f64>,
}

/// What a run's mask did (SFT: nothing masked, everything kept).
#[derive(Debug, Clone, Copy)]
pub struct Mechanism {
    /// Mean over the steps of the fraction of gradient entries kept.
    pub kept: f64,
    /// Mean over the steps of the share of the gradient's L2 norm kept (the library's
    /// `MaskStats::kept_norm_fraction`).
    pub kept_norm: f64,
    /// Share of the parameter entries masked in more than 90% of the steps.
    pub persistently_masked: f64,
}

/// The mask observer's threshold: an entry masked in more than this share of the steps is
/// held (nearly) still by the mask.
pub const PERSISTENT_SHARE: f64 = 0.9;

impl RunResult {
    pub fn dev_final(&self) -> f64 {
        *self.dev_curve.last().expect("at least one epoch")
    }
}

/// Fisher–Yates, drawing from `rng`.
fn shuffle(order: &mut [usize], rng: &mut SplitMix64) {
    for i in (1..order.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
}

/// The model a run trains: alone (SFT), or with its mask through `burn_gmt::MaskedModel`.
// One value per run, moved once a step: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Trainee {
    Plain(TinyLm),
    Masked(MaskedModel<TinyLm>),
}

impl Trainee {
    fn lm(&self) -> &TinyLm {
        match self {
            Trainee::Plain(lm) => lm,
            Trainee::Masked(model) => model.model(),
        }
    }

    fn into_lm(self) -> TinyLm {
        match self {
            Trainee::Plain(lm) => lm,
            Trainee::Masked(model) => model.into_model(),
        }
    }

    /// One optimizer step on `batch` through `TrainStep` (the path burn-train takes), and,
    /// for a masked model, the gradients before masking (tensors shared with the step's;
    /// the mask copies a shared buffer before writing it).
    fn step(
        self,
        optim: &mut ModuleOptimizer,
        lr: f64,
        batch: LmBatch,
    ) -> (Self, Option<GradientsParams>) {
        match self {
            Trainee::Plain(lm) => {
                let output = TrainStep::step(&lm, batch);
                (
                    Trainee::Plain(lm.optimize(optim, lr.into(), output.grads)),
                    None,
                )
            }
            Trainee::Masked(model) => {
                let output = TrainStep::step(&model, batch);
                let seen = share_grads(model.model(), &output.grads);
                let model = model.optimize(optim, lr.into(), output.grads);
                (Trainee::Masked(model), Some(seen))
            }
        }
    }
}

/// A second `GradientsParams` holding the same tensors as `grads` for `module`'s parameters.
fn share_grads(module: &TinyLm, grads: &GradientsParams) -> GradientsParams {
    struct Share<'a> {
        from: &'a GradientsParams,
        to: GradientsParams,
    }
    impl ModuleVisitor for Share<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(grad) = self.from.get::<D>(param.id) {
                self.to.register(param.id, grad);
            }
        }
    }
    let mut share = Share {
        from: grads,
        to: GradientsParams::new(),
    };
    module.visit(&mut share);
    share.to
}

/// Each float parameter's gradient in `grads` as host values, in module order (`None`: no
/// gradient), with the parameter's entry count.
fn grad_values(module: &TinyLm, grads: &GradientsParams) -> Vec<(usize, Option<Vec<f32>>)> {
    struct Read<'a> {
        grads: &'a GradientsParams,
        values: Vec<(usize, Option<Vec<f32>>)>,
    }
    impl ModuleVisitor for Read<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let grad = self.grads.get::<D>(param.id);
            self.values.push((
                param.shape().num_elements(),
                grad.map(|g| g.into_data().iter::<f32>().collect()),
            ));
        }
    }
    let mut read = Read {
        grads,
        values: Vec::new(),
    };
    module.visit(&mut read);
    read.values
}

/// Watches a run's mask: a second `GradMask` of the same configuration (the same strategy,
/// seed and step count, so the same draws and thresholds) masks the gradients the training
/// mask saw, and each entry's masked steps are counted. An entry is masked at a step when
/// its gradient was not zero and the mask made it zero (or dropped the tensor's gradient,
/// as HFT does for a frozen tensor).
struct MaskObserver {
    mask: GradMask,
    masked_steps: Vec<u32>,
    steps: u32,
    kept_sum: f64,
    kept_norm_sum: f64,
}

impl MaskObserver {
    fn new(method: Method, seed: u64, hft_stage_steps: u64, entries: usize) -> Option<Self> {
        let config = method.mask_config(seed, hft_stage_steps)?;
        Some(Self {
            mask: config
                .with_collect_norms(true)
                .init()
                .expect("valid mask config"),
            masked_steps: vec![0; entries],
            steps: 0,
            kept_sum: 0.0,
            kept_norm_sum: 0.0,
        })
    }

    /// One step: `grads` are what the training mask saw, `trained_kept` what it kept.
    fn observe(&mut self, lm: &TinyLm, grads: GradientsParams, trained_kept: u64) {
        let before = grad_values(lm, &grads);
        let masked = self.mask.apply(lm, grads);
        let stats = self.mask.last_stats();
        assert_eq!(
            stats.kept(),
            trained_kept,
            "the observing mask must mask as the training mask does"
        );
        self.steps += 1;
        self.kept_sum += stats.kept_fraction();
        self.kept_norm_sum += stats.kept_norm_fraction().unwrap_or(1.0);
        let after = grad_values(lm, &masked);
        let mut offset = 0;
        for ((len, before), (_, after)) in before.iter().zip(&after) {
            if let Some(before) = before {
                let counts = &mut self.masked_steps[offset..offset + len];
                match after {
                    Some(after) => {
                        for ((count, b), a) in counts.iter_mut().zip(before).zip(after) {
                            *count += u32::from(*b != 0.0 && *a == 0.0);
                        }
                    }
                    None => {
                        for (count, b) in counts.iter_mut().zip(before) {
                            *count += u32::from(*b != 0.0);
                        }
                    }
                }
            }
            offset += len;
        }
    }

    fn mechanism(&self) -> Mechanism {
        let steps = f64::from(self.steps.max(1));
        let persistent = self
            .masked_steps
            .iter()
            .filter(|&&c| f64::from(c) > PERSISTENT_SHARE * steps)
            .count();
        Mechanism {
            kept: self.kept_sum / steps,
            kept_norm: self.kept_norm_sum / steps,
            persistently_masked: persistent as f64 / self.masked_steps.len() as f64,
        }
    }
}

/// Fine-tunes checkpoint `spec.checkpoint` with `spec.method` at a constant learning rate:
/// AdamW (weight decay 0.01, the preset's epsilon), one optimizer step per batch through the
/// model's `TrainStep` (the path burn-train takes), the dev split scored after every epoch.
pub fn finetune(
    preset: &Preset,
    checkpoints: &[Checkpoint],
    sets: &EvalSets,
    spec: RunSpec,
    device: &Device,
) -> RunResult {
    let train_device = device.clone().autodiff();
    let train_set = finetune_set(preset, spec.seed);
    let mut optim = AdamWConfig::new()
        .with_weight_decay(0.01)
        .with_epsilon(preset.adam_epsilon as f32)
        .init();
    let hft_stage_steps = preset.hft_stage_steps() as u64;
    let checkpoint = &checkpoints[spec.checkpoint];
    let lm = load(preset, &checkpoint.path, &train_device);
    let mut trainee = Some(match spec.method.mask_config(spec.seed, hft_stage_steps) {
        None => Trainee::Plain(lm),
        Some(config) => Trainee::Masked(MaskedModel::new(
            lm,
            config.init().expect("valid mask config"),
        )),
    });
    let mut observer = MaskObserver::new(
        spec.method,
        spec.seed,
        hft_stage_steps,
        checkpoint.params.len(),
    );
    let mut rng = stream(0x5EED_0000 ^ spec.seed);
    let mut order: Vec<usize> = (0..train_set.len()).collect();
    let mut timings: Vec<Timing> = Vec::new();
    let mut dev_curve = Vec::new();
    for _ in 0..preset.finetune_epochs {
        shuffle(&mut order, &mut rng);
        for chunk in order.chunks(preset.batch) {
            let items: Vec<Problem> = chunk.iter().map(|&i| train_set[i].clone()).collect();
            let mut seen = None;
            let timing = time_once(
                device,
                &mut || LmBatcher.batch(items.clone(), &train_device),
                &mut |batch| {
                    let current = trainee.take().expect("the model");
                    let (next, grads) = current.step(&mut optim, spec.lr, batch);
                    trainee = Some(next);
                    seen = grads;
                },
            );
            timings.push(timing);
            // Outside the timed step: the observer's work is the study's, not the method's.
            if let (Some(observer), Some(Trainee::Masked(model)), Some(grads)) =
                (observer.as_mut(), trainee.as_ref(), seen)
            {
                observer.observe(model.model(), grads, model.mask().last_stats().kept());
            }
        }
        let lm = trainee.as_ref().expect("the model").lm().valid();
        dev_curve.push(evaluate(&lm, &sets.dev, device).0);
    }
    let lm = trainee.expect("the model").into_lm().valid();
    let (target, target_loss) = evaluate(&lm, &sets.test, device);
    let (target_shifted, _) = evaluate(&lm, &sets.test_shifted, device);
    let (base, _) = evaluate(&lm, &sets.base, device);
    let steady = &timings[WARM_UP_STEPS.min(timings.len() - 1)..];
    RunResult {
        dev_curve,
        target,
        target_loss,
        target_shifted,
        base,
        retention: base / checkpoint.base.max(f64::MIN_POSITIVE),
        step_ms: ms(median(steady.iter().map(|t| t.wall).collect())),
        step_cpu_ms: ms(median(steady.iter().map(|t| t.cpu).collect())),
        mechanism: observer.map_or(
            Mechanism {
                kept: 1.0,
                kept_norm: 1.0,
                persistently_masked: 0.0,
            },
            |o| o.mechanism(),
        ),
        params: param_values(&lm).concat(),
    }
}

/// Exact match (every answer token right under greedy decoding; with a fixed-length answer,
/// teacher-forced argmax over the answer equals greedy decoding) and mean answer loss.
pub fn evaluate(lm: &TinyLm, problems: &[Problem], device: &Device) -> (f64, f64) {
    let mut correct = 0usize;
    let mut loss_sum = 0.0;
    if problems.is_empty() {
        return (0.0, 0.0);
    }
    for chunk in problems.chunks(256) {
        let batch = LmBatcher.batch(chunk.to_vec(), device);
        let targets = batch.targets.clone();
        // One forward pass gives both the loss and the argmax.
        let logits = lm.forward(batch.inputs);
        let predicted: Tensor<2, Int> = logits.clone().argmax(2).squeeze_dim(2);
        let output = answer_loss(logits, batch.targets);
        loss_sum += output.loss.into_scalar::<f64>() * chunk.len() as f64;
        let predicted: Vec<i64> = predicted.into_data().iter::<i64>().collect();
        let targets: Vec<i64> = targets.into_data().iter::<i64>().collect();
        let len = data::SEQ_LEN - 1;
        for row in 0..chunk.len() {
            let range = row * len..(row + 1) * len;
            correct += usize::from(
                predicted[range.clone()]
                    .iter()
                    .zip(&targets[range])
                    .all(|(p, t)| *t == PAD as i64 || p == t),
            );
        }
    }
    (
        correct as f64 / problems.len() as f64,
        loss_sum / problems.len() as f64,
    )
}

/// `LmConfig` of a preset, shown in the protocol.
pub fn describe_model(lm: &LmConfig) -> String {
    format!(
        "{} pre-norm layers, d_model {}, {} heads, FFN {}",
        lm.layers, lm.d_model, lm.heads, lm.d_ff
    )
}
