//! The `finetune` command: the top blocks of the whole pretrained model fine-tuned on the
//! arithmetic task by every arm over several seeds, each arm's learning rate chosen on a dev
//! split, scored on the held-out split and on the forgetting probe, compared with SFT (paired
//! over seeds, and item by item), written out as markdown and SVG plots.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Device;

use crate::LlmError;
use crate::cache::{Cached, ItemScores, cache_examples, score};
use crate::gguf::Gguf;
use crate::model::{Llama, LlamaConfig};
use crate::task::{PROBE_PROMPTS, digit_ids, problem_examples, problems, record_probe};
use crate::tokenizer::Tokenizer;
use crate::train::{Arm, Outcome, Schedule, finetune};
use burn_gmt_lab::charts::{Points, line_chart};
use burn_gmt_lab::item_tests::{mcnemar, paired_permutation_p};
use burn_gmt_lab::methods::Method;
use burn_gmt_lab::stats::{mean_std, paired};

/// Everything the `finetune` command was asked for.
#[derive(Debug, Clone)]
pub struct FinetuneArgs {
    /// The GGUF file.
    pub model: PathBuf,
    /// Arms, SFT first (the others are compared with it).
    pub arms: Vec<Arm>,
    /// Seeds (each its own shuffling of the training examples and its own mask draws).
    pub seeds: u64,
    /// Blocks trained at the top of the model (with the final norm).
    pub trainable_blocks: usize,
    /// The schedule; its `lr` is replaced by each grid point.
    pub schedule: Schedule,
    /// Peak learning rates tried per arm on seed 0; the lowest dev NLL wins.
    pub lr_grid: Vec<f64>,
    /// Training problems.
    pub train_items: usize,
    /// Dev problems (held-out split, disjoint from the test problems).
    pub dev_items: usize,
    /// Held-out test problems.
    pub test_items: usize,
    /// Most tokens of each recorded probe answer.
    pub probe_tokens: usize,
    /// Output folder.
    pub out: PathBuf,
    /// Device to run on.
    pub device: Device,
    /// Name of the device, for the report.
    pub device_name: String,
    /// The command line, for the report.
    pub command: String,
}

/// One arm's run on one seed.
struct RunResult {
    lr: f64,
    test: ItemScores,
    probe: ItemScores,
    step_ms: f64,
    kept: f64,
    /// `‖θ − θ_SFT‖ / ‖θ_SFT − θ_base‖` over the trained weights (same seed).
    distance_from_sft: f64,
    /// Share of the trained weights exactly at their base value.
    held_still: f64,
    train_curve: Vec<f64>,
    dev_curve: Vec<f64>,
}

/// One arm over all seeds, with its learning-rate grid on seed 0.
struct ArmResults {
    arm: Arm,
    /// (learning rate, dev NLL) on seed 0.
    grid: Vec<(f64, f64)>,
    runs: Vec<RunResult>,
}

/// The scored data, the cache and the base model's scores.
struct Data {
    train: Vec<Cached>,
    dev: Vec<Cached>,
    test: Vec<Cached>,
    probe: Vec<Cached>,
    digits: Vec<u32>,
}

const EVAL_BATCH: usize = 32;

/// Wall time of each phase, for the report.
#[derive(Default)]
struct Timings(Vec<(String, f64)>);

impl Timings {
    fn time<T>(&mut self, phase: &str, work: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = work();
        let secs = start.elapsed().as_secs_f64();
        println!("   ({phase}: {secs:.0} s)");
        self.0.push((phase.to_string(), secs));
        out
    }
}

/// Runs the whole experiment and writes `results.md`, `probe.md` (the recorded answers) and the
/// plots into `args.out`; returns the report.
pub fn run(args: &FinetuneArgs) -> Result<String, LlmError> {
    let started = Instant::now();
    let mut timings = Timings::default();
    if args.arms.first() != Some(&Arm::Method(Method::Sft)) {
        return Err(LlmError::Usage(
            "--method: the arms are compared with SFT, which must come first".into(),
        ));
    }
    let device = &args.device;
    let gguf = Gguf::open(&args.model)?;
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    let config = LlamaConfig::from_gguf(&gguf, 512)?;
    let base = Llama::from_gguf(&gguf, &config, device)?;
    drop(gguf);
    let base_top = base.top(args.trainable_blocks)?;
    let frozen = base.layers() - args.trainable_blocks;
    std::fs::create_dir_all(&args.out).map_err(|source| LlmError::Io {
        path: args.out.display().to_string(),
        source,
    })?;
    println!(
        "model {}: {} blocks, the top {} trained on the cached output of {frozen}; device {}; arms {}; {} seeds",
        args.model.display(),
        base.layers(),
        args.trainable_blocks,
        args.device_name,
        args.arms
            .iter()
            .map(Arm::name)
            .collect::<Vec<_>>()
            .join(", "),
        args.seeds,
    );

    println!(
        "recording the base model's answers to {} probe prompts",
        PROBE_PROMPTS.len()
    );
    let probe = timings.time("probe answers", || {
        record_probe(&base, &tokenizer, args.probe_tokens, device)
    })?;
    write_probe(&args.out, &tokenizer, &probe)?;
    let held_out = problems(true, args.test_items + args.dev_items, 7)?;
    let (test, dev) = held_out.split_at(args.test_items);
    let train = problems(false, args.train_items, 100)?;
    let data = timings.time(
        "cache of the frozen prefix",
        || -> Result<Data, LlmError> {
            let cache = |problems: &[crate::task::Problem]| {
                cache_examples(
                    &base,
                    &problem_examples(&tokenizer, problems)?,
                    frozen,
                    EVAL_BATCH,
                    device,
                )
            };
            Ok(Data {
                train: cache(&train)?,
                dev: cache(dev)?,
                test: cache(test)?,
                probe: cache_examples(&base, &probe, frozen, EVAL_BATCH, device)?,
                digits: digit_ids(&tokenizer)?,
            })
        },
    )?;
    drop(base);
    let base_test = score(
        &base_top,
        &data.test,
        EVAL_BATCH,
        Some(&data.digits),
        device,
    )?;
    let base_probe = score(&base_top, &data.probe, EVAL_BATCH, None, device)?;
    println!(
        "base model: held-out exact match {:.2}%, answer NLL {:.4}; probe NLL {:.4}",
        100.0 * base_test.exact_match(),
        base_test.nll(),
        base_probe.nll()
    );
    let base_weights = base_top.trained_weights();

    let mut results: Vec<ArmResults> = args
        .arms
        .iter()
        .map(|&arm| ArmResults {
            arm,
            grid: Vec::new(),
            runs: Vec::new(),
        })
        .collect();
    let train_phase = Instant::now();
    for seed in 0..args.seeds {
        let mut sft_weights = Vec::new();
        for arm_results in results.iter_mut() {
            let arm = arm_results.arm;
            let lrs = if seed == 0 {
                args.lr_grid.clone()
            } else {
                vec![arm_results.runs[0].lr]
            };
            // Each learning rate trained and scored on the dev split; the winner (the lowest
            // dev NLL) is scored on the test problems and the probe.
            let mut best: Option<(f64, f64, Outcome)> = None;
            for lr in lrs {
                println!("\n== {} (seed {seed}, lr {lr})", arm.name());
                device.seed(seed);
                let schedule = Schedule {
                    lr,
                    ..args.schedule.clone()
                };
                let dir = args
                    .out
                    .join(format!("runs/{}-lr{lr}-seed{seed}", arm.folder()));
                let outcome = finetune(
                    base_top.clone(),
                    arm,
                    &schedule,
                    &data.train,
                    &data.dev,
                    seed,
                    &dir,
                    device,
                )?;
                let dev_nll = score(&outcome.top, &data.dev, EVAL_BATCH, None, device)?.nll();
                println!(
                    "   dev NLL {dev_nll:.4}; {:.0} ms/step, kept {:.1}%",
                    outcome.step_ms,
                    100.0 * outcome.kept
                );
                if seed == 0 {
                    arm_results.grid.push((lr, dev_nll));
                }
                if best.as_ref().is_none_or(|(_, b, _)| dev_nll < *b) {
                    best = Some((lr, dev_nll, outcome));
                }
            }
            let (lr, _, outcome) = best.expect("the grid has a learning rate");
            let test = score(
                &outcome.top,
                &data.test,
                EVAL_BATCH,
                Some(&data.digits),
                device,
            )?;
            let probe = score(&outcome.top, &data.probe, EVAL_BATCH, None, device)?;
            println!(
                "   lr {lr}: held-out exact match {:.2}%, answer NLL {:.4}; probe NLL {:.4}",
                100.0 * test.exact_match(),
                test.nll(),
                probe.nll(),
            );
            let weights = outcome.top.trained_weights();
            let mut run = RunResult {
                lr,
                test,
                probe,
                step_ms: outcome.step_ms,
                kept: outcome.kept,
                distance_from_sft: 0.0,
                held_still: held_still(&weights, &base_weights),
                train_curve: outcome.train_curve,
                dev_curve: outcome.dev_curve,
            };
            if arm == Arm::Method(Method::Sft) {
                sft_weights = weights;
            } else {
                run.distance_from_sft = distance(&weights, &sft_weights, &base_weights);
            }
            arm_results.runs.push(run);
        }
    }
    timings
        .0
        .push(("fine-tuning".into(), train_phase.elapsed().as_secs_f64()));
    timings
        .0
        .push(("total".into(), started.elapsed().as_secs_f64()));
    write_report(args, frozen, &results, &timings, &base_test, &base_probe)
}

/// `‖a − sft‖ / ‖sft − base‖`.
fn distance(a: &[f32], sft: &[f32], base: &[f32]) -> f64 {
    let norm = |x: &[f32], y: &[f32]| {
        x.iter()
            .zip(y)
            .map(|(p, q)| (f64::from(*p) - f64::from(*q)).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    norm(a, sft) / norm(sft, base).max(f64::MIN_POSITIVE)
}

/// Share of `weights` exactly equal to `base`.
fn held_still(weights: &[f32], base: &[f32]) -> f64 {
    weights.iter().zip(base).filter(|(w, b)| w == b).count() as f64 / weights.len().max(1) as f64
}

/// Writes `text` to `dir/name`.
fn write_file(dir: &Path, name: &str, text: &str) -> Result<(), LlmError> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|source| LlmError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn write_probe(
    dir: &Path,
    tokenizer: &Tokenizer,
    probe: &[crate::task::Example],
) -> Result<(), LlmError> {
    let mut answers = String::from("# Forgetting probe: the base model's greedy answers\n\n");
    for (prompt, example) in PROBE_PROMPTS.iter().zip(probe) {
        let answer = tokenizer.decode(&example.answer).replace('\n', " ");
        writeln!(answers, "- {prompt} → {answer}").unwrap();
    }
    write_file(dir, "probe.md", &answers)
}

fn write_report(
    args: &FinetuneArgs,
    frozen: usize,
    results: &[ArmResults],
    timings: &Timings,
    base_test: &ItemScores,
    base_probe: &ItemScores,
) -> Result<String, LlmError> {
    let s = &args.schedule;
    let steps = s.steps(args.train_items);
    let mut md = String::new();
    let w = &mut md;
    writeln!(
        w,
        "Device `{}`; the top {} of the model's blocks and the final norm trained (tied embedding frozen) on the cached output of the {} below; {} training problems, {} epochs of {} examples per step ({} optimizer steps, {} of warm-up from a tenth of the peak rate, then cosine to zero); AdamW, epsilon 1e-8, no weight decay; {} seeds; peak learning rate per arm from {:?} by the dev NLL of seed 0 ({} dev problems); {} held-out test problems; {} probe prompts.\n",
        args.device_name,
        args.trainable_blocks,
        frozen,
        args.train_items,
        s.epochs,
        s.batch,
        steps,
        s.warmup.min(steps.saturating_sub(1)),
        args.seeds,
        args.lr_grid,
        args.dev_items,
        args.test_items,
        PROBE_PROMPTS.len()
    )
    .unwrap();
    let phases: Vec<String> = timings
        .0
        .iter()
        .map(|(p, secs)| format!("{p} {:.1} min", secs / 60.0))
        .collect();
    writeln!(w, "Wall time: {}.\n", phases.join(", ")).unwrap();
    writeln!(
        w,
        "Before fine-tuning: held-out exact match {:.2}%, answer NLL {:.4} per token; probe NLL {:.4} (the base model's own greedy answers).\n",
        100.0 * base_test.exact_match(),
        base_test.nll(),
        base_probe.nll()
    )
    .unwrap();

    writeln!(w, "### Learning-rate grid (seed 0, dev NLL per token)\n").unwrap();
    let header: Vec<String> = args.lr_grid.iter().map(|lr| format!("lr {lr}")).collect();
    writeln!(w, "| arm | {} | chosen |", header.join(" | ")).unwrap();
    writeln!(w, "|---|{}---:|", "---:|".repeat(args.lr_grid.len())).unwrap();
    for r in results {
        let cells: Vec<String> = r.grid.iter().map(|(_, nll)| format!("{nll:.4}")).collect();
        writeln!(
            w,
            "| {} | {} | {} |",
            r.arm.name(),
            cells.join(" | "),
            r.runs[0].lr
        )
        .unwrap();
    }

    writeln!(w, "\n### Results (mean ± std over seeds)\n").unwrap();
    writeln!(
        w,
        "| arm | held-out answer NLL | exact match (%) | forgetting: probe NLL | distance from SFT | held still (%) | kept at the last step (%) | ms / step |"
    )
    .unwrap();
    writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|").unwrap();
    let pm = |v: Vec<f64>, scale: f64, digits: usize| {
        let (m, sd) = mean_std(&v);
        format!("{:.*} ± {:.*}", digits, scale * m, digits, scale * sd)
    };
    for r in results {
        let runs = &r.runs;
        let of = |f: &dyn Fn(&RunResult) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
        writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {:.1} | {:.0} |",
            r.arm.name(),
            pm(of(&|x| x.test.nll()), 1.0, 4),
            pm(of(&|x| x.test.exact_match()), 100.0, 2),
            pm(of(&|x| x.probe.nll()), 1.0, 4),
            if r.arm == Arm::Method(Method::Sft) {
                "–".into()
            } else {
                pm(of(&|x| x.distance_from_sft), 1.0, 3)
            },
            pm(of(&|x| x.held_still), 100.0, 2),
            100.0 * mean_std(&of(&|x| x.kept)).0,
            mean_std(&of(&|x| x.step_ms)).0
        )
        .unwrap();
    }

    let sft = &results[0];
    if args.seeds >= 2 {
        writeln!(
            w,
            "\n### Against SFT, paired over seeds (mean difference arm − SFT, 95% t interval, p)\n"
        )
        .unwrap();
        writeln!(
            w,
            "| arm | Δ held-out answer NLL | Δ exact match (points) | Δ probe NLL (forgetting) |"
        )
        .unwrap();
        writeln!(w, "|---|---:|---:|---:|").unwrap();
        for r in &results[1..] {
            let cell = |f: &dyn Fn(&RunResult) -> f64, scale: f64| {
                let a: Vec<f64> = sft.runs.iter().map(|x| scale * f(x)).collect();
                let b: Vec<f64> = r.runs.iter().map(|x| scale * f(x)).collect();
                let p = paired(&a, &b);
                format!(
                    "{:+.4} [{:+.4}, {:+.4}], p = {:.3}",
                    p.mean, p.low, p.high, p.p
                )
            };
            writeln!(
                w,
                "| {} | {} | {} | {} |",
                r.arm.name(),
                cell(&|x| x.test.nll(), 1.0),
                cell(&|x| x.test.exact_match(), 100.0),
                cell(&|x| x.probe.nll(), 1.0)
            )
            .unwrap();
        }
    }
    writeln!(
        w,
        "\n### Against SFT, item by item on each seed\n\nPaired permutation test (9,999 sign flips) of the per-item NLL per token, on the held-out problems and on the probe answers, and McNemar's exact test of exact match. These tests treat the items as the only source of chance: they ignore training noise (a different seed moves every item together), which only the comparison over seeds above measures.\n"
    )
    .unwrap();
    writeln!(
        w,
        "| arm | seed | Δ answer NLL, p | exact match: only SFT / only arm, p | Δ probe NLL, p |"
    )
    .unwrap();
    writeln!(w, "|---|---:|---:|---:|---:|").unwrap();
    for r in &results[1..] {
        for (seed, (run, base)) in (0u64..).zip(r.runs.iter().zip(&sft.runs)) {
            let item = |a: &ItemScores, b: &ItemScores, key: u64| {
                let p = paired_permutation_p(&a.item_nll(), &b.item_nll(), 9_999, key);
                format!("{:+.4}, p = {:.4}", b.nll() - a.nll(), p)
            };
            let m = mcnemar(&base.test.exact, &run.test.exact);
            writeln!(
                w,
                "| {} | {seed} | {} | {} / {}, p = {:.4} | {} |",
                r.arm.name(),
                item(&base.test, &run.test, seed),
                m.only_a,
                m.only_b,
                m.p,
                item(&base.probe, &run.probe, 1000 + seed)
            )
            .unwrap();
        }
    }
    writeln!(
        w,
        "\nDistance from SFT: `‖θ − θ_SFT‖ / ‖θ_SFT − θ_base‖` over the trained weights, against SFT's run on the same seed. Held still: the share of trained weights exactly at their base value after fine-tuning."
    )
    .unwrap();

    let write = |name: &str, text: &str| write_file(&args.out, name, text);
    write(
        "results.md",
        &format!("Command: `{}`\n\n{md}", args.command),
    )?;
    let curve = |pick: &dyn Fn(&RunResult) -> &Vec<f64>| -> Vec<(String, Points)> {
        results
            .iter()
            .map(|r| {
                let points = pick(&r.runs[0])
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| ((i + 1) as f64, v, 0.0))
                    .collect();
                (r.arm.name(), points)
            })
            .collect()
    };
    write(
        "dev_curves.svg",
        &line_chart(
            "Dev answer loss after each epoch (seed 0, each arm at its learning rate)",
            "epoch",
            "dev answer cross-entropy",
            &curve(&|r| &r.dev_curve),
            &[("base model (held-out)".into(), base_test.nll())],
        ),
    )?;
    write(
        "train_curves.svg",
        &line_chart(
            "Training answer loss per epoch (seed 0)",
            "epoch",
            "training answer cross-entropy",
            &curve(&|r| &r.train_curve),
            &[],
        ),
    )?;
    let points: Vec<(String, Points)> = results
        .iter()
        .map(|r| {
            let nll: Vec<f64> = r.runs.iter().map(|x| x.probe.nll()).collect();
            let test: Vec<f64> = r.runs.iter().map(|x| x.test.nll()).collect();
            let (t, sd) = mean_std(&test);
            (r.arm.name(), vec![(mean_std(&nll).0, t, sd)])
        })
        .collect();
    write(
        "learning_vs_forgetting.svg",
        &line_chart(
            "Held-out answer NLL vs probe NLL (lower is better on both)",
            "probe NLL per token (forgetting)",
            "held-out answer NLL per token",
            &points,
            &[("base model".into(), base_test.nll())],
        ),
    )?;
    Ok(md)
}
