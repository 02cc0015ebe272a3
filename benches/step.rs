//! One AdamW optimizer step on a model with the parameter shapes of SmolLM2-135M, without a mask
//! (SFT), through the optimizer wrapper, through `GradMask`, and through the wrapper with
//! `reselect_every(4)` (its mean step), on every backend compiled in.
//! Beside them it times one in-place pass over all the gradients (each entry read and written
//! where it lies: the floor of any mask) and `GradMask::apply` alone.
//! Prints a markdown table and, as its last line,
//! `step overhead: wrapper X.XXx, grad-mask Y.YYx, apply Z.ZZ passes` (GMT step time over SFT
//! step time, and `GradMask::apply` over the in-place pass, for the last backend run).
//!
//! ```sh
//! cargo bench --profile dev --bench step                                   # flex, full size
//! GMT_STEP_PRESET=small cargo bench --profile dev --features ndarray,wgpu --bench step
//! ```
//!
//! Environment:
//!
//! - `GMT_STEP_PRESET=small`: a 4-layer model of the same structure (38 tensors, 9.4M
//!   parameters), well under a minute per backend on 2 CPU cores; default `full`: SmolLM2-135M's
//!   272 tensors and 134.5M parameters (weights, gradients and AdamW moments: about 5 GB
//!   with the three optimizers alive at once).
//! - `GMT_BENCH_BACKENDS=flex,wgpu`: the backends to run, as for `benches/mask.rs`.
//! - `GMT_STEP_STEPS=20`: timed steps per method (median taken), after 3 warm-up steps.
//!
//! The benchmark times the optimizer step, so there is no forward pass: the gradients are
//! random tensors of each parameter's shape, drawn once and copied (untimed) before every step
//! into a uniquely owned `GradientsParams`, as a backward pass would hand them over. The three
//! methods take turns step by step on one model (each with its own AdamW state), so a slow
//! phase of a shared machine hits them alike. Every timed region ends with `Device::sync`.

use burn_gmt_kernels::testing::kernel_launches;
use std::io::Write;
use std::time::Duration;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Distribution, Tensor};
use burn_gmt::{GradMask, GradMaskConfig, MaskStatsHandle, WithGradMask};
use burn_gmt_lab::device::{catch_quietly, describe, failure_cause, open_backends};
use burn_gmt_lab::timing::{Timing, fresh, median, ms, time_once};

/// Fraction of each gradient tensor masked.
const RATIO: f64 = 0.3;
const LEARNING_RATE: f64 = 1e-4;
/// Untimed steps first: the first creates the AdamW moments, and on a GPU compiles kernels.
const WARM_UP: usize = 3;
const DEFAULT_STEPS: usize = 20;
/// The wrapper with `reselect_every(RESELECT)`: a selection every 4th step, in between one
/// masking pass against the kept threshold.
const RESELECT: u64 = 4;

/// The shapes of a Llama-style decoder (SmolLM2's architecture).
struct Preset {
    name: &'static str,
    layers: usize,
    d_model: usize,
    ffn: usize,
    heads: usize,
    kv_heads: usize,
    vocab: usize,
}

/// SmolLM2-135M: head dimension 64, grouped-query attention (9 query heads share 3 key/value
/// heads, so the k and v projections are 576 → 192), embedding tied with the output layer.
const SMOLLM2_135M: Preset = Preset {
    name: "full",
    layers: 30,
    d_model: 576,
    ffn: 1536,
    heads: 9,
    kv_heads: 3,
    vocab: 49_152,
};

/// The same structure and head dimension, small enough for a quick CPU run.
const SMALL: Preset = Preset {
    name: "small",
    layers: 4,
    d_model: 384,
    ffn: 1024,
    heads: 6,
    kv_heads: 2,
    vocab: 8_192,
};

impl Preset {
    fn from_env() -> &'static Preset {
        match std::env::var("GMT_STEP_PRESET").as_deref() {
            Err(_) | Ok("full") => &SMOLLM2_135M,
            Ok("small") => &SMALL,
            Ok(other) => panic!("GMT_STEP_PRESET: `small` or `full`, got {other:?}"),
        }
    }

    fn kv_dim(&self) -> usize {
        self.d_model / self.heads * self.kv_heads
    }

    /// Parameter tensors: the embedding, 9 per layer (2 norms, 4 attention and 3 MLP
    /// projections) and the final norm.
    fn tensors(&self) -> usize {
        1 + 9 * self.layers + 1
    }

    fn parameters(&self) -> usize {
        let (d, kv, ffn) = (self.d_model, self.kv_dim(), self.ffn);
        let layer = 2 * d + 2 * d * d + 2 * d * kv + 3 * d * ffn;
        self.vocab * d + self.layers * layer + d
    }
}

/// One decoder layer's parameters (Burn's `Linear` layout, `[d_in, d_out]`, without biases).
#[derive(Module, Debug)]
struct Layer {
    attention_norm: Param<Tensor<1>>,
    q: Param<Tensor<2>>,
    k: Param<Tensor<2>>,
    v: Param<Tensor<2>>,
    o: Param<Tensor<2>>,
    mlp_norm: Param<Tensor<1>>,
    gate: Param<Tensor<2>>,
    up: Param<Tensor<2>>,
    down: Param<Tensor<2>>,
}

/// A decoder's parameters; no forward pass is needed to time an optimizer step.
#[derive(Module, Debug)]
struct Decoder {
    /// Tied with the output layer: one tensor.
    embedding: Param<Tensor<2>>,
    layers: Vec<Layer>,
    norm: Param<Tensor<1>>,
}

fn decoder(preset: &Preset, device: &Device) -> Decoder {
    let weight = |d_in: usize, d_out: usize| {
        Param::from_tensor(Tensor::random(
            [d_in, d_out],
            Distribution::Normal(0.0, 0.02),
            device,
        ))
    };
    let norm = || Param::from_tensor(Tensor::ones([preset.d_model], device));
    let (d, kv, ffn) = (preset.d_model, preset.kv_dim(), preset.ffn);
    Decoder {
        embedding: weight(preset.vocab, d),
        layers: (0..preset.layers)
            .map(|_| Layer {
                attention_norm: norm(),
                q: weight(d, d),
                k: weight(d, kv),
                v: weight(d, kv),
                o: weight(d, d),
                mlp_norm: norm(),
                gate: weight(d, ffn),
                up: weight(d, ffn),
                down: weight(ffn, d),
            })
            .collect(),
        norm: norm(),
    }
}

/// A gradient of either rank the decoder has (`GradientsParams` is keyed by rank too).
enum Grad {
    Vector(Tensor<1>),
    Matrix(Tensor<2>),
}

/// One random gradient per parameter, in module order; counts tensors and entries.
struct RandomGrads<'a> {
    device: &'a Device,
    grads: Vec<(ParamId, Grad)>,
    entries: usize,
}

impl ModuleVisitor for RandomGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let shape = param.val().shape();
        self.entries += shape.num_elements();
        // Gradients of a trained LLM are small and roughly normal.
        let g = Tensor::<D>::random(shape, Distribution::Normal(0.0, 1e-3), self.device);
        let grad = match D {
            1 => Grad::Vector(g.reshape([-1])),
            2 => Grad::Matrix(g.reshape([0, -1])),
            _ => unreachable!("the decoder has vectors and matrices only"),
        };
        self.grads.push((param.id, grad));
    }
}

/// `grads` (uniquely owned) with every entry negated where it lies: one in-place pass over
/// all the gradients, by an operation no backend can skip.
fn pass_over(ids: &[(ParamId, Grad)], mut grads: GradientsParams) -> GradientsParams {
    for (id, grad) in ids {
        match grad {
            Grad::Vector(_) => {
                let g = grads.remove::<1>(*id).expect("a gradient per parameter");
                grads.register(*id, g.mul_scalar(-1.0));
            }
            Grad::Matrix(_) => {
                let g = grads.remove::<2>(*id).expect("a gradient per parameter");
                grads.register(*id, g.mul_scalar(-1.0));
            }
        }
    }
    grads
}

/// Uniquely owned copies of `grads`, what a backward pass hands the optimizer.
fn fresh_grads(grads: &[(ParamId, Grad)]) -> GradientsParams {
    let mut out = GradientsParams::new();
    for (id, grad) in grads {
        match grad {
            Grad::Vector(g) => out.register(*id, fresh(g)),
            Grad::Matrix(g) => out.register(*id, fresh(g)),
        }
    }
    out
}

/// How one method steps: an optimizer, and for `GradMask` the mask applied before it.
struct Method {
    optim: ModuleOptimizer,
    mask: Option<GradMask>,
    times: Vec<Timing>,
}

/// Median step times of the first three methods, of the untimed setup's copy of all gradients,
/// of one in-place pass over them and of `GradMask::apply` alone (the masking of every tensor
/// of a step, no optimizer);
/// the mean step time of the wrapper that reselects every [`RESELECT`] steps (its steps differ
/// by design, so the mean is what a step costs it on average).
struct Medians {
    copy: Duration,
    pass: Duration,
    apply: Duration,
    sft: Duration,
    wrapper: Duration,
    grad_mask: Duration,
    reselect: Duration,
}

impl Medians {
    fn of(
        [copies, passes, applies]: [&[Timing]; 3],
        methods: &[Method; 4],
        pick: impl Fn(&Timing) -> Duration,
    ) -> Self {
        let [sft, wrapper, grad_mask] =
            std::array::from_fn(|i| median(methods[i].times.iter().map(&pick).collect()));
        let reselect = &methods[3].times;
        Self {
            copy: median(copies.iter().map(&pick).collect()),
            pass: median(passes.iter().map(&pick).collect()),
            apply: median(applies.iter().map(&pick).collect()),
            sft,
            wrapper,
            grad_mask,
            reselect: reselect.iter().map(&pick).sum::<Duration>() / reselect.len() as u32,
        }
    }

    /// `GradMask::apply` over the in-place pass over all gradients.
    fn apply_passes(&self) -> f64 {
        self.apply.as_secs_f64() / self.pass.as_secs_f64()
    }

    /// What the wrapper's mask adds to a step: the wrapper's step less the SFT step.
    fn wrapper_mask(&self) -> f64 {
        ms(self.wrapper) - ms(self.sft)
    }

    /// GMT step time over SFT step time: (wrapper, grad-mask, wrapper reselecting).
    fn overheads(&self) -> (f64, f64, f64) {
        let ratio = |t: Duration| t.as_secs_f64() / self.sft.as_secs_f64();
        (
            ratio(self.wrapper),
            ratio(self.grad_mask),
            ratio(self.reselect),
        )
    }
}

struct Row {
    wall: Medians,
    cpu: Medians,
    /// Kernel launches of the last timed `GradMask::apply` (0 on the CPU backends).
    apply_launches: u64,
    /// Fraction of entries kept at the last step, through the wrapper and through `GradMask`.
    kept: (f64, f64),
}

fn run(preset: &Preset, device: &Device, steps: usize) -> Row {
    // The optimizer steps autodiff parameters (as after a backward pass); gradients live on the
    // inner device, as `GradientsParams::from_grads` leaves them.
    let mut model = Some(decoder(preset, &device.clone().autodiff()));
    let mut random = RandomGrads {
        device,
        grads: Vec::new(),
        entries: 0,
    };
    model.as_ref().expect("built").visit(&mut random);
    assert_eq!(random.grads.len(), preset.tensors(), "parameter tensors");
    assert_eq!(random.entries, preset.parameters(), "parameters");
    let grads = random.grads;

    let wrapped = AdamWConfig::new().build().with_grad_mask(RATIO);
    let wrapper_stats: MaskStatsHandle = wrapped.stats_handle();
    let mut methods =
        [
            Method {
                optim: AdamWConfig::new().init(),
                mask: None,
                times: Vec::new(),
            },
            Method {
                optim: ModuleOptimizer::from(wrapped),
                mask: None,
                times: Vec::new(),
            },
            Method {
                optim: AdamWConfig::new().init(),
                mask: Some(GradMaskConfig::new(RATIO).init().expect("valid ratio")),
                times: Vec::new(),
            },
            Method {
                optim: ModuleOptimizer::from(AdamWConfig::new().build().with_grad_mask_config(
                    GradMaskConfig::new(RATIO).with_reselect_every(RESELECT),
                )),
                mask: None,
                times: Vec::new(),
            },
        ];
    // `GradMask::apply` alone, with its own mask, on the model as it stands.
    let mut apply_mask = GradMaskConfig::new(RATIO).init().expect("valid ratio");
    device.sync().expect("device sync");

    let mut copies = Vec::new();
    let mut passes = Vec::new();
    let mut applies = Vec::new();
    let mut apply_launches = 0;
    for step in 0..WARM_UP + steps {
        // What a copy of all the gradients, and one pass over them in place, cost.
        let copy = time_once(device, &mut || (), &mut |()| fresh_grads(&grads));
        let pass = time_once(
            device,
            &mut || fresh_grads(&grads),
            &mut |fresh: GradientsParams| pass_over(&grads, fresh),
        );
        // The launches land inside the timed region, which ends with a device sync.
        let launched = kernel_launches();
        let apply = time_once(
            device,
            &mut || fresh_grads(&grads),
            &mut |grads: GradientsParams| apply_mask.apply(model.as_ref().expect("model"), grads),
        );
        apply_launches = kernel_launches() - launched;
        if step >= WARM_UP {
            copies.push(copy);
            passes.push(pass);
            applies.push(apply);
        }
        for method in &mut methods {
            let timing = time_once(
                device,
                &mut || fresh_grads(&grads),
                &mut |grads: GradientsParams| {
                    let m = model.take().expect("model");
                    let grads = match &mut method.mask {
                        Some(mask) => mask.apply(&m, grads),
                        None => grads,
                    };
                    model = Some(method.optim.step(LEARNING_RATE, m, grads));
                },
            );
            if step >= WARM_UP {
                method.times.push(timing);
            }
        }
    }

    let kept = (
        wrapper_stats.latest().kept_fraction(),
        methods[2]
            .mask
            .as_ref()
            .expect("grad-mask")
            .last_stats()
            .kept_fraction(),
    );
    Row {
        wall: Medians::of([&copies, &passes, &applies], &methods, |t| t.wall),
        cpu: Medians::of([&copies, &passes, &applies], &methods, |t| t.cpu),
        apply_launches,
        kept,
    }
}

fn main() {
    let preset = Preset::from_env();
    assert_eq!(
        SMOLLM2_135M.tensors(),
        272,
        "SmolLM2-135M has 272 parameter tensors"
    );
    let steps = std::env::var("GMT_STEP_STEPS").map_or(DEFAULT_STEPS, |v| match v.parse() {
        Ok(n) if n > 0 => n,
        _ => panic!("GMT_STEP_STEPS: a positive integer, got {v:?}"),
    });
    let backends = open_backends();

    println!(
        "\nOne AdamW step, f32, GMT ratio {RATIO}: median of {steps} steps after {WARM_UP} \
         warm-up steps, the four methods in turn"
    );
    for (name, device) in &backends {
        println!("- {name}: {}", describe(name, device));
    }
    println!(
        "- SFT: `AdamWConfig::new().init()`; wrapper: `AdamWConfig::new().build()\
         .with_grad_mask({RATIO})` in a `ModuleOptimizer`; grad-mask: `GradMaskConfig::new({RATIO})\
         .init()`, `mask.apply` then the SFT optimizer's step; reselect: the wrapper with \
         `reselect_every({RESELECT})`, its mean step (a selection every {RESELECT} steps, one \
         masking pass in between)\n\
         - copy: a copy of all gradients, one pass (what the setup of each step does, untimed \
         there); times are wall-clock medians; CPU / SFT: the same ratios in CPU time of the whole \
         process (all threads), which other processes on a shared machine do not inflate\n\
         - pass: one in-place pass over all gradients (each entry negated where it lies, on \
         uniquely owned tensors): the floor of any mask; apply: `GradMask::apply` alone (every \
         tensor of a step masked, no optimizer); apply / pass and apply / copy: over the pass \
         and over the copy, wall-clock medians (CPU: in CPU time); wrapper mask: wrapper − SFT, \
         what the wrapper's mask adds to a step\n\
         - kept: fraction of gradient entries kept at the last step (wrapper / grad-mask)\n         - wrapper µs / tensor: (wrapper − SFT) / tensors, what the wrapper's mask costs a tensor \
         inside a real step (issue 8's GPU target: at most 60 µs); apply (ms) is a whole step's \
         mask through `GradMask` (target: at most 2 ms for the 272 tensors on the H200); apply \
         launches: the kernels one `GradMask::apply` launched (a GPU; 0 on the CPU backends)\n"
    );
    println!(
        "| backend | preset | tensors | parameters | copy (ms) | SFT (ms) | wrapper (ms) | grad-mask (ms) \
         | wrapper / SFT | grad-mask / SFT | reselect / SFT | CPU: wrapper / SFT \
         | CPU: grad-mask / SFT | CPU: reselect / SFT | pass (ms) | apply (ms) \
         | wrapper mask (ms) | apply / pass | CPU: apply / pass | apply / copy \
         | wrapper µs / tensor | kept | apply launches |"
    );
    println!(
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"
    );
    std::io::stdout().flush().unwrap();

    let mut last = None;
    for (name, device) in &backends {
        let head = format!(
            "| {name} | {} | {} | {} |",
            preset.name,
            preset.tensors(),
            preset.parameters()
        );
        match catch_quietly(|| run(preset, device, steps)) {
            Ok(row) => {
                let (wrapper, grad_mask, reselect) = row.wall.overheads();
                let (cpu_wrapper, cpu_grad_mask, cpu_reselect) = row.cpu.overheads();
                let apply_passes = row.wall.apply_passes();
                println!(
                    "{head} {:.1} | {:.1} | {:.1} | {:.1} | {wrapper:.3} | {grad_mask:.3} \
                     | {reselect:.3} | {cpu_wrapper:.3} | {cpu_grad_mask:.3} | {cpu_reselect:.3} \
                     | {:.1} | {:.1} | {:.1} | {apply_passes:.2} | {:.2} | {:.2} | {:.0} \
                     | {:.3} / {:.3} | {} |",
                    ms(row.wall.copy),
                    ms(row.wall.sft),
                    ms(row.wall.wrapper),
                    ms(row.wall.grad_mask),
                    ms(row.wall.pass),
                    ms(row.wall.apply),
                    row.wall.wrapper_mask(),
                    row.cpu.apply_passes(),
                    row.wall.apply.as_secs_f64() / row.wall.copy.as_secs_f64(),
                    (row.wall.wrapper.as_secs_f64() - row.wall.sft.as_secs_f64()) * 1e6
                        / preset.tensors() as f64,
                    row.kept.0,
                    row.kept.1,
                    row.apply_launches,
                );
                last = Some((wrapper, grad_mask, apply_passes));
            }
            Err(message) => println!(
                "{head} failed: {} | | | | | | | | | | | | | | | | | | |",
                failure_cause(&message)
            ),
        }
        std::io::stdout().flush().unwrap();
    }

    let (wrapper, grad_mask, apply) = last.unwrap_or_else(|| {
        eprintln!("no backend ran (see the `skipped:` and `failed:` lines)");
        std::process::exit(1)
    });
    println!(
        "\nstep overhead: wrapper {wrapper:.2}x, grad-mask {grad_mask:.2}x, apply {apply:.2} passes"
    );
}
