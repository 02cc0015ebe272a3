//! The GMT study: several small transformers pre-trained on base skills are fine-tuned past
//! the point of over-fitting on a small, noisy, shifted target set with SFT, GMT (masking the
//! gradient at several ratios, and masking the update), the random mask and HFT. Each method's
//! learning rate is chosen on a dev split from a ×√2 grid, with a selection seed no test run
//! uses; the test runs then compare every method with SFT, paired by checkpoint and seed, and
//! against SFT's learning–forgetting frontier (SFT at every grid rate). The report
//! (`OUT/results.md`, the plots beside it) states the protocol first.
//!
//! ```text
//! cargo run --example gmt_study                      # default preset, flex CPU, about 25 min on 2 cores
//! cargo run --example gmt_study -- --preset full     # every mask ratio
//! cargo run --example gmt_study --features wgpu -- --device wgpu --preset smoke
//! cargo run --example gmt_study -- --help            # every option and its default
//! ```

mod experiment;
mod summary;

use std::collections::HashMap;
use std::f64::consts::SQRT_2;
use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::Device;
use clap::{Parser, ValueEnum};

use burn_gmt_lab::device::device_by_name;
use burn_gmt_lab::methods::Method;
use burn_gmt_lab::model::LmConfig;
use experiment::{Checkpoint, EvalSets, Preset, RunResult, RunSpec};

/// The study's presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PresetName {
    /// The README command: r ∈ {0.3, 0.7}, the update mask, the random mask and HFT beside SFT.
    Default,
    /// As `default`, with GMT at every ratio r ∈ {0.1, 0.3, 0.5, 0.7, 0.9}.
    Full,
    /// About 5 minutes on one GPU: a larger model, the design of `default`.
    Gpu,
    /// A few minutes on lavapipe, seconds on flex: every path, with models that learn.
    Smoke,
}

/// The GMT study: SFT, GMT, the random mask and HFT fine-tuned from small pre-trained
/// transformers; the report lands in `OUT/results.md`.
#[derive(Debug, Parser)]
#[command(name = "gmt_study", version)]
pub struct Cli {
    /// Sizes, arms and design of the study.
    #[arg(long, value_enum, default_value_t = PresetName::Default)]
    preset: PresetName,
    /// Backend: flex, ndarray, wgpu, vulkan, metal, cuda, rocm (build with the matching
    /// feature, e.g. `--features wgpu`).
    #[arg(long, default_value = "flex")]
    device: String,
    /// Fine-tuning seeds per checkpoint in the test runs [default: the preset's; 2 for
    /// `default`].
    #[arg(long)]
    seeds: Option<u64>,
    /// Pre-trained checkpoints (the clusters of the statistics) [default: the preset's; 6 for
    /// `default`].
    #[arg(long)]
    checkpoints: Option<usize>,
    /// A subset of the preset's methods by kind: sft, gmt, gmt-update, random,
    /// random-rescaled, hft (SFT always among them) [default: all of the preset's].
    #[arg(long, value_delimiter = ',')]
    methods: Option<Vec<String>>,
    /// AdamW's epsilon. Burn's default is 1e-5; the paper's PyTorch/Hugging Face stack uses
    /// 1e-8, which the study follows.
    #[arg(long, default_value = "1e-8")]
    adam_epsilon: f64,
    /// Output directory; pre-trained checkpoints are cached in `OUT/checkpoints`.
    #[arg(long, default_value = "results")]
    out: PathBuf,
    /// Test the per-method scores against another run's `runs.csv` (e.g. the same preset on
    /// another backend) [default: none].
    #[arg(long)]
    compare: Option<PathBuf>,
}

/// `count` learning rates spaced ×√2, the `below`-th of them (from 0) at `center`.
fn sqrt2_grid(center: f64, below: i32, count: i32) -> Vec<f64> {
    (0..count)
        .map(|k| center * SQRT_2.powi(k - below))
        .collect()
}

/// The kinds `--methods` names.
const METHOD_KINDS: [&str; 6] = [
    "sft",
    "gmt",
    "gmt-update",
    "random",
    "random-rescaled",
    "hft",
];

fn kind(method: Method) -> &'static str {
    match method {
        Method::Sft => "sft",
        Method::Gmt(_) | Method::GmtGlobal(_) => "gmt",
        Method::GmtUpdate(_) => "gmt-update",
        Method::Random(_) => "random",
        Method::RandomRescaled(_) => "random-rescaled",
        Method::Hft => "hft",
    }
}

/// SFT; GMT masking the gradient at `ratios`; GMT masking the update, the random mask (at
/// r = 0.3) and HFT.
fn arms(ratios: &[f64]) -> Vec<Method> {
    let mut methods = vec![Method::Sft];
    methods.extend(ratios.iter().map(|&r| Method::Gmt(r)));
    methods.extend([Method::GmtUpdate(0.3), Method::Random(0.3), Method::Hft]);
    methods
}

pub fn preset(name: PresetName) -> Preset {
    // The design the pilot chose (docs/study-pilot.md, design 4): seven pre-trained skills
    // (three base skills, four compositions), a new composition as the target, 35% wrong
    // answers, a model wide enough to keep its skills apart.
    let default = Preset {
        name: "default",
        lm: LmConfig::new(64, 2, 4, 128),
        pretrain_items: 12_000,
        pretrain_epochs: 5,
        pretrain_lr: 3e-3,
        batch: 32,
        finetune_items: 256,
        noise: 0.35,
        digit_limit: 8,
        restricted: 3,
        finetune_epochs: 30,
        dev_items: 128,
        test_items: 512,
        base_items: 600,
        adam_epsilon: 1e-8,
        // Around study v2's optimum (4e-4), ×√2 apart; a method whose choice lands on an edge
        // gets the grid extended.
        lr_grid: sqrt2_grid(4e-4, 2, 4),
        max_grid_extensions: 4,
        grid_checkpoints: 2,
        selection_seed: 1000,
        checkpoints: 6,
        seeds: 2,
        hft_stage_epochs: 5,
        methods: arms(&[0.3, 0.7]),
    };
    match name {
        PresetName::Default => default,
        PresetName::Full => Preset {
            name: "full",
            methods: arms(&[0.1, 0.3, 0.5, 0.7, 0.9]),
            ..default
        },
        PresetName::Gpu => Preset {
            name: "gpu",
            lm: LmConfig::new(128, 4, 8, 256),
            pretrain_items: 30_000,
            pretrain_epochs: 4,
            test_items: 1000,
            base_items: 900,
            ..default
        },
        // Every kind of arm, short runs (the cross-backend comparison runs it on flex and wgpu).
        PresetName::Smoke => Preset {
            name: "smoke",
            pretrain_items: 6_000,
            pretrain_epochs: 3,
            finetune_items: 128,
            finetune_epochs: 10,
            dev_items: 128,
            test_items: 256,
            base_items: 150,
            lr_grid: sqrt2_grid(4e-4, 1, 3),
            max_grid_extensions: 1,
            grid_checkpoints: 1,
            checkpoints: 2,
            seeds: 2,
            hft_stage_epochs: 5,
            methods: arms(&[0.3]),
            ..default
        },
    }
}

/// The preset's methods of the kinds in `kinds`; SFT must be among them, as every comparison
/// is with it.
fn select_methods(methods: &[Method], kinds: &[String]) -> Result<Vec<Method>, String> {
    if let Some(bad) = kinds.iter().find(|k| !METHOD_KINDS.contains(&k.as_str())) {
        return Err(format!(
            "--methods: unknown method `{bad}` ({})",
            METHOD_KINDS.join(", ")
        ));
    }
    if !kinds.iter().any(|k| k == "sft") {
        return Err("--methods: every method is compared with SFT, so it needs `sft`".into());
    }
    Ok(methods
        .iter()
        .copied()
        .filter(|&m| kinds.iter().any(|k| k == kind(m)))
        .collect())
}

/// The preset the command line asks for, with its overrides applied and checked.
fn configure(cli: &Cli) -> Result<Preset, String> {
    let mut preset = preset(cli.preset);
    if let Some(seeds) = cli.seeds {
        preset.seeds = seeds;
    }
    if let Some(checkpoints) = cli.checkpoints {
        preset.checkpoints = checkpoints;
    }
    if let Some(kinds) = &cli.methods {
        preset.methods = select_methods(&preset.methods, kinds)?;
    }
    if !(cli.adam_epsilon > 0.0 && cli.adam_epsilon.is_finite()) {
        return Err(format!(
            "--adam-epsilon: must be a positive number, got {}",
            cli.adam_epsilon
        ));
    }
    preset.adam_epsilon = cli.adam_epsilon;
    if preset.checkpoints < 2 {
        return Err(
            "--checkpoints: the statistics compare per-checkpoint means, so at least 2".into(),
        );
    }
    if preset.seeds == 0 || preset.seeds >= preset.selection_seed {
        return Err(format!(
            "--seeds: between 1 and {} (seed {} chooses the learning rates)",
            preset.selection_seed - 1,
            preset.selection_seed
        ));
    }
    preset.grid_checkpoints = preset.grid_checkpoints.min(preset.checkpoints);
    Ok(preset)
}

/// Every fine-tuning run of the study, each run once: the grid and the test runs share the
/// runs they have in common.
pub struct Runs {
    results: HashMap<(usize, u64, usize, u64), RunResult>,
}

impl Runs {
    fn key(preset: &Preset, spec: &RunSpec) -> (usize, u64, usize, u64) {
        let method = preset
            .methods
            .iter()
            .position(|m| *m == spec.method)
            .expect("a preset method");
        (spec.checkpoint, spec.seed, method, spec.lr.to_bits())
    }

    pub fn get(&self, preset: &Preset, spec: &RunSpec) -> &RunResult {
        &self.results[&Self::key(preset, spec)]
    }
}

/// What the study runs on.
struct Setup {
    preset: Preset,
    device: Device,
    checkpoints: Vec<Checkpoint>,
    sets: EvalSets,
}

fn main() {
    let cli = Cli::parse();
    let preset = configure(&cli).unwrap_or_else(|err| {
        eprintln!("gmt_study: {err}");
        std::process::exit(2);
    });
    let device = device_by_name(&cli.device).unwrap_or_else(|e| {
        eprintln!("gmt_study: {}", e.for_example("gmt_study"));
        std::process::exit(2);
    });
    let command = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    let started = Instant::now();
    std::fs::create_dir_all(&cli.out).expect("create the output directory");
    println!(
        "GMT study, preset `{}`, device {}: {} checkpoints × {} seeds, {} methods, lr grid {:?}",
        preset.name,
        cli.device,
        preset.checkpoints,
        preset.seeds,
        preset.methods.len(),
        preset.lr_grid
    );

    let sets = EvalSets::new(&preset);
    let cache = cli.out.join("checkpoints");
    let checkpoints: Vec<Checkpoint> = (0..preset.checkpoints)
        .map(|i| experiment::checkpoint(&preset, i, &device, &cli.device, &cache, &sets))
        .collect();
    for (i, c) in checkpoints.iter().enumerate() {
        println!(
            "checkpoint {i}: base exact match {:.1}%, target {:.1}% before fine-tuning",
            100.0 * c.base,
            100.0 * c.target
        );
    }
    let setup = Setup {
        preset,
        device,
        checkpoints,
        sets,
    };
    let preset = &setup.preset;
    let mut runs = Runs {
        results: HashMap::new(),
    };

    let grids = choose_learning_rates(&setup, &mut runs);
    let chosen: Vec<f64> = preset
        .methods
        .iter()
        .zip(&grids)
        .map(|(&method, grid)| summary::best_lr(preset, &runs, method, grid))
        .collect();
    // The test runs: every method at its chosen rate, and SFT at every rate of its grid (its
    // frontier), on every checkpoint × test seed.
    let mut test_specs = Vec::new();
    for checkpoint in 0..preset.checkpoints {
        for seed in 0..preset.seeds {
            for (&method, &lr) in preset.methods.iter().zip(&chosen) {
                test_specs.push(RunSpec {
                    checkpoint,
                    seed,
                    method,
                    lr,
                });
            }
            for &lr in grids[0].iter().filter(|&&lr| lr != chosen[0]) {
                test_specs.push(RunSpec {
                    checkpoint,
                    seed,
                    method: Method::Sft,
                    lr,
                });
            }
        }
    }
    run_all(&setup, &test_specs, &mut runs, "test");

    let grid_specs: Vec<RunSpec> = preset
        .methods
        .iter()
        .zip(&grids)
        .flat_map(|(&method, grid)| grid_specs(preset, method, grid))
        .collect();
    let study = summary::Study {
        preset,
        device_name: &cli.device,
        command: &command,
        checkpoints: &setup.checkpoints,
        runs: &runs,
        grid: &grid_specs,
        grids: &grids,
        test: &test_specs,
        chosen: &chosen,
        shifted_fraction: setup.sets.test_shifted.len() as f64 / setup.sets.test.len() as f64,
        wall_s: started.elapsed().as_secs_f64(),
    };
    summary::write(&study, &cli.out, cli.compare.as_deref());
}

/// The selection runs of `method` at `grid`'s rates: the first `grid_checkpoints` checkpoints
/// with the selection seed.
fn grid_specs(preset: &Preset, method: Method, grid: &[f64]) -> Vec<RunSpec> {
    grid.iter()
        .flat_map(|&lr| {
            (0..preset.grid_checkpoints).map(move |checkpoint| RunSpec {
                checkpoint,
                seed: preset.selection_seed,
                method,
                lr,
            })
        })
        .collect()
}

/// Runs the learning-rate grid of every method on the selection runs, extending a method's
/// grid by ×√2 steps while its best rate lies on an edge (at most `max_grid_extensions`
/// times); each method's final grid, in the preset's method order.
fn choose_learning_rates(setup: &Setup, runs: &mut Runs) -> Vec<Vec<f64>> {
    let preset = &setup.preset;
    let mut grids: Vec<Vec<f64>> = vec![preset.lr_grid.clone(); preset.methods.len()];
    let specs: Vec<RunSpec> = preset
        .methods
        .iter()
        .flat_map(|&method| grid_specs(preset, method, &preset.lr_grid))
        .collect();
    run_all(setup, &specs, runs, "grid");
    for _ in 0..preset.max_grid_extensions {
        let mut extension = Vec::new();
        for (&method, grid) in preset.methods.iter().zip(grids.iter_mut()) {
            let best = summary::best_lr(preset, runs, method, grid);
            let next = if best == grid[grid.len() - 1] {
                best * SQRT_2
            } else if best == grid[0] {
                best / SQRT_2
            } else {
                continue;
            };
            println!(
                "{}: best rate {best:e} on the grid's edge, adding {next:e}",
                method.name()
            );
            grid.push(next);
            grid.sort_by(f64::total_cmp);
            extension.extend(grid_specs(preset, method, &[next]));
        }
        if extension.is_empty() {
            break;
        }
        run_all(setup, &extension, runs, "grid extension");
    }
    grids
}

/// Runs every spec not run yet, printing one line each.
fn run_all(setup: &Setup, specs: &[RunSpec], runs: &mut Runs, phase: &str) {
    let preset = &setup.preset;
    let todo: Vec<&RunSpec> = specs
        .iter()
        .filter(|s| !runs.results.contains_key(&Runs::key(preset, s)))
        .collect();
    println!(
        "\n== {phase}: {} runs ({} shared with earlier runs)",
        todo.len(),
        specs.len() - todo.len()
    );
    let started = Instant::now();
    for (i, spec) in todo.iter().enumerate() {
        let result = experiment::finetune(
            preset,
            &setup.checkpoints,
            &setup.sets,
            **spec,
            &setup.device,
        );
        let (peak_epoch, peak) = summary::peak(&result.dev_curve);
        println!(
            "[{phase} {}/{}, {:.0} s] {} lr {:.2e} checkpoint {} seed {}: dev {:.1}% (peak {:.1}% at epoch {}), test {:.1}%, retention {:.0}%, masked >90% of steps {:.1}%, {:.1} ms/step",
            i + 1,
            todo.len(),
            started.elapsed().as_secs_f64(),
            spec.method.name(),
            spec.lr,
            spec.checkpoint,
            spec.seed,
            100.0 * result.dev_final(),
            100.0 * peak,
            peak_epoch,
            100.0 * result.target,
            100.0 * result.retention,
            100.0 * result.mechanism.persistently_masked,
            result.step_ms
        );
        runs.results.insert(Runs::key(preset, spec), result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Preset, String> {
        let cli = Cli::try_parse_from(std::iter::once("gmt_study").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        configure(&cli)
    }

    #[test]
    fn no_arguments_give_the_default_preset() {
        let p = parse(&[]).unwrap();
        assert_eq!(p.name, "default");
        assert_eq!(p.adam_epsilon, 1e-8);
        assert_eq!((p.checkpoints, p.seeds), (6, 2));
        assert_eq!(
            p.methods,
            [
                Method::Sft,
                Method::Gmt(0.3),
                Method::Gmt(0.7),
                Method::GmtUpdate(0.3),
                Method::Random(0.3),
                Method::Hft
            ]
        );
        // ×√2 apart, study v2's optimum among them.
        for pair in p.lr_grid.windows(2) {
            assert!((pair[1] / pair[0] - SQRT_2).abs() < 1e-12);
        }
        assert!(p.lr_grid.iter().any(|&lr| (lr - 4e-4).abs() < 1e-15));
    }

    #[test]
    fn options_override_the_preset() {
        let p = parse(&[
            "--preset",
            "full",
            "--seeds",
            "3",
            "--checkpoints",
            "4",
            "--methods",
            "sft,gmt",
            "--adam-epsilon",
            "1e-5",
        ])
        .unwrap();
        assert_eq!(p.name, "full");
        assert_eq!((p.checkpoints, p.seeds, p.adam_epsilon), (4, 3, 1e-5));
        let ratios: Vec<f64> = p.methods[1..].iter().filter_map(|m| m.ratio()).collect();
        assert_eq!(p.methods[0], Method::Sft);
        assert_eq!(ratios, [0.1, 0.3, 0.5, 0.7, 0.9]);
    }

    #[test]
    fn bad_arguments_name_the_option() {
        for (args, option) in [
            (&["--methods", "gmt"][..], "--methods"),
            (&["--methods", "sft,magic"][..], "--methods"),
            (&["--checkpoints", "1"][..], "--checkpoints"),
            (&["--seeds", "1000"][..], "--seeds"),
            (&["--adam-epsilon", "0"][..], "--adam-epsilon"),
            (&["--preset", "huge"][..], "--preset"),
            (&["--seeds", "two"][..], "--seeds"),
            (&["--learning-rate", "1"][..], "--learning-rate"),
        ] {
            let err = parse(args).expect_err("a bad argument list");
            assert!(err.contains(option), "{args:?}: {err}");
        }
    }

    #[test]
    fn help_lists_every_option_with_its_default() {
        let help = <Cli as clap::CommandFactory>::command()
            .render_long_help()
            .to_string();
        for option in [
            "--preset",
            "--device",
            "--seeds",
            "--checkpoints",
            "--methods",
            "--adam-epsilon",
            "--out",
            "--compare",
        ] {
            assert!(help.contains(option), "--help lacks {option}:\n{help}");
        }
        for default in [
            "[default: default]",
            "[default: flex]",
            "[default: 1e-8]",
            "[default: results]",
        ] {
            assert!(help.contains(default), "--help lacks {default}:\n{help}");
        }
    }
}
