//! The fine-tuning task and the forgetting probe, generated in the program (no download).
//!
//! - Task: two-digit additions asked in ChatML ("What is 47 + 38?"), answered by the number
//!   alone. Train and held-out splits are told apart by a hash of the question, so they never
//!   share one. Scored by exact match of the greedy answer.
//! - Forgetting probe: the base model's own greedy answers to general prompts, recorded before
//!   fine-tuning; afterwards, the NLL per token of those answers under the fine-tuned model.

use burn::data::dataloader::batcher::Batcher;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_gmt_lab::hash::stable_hash;
use burn_gmt_lab::random::{Rng, stream};

use crate::LlmError;
use crate::generate::greedy;
use crate::model::Llama;
use crate::tokenizer::Tokenizer;

/// A prompt and the answer the model should give (ending with the stop token).
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The ChatML prompt, up to and including the assistant header.
    pub prompt: Vec<u32>,
    /// The answer tokens, `<|im_end|>` included.
    pub answer: Vec<u32>,
}

/// General prompts whose base-model answers measure forgetting.
pub const PROBE_PROMPTS: &[&str] = &[
    "What is the capital of France?",
    "Name three primary colors.",
    "Write one sentence about the sea.",
    "What is photosynthesis?",
    "Give me a synonym for happy.",
    "How many days are in a week?",
    "What does a thermometer measure?",
    "Why is the sky blue?",
];

/// Whether `a + b` belongs to the held-out split (a fifth of all questions).
fn is_held_out(a: u32, b: u32) -> bool {
    stable_hash(u64::from(a * 100 + b) ^ 0xADD).is_multiple_of(5)
}

/// `count` distinct additions `(a, b)` of two-digit numbers from the train or held-out split.
pub fn additions(held_out: bool, count: usize, seed: u64) -> Vec<(u32, u32)> {
    let available = (10..100u32)
        .flat_map(|a| (10..100u32).map(move |b| (a, b)))
        .filter(|&(a, b)| is_held_out(a, b) == held_out)
        .count();
    assert!(
        count <= available,
        "only {available} distinct questions in this split"
    );
    let mut rng = stream(seed ^ u64::from(held_out) << 40);
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let r = rng.next_u64();
        let (a, b) = (10 + (r % 90) as u32, 10 + ((r >> 32) % 90) as u32);
        if is_held_out(a, b) == held_out && seen.insert((a, b)) {
            out.push((a, b));
        }
    }
    out
}

/// The ChatML examples of additions.
pub fn addition_examples(
    tokenizer: &Tokenizer,
    pairs: &[(u32, u32)],
) -> Result<Vec<Example>, LlmError> {
    pairs
        .iter()
        .map(|&(a, b)| {
            let mut answer = tokenizer.encode(&(a + b).to_string())?;
            answer.push(tokenizer.im_end);
            Ok(Example {
                prompt: tokenizer.chat_prompt(&format!("What is {a} + {b}?"))?,
                answer,
            })
        })
        .collect()
}

/// The base model's greedy answers (at most `max_new` tokens) to [`PROBE_PROMPTS`].
pub fn record_probe(
    model: &Llama,
    tokenizer: &Tokenizer,
    max_new: usize,
    device: &Device,
) -> Result<Vec<Example>, LlmError> {
    PROBE_PROMPTS
        .iter()
        .map(|p| {
            let prompt = tokenizer.chat_prompt(p)?;
            let answer = greedy(model, &prompt, max_new, Some(tokenizer.im_end), 0, device)?.ids;
            Ok(Example { prompt, answer })
        })
        .collect()
}

/// Examples as tensors: the inputs, right-padded, and where the answer tokens are predicted.
#[derive(Debug, Clone)]
pub struct LlmBatch {
    /// Input tokens `[batch, len]`: each example's prompt and answer but the last token.
    pub inputs: Tensor<2, Int>,
    /// Flat indices into `[batch * len]` of the positions that predict an answer token.
    pub positions: Tensor<1, Int>,
    /// The answer token predicted at each of `positions`.
    pub targets: Tensor<1, Int>,
    /// Answer length of each example, in order (to score whole answers).
    pub answer_lens: Vec<usize>,
}

/// Builds [`LlmBatch`]es (padding with token 0: causal attention never lets a real position
/// see the padding on its right).
#[derive(Debug, Clone, Default)]
pub struct LlmBatcher;

impl Batcher<Example, LlmBatch> for LlmBatcher {
    fn batch(&self, items: Vec<Example>, device: &Device) -> LlmBatch {
        let len = items
            .iter()
            .map(|e| e.prompt.len() + e.answer.len() - 1)
            .max()
            .unwrap_or(1);
        let mut inputs = vec![0i64; items.len() * len];
        let mut positions = Vec::new();
        let mut targets = Vec::new();
        for (row, e) in items.iter().enumerate() {
            let seq = e
                .prompt
                .iter()
                .chain(&e.answer)
                .take(e.prompt.len() + e.answer.len() - 1);
            for (i, &t) in seq.enumerate() {
                inputs[row * len + i] = i64::from(t);
            }
            for (j, &t) in e.answer.iter().enumerate() {
                positions.push((row * len + e.prompt.len() - 1 + j) as i64);
                targets.push(i64::from(t));
            }
        }
        let n = positions.len();
        LlmBatch {
            inputs: Tensor::from_data(TensorData::new(inputs, [items.len(), len]), device),
            positions: Tensor::from_data(TensorData::new(positions, [n]), device),
            targets: Tensor::from_data(TensorData::new(targets, [n]), device),
            answer_lens: items.iter().map(|e| e.answer.len()).collect(),
        }
    }
}

/// Logits `[answer tokens, vocab]` at the positions that predict the answers: the output head
/// runs on those rows only, which is most of the saving on a 49k-token vocabulary.
pub fn answer_logits(model: &Llama, batch: &LlmBatch) -> Tensor<2> {
    let hidden = model.hidden(batch.inputs.clone(), None);
    let [b, t, d] = hidden.dims();
    model.logits(
        hidden
            .reshape([b * t, d])
            .select(0, batch.positions.clone()),
    )
}

/// Mean cross-entropy of the answer tokens.
pub fn answer_loss(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let device = logits.device();
    CrossEntropyLossConfig::new()
        .init(&device)
        .forward(logits, targets)
}

/// Scores of a model on examples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    /// Fraction of examples whose whole answer is the greedy one.
    pub exact_match: f64,
    /// Mean NLL per answer token.
    pub nll: f64,
}

/// Exact match and NLL per answer token, in batches of `batch`. Greedy decoding reproduces an
/// answer exactly when the argmax at every answer position, fed the true prefix, is the answer
/// token (the answer ends with the stop token), so one teacher-forced pass scores it.
pub fn score(
    model: &Llama,
    examples: &[Example],
    batch: usize,
    device: &Device,
) -> Result<Scores, LlmError> {
    let (mut correct, mut nll_sum, mut tokens) = (0usize, 0.0, 0usize);
    for chunk in examples.chunks(batch.max(1)) {
        let batch = LlmBatcher.batch(chunk.to_vec(), device);
        let logits = answer_logits(model, &batch);
        let n = batch.answer_lens.iter().sum::<usize>();
        let loss: f64 = answer_loss(logits.clone(), batch.targets.clone()).into_scalar::<f64>();
        nll_sum += loss * n as f64;
        tokens += n;
        let read = |t: Tensor<1, Int>| -> Result<Vec<i64>, LlmError> {
            t.into_data()
                .try_into_vec_as::<i64>()
                .map_err(|e| LlmError::Format(format!("reading predictions: {e:?}")))
        };
        let predicted = read(logits.argmax(1).reshape([n]))?;
        let targets = read(batch.targets)?;
        let mut at = 0;
        for &len in &batch.answer_lens {
            correct += usize::from(predicted[at..at + len] == targets[at..at + len]);
            at += len;
        }
    }
    Ok(Scores {
        exact_match: correct as f64 / examples.len().max(1) as f64,
        nll: nll_sum / tokens.max(1) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_are_disjoint_distinct_and_seeded() {
        let train = additions(false, 500, 1);
        let test = additions(true, 200, 1);
        assert!(train.iter().all(|p| !test.contains(p)));
        let distinct: std::collections::HashSet<_> = train.iter().collect();
        assert_eq!(distinct.len(), 500);
        assert_eq!(additions(false, 50, 1), train[..50]);
        assert_ne!(additions(false, 50, 2), train[..50]);
    }

    #[test]
    fn batches_point_at_the_positions_that_predict_answers() {
        let device = Device::flex();
        let items = vec![
            Example {
                prompt: vec![5, 6, 7],
                answer: vec![8, 9],
            },
            Example {
                prompt: vec![5],
                answer: vec![4],
            },
        ];
        let batch = LlmBatcher.batch(items, &device);
        // Row 0 inputs 5 6 7 8 (len 4); row 1 inputs 5, padded.
        assert_eq!(batch.inputs.dims(), [2, 4]);
        let ints = |t: Tensor<1, Int>| t.into_data().try_into_vec_as::<i64>().unwrap();
        assert_eq!(ints(batch.inputs.reshape([8])), [5, 6, 7, 8, 5, 0, 0, 0]);
        assert_eq!(ints(batch.positions), [2, 3, 4]);
        assert_eq!(ints(batch.targets), [8, 9, 4]);
        assert_eq!(batch.answer_lens, [2, 1]);
    }
}
