//! Fine-tuning through burn-train's `Learner`: AdamW on `f32` master weights, linear warm-up
//! then cosine decay, gradient accumulation, and one of the masking methods: plain SFT, GMT
//! per tensor (the optimizer wrapper), GMT with one global threshold and HFT (a [`GradMask`](burn_gmt::GradMask)
//! in [`TrainStep::optimize`](burn::train::TrainStep::optimize)), or a random mask of the same ratio. The methods and their
//! set-up are the GMT study's ([`burn_gmt_lab::methods`]).

use std::path::Path;
use std::sync::Arc;

use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::InMemDataset;
use burn::module::Module;
use burn::optim::AdamWConfig;
use burn::optim::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
use burn::optim::lr_scheduler::linear::LinearLrSchedulerConfig;
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::optim::lr_scheduler::sequential::SequentialLrSchedulerConfig;
use burn::tensor::Device;
use burn::train::metric::{AccuracyMetric, LossMetric};
use burn::train::{ClassificationOutput, Learner, SupervisedTraining};

use crate::LlmError;
use crate::model::Llama;
use crate::task::{Example, LlmBatch, LlmBatcher, answer_logits, answer_loss};
use burn_gmt_lab::methods::{LossModel, MaskedModel, Method, launch_timed, method_parts};
use burn_gmt_lab::progress::LineRenderer;

/// The methods `--method NAME` selects, with mask ratio `ratio`.
pub fn parse_methods(name: &str, ratio: f64) -> Result<Vec<Method>, LlmError> {
    Ok(match name {
        "sft" => vec![Method::Sft],
        "gmt" => vec![Method::Gmt(ratio)],
        "gmt-global" => vec![Method::GmtGlobal(ratio)],
        "random" => vec![Method::Random(ratio)],
        "hft" => vec![Method::Hft],
        "all" => vec![
            Method::Sft,
            Method::Gmt(ratio),
            Method::GmtGlobal(ratio),
            Method::Random(ratio),
            Method::Hft,
        ],
        other => {
            return Err(LlmError::Usage(format!(
                "unknown method `{other}` (sft, gmt, gmt-global, random, hft, all)"
            )));
        }
    })
}

/// A folder name for `method`'s runs.
pub fn folder_name(method: Method) -> String {
    method.name().replace([' ', '=', '(', ')'], "_")
}

impl LossModel for Llama {
    type Batch = LlmBatch;

    fn loss(&self, batch: LlmBatch) -> ClassificationOutput {
        let logits = answer_logits(self, &batch);
        ClassificationOutput {
            loss: answer_loss(logits.clone(), batch.targets.clone()),
            output: logits,
            targets: batch.targets,
        }
    }
}

/// Schedule and sizes of a fine-tuning run.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Optimizer steps.
    pub steps: usize,
    /// Examples per micro-batch.
    pub batch: usize,
    /// Micro-batches per optimizer step.
    pub accumulation: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f32,
}

impl Schedule {
    /// Linear warm-up over a tenth of the steps, then cosine decay to zero.
    fn lr_scheduler(&self) -> Result<ModuleLrScheduler, LlmError> {
        let bad = |e: String| LlmError::Usage(format!("learning-rate schedule: {e}"));
        if self.steps < 2 {
            return CosineAnnealingLrSchedulerConfig::new(self.lr, 1)
                .init()
                .map_err(bad);
        }
        let warmup = (self.steps / 10).max(1);
        SequentialLrSchedulerConfig::new(
            vec![
                LinearLrSchedulerConfig::new(self.lr / warmup as f64, self.lr, warmup).into(),
                CosineAnnealingLrSchedulerConfig::new(self.lr, self.steps - warmup).into(),
            ],
            vec![warmup],
        )
        .init()
        .map_err(bad)
    }
}

fn loader(
    examples: Vec<Example>,
    batch: usize,
    seed: u64,
    device: &Device,
) -> Arc<dyn DataLoader<LlmBatch>> {
    DataLoaderBuilder::new(LlmBatcher)
        .batch_size(batch)
        .shuffle(seed)
        .num_workers(1)
        .set_device(device.clone())
        .build(InMemDataset::new(examples))
}

/// What a fine-tuning run gives back.
pub struct Outcome {
    /// The fine-tuned model (without autodiff).
    pub model: Llama,
    /// Wall time per optimizer step, in milliseconds.
    pub step_ms: f64,
    /// Fraction of gradient entries kept at the last step (1 without a mask).
    pub kept: f64,
}

/// Fine-tunes `model` with `method` on `train` (cycled to `steps * batch * accumulation`
/// examples, one pass), validating on `valid`; logs and burn-train's files go to `dir`.
#[allow(clippy::too_many_arguments)]
pub fn finetune(
    model: Llama,
    method: Method,
    schedule: &Schedule,
    train: &[Example],
    valid: Vec<Example>,
    seed: u64,
    dir: &Path,
    device: &Device,
) -> Result<Outcome, LlmError> {
    if train.is_empty() || valid.is_empty() {
        return Err(LlmError::Usage("no training or validation example".into()));
    }
    let items = schedule.steps * schedule.batch * schedule.accumulation;
    let train_set: Vec<Example> = train.iter().cycle().take(items).cloned().collect();
    let adamw = AdamWConfig::new().with_weight_decay(schedule.weight_decay);
    // HFT stages of a quarter of the run, so the frozen half is re-drawn a few times.
    let stage_steps = (schedule.steps as u64 / 4).max(1);
    let (optim, mask, stats) = method_parts(method, &adamw, seed, stage_steps);
    let final_stats = stats.clone();
    // Training runs on the autodiff device; the batches go there too.
    let train_device = device.clone().autodiff();
    let learner = Learner::new(
        MaskedModel {
            lm: model.fork(&train_device).train(),
            mask,
        },
        optim,
        schedule.lr_scheduler()?,
    );
    let label = dir
        .file_name()
        .map_or(String::new(), |n| n.to_string_lossy().into_owned());
    let training = SupervisedTraining::new(
        dir,
        loader(train_set, schedule.batch, seed, &train_device),
        loader(valid, schedule.batch, seed, &train_device),
    )
    .metrics((LossMetric::new(), AccuracyMetric::new()))
    .grads_accumulation(schedule.accumulation)
    .num_epochs(1)
    .renderer(Box::new(LineRenderer::new(label)));
    let (model, elapsed) = launch_timed(training, learner, stats)
        .map_err(|error| LlmError::Format(format!("training failed: {error}")))?;
    Ok(Outcome {
        model,
        step_ms: elapsed * 1e3 / schedule.steps as f64,
        kept: final_stats.map_or(1.0, |s| s.latest().kept_fraction()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LlamaConfig;
    use crate::task::{addition_examples, additions};
    use crate::testing::{self, tiny_model_file};

    /// Every weight of the model, in visiting order.
    fn weights_of(model: &Llama) -> Vec<f32> {
        let mut out = Vec::new();
        model.visit(&mut Collect(&mut out));
        out
    }

    struct Collect<'a>(&'a mut Vec<f32>);

    impl burn::module::ModuleVisitor for Collect<'_> {
        fn visit_float<const D: usize>(
            &mut self,
            param: &burn::module::Param<burn::tensor::Tensor<D>>,
        ) {
            self.0
                .extend(param.val().into_data().try_into_vec_as::<f32>().unwrap());
        }
    }

    #[test]
    fn one_step_of_each_method_trains_the_tiny_model() {
        let device = testing::device();
        let (gguf, _, tokenizer) = tiny_model_file(5);
        let config = LlamaConfig::from_gguf(&gguf, 64).unwrap();
        let base = Llama::from_gguf(&gguf, &config, None, &device).unwrap();
        let before = weights_of(&base);
        let examples = addition_examples(&tokenizer, &additions(false, 8, 1)).unwrap();
        let schedule = Schedule {
            steps: 1,
            batch: 2,
            accumulation: 2,
            lr: 1e-2,
            weight_decay: 0.0,
        };
        let dir = std::env::temp_dir().join(format!("burn-gmt-llm-test-{}", std::process::id()));
        let mut sft_moved = None;
        for method in parse_methods("all", 0.5).unwrap() {
            let outcome = finetune(
                base.clone(),
                method,
                &schedule,
                &examples,
                examples[..2].to_vec(),
                0,
                &dir.join(folder_name(method)),
                &device,
            )
            .unwrap_or_else(|e| panic!("{}: {e}", method.name()));
            let after = weights_of(&outcome.model);
            assert_eq!(after.len(), before.len());
            let moved = after.iter().zip(&before).filter(|(a, b)| a != b).count();
            // SFT moves every weight with a gradient (after one AdamW step, by about the
            // learning rate); a mask of ratio 0.5 (HFT: half the tensors of each block) holds
            // a good part of them still.
            match (method, sft_moved) {
                (Method::Sft, _) => {
                    assert_eq!(outcome.kept, 1.0);
                    assert!(moved > before.len() / 4, "SFT moved only {moved}");
                    sft_moved = Some(moved);
                }
                (_, Some(sft)) => {
                    assert!(
                        outcome.kept < 0.9,
                        "{}: kept {}",
                        method.name(),
                        outcome.kept
                    );
                    assert!(
                        moved > 0 && (moved as f64) < 0.85 * sft as f64,
                        "{}: moved {moved}, SFT {sft}",
                        method.name()
                    );
                }
                (_, None) => unreachable!("SFT runs first"),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn methods_parse_by_name() {
        assert_eq!(parse_methods("gmt", 0.2).unwrap(), [Method::Gmt(0.2)]);
        assert_eq!(parse_methods("all", 0.3).unwrap().len(), 5);
        assert!(parse_methods("lora", 0.3).is_err());
    }
}
