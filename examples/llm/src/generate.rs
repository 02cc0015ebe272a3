//! Greedy decoding with a KV cache.

use burn::tensor::Device;

use crate::LlmError;
use burn::tensor::{Int, Tensor, TensorData};

use crate::model::{KvCache, Llama, token_row};

/// What [`greedy`] produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Generated token ids, the stop token included when it was produced.
    pub ids: Vec<u32>,
    /// The `top` highest logits at the first generated position, highest first: (id, logit).
    pub first_top: Vec<(u32, f32)>,
}

/// The `k` largest entries of `logits`, highest first (ties: lower id first; NaN last).
pub fn top_k(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let value = |i: u32| {
        let x = logits[i as usize];
        if x.is_nan() { f32::NEG_INFINITY } else { x }
    };
    let cmp = |a: &u32, b: &u32| value(*b).total_cmp(&value(*a)).then(a.cmp(b));
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    let k = k.min(order.len());
    if k == 0 {
        return Vec::new();
    }
    order.select_nth_unstable_by(k - 1, cmp);
    order.truncate(k);
    order.sort_by(cmp);
    order.into_iter().map(|i| (i, logits[i as usize])).collect()
}

/// Greedy continuation of `prompt`: at most `max_new` tokens, stopping after `stop`.
pub fn greedy(
    model: &Llama,
    prompt: &[u32],
    max_new: usize,
    stop: Option<u32>,
    top: usize,
    device: &Device,
) -> Result<Generation, LlmError> {
    if prompt.is_empty() {
        return Err(LlmError::Usage("the prompt has no token".into()));
    }
    if prompt.len() + max_new > model.max_seq_len() {
        return Err(LlmError::Usage(format!(
            "{} prompt tokens + {max_new} new tokens exceed the {} positions the model is set up for",
            prompt.len(),
            model.max_seq_len()
        )));
    }
    let mut cache = KvCache::default();
    let mut input: Vec<u32> = prompt.to_vec();
    let mut out = Generation {
        ids: Vec::new(),
        first_top: Vec::new(),
    };
    while out.ids.len() < max_new {
        let len = input.len();
        let tokens = token_row(&input, device);
        let hidden = model.hidden(tokens, Some(&mut cache));
        let [_, _, d] = hidden.dims();
        let last = hidden.slice([0..1, len - 1..len]).reshape([1, d]);
        let logits: Vec<f32> = model
            .logits(last)
            .into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| LlmError::Format(format!("reading logits: {e:?}")))?;
        if out.ids.is_empty() {
            out.first_top = top_k(&logits, top);
        }
        let next = top_k(&logits, 1)[0].0;
        out.ids.push(next);
        if Some(next) == stop {
            break;
        }
        input = vec![next];
    }
    Ok(out)
}

/// Greedy continuations of several prompts at once (at most `max_new` tokens each, each
/// stopping after `stop`): the prompts are left-padded to one length and decoded as a batch,
/// each row masked from its padding. Each answer is the one [`greedy`] gives, up to rounding
/// (a batched matrix product sums in another order, so a near-tie can break the other way).
pub fn greedy_batch(
    model: &Llama,
    prompts: &[Vec<u32>],
    max_new: usize,
    stop: Option<u32>,
    device: &Device,
) -> Result<Vec<Vec<u32>>, LlmError> {
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if prompts.iter().any(Vec::is_empty) {
        return Err(LlmError::Usage("a prompt has no token".into()));
    }
    if longest + max_new > model.max_seq_len() {
        return Err(LlmError::Usage(format!(
            "{longest} prompt tokens + {max_new} new tokens exceed the {} positions the model is set up for",
            model.max_seq_len()
        )));
    }
    let rows = prompts.len();
    let pad: Vec<usize> = prompts.iter().map(|p| longest - p.len()).collect();
    let mut input: Vec<i64> = prompts
        .iter()
        .flat_map(|p| {
            std::iter::repeat_n(0, longest - p.len()).chain(p.iter().map(|&t| i64::from(t)))
        })
        .collect();
    let mut width = longest;
    let mut cache = KvCache::default();
    let mut answers = vec![Vec::new(); rows];
    let mut done = vec![false; rows];
    for _ in 0..max_new {
        if done.iter().all(|&d| d) {
            break;
        }
        let tokens: Tensor<2, Int> =
            Tensor::from_data(TensorData::new(input, [rows, width]), device);
        let hidden = model.hidden_padded(tokens, Some(&mut cache), &pad);
        let [_, _, d] = hidden.dims();
        let last = hidden.slice([0..rows, width - 1..width]).reshape([rows, d]);
        let next: Vec<i64> = model
            .logits(last)
            .argmax(1)
            .reshape([rows])
            .into_data()
            .try_into_vec_as::<i64>()
            .map_err(|e| LlmError::Format(format!("reading the argmax: {e:?}")))?;
        for (r, &t) in next.iter().enumerate() {
            if !done[r] {
                answers[r].push(t as u32);
                done[r] = Some(t as u32) == stop;
            }
        }
        input = next;
        width = 1;
    }
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_decodes_as_each_prompt_alone() {
        use crate::model::LlamaConfig;
        use crate::testing::{self, tiny_model_file};
        let device = testing::device();
        let (gguf, _, _) = tiny_model_file(8);
        let config = LlamaConfig::from_gguf(&gguf, 64).unwrap();
        let model = Llama::from_gguf(&gguf, &config, &device).unwrap();
        let prompts = vec![vec![1, 40, 7, 200, 3], vec![5], vec![9, 99, 260]];
        // A stop token the tiny model produces for some row, to test stopping.
        let alone: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| greedy(&model, p, 6, None, 0, &device).unwrap().ids)
            .collect();
        let stop = alone[1][2];
        let batch = greedy_batch(&model, &prompts, 6, Some(stop), &device).unwrap();
        for (got, full) in batch.iter().zip(&alone) {
            let end = full
                .iter()
                .position(|&t| t == stop)
                .map_or(full.len(), |i| i + 1);
            assert_eq!(got, &full[..end]);
        }
        // Row 1 stopped at the first `stop` it generated, at the latest its third token.
        assert!(
            batch[1].len() <= 3 && batch[1].last() == Some(&stop),
            "{batch:?}"
        );
    }

    #[test]
    fn top_k_orders_by_logit_then_id() {
        let logits = [0.5, -1.0, 3.0, 0.5, f32::NAN, -0.0, 2.0];
        assert_eq!(top_k(&logits, 3), [(2, 3.0), (6, 2.0), (0, 0.5)]);
        assert_eq!(top_k(&logits, 4)[3], (3, 0.5));
        assert_eq!(top_k(&logits, 0), []);
        assert_eq!(top_k(&[-2.0, -1.0], 5), [(1, -1.0), (0, -2.0)]);
    }

    /// The whole model on the real weights answers with Paris.
    #[test]
    #[ignore = "needs models/SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch-smollm2.sh)"]
    fn smollm2_knows_the_capital_of_france() {
        use crate::gguf::Gguf;
        use crate::model::LlamaConfig;
        use crate::tokenizer::Tokenizer;
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf");
        let gguf = Gguf::open(&path).unwrap();
        let tokenizer = Tokenizer::from_gguf(&gguf).unwrap();
        let device = crate::testing::device();
        let config = LlamaConfig::from_gguf(&gguf, 128).unwrap();
        let model = Llama::from_gguf(&gguf, &config, &device).unwrap();
        let prompt = tokenizer
            .chat_prompt("What is the capital of France?")
            .unwrap();
        let out = greedy(&model, &prompt, 16, Some(tokenizer.im_end), 5, &device).unwrap();
        let text = tokenizer.decode(&out.ids);
        assert!(text.contains("Paris"), "{text}");
        assert_eq!(out.ids.last(), Some(&tokenizer.im_end));
        assert_eq!(out.first_top.len(), 5);
        assert_eq!(out.first_top[0].0, out.ids[0]);
        // The model's own tokens, decoded and encoded again, are the same ids: the tokenizer
        // splits text as the model was trained to see it (words, code, digits one by one).
        let prompts = [
            "What is the capital of France?",
            "Write a Python function that returns the square of a number.",
            "What is 347 - 58?",
            "Give me three tips for better sleep.",
        ]
        .map(|p| tokenizer.chat_prompt(p).unwrap());
        for answer in greedy_batch(&model, &prompts, 40, Some(tokenizer.im_end), &device).unwrap() {
            let body =
                &answer[..answer.len() - usize::from(answer.last() == Some(&tokenizer.im_end))];
            let text = tokenizer.decode(body);
            assert_eq!(tokenizer.encode(&text).unwrap(), body, "{text}");
        }
    }
}
