//! Procedurally generated sequence tasks, answered by exact match (as GSM8K is): every
//! answer digit must be right. No download: every split is a pure function of a seed.
//!
//! - Base tasks ("pre-training"): reverse a sequence of digits; add one to every digit, mod 10.
//! - Target task: reverse the sequence *and* add one to every digit: a new instruction that
//!   composes the two base skills, learned from few examples.

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use burn::tensor::{Device, Int, Tensor, TensorData};

/// Tokens: the ten digits, then the symbols.
pub const EQUALS: usize = 10;
pub const BOS: usize = 11;
pub const PAD: usize = 12;
/// Task markers: the model is told which task it is asked, so both can coexist and the base
/// task's accuracy after fine-tuning measures forgetting.
pub const REVERSE: usize = 13;
pub const INCREMENT: usize = 14;
pub const REVERSE_INCREMENT: usize = 15;
pub const VOCAB: usize = 16;
/// Digits in a problem and in its answer.
pub const DIGITS: usize = 6;
/// `BOS`, the task marker, the digits, `=`, the answer.
pub const SEQ_LEN: usize = 2 * DIGITS + 3;
/// Position of the first answer token.
pub const ANSWER_START: usize = DIGITS + 3;

/// One problem: its tokens.
#[derive(Debug, Clone)]
pub struct Problem {
    pub tokens: Vec<usize>,
}

/// The tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Base: reverse the digits.
    Reverse,
    /// Base: add one to every digit, mod 10.
    Increment,
    /// Target: reverse the digits and add one to each, mod 10.
    ReverseIncrement,
}

/// The base ("pre-training") tasks.
pub const BASE: &[Task] = &[Task::Reverse, Task::Increment];
/// The target (fine-tuning) task.
pub const TARGET: &[Task] = &[Task::ReverseIncrement];

fn problem(task: Task, digits: [usize; DIGITS]) -> Problem {
    let marker = match task {
        Task::Reverse => REVERSE,
        Task::Increment => INCREMENT,
        Task::ReverseIncrement => REVERSE_INCREMENT,
    };
    let mut tokens = vec![BOS, marker];
    tokens.extend(digits);
    tokens.push(EQUALS);
    tokens.extend((0..DIGITS).map(|i| {
        let mirrored = digits[DIGITS - 1 - i];
        match task {
            Task::Reverse => mirrored,
            Task::Increment => (digits[i] + 1) % 10,
            Task::ReverseIncrement => (mirrored + 1) % 10,
        }
    }));
    Problem { tokens }
}

/// SplitMix64 step: a tiny seeded generator, so splits never depend on a library's RNG.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    burn_gmt::kernels::random::mix64(*state)
}

/// Whether a digit sequence belongs to the held-out test split: decided by a hash of the
/// sequence alone, so train and test share no item whatever the sizes drawn.
fn is_test(digits: &[usize; DIGITS]) -> bool {
    let id = digits.iter().fold(0u64, |acc, &d| acc * 10 + d as u64);
    burn_gmt::kernels::random::mix64(id ^ 0xC0FF_EE00).is_multiple_of(5)
}

/// `count` distinct problems of `tasks` (in turn) from the train or test split, drawn from
/// `seed`.
pub fn split(tasks: &[Task], test: bool, count: usize, seed: u64) -> Vec<Problem> {
    let mut state = seed ^ (tasks[0] as u64) << 32 ^ u64::from(test) << 40;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let r = next(&mut state);
        let digits: [usize; DIGITS] = std::array::from_fn(|i| (r >> (8 * i)) as usize % 10);
        let task = tasks[out.len() % tasks.len()];
        if is_test(&digits) == test && seen.insert((task as usize, digits)) {
            out.push(problem(task, digits));
        }
    }
    out
}

pub fn dataset(problems: Vec<Problem>) -> InMemDataset<Problem> {
    InMemDataset::new(problems)
}

/// Next-token inputs and targets; every target outside the answer is `PAD` (ignored by the
/// loss), so the model is trained and scored on the answer only.
#[derive(Debug, Clone)]
pub struct LmBatch {
    pub inputs: Tensor<2, Int>,
    pub targets: Tensor<2, Int>,
}

#[derive(Clone, Default)]
pub struct LmBatcher;

impl Batcher<Problem, LmBatch> for LmBatcher {
    fn batch(&self, items: Vec<Problem>, device: &Device) -> LmBatch {
        let len = SEQ_LEN - 1;
        let mut inputs = Vec::with_capacity(items.len() * len);
        let mut targets = Vec::with_capacity(items.len() * len);
        for item in &items {
            inputs.extend(item.tokens[..len].iter().map(|&t| t as i64));
            targets.extend((1..SEQ_LEN).map(|i| {
                if i >= ANSWER_START {
                    item.tokens[i] as i64
                } else {
                    PAD as i64
                }
            }));
        }
        let shape = [items.len(), len];
        LmBatch {
            inputs: Tensor::from_data(TensorData::new(inputs, shape), device),
            targets: Tensor::from_data(TensorData::new(targets, shape), device),
        }
    }
}
