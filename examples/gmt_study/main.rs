//! The GMT study: several small transformers pre-trained on base skills are fine-tuned past
//! the point of over-fitting on a small, noisy, shifted target set with SFT, GMT, random
//! masks (with and without rescale) and HFT. Each method's learning rate is chosen on a dev
//! split from a grid; the test runs then compare every method with SFT, paired by checkpoint
//! and seed. The report (`OUT/results.md`, the plots beside it) states the protocol first.
//!
//! ```text
//! cargo run --example gmt_study                      # default preset, flex CPU, about 15 min on 2 cores
//! cargo run --example gmt_study -- --preset full     # larger model and data
//! cargo run --example gmt_study --features wgpu -- --device wgpu --preset smoke
//! ```
//! Options: `--preset default|full|gpu|smoke`, `--device flex|ndarray|wgpu|vulkan|metal|cuda|rocm`,
//! `--seeds N` (fine-tuning seeds per checkpoint), `--checkpoints N`, `--methods LIST`
//! (a subset of `sft,gmt,random,random-rescaled,hft`, SFT always among them), `--out DIR` (default
//! `results`; pre-trained checkpoints are cached in `DIR/checkpoints`),
//! `--compare DIR` (test the per-method scores against another run's `runs.csv`, e.g. the
//! same preset on another backend).

mod experiment;
mod summary;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::Device;

use burn_gmt_lab::device::device_by_name;
use burn_gmt_lab::methods::Method;
use burn_gmt_lab::model::LmConfig;
use experiment::{Checkpoint, EvalSets, Preset, RunResult, RunSpec};

/// The methods the presets compare: SFT, GMT, the random mask without and with rescale, HFT;
/// the `full` preset adds a second GMT ratio.
fn methods(gmt_ratios: &[f64]) -> Vec<Method> {
    let mut methods = vec![Method::Sft];
    methods.extend(gmt_ratios.iter().map(|&r| Method::Gmt(r)));
    methods.extend([
        Method::Random(0.3),
        Method::RandomRescaled(0.3),
        Method::Hft,
    ]);
    methods
}

fn preset_by_name(name: &str) -> Result<Preset, String> {
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
        lr_grid: vec![2e-4, 4e-4, 8e-4],
        // One seed on every checkpoint: the pre-training draws differ more than the seeds.
        grid_checkpoints: 3,
        grid_seeds: 1,
        checkpoints: 3,
        seeds: 5,
        methods: methods(&[0.3]),
    };
    match name {
        "default" => Ok(default),
        // A deeper, wider model, more pre-training data and checkpoints, larger evaluation
        // splits; the fine-tuning design of `default` (not piloted at this size).
        "full" => Ok(Preset {
            name: "full",
            lm: LmConfig::new(64, 3, 4, 256),
            pretrain_items: 20_000,
            dev_items: 256,
            test_items: 1000,
            base_items: 900,
            grid_seeds: 2,
            checkpoints: 5,
            methods: methods(&[0.1, 0.3]),
            ..default
        }),
        // About 5 minutes on one GPU: a larger model, the design of `default`.
        "gpu" => Ok(Preset {
            name: "gpu",
            lm: LmConfig::new(128, 4, 8, 256),
            pretrain_items: 30_000,
            pretrain_epochs: 4,
            test_items: 1000,
            base_items: 900,
            ..default
        }),
        // A few minutes on lavapipe, seconds on flex: every path, with models that learn
        // (the cross-backend comparison runs it on flex and wgpu).
        "smoke" => Ok(Preset {
            name: "smoke",
            pretrain_items: 6_000,
            pretrain_epochs: 3,
            finetune_items: 128,
            finetune_epochs: 10,
            dev_items: 128,
            test_items: 256,
            base_items: 150,
            checkpoints: 2,
            seeds: 3,
            ..default
        }),
        other => Err(format!(
            "unknown preset `{other}` (default, full, gpu, smoke)"
        )),
    }
}

/// The preset's methods of the kinds named in `names` (comma-separated: `sft`, `gmt`,
/// `random`, `random-rescaled`, `hft`); SFT must be among them, as every comparison is with it.
fn select_methods(methods: &[Method], names: &str) -> Result<Vec<Method>, String> {
    let kinds: Vec<&str> = names.split(',').map(str::trim).collect();
    if let Some(bad) = kinds
        .iter()
        .find(|k| !["sft", "gmt", "random", "random-rescaled", "hft"].contains(k))
    {
        return Err(format!(
            "--methods: unknown method `{bad}` (sft, gmt, random, random-rescaled, hft)"
        ));
    }
    if !kinds.contains(&"sft") {
        return Err("--methods: every method is compared with SFT, so it needs `sft`".into());
    }
    Ok(methods
        .iter()
        .copied()
        .filter(|m| {
            kinds.contains(&match m {
                Method::Sft => "sft",
                Method::Gmt(_) | Method::GmtGlobal(_) => "gmt",
                Method::Random(_) => "random",
                Method::RandomRescaled(_) => "random-rescaled",
                Method::Hft => "hft",
            })
        })
        .collect())
}

pub struct Args {
    preset: Preset,
    device: Device,
    device_name: String,
    out: PathBuf,
    compare: Option<PathBuf>,
    command: String,
}

fn parse_args() -> Result<Args, String> {
    let mut preset = preset_by_name("default")?;
    let mut device_name = "flex".to_string();
    let (mut seeds, mut checkpoints) = (None, None);
    let mut out = PathBuf::from("results");
    let mut compare = None;
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    let command = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--preset" => preset = preset_by_name(&value()?)?,
            "--device" => device_name = value()?,
            "--seeds" => seeds = Some(value()?.parse().map_err(|e| format!("--seeds: {e}"))?),
            "--checkpoints" => {
                checkpoints = Some(
                    value()?
                        .parse()
                        .map_err(|e| format!("--checkpoints: {e}"))?,
                )
            }
            "--out" => out = PathBuf::from(value()?),
            "--compare" => compare = Some(PathBuf::from(value()?)),
            "--methods" => only = Some(value()?),
            "-h" | "--help" => {
                println!(
                    "options: --preset default|full|gpu|smoke  --device flex|ndarray|wgpu|vulkan|metal|cuda|rocm  --seeds N  --checkpoints N  --methods sft,gmt,random,random-rescaled,hft  --out DIR  --compare DIR"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown option `{other}` (see --help)")),
        }
    }
    if let Some(seeds) = seeds {
        preset.seeds = seeds;
    }
    if let Some(checkpoints) = checkpoints {
        preset.checkpoints = checkpoints;
    }
    if let Some(only) = only {
        preset.methods = select_methods(&preset.methods, &only)?;
    }
    if preset.seeds < 2 || preset.checkpoints == 0 {
        return Err("paired intervals need --seeds of at least 2 and a checkpoint".into());
    }
    preset.grid_seeds = preset.grid_seeds.min(preset.seeds);
    preset.grid_checkpoints = preset.grid_checkpoints.min(preset.checkpoints);
    Ok(Args {
        device: device_by_name(&device_name).map_err(|e| e.for_example("gmt_study"))?,
        device_name,
        preset,
        out,
        compare,
        command,
    })
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

fn main() {
    let args = parse_args().unwrap_or_else(|err| {
        eprintln!("gmt_study: {err}");
        std::process::exit(2);
    });
    let started = Instant::now();
    let preset = &args.preset;
    std::fs::create_dir_all(&args.out).expect("create the output directory");
    println!(
        "GMT study, preset `{}`, device {}: {} checkpoints × {} seeds, {} methods, lr grid {:?}",
        preset.name,
        args.device_name,
        preset.checkpoints,
        preset.seeds,
        preset.methods.len(),
        preset.lr_grid
    );

    let sets = EvalSets::new(preset);
    let cache = args.out.join("checkpoints");
    let checkpoints: Vec<Checkpoint> = (0..preset.checkpoints)
        .map(|i| experiment::checkpoint(preset, i, &args.device, &args.device_name, &cache, &sets))
        .collect();
    for (i, c) in checkpoints.iter().enumerate() {
        println!(
            "checkpoint {i}: base exact match {:.1}%, target {:.1}% before fine-tuning",
            100.0 * c.base,
            100.0 * c.target
        );
    }

    // The grid on a subset, then the test runs at each method's chosen learning rate.
    let grid_specs: Vec<RunSpec> = preset
        .methods
        .iter()
        .flat_map(|&method| {
            preset.lr_grid.iter().flat_map(move |&lr| {
                (0..preset.grid_checkpoints).flat_map(move |checkpoint| {
                    (0..preset.grid_seeds).map(move |seed| RunSpec {
                        checkpoint,
                        seed,
                        method,
                        lr,
                    })
                })
            })
        })
        .collect();
    let mut runs = Runs {
        results: HashMap::new(),
    };
    run_all(&args, &checkpoints, &sets, &grid_specs, &mut runs, "grid");
    let chosen: Vec<f64> = preset
        .methods
        .iter()
        .map(|&method| summary::best_lr(preset, &runs, method))
        .collect();
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
        }
    }
    run_all(&args, &checkpoints, &sets, &test_specs, &mut runs, "test");

    let study = summary::Study {
        preset,
        device_name: &args.device_name,
        command: &args.command,
        checkpoints: &checkpoints,
        runs: &runs,
        grid: &grid_specs,
        test: &test_specs,
        chosen: &chosen,
        shifted_fraction: sets.test_shifted.len() as f64 / sets.test.len() as f64,
        wall_s: started.elapsed().as_secs_f64(),
    };
    summary::write(&study, &args.out, args.compare.as_deref());
}

/// Runs every spec not run yet, printing one line each.
fn run_all(
    args: &Args,
    checkpoints: &[Checkpoint],
    sets: &EvalSets,
    specs: &[RunSpec],
    runs: &mut Runs,
    phase: &str,
) {
    let preset = &args.preset;
    let todo: Vec<&RunSpec> = specs
        .iter()
        .filter(|s| !runs.results.contains_key(&Runs::key(preset, s)))
        .collect();
    println!(
        "\n== {phase}: {} runs ({} shared with earlier runs)",
        todo.len(),
        specs.len() - todo.len()
    );
    for (i, spec) in todo.into_iter().enumerate() {
        let result = experiment::finetune(preset, checkpoints, sets, *spec, &args.device);
        let (peak_epoch, peak) = summary::peak(&result.dev_curve);
        println!(
            "[{phase} {}] {} lr {:e} checkpoint {} seed {}: dev {:.1}% (peak {:.1}% at epoch {}), test {:.1}%, retention {:.0}%, {:.1} ms/step",
            i + 1,
            spec.method.name(),
            spec.lr,
            spec.checkpoint,
            spec.seed,
            100.0 * result.dev_final(),
            100.0 * peak,
            peak_epoch,
            100.0 * result.target,
            100.0 * result.retention,
            result.step_ms
        );
        runs.results.insert(Runs::key(preset, spec), result);
    }
}
