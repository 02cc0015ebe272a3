//! Multi-device training with burn-gmt: burn-train's DDP and multi-device strategies.
//!
//! What burn-train 0.22.1 does, and these tests reproduce on the CPU:
//! - **DDP** (`ExecutionStrategy::ddp`) gives each worker thread `learner.clone()`, forked to
//!   its device; gradients are all-reduced during `backward()`, so every worker steps its own
//!   replica with the same summed gradients. Cloning a `ModuleOptimizer` shares its optimizers
//!   (`Arc`), so one `GradMasked` serves every worker. Burn cannot run DDP itself on the CPU:
//!   Flex and NdArray leave `DistributedOps::all_reduce` `unimplemented!()`, and CubeCL's wgpu
//!   server answers `all_reduce` with "no device transport" (only CUDA implements it). The
//!   tests therefore run the replicas as DDP does (a clone per thread, forked, stepped with the
//!   all-reduced gradients) and check they stay identical to each other and to one device.
//! - **Multi-device, sharded optimizer** (`MultiDevice(.., OptimSharded)`) calls
//!   `TrainStep::optimize_multi` with `MultiGradientsParams`: `GradMask::apply_multi` masks
//!   exactly as `apply` does on the summed gradients, on two devices of two CPU backends.
//! - **Checkpoints**: a `GradMask` field is saved with the model, so a run resumed from a
//!   burn-train checkpoint masks exactly as an uninterrupted one; `MaskedModel` trains (and
//!   resumes) bit for bit as a model stepping its own mask field.

use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::Linear;
use burn::nn::loss::{MseLoss, Reduction};
use burn::optim::lr_scheduler::constant::ConstantLr;
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};
use burn::train::logger::InMemoryMetricLogger;
use burn::train::{
    InferenceStep, Learner, LearnerModel, RegressionOutput, SupervisedTraining, TrainOutput,
    TrainStep,
};
use burn_gmt::{
    GradMask, GradMaskConfig, MaskScope, MaskStrategy, MaskTarget, MaskedModel, WithGradMask,
};
use burn_gmt_lab::testing::{self, Quiet, param_values, seeded_linear, tempdir, uniform};

const D_IN: usize = 6;
const D_HIDDEN: usize = 12;
const D_OUT: usize = 3;
/// Items of one replica's half of a step's batch.
const HALF: usize = 4;
const STEPS: usize = 6;
const LR: f64 = 1e-2;

#[derive(Module, Debug)]
struct Net {
    hidden: Linear,
    out: Linear,
}

/// A replica of the model: the network, and the module-level mask when that is how it is
/// masked (saved with the model, one per replica).
#[derive(Module, Debug)]
struct Replica {
    net: Net,
    mask: Option<GradMask>,
}

fn net(device: &Device) -> Net {
    Net {
        hidden: seeded_linear(D_IN, D_HIDDEN, 10, device),
        out: seeded_linear(D_HIDDEN, D_OUT, 20, device),
    }
}

/// Inputs and targets of `count` items from item `first` on.
fn batch(first: usize, count: usize, device: &Device) -> (Tensor<2>, Tensor<2>) {
    let values = |seed, width: usize| -> Vec<f32> {
        (first..first + count)
            .flat_map(|i| (0..width).map(move |k| uniform(seed, (i * 16 + k) as u64, 1.0)))
            .collect()
    };
    (
        Tensor::from_data(TensorData::new(values(1, D_IN), [count, D_IN]), device),
        Tensor::from_data(TensorData::new(values(2, D_OUT), [count, D_OUT]), device),
    )
}

impl Net {
    fn loss(&self, (x, y): (Tensor<2>, Tensor<2>)) -> Tensor<1> {
        let output = self.out.forward(self.hidden.forward(x).tanh());
        MseLoss::new().forward(output, y, Reduction::Mean)
    }

    /// What a DDP replica holds after the all-reduce of step `step`: the sum of both replicas'
    /// gradients, each on its half of the batch, added in the same order on every replica.
    fn all_reduced_grads(&self, step: usize, device: &Device) -> GradientsParams {
        let half = |r: usize| {
            let loss = self.loss(batch((2 * step + r) * HALF, HALF, device));
            GradientsParams::from_grads(loss.backward(), self)
        };
        let (a, b) = (half(0), half(1));
        let mut sum = SumGrads {
            a,
            b,
            out: GradientsParams::new(),
        };
        self.visit(&mut sum);
        sum.out
    }
}

struct SumGrads {
    a: GradientsParams,
    b: GradientsParams,
    out: GradientsParams,
}

impl ModuleVisitor for SumGrads {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let (a, b) = (self.a.remove::<D>(param.id), self.b.remove::<D>(param.id));
        self.out.register::<D>(param.id, a.unwrap() + b.unwrap());
    }
}

/// How the mask reaches the optimizer.
#[derive(Clone, Copy, Debug)]
enum Path {
    /// `GradMasked`, inside the `ModuleOptimizer`.
    Wrapper,
    /// A `GradMask` field of the model, applied in the training step.
    Module,
}

fn setup(config: &GradMaskConfig, path: Path, device: &Device) -> (Replica, ModuleOptimizer) {
    let adamw = AdamWConfig::new().with_weight_decay(0.1);
    match path {
        Path::Wrapper => (
            Replica {
                net: net(device),
                mask: None,
            },
            ModuleOptimizer::from(adamw.build().with_grad_mask_config(config.clone())),
        ),
        Path::Module => (
            Replica {
                net: net(device),
                mask: Some(config.init().unwrap()),
            },
            adamw.init(),
        ),
    }
}

/// One optimizer step of a replica, as its `TrainStep::optimize` would take it.
fn train_step(
    model: Replica,
    optim: &mut ModuleOptimizer,
    step: usize,
    device: &Device,
) -> Replica {
    let grads = model.net.all_reduced_grads(step, device);
    train_step_with(model, optim, grads)
}

/// `STEPS` steps of one replica on `device`, forked there as a DDP worker forks its clone.
fn run(model: Replica, mut optim: ModuleOptimizer, device: &Device) -> Replica {
    let mut model = model.fork(device);
    for step in 0..STEPS {
        model = train_step(model, &mut optim, step, device);
    }
    model
}

/// The parameters of two replicas (threads, as DDP's workers are), each a clone of the
/// learner's model and optimizer, and of one device stepping alone.
fn replicas_and_single(config: &GradMaskConfig, path: Path) -> (Vec<Replica>, Replica) {
    let device = Device::flex().autodiff();
    let (model, optim) = setup(config, path, &device);
    let replicas = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let (model, optim, device) = (model.clone(), optim.clone(), device.clone());
                scope.spawn(move || run(model, optim, &device))
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().expect("replica"))
            .collect()
    });
    let (model, optim) = setup(config, path, &device);
    (replicas, run(model, optim, &device))
}

fn configs() -> Vec<(String, GradMaskConfig, Vec<Path>)> {
    let mut out = Vec::new();
    for strategy in testing::strategies(7, 2) {
        // HFT freezes (Update only) by block, which only the module-level mask sees.
        let (targets, paths) = match strategy {
            MaskStrategy::Hft { .. } => (vec![MaskTarget::Update], vec![Path::Module]),
            _ => (
                vec![MaskTarget::Gradient, MaskTarget::Update],
                vec![Path::Wrapper, Path::Module],
            ),
        };
        for target in targets {
            for warmup in [0, 3] {
                let config = GradMaskConfig::new(0.5)
                    .with_strategy(strategy)
                    .with_target(target)
                    .with_warmup_steps(warmup);
                let name = format!("{strategy:?} {target:?} warm-up {warmup}");
                out.push((name, config, paths.clone()));
            }
        }
    }
    let global = GradMaskConfig::new(0.5).with_scope(MaskScope::Global);
    out.push(("global".into(), global, vec![Path::Module]));
    out
}

/// Every DDP replica ends with the same parameters as one device stepping alone, bitwise,
/// for every strategy, target and warm-up, through the wrapper and the module-level mask.
#[test]
fn ddp_replicas_mask_alike_and_match_one_device() {
    let device = Device::flex().autodiff();
    let unmasked = param_values(&run(
        setup(&GradMaskConfig::new(0.0), Path::Module, &device).0,
        AdamWConfig::new().with_weight_decay(0.1).init(),
        &device,
    ));
    for (name, config, paths) in configs() {
        for path in paths {
            let context = format!("{name} through {path:?}");
            let (replicas, single) = replicas_and_single(&config, path);
            let expected = param_values(&single.net);
            for (r, replica) in replicas.iter().enumerate() {
                assert_eq!(
                    param_values(&replica.net),
                    expected,
                    "{context}: replica {r}"
                );
                if let Some(mask) = &replica.mask {
                    // Each replica's own counter, stepped once per optimizer step.
                    assert_eq!(mask.steps(), STEPS as u64, "{context}: replica {r}");
                    assert!(mask.last_stats().masked() > 0, "{context}: replica {r}");
                }
            }
            // The mask did change the training.
            assert_ne!(expected, unmasked, "{context}: masked like plain AdamW");
        }
    }
}

/// The wrapper keeps statistics per replica: each worker thread's own, alike across replicas.
#[test]
fn wrapper_statistics_are_kept_per_replica() {
    let device = Device::flex().autodiff();
    let masked = AdamWConfig::new().build().with_grad_mask(0.5);
    let handle = masked.stats_handle();
    let optim = ModuleOptimizer::from(masked);
    let model = Replica {
        net: net(&device),
        mask: None,
    };
    // DDP's workers step in lockstep (an all-reduce at every step), so each runs while the
    // other does; a thread that has ended would leave its replica to the next new one.
    let both_stepped = std::sync::Barrier::new(2);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            let (model, optim, device) = (model.clone(), optim.clone(), device.clone());
            let both_stepped = &both_stepped;
            scope.spawn(move || {
                run(model, optim, &device);
                both_stepped.wait();
            });
        }
    });
    let replicas = handle.replicas();
    assert_eq!(replicas.len(), 2);
    for stats in &replicas {
        assert_eq!(stats.step, STEPS as u64 - 1);
        // Four tensors, numbered 0..4 in module order by each replica.
        let names: Vec<&str> = stats.tensors.iter().map(|t| t.param.as_str()).collect();
        assert_eq!(names, ["stream 0", "stream 1", "stream 2", "stream 3"]);
        let entries = (D_IN * D_HIDDEN + D_HIDDEN + D_HIDDEN * D_OUT + D_OUT) as u64;
        assert_eq!(stats.total(), entries);
    }
    assert_eq!(replicas[0], replicas[1]);
    assert!(replicas.contains(&handle.latest()));
}

/// Marks every parameter as DDP does (`set_distributed`, done by burn-train's `grad_sharded`).
#[cfg(any(feature = "wgpu", feature = "cuda", feature = "rocm"))]
struct MarkDistributed;

#[cfg(any(feature = "wgpu", feature = "cuda", feature = "rocm"))]
impl burn::module::ModuleMapper for MarkDistributed {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        Param::from_mapped_value(id, tensor.set_distributed(id), mapper)
    }
}

#[cfg(any(feature = "wgpu", feature = "cuda", feature = "rocm"))]
struct AllDistributed(Vec<bool>);

#[cfg(any(feature = "wgpu", feature = "cuda", feature = "rocm"))]
impl ModuleVisitor for AllDistributed {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        self.0
            .push(value.is_distributed() && value.is_require_grad());
    }
}

/// `MaskTarget::Update` puts back every parameter setting burn-optim's own step restores,
/// the distributed flag included: without it DDP would stop synchronising the gradients of
/// the parameters the mask held still. On the GPU under test (lavapipe in CI): Burn marks
/// tensors distributed only on the CubeCL backends.
#[cfg(any(feature = "wgpu", feature = "cuda", feature = "rocm"))]
#[test]
fn update_target_keeps_parameters_distributed() {
    let Some(device) = testing::gpu_device("update_target_keeps_parameters_distributed") else {
        return;
    };
    let device = device.autodiff();
    let config = GradMaskConfig::new(0.5).with_target(MaskTarget::Update);
    for path in [Path::Wrapper, Path::Module] {
        let (model, mut optim) = setup(&config, path, &device);
        let grads = model.net.all_reduced_grads(0, &device);
        let model = Replica {
            net: model.net.map(&mut MarkDistributed),
            ..model
        };
        let model = train_step_with(model, &mut optim, grads);
        let mut check = AllDistributed(Vec::new());
        model.net.visit(&mut check);
        assert_eq!(check.0, [true; 4], "{path:?}");
        // Something was held: the check covers masked parameters.
        if let Some(mask) = &model.mask {
            assert!(mask.last_stats().masked() > 0);
        }
    }
}

/// [`train_step`] with given gradients.
fn train_step_with(model: Replica, optim: &mut ModuleOptimizer, grads: GradientsParams) -> Replica {
    match model.mask {
        None => Replica {
            net: optim.step(LR, model.net, grads),
            mask: None,
        },
        Some(mut mask) => Replica {
            net: mask.step(optim, LR, model.net, grads),
            mask: Some(mask),
        },
    }
}

/// Gives the parameters the ids 0, 1, 2, ... in module order.
#[cfg(feature = "ndarray")]
struct NumberIds(u64);

#[cfg(feature = "ndarray")]
impl burn::module::ModuleMapper for NumberIds {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (_, tensor, mapper) = param.consume();
        self.0 += 1;
        Param::from_mapped_value(burn::module::ParamId::from(self.0 - 1), tensor, mapper)
    }
}

/// Random gradients for every parameter of `model`, on `device`.
#[cfg(feature = "ndarray")]
fn gradients_on(model: &Net, seed: u64, device: &Device) -> GradientsParams {
    struct Make<'a> {
        seed: u64,
        device: &'a Device,
        out: GradientsParams,
    }
    impl ModuleVisitor for Make<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let shape = param.val().shape();
            let values: Vec<f32> = (0..shape.num_elements() as u64)
                .map(|i| uniform(self.seed, i, 1.0))
                .collect();
            self.seed += 1;
            let grad = Tensor::from_data(TensorData::new(values, shape), self.device);
            self.out.register::<D>(param.id, grad);
        }
    }
    let mut make = Make {
        seed,
        device,
        out: GradientsParams::new(),
    };
    model.visit(&mut make);
    make.out
}

/// Each parameter's masked gradient values, and the index of every device entry of the
/// multi-device gradients holding it.
#[cfg(feature = "ndarray")]
fn read_grads(model: &Net, grads: &[&GradientsParams]) -> Vec<(Vec<f64>, Vec<usize>)> {
    struct Read<'a> {
        grads: &'a [&'a GradientsParams],
        out: Vec<(Vec<f64>, Vec<usize>)>,
    }
    impl ModuleVisitor for Read<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let held: Vec<(usize, Tensor<D>)> = self
                .grads
                .iter()
                .enumerate()
                .filter_map(|(i, g)| g.get::<D>(param.id).map(|t| (i, t)))
                .collect();
            let values = testing::values(held[0].1.clone().reshape([-1]));
            self.out
                .push((values, held.iter().map(|(i, _)| *i).collect()));
        }
    }
    let mut read = Read {
        grads,
        out: Vec::new(),
    };
    model.visit(&mut read);
    read.out
}

/// `GradMask::apply_multi` (for `TrainStep::optimize_multi` under `OptimSharded`) masks on
/// two devices of two CPU backends exactly as `apply` masks the summed gradients on one, each
/// gradient handed back on its home device alone; the global threshold over both devices
/// matches a host sort of every entry; stepping with `step_multi` gives the one-device
/// parameters.
#[cfg(feature = "ndarray")]
#[test]
fn sharded_multi_device_masks_like_one_device() {
    use burn::optim::{MultiGradientsParams, SgdConfig};

    #[allow(deprecated)]
    let devices = [Device::flex(), Device::ndarray()];
    // burn-optim picks a parameter's home device from its id: ids 0..4 put two parameters on
    // each device (random ids could put all four on one).
    let model = net(&Device::flex().autodiff()).map(&mut NumberIds(0));
    let parts = || -> Vec<GradientsParams> {
        (0..2)
            .map(|d| gradients_on(&model, 100 + 10 * d as u64, &devices[d]))
            .collect()
    };
    let configs = [
        GradMaskConfig::new(0.3),
        GradMaskConfig::new(0.3).with_scope(MaskScope::Global),
        GradMaskConfig::new(0.3).with_strategy(MaskStrategy::Random {
            seed: 3,
            rescale: true,
        }),
    ];
    for config in configs {
        let context = format!("{:?} {:?}", config.strategy, config.scope);
        // One device: the parts summed there.
        let mut summed = SumGrads {
            a: parts().remove(0),
            b: parts().remove(1).to_device(&devices[0], &model),
            out: GradientsParams::new(),
        };
        model.visit(&mut summed);
        let raw = read_grads(&model, &[&summed.out]);
        let mut single_mask = config.init().unwrap();
        let single = single_mask.apply(&model, summed.out);

        let multi = MultiGradientsParams {
            grads: parts().into_iter().zip(devices.clone()).collect(),
        };
        let mut multi_mask = config.init().unwrap();
        let multi = multi_mask.apply_multi(&model, multi);

        let expected = read_grads(&model, &[&single]);
        let homes: Vec<&GradientsParams> = multi.grads.iter().map(|(g, _)| g).collect();
        let got = read_grads(&model, &homes);
        for (p, ((want, _), (values, held))) in expected.iter().zip(&got).enumerate() {
            assert_eq!(held.len(), 1, "{context}: parameter {p} on one device only");
            testing::assert_same(values, want, &format!("{context}: parameter {p}"));
        }
        assert_eq!(
            single_mask.last_stats(),
            multi_mask.last_stats(),
            "{context}"
        );
        // Two parameters on each device: the selection really spans two devices.
        let homes: Vec<usize> = got.iter().map(|(_, h)| h[0]).collect();
        assert_eq!(homes, [0, 1, 0, 1], "{context}");

        if config.scope == MaskScope::Global {
            // Independent reference: a host sort over every summed entry.
            let all: Vec<f64> = raw.iter().flat_map(|(v, _)| v.clone()).collect();
            let (reference, masked, _) = testing::reference_mask(&all, 0.3);
            let flat: Vec<f64> = got.iter().flat_map(|(v, _)| v.clone()).collect();
            testing::assert_same(&flat, &reference, "global threshold over two devices");
            assert_eq!(multi_mask.last_stats().masked(), masked);
        }

        let mut optim = SgdConfig::new().init();
        let one = optim.step(LR, model.clone(), single);
        let mut optim = SgdConfig::new().init();
        let sharded = optim.step_multi(LR, model.clone(), multi);
        assert_eq!(param_values(&one), param_values(&sharded), "{context}");
    }

    // `step_multi` against `step`, with both targets: AdamW with weight decay moves every
    // parameter, so the Update target must hold the masked ones on their home devices.
    // HFT withholds its frozen tensors' gradients: stepped alike on one and on two devices.
    let hft = GradMaskConfig::new(0.5).with_strategy(MaskStrategy::Hft {
        seed: 3,
        stage_steps: 1,
    });
    let configs = [
        GradMaskConfig::new(0.4),
        GradMaskConfig::new(0.4).with_target(MaskTarget::Update),
        hft.with_target(MaskTarget::Update),
    ];
    for config in configs {
        let target = config.target;
        let adamw = AdamWConfig::new().with_weight_decay(0.1);
        let mut summed = SumGrads {
            a: parts().remove(0),
            b: parts().remove(1).to_device(&devices[0], &model),
            out: GradientsParams::new(),
        };
        model.visit(&mut summed);
        let one = config
            .init()
            .unwrap()
            .step(&mut adamw.init(), LR, model.clone(), summed.out);
        let multi = MultiGradientsParams {
            grads: parts().into_iter().zip(devices.clone()).collect(),
        };
        let sharded =
            config
                .init()
                .unwrap()
                .step_multi(&mut adamw.init(), LR, model.clone(), multi);
        let (one, sharded, before) = (
            param_values(&one),
            param_values(&sharded),
            param_values(&model),
        );
        let context = format!("{:?} {target:?}", config.strategy);
        assert_eq!(one, sharded, "{context}");
        let held = one
            .iter()
            .flatten()
            .zip(before.iter().flatten())
            .filter(|(a, b)| a == b)
            .count();
        // floor(0.4 · n) entries per tensor (or HFT's frozen tensors) are held still with
        // Update, none with Gradient.
        match target {
            MaskTarget::Update => assert!(held > 0, "{context}: Update held nothing"),
            MaskTarget::Gradient => assert_eq!(held, 0),
            other => panic!("no expectation for {other:?}"),
        }
    }
}

impl Replica {
    fn forward(&self, (x, y): (Tensor<2>, Tensor<2>)) -> RegressionOutput {
        let output = self.net.out.forward(self.net.hidden.forward(x).tanh());
        let loss = MseLoss::new().forward(output.clone(), y.clone(), Reduction::Mean);
        RegressionOutput {
            loss,
            output,
            targets: y,
        }
    }
}

impl TrainStep for Replica {
    type Input = (Tensor<2>, Tensor<2>);
    type Output = RegressionOutput;

    fn step(&self, batch: Self::Input) -> TrainOutput<RegressionOutput> {
        let item = self.forward(batch);
        TrainOutput::new(self, item.loss.backward(), item)
    }

    fn optimize(
        self,
        optim: &mut ModuleOptimizer,
        lr: ModuleLearningRate,
        grads: GradientsParams,
    ) -> Self {
        match self.mask {
            Some(_) => GradMask::step_field(
                self,
                |model| model.mask.as_mut().expect("a module-level mask"),
                optim,
                lr,
                grads,
            ),
            None => optim.step(lr, self, grads),
        }
    }
}

impl InferenceStep for Replica {
    type Input = (Tensor<2>, Tensor<2>);
    type Output = RegressionOutput;

    fn step(&self, batch: Self::Input) -> RegressionOutput {
        self.forward(batch)
    }
}

/// Items are their index: a batch of consecutive items.
#[derive(Clone)]
struct Rows;

impl Batcher<usize, (Tensor<2>, Tensor<2>)> for Rows {
    fn batch(&self, items: Vec<usize>, device: &Device) -> (Tensor<2>, Tensor<2>) {
        batch(items[0], items.len(), device)
    }
}

/// burn-train, 16 items in micro-batches of 4 accumulated 2 at a time (2 steps an epoch),
/// from `checkpoint` (an epoch saved by an earlier run in `dir`) to `epochs`.
fn fit<M>(
    model: M,
    optim: ModuleOptimizer,
    dir: &std::path::Path,
    epochs: usize,
    checkpoint: Option<usize>,
) -> M
where
    M: LearnerModel
        + TrainStep<Input = (Tensor<2>, Tensor<2>), Output = RegressionOutput>
        + InferenceStep<Input = (Tensor<2>, Tensor<2>), Output = RegressionOutput>,
{
    let device = Device::flex().autodiff();
    let loader = || {
        DataLoaderBuilder::new(Rows)
            .batch_size(4)
            .set_device(device.clone())
            .build(InMemDataset::new((0..16).collect::<Vec<usize>>()))
    };
    let mut training = SupervisedTraining::new(dir, loader(), loader())
        .grads_accumulation(2)
        .num_epochs(epochs)
        .with_default_checkpointers()
        .renderer(Box::new(Quiet))
        .with_metric_logger(InMemoryMetricLogger::new())
        .with_application_logger(None);
    if let Some(epoch) = checkpoint {
        training = training.checkpoint(epoch);
    }
    let result = training.launch(Learner::new(model, optim, ConstantLr::from(LR)));
    assert!(
        result.error.is_none(),
        "training failed: {:?}",
        result.error
    );
    result.model
}

/// A run resumed from burn-train's checkpoint of epoch 1 (into a freshly built model and
/// optimizer, with new parameter ids and a mask at step 0) ends with the parameters of an
/// uninterrupted run: the `GradMask` field's step is saved with the model, the wrapper's in
/// the optimizer's record. Warm-up and random draws make every step's mask depend on it.
#[test]
fn resumed_checkpoint_masks_like_an_uninterrupted_run() {
    let device = Device::flex().autodiff();
    let configs = [
        GradMaskConfig::new(0.5)
            .with_strategy(MaskStrategy::Random {
                seed: 5,
                rescale: false,
            })
            .with_warmup_steps(3),
        GradMaskConfig::new(0.5)
            .with_strategy(MaskStrategy::Hft {
                seed: 5,
                stage_steps: 2,
            })
            .with_target(MaskTarget::Update),
        GradMaskConfig::new(0.5).with_warmup_steps(4),
    ];
    for config in configs {
        // The wrapper refuses HFT (it needs the module's blocks).
        let paths = match config.strategy {
            MaskStrategy::Hft { .. } => vec![Path::Module],
            _ => vec![Path::Wrapper, Path::Module],
        };
        for path in paths {
            let context = format!("{:?} through {path:?}", config.strategy);
            let (model, optim) = setup(&config, path, &device);
            let dir = tempdir();
            let uninterrupted = fit(model, optim, &dir, 3, None);
            let _ = std::fs::remove_dir_all(&dir);

            let dir = tempdir();
            let (model, optim) = setup(&config, path, &device);
            fit(model, optim, &dir, 1, None);
            let (model, optim) = setup(&config, path, &device);
            let resumed = fit(model, optim, &dir, 3, Some(1));
            let _ = std::fs::remove_dir_all(&dir);

            assert_eq!(
                param_values(&resumed.net),
                param_values(&uninterrupted.net),
                "{context}"
            );
            if let (Some(a), Some(b)) = (&resumed.mask, &uninterrupted.mask) {
                assert_eq!(a.steps(), 6, "{context}");
                assert_eq!(b.steps(), 6, "{context}");
            }
            if matches!(path, Path::Module) {
                masked_model_runs_as_the_module_path(&config, &uninterrupted, &device);
            }
        }
    }
}

/// `MaskedModel` around the replica without a mask field trains, uninterrupted and resumed
/// from its own checkpoint, to the parameters of the replica that steps its own mask field
/// (same parameter paths, so the same random and HFT draws): bit for bit.
fn masked_model_runs_as_the_module_path(
    config: &GradMaskConfig,
    expected: &Replica,
    device: &Device,
) {
    let context = format!("{:?} through MaskedModel", config.strategy);
    let setup = || {
        let (replica, optim) = setup(config, Path::Module, device);
        let mask = replica.mask.expect("the module path has a mask");
        let bare = Replica {
            net: replica.net,
            mask: None,
        };
        (MaskedModel::new(bare, mask), optim)
    };
    let dir = tempdir();
    let (model, optim) = setup();
    let uninterrupted = fit(model, optim, &dir, 3, None);
    let _ = std::fs::remove_dir_all(&dir);
    let dir = tempdir();
    let (model, optim) = setup();
    fit(model, optim, &dir, 1, None);
    let (model, optim) = setup();
    let resumed = fit(model, optim, &dir, 3, Some(1));
    let _ = std::fs::remove_dir_all(&dir);
    for run in [&uninterrupted, &resumed] {
        assert_eq!(
            param_values(&run.model().net),
            param_values(&expected.net),
            "{context}"
        );
        assert_eq!(run.mask().steps(), 6, "{context}");
    }
}
