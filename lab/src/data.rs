//! The GMT study's data: procedurally generated sequence tasks, answered by exact match (as GSM8K is): every
//! answer digit must be right. No download: every split is a pure function of a seed.
//!
//! - Pre-training skills: reverse a sequence of digits; add one to every digit, mod 10; rotate
//!   the sequence left by one; and four compositions of two of them (`ROTATE INCREMENT`: rotate,
//!   then increment). An instruction is two words applied in turn (a base skill is its word and
//!   `NONE`).
//! - Target task: reverse the sequence *and* add one to every digit (`REVERSE INCREMENT`): a
//!   composition of two known skills that pre-training never shows in either order, fine-tuned
//!   from few, noisy examples whose inputs avoid some digits (see [`Draw`]) and scored on
//!   inputs with every digit.

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::hash::stable_hash;
use crate::random::{Rng, stream};

// Tokens: the ten digits (0 to 9), then the symbols.
/// Between the problem and its answer.
pub const EQUALS: usize = 10;
/// The start of every sequence.
pub const BOS: usize = 11;
/// Padding: the target of every position outside the answer, ignored by the loss.
pub const PAD: usize = 12;
// Task markers, the words of the instructions: the model is told which task it is asked, so
// all can coexist and the base skills' accuracy after fine-tuning measures what is retained.
/// The instruction word "reverse the digits".
pub const REVERSE: usize = 13;
/// The instruction word "add one to every digit, mod 10".
pub const INCREMENT: usize = 14;
/// The instruction word "rotate the digits left by one place".
pub const ROTATE: usize = 15;
/// The empty second word of a one-word instruction.
pub const NONE: usize = 16;
/// Tokens in all.
pub const VOCAB: usize = 17;
/// Digits in a problem and in its answer.
pub const DIGITS: usize = 6;
/// `BOS`, the instruction (two words), the digits, `=`, the answer.
pub const SEQ_LEN: usize = 2 * DIGITS + 4;
/// Position of the first digit.
pub const FIRST_DIGIT: usize = 3;
/// Position of the first answer token.
pub const ANSWER_START: usize = DIGITS + 4;
/// Changes whenever what a seed draws changes: part of the pre-trained checkpoints' cache key.
pub const DATA_VERSION: u32 = 5;

/// One problem: its tokens.
#[derive(Debug, Clone)]
pub struct Problem {
    pub tokens: Vec<usize>,
}

impl Problem {
    /// The input digits.
    pub fn digits(&self) -> &[usize] {
        &self.tokens[FIRST_DIGIT..FIRST_DIGIT + DIGITS]
    }
}

/// The tasks. An instruction is two words, applied in turn: a base skill is its word and
/// `NONE`; a composition is two skills' words (`ROTATE INCREMENT`: rotate, then increment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Base: reverse the digits.
    Reverse,
    /// Base: add one to every digit, mod 10.
    Increment,
    /// Base: rotate the digits left by one place.
    Rotate,
    /// Pre-trained composition: reverse, then rotate left.
    ReverseRotate,
    /// Pre-trained composition: rotate left, then reverse.
    RotateReverse,
    /// Pre-trained composition: rotate left, then increment.
    RotateIncrement,
    /// Pre-trained composition: increment, then rotate left.
    IncrementRotate,
    /// Target: reverse the digits and add one to each, mod 10 (a composition never seen in
    /// pre-training, in either order).
    ReverseIncrement,
}

/// The pre-training skills: the three base skills and four of their compositions.
pub const BASE: &[Task] = &[
    Task::Reverse,
    Task::Increment,
    Task::Rotate,
    Task::ReverseRotate,
    Task::RotateReverse,
    Task::RotateIncrement,
    Task::IncrementRotate,
];
/// The target (fine-tuning) task.
pub const TARGET: &[Task] = &[Task::ReverseIncrement];

/// One instruction word applied to a sequence of digits.
fn apply(word: usize, digits: [usize; DIGITS]) -> [usize; DIGITS] {
    std::array::from_fn(|i| match word {
        REVERSE => digits[DIGITS - 1 - i],
        INCREMENT => (digits[i] + 1) % 10,
        ROTATE => digits[(i + 1) % DIGITS],
        NONE => digits[i],
        other => panic!("not an instruction word: {other}"),
    })
}

impl Task {
    /// The instruction's two words, applied in turn.
    fn instruction(self) -> [usize; 2] {
        match self {
            Task::Reverse => [REVERSE, NONE],
            Task::Increment => [INCREMENT, NONE],
            Task::Rotate => [ROTATE, NONE],
            Task::ReverseRotate => [REVERSE, ROTATE],
            Task::RotateReverse => [ROTATE, REVERSE],
            Task::RotateIncrement => [ROTATE, INCREMENT],
            Task::IncrementRotate => [INCREMENT, ROTATE],
            Task::ReverseIncrement => [REVERSE, INCREMENT],
        }
    }

    /// The correct answer to `digits`.
    pub fn answer(self, digits: &[usize; DIGITS]) -> [usize; DIGITS] {
        let [first, second] = self.instruction();
        apply(second, apply(first, *digits))
    }
}

fn problem(task: Task, digits: [usize; DIGITS], answer: [usize; DIGITS]) -> Problem {
    let mut tokens = vec![BOS];
    tokens.extend(task.instruction());
    tokens.extend(digits);
    tokens.push(EQUALS);
    tokens.extend(answer);
    Problem { tokens }
}

/// Which held-out part a digit sequence belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Training items (pre-training and fine-tuning).
    Train,
    /// Held out for choosing the learning rate.
    Dev,
    /// Held out for the final scores only.
    Test,
}

impl Split {
    /// Decided by a hash of the sequence alone, so the splits share no item whatever the
    /// sizes drawn: 70% train, 10% dev, 20% test.
    pub fn of(digits: &[usize; DIGITS]) -> Split {
        let id = digits.iter().fold(0u64, |acc, &d| acc * 10 + d as u64);
        match stable_hash(id ^ 0xC0FF_EE00) % 10 {
            0 | 1 => Split::Test,
            2 => Split::Dev,
            _ => Split::Train,
        }
    }
}

/// What to draw: `count` distinct problems of `tasks` (in turn) from `split`, inputs whose
/// first `restricted` digits are below `digit_limit`, a fraction `noise` of the answers
/// replaced by a wrong random answer, all from `seed`.
#[derive(Debug, Clone, Copy)]
pub struct Draw {
    /// The tasks, asked in turn.
    pub tasks: &'static [Task],
    /// Where the inputs come from.
    pub split: Split,
    /// How many distinct problems.
    pub count: usize,
    /// The first `restricted` input digits are below this.
    pub digit_limit: usize,
    /// How many leading input digits `digit_limit` restricts.
    pub restricted: usize,
    /// Fraction of wrong answers.
    pub noise: f64,
    /// The seed of the random stream.
    pub seed: u64,
}

impl Draw {
    /// Clean problems with every digit.
    pub fn clean(tasks: &'static [Task], split: Split, count: usize, seed: u64) -> Self {
        Self {
            tasks,
            split,
            count,
            digit_limit: 10,
            restricted: 0,
            noise: 0.0,
            seed,
        }
    }

    /// The problems. Exactly `round(noise · count)` of them have a wrong answer.
    pub fn problems(&self) -> Vec<Problem> {
        assert!(
            (1..=10).contains(&self.digit_limit),
            "digit_limit in 1..=10"
        );
        let split_tag = match self.split {
            Split::Train => 0u64,
            Split::Dev => 1,
            Split::Test => 2,
        };
        let mut rng = stream(self.seed ^ (self.tasks[0] as u64) << 32 ^ split_tag << 40);
        let noisy = (self.noise * self.count as f64).round() as usize;
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::with_capacity(self.count);
        while out.len() < self.count {
            let r = rng.next_u64();
            let digits: [usize; DIGITS] = std::array::from_fn(|i| {
                let limit = if i < self.restricted {
                    self.digit_limit
                } else {
                    10
                };
                (r >> (8 * i)) as usize % limit
            });
            let task = self.tasks[out.len() % self.tasks.len()];
            if Split::of(&digits) != self.split || !seen.insert((task as usize, digits)) {
                continue;
            }
            let correct = task.answer(&digits);
            // The first `noisy` items drawn get a wrong answer; the order is shuffled anyway.
            let answer = if out.len() < noisy {
                loop {
                    let r = rng.next_u64();
                    let wrong: [usize; DIGITS] =
                        std::array::from_fn(|i| (r >> (8 * i)) as usize % 10);
                    if wrong != correct {
                        break wrong;
                    }
                }
            } else {
                correct
            };
            out.push(problem(task, digits, answer));
        }
        out
    }
}

/// The problems as a burn dataset.
pub fn dataset(problems: Vec<Problem>) -> InMemDataset<Problem> {
    InMemDataset::new(problems)
}

/// Next-token inputs and targets; every target outside the answer is `PAD` (ignored by the
/// loss), so the model is trained and scored on the answer only.
#[derive(Debug, Clone)]
pub struct LmBatch {
    /// Tokens `[batch, SEQ_LEN - 1]`: each sequence less its last token.
    pub inputs: Tensor<2, Int>,
    /// The next token at each input position, `PAD` outside the answer.
    pub targets: Tensor<2, Int>,
}

/// Batches problems into [`LmBatch`]es.
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
