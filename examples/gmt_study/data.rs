//! Procedurally generated arithmetic tasks, written as token sequences and answered by exact
//! match (as GSM8K is). No download: every split is a pure function of a seed.

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use burn::tensor::{Device, Int, Tensor, TensorData};

/// Tokens: the ten digits, then the symbols.
pub const PLUS: usize = 10;
pub const MINUS: usize = 11;
pub const EQUALS: usize = 12;
pub const BOS: usize = 13;
pub const PAD: usize = 14;
pub const VOCAB: usize = 15;
/// Every sequence is padded to this length.
pub const SEQ_LEN: usize = 12;

/// One problem: its tokens (padded) and where its answer starts.
#[derive(Debug, Clone)]
pub struct Problem {
    pub tokens: Vec<usize>,
    pub answer_start: usize,
}

/// The task family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Base ("pre-training") task: `a+b=` or `a-b=`, answer mod 100 in two digits.
    Base,
    /// Target task: the two-step `a+b-c=`, answer mod 100 in two digits.
    Target,
}

fn digits(n: usize) -> [usize; 2] {
    [n / 10, n % 10]
}

fn problem(task: Task, operands: [usize; 3], op: usize) -> Problem {
    let [a, b, c] = operands;
    let mut tokens = vec![BOS];
    tokens.extend(digits(a));
    tokens.push(op);
    tokens.extend(digits(b));
    let answer = match (task, op) {
        (Task::Base, PLUS) => (a + b) % 100,
        (Task::Base, _) => (a + 100 - b) % 100,
        (Task::Target, _) => {
            tokens.push(MINUS);
            tokens.extend(digits(c));
            (a + b + 100 - c) % 100
        }
    };
    tokens.push(EQUALS);
    let answer_start = tokens.len();
    tokens.extend(digits(answer));
    tokens.resize(SEQ_LEN, PAD);
    Problem {
        tokens,
        answer_start,
    }
}

/// SplitMix64 step: a tiny seeded generator, so splits never depend on a library's RNG.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    burn_gmt::kernels::random::mix64(*state)
}

/// Whether a problem belongs to the held-out test split: decided by a hash of its operands
/// alone, so train and test share no item whatever the sizes drawn.
fn is_test(task: Task, operands: [usize; 3], op: usize) -> bool {
    let id = (operands[0] * 100 + operands[1]) * 100
        + operands[2]
        + op * 1_000_000
        + task as usize * 10_000_000;
    burn_gmt::kernels::random::mix64(id as u64 ^ 0xC0FF_EE00) % 5 == 0
}

/// `count` distinct problems of `task` from the train or test split, drawn from `seed`.
pub fn split(task: Task, test: bool, count: usize, seed: u64) -> Vec<Problem> {
    let mut state = seed ^ (task as u64) << 32 ^ u64::from(test) << 40;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let r = next(&mut state);
        let operands = [
            (r % 100) as usize,
            (r / 100 % 100) as usize,
            (r / 10_000 % 100) as usize,
        ];
        let operands = if task == Task::Base {
            [operands[0], operands[1], 0]
        } else {
            operands
        };
        let op = if task == Task::Base && r >> 40 & 1 == 1 {
            MINUS
        } else {
            PLUS
        };
        if is_test(task, operands, op) == test && seen.insert((operands, op)) {
            out.push(problem(task, operands, op));
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
                if i >= item.answer_start && i < item.answer_start + 2 {
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
