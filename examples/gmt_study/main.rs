//! The GMT study: pre-train a small transformer on a base arithmetic task, fine-tune it on a
//! related target task with SFT, GMT (several ratios, per-tensor and global), random masking
//! and HFT, over several seeds, and report exact-match accuracy, loss, forgetting and cost.
//!
//! ```text
//! cargo run --example gmt_study                      # default preset, flex CPU, a few minutes on 2 cores
//! cargo run --example gmt_study -- --preset full     # larger model and data
//! cargo run --example gmt_study --features wgpu -- --device wgpu
//! ```
//! Options: `--preset default|full|smoke`, `--device flex|ndarray|wgpu|vulkan|metal|cuda|rocm`,
//! `--seeds N` (default 5), `--out DIR` (default `results`).

mod data;
mod methods;
mod metric;
mod model;
mod progress;
mod report;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::data::dataloader::DataLoaderBuilder;
use burn::module::Module;
use burn::optim::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
use burn::optim::{AdamWConfig, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor};
use burn::train::metric::{AccuracyMetric, LossMetric};
use burn::train::{Learner, SupervisedTraining};

use data::{PAD, Problem};
use methods::{MaskedModel, Method, SharedMask, device_by_name, launch_timed, method_parts};
use metric::StatsSource;
use model::{LmConfig, TinyLm};
use report::Row;

/// Sizes and schedule of one preset; the same for every method.
#[derive(Debug, Clone)]
struct Preset {
    name: &'static str,
    lm: LmConfig,
    pretrain_items: usize,
    pretrain_epochs: usize,
    finetune_items: usize,
    finetune_epochs: usize,
    test_items: usize,
    batch: usize,
    accumulation: usize,
    pretrain_lr: f64,
    finetune_lr: f64,
}

impl Preset {
    fn by_name(name: &str) -> Result<Self, String> {
        match name {
            "default" => Ok(Self {
                name: "default",
                lm: LmConfig::new(48, 2, 4, 96),
                pretrain_items: 20_000,
                pretrain_epochs: 4,
                finetune_items: 400,
                finetune_epochs: 12,
                test_items: 1000,
                batch: 32,
                accumulation: 2,
                pretrain_lr: 3e-3,
                finetune_lr: 1e-3,
            }),
            "full" => Ok(Self {
                name: "full",
                lm: LmConfig::new(96, 4, 4, 256),
                pretrain_items: 20_000,
                pretrain_epochs: 10,
                finetune_items: 600,
                finetune_epochs: 12,
                test_items: 2000,
                batch: 32,
                accumulation: 4,
                pretrain_lr: 2e-3,
                finetune_lr: 7e-4,
            }),
            // A seconds-long run that exercises every path (used by the tests).
            "smoke" => Ok(Self {
                name: "smoke",
                lm: LmConfig::new(16, 1, 2, 32),
                pretrain_items: 512,
                pretrain_epochs: 1,
                finetune_items: 256,
                finetune_epochs: 2,
                test_items: 128,
                batch: 32,
                accumulation: 2,
                pretrain_lr: 3e-3,
                finetune_lr: 1e-3,
            }),
            other => Err(format!("unknown preset `{other}` (default, full, smoke)")),
        }
    }

    fn optimizer_steps(&self, items: usize, epochs: usize) -> usize {
        items.div_ceil(self.batch).div_ceil(self.accumulation) * epochs
    }
}

struct Args {
    preset: Preset,
    device: Device,
    device_name: String,
    seeds: u64,
    out: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut preset = Preset::by_name("default")?;
    let mut device_name = "flex".to_string();
    let mut seeds = 5;
    let mut out = PathBuf::from("results");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--preset" => preset = Preset::by_name(&value()?)?,
            "--device" => device_name = value()?,
            "--seeds" => seeds = value()?.parse().map_err(|e| format!("--seeds: {e}"))?,
            "--out" => out = PathBuf::from(value()?),
            "-h" | "--help" => {
                println!(
                    "options: --preset default|full  --device flex|ndarray|wgpu|vulkan|metal|cuda|rocm  --seeds N  --out DIR"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown option `{other}` (see --help)")),
        }
    }
    if seeds == 0 {
        return Err("--seeds must be at least 1".into());
    }
    Ok(Args {
        device: device_by_name(&device_name, "gmt_study")?,
        device_name,
        preset,
        seeds,
        out,
    })
}

fn loader(
    problems: Vec<Problem>,
    batch: usize,
    seed: u64,
    device: &Device,
) -> Arc<dyn burn::data::dataloader::DataLoader<data::LmBatch>> {
    DataLoaderBuilder::new(data::LmBatcher)
        .batch_size(batch)
        .shuffle(seed)
        .num_workers(1)
        .set_device(device.clone())
        .build(data::dataset(problems))
}

/// One training run through burn-train's Learner; returns the trained LM and the wall time.
#[allow(clippy::too_many_arguments)]
fn train(
    preset: &Preset,
    dir: &Path,
    lm: TinyLm,
    mask: Option<SharedMask>,
    optim: ModuleOptimizer,
    stats: Option<StatsSource>,
    train_set: Vec<Problem>,
    valid_set: Vec<Problem>,
    epochs: usize,
    lr: f64,
    seed: u64,
    device: &Device,
) -> (TinyLm, f64) {
    let steps = preset.optimizer_steps(train_set.len(), epochs);
    let scheduler = CosineAnnealingLrSchedulerConfig::new(lr, steps)
        .init()
        .expect("valid schedule");
    let learner = Learner::new(MaskedModel { lm, mask }, optim, scheduler);
    let training = SupervisedTraining::new(
        dir,
        loader(train_set, preset.batch, seed, device),
        loader(valid_set, 256, seed, device),
    )
    .metrics((LossMetric::new(), AccuracyMetric::new().with_pad_token(PAD)))
    .grads_accumulation(preset.accumulation)
    .num_epochs(epochs)
    .renderer(Box::new(progress::LineRenderer::new(
        dir.file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned()),
    )));
    let (lm, elapsed) = launch_timed(training, learner, stats)
        .unwrap_or_else(|error| panic!("training failed: {error}"));
    (lm, elapsed * 1e3 / steps as f64)
}

/// Exact match (every answer token right under greedy decoding; with a fixed-length answer,
/// teacher-forced argmax over the answer equals greedy decoding) and mean answer loss.
fn evaluate(lm: &TinyLm, problems: &[Problem], device: &Device) -> (f64, f64) {
    let mut correct = 0usize;
    let mut loss_sum = 0.0;
    for chunk in problems.chunks(256) {
        let batch = burn::data::dataloader::batcher::Batcher::batch(
            &data::LmBatcher,
            chunk.to_vec(),
            device,
        );
        let targets = batch.targets.clone();
        let output = lm.forward_loss(batch.clone());
        loss_sum += output.loss.into_scalar::<f64>() * chunk.len() as f64;
        let predicted: Tensor<2, Int> = lm.forward(batch.inputs).argmax(2).squeeze_dim(2);
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

fn main() {
    let args = parse_args().unwrap_or_else(|err| {
        eprintln!("gmt_study: {err}");
        std::process::exit(2);
    });
    let preset = &args.preset;
    let device = args.device.clone().autodiff();
    let out = &args.out;
    std::fs::create_dir_all(out).expect("create the output directory");
    println!(
        "GMT study, preset `{}`, device {}, {} seeds",
        preset.name, args.device_name, args.seeds
    );

    // Pre-training: once, saved with burn's recorder and reused by every method and seed.
    let checkpoint = out.join(format!("pretrained-{}.bpk", preset.name));
    let base_test = data::split(data::BASE, true, preset.test_items, 1);
    let target_test = data::split(data::TARGET, true, preset.test_items, 2);
    if !checkpoint.exists() {
        println!(
            "\n== pre-training on the base task ({} items, {} epochs)",
            preset.pretrain_items, preset.pretrain_epochs
        );
        device.seed(0);
        let lm = preset.lm.init(&device);
        let (lm, _) = train(
            preset,
            &out.join("runs/pretrain"),
            lm,
            None,
            AdamWConfig::new().with_weight_decay(0.01).init(),
            None,
            data::split(data::BASE, false, preset.pretrain_items, 10),
            base_test[..256.min(base_test.len())].to_vec(),
            preset.pretrain_epochs,
            preset.pretrain_lr,
            0,
            &device,
        );
        lm.save_file(&checkpoint)
            .expect("save the pre-trained checkpoint");
    } else {
        println!(
            "\n== reusing the pre-trained checkpoint {}",
            checkpoint.display()
        );
    }
    let pretrained = || preset.lm.init(&device).load_file(&checkpoint);
    let (base_acc, _) = evaluate(&pretrained().valid(), &base_test, &args.device);
    let (target_acc0, _) = evaluate(&pretrained().valid(), &target_test, &args.device);
    println!(
        "pre-trained model: base exact match {:.2}%, target exact match {:.2}% (before fine-tuning)",
        100.0 * base_acc,
        100.0 * target_acc0
    );

    let ratios = [0.1, 0.2, 0.3, 0.4];
    let mut methods = vec![Method::Sft];
    methods.extend(ratios.iter().map(|&r| Method::Gmt(r)));
    methods.push(Method::GmtGlobal(0.3));
    methods.extend(ratios.iter().map(|&r| Method::Random(r)));
    methods.push(Method::RandomRescaled(0.3));
    methods.push(Method::Hft);

    let adamw = || AdamWConfig::new().with_weight_decay(0.01);
    let stage_steps = preset.optimizer_steps(preset.finetune_items, 1) as u64;
    let mut rows: Vec<Row> = methods
        .iter()
        .map(|m| Row {
            method: m.name(),
            ratio: m.ratio(),
            target_acc: vec![],
            target_loss: vec![],
            base_acc: vec![],
            step_ms: vec![],
            kept: vec![],
        })
        .collect();
    let mut curves: Vec<(String, Vec<f64>)> = Vec::new();

    for seed in 0..args.seeds {
        let train_set = data::split(data::TARGET, false, preset.finetune_items, 100 + seed);
        for (method, row) in methods.iter().zip(rows.iter_mut()) {
            println!("\n== fine-tuning: {} (seed {seed})", method.name());
            let (optim, mask, stats) = method_parts(*method, &adamw(), seed, stage_steps);
            let final_stats = stats.clone();
            let dir = out.join(format!(
                "runs/{}-seed{seed}",
                method.name().replace([' ', '=', '(', ')'], "_")
            ));
            let (lm, step_ms) = train(
                preset,
                &dir,
                pretrained(),
                mask,
                optim,
                stats,
                train_set.clone(),
                target_test[..256.min(target_test.len())].to_vec(),
                preset.finetune_epochs,
                preset.finetune_lr,
                seed,
                &device,
            );
            let (acc, loss) = evaluate(&lm, &target_test, &args.device);
            let (base, _) = evaluate(&lm, &base_test, &args.device);
            let kept = final_stats
                .and_then(|s| s())
                .map_or(1.0, |s| s.kept_fraction());
            println!(
                "   target exact match {:.2}%, target loss {loss:.4}, base exact match {:.2}%, {step_ms:.1} ms/step, kept {:.1}%",
                100.0 * acc,
                100.0 * base,
                100.0 * kept
            );
            row.target_acc.push(acc);
            row.target_loss.push(loss);
            row.base_acc.push(base);
            row.step_ms.push(step_ms);
            row.kept.push(kept);
            if seed == 0 {
                curves.push((method.name(), read_loss_curve(&dir)));
            }
        }
    }

    write_report(&args, &rows, &curves, base_acc, target_acc0);
}

/// The per-epoch training loss burn-train logged for a run (empty if none was found).
fn read_loss_curve(dir: &Path) -> Vec<f64> {
    let mut epochs = Vec::new();
    for epoch in 1.. {
        let file = dir.join(format!("train/epoch-{epoch}/Loss.log"));
        let Ok(text) = std::fs::read_to_string(&file) else {
            break;
        };
        let values: Vec<f64> = text
            .lines()
            .filter_map(|l| l.split(',').next()?.trim().parse().ok())
            .collect();
        if values.is_empty() {
            break;
        }
        epochs.push(values.iter().sum::<f64>() / values.len() as f64);
    }
    epochs
}

fn write_report(
    args: &Args,
    rows: &[Row],
    curves: &[(String, Vec<f64>)],
    base_acc: f64,
    target_acc0: f64,
) {
    let sft_ms = report::mean_std(&rows[0].step_ms).0;
    let table = report::markdown_table(rows, sft_ms);
    let header = format!(
        "Preset `{}`, device `{}`, {} seeds (mean ± std). Pre-trained model before fine-tuning: base exact match {:.2}%, target exact match {:.2}%.\n\n",
        args.preset.name,
        args.device_name,
        args.seeds,
        100.0 * base_acc,
        100.0 * target_acc0
    );
    println!("\n{header}{table}");
    std::fs::write(args.out.join("results.md"), format!("{header}{table}"))
        .expect("write results.md");

    let by_ratio = |prefix: &str| -> report::Points {
        rows.iter()
            .filter(|r| r.method.starts_with(prefix) && !r.method.contains("global"))
            .map(|r| {
                let (m, s) = report::mean_std(&r.target_acc);
                (r.ratio.unwrap(), 100.0 * m, 100.0 * s)
            })
            .collect()
    };
    let hline = |name: &str| {
        rows.iter()
            .find(|r| r.method.starts_with(name))
            .map(|r| (r.method.clone(), 100.0 * report::mean_std(&r.target_acc).0))
    };
    let hlines: Vec<(String, f64)> = ["SFT", "GMT global", "HFT"]
        .iter()
        .filter_map(|n| hline(n))
        .collect();
    let accuracy = report::line_chart(
        "Target exact match vs mask ratio",
        "mask ratio r",
        "exact match (%)",
        &[
            ("GMT (per tensor)".into(), by_ratio("GMT r=")),
            ("Random mask".into(), by_ratio("Random")),
        ],
        &hlines,
    );
    std::fs::write(args.out.join("accuracy_vs_ratio.svg"), accuracy).expect("write plot");
    let series: Vec<(String, report::Points)> = curves
        .iter()
        .filter(|(name, c)| {
            !c.is_empty()
                && (name == "SFT"
                    || name == "GMT r=0.3"
                    || name.starts_with("GMT global")
                    || name.starts_with("Random mask r=0.3")
                    || name.starts_with("HFT"))
        })
        .map(|(name, c)| {
            (
                name.clone(),
                c.iter()
                    .enumerate()
                    .map(|(i, &v)| ((i + 1) as f64, v, 0.0))
                    .collect(),
            )
        })
        .collect();
    let loss = report::line_chart(
        "Training loss per epoch (seed 0)",
        "epoch",
        "answer cross-entropy",
        &series,
        &[],
    );
    std::fs::write(args.out.join("loss_curves.svg"), loss).expect("write plot");
    println!(
        "wrote {}/results.md, accuracy_vs_ratio.svg, loss_curves.svg",
        args.out.display()
    );
}
