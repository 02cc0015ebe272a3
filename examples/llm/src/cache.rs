//! The frozen prefix's residual stream, computed once per example and kept in memory, and
//! what reads it: batches for training the top blocks ([`CachedBatcher`]) and the scores of a
//! trained top ([`score`]).
//!
//! The frozen blocks run under no autodiff, in batches, over each example's prompt and answer
//! (all but the last token: the inputs of teacher forcing). Every sequence starts at position
//! 0, so the rotary positions of the cache are the ones the top blocks see; right padding is
//! safe because causal attention never lets a real position see the padding on its right.

use burn::data::dataloader::batcher::Batcher;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::LlmError;
use crate::model::{KvCache, Llama, Top, token_row};
use crate::task::Example;

/// One example's residual stream after the frozen blocks, with what the loss needs.
#[derive(Debug, Clone)]
pub struct Cached {
    /// `[len, d_model]` row-major, `len = prompt + answer - 1` positions.
    residual: Vec<f32>,
    len: usize,
    prompt_len: usize,
    answer: Vec<u32>,
}

impl Cached {
    /// Positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is cached (never for an example with an answer).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Runs the first `frozen_blocks` blocks of `model` (on a device without autodiff) over
/// `examples`, `batch` at a time, and keeps each example's residual stream on the host.
pub fn cache_examples(
    model: &Llama,
    examples: &[Example],
    frozen_blocks: usize,
    batch: usize,
    device: &Device,
) -> Result<Vec<Cached>, LlmError> {
    if let Some(i) = examples
        .iter()
        .position(|e| e.prompt.is_empty() || e.answer.is_empty())
    {
        return Err(LlmError::Usage(format!(
            "example {i} has an empty prompt or answer"
        )));
    }
    let inputs: Vec<Vec<u32>> = examples
        .iter()
        .map(|e| {
            let mut seq = e.prompt.clone();
            seq.extend(&e.answer[..e.answer.len() - 1]);
            seq
        })
        .collect();
    // The prefix every example shares (the system turn, the question's start) runs once;
    // each example's own part continues it. At least one own position per example.
    let shortest = inputs.iter().map(Vec::len).min().unwrap_or(0);
    let shared = inputs.first().map_or(0, |first| {
        (0..shortest.saturating_sub(1))
            .take_while(|&i| inputs.iter().all(|s| s[i] == first[i]))
            .count()
    });
    let mut prefix_cache = KvCache::default();
    let prefix: Vec<f32> = if shared > 0 {
        let residual = model.residual(
            token_row(&inputs[0][..shared], device),
            frozen_blocks,
            Some(&mut prefix_cache),
        );
        read_f32(residual)?
    } else {
        Vec::new()
    };
    let mut out = Vec::with_capacity(examples.len());
    for (chunk, seqs) in examples
        .chunks(batch.max(1))
        .zip(inputs.chunks(batch.max(1)))
    {
        let width = seqs.iter().map(|s| s.len() - shared).max().unwrap_or(1);
        let tokens: Vec<i64> = seqs
            .iter()
            .flat_map(|s| {
                let own = s[shared..].iter().map(|&t| i64::from(t));
                own.chain(std::iter::repeat_n(0, width + shared - s.len()))
            })
            .collect();
        let tokens = Tensor::from_data(TensorData::new(tokens, [seqs.len(), width]), device);
        let mut cache = (shared > 0).then(|| prefix_cache.repeat(seqs.len()));
        let own = read_f32(model.residual(tokens, frozen_blocks, cache.as_mut()))?;
        let d = own.len() / (seqs.len() * width);
        for (row, (e, seq)) in chunk.iter().zip(seqs).enumerate() {
            let mut residual = Vec::with_capacity(seq.len() * d);
            residual.extend_from_slice(&prefix);
            residual.extend_from_slice(&own[row * width * d..][..(seq.len() - shared) * d]);
            out.push(Cached {
                residual,
                len: seq.len(),
                prompt_len: e.prompt.len(),
                answer: e.answer.clone(),
            });
        }
    }
    Ok(out)
}

/// A tensor's values on the host.
fn read_f32<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, LlmError> {
    t.into_data()
        .try_into_vec_as::<f32>()
        .map_err(|e| LlmError::Format(format!("reading the residual stream: {e:?}")))
}

/// Cached examples as tensors: the residual streams, right-padded with zeros, and where the
/// answer tokens are predicted.
#[derive(Debug, Clone)]
pub struct CachedBatch {
    /// `[batch, len, d_model]`.
    pub residual: Tensor<3>,
    /// Leading positions whose residual stream is the same in every row (the shared prompt
    /// prefix): [`Top::hidden`] runs them once.
    pub shared: usize,
    /// Flat indices into `[batch * (len - shared)]` of the positions that predict an answer
    /// token.
    pub positions: Tensor<1, Int>,
    /// The answer token predicted at each of `positions`.
    pub targets: Tensor<1, Int>,
    /// Answer length of each example, in order (to score whole answers).
    pub answer_lens: Vec<usize>,
}

/// Builds [`CachedBatch`]es.
#[derive(Debug, Clone, Default)]
pub struct CachedBatcher;

impl Batcher<Cached, CachedBatch> for CachedBatcher {
    fn batch(&self, items: Vec<Cached>, device: &Device) -> CachedBatch {
        let len = items.iter().map(|c| c.len).max().unwrap_or(1);
        let d = items.first().map_or(1, |c| c.residual.len() / c.len.max(1));
        // Shared: the same values in every row, and before every answer's first prediction.
        let before_answers = items.iter().map(|c| c.prompt_len - 1).min().unwrap_or(0);
        let shared = (0..before_answers)
            .take_while(|&i| {
                let row = &items[0].residual[i * d..(i + 1) * d];
                items.iter().all(|c| &c.residual[i * d..(i + 1) * d] == row)
            })
            .count();
        let own = len - shared;
        let mut residual = vec![0.0f32; items.len() * len * d];
        let mut positions = Vec::new();
        let mut targets = Vec::new();
        for (row, c) in items.iter().enumerate() {
            residual[row * len * d..][..c.residual.len()].copy_from_slice(&c.residual);
            for (j, &t) in c.answer.iter().enumerate() {
                positions.push((row * own + c.prompt_len - 1 + j - shared) as i64);
                targets.push(i64::from(t));
            }
        }
        let n = positions.len();
        CachedBatch {
            residual: Tensor::from_data(TensorData::new(residual, [items.len(), len, d]), device),
            shared,
            positions: Tensor::from_data(TensorData::new(positions, [n]), device),
            targets: Tensor::from_data(TensorData::new(targets, [n]), device),
            answer_lens: items.iter().map(|c| c.answer.len()).collect(),
        }
    }
}

/// Logits `[answer tokens, vocab]` at the positions that predict the answers: the output head
/// runs on those rows only, which is most of the saving on a 49k-token vocabulary.
pub fn answer_logits(top: &Top, batch: &CachedBatch) -> Tensor<2> {
    let hidden = top.hidden(batch.residual.clone(), batch.shared);
    let [b, t, d] = hidden.dims();
    top.logits(
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

/// Per-item scores of a model on examples, in the examples' order.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemScores {
    /// Each answer's summed NLL (nats).
    pub nll_sum: Vec<f64>,
    /// Each answer's tokens.
    pub tokens: Vec<usize>,
    /// Whether the greedy answer is the right one (see [`score`]).
    pub exact: Vec<bool>,
}

impl ItemScores {
    /// NLL per answer token over all items.
    pub fn nll(&self) -> f64 {
        self.nll_sum.iter().sum::<f64>() / self.tokens.iter().sum::<usize>().max(1) as f64
    }

    /// Each item's NLL per token.
    pub fn item_nll(&self) -> Vec<f64> {
        self.nll_sum
            .iter()
            .zip(&self.tokens)
            .map(|(s, &n)| s / n.max(1) as f64)
            .collect()
    }

    /// Fraction of items answered exactly.
    pub fn exact_match(&self) -> f64 {
        self.exact.iter().filter(|&&e| e).count() as f64 / self.exact.len().max(1) as f64
    }
}

/// Scores `top` on cached examples, `batch` at a time, in one teacher-forced pass. An answer is
/// exact when greedy decoding gives it: the argmax at every answer position, fed the true
/// prefix, is the answer token, except at the last position (the stop token), where any token
/// but one of `free_end_except` also ends the answer rightly. For the task, that is "anything
/// but a digit": the greedy number is the result, whether the model stops or adds a period.
pub fn score(
    top: &Top,
    cached: &[Cached],
    batch: usize,
    free_end_except: Option<&[u32]>,
    device: &Device,
) -> Result<ItemScores, LlmError> {
    let mut scores = ItemScores {
        nll_sum: Vec::with_capacity(cached.len()),
        tokens: Vec::with_capacity(cached.len()),
        exact: Vec::with_capacity(cached.len()),
    };
    let read = |t: Tensor<1, Int>| -> Result<Vec<i64>, LlmError> {
        t.into_data()
            .try_into_vec_as::<i64>()
            .map_err(|e| LlmError::Format(format!("reading predictions: {e:?}")))
    };
    for chunk in cached.chunks(batch.max(1)) {
        let batch = CachedBatcher.batch(chunk.to_vec(), device);
        let logits = answer_logits(top, &batch);
        let n = batch.answer_lens.iter().sum::<usize>();
        // Per-token NLL: the log-softmax at the target.
        let nll = -burn::tensor::activation::log_softmax(logits.clone(), 1)
            .gather(1, batch.targets.clone().reshape([n, 1]))
            .reshape([n]);
        let nll: Vec<f32> = nll
            .into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| LlmError::Format(format!("reading the NLL: {e:?}")))?;
        let predicted = read(logits.argmax(1).reshape([n]))?;
        let targets = read(batch.targets)?;
        let mut at = 0;
        for &len in &batch.answer_lens {
            let span = at..at + len;
            scores
                .nll_sum
                .push(nll[span.clone()].iter().map(|&x| f64::from(x)).sum());
            scores.tokens.push(len);
            let body = predicted[at..at + len - 1] == targets[at..at + len - 1];
            let (last_p, last_t) = (predicted[at + len - 1], targets[at + len - 1]);
            let end = last_p == last_t
                || free_end_except
                    .is_some_and(|except| !except.iter().any(|&d| i64::from(d) == last_p));
            scores.exact.push(body && end);
            at += len;
        }
    }
    Ok(scores)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LlamaConfig;
    use crate::testing::{self, tiny_model_file};

    fn examples() -> Vec<Example> {
        vec![
            Example {
                prompt: vec![1, 40, 7, 200],
                answer: vec![3, 99, 2],
            },
            Example {
                prompt: vec![5, 6],
                answer: vec![8],
            },
            Example {
                prompt: vec![1, 9, 9, 9, 9, 40],
                answer: vec![260, 2],
            },
        ]
    }

    /// The top on the cache gives the whole model's logits, at every split of the blocks,
    /// whatever the padding of the batch.
    #[test]
    fn top_on_the_cache_is_the_whole_model() {
        let device = testing::device();
        let (gguf, _, _) = tiny_model_file(11);
        let config = LlamaConfig::from_gguf(&gguf, 64).unwrap();
        let model = Llama::from_gguf(&gguf, &config, &device).unwrap();
        let mut shared = examples();
        for e in shared.iter_mut() {
            e.prompt.splice(0..0, [1, 40, 7, 40]);
        }
        for (examples, trainable) in [(examples(), 1), (examples(), 2), (shared, 1)] {
            let top = model.top(trainable).unwrap();
            let cached =
                cache_examples(&model, &examples, config.layers - trainable, 2, &device).unwrap();
            let batch = CachedBatcher.batch(cached, &device);
            let got: Vec<f32> = answer_logits(&top, &batch)
                .into_data()
                .try_into_vec_as()
                .unwrap();
            let vocab = config.vocab;
            let mut row = 0;
            for e in &examples {
                let inputs: Vec<u32> = e
                    .prompt
                    .iter()
                    .chain(&e.answer)
                    .take(e.prompt.len() + e.answer.len() - 1)
                    .copied()
                    .collect();
                let full: Vec<f32> = model
                    .forward(token_row(&inputs, &device))
                    .into_data()
                    .try_into_vec_as()
                    .unwrap();
                for j in 0..e.answer.len() {
                    let pos = e.prompt.len() - 1 + j;
                    for v in 0..vocab {
                        let (g, f) = (got[row * vocab + v], full[pos * vocab + v]);
                        assert!((g - f).abs() < 1e-4, "{trainable} trainable: {g} vs {f}");
                    }
                    row += 1;
                }
            }
        }
    }

    #[test]
    fn scores_follow_the_argmax_and_the_log_softmax() {
        let device = testing::device();
        let (gguf, _, _) = tiny_model_file(12);
        let config = LlamaConfig::from_gguf(&gguf, 64).unwrap();
        let model = Llama::from_gguf(&gguf, &config, &device).unwrap();
        let top = model.top(1).unwrap();
        let examples = examples();
        // The model's own argmax answers are exact; a changed token is not. Each pass fixes
        // one more answer token, the argmax being taken after the true prefix.
        let argmax_of = |examples: &[Example]| -> (Vec<i64>, Vec<f32>) {
            let cached = cache_examples(&model, examples, 1, 3, &device).unwrap();
            let logits = answer_logits(&top, &CachedBatcher.batch(cached, &device));
            let greedy = logits
                .clone()
                .argmax(1)
                .into_data()
                .try_into_vec_as()
                .unwrap();
            (greedy, logits.into_data().try_into_vec_as().unwrap())
        };
        let vocab = config.vocab;
        let mut own = examples.clone();
        for _ in 0..3 {
            let (greedy, _) = argmax_of(&own);
            let mut at = 0;
            for e in own.iter_mut() {
                for t in e.answer.iter_mut() {
                    *t = greedy[at] as u32;
                    at += 1;
                }
            }
        }
        let (greedy, host) = argmax_of(&own);
        let own_cached = cache_examples(&model, &own, 1, 3, &device).unwrap();
        let scores = score(&top, &own_cached, 2, None, &device).unwrap();
        assert_eq!(scores.exact, [true, true, true]);
        // NLL against a host log-softmax of the same logits.
        let mut expected = Vec::new();
        let mut at = 0;
        for e in &own {
            let mut sum = 0.0f64;
            for &t in &e.answer {
                let row = &host[at * vocab..(at + 1) * vocab];
                let max = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
                let lse = max
                    + row
                        .iter()
                        .map(|&x| (x as f64 - max).exp())
                        .sum::<f64>()
                        .ln();
                sum += lse - row[t as usize] as f64;
                at += 1;
            }
            expected.push(sum);
        }
        for (g, e) in scores.nll_sum.iter().zip(&expected) {
            assert!((g - e).abs() < 1e-3, "{g} vs {e}");
        }
        assert_eq!(scores.tokens, [3, 1, 2]);
        // A wrong last token: exact only when the end is free and the prediction is not in
        // the excluded set.
        let mut wrong_end = own.clone();
        let last = wrong_end[0].answer.len() - 1;
        wrong_end[0].answer[last] = (greedy[last] as u32 + 1) % vocab as u32;
        let wrong_cached = cache_examples(&model, &wrong_end, 1, 3, &device).unwrap();
        let strict = score(&top, &wrong_cached, 3, None, &device).unwrap();
        assert!(!strict.exact[0] && strict.exact[1]);
        let free = score(&top, &wrong_cached, 3, Some(&[]), &device).unwrap();
        assert!(free.exact[0]);
        let excluded = [greedy[last] as u32];
        let not_free = score(&top, &wrong_cached, 3, Some(&excluded), &device).unwrap();
        assert!(!not_free.exact[0]);
        assert!((scores.exact_match() - 1.0).abs() < 1e-12);
        assert!((strict.exact_match() - 2.0 / 3.0).abs() < 1e-12);
    }
}
