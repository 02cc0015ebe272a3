//! The study's report (`results.md`: the protocol first, then the numbers and what they
//! show), the per-run table (`runs.csv`) and its plots.

use std::fmt::Write;
use std::path::Path;

use burn_gmt_lab::charts::{Points, line_chart, scatter_chart};
use burn_gmt_lab::methods::Method;
use burn_gmt_lab::stats::{self, Paired, mean_std};

use crate::Runs;
use crate::experiment::{self, Checkpoint, Preset, RunResult, RunSpec, WARM_UP_STEPS};

/// The first epoch (1-based) at which `curve` reaches its maximum, and that maximum.
pub fn peak(curve: &[f64]) -> (usize, f64) {
    curve.iter().enumerate().fold(
        (0, f64::MIN),
        |best, (i, &v)| if v > best.1 { (i + 1, v) } else { best },
    )
}

/// The grid's learning rate with the best mean final dev exact match for `method` (the
/// smallest of tied ones).
pub fn best_lr(preset: &Preset, runs: &Runs, method: Method) -> f64 {
    let mut best = (preset.lr_grid[0], f64::MIN);
    for &lr in &preset.lr_grid {
        let (dev, _) = mean_std(
            &grid_runs(preset, runs, method, lr)
                .iter()
                .map(|r| r.dev_final())
                .collect::<Vec<_>>(),
        );
        if dev > best.1 {
            best = (lr, dev);
        }
    }
    best.0
}

fn grid_runs<'a>(preset: &Preset, runs: &'a Runs, method: Method, lr: f64) -> Vec<&'a RunResult> {
    (0..preset.grid_checkpoints)
        .flat_map(|checkpoint| (0..preset.grid_seeds).map(move |seed| (checkpoint, seed)))
        .map(|(checkpoint, seed)| {
            runs.get(
                preset,
                &RunSpec {
                    checkpoint,
                    seed,
                    method,
                    lr,
                },
            )
        })
        .collect()
}

/// Everything the report is written from.
pub struct Study<'a> {
    pub preset: &'a Preset,
    pub device_name: &'a str,
    pub command: &'a str,
    pub checkpoints: &'a [Checkpoint],
    pub runs: &'a Runs,
    pub grid: &'a [RunSpec],
    pub test: &'a [RunSpec],
    /// Each method's chosen learning rate, in the preset's method order.
    pub chosen: &'a [f64],
    /// Fraction of the test items with a digit the fine-tuning inputs never have.
    pub shifted_fraction: f64,
    pub wall_s: f64,
}

impl Study<'_> {
    /// The test runs of `method`, in (checkpoint, seed) order: the pairs of every comparison.
    fn test_runs(&self, method: Method) -> Vec<(&RunSpec, &RunResult)> {
        self.test
            .iter()
            .filter(|s| s.method == method)
            .map(|s| (s, self.runs.get(self.preset, s)))
            .collect()
    }

    fn scores(&self, method: Method, score: fn(&RunResult) -> f64) -> Vec<f64> {
        self.test_runs(method)
            .iter()
            .map(|(_, r)| score(r))
            .collect()
    }

    fn sft(&self) -> Method {
        self.preset.methods[0]
    }
}

fn pct(v: f64) -> String {
    format!("{:.1}", 100.0 * v)
}

fn pct_sd(values: &[f64]) -> String {
    let (m, s) = mean_std(values);
    format!("{:.1} ± {:.1}", 100.0 * m, 100.0 * s)
}

/// `+1.2 [−0.3, +2.7]` in points.
fn interval(p: &Paired) -> String {
    format!(
        "{:+.1} [{:+.1}, {:+.1}]",
        100.0 * p.mean,
        100.0 * p.low,
        100.0 * p.high
    )
}

/// A p-value for a table cell: `0.0123`, or `< 0.0001`.
fn p_value(p: f64) -> String {
    if p < 1e-4 {
        "< 0.0001".into()
    } else {
        format!("{p:.4}")
    }
}

/// A p-value in a sentence: `p = 0.0123`, or `p < 0.0001`.
fn p_clause(p: f64) -> String {
    match p < 1e-4 {
        true => "p < 0.0001".into(),
        false => format!("p = {p:.4}"),
    }
}

/// Writes `results.md`, `runs.csv` and the plots into `out`; with `compare`, also
/// `comparison.md` against that directory's `runs.csv`.
pub fn write(study: &Study, out: &Path, compare: Option<&Path>) {
    let mut md = String::new();
    protocol(study, &mut md);
    checkpoints(study, &mut md);
    regime(study, &mut md);
    grid(study, &mut md);
    results(study, &mut md);
    differences(study, &mut md);
    md.push_str(
        "\n![Target exact match against retention](target_vs_retention.svg)\n\n\
         ![Dev exact match per epoch](dev_curves.svg)\n",
    );
    conclusion(study, &mut md);
    std::fs::write(out.join("results.md"), &md).expect("write results.md");
    std::fs::write(out.join("runs.csv"), runs_csv(study)).expect("write runs.csv");
    std::fs::write(
        out.join("target_vs_retention.svg"),
        target_vs_retention(study),
    )
    .expect("write plot");
    std::fs::write(out.join("dev_curves.svg"), dev_curves(study)).expect("write plot");
    println!("\n{md}");
    if let Some(other) = compare {
        let text = comparison(study, out, other);
        std::fs::write(out.join("comparison.md"), &text).expect("write comparison.md");
        println!("\n{text}");
    }
    println!(
        "wrote {0}/results.md, runs.csv, target_vs_retention.svg, dev_curves.svg",
        out.display()
    );
}

/// `checkpoint 0`, `seeds 0–4`: the first `count` of `what`.
fn numbered(what: &str, count: usize) -> String {
    match count {
        1 => format!("{what} 0"),
        n => format!("{what}s 0–{}", n - 1),
    }
}

/// The runs the learning-rate grid is run on.
fn grid_subset(p: &Preset) -> String {
    format!(
        "{} × {}",
        numbered("checkpoint", p.grid_checkpoints),
        numbered("seed", p.grid_seeds as usize)
    )
}

fn protocol(study: &Study, md: &mut String) {
    let p = study.preset;
    let command = match study.command.is_empty() {
        true => "cargo run --example gmt_study".to_string(),
        false => format!("cargo run --example gmt_study -- {}", study.command),
    };
    let threads = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cached = study.checkpoints.iter().filter(|c| c.cached).count();
    let wall = format!(
        "{} min {:02} s",
        (study.wall_s / 60.0).floor(),
        study.wall_s as u64 % 60
    );
    // Other work on the machine inflates wall times: say how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        .map_or(String::new(), |l| {
            format!(" Load average over the last 5 minutes, at the end: {l}.")
        });
    let methods: Vec<String> = p.methods.iter().map(|m| m.name()).collect();
    writeln!(
        md,
        "# GMT study: results\n\n\
         Written by `{command}` (preset `{}`, device `{}`, {threads} CPU threads available). \
         Wall time of the whole run: {wall}{}.{load}\n\n\
         ## Protocol\n\n\
         - **Model**: a decoder-only transformer from `burn::nn` ({}), next-token loss on the \
         answer tokens only. Score: exact match of all 6 answer digits (teacher-forced argmax \
         over a fixed-length answer, equal to greedy decoding).\n\
         - **Pre-training** ({} checkpoints): seven skills, each asked by an instruction of \
         two words applied in turn: the base skills *reverse*, *increment every digit mod 10* \
         and *rotate left by one* (their word, then `NONE`) and four of their compositions \
         (`REVERSE ROTATE`, `ROTATE REVERSE`, `ROTATE INCREMENT`, `INCREMENT ROTATE`); \
         {} items, {} epochs, \
         batch {}, AdamW (weight decay 0.01), cosine from lr {:e}, through burn-train's \
         `Learner`. Checkpoint *i* has its own initialisation seed and its own draw of the \
         training items. Checkpoints are cached under a hash of everything that decides them \
         (model, data version, sizes, schedule, seed, device) and reused only when the stored \
         description matches in full.\n\
         - **Target task**: *reverse and increment*, asked by a new instruction of two known \
         words (`REVERSE INCREMENT`): a composition of two base skills that pre-training \
         never shows, in either order. Fine-tuning set: {} items per seed whose first {} input digits are all 0–{} (the \
         other places take any digit), {:.0}% of them with a wrong (random) answer. Dev ({} items) and test ({} items) splits: clean, \
         inputs with all ten digits everywhere (the distribution shift: {:.0}% of the test \
         items have a digit where fine-tuning never shows it), disjoint from each other and \
         from training by a hash of the digits. Retention: exact match on {} test items of the \
         seven pre-training skills after fine-tuning, as a fraction of the checkpoint's before.\n\
         - **Fine-tuning**: AdamW (weight decay 0.01) at a constant learning rate, batch {}, \
         {} epochs ({} optimizer steps, no early stopping: the model at the end is scored), \
         one step per batch through the model's `TrainStep` (the path burn-train takes), the \
         dev split scored after every epoch. The seed draws the fine-tuning set (items and \
         which answers are wrong), the data order and the masks' random draws.\n\
         - **Methods**: {}. GMT masks the smallest-|g| fraction r of each gradient tensor; \
         the random masks zero a random fraction r of each tensor, the rescaled one scales \
         the kept entries by 1/(1−r) (ChildTuning-F); GMT and the random masks run through \
         the optimizer wrapper (`MaskTarget::Gradient`). HFT (`MaskStrategy::Hft`, \
         `MaskTarget::Update`, through `GradMask`): in every category of modules (a block's \
         attention projections q/k/v/o, its two feed-forward matrices, its two norms, and \
         the embeddings, final norm and head), half are frozen for the whole fine-tuning (one \
         stage), not updated at all.\n\
         - **Learning rate**: each method's from the grid {:?}, chosen by the mean final dev \
         exact match over {} (the test split is never used to choose); the test runs then \
         use every checkpoint × {} at that rate (the \
         grid's runs at the chosen rate are the same runs, not repeated).\n\
         - **Statistics**: every method is compared with SFT pair by pair (same checkpoint, \
         same seed, so the same fine-tuning set): mean difference, 95% Student-t interval \
         and two-sided paired t-test p-value over the {} pairs; the differences per \
         checkpoint show whether one pre-training draw carries the result.\n\
         - **Timing**: every optimizer step (forward, backward, mask, update) is timed with \
         the device synchronised before and after it (the step benchmark's `time_once`); \
         the first {WARM_UP_STEPS} steps of a run are left out and the median is taken. \
         The overhead is the ratio of the medians to SFT's, on wall clock and on process CPU \
         time (steadier when other work shares the cores).\n",
        p.name,
        study.device_name,
        match cached {
            0 => String::new(),
            n => format!(" ({n} pre-trained checkpoints from the cache)"),
        },
        experiment::describe_model(&p.lm),
        p.checkpoints,
        p.pretrain_items,
        p.pretrain_epochs,
        p.batch,
        p.pretrain_lr,
        p.finetune_items,
        p.restricted,
        p.digit_limit - 1,
        100.0 * p.noise,
        p.dev_items,
        p.test_items,
        100.0 * study.shifted_fraction,
        p.base_items,
        p.batch,
        p.finetune_epochs,
        p.finetune_steps(),
        methods.join(", "),
        p.lr_grid,
        grid_subset(p),
        numbered("seed", p.seeds as usize),
        p.checkpoints as u64 * p.seeds,
    )
    .unwrap();
}

fn checkpoints(study: &Study, md: &mut String) {
    md.push_str("\n## Pre-trained checkpoints\n\n");
    md.push_str("| checkpoint | base skills exact match (%) | target exact match before fine-tuning (%) |\n|---:|---:|---:|\n");
    for (i, c) in study.checkpoints.iter().enumerate() {
        writeln!(md, "| {i} | {} | {} |", pct(c.base), pct(c.target)).unwrap();
    }
}

/// The mean of `curves` at each of their first `epochs` epochs.
fn mean_of_curves(curves: &[&Vec<f64>], epochs: usize) -> Vec<f64> {
    (0..epochs)
        .map(|e| curves.iter().map(|c| c[e]).sum::<f64>() / curves.len() as f64)
        .collect()
}

/// A criterion's verdict, as the report writes it.
fn yes_no(met: bool) -> &'static str {
    if met { "yes" } else { "no" }
}

/// The pilot's criteria, checked again on this run's SFT test runs.
fn regime(study: &Study, md: &mut String) {
    let sft = study.test_runs(study.sft());
    let epochs = study.preset.finetune_epochs;
    let curves: Vec<&Vec<f64>> = sft.iter().map(|(_, r)| &r.dev_curve).collect();
    let mean_curve = mean_of_curves(&curves, epochs);
    let (peak_epoch, peak_value) = peak(&mean_curve);
    let early = curves.iter().filter(|c| peak(c).1 > c[epochs - 1]).count();
    let drop: Vec<f64> = curves.iter().map(|c| peak(c).1 - c[epochs - 1]).collect();
    let retention: Vec<f64> = sft.iter().map(|(_, r)| r.retention).collect();
    let (kept, _) = mean_std(&retention);
    writeln!(
        md,
        "\n## Regime check\n\n\
         The pilot's criteria ([docs/study-pilot.md](study-pilot.md)), checked again on this \
         run's SFT test runs (lr {:e}): the mean dev curve peaks at epoch {peak_epoch} of {epochs} ({}%) and ends at {}%; {early} of \
         {} runs end below their dev peak, {} points below it on average. \
         SFT keeps {}% of the base skills (runs: {}–{}%). Over-fits: **{}**; keeps 20–80% of \
         the base skills: **{}**.",
        study.chosen[0],
        pct(peak_value),
        pct(mean_curve[epochs - 1]),
        curves.len(),
        pct(mean_std(&drop).0),
        pct(kept),
        pct(retention.iter().cloned().fold(f64::MAX, f64::min)),
        pct(retention.iter().cloned().fold(f64::MIN, f64::max)),
        yes_no(mean_curve[epochs - 1] < peak_value),
        yes_no((0.2..=0.8).contains(&kept)),
    )
    .unwrap();
    // The same criteria on each pre-training draw alone.
    md.push_str(
        "\n| checkpoint | mean dev peak (%) at epoch | mean dev at the end (%) | over-fits | base skills kept (%) | 20–80% |\n\
         |---:|---:|---:|---|---:|---|\n",
    );
    for checkpoint in 0..study.preset.checkpoints {
        let runs: Vec<&RunResult> = sft
            .iter()
            .filter(|(spec, _)| spec.checkpoint == checkpoint)
            .map(|(_, r)| *r)
            .collect();
        let curves: Vec<&Vec<f64>> = runs.iter().map(|r| &r.dev_curve).collect();
        let curve = mean_of_curves(&curves, epochs);
        let (epoch, top) = peak(&curve);
        let (kept, _) = mean_std(&runs.iter().map(|r| r.retention).collect::<Vec<_>>());
        writeln!(
            md,
            "| {checkpoint} | {} @ {epoch} | {} | {} | {} | {} |",
            pct(top),
            pct(curve[epochs - 1]),
            yes_no(curve[epochs - 1] < top),
            pct(kept),
            yes_no((0.2..=0.8).contains(&kept)),
        )
        .unwrap();
    }
}

fn grid(study: &Study, md: &mut String) {
    let p = study.preset;
    writeln!(
        md,
        "\n## Learning-rate grid\n\nFinal dev exact match (%), mean ± std over {}; \
         **bold**: chosen.\n",
        grid_subset(p)
    )
    .unwrap();
    md.push_str("| method |");
    for lr in &p.lr_grid {
        write!(md, " lr {lr:e} |").unwrap();
    }
    md.push_str("\n|---|");
    md.push_str(&"---:|".repeat(p.lr_grid.len()));
    md.push('\n');
    for (method, chosen) in p.methods.iter().zip(study.chosen) {
        write!(md, "| {} |", method.name()).unwrap();
        for &lr in &p.lr_grid {
            let dev: Vec<f64> = grid_runs(p, study.runs, *method, lr)
                .iter()
                .map(|r| r.dev_final())
                .collect();
            match lr == *chosen {
                true => write!(md, " **{}** |", pct_sd(&dev)).unwrap(),
                false => write!(md, " {} |", pct_sd(&dev)).unwrap(),
            }
        }
        md.push('\n');
    }
}

fn results(study: &Study, md: &mut String) {
    let p = study.preset;
    writeln!(
        md,
        "\n## Test results\n\n{} checkpoints × {} seeds per method, at the chosen learning \
         rate (mean ± std over the runs). Step times: median of the runs' medians.\n",
        p.checkpoints, p.seeds
    )
    .unwrap();
    md.push_str("| method | lr | target exact match (%) | on shifted items (%) | target loss | base skills retained (%) | final dev (%) | dev peak epoch | kept (%) | ms / step | overhead (wall) | overhead (CPU) |\n");
    md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let sft_ms = median(study.scores(study.sft(), |r| r.step_ms));
    let sft_cpu = median(study.scores(study.sft(), |r| r.step_cpu_ms));
    for (method, lr) in p.methods.iter().zip(study.chosen) {
        let runs = study.test_runs(*method);
        let (loss, loss_sd) = mean_std(&study.scores(*method, |r| r.target_loss));
        let peaks: Vec<f64> = runs
            .iter()
            .map(|(_, r)| peak(&r.dev_curve).0 as f64)
            .collect();
        let ms = median(study.scores(*method, |r| r.step_ms));
        let cpu = median(study.scores(*method, |r| r.step_cpu_ms));
        writeln!(
            md,
            "| {} | {lr:e} | {} | {} | {loss:.3} ± {loss_sd:.3} | {} | {} | {:.1} | {} | {ms:.1} | {:.2}× | {:.2}× |",
            method.name(),
            pct_sd(&study.scores(*method, |r| r.target)),
            pct_sd(&study.scores(*method, |r| r.target_shifted)),
            pct_sd(&study.scores(*method, |r| r.retention)),
            pct_sd(&study.scores(*method, |r| r.dev_final())),
            mean_std(&peaks).0,
            pct(mean_std(&study.scores(*method, |r| r.kept)).0),
            ms / sft_ms,
            cpu / sft_cpu,
        )
        .unwrap();
    }
}

/// Paired comparison of `method` with `against` on `score`, over the test pairs.
fn compare_with(
    study: &Study,
    method: Method,
    against: Method,
    score: fn(&RunResult) -> f64,
) -> Paired {
    stats::paired(&study.scores(against, score), &study.scores(method, score))
}

fn differences(study: &Study, md: &mut String) {
    let p = study.preset;
    writeln!(
        md,
        "\n## Paired differences against SFT\n\nMethod minus SFT, in points, over the {} \
         (checkpoint, seed) pairs: mean [95% interval], two-sided paired t-test p-value. Last \
         column: the target difference on each checkpoint alone.\n",
        p.checkpoints as u64 * p.seeds
    )
    .unwrap();
    md.push_str("| method | Δ target exact match | p | Δ retention | p | Δ target per checkpoint |\n|---|---:|---:|---:|---:|---|\n");
    for method in &p.methods[1..] {
        let target = compare_with(study, *method, study.sft(), |r| r.target);
        let retention = compare_with(study, *method, study.sft(), |r| r.retention);
        let per_checkpoint: Vec<String> = (0..p.checkpoints)
            .map(|c| {
                let of = |m: Method| -> Vec<f64> {
                    study
                        .test_runs(m)
                        .iter()
                        .filter(|(s, _)| s.checkpoint == c)
                        .map(|(_, r)| r.target)
                        .collect()
                };
                let d = mean_std(&of(*method)).0 - mean_std(&of(study.sft())).0;
                format!("{:+.1}", 100.0 * d)
            })
            .collect();
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            method.name(),
            interval(&target),
            p_value(target.p),
            interval(&retention),
            p_value(retention.p),
            per_checkpoint.join(", ")
        )
        .unwrap();
    }
}

/// Says what the numbers show, whichever way they fall: significance at 5%, two-sided.
fn conclusion(study: &Study, md: &mut String) {
    let p = study.preset;
    md.push_str("\n## What the data show\n\nGenerated from the tables above (5% level, two-sided, no correction for the several comparisons).\n\n");
    let verdict = |d: &Paired| match (d.p < 0.05, d.mean > 0.0) {
        (true, true) => "higher than SFT",
        (true, false) => "lower than SFT",
        (false, _) => "not distinguishable from SFT",
    };
    let mut gmt_better = Vec::new();
    for method in &p.methods[1..] {
        let target = compare_with(study, *method, study.sft(), |r| r.target);
        let retention = compare_with(study, *method, study.sft(), |r| r.retention);
        writeln!(
            md,
            "- **{}**: target exact match {} ({} points, {}); retention {} ({} points, {}).",
            method.name(),
            verdict(&target),
            interval(&target),
            p_clause(target.p),
            verdict(&retention),
            interval(&retention),
            p_clause(retention.p),
        )
        .unwrap();
        if matches!(method, Method::Gmt(_)) && target.p < 0.05 && target.mean > 0.0 {
            gmt_better.push(method.name());
        }
    }
    // Against the plain random mask of the same ratio: GMT (does choosing by magnitude
    // matter?), then the rescaled random mask (does the rescale?).
    for (label, note) in [
        (" (same ratio, tuned separately)", ""),
        (
            "",
            " AdamW divides each update by the root of the gradient's second moment, so a \
             constant rescale of the kept gradient barely changes the step (only against \
             AdamW's epsilon); ChildTuning-F's rescale matters under SGD.",
        ),
    ] {
        for method in &p.methods {
            let ratio = match (method, label.is_empty()) {
                (Method::Gmt(r), false) | (Method::RandomRescaled(r), true) => *r,
                _ => continue,
            };
            if !p.methods.contains(&Method::Random(ratio)) {
                continue;
            }
            let d = compare_with(study, *method, Method::Random(ratio), |r| r.target);
            writeln!(
                md,
                "- **{}** against **{}**{label}: target {} points, {}.{note}",
                method.name(),
                Method::Random(ratio).name(),
                interval(&d),
                p_clause(d.p)
            )
            .unwrap();
        }
    }
    writeln!(
        md,
        "\nIn this setting (a small, noisy, shifted target set, each method at its own best \
         learning rate, {} pre-training draws × {} seeds; see the regime check for how far \
         SFT over-fits and forgets), {}",
        p.checkpoints,
        p.seeds,
        match gmt_better.is_empty() {
            true => "no GMT setting reaches a target exact match significantly above SFT's."
                .to_string(),
            false => format!(
                "{} reach(es) a target exact match significantly above SFT's.",
                gmt_better.join(", ")
            ),
        }
    )
    .unwrap();
}

fn runs_csv(study: &Study) -> String {
    let mut csv = String::from(
        "phase,checkpoint,seed,method,lr,dev_final,dev_peak_epoch,target,target_loss,base,retention,step_ms,step_cpu_ms,kept,target_shifted\n",
    );
    let phases = study
        .grid
        .iter()
        .map(|s| ("grid", s))
        .chain(study.test.iter().map(|s| ("test", s)));
    for (phase, spec) in phases {
        let r = study.runs.get(study.preset, spec);
        writeln!(
            csv,
            "{phase},{},{},{},{:e},{:.6},{},{:.6},{:.6},{:.6},{:.6},{:.3},{:.3},{:.6},{:.6}",
            spec.checkpoint,
            spec.seed,
            spec.method.name(),
            spec.lr,
            r.dev_final(),
            peak(&r.dev_curve).0,
            r.target,
            r.target_loss,
            r.base,
            r.retention,
            r.step_ms,
            r.step_cpu_ms,
            r.kept,
            r.target_shifted
        )
        .unwrap();
    }
    csv
}

/// Per-method test scores (target, retention) of a `runs.csv`.
fn read_test_scores(path: &Path) -> Result<Vec<(String, f64, f64)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() < 11 || fields[0] != "test" {
            continue;
        }
        let number = |i: usize| {
            fields[i]
                .parse::<f64>()
                .map_err(|e| format!("{}: {e} in `{line}`", path.display()))
        };
        out.push((fields[3].to_string(), number(7)?, number(10)?));
    }
    Ok(out)
}

/// This run's test scores against another run's (another backend: other checkpoints, so
/// unpaired): per method, the difference of means with Welch's interval and p-value.
fn comparison(study: &Study, out: &Path, other: &Path) -> String {
    let mine = read_test_scores(&out.join("runs.csv"));
    let theirs = read_test_scores(&other.join("runs.csv"));
    let (mine, theirs) = match (mine, theirs) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return format!("comparison failed: {e}"),
    };
    let mut md = format!(
        "## `{}` against `{}`\n\nTest scores of this run (device `{}`) minus those of the \
         other, per method: difference of means [95% Welch interval], Welch p-value. The \
         runs have separate pre-trained checkpoints, so the comparison is unpaired.\n\n\
         | method | target here (%) | target there (%) | Δ target | p | Δ retention | p |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
        out.display(),
        other.display(),
        study.device_name
    );
    for method in &study.preset.methods {
        let name = method.name();
        let pick = |rows: &[(String, f64, f64)], which: fn(&(String, f64, f64)) -> f64| {
            rows.iter()
                .filter(|r| r.0 == name)
                .map(which)
                .collect::<Vec<f64>>()
        };
        let (a_t, b_t) = (pick(&mine, |r| r.1), pick(&theirs, |r| r.1));
        let (a_r, b_r) = (pick(&mine, |r| r.2), pick(&theirs, |r| r.2));
        if a_t.len() < 2 || b_t.len() < 2 {
            writeln!(md, "| {name} | too few runs to compare | | | | | |").unwrap();
            continue;
        }
        let target = stats::welch(&b_t, &a_t);
        let retention = stats::welch(&b_r, &a_r);
        writeln!(
            md,
            "| {name} | {} | {} | {} | {} | {} | {} |",
            pct_sd(&a_t),
            pct_sd(&b_t),
            interval(&target),
            p_value(target.p),
            interval(&retention),
            p_value(retention.p)
        )
        .unwrap();
    }
    md
}

/// Each test run as a point (retention, target), and each method's mean.
fn target_vs_retention(study: &Study) -> String {
    let series: Vec<(String, Vec<(f64, f64)>)> = study
        .preset
        .methods
        .iter()
        .map(|m| {
            let points = study
                .test_runs(*m)
                .iter()
                .map(|(_, r)| (100.0 * r.retention, 100.0 * r.target))
                .collect();
            (m.name(), points)
        })
        .collect();
    scatter_chart(
        "Target exact match against retention (test runs; large: mean)",
        "base skills retained (%)",
        "target exact match (%)",
        &series,
    )
}

/// Mean dev exact match per epoch of each method's test runs.
fn dev_curves(study: &Study) -> String {
    let series: Vec<(String, Points)> = study
        .preset
        .methods
        .iter()
        .map(|m| {
            let runs = study.test_runs(*m);
            let points = (0..study.preset.finetune_epochs)
                .map(|e| {
                    let at: Vec<f64> = runs.iter().map(|(_, r)| 100.0 * r.dev_curve[e]).collect();
                    ((e + 1) as f64, mean_std(&at).0, 0.0)
                })
                .collect();
            (m.name(), points)
        })
        .collect();
    line_chart(
        "Dev exact match per epoch (mean of the test runs)",
        "epoch",
        "dev exact match (%)",
        &series,
        &[],
    )
}
