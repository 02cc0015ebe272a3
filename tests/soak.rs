//! Long runs stay flat: 10,000 optimizer steps through each front door, on training threads
//! that come and go as burn-train's do (its DDP workers and multi-device workers are new
//! threads at every launch or epoch), with the process's resident memory and every map the
//! mask keeps measured after warm-up. Ignored in CI (a few minutes); run with
//! `cargo test --workspace --features ndarray,wgpu --test soak -- --ignored --nocapture`.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::{Device, Distribution, Tensor};
use burn::train::{RegressionOutput, TrainOutput, TrainStep};
use burn_gmt::{GradMaskConfig, MaskStatsHandle, MaskedModel, WithGradMask};

const STEPS: usize = 10_000;
/// Steps each training thread takes before it ends and a new one carries on.
const STEPS_PER_THREAD: usize = 100;
/// Steps before memory is first measured.
const WARMUP: usize = 1_000;
/// Growth of the resident memory allowed after warm-up: allocator noise, far below what a
/// per-step or per-thread leak would add over 9,000 steps and 90 threads.
const RSS_SLACK: u64 = 4 << 20;

#[derive(Module, Debug)]
struct Tiny {
    hidden: Linear,
    out: Linear,
}

const PARAMS: usize = 4;

impl Tiny {
    fn new(device: &Device) -> Self {
        Self {
            hidden: LinearConfig::new(16, 32).init(device),
            out: LinearConfig::new(32, 4).init(device),
        }
    }

    fn loss(&self, x: Tensor<2>) -> Tensor<1> {
        self.out
            .forward(self.hidden.forward(x).tanh())
            .powi_scalar(2)
            .mean()
    }
}

impl TrainStep for Tiny {
    type Input = Tensor<2>;
    type Output = RegressionOutput;

    fn step(&self, x: Tensor<2>) -> TrainOutput<RegressionOutput> {
        let output = self.out.forward(self.hidden.forward(x.clone()).tanh());
        let loss = output.clone().powi_scalar(2).mean();
        let targets = output.clone().zeros_like();
        let grads = loss.backward();
        TrainOutput::new(
            self,
            grads,
            RegressionOutput {
                loss,
                output,
                targets,
            },
        )
    }
}

/// The process's resident memory, in bytes (`/proc/self/statm`: pages, of `getconf PAGESIZE`
/// bytes, which `/proc/self/smaps` reports as `KernelPageSize`).
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * page_size()
}

/// The kernel's page size, from the first mapping's `KernelPageSize` (kB).
fn page_size() -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("/proc/self/smaps");
    let line = smaps
        .lines()
        .find(|l| l.starts_with("KernelPageSize:"))
        .expect("KernelPageSize in smaps");
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// What one front door is at one measurement.
#[derive(Debug)]
struct Sample {
    step: usize,
    resident: u64,
    replicas: usize,
    kept_masks: usize,
}

/// Runs `STEPS` steps of `step` on threads of `STEPS_PER_THREAD` steps each, sampling memory
/// and map sizes after each thread ends; `state` moves from thread to thread.
fn soak<S: Send + 'static>(
    name: &str,
    mut state: S,
    step: fn(S, usize) -> S,
    sizes: fn(&S) -> (usize, usize),
) -> Vec<Sample> {
    let started = std::time::Instant::now();
    let mut samples = Vec::new();
    for thread in 0..STEPS / STEPS_PER_THREAD {
        let first = thread * STEPS_PER_THREAD;
        state = std::thread::spawn(move || (first..first + STEPS_PER_THREAD).fold(state, step))
            .join()
            .unwrap();
        let done = first + STEPS_PER_THREAD;
        if done >= WARMUP && done.is_multiple_of(WARMUP) {
            let (replicas, kept_masks) = sizes(&state);
            let sample = Sample {
                step: done,
                resident: resident_bytes(),
                replicas,
                kept_masks,
            };
            println!("{name}: {sample:?}");
            samples.push(sample);
        }
    }
    println!(
        "{name}: {STEPS} steps in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    samples
}

fn check_flat(name: &str, samples: &[Sample]) {
    let first = &samples[0];
    for sample in samples {
        assert!(
            sample.resident <= first.resident + RSS_SLACK,
            "{name}: resident memory grew from {} to {} bytes between steps {} and {}",
            first.resident,
            sample.resident,
            first.step,
            sample.step
        );
        assert_eq!(
            sample.replicas, 1,
            "{name}: one training thread at a time: {sample:?}"
        );
        assert!(sample.kept_masks <= PARAMS, "{name}: {sample:?}");
    }
    let last = samples.last().unwrap();
    println!(
        "{name}: resident {:.1} MiB at step {}, {:.1} MiB at step {} ({:+.2} MiB)",
        first.resident as f64 / (1 << 20) as f64,
        first.step,
        last.resident as f64 / (1 << 20) as f64,
        last.step,
        (last.resident as f64 - first.resident as f64) / (1 << 20) as f64
    );
}

fn batch(device: &Device) -> Tensor<2> {
    Tensor::random([8, 16], Distribution::Default, device)
}

/// The mask: reselecting every 4 steps, so `GradMask` keeps a mask per parameter in between.
fn config() -> GradMaskConfig {
    GradMaskConfig::new(0.3).with_reselect_every(4)
}

#[test]
#[ignore = "soak test: 10,000 steps per front door, a few minutes"]
fn long_runs_stay_flat_through_both_front_doors() {
    let device = Device::flex().autodiff();

    // The optimizer wrapper.
    let model = Tiny::new(&device);
    let masked = SgdConfig::new()
        .build()
        .with_grad_mask_config(config())
        .with_param_paths(&model);
    let stats = masked.stats_handle();
    let optim = ModuleOptimizer::from(masked);
    type Wrapper = (Tiny, ModuleOptimizer, MaskStatsHandle);
    let wrapper = soak(
        "wrapper",
        (model, optim, stats),
        |(model, mut optim, stats): Wrapper, _| {
            let device = Device::flex().autodiff();
            let grads = GradientsParams::from_grads(model.loss(batch(&device)).backward(), &model);
            let model = optim.step(1e-3, model, grads);
            (model, optim, stats)
        },
        |(_, _, stats)| {
            assert_eq!(stats.latest().tensors.len(), PARAMS);
            // The wrapper keeps its thresholds in each parameter's optimizer state (Burn's
            // map, one entry per parameter), not in a map of its own.
            (stats.replicas().len(), 0)
        },
    );
    check_flat("wrapper", &wrapper);

    // `MaskedModel` (a `GradMask` stepped by burn-train's `TrainStep::optimize`).
    let model = MaskedModel::new(Tiny::new(&device), config().init().unwrap());
    let optim = ModuleOptimizer::from(SgdConfig::new().build());
    let grad_mask = soak(
        "MaskedModel",
        (model, optim),
        |(model, mut optim): (MaskedModel<Tiny>, ModuleOptimizer), _| {
            let device = Device::flex().autodiff();
            let output = TrainStep::step(&model, batch(&device));
            let lr = ModuleLearningRate::from(1e-3);
            let model = TrainStep::optimize(model, &mut optim, lr, output.grads);
            (model, optim)
        },
        |(model, _)| {
            let mask = model.mask();
            assert_eq!(mask.last_stats().tensors.len(), PARAMS);
            (mask.stats_handle().replicas().len(), mask.kept_masks())
        },
    );
    check_flat("MaskedModel", &grad_mask);
}
