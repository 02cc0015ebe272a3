//! The study's report (`results.md`: the protocol first, then the numbers and what they
//! show), the per-run table (`runs.csv`) and its plots.

use std::fmt::Write;
use std::path::Path;

use burn_gmt_lab::charts::{Points, line_chart, scatter_chart};
use burn_gmt_lab::methods::Method;
use burn_gmt_lab::stats::{self, Paired, holm, interpolate, mean_std, t_quantile_two_sided, tost};

use crate::Runs;
use crate::experiment::{
    self, Checkpoint, PERSISTENT_SHARE, Preset, RunResult, RunSpec, WARM_UP_STEPS,
};

/// The equivalence margin of GMT against SFT on the target, in exact-match fraction (±1
/// point: the smallest gain the paper reports).
const EQUIVALENCE_MARGIN: f64 = 0.01;

/// The first epoch (1-based) at which `curve` reaches its maximum, and that maximum.
pub fn peak(curve: &[f64]) -> (usize, f64) {
    curve.iter().enumerate().fold(
        (0, f64::MIN),
        |best, (i, &v)| if v > best.1 { (i + 1, v) } else { best },
    )
}

/// The rate of `grid` with the best mean final dev exact match for `method` over the
/// selection runs (the smallest of tied ones).
pub fn best_lr(preset: &Preset, runs: &Runs, method: Method, grid: &[f64]) -> f64 {
    let mut best = (grid[0], f64::MIN);
    for &lr in grid {
        let (dev, _) = mean_std(&selection_dev(preset, runs, method, lr));
        if dev > best.1 {
            best = (lr, dev);
        }
    }
    best.0
}

/// Final dev exact match of the selection runs of `method` at `lr`.
fn selection_dev(preset: &Preset, runs: &Runs, method: Method, lr: f64) -> Vec<f64> {
    (0..preset.grid_checkpoints)
        .map(|checkpoint| {
            runs.get(
                preset,
                &RunSpec {
                    checkpoint,
                    seed: preset.selection_seed,
                    method,
                    lr,
                },
            )
            .dev_final()
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
    /// The selection runs (every method at every rate of its grid).
    pub grid: &'a [RunSpec],
    /// Each method's grid after any extension, in the preset's method order.
    pub grids: &'a [Vec<f64>],
    /// The test runs: every method at its chosen rate, SFT at every rate of its grid.
    pub test: &'a [RunSpec],
    /// Each method's chosen learning rate, in the preset's method order.
    pub chosen: &'a [f64],
    /// Fraction of the test items with a digit the fine-tuning inputs never have.
    pub shifted_fraction: f64,
    pub wall_s: f64,
}

/// A per-run measure of a test run.
type Measure = fn(&Study, &RunSpec, &RunResult) -> f64;

fn target(_: &Study, _: &RunSpec, r: &RunResult) -> f64 {
    r.target
}

fn retention(_: &Study, _: &RunSpec, r: &RunResult) -> f64 {
    r.retention
}

/// The frontier gap: the run's target score minus SFT's at the same retention, on SFT's
/// frontier of the same (checkpoint, seed) pair.
fn gap(study: &Study, spec: &RunSpec, r: &RunResult) -> f64 {
    r.target - study.frontier_at(spec, r.retention).0
}

/// ‖θ − θ_SFT‖ / ‖θ_SFT − θ₀‖: how far the run ends from SFT's run on the same pair (at SFT's
/// chosen rate), relative to how far SFT moved from the checkpoint.
fn distance(study: &Study, spec: &RunSpec, r: &RunResult) -> f64 {
    let sft = study.sft_run(spec.checkpoint, spec.seed, study.chosen[0]);
    let start = &study.checkpoints[spec.checkpoint].params;
    let norm = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    norm(&r.params, &sft.params) / norm(&sft.params, start).max(f64::MIN_POSITIVE)
}

impl Study<'_> {
    fn sft(&self) -> Method {
        self.preset.methods[0]
    }

    fn chosen_lr(&self, method: Method) -> f64 {
        let i = self
            .preset
            .methods
            .iter()
            .position(|m| *m == method)
            .expect("a preset method");
        self.chosen[i]
    }

    /// The test runs of `method` at its chosen rate, in (checkpoint, seed) order: the pairs
    /// of every comparison.
    fn test_runs(&self, method: Method) -> Vec<(&RunSpec, &RunResult)> {
        let lr = self.chosen_lr(method);
        self.test
            .iter()
            .filter(|s| s.method == method && s.lr == lr)
            .map(|s| (s, self.runs.get(self.preset, s)))
            .collect()
    }

    fn sft_run(&self, checkpoint: usize, seed: u64, lr: f64) -> &RunResult {
        self.runs.get(
            self.preset,
            &RunSpec {
                checkpoint,
                seed,
                method: Method::Sft,
                lr,
            },
        )
    }

    /// SFT's frontier on the pair of `spec`: (retention, target) at every rate of its grid.
    fn frontier(&self, spec: &RunSpec) -> Vec<(f64, f64)> {
        self.grids[0]
            .iter()
            .map(|&lr| {
                let r = self.sft_run(spec.checkpoint, spec.seed, lr);
                (r.retention, r.target)
            })
            .collect()
    }

    /// SFT's target score at `retention` on the pair of `spec`, and whether `retention` lies
    /// within the range SFT's rates span there.
    fn frontier_at(&self, spec: &RunSpec, retention: f64) -> (f64, bool) {
        interpolate(&self.frontier(spec), retention)
    }

    /// The mean of `measure` over the seeds of each checkpoint: the unit of analysis.
    fn per_checkpoint(&self, method: Method, measure: Measure) -> Vec<f64> {
        let runs = self.test_runs(method);
        (0..self.preset.checkpoints)
            .map(|c| {
                let values: Vec<f64> = runs
                    .iter()
                    .filter(|(s, _)| s.checkpoint == c)
                    .map(|(s, r)| measure(self, s, r))
                    .collect();
                mean_std(&values).0
            })
            .collect()
    }

    /// `method` minus `against` on `measure`, paired over the checkpoints' means.
    fn compare(&self, method: Method, against: Method, measure: Measure) -> Paired {
        stats::paired(
            &self.per_checkpoint(against, measure),
            &self.per_checkpoint(method, measure),
        )
    }

    /// GMT's arms (gradient and update masks), in the preset's order.
    fn gmt_arms(&self) -> Vec<Method> {
        self.preset
            .methods
            .iter()
            .copied()
            .filter(|m| matches!(m, Method::Gmt(_) | Method::GmtUpdate(_)))
            .collect()
    }
}

/// One test of the family Holm's correction covers.
struct Comparison {
    method: Method,
    against: Method,
    measure: &'static str,
    result: Paired,
}

/// The family: every arm against SFT on the target, on retention and by its frontier gap,
/// and GMT against the random mask of the same ratio on the target; with Holm's adjusted
/// p-values, in the same order.
fn family(study: &Study) -> (Vec<Comparison>, Vec<f64>) {
    let sft = study.sft();
    let mut tests = Vec::new();
    for &method in &study.preset.methods[1..] {
        for (measure, f) in [
            ("Δ target", target as Measure),
            ("Δ retention", retention),
            ("frontier gap", gap),
        ] {
            tests.push(Comparison {
                method,
                against: sft,
                measure,
                result: study.compare(method, sft, f),
            });
        }
    }
    for &method in &study.preset.methods {
        if let Method::Gmt(r) = method
            && study.preset.methods.contains(&Method::Random(r))
        {
            tests.push(Comparison {
                method,
                against: Method::Random(r),
                measure: "Δ target",
                result: study.compare(method, Method::Random(r), target),
            });
        }
    }
    let adjusted = holm(&tests.iter().map(|t| t.result.p).collect::<Vec<_>>());
    (tests, adjusted)
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

/// What the mask does to the gradient (`gradient`: zeroed entries still move through AdamW's
/// momentum; `update`: masked entries held still).
fn mask_target(method: Method) -> &'static str {
    match method {
        Method::Sft => "—",
        Method::Gmt(_) | Method::GmtGlobal(_) | Method::Random(_) | Method::RandomRescaled(_) => {
            "gradient"
        }
        Method::GmtUpdate(_) | Method::Hft => "update",
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
    mechanism(study, &mut md);
    frontier(study, &mut md);
    statistics(study, &mut md);
    md.push_str("\n![Dev exact match per epoch](dev_curves.svg)\n");
    conclusion(study, &mut md);
    std::fs::write(out.join("results.md"), &md).expect("write results.md");
    std::fs::write(out.join("runs.csv"), runs_csv(study)).expect("write runs.csv");
    for (name, svg) in [
        ("frontier.svg", frontier_chart(study)),
        ("mechanism.svg", mechanism_chart(study)),
        ("dev_curves.svg", dev_curves(study)),
    ] {
        std::fs::write(out.join(name), svg).expect("write plot");
    }
    println!("\n{md}");
    if let Some(other) = compare {
        let text = comparison(study, out, other);
        std::fs::write(out.join("comparison.md"), &text).expect("write comparison.md");
        println!("\n{text}");
    }
    println!(
        "wrote {0}/results.md, runs.csv, frontier.svg, mechanism.svg, dev_curves.svg",
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

/// A list of learning rates as the report writes them.
fn rates(grid: &[f64]) -> String {
    grid.iter()
        .map(|lr| format!("{lr:.2e}"))
        .collect::<Vec<_>>()
        .join(", ")
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
    let extended: Vec<String> = p
        .methods
        .iter()
        .zip(study.grids)
        .filter(|(_, g)| g.len() > p.lr_grid.len())
        .map(|(m, g)| format!("{} to {}", m.name(), rates(g)))
        .collect();
    let params = study.checkpoints.first().map_or(0, |c| c.params.len());
    writeln!(
        md,
        "# GMT study: results\n\n\
         Written by `{command}` (preset `{}`, device `{}`, {threads} CPU threads available). \
         Wall time of the whole run: {wall}{}.{load}\n\n\
         ## Protocol\n\n\
         - **Model**: a decoder-only transformer from `burn::nn` ({}; {params} parameters), \
         next-token loss on the answer tokens only. Score: exact match of all 6 answer digits \
         (teacher-forced argmax over a fixed-length answer, equal to greedy decoding).\n\
         - **Pre-training** ({} checkpoints): seven skills, each asked by an instruction of \
         two words applied in turn: the base skills *reverse*, *increment every digit mod 10* \
         and *rotate left by one* (their word, then `NONE`) and four of their compositions \
         (`REVERSE ROTATE`, `ROTATE REVERSE`, `ROTATE INCREMENT`, `INCREMENT ROTATE`); \
         {} items, {} epochs, batch {}, AdamW (weight decay 0.01), cosine from lr {:e}, \
         through burn-train's `Learner`. Checkpoint *i* has its own initialisation seed and \
         its own draw of the training items. Checkpoints are cached under a hash of \
         everything that decides them (model, data version, sizes, schedule, seed, device) \
         and reused only when the stored description matches in full.\n\
         - **Target task**: *reverse and increment*, asked by a new instruction of two known \
         words (`REVERSE INCREMENT`): a composition of two base skills that pre-training \
         never shows, in either order. Fine-tuning set: {} items per seed whose first {} \
         input digits are all 0–{} (the other places take any digit), {:.0}% of them with a \
         wrong (random) answer. Dev ({} items) and test ({} items) splits: clean, inputs \
         with all ten digits everywhere (the distribution shift: {:.0}% of the test items \
         have a digit where fine-tuning never shows it), disjoint from each other and from \
         training by a hash of the digits. Retention: exact match on {} test items of the \
         seven pre-training skills after fine-tuning, as a fraction of the checkpoint's \
         before.\n\
         - **Fine-tuning**: AdamW (β 0.9/0.999, weight decay 0.01, epsilon {:e}) at a \
         constant learning rate, batch {}, {} epochs ({} optimizer steps, no early stopping: \
         the model at the end is scored), one step per batch through `TrainStep` (the path \
         burn-train takes; the masked arms through `burn_gmt::MaskedModel`), the dev split \
         scored after every epoch. The seed draws the fine-tuning set (items and which \
         answers are wrong), the data order and the masks' random draws. Epsilon: Burn's \
         `AdamWConfig` defaults to 1e-5; PyTorch's AdamW and the paper's Hugging Face stack \
         use 1e-8, which the study follows (`--adam-epsilon`): with 1e-5 the smallest \
         entries' updates are damped in SFT already, where GMT's mask acts.\n\
         - **Arms**: {}. *GMT r* masks the smallest-|g| fraction r of each gradient tensor \
         (`MaskTarget::Gradient`: a zeroed entry still moves through AdamW's momentum and \
         weight decay); *GMT-update* masks the same entries' update (`MaskTarget::Update`: \
         held still, momentum and weight decay included); the random mask zeroes a random \
         fraction r of each gradient tensor; HFT (`MaskStrategy::Hft`, update-masked) \
         freezes half of every category of modules (a block's attention projections q/k/v/o, \
         its two feed-forward matrices, its two norms, and the embeddings, final norm and \
         head) and re-draws the frozen half every {} epochs ({} optimizer steps; {} stages), \
         as HFT's paper re-draws per training stage. Every mask is a `GradMask` through \
         `MaskedModel`, per tensor.\n\
         - **Learning rate**: each arm's from the grid {} (×√2 apart), chosen by the mean \
         final dev exact match of {} with the **selection seed {}**, which no test run uses; \
         an arm whose choice lands on the grid's edge gets the grid extended by a ×√2 step \
         until it does not (at most {} steps){}.\n\
         - **Test runs**: {} × {} ({} pairs); every arm at its chosen rate, and SFT at every \
         rate of its grid (its learning–forgetting frontier).\n\
         - **Mechanism** (every masked run): ‖θ − θ_SFT‖ / ‖θ_SFT − θ₀‖, the distance of the \
         final weights from SFT's on the same pair (at SFT's chosen rate) relative to SFT's \
         own distance from the checkpoint; the share of entries masked in more than {:.0}% \
         of the steps (observed by a second `GradMask` of the same configuration fed the \
         same gradients, checked to keep the same entries; an entry is masked at a step when \
         its gradient was non-zero and the mask zeroed it); the kept share of entries and of \
         the gradient's L2 norm (`MaskStats::kept_norm_fraction`), averaged over the steps.\n\
         - **Frontier gap**: a run's target score minus SFT's at the same retention, on \
         SFT's frontier of the same pair (piecewise-linear in retention through SFT's rates; \
         beyond its ends, the end segment extended, and counted).\n\
         - **Statistics**: the unit of analysis is the checkpoint: each arm's mean over the \
         seeds of a checkpoint, paired with SFT's on the same checkpoint; paired t over the \
         {} checkpoints (df {}), 95% interval, two-sided p; Holm's correction over the \
         family (every arm against SFT on target, retention and frontier gap, and GMT \
         against the random mask of its ratio), reported beside the raw p-values. \
         Equivalence: two one-sided t-tests (TOST) of each GMT arm against SFT on the \
         target at ±{:.0} point.\n\
         - **Timing**: every optimizer step (forward, backward, mask, update) is timed with \
         the device synchronised before and after it (the step benchmark's `time_once`); \
         the first {WARM_UP_STEPS} steps of a run are left out and the median is taken. \
         The overhead is the ratio of the medians to SFT's (at its chosen rate), on wall \
         clock and on process CPU time (steadier when other work shares the cores).\n",
        p.name,
        study.device_name,
        match cached {
            0 => String::new(),
            n => format!(
                " ({n} of {} pre-trained checkpoints from the cache)",
                p.checkpoints
            ),
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
        p.adam_epsilon,
        p.batch,
        p.finetune_epochs,
        p.finetune_steps(),
        methods.join(", "),
        p.hft_stage_epochs,
        p.hft_stage_steps(),
        p.finetune_epochs.div_ceil(p.hft_stage_epochs),
        rates(&p.lr_grid),
        numbered("checkpoint", p.grid_checkpoints),
        p.selection_seed,
        p.max_grid_extensions,
        match extended.is_empty() {
            true => "; no arm needed it".to_string(),
            false => format!("; extended: {}", extended.join("; ")),
        },
        numbered("checkpoint", p.checkpoints),
        numbered("seed", p.seeds as usize),
        p.checkpoints as u64 * p.seeds,
        100.0 * PERSISTENT_SHARE,
        p.checkpoints,
        p.checkpoints - 1,
        100.0 * EQUIVALENCE_MARGIN,
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
         run's SFT test runs (lr {:.2e}): the mean dev curve peaks at epoch {peak_epoch} of \
         {epochs} ({}%) and ends at {}%; {early} of {} runs end below their dev peak, {} \
         points below it on average. SFT keeps {}% of the base skills (runs: {}–{}%). \
         Over-fits: **{}**; keeps 20–80% of the base skills: **{}**.",
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
    let mut all: Vec<f64> = study.grids.iter().flatten().copied().collect();
    all.sort_by(f64::total_cmp);
    all.dedup();
    writeln!(
        md,
        "\n## Learning-rate grid\n\nFinal dev exact match (%) of the selection runs ({} × \
         seed {}), mean ± std; **bold**: chosen; empty: not on that arm's grid.\n",
        numbered("checkpoint", p.grid_checkpoints),
        p.selection_seed
    )
    .unwrap();
    md.push_str("| arm |");
    for lr in &all {
        write!(md, " lr {lr:.2e} |").unwrap();
    }
    md.push_str("\n|---|");
    md.push_str(&"---:|".repeat(all.len()));
    md.push('\n');
    for ((method, chosen), grid) in p.methods.iter().zip(study.chosen).zip(study.grids) {
        write!(md, "| {} |", method.name()).unwrap();
        for lr in &all {
            if !grid.contains(lr) {
                md.push_str(" |");
                continue;
            }
            let dev = pct_sd(&selection_dev(p, study.runs, *method, *lr));
            match lr == chosen {
                true => write!(md, " **{dev}** |").unwrap(),
                false => write!(md, " {dev} |").unwrap(),
            }
        }
        md.push('\n');
    }
}

fn results(study: &Study, md: &mut String) {
    let p = study.preset;
    writeln!(
        md,
        "\n## Test results\n\n{} checkpoints × {} seeds per arm, at the chosen learning \
         rate (mean ± std over the runs). Step times: median of the runs' medians.\n",
        p.checkpoints, p.seeds
    )
    .unwrap();
    md.push_str("| arm | lr | target exact match (%) | on shifted items (%) | target loss | base skills retained (%) | final dev (%) | dev peak epoch | ms / step | overhead (wall) | overhead (CPU) |\n");
    md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let timing = |method: Method, f: fn(&RunResult) -> f64| {
        median(study.test_runs(method).iter().map(|(_, r)| f(r)).collect())
    };
    let sft_ms = timing(study.sft(), |r| r.step_ms);
    let sft_cpu = timing(study.sft(), |r| r.step_cpu_ms);
    for (method, lr) in p.methods.iter().zip(study.chosen) {
        let runs = study.test_runs(*method);
        let of = |f: fn(&RunResult) -> f64| runs.iter().map(|(_, r)| f(r)).collect::<Vec<_>>();
        let (loss, loss_sd) = mean_std(&of(|r| r.target_loss));
        let peaks = of(|r| peak(&r.dev_curve).0 as f64);
        let ms = timing(*method, |r| r.step_ms);
        let cpu = timing(*method, |r| r.step_cpu_ms);
        writeln!(
            md,
            "| {} | {lr:.2e} | {} | {} | {loss:.3} ± {loss_sd:.3} | {} | {} | {:.1} | {ms:.1} | {:.2}× | {:.2}× |",
            method.name(),
            pct_sd(&of(|r| r.target)),
            pct_sd(&of(|r| r.target_shifted)),
            pct_sd(&of(|r| r.retention)),
            pct_sd(&of(|r| r.dev_final())),
            mean_std(&peaks).0,
            ms / sft_ms,
            cpu / sft_cpu,
        )
        .unwrap();
    }
}

/// Each arm's mechanism figures over its test runs: (distance, persistently masked, kept
/// entries, kept norm), each as (mean, std).
fn mechanism_figures(study: &Study, method: Method) -> [(f64, f64); 4] {
    let runs = study.test_runs(method);
    let of = |f: &dyn Fn(&RunSpec, &RunResult) -> f64| {
        mean_std(&runs.iter().map(|(s, r)| f(s, r)).collect::<Vec<_>>())
    };
    [
        of(&|s, r| distance(study, s, r)),
        of(&|_, r| r.mechanism.persistently_masked),
        of(&|_, r| r.mechanism.kept),
        of(&|_, r| r.mechanism.kept_norm),
    ]
}

fn mechanism(study: &Study, md: &mut String) {
    writeln!(
        md,
        "\n## Mechanism: does the mask change training?\n\n\
         Per arm, mean ± std over its test runs. Distance: ‖θ − θ_SFT‖ / ‖θ_SFT − θ₀‖ (SFT's \
         run on the same pair at SFT's rate; 0 is SFT itself; a different rate or seed \
         moves it too, so compare the arms with each other). Held: entries masked in more \
         than {:.0}% of the steps. Kept: share of entries, and of the gradient's L2 norm, \
         the mask keeps (mean over the steps).\n",
        100.0 * PERSISTENT_SHARE
    )
    .unwrap();
    md.push_str("| arm | r | masks the | lr | distance from SFT (%) | held (% of entries) | kept entries (%) | kept gradient norm (%) |\n|---|---:|---|---:|---:|---:|---:|---:|\n");
    let sft_lr = study.chosen[0];
    for &lr in &study.grids[0] {
        if lr == sft_lr {
            continue;
        }
        // SFT at the other rates: how far a change of rate alone moves the weights.
        let runs: Vec<f64> = study
            .test
            .iter()
            .filter(|s| s.method == Method::Sft && s.lr == lr)
            .map(|s| distance(study, s, study.runs.get(study.preset, s)))
            .collect();
        writeln!(
            md,
            "| SFT at another rate | — | — | {lr:.2e} | {} | 0.0 | 100.0 | 100.0 |",
            pct_sd(&runs)
        )
        .unwrap();
    }
    for (&method, lr) in study.preset.methods.iter().zip(study.chosen).skip(1) {
        let [d, held, kept, norm] = mechanism_figures(study, method);
        let sd = |(m, s): (f64, f64)| format!("{:.1} ± {:.1}", 100.0 * m, 100.0 * s);
        writeln!(
            md,
            "| {} | {} | {} | {lr:.2e} | {} | {} | {} | {} |",
            method.name(),
            method
                .ratio()
                .map_or("0.5 of modules".into(), |r| r.to_string()),
            mask_target(method),
            sd(d),
            sd(held),
            sd(kept),
            sd(norm),
        )
        .unwrap();
    }
    md.push_str("\n![Mechanism figures against the mask ratio](mechanism.svg)\n");
}

/// SFT's frontier (mean over the pairs at each rate) and the frontier gaps.
fn frontier(study: &Study, md: &mut String) {
    let p = study.preset;
    writeln!(
        md,
        "\n## The learning–forgetting frontier\n\n\
         SFT at every rate of its grid on the {} test pairs (mean ± std):\n",
        p.checkpoints as u64 * p.seeds
    )
    .unwrap();
    md.push_str(
        "| SFT lr | target exact match (%) | base skills retained (%) |\n|---:|---:|---:|\n",
    );
    for &lr in &study.grids[0] {
        let runs: Vec<&RunResult> = study
            .test
            .iter()
            .filter(|s| s.method == Method::Sft && s.lr == lr)
            .map(|s| study.runs.get(p, s))
            .collect();
        let of = |f: fn(&RunResult) -> f64| runs.iter().map(|r| f(r)).collect::<Vec<_>>();
        writeln!(
            md,
            "| {lr:.2e} | {} | {} |",
            pct_sd(&of(|r| r.target)),
            pct_sd(&of(|r| r.retention))
        )
        .unwrap();
    }
    md.push_str(
        "\nEach arm's frontier gap (its target score minus SFT's at the same retention, per \
         pair), and how many of its runs lie beyond the retention SFT's rates span on their \
         pair (there the gap extends the frontier's end segment):\n\n\
         | arm | frontier gap, runs (points) | runs beyond SFT's range |\n|---|---:|---:|\n",
    );
    for &method in &p.methods[1..] {
        let runs = study.test_runs(method);
        let gaps: Vec<f64> = runs.iter().map(|(s, r)| gap(study, s, r)).collect();
        let beyond = runs
            .iter()
            .filter(|(s, r)| !study.frontier_at(s, r.retention).1)
            .count();
        let (m, sd) = mean_std(&gaps);
        writeln!(
            md,
            "| {} | {:+.1} ± {:.1} | {beyond} of {} |",
            method.name(),
            100.0 * m,
            100.0 * sd,
            runs.len()
        )
        .unwrap();
    }
    md.push_str("\n![Every arm's test runs against SFT's frontier](frontier.svg)\n");
}

fn statistics(study: &Study, md: &mut String) {
    let p = study.preset;
    let (tests, adjusted) = family(study);
    writeln!(
        md,
        "\n## Statistics at the level of the checkpoint\n\n\
         Each arm's mean over the {} seeds of a checkpoint minus SFT's on the same checkpoint \
         (the frontier gap: minus 0), paired t over the {} checkpoints: mean [95% interval] in \
         points, t with its degrees of freedom, two-sided p, and Holm's p over the {} tests \
         of the table.\n",
        p.seeds,
        p.checkpoints,
        tests.len()
    )
    .unwrap();
    md.push_str("| arm | against | measure | difference (points) | t (df) | p | Holm p |\n|---|---|---|---:|---:|---:|---:|\n");
    for (t, holm_p) in tests.iter().zip(&adjusted) {
        let r = &t.result;
        let t_value = match r.se > 0.0 {
            true => format!("{:.2}", r.mean / r.se),
            false => "—".into(),
        };
        writeln!(
            md,
            "| {} | {} | {} | {} | {t_value} ({}) | {} | {} |",
            t.method.name(),
            t.against.name(),
            t.measure,
            interval(r),
            r.df,
            p_value(r.p),
            p_value(*holm_p),
        )
        .unwrap();
    }
    writeln!(
        md,
        "\nEquivalence of GMT and SFT on the target (TOST at ±{:.0} point, over the \
         checkpoints' means): equivalent at the 5% level when the 90% interval lies inside \
         the margin.\n\n\
         | arm | difference [90% interval] (points) | TOST p | equivalent within ±{:.0} |\n|---|---:|---:|---|",
        100.0 * EQUIVALENCE_MARGIN,
        100.0 * EQUIVALENCE_MARGIN
    )
    .unwrap();
    for method in study.gmt_arms() {
        let (d, p_tost) = equivalence(study, method);
        let half = t_quantile_two_sided(0.10, d.df) * d.se;
        writeln!(
            md,
            "| {} | {:+.1} [{:+.1}, {:+.1}] | {} | {} |",
            method.name(),
            100.0 * d.mean,
            100.0 * (d.mean - half),
            100.0 * (d.mean + half),
            p_value(p_tost),
            yes_no(p_tost < 0.05),
        )
        .unwrap();
    }
}

/// `method` against SFT on the target over the checkpoints' means, and its TOST p-value.
fn equivalence(study: &Study, method: Method) -> (Paired, f64) {
    let (sft, arm) = (
        study.per_checkpoint(study.sft(), target),
        study.per_checkpoint(method, target),
    );
    (
        stats::paired(&sft, &arm),
        tost(&sft, &arm, EQUIVALENCE_MARGIN),
    )
}

/// A verdict on a difference, after Holm's correction.
fn verdict(d: &Paired, holm_p: f64, higher: &str, lower: &str) -> String {
    match (holm_p < 0.05, d.mean > 0.0) {
        (true, true) => higher.to_string(),
        (true, false) => lower.to_string(),
        (false, _) => "not distinguishable from zero".to_string(),
    }
}

/// Answers the study's questions from the numbers above, whichever way they fall.
fn conclusion(study: &Study, md: &mut String) {
    let p = study.preset;
    let (tests, adjusted) = family(study);
    let find = |method: Method, against: Method, measure: &str| -> (Paired, f64) {
        tests
            .iter()
            .zip(&adjusted)
            .find(|(t, _)| t.method == method && t.against == against && t.measure == measure)
            .map(|(t, &h)| (t.result, h))
            .expect("a test of the family")
    };
    let sft = study.sft();
    let described = |method: Method, measure: &str| {
        let (d, h) = find(method, sft, measure);
        format!(
            "{} points (p {}, Holm p {})",
            interval(&d),
            p_value(d.p),
            p_value(h)
        )
    };
    md.push_str(
        "\n## What the data show\n\nGenerated from the tables above. \"Significant\" means \
         below 5% after Holm's correction over the family; intervals are 95% over the \
         checkpoints' means.\n\n",
    );

    // 1. Does the mask change training? The yardstick: SFT one ×√2 step of rate away.
    let sft_grid = &study.grids[0];
    let at = sft_grid
        .iter()
        .position(|&lr| lr == study.chosen[0])
        .expect("SFT's rate on its grid");
    let neighbour = sft_grid[if at + 1 < sft_grid.len() {
        at + 1
    } else {
        at - 1
    }];
    let yardstick = mean_std(
        &study
            .test
            .iter()
            .filter(|s| s.method == Method::Sft && s.lr == neighbour)
            .map(|s| distance(study, s, study.runs.get(p, s)))
            .collect::<Vec<_>>(),
    )
    .0;
    writeln!(
        md,
        "**1. Does the mask change training?** The yardstick: SFT at the neighbouring rate \
         ({neighbour:.2e}, one ×√2 step from its chosen {:.2e}) ends {}% of SFT's own \
         displacement away from SFT's weights.\n",
        study.chosen[0],
        pct(yardstick)
    )
    .unwrap();
    for &method in &p.methods[1..] {
        let [d, held, _, norm] = mechanism_figures(study, method);
        let scale = match d.0 / yardstick.max(f64::MIN_POSITIVE) {
            x if x < 0.5 => "less than half as far as",
            x if x < 1.0 => "less far than",
            x if x < 2.0 => "about as far as, or up to twice as far as,",
            _ => "more than twice as far as",
        };
        writeln!(
            md,
            "- **{}**: ends {}% away from SFT ({scale} that rate step moves it); {}% of the \
             entries are masked in more than {:.0}% of the steps; it keeps {}% of the \
             gradient's norm. Δ target {}; Δ retention {}.",
            method.name(),
            pct(d.0),
            pct(held.0),
            100.0 * PERSISTENT_SHARE,
            pct(norm.0),
            described(method, "Δ target"),
            described(method, "Δ retention"),
        )
        .unwrap();
    }
    if p.methods.contains(&Method::Gmt(0.3)) && p.methods.contains(&Method::GmtUpdate(0.3)) {
        let [gradient, gradient_held, ..] = mechanism_figures(study, Method::Gmt(0.3));
        let [update, update_held, ..] = mechanism_figures(study, Method::GmtUpdate(0.3));
        writeln!(
            md,
            "\nAt r = 0.3, masking the gradient leaves the weights {}% from SFT's with {}% of \
             the entries held in more than {:.0}% of the steps; masking the update (the same \
             selection, momentum and weight decay held too) {}% with {}%.",
            pct(gradient.0),
            pct(gradient_held.0),
            100.0 * PERSISTENT_SHARE,
            pct(update.0),
            pct(update_held.0),
        )
        .unwrap();
    }

    // 2. At which r?
    let mut ratios: Vec<Method> = p
        .methods
        .iter()
        .copied()
        .filter(|m| matches!(m, Method::Gmt(_)))
        .collect();
    ratios.sort_by(|a, b| a.ratio().unwrap().total_cmp(&b.ratio().unwrap()));
    md.push_str("\n**2. At which r?**");
    for &method in &ratios {
        let (g, h) = find(method, sft, "frontier gap");
        let [_, held, ..] = mechanism_figures(study, method);
        write!(
            md,
            " r = {}: Δ target {}, frontier gap {} (Holm p {}), {}% held.",
            method.ratio().unwrap(),
            interval(&find(method, sft, "Δ target").0),
            interval(&g),
            p_value(h),
            pct(held.0)
        )
        .unwrap();
    }
    let significant: Vec<String> = ratios
        .iter()
        .filter(|&&m| {
            ["Δ target", "frontier gap"]
                .iter()
                .any(|measure| find(m, sft, measure).1 < 0.05)
        })
        .map(|m| format!("r = {}", m.ratio().unwrap()))
        .collect();
    writeln!(
        md,
        " {}\n",
        match significant.is_empty() {
            true => "No ratio's target difference or frontier gap is significant: the data \
                     do not single out an r."
                .to_string(),
            false => format!(
                "Significant on the target or the frontier gap: {}.",
                significant.join(", ")
            ),
        }
    )
    .unwrap();

    // 3. Does GMT move the frontier?
    md.push_str("**3. Does GMT move the frontier?**");
    for method in study.gmt_arms() {
        let (g, h) = find(method, sft, "frontier gap");
        let (d, p_tost) = equivalence(study, method);
        write!(
            md,
            " {}: gap {} points, {} (Holm p {}); on the target, {} ({} points, TOST p {}).",
            method.name(),
            interval(&g),
            verdict(
                &g,
                h,
                "above zero: it beats SFT",
                "below zero: SFT beats it"
            ),
            p_value(h),
            match p_tost < 0.05 {
                true => format!(
                    "equivalent to SFT within ±{:.0} point",
                    100.0 * EQUIVALENCE_MARGIN
                ),
                false => format!(
                    "equivalence to SFT within ±{:.0} point not shown",
                    100.0 * EQUIVALENCE_MARGIN
                ),
            },
            interval(&d),
            p_value(p_tost),
        )
        .unwrap();
    }
    let beats: Vec<String> = study
        .gmt_arms()
        .into_iter()
        .filter(|&m| {
            let (g, h) = find(m, sft, "frontier gap");
            h < 0.05 && g.mean > 0.0
        })
        .map(|m| m.name())
        .collect();
    writeln!(
        md,
        " {}\n",
        match beats.is_empty() {
            true => "No GMT arm's gap is significantly above zero: in this setting GMT does \
                     not move the learning–forgetting frontier."
                .to_string(),
            false => format!("Above SFT's frontier: {}.", beats.join(", ")),
        }
    )
    .unwrap();

    // 4. Is the random mask's retention a rate effect?
    if let Some(&random) = p.methods.iter().find(|m| matches!(m, Method::Random(_))) {
        let (dr, hr) = find(random, sft, "Δ retention");
        let (g, hg) = find(random, sft, "frontier gap");
        let answer = match (hr < 0.05 && dr.mean > 0.0, hg < 0.05) {
            (true, false) => "its retention gain comes with no significant gap on SFT's \
                              frontier: what SFT reaches at a lower rate, consistent with a \
                              rate effect"
                .to_string(),
            (true, true) => format!(
                "its retention gain comes with a significant frontier gap ({}): more than a \
                 rate effect",
                if g.mean > 0.0 {
                    "above SFT's frontier"
                } else {
                    "below SFT's frontier"
                }
            ),
            (false, _) => format!(
                "at the rates the selection chose there is no significant retention gain to \
                 explain; its frontier gap is {}",
                verdict(&g, hg, "above zero", "below zero")
            ),
        };
        writeln!(
            md,
            "**4. Is the random mask's retention a rate effect?** {} (lr {:.2e}, SFT's \
             {:.2e}): Δ retention {}; frontier gap {}; so {answer}.\n",
            random.name(),
            study.chosen_lr(random),
            study.chosen[0],
            described(random, "Δ retention"),
            described(random, "frontier gap"),
        )
        .unwrap();
    }

    // 5. What this scale cannot say.
    let params = study.checkpoints.first().map_or(0, |c| c.params.len());
    writeln!(
        md,
        "**5. What this scale cannot say about 7B models.** The model has {params} \
         parameters, pre-trained from scratch on seven synthetic skills and fine-tuned for {} \
         steps on {} noisy items; {} checkpoints × {} seeds. A null result here does not \
         carry over to the paper's setting: a 7B model pre-trained on web text, fine-tuned \
         on real instruction data and scored on code, math and knowledge benchmarks, where \
         the share of gradient entries that are noise, the role of AdamW's epsilon at bf16 \
         precision and the size of a +1–3 point effect are all different. What carries \
         over is the mechanism: how far a mask moves training from SFT's path and how much \
         of its effect a change of learning rate reproduces, which any claim at 7B should \
         measure too.",
        p.finetune_steps(),
        p.finetune_items,
        p.checkpoints,
        p.seeds,
    )
    .unwrap();
}

fn runs_csv(study: &Study) -> String {
    let mut csv = String::from(
        "phase,checkpoint,seed,method,lr,dev_final,dev_peak_epoch,target,target_loss,base,retention,step_ms,step_cpu_ms,kept,target_shifted,kept_norm,persistently_masked,distance_from_sft,frontier_gap\n",
    );
    let phases = study
        .grid
        .iter()
        .map(|s| ("grid", s))
        .chain(study.test.iter().map(|s| {
            // SFT's runs at its other rates trace the frontier; the test pairs are at the
            // chosen rates.
            match s.lr == study.chosen_lr(s.method) {
                true => ("test", s),
                false => ("frontier", s),
            }
        }));
    for (phase, spec) in phases {
        let r = study.runs.get(study.preset, spec);
        let (distance, gap) = match phase {
            "grid" => (String::new(), String::new()),
            _ => (
                format!("{:.6}", distance(study, spec, r)),
                format!("{:.6}", gap(study, spec, r)),
            ),
        };
        writeln!(
            csv,
            "{phase},{},{},{},{:e},{:.6},{},{:.6},{:.6},{:.6},{:.6},{:.3},{:.3},{:.6},{:.6},{:.6},{:.6},{distance},{gap}",
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
            r.mechanism.kept,
            r.target_shifted,
            r.mechanism.kept_norm,
            r.mechanism.persistently_masked,
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

/// Every arm's test runs as points (retention, target), each arm's mean large, and SFT's
/// frontier (its mean at each rate) as a line.
fn frontier_chart(study: &Study) -> String {
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
    let mut curve: Vec<(f64, f64)> = study.grids[0]
        .iter()
        .map(|&lr| {
            let runs: Vec<&RunResult> = study
                .test
                .iter()
                .filter(|s| s.method == Method::Sft && s.lr == lr)
                .map(|s| study.runs.get(study.preset, s))
                .collect();
            let mean = |f: fn(&RunResult) -> f64| {
                100.0 * runs.iter().map(|r| f(r)).sum::<f64>() / runs.len() as f64
            };
            (mean(|r| r.retention), mean(|r| r.target))
        })
        .collect();
    curve.sort_by(|a, b| a.0.total_cmp(&b.0));
    scatter_chart(
        "Target exact match against retention (test runs; large: mean)",
        "base skills retained (%)",
        "target exact match (%)",
        &series,
        Some(("SFT's frontier (mean per rate)", &curve)),
    )
}

/// The mechanism figures of GMT (gradient mask) against r, with the update mask's and the
/// random mask's distances as reference lines.
fn mechanism_chart(study: &Study) -> String {
    let mut gmt: Vec<Method> = study
        .preset
        .methods
        .iter()
        .copied()
        .filter(|m| matches!(m, Method::Gmt(_)))
        .collect();
    gmt.sort_by(|a, b| a.ratio().unwrap().total_cmp(&b.ratio().unwrap()));
    let names = [
        "distance from SFT",
        "held (>90% of steps)",
        "kept entries",
        "kept gradient norm",
    ];
    let series: Vec<(String, Points)> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let points = gmt
                .iter()
                .map(|&m| {
                    let (mean, sd) = mechanism_figures(study, m)[i];
                    (m.ratio().unwrap(), 100.0 * mean, 100.0 * sd)
                })
                .collect();
            (name.to_string(), points)
        })
        .collect();
    let references: Vec<(String, f64)> = study
        .preset
        .methods
        .iter()
        .filter(|m| matches!(m, Method::GmtUpdate(_) | Method::Random(_)))
        .map(|&m| {
            (
                format!("{}: distance", m.name()),
                100.0 * mechanism_figures(study, m)[0].0,
            )
        })
        .collect();
    line_chart(
        "GMT (gradient mask): mechanism against the mask ratio (mean ± std over runs)",
        "mask ratio r",
        "% (distance: of SFT's own displacement)",
        &series,
        &references,
    )
}

/// Mean dev exact match per epoch of each arm's test runs.
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
