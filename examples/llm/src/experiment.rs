//! The `finetune` command: every method over several seeds on the addition task, scored on the
//! held-out split and on the forgetting probe, written out as a markdown table and SVG plots.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::LlmError;
use crate::gguf::Gguf;
use crate::model::{Llama, LlamaConfig};
use crate::task::{
    Example, PROBE_PROMPTS, Scores, addition_examples, additions, record_probe, score,
};
use crate::tokenizer::Tokenizer;
use crate::train::{Schedule, finetune, folder_name};
use burn_gmt_lab::charts::{Points, line_chart};
use burn_gmt_lab::methods::Method;
use burn_gmt_lab::stats::mean_std;

/// Everything the `finetune` command was asked for.
#[derive(Debug, Clone)]
pub struct FinetuneArgs {
    /// The GGUF file.
    pub model: PathBuf,
    /// Methods, run in this order for each seed.
    pub methods: Vec<Method>,
    /// Seeds (each draws its own training questions and mask draws).
    pub seeds: u64,
    /// Keep only the first blocks (a quick CPU run); all when `None`.
    pub layers: Option<usize>,
    /// Optimizer schedule.
    pub schedule: Schedule,
    /// Distinct training questions per seed.
    pub train_items: usize,
    /// Held-out questions scored after fine-tuning.
    pub test_items: usize,
    /// Most tokens of each recorded probe answer.
    pub probe_tokens: usize,
    /// Output folder.
    pub out: PathBuf,
    /// Device to run on and its name.
    pub device: Device,
    /// Name of the device, for the report.
    pub device_name: String,
    /// The command line, for the report.
    pub command: String,
}

/// One method over all seeds.
struct Row {
    method: Method,
    exact: Vec<f64>,
    test_nll: Vec<f64>,
    probe_nll: Vec<f64>,
    step_ms: Vec<f64>,
    kept: Vec<f64>,
}

/// Runs the whole experiment and writes `results.md`, `probe.md` (the recorded answers),
/// `loss_curves.svg` and `accuracy_vs_forgetting.svg` into `args.out`; returns the table.
pub fn run(args: &FinetuneArgs) -> Result<String, LlmError> {
    let gguf = Gguf::open(&args.model)?;
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    let config = LlamaConfig::from_gguf(&gguf, 512)?;
    let device = &args.device;
    let base = Llama::from_gguf(&gguf, &config, args.layers, device)?;
    drop(gguf);
    std::fs::create_dir_all(&args.out).map_err(|source| LlmError::Io {
        path: args.out.display().to_string(),
        source,
    })?;
    println!(
        "model {} ({} of {} blocks), device {}, methods {}, {} seeds, {} steps of {}×{} examples",
        args.model.display(),
        base.layers(),
        config.layers,
        args.device_name,
        args.methods
            .iter()
            .map(Method::name)
            .collect::<Vec<_>>()
            .join(", "),
        args.seeds,
        args.schedule.steps,
        args.schedule.batch,
        args.schedule.accumulation
    );

    let test = addition_examples(&tokenizer, &additions(true, args.test_items, 7))?;
    let valid: Vec<Example> = test[..test.len().min(2 * args.schedule.batch)].to_vec();
    println!(
        "recording the base model's answers to {} probe prompts",
        PROBE_PROMPTS.len()
    );
    let probe = record_probe(&base, &tokenizer, args.probe_tokens, device)?;
    let mut answers = String::from("# Forgetting probe: the base model's greedy answers\n\n");
    for (prompt, example) in PROBE_PROMPTS.iter().zip(&probe) {
        let answer = tokenizer.decode(&example.answer).replace('\n', " ");
        writeln!(answers, "- {prompt} → {answer}").unwrap();
    }
    write_file(&args.out, "probe.md", &answers)?;
    let eval_batch = 16;
    let base_test = score(&base, &test, eval_batch, device)?;
    let base_probe = score(&base, &probe, eval_batch, device)?;
    println!(
        "base model: held-out exact match {:.2}%, answer NLL {:.4}; probe NLL {:.4}",
        100.0 * base_test.exact_match,
        base_test.nll,
        base_probe.nll
    );

    let mut rows: Vec<Row> = args
        .methods
        .iter()
        .map(|&method| Row {
            method,
            exact: vec![],
            test_nll: vec![],
            probe_nll: vec![],
            step_ms: vec![],
            kept: vec![],
        })
        .collect();
    let mut curves = Vec::new();
    for seed in 0..args.seeds {
        let train = addition_examples(&tokenizer, &additions(false, args.train_items, 100 + seed))?;
        for row in rows.iter_mut() {
            println!("\n== {} (seed {seed})", row.method.name());
            device.seed(seed);
            let dir = args
                .out
                .join(format!("runs/{}-seed{seed}", folder_name(row.method)));
            let outcome = finetune(
                base.clone(),
                row.method,
                &args.schedule,
                &train,
                valid.clone(),
                seed,
                &dir,
                device,
            )?;
            let Scores { exact_match, nll } = score(&outcome.model, &test, eval_batch, device)?;
            let probe_nll = score(&outcome.model, &probe, eval_batch, device)?.nll;
            println!(
                "   held-out exact match {:.2}%, answer NLL {nll:.4}, probe NLL {probe_nll:.4} (base {:.4}), {:.0} ms/step, kept {:.1}%",
                100.0 * exact_match,
                base_probe.nll,
                outcome.step_ms,
                100.0 * outcome.kept
            );
            row.exact.push(exact_match);
            row.test_nll.push(nll);
            row.probe_nll.push(probe_nll);
            row.step_ms.push(outcome.step_ms);
            row.kept.push(outcome.kept);
            if seed == 0 {
                curves.push((
                    row.method.name(),
                    loss_curve(&dir, args.schedule.accumulation),
                ));
            }
        }
    }
    let report = write_report(args, &rows, &curves, base_test, base_probe)?;
    Ok(report)
}

/// Writes `text` to `dir/name`.
fn write_file(dir: &Path, name: &str, text: &str) -> Result<(), LlmError> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|source| LlmError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// burn-train's per-iteration training loss of a run, averaged per optimizer step.
fn loss_curve(dir: &Path, accumulation: usize) -> Vec<f64> {
    let Ok(text) = std::fs::read_to_string(dir.join("train/epoch-1/Loss.log")) else {
        return Vec::new();
    };
    let values: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split(',').next()?.trim().parse().ok())
        .collect();
    values
        .chunks(accumulation.max(1))
        .map(|c| c.iter().sum::<f64>() / c.len() as f64)
        .collect()
}

fn write_report(
    args: &FinetuneArgs,
    rows: &[Row],
    curves: &[(String, Vec<f64>)],
    base_test: Scores,
    base_probe: Scores,
) -> Result<String, LlmError> {
    let s = &args.schedule;
    let mut md = String::new();
    let pm = |v: &[f64], scale: f64, digits: usize| {
        let (m, sd) = mean_std(v);
        format!("{:.*} ± {:.*}", digits, scale * m, digits, scale * sd)
    };
    writeln!(
        md,
        "Device `{}`, {} of the model's blocks, {} seeds (mean ± std), {} optimizer steps of {} × {} examples, peak learning rate {}, AdamW (weight decay {}), warm-up then cosine.\n",
        args.device_name,
        args.layers.map_or("all".to_string(), |l| l.to_string()),
        args.seeds,
        s.steps,
        s.batch,
        s.accumulation,
        s.lr,
        s.weight_decay
    )
    .unwrap();
    writeln!(
        md,
        "Before fine-tuning: held-out exact match {:.2}%, answer NLL {:.4}; probe NLL {:.4} (the base model's own greedy answers, so the lowest it gets).\n",
        100.0 * base_test.exact_match,
        base_test.nll,
        base_probe.nll
    )
    .unwrap();
    md.push_str("| method | held-out exact match (%) | held-out answer NLL | probe NLL (forgetting) | ms / step | vs SFT | kept (%) |\n");
    md.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
    let sft_ms = rows
        .iter()
        .find(|r| r.method == Method::Sft)
        .map(|r| mean_std(&r.step_ms).0);
    for r in rows {
        let ms = mean_std(&r.step_ms).0;
        writeln!(
            md,
            "| {} | {} | {} | {} | {:.0} | {} | {:.1} |",
            r.method.name(),
            pm(&r.exact, 100.0, 2),
            pm(&r.test_nll, 1.0, 4),
            pm(&r.probe_nll, 1.0, 4),
            ms,
            sft_ms.map_or("–".into(), |b| format!("{:.2}×", ms / b)),
            100.0 * mean_std(&r.kept).0
        )
        .unwrap();
    }
    let write = |name: &str, text: &str| write_file(&args.out, name, text);
    write(
        "results.md",
        &format!("Command: `{}`\n\n{md}", args.command),
    )?;

    let series: Vec<(String, Points)> = curves
        .iter()
        .filter(|(_, c)| !c.is_empty())
        .map(|(name, c)| {
            let points = c
                .iter()
                .enumerate()
                .map(|(i, &v)| ((i + 1) as f64, v, 0.0))
                .collect();
            (name.clone(), points)
        })
        .collect();
    if !series.is_empty() {
        write(
            "loss_curves.svg",
            &line_chart(
                "Training loss per optimizer step (seed 0)",
                "optimizer step",
                "answer cross-entropy",
                &series,
                &[],
            ),
        )?;
    }
    let points: Vec<(String, Points)> = rows
        .iter()
        .map(|r| {
            let (nll, _) = mean_std(&r.probe_nll);
            let (acc, sd) = mean_std(&r.exact);
            (r.method.name(), vec![(nll, 100.0 * acc, 100.0 * sd)])
        })
        .collect();
    write(
        "accuracy_vs_forgetting.svg",
        &line_chart(
            "Held-out exact match vs probe NLL (lower NLL: less forgetting)",
            "probe NLL per token",
            "exact match (%)",
            &points,
            &[("base model".into(), 100.0 * base_test.exact_match)],
        ),
    )?;
    Ok(md)
}
