//! The command line of the `llm` example (`generate`, `finetune`), parsed with clap. It lives in
//! the library so that the example's `main` is one call and the options are tested here.

use std::path::PathBuf;

use burn::tensor::Device;
use burn_gmt_lab::device::device_by_name;
use clap::{Parser, Subcommand, ValueEnum};

use crate::LlmError;
use crate::experiment::{FinetuneArgs, run};
use crate::generate::greedy;
use crate::gguf::Gguf;
use crate::model::{Llama, LlamaConfig};
use crate::tokenizer::Tokenizer;
use crate::train::{Schedule, finetune_arms};

/// SmolLM2-135M-Instruct in Burn: greedy generation, and fine-tuning of the top of the whole
/// pretrained model with SFT, GMT and the baselines. Fetch the model with
/// scripts/fetch-smollm2.sh.
#[derive(Debug, Parser)]
#[command(name = "llm")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Greedy continuation of a chat prompt (or of raw token ids).
    Generate(GenerateArgs),
    /// Fine-tune every arm over several seeds and write the report and plots.
    Finetune(FinetuneCli),
}

/// Common options.
#[derive(Debug, clap::Args)]
struct ModelArgs {
    /// The GGUF file.
    #[arg(long, default_value = "models/SmolLM2-135M-Instruct.Q4_1.gguf")]
    model: PathBuf,
    /// Backend: flex, ndarray, wgpu, vulkan, metal, cuda, rocm (each but flex needs its cargo
    /// feature).
    #[arg(long, default_value = "flex")]
    device: String,
}

#[derive(Debug, clap::Args)]
struct GenerateArgs {
    #[command(flatten)]
    common: ModelArgs,
    /// The user message, put in the model's chat template.
    #[arg(
        long,
        required_unless_present = "token_ids",
        conflicts_with = "token_ids"
    )]
    prompt: Option<String>,
    /// Raw token ids to continue instead of a prompt, comma-separated.
    #[arg(long, value_delimiter = ',')]
    token_ids: Option<Vec<u32>>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// Print the K highest logits at the first generated position (0: none).
    #[arg(long, default_value_t = 0)]
    top: usize,
}

/// Sizes of a fine-tuning run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// About 30 minutes on 2 CPU cores (flex): the top 2 blocks trained.
    Cpu,
    /// All 30 blocks trained, 256 steps per run, on a GPU.
    Gpu,
}

/// What a preset sets; each is overridden by its option.
#[derive(Debug, Clone, PartialEq)]
pub struct PresetValues {
    /// `--trainable-blocks`.
    pub trainable_blocks: usize,
    /// `--epochs`.
    pub epochs: usize,
    /// `--batch`.
    pub batch: usize,
    /// `--warmup`.
    pub warmup: usize,
    /// `--lr`.
    pub lr_grid: Vec<f64>,
    /// `--train-items`.
    pub train_items: usize,
}

impl Preset {
    /// The preset's sizes.
    pub fn values(self) -> PresetValues {
        match self {
            Preset::Cpu => PresetValues {
                trainable_blocks: 2,
                epochs: 4,
                batch: 8,
                warmup: 5,
                lr_grid: vec![1e-4, 3e-4],
                train_items: 96,
            },
            Preset::Gpu => PresetValues {
                trainable_blocks: 30,
                epochs: 4,
                batch: 16,
                warmup: 20,
                lr_grid: vec![3e-5, 1e-4],
                train_items: 1024,
            },
        }
    }
}

#[derive(Debug, clap::Args)]
struct FinetuneCli {
    #[command(flatten)]
    common: ModelArgs,
    /// Sizes of the run (the options below override them).
    #[arg(long, value_enum, default_value = "cpu")]
    preset: Preset,
    /// Arms: sft, gmt, gmt-update, gmt-global, random, hft, or all (SFT, GMT, GMT update,
    /// random, HFT); SFT always runs first, the others are compared with it.
    #[arg(long, default_value = "all")]
    method: String,
    /// Mask ratio of GMT and the random mask (HFT freezes half the units).
    #[arg(long, default_value_t = 0.3)]
    ratio: f64,
    /// Seeds (each its own shuffling and mask draws; the data are the same).
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// Blocks trained at the top, with the final norm [default: cpu preset 2, gpu preset 30].
    #[arg(long)]
    trainable_blocks: Option<usize>,
    /// Passes over the training problems [default: cpu 4, gpu 4].
    #[arg(long)]
    epochs: Option<usize>,
    /// Examples per optimizer step [default: cpu 8, gpu 16].
    #[arg(long)]
    batch: Option<usize>,
    /// Optimizer steps of linear warm-up [default: cpu 5, gpu 20].
    #[arg(long)]
    warmup: Option<usize>,
    /// Peak learning rates tried per arm on seed 0, comma-separated; the lowest dev NLL wins
    /// [default: cpu 1e-4,3e-4; gpu 3e-5,1e-4].
    #[arg(long, value_delimiter = ',')]
    lr: Option<Vec<f64>>,
    /// Training problems [default: cpu 96, gpu 1024].
    #[arg(long)]
    train_items: Option<usize>,
    /// Dev problems (held-out split), for the learning rate and the curves.
    #[arg(long, default_value_t = 64)]
    dev_items: usize,
    /// Held-out test problems.
    #[arg(long, default_value_t = 256)]
    test_items: usize,
    /// Most tokens of each recorded probe answer.
    #[arg(long, default_value_t = 64)]
    probe_tokens: usize,
    /// Output folder (results.md, probe.md, the plots, burn-train's logs).
    #[arg(long, default_value = "results/llm")]
    out: PathBuf,
}

impl ModelArgs {
    fn model(&self) -> Result<&PathBuf, LlmError> {
        if !self.model.is_file() {
            return Err(LlmError::Usage(format!(
                "--model: file {} not found: run scripts/fetch-smollm2.sh first",
                self.model.display()
            )));
        }
        Ok(&self.model)
    }

    fn device(&self) -> Result<Device, LlmError> {
        device_by_name(&self.device)
            .map_err(|e| LlmError::Usage(format!("--device: {}", e.for_example("llm"))))
    }
}

impl FinetuneCli {
    /// The experiment's arguments, checked.
    fn into_args(self, command: String) -> Result<FinetuneArgs, LlmError> {
        let preset = self.preset.values();
        let at_least_one = |name: &str, value: usize| {
            if value == 0 {
                Err(LlmError::Usage(format!("--{name} must be at least 1")))
            } else {
                Ok(value)
            }
        };
        if !(0.0..1.0).contains(&self.ratio) {
            return Err(LlmError::Usage(format!(
                "--ratio must be in [0, 1) (the fraction of gradient entries masked), got {}",
                self.ratio
            )));
        }
        let lr_grid = self.lr.unwrap_or(preset.lr_grid);
        if lr_grid.is_empty() || lr_grid.iter().any(|lr| !(*lr > 0.0 && *lr <= 1.0)) {
            return Err(LlmError::Usage(format!(
                "--lr: every learning rate must be in (0, 1], got {lr_grid:?}"
            )));
        }
        at_least_one("seeds", self.seeds as usize)?;
        at_least_one("dev-items", self.dev_items)?;
        at_least_one("test-items", self.test_items)?;
        at_least_one("probe-tokens", self.probe_tokens)?;
        let trainable_blocks = at_least_one(
            "trainable-blocks",
            self.trainable_blocks.unwrap_or(preset.trainable_blocks),
        )?;
        let schedule = Schedule {
            epochs: at_least_one("epochs", self.epochs.unwrap_or(preset.epochs))?,
            batch: at_least_one("batch", self.batch.unwrap_or(preset.batch))?,
            warmup: self.warmup.unwrap_or(preset.warmup),
            lr: lr_grid[0],
        };
        let train_items = at_least_one(
            "train-items",
            self.train_items.unwrap_or(preset.train_items),
        )?;
        let arms = finetune_arms(&self.method, self.ratio)?;
        let device = self.common.device()?;
        Ok(FinetuneArgs {
            model: self.common.model()?.clone(),
            arms,
            seeds: self.seeds,
            trainable_blocks,
            schedule,
            lr_grid,
            train_items,
            dev_items: self.dev_items,
            test_items: self.test_items,
            probe_tokens: self.probe_tokens,
            out: self.out,
            device,
            device_name: self.common.device,
            command,
        })
    }
}

fn generate(args: GenerateArgs) -> Result<(), LlmError> {
    let path = args.common.model()?;
    let device = args.common.device()?;
    let gguf = Gguf::open(path)?;
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    let prompt = match (args.prompt, args.token_ids) {
        (Some(text), None) => tokenizer.chat_prompt(&text)?,
        (None, Some(ids)) => {
            if let Some(id) = ids
                .iter()
                .find(|&&id| id as usize >= tokenizer.vocab_size())
            {
                return Err(LlmError::Usage(format!(
                    "--token-ids: {id} is outside the vocabulary (0..{})",
                    tokenizer.vocab_size()
                )));
            }
            ids
        }
        _ => unreachable!("clap requires exactly one of --prompt and --token-ids"),
    };
    let config = LlamaConfig::from_gguf(&gguf, prompt.len() + args.max_new_tokens)?;
    let model = Llama::from_gguf(&gguf, &config, &device)?;
    drop(gguf);
    let out = greedy(
        &model,
        &prompt,
        args.max_new_tokens,
        Some(tokenizer.im_end),
        args.top,
        &device,
    )?;
    let ids: Vec<String> = out.ids.iter().map(u32::to_string).collect();
    println!("ids: {}", ids.join(","));
    println!("text: {}", tokenizer.decode(&out.ids));
    if args.top > 0 {
        let entries: Vec<String> = out
            .first_top
            .iter()
            .map(|(id, logit)| format!("{id}:{logit:.4}"))
            .collect();
        println!("top{}: {}", args.top, entries.join(" "));
    }
    Ok(())
}

/// Runs `cli`; `command` is how it was invoked, for the report.
fn main_with(cli: Cli, command: String) -> Result<(), LlmError> {
    match cli.command {
        Command::Generate(args) => generate(args),
        Command::Finetune(args) => {
            let args = args.into_args(command)?;
            let report = run(&args)?;
            println!(
                "\n{report}\nwrote {}/results.md and the plots",
                args.out.display()
            );
            Ok(())
        }
    }
}

/// The `llm` example's `main`: parses the process's arguments (clap prints `--help` and
/// usage errors) and runs the command; an error is printed and exits with status 2.
pub fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quoted: Vec<String> = args
        .iter()
        .map(|a| {
            if a.contains(' ') {
                format!("\"{a}\"")
            } else {
                a.clone()
            }
        })
        .collect();
    let command = format!(
        "cargo run --features ndarray,wgpu --example llm -- {}",
        quoted.join(" ")
    );
    if let Err(err) = main_with(Cli::parse(), command) {
        eprintln!("llm: {err}");
        std::process::exit(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn help_lists_every_option_with_its_default() {
        let mut cli = Cli::command();
        cli.build();
        for sub in ["generate", "finetune"] {
            let mut sub = cli.find_subcommand(sub).unwrap().clone();
            let help = sub.render_long_help().to_string();
            for arg in sub.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                if long == "help" {
                    continue;
                }
                assert!(help.contains(&format!("--{long}")), "{long} not in\n{help}");
                // Every option says its default, by clap or in its text; the two inputs of
                // `generate` have none (one of them is required).
                // The option's entry: up to the next option's line.
                let rest = &help[help.find(&format!("--{long}")).unwrap() + 2..];
                let line = &rest[..rest.find("\n  -").unwrap_or(rest.len())];
                if !["prompt", "token-ids"].contains(&long) {
                    assert!(
                        line.contains("default"),
                        "--{long} says no default:\n{line}"
                    );
                }
            }
        }
    }

    #[test]
    fn options_override_the_preset_and_bad_values_name_their_option() {
        let parse = |line: &str| {
            let cli = Cli::try_parse_from(line.split_whitespace()).unwrap();
            match cli.command {
                Command::Finetune(f) => f,
                Command::Generate(_) => unreachable!(),
            }
        };
        // The model path is checked after the numbers, so these need no model file.
        let err = |line: &str| {
            parse(line)
                .into_args(String::new())
                .unwrap_err()
                .to_string()
        };
        assert!(err("llm finetune --ratio 1.5").contains("--ratio"));
        assert!(err("llm finetune --lr 0.1,2").contains("--lr"));
        assert!(err("llm finetune --epochs 0").contains("--epochs"));
        assert!(err("llm finetune --method lora").contains("--method"));
        assert!(err("llm finetune --model nowhere.gguf").contains("--model"));
        let f = parse("llm finetune --preset gpu --epochs 3 --lr 1e-4");
        assert_eq!(f.preset.values().trainable_blocks, 30);
        assert_eq!((f.epochs, f.lr.clone()), (Some(3), Some(vec![1e-4])));
        assert!(Cli::try_parse_from(["llm", "generate"]).is_err());
        assert!(
            Cli::try_parse_from(["llm", "generate", "--prompt", "hi", "--token-ids", "1"]).is_err()
        );
    }
}
