//! SmolLM2-135M-Instruct in Burn: greedy generation, and fine-tuning with SFT, GMT and the
//! baselines. The model comes from `scripts/fetch-smollm2.sh` (a GGUF file).
//!
//! ```text
//! cargo run --release --example llm -- generate --model models/SmolLM2-135M-Instruct.Q4_1.gguf \
//!     --prompt "What is the capital of France?" --top 5
//! cargo run --release --example llm -- finetune --model models/SmolLM2-135M-Instruct.Q4_1.gguf \
//!     --method all --layers 4 --steps 12 --batch 4 --accumulation 2 --lr 1e-3 --seeds 3
//! ```
//! Run with `--help` for every option; `--device wgpu` etc. need the matching feature
//! (`--features wgpu`).

use std::path::PathBuf;

use burn::tensor::Device;
use burn_gmt_lab::device::device_by_name;
use burn_gmt_llm::LlmError;
use burn_gmt_llm::experiment::{FinetuneArgs, run};
use burn_gmt_llm::generate::greedy;
use burn_gmt_llm::gguf::Gguf;
use burn_gmt_llm::model::{Llama, LlamaConfig};
use burn_gmt_llm::tokenizer::Tokenizer;
use burn_gmt_llm::train::{Schedule, parse_methods};

const HELP: &str = "\
usage:
  llm generate --model PATH (--prompt TEXT | --token-ids 1,2,3) [--max-new-tokens N] [--top K] [--device D]
  llm finetune --model PATH [--method sft|gmt|gmt-global|random|hft|all] [--ratio R] [--steps N]
               [--seeds S] [--device D] [--layers L] [--batch B] [--accumulation A] [--lr LR]
               [--train-items N] [--test-items N] [--out DIR]
devices: flex (default), ndarray, wgpu, vulkan, metal, cuda, rocm (each but flex needs its cargo feature)";

/// `--flag value` pairs after the command.
struct Flags(Vec<(String, String)>);

impl Flags {
    fn parse(args: &[String], known: &[&str]) -> Result<Self, LlmError> {
        let mut pairs = Vec::new();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            if !known.contains(&flag.as_str()) {
                return Err(LlmError::Usage(format!("unknown option `{flag}`\n{HELP}")));
            }
            let value = it
                .next()
                .ok_or_else(|| LlmError::Usage(format!("{flag} needs a value")))?;
            pairs.push((flag.clone(), value.clone()));
        }
        Ok(Self(pairs))
    }

    fn get(&self, flag: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(f, _)| f == flag)
            .map(|(_, v)| v.as_str())
    }

    fn num<T: std::str::FromStr>(&self, flag: &str, default: T) -> Result<T, LlmError>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(flag) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|e| LlmError::Usage(format!("{flag} `{v}`: {e}"))),
        }
    }

    fn model(&self) -> Result<PathBuf, LlmError> {
        let path = PathBuf::from(self.get("--model").ok_or_else(|| {
            LlmError::Usage(
                "--model PATH is required (fetch the model with scripts/fetch-smollm2.sh)".into(),
            )
        })?);
        if !path.is_file() {
            return Err(LlmError::Usage(format!(
                "model file {} not found: run scripts/fetch-smollm2.sh first",
                path.display()
            )));
        }
        Ok(path)
    }

    fn device(&self) -> Result<(Device, String), LlmError> {
        let name = self.get("--device").unwrap_or("flex").to_string();
        let device = device_by_name(&name).map_err(|e| LlmError::Usage(e.for_example("llm")))?;
        Ok((device, name))
    }
}

fn generate(args: &[String]) -> Result<(), LlmError> {
    let flags = Flags::parse(
        args,
        &[
            "--model",
            "--prompt",
            "--token-ids",
            "--max-new-tokens",
            "--top",
            "--device",
        ],
    )?;
    let path = flags.model()?;
    let (device, _) = flags.device()?;
    let max_new = flags.num("--max-new-tokens", 32usize)?;
    let top = flags.num("--top", 0usize)?;
    let gguf = Gguf::open(&path)?;
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    let prompt = match (flags.get("--prompt"), flags.get("--token-ids")) {
        (Some(text), None) => tokenizer.chat_prompt(text)?,
        (None, Some(ids)) => ids
            .split(',')
            .map(|s| {
                let id: u32 = s
                    .trim()
                    .parse()
                    .map_err(|e| LlmError::Usage(format!("--token-ids `{s}`: {e}")))?;
                if id as usize >= tokenizer.vocab_size() {
                    return Err(LlmError::Usage(format!(
                        "--token-ids: {id} is outside the vocabulary (0..{})",
                        tokenizer.vocab_size()
                    )));
                }
                Ok(id)
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(LlmError::Usage(
                "give exactly one of --prompt TEXT and --token-ids 1,2,3".into(),
            ));
        }
    };
    let config = LlamaConfig::from_gguf(&gguf, prompt.len() + max_new)?;
    let model = Llama::from_gguf(&gguf, &config, None, &device)?;
    drop(gguf);
    let out = greedy(
        &model,
        &prompt,
        max_new,
        Some(tokenizer.im_end),
        top,
        &device,
    )?;
    let ids: Vec<String> = out.ids.iter().map(u32::to_string).collect();
    println!("ids: {}", ids.join(","));
    println!("text: {}", tokenizer.decode(&out.ids));
    if top > 0 {
        let entries: Vec<String> = out
            .first_top
            .iter()
            .map(|(id, logit)| format!("{id}:{logit:.4}"))
            .collect();
        println!("top{top}: {}", entries.join(" "));
    }
    Ok(())
}

fn finetune(args: &[String], command: String) -> Result<(), LlmError> {
    let flags = Flags::parse(
        args,
        &[
            "--model",
            "--method",
            "--ratio",
            "--steps",
            "--seeds",
            "--device",
            "--layers",
            "--batch",
            "--accumulation",
            "--lr",
            "--train-items",
            "--test-items",
            "--out",
        ],
    )?;
    let ratio = flags.num("--ratio", 0.3f64)?;
    if !(0.0..1.0).contains(&ratio) {
        return Err(LlmError::Usage(format!(
            "--ratio must be in [0, 1) (the fraction of gradient entries masked), got {ratio}"
        )));
    }
    let schedule = Schedule {
        steps: flags.num("--steps", 24usize)?,
        batch: flags.num("--batch", 8usize)?,
        accumulation: flags.num("--accumulation", 2usize)?,
        lr: flags.num("--lr", 1e-4f64)?,
        weight_decay: 0.0,
    };
    if schedule.steps == 0 || schedule.batch == 0 || schedule.accumulation == 0 {
        return Err(LlmError::Usage(
            "--steps, --batch and --accumulation must be at least 1".into(),
        ));
    }
    if !(schedule.lr > 0.0 && schedule.lr <= 1.0) {
        return Err(LlmError::Usage(format!(
            "--lr must be in (0, 1], got {}",
            schedule.lr
        )));
    }
    let seeds = flags.num("--seeds", 3u64)?;
    if seeds == 0 {
        return Err(LlmError::Usage("--seeds must be at least 1".into()));
    }
    let layers = match flags.get("--layers") {
        None => None,
        Some(_) => Some(flags.num("--layers", 0usize)?),
    };
    let (device, device_name) = flags.device()?;
    let args = FinetuneArgs {
        model: flags.model()?,
        methods: parse_methods(flags.get("--method").unwrap_or("all"), ratio)?,
        seeds,
        layers,
        train_items: flags.num("--train-items", 1000usize)?.min(5000),
        test_items: flags.num("--test-items", 200usize)?.clamp(1, 1000),
        probe_tokens: 24,
        out: PathBuf::from(flags.get("--out").unwrap_or("results/llm")),
        device,
        device_name,
        command,
        schedule,
    };
    let report = run(&args)?;
    println!(
        "\n{report}\nwrote {}/results.md and the plots",
        args.out.display()
    );
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = format!(
        "cargo run --release --example llm -- {}",
        args.iter()
            .map(|a| if a.contains(' ') {
                format!("\"{a}\"")
            } else {
                a.clone()
            })
            .collect::<Vec<_>>()
            .join(" ")
    );
    let result = match args.first().map(String::as_str) {
        Some("generate") => generate(&args[1..]),
        Some("finetune") => finetune(&args[1..], command),
        Some("-h" | "--help") => {
            println!("{HELP}");
            Ok(())
        }
        _ => Err(LlmError::Usage(HELP.into())),
    };
    if let Err(err) = result {
        eprintln!("llm: {err}");
        std::process::exit(2);
    }
}
