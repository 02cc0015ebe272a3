//! A Llama-architecture decoder (SmolLM2) from `burn::nn` parts: RMSNorm, rotary encoding,
//! grouped-query attention, a SwiGLU feed-forward and tied input/output embeddings, loaded from
//! a GGUF file's dequantised weights.
//!
//! GGUF (llama.cpp) stores Q and K with the rotary pairs adjacent, the layout
//! [`RotaryEncoding`] rotates, so the weights go in unpermuted. A GGUF matrix is `out × in`
//! row-major; Burn's [`Linear`] holds `in × out`, hence one transpose on the host at load time.

use burn::module::{Module, Param};
use burn::nn::{Embedding, Linear, RmsNorm, RmsNormConfig, RotaryEncoding, RotaryEncodingConfig};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::LlmError;
use crate::gguf::Gguf;

/// Sizes of a Llama model.
#[derive(burn::config::Config, Debug, PartialEq)]
pub struct LlamaConfig {
    /// Vocabulary size.
    pub vocab: usize,
    /// Model width.
    pub d_model: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention: `heads` is a multiple of it).
    pub kv_heads: usize,
    /// Hidden width of the feed-forward.
    pub d_ff: usize,
    /// Rotary base frequency.
    pub rope_theta: f32,
    /// RMSNorm epsilon.
    pub eps: f64,
    /// Longest sequence (prompt and generated tokens) the rotary table covers.
    pub max_seq_len: usize,
}

impl LlamaConfig {
    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.d_model / self.heads
    }

    /// The sizes in a GGUF file's `llama.*` metadata; `max_seq_len` is capped at `max_seq_len`.
    pub fn from_gguf(gguf: &Gguf, max_seq_len: usize) -> Result<Self, LlmError> {
        let arch = gguf.string("general.architecture")?;
        if arch != "llama" {
            return Err(LlmError::Format(format!(
                "architecture `{arch}` is not supported (only llama)"
            )));
        }
        let config = Self {
            vocab: gguf.strings("tokenizer.ggml.tokens")?.len(),
            d_model: gguf.uint("llama.embedding_length")?,
            layers: gguf.uint("llama.block_count")?,
            heads: gguf.uint("llama.attention.head_count")?,
            kv_heads: gguf.uint("llama.attention.head_count_kv")?,
            d_ff: gguf.uint("llama.feed_forward_length")?,
            rope_theta: gguf.float("llama.rope.freq_base")? as f32,
            eps: gguf.float("llama.attention.layer_norm_rms_epsilon")?,
            max_seq_len: max_seq_len.min(gguf.uint("llama.context_length")?),
        };
        if config.heads == 0
            || config.kv_heads == 0
            || !config.d_model.is_multiple_of(config.heads)
            || !config.heads.is_multiple_of(config.kv_heads)
            || !config.head_dim().is_multiple_of(2)
        {
            return Err(LlmError::Format(format!(
                "inconsistent attention sizes: d_model {}, {} heads, {} KV heads",
                config.d_model, config.heads, config.kv_heads
            )));
        }
        Ok(config)
    }
}

/// Grouped-query self-attention: the query, key, value and output projections (one HFT
/// category, as in the paper).
#[derive(Module, Debug)]
pub struct Attention {
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    heads: usize,
    kv_heads: usize,
}

/// SwiGLU feed-forward `down(silu(gate x) * up x)` (the other HFT category of a block).
#[derive(Module, Debug)]
pub struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// One transformer block: pre-norm attention and pre-norm SwiGLU feed-forward.
#[derive(Module, Debug)]
pub struct Block {
    attn_norm: RmsNorm,
    attn: Attention,
    ffn_norm: RmsNorm,
    mlp: Mlp,
}

/// Keys and values of the positions seen so far, per block: `[batch, kv_heads, len, head_dim]`.
#[derive(Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
}

impl KvCache {
    /// Positions cached so far.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(0, |(k, _)| k.dims()[2])
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cache of one sequence repeated for `batch` sequences that continue it alike.
    pub fn repeat(&self, batch: usize) -> Self {
        let widen = |t: &Tensor<4>| t.clone().repeat_dim(0, batch);
        Self {
            layers: self
                .layers
                .iter()
                .map(|l| l.as_ref().map(|(k, v)| (widen(k), widen(v))))
                .collect(),
        }
    }
}

/// One sequence of token ids as a `[1, len]` input.
pub fn token_row(ids: &[u32], device: &Device) -> Tensor<2, Int> {
    let values = ids.iter().map(|&t| i64::from(t)).collect();
    Tensor::from_data(TensorData::new(values, [1, ids.len()]), device)
}

/// Additive causal mask `[1, 1, new, start + new]`: query `i` (at position `start + i`) sees
/// keys up to its own position.
fn causal_mask(start: usize, new: usize, device: &Device) -> Tensor<4> {
    attention_mask(start, new, &[0], device)
}

/// Additive attention mask `[rows, 1, new, start + new]` of left-padded rows: query `i` of
/// row `r` sees keys up to its own position and from `pad[r]` on (its own tokens). Rotary
/// attention depends only on the distance between positions, so a left-padded row attends
/// as the same row unpadded.
fn attention_mask(start: usize, new: usize, pad: &[usize], device: &Device) -> Tensor<4> {
    let total = start + new;
    let values: Vec<f32> = pad
        .iter()
        .flat_map(|&p| {
            (0..new).flat_map(move |i| {
                (0..total).map(move |j| if j <= start + i && j >= p { 0.0 } else { -1e9 })
            })
        })
        .collect();
    Tensor::from_data(TensorData::new(values, [pad.len(), 1, new, total]), device)
}

impl Attention {
    fn forward(
        &self,
        h: Tensor<3>,
        rope: &RotaryEncoding,
        mask: &Tensor<4>,
        cache: Option<&mut Option<(Tensor<4>, Tensor<4>)>>,
    ) -> Tensor<3> {
        let [batch, new, d_model] = h.dims();
        let head_dim = d_model / self.heads;
        let start = cache
            .as_ref()
            .and_then(|c| c.as_ref())
            .map_or(0, |(k, _)| k.dims()[2]);
        let split =
            |t: Tensor<3>, heads: usize| t.reshape([batch, new, heads, head_dim]).swap_dims(1, 2);
        let q = rope.apply(split(self.wq.forward(h.clone()), self.heads), start);
        let mut k = rope.apply(split(self.wk.forward(h.clone()), self.kv_heads), start);
        let mut v = split(self.wv.forward(h), self.kv_heads);
        if let Some(slot) = cache {
            if let Some((k0, v0)) = slot.take() {
                k = Tensor::cat(vec![k0, k], 2);
                v = Tensor::cat(vec![v0, v], 2);
            }
            *slot = Some((k.clone(), v.clone()));
        }
        let total = k.dims()[2];
        // Grouped-query attention: each KV head serves `heads / kv_heads` query heads in a row.
        let group = self.heads / self.kv_heads;
        let widen = |t: Tensor<4>| {
            t.unsqueeze_dim::<5>(2)
                .repeat_dim(2, group)
                .reshape([batch, self.heads, total, head_dim])
        };
        let scores = q.matmul(widen(k).swap_dims(2, 3)) / (head_dim as f64).sqrt() + mask.clone();
        let attn = softmax(scores, 3)
            .matmul(widen(v))
            .swap_dims(1, 2)
            .reshape([batch, new, d_model]);
        self.wo.forward(attn)
    }
}

impl Mlp {
    fn forward(&self, h: Tensor<3>) -> Tensor<3> {
        self.down
            .forward(silu(self.gate.forward(h.clone())) * self.up.forward(h))
    }
}

impl Block {
    fn forward(
        &self,
        x: Tensor<3>,
        rope: &RotaryEncoding,
        mask: &Tensor<4>,
        cache: Option<&mut Option<(Tensor<4>, Tensor<4>)>>,
    ) -> Tensor<3> {
        let x = x.clone()
            + self
                .attn
                .forward(self.attn_norm.forward(x), rope, mask, cache);
        x.clone() + self.mlp.forward(self.ffn_norm.forward(x))
    }
}

/// A Llama decoder with tied embeddings.
#[derive(Module, Debug)]
pub struct Llama {
    embed: Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    rope: RotaryEncoding,
}

/// The trainable top of a [`Llama`] ([`Llama::top`]): its last blocks, its final norm and its
/// tied embedding as a frozen output head. It reads the residual stream of the frozen blocks
/// below, so the frozen prefix runs once per example rather than once per step.
#[derive(Module, Debug)]
pub struct Top {
    blocks: Vec<Block>,
    norm: RmsNorm,
    /// The tied embedding `[vocab, d_model]`, frozen.
    head: Param<Tensor<2>>,
    rope: RotaryEncoding,
}

impl Top {
    /// Number of blocks.
    pub fn layers(&self) -> usize {
        self.blocks.len()
    }

    /// Final-norm hidden states `[batch, len - shared, d_model]` from the residual stream
    /// `residual` `[batch, len, d_model]` of the frozen prefix (every sequence starting at
    /// position 0), at the positions from `shared` on. The first `shared` positions are the
    /// same in every row: they run once, as one row, and the rows continue from their keys
    /// and values (their own hidden states are not needed: no answer is predicted there).
    pub fn hidden(&self, residual: Tensor<3>, shared: usize) -> Tensor<3> {
        let [batch, len, d] = residual.dims();
        let mut cache = KvCache {
            layers: vec![None; self.blocks.len()],
        };
        if shared > 0 {
            let mask = causal_mask(0, shared, &residual.device());
            let prefix = residual.clone().slice([0..1, 0..shared, 0..d]);
            self.blocks
                .iter()
                .zip(&mut cache.layers)
                .fold(prefix, |x, (block, slot)| {
                    block.forward(x, &self.rope, &mask, Some(slot))
                });
            cache = cache.repeat(batch);
        }
        let mask = causal_mask(shared, len - shared, &residual.device());
        let own = residual.slice([0..batch, shared..len, 0..d]);
        let x = self
            .blocks
            .iter()
            .zip(&mut cache.layers)
            .fold(own, |x, (block, slot)| {
                block.forward(x, &self.rope, &mask, Some(slot))
            });
        self.norm.forward(x)
    }

    /// Next-token logits of hidden states `[n, d_model]`.
    pub fn logits(&self, hidden: Tensor<2>) -> Tensor<2> {
        hidden.matmul(self.head.val().transpose())
    }

    /// Visits the trained parameters: the blocks, then the final norm (not the frozen head).
    pub fn visit_trained<V: burn::module::ModuleVisitor>(&self, visitor: &mut V) {
        self.blocks.visit(visitor);
        self.norm.visit(visitor);
    }
}

/// A [`Linear`] from a GGUF `out × in` matrix.
fn linear(w: Vec<f32>, d_in: usize, d_out: usize, device: &Device) -> Linear {
    let mut t = vec![0.0f32; w.len()];
    for o in 0..d_out {
        for i in 0..d_in {
            t[i * d_out + o] = w[o * d_in + i];
        }
    }
    Linear {
        weight: Param::from_tensor(Tensor::from_data(TensorData::new(t, [d_in, d_out]), device)),
        bias: None,
    }
}

fn rms_norm(gamma: Vec<f32>, eps: f64, device: &Device) -> RmsNorm {
    let d = gamma.len();
    let mut norm = RmsNormConfig::new(d).with_epsilon(eps).init(device);
    norm.gamma = Param::from_tensor(Tensor::from_data(TensorData::new(gamma, [d]), device));
    norm
}

impl Llama {
    /// Loads the model in `gguf` as `f32` weights on `device`.
    pub fn from_gguf(gguf: &Gguf, config: &LlamaConfig, device: &Device) -> Result<Self, LlmError> {
        if gguf.has_tensor("output.weight") {
            return Err(LlmError::Format(
                "the model has an untied output head (`output.weight`); only tied embeddings are supported".into(),
            ));
        }
        let (d, ff, hd) = (config.d_model, config.d_ff, config.head_dim());
        let kv = config.kv_heads * hd;
        let embed_weights = gguf.tensor("token_embd.weight", &[d, config.vocab])?;
        let embed = Embedding {
            weight: Param::from_tensor(Tensor::from_data(
                TensorData::new(embed_weights, [config.vocab, d]),
                device,
            )),
        };
        let mut blocks = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let name = |part: &str| format!("blk.{i}.{part}.weight");
            let matrix = |part: &str, d_in: usize, d_out: usize| -> Result<Linear, LlmError> {
                Ok(linear(
                    gguf.tensor(&name(part), &[d_in, d_out])?,
                    d_in,
                    d_out,
                    device,
                ))
            };
            blocks.push(Block {
                attn_norm: rms_norm(gguf.tensor(&name("attn_norm"), &[d])?, config.eps, device),
                attn: Attention {
                    wq: matrix("attn_q", d, d)?,
                    wk: matrix("attn_k", d, kv)?,
                    wv: matrix("attn_v", d, kv)?,
                    wo: matrix("attn_output", d, d)?,
                    heads: config.heads,
                    kv_heads: config.kv_heads,
                },
                ffn_norm: rms_norm(gguf.tensor(&name("ffn_norm"), &[d])?, config.eps, device),
                mlp: Mlp {
                    gate: matrix("ffn_gate", d, ff)?,
                    up: matrix("ffn_up", d, ff)?,
                    down: matrix("ffn_down", ff, d)?,
                },
            });
        }
        Ok(Self {
            embed,
            blocks,
            norm: rms_norm(gguf.tensor("output_norm.weight", &[d])?, config.eps, device),
            rope: RotaryEncodingConfig::new(config.max_seq_len, hd)
                .with_theta(config.rope_theta)
                .init(device),
        })
    }

    /// Number of blocks.
    pub fn layers(&self) -> usize {
        self.blocks.len()
    }

    /// Longest sequence the rotary table covers.
    pub fn max_seq_len(&self) -> usize {
        self.rope.freq_complex.dims()[0]
    }

    /// Final-norm hidden states `[batch, len, d_model]` of `tokens`, continuing the sequence in
    /// `cache` when given (and extending it).
    pub fn hidden(&self, tokens: Tensor<2, Int>, cache: Option<&mut KvCache>) -> Tensor<3> {
        let [batch, _] = tokens.dims();
        self.hidden_padded(tokens, cache, &vec![0; batch])
    }

    /// [`Llama::hidden`] of left-padded rows: row `r`'s first `pad[r]` positions (of the whole
    /// sequence, cache included) are padding that no position attends to.
    pub fn hidden_padded(
        &self,
        tokens: Tensor<2, Int>,
        cache: Option<&mut KvCache>,
        pad: &[usize],
    ) -> Tensor<3> {
        self.norm
            .forward(self.run_blocks(tokens, self.blocks.len(), cache, pad))
    }

    /// The embedding and the first `blocks` blocks over `tokens`, continuing `cache`.
    fn run_blocks(
        &self,
        tokens: Tensor<2, Int>,
        blocks: usize,
        mut cache: Option<&mut KvCache>,
        pad: &[usize],
    ) -> Tensor<3> {
        let [_, new] = tokens.dims();
        let start = cache.as_ref().map_or(0, |c| c.len());
        let mask = attention_mask(start, new, pad, &tokens.device());
        let mut x = self.embed.forward(tokens);
        if let Some(cache) = cache.as_mut() {
            cache.layers.resize_with(self.blocks.len(), || None);
        }
        for (i, block) in self.blocks[..blocks].iter().enumerate() {
            let slot = cache.as_mut().map(|c| &mut c.layers[i]);
            x = block.forward(x, &self.rope, &mask, slot);
        }
        x
    }

    /// The residual stream `[batch, len, d_model]` of `tokens` after the embedding and the
    /// first `blocks` blocks: the input of block `blocks`, what [`Top::hidden`] continues from.
    /// With `cache`, the tokens continue the cached sequence (and extend the cache).
    pub fn residual(
        &self,
        tokens: Tensor<2, Int>,
        blocks: usize,
        cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let [batch, _] = tokens.dims();
        self.run_blocks(
            tokens,
            blocks.min(self.blocks.len()),
            cache,
            &vec![0; batch],
        )
    }

    /// The last `trainable` blocks and the final norm, to train on the residual stream of the
    /// frozen blocks below them ([`Llama::residual`] of `layers() - trainable` blocks). The tied
    /// embedding comes along as the output head, frozen: it is also the input embedding of
    /// the frozen prefix, so training it would make the cached residual stream stale.
    pub fn top(&self, trainable: usize) -> Result<Top, LlmError> {
        if trainable == 0 || trainable > self.blocks.len() {
            return Err(LlmError::Usage(format!(
                "--trainable-blocks must be in 1..={} for this model, got {trainable}",
                self.blocks.len()
            )));
        }
        Ok(Top {
            blocks: self.blocks[self.blocks.len() - trainable..].to_vec(),
            norm: self.norm.clone(),
            head: Param::from_tensor(self.embed.weight.val()).set_require_grad(false),
            rope: self.rope.clone(),
        })
    }

    /// This model with the embedding and all but the last `trainable` blocks frozen (no
    /// gradient): the whole-model counterpart of training [`Llama::top`] on the cache.
    #[cfg(test)]
    pub(crate) fn freeze_below(mut self, trainable: usize) -> Self {
        let frozen = self.blocks.len() - trainable;
        self.embed = self.embed.no_grad();
        for block in &mut self.blocks[..frozen] {
            *block = block.clone().no_grad();
        }
        self
    }

    /// This model with its last blocks and final norm replaced by `top`'s (after training).
    pub fn with_top(mut self, top: Top) -> Self {
        let keep = self.blocks.len() - top.blocks.len();
        self.blocks.truncate(keep);
        self.blocks.extend(top.blocks);
        self.norm = top.norm;
        self
    }

    /// Next-token logits of hidden states `[n, d_model]`: the tied embedding as output head.
    pub fn logits(&self, hidden: Tensor<2>) -> Tensor<2> {
        hidden.matmul(self.embed.weight.val().transpose())
    }

    /// Next-token logits `[batch, len, vocab]` at every position of `tokens`.
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let hidden = self.hidden(tokens, None);
        let [b, t, d] = hidden.dims();
        let vocab = self.embed.weight.dims()[0];
        self.logits(hidden.reshape([b * t, d]))
            .reshape([b, t, vocab])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, reference_logits, tiny_model_file};

    fn logits_of(model: &Llama, tokens: &[u32], device: &Device) -> Vec<f32> {
        let input = token_row(tokens, device);
        model
            .forward(input)
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap()
    }

    #[test]
    fn config_comes_from_the_metadata() {
        let (gguf, weights, _) = tiny_model_file(1);
        let config = LlamaConfig::from_gguf(&gguf, 1000).unwrap();
        assert_eq!(
            config,
            LlamaConfig {
                vocab: weights.vocab,
                d_model: testing::D,
                layers: testing::LAYERS,
                heads: testing::HEADS,
                kv_heads: testing::KV_HEADS,
                d_ff: testing::FF,
                rope_theta: testing::THETA as f32,
                eps: f64::from(testing::EPS as f32),
                max_seq_len: 64,
            }
        );
    }

    #[test]
    fn forward_matches_a_host_reference_of_the_gguf_weights() {
        let device = testing::device();
        let (gguf, weights, _) = tiny_model_file(2);
        let config = LlamaConfig::from_gguf(&gguf, 64).unwrap();
        let model = Llama::from_gguf(&gguf, &config, &device).unwrap();
        let tokens = [1u32, 40, 7, 200, 3, 99, 260, 2];
        let got = logits_of(&model, &tokens, &device);
        let expected = reference_logits(&weights, &tokens);
        let vocab = weights.vocab;
        let mut worst = 0.0f64;
        for (pos, row) in expected.iter().enumerate() {
            for (v, &e) in row.iter().enumerate() {
                worst = worst.max((f64::from(got[pos * vocab + v]) - e).abs());
            }
        }
        assert!(worst < 1e-3, "largest difference {worst}");
        // The reference is sensitive to the layout: swapping Q/K rows would be caught.
        let spread = expected[7].iter().cloned().fold(f64::MIN, f64::max)
            - expected[7].iter().cloned().fold(f64::MAX, f64::min);
        assert!(
            spread > 1.0,
            "logits too flat to tell layouts apart: {spread}"
        );
    }

    #[test]
    fn kv_cache_decoding_matches_the_full_pass() {
        let device = testing::device();
        let (gguf, _, _) = tiny_model_file(3);
        let config = LlamaConfig::from_gguf(&gguf, 64).unwrap();
        let model = Llama::from_gguf(&gguf, &config, &device).unwrap();
        let tokens = [1u32, 40, 7, 200, 3, 99];
        let full = logits_of(&model, &tokens, &device);
        let vocab = config.vocab;
        let mut cache = KvCache::default();
        for (split, chunk) in [(0, &tokens[..4]), (4, &tokens[4..5]), (5, &tokens[5..])] {
            let input = token_row(chunk, &device);
            let hidden = model.hidden(input, Some(&mut cache));
            let [_, n, d] = hidden.dims();
            let got: Vec<f32> = model
                .logits(hidden.reshape([n, d]))
                .into_data()
                .try_into_vec_as::<f32>()
                .unwrap();
            for (i, (g, e)) in got.iter().zip(&full[split * vocab..]).enumerate() {
                assert!(
                    (g - e).abs() < 1e-4,
                    "position {split}+{}: {g} vs {e}",
                    i / vocab
                );
            }
        }
        assert_eq!(cache.len(), tokens.len());
    }
}
