//! The fine-tuning task and the forgetting probe, generated in the program (no download).
//!
//! - Task: additions and subtractions of 2–3 digit numbers asked in ChatML ("What is 347 - 58?").
//!   The assistant's turn starts with the equation (`347 - 58 =`, part of the prompt: the form
//!   SmolLM2-135M-Instruct answers in by itself) and the answer is the result and the stop token
//!   (` 289<|im_end|>`). Train and held-out splits are told apart by a hash of the question,
//!   so they never share one.
//! - Forgetting probe: the base model's own greedy answers to [`PROBE_PROMPTS`] (facts,
//!   instructions, code, chat), recorded before fine-tuning; afterwards, the NLL per token of
//!   those answers under the fine-tuned model.

use burn::data::dataloader::batcher::Batcher;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_gmt_lab::hash::stable_hash;
use burn_gmt_lab::random::{Rng, SplitMix64, stream};

use crate::LlmError;
use crate::generate::greedy_batch;
use crate::model::Llama;
use crate::tokenizer::Tokenizer;

/// A prompt and the answer the model should give.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The ChatML prompt, up to and including the assistant header (and, for the task, the
    /// equation the answer completes).
    pub prompt: Vec<u32>,
    /// The answer tokens (for the task: the result and `<|im_end|>`).
    pub answer: Vec<u32>,
}

/// General prompts whose base-model answers measure forgetting: facts, instructions, code and
/// chat.
pub const PROBE_PROMPTS: &[&str] = &[
    "What is the capital of France?",
    "Name three primary colors.",
    "Write one sentence about the sea.",
    "What is photosynthesis?",
    "Give me a synonym for happy.",
    "How many days are in a week?",
    "What does a thermometer measure?",
    "Why is the sky blue?",
    "Who wrote Romeo and Juliet?",
    "What is the largest planet in the solar system?",
    "What is the boiling point of water at sea level?",
    "Which ocean is the largest?",
    "What language is spoken in Brazil?",
    "How many continents are there?",
    "What is the chemical symbol for gold?",
    "Who painted the Mona Lisa?",
    "What is the tallest mountain on Earth?",
    "What do bees make?",
    "What is the freezing point of water in Fahrenheit?",
    "What gas do plants absorb from the air?",
    "Explain gravity to a child.",
    "What is a noun?",
    "Describe a rainy day in two sentences.",
    "Give me three tips for better sleep.",
    "List four fruits that are red.",
    "Summarize the story of Cinderella in one sentence.",
    "Write a haiku about autumn.",
    "Translate 'good morning' into Spanish.",
    "Suggest a name for a pet cat.",
    "Write a short thank-you note to a teacher.",
    "How do I boil an egg?",
    "Give me a recipe idea for dinner.",
    "What should I pack for a beach trip?",
    "Write a slogan for a coffee shop.",
    "Explain what a verb is with an example.",
    "Give two reasons to exercise regularly.",
    "Write a Python function that returns the square of a number.",
    "What does HTML stand for?",
    "How do you reverse a list in Python?",
    "Write a SQL query that selects all rows from a table named users.",
    "What is a variable in programming?",
    "Explain what a for loop does.",
    "Write a JavaScript function that adds two numbers.",
    "What is the difference between a list and a tuple in Python?",
    "How do I print hello world in C?",
    "What is recursion?",
    "What is an API?",
    "Write a bash command that lists the files in a folder.",
    "Hi! How are you today?",
    "Can you tell me a joke?",
    "I feel a bit tired today. Any advice?",
    "What is your favorite book and why?",
    "Thank you for your help!",
    "Can you recommend a good movie?",
    "What do you like to do for fun?",
    "I just got a new puppy!",
    "Tell me something interesting about octopuses.",
    "What is the meaning of friendship?",
    "How can I be more productive at work?",
    "What is a good way to learn a new language?",
    "Why do leaves change color in the fall?",
    "What is the difference between weather and climate?",
    "How does a rainbow form?",
    "What are the three states of matter?",
];

/// An arithmetic question: `a + b` or `a - b` (`a ≥ b` for a subtraction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Problem {
    /// Left operand.
    pub a: u32,
    /// Right operand.
    pub b: u32,
    /// Whether it is a subtraction.
    pub minus: bool,
}

impl Problem {
    /// The equation's left side, `347 - 58`.
    pub fn question(&self) -> String {
        format!(
            "{} {} {}",
            self.a,
            if self.minus { '-' } else { '+' },
            self.b
        )
    }

    /// The result.
    pub fn result(&self) -> u32 {
        if self.minus {
            self.a - self.b
        } else {
            self.a + self.b
        }
    }

    /// Whether it belongs to the held-out split (a fifth of all questions).
    fn is_held_out(&self) -> bool {
        let key = u64::from(self.a) << 32 | u64::from(self.b) << 1 | u64::from(self.minus);
        stable_hash(key ^ 0xADD).is_multiple_of(5)
    }
}

/// `count` distinct problems of the train or held-out split: operands of 2 digits (two in
/// three) or 3 digits, additions and subtractions alike.
pub fn problems(held_out: bool, count: usize, seed: u64) -> Result<Vec<Problem>, LlmError> {
    // Far below the ~400,000 questions of the smaller split.
    if count > 100_000 {
        return Err(LlmError::Usage(format!(
            "at most 100000 problems per split, asked for {count}"
        )));
    }
    let mut rng = stream(seed ^ u64::from(held_out) << 40);
    let operand = |rng: &mut SplitMix64| {
        let r = rng.next_u64();
        if r % 3 < 2 {
            10 + ((r >> 2) % 90) as u32
        } else {
            100 + ((r >> 2) % 900) as u32
        }
    };
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let (x, y) = (operand(&mut rng), operand(&mut rng));
        let minus = rng.next_u64() & 1 == 1;
        let (a, b) = if minus { (x.max(y), x.min(y)) } else { (x, y) };
        let problem = Problem { a, b, minus };
        if problem.is_held_out() == held_out && seen.insert(problem) {
            out.push(problem);
        }
    }
    Ok(out)
}

/// The ChatML examples of `problems`: the question, the assistant's turn opened with the
/// equation, and the result with the stop token as the answer.
pub fn problem_examples(
    tokenizer: &Tokenizer,
    problems: &[Problem],
) -> Result<Vec<Example>, LlmError> {
    problems
        .iter()
        .map(|p| {
            let mut prompt = tokenizer.chat_prompt(&format!("What is {}?", p.question()))?;
            prompt.extend(tokenizer.encode(&format!("{} =", p.question()))?);
            let mut answer = tokenizer.encode(&format!(" {}", p.result()))?;
            answer.push(tokenizer.im_end);
            Ok(Example { prompt, answer })
        })
        .collect()
}

/// The token ids of the ten digits (what ends a number: anything else).
pub fn digit_ids(tokenizer: &Tokenizer) -> Result<Vec<u32>, LlmError> {
    (0..10)
        .map(|d| match tokenizer.encode(&d.to_string())?.as_slice() {
            &[id] => Ok(id),
            other => Err(LlmError::Format(format!(
                "digit {d} is {} tokens, not one (the task needs digits split one by one)",
                other.len()
            ))),
        })
        .collect()
}

/// The base model's greedy answers (at most `max_new` tokens) to [`PROBE_PROMPTS`], decoded
/// 16 prompts at a time.
pub fn record_probe(
    model: &Llama,
    tokenizer: &Tokenizer,
    max_new: usize,
    device: &Device,
) -> Result<Vec<Example>, LlmError> {
    let prompts = PROBE_PROMPTS
        .iter()
        .map(|p| tokenizer.chat_prompt(p))
        .collect::<Result<Vec<_>, _>>()?;
    let mut examples = Vec::with_capacity(prompts.len());
    for chunk in prompts.chunks(16) {
        let answers = greedy_batch(model, chunk, max_new, Some(tokenizer.im_end), device)?;
        examples.extend(chunk.iter().zip(answers).map(|(prompt, answer)| Example {
            prompt: prompt.clone(),
            answer,
        }));
    }
    Ok(examples)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_are_disjoint_distinct_and_seeded() {
        let train = problems(false, 500, 1).unwrap();
        let test = problems(true, 200, 1).unwrap();
        assert!(train.iter().all(|p| !test.contains(p)));
        let distinct: std::collections::HashSet<_> = train.iter().collect();
        assert_eq!(distinct.len(), 500);
        assert_eq!(problems(false, 50, 1).unwrap(), train[..50]);
        assert_ne!(problems(false, 50, 2).unwrap(), train[..50]);
        // Both operations, both operand lengths, no negative result.
        assert!(train.iter().any(|p| p.minus) && train.iter().any(|p| !p.minus));
        assert!(train.iter().any(|p| p.a < 100) && train.iter().any(|p| p.a >= 100));
        assert!(train.iter().all(|p| !p.minus || p.a >= p.b));
        assert_eq!(
            Problem {
                a: 347,
                b: 58,
                minus: true
            }
            .result(),
            289
        );
        assert_eq!(
            Problem {
                a: 47,
                b: 158,
                minus: false
            }
            .question(),
            "47 + 158"
        );
        assert!(problems(false, 100_001, 1).is_err());
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
