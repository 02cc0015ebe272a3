//! Test helpers: a tiny Llama written to GGUF bytes (random weights, two blocks, the hand-made
//! vocabulary of the tokenizer tests) and an independent `f64` host forward pass to check the
//! Burn module against.

use gguf_rs_lib::format::metadata::{MetadataArray, MetadataValue};
use gguf_rs_lib::format::types::GGUFValueType;
use gguf_rs_lib::prelude::GGUFBuilder;
use gguf_rs_lib::tensor::TensorType;

use burn::tensor::Device;

use crate::gguf::Gguf;
use crate::tokenizer::Tokenizer;

/// The device the tests run on.
pub fn device() -> Device {
    #[cfg(feature = "flex")]
    return Device::flex();
    #[cfg(not(feature = "flex"))]
    Device::default()
}

/// Sizes of the tiny model.
pub const D: usize = 16;
pub const HEADS: usize = 4;
pub const KV_HEADS: usize = 2;
pub const FF: usize = 24;
pub const LAYERS: usize = 2;
pub const THETA: f64 = 10_000.0;
pub const EPS: f64 = 1e-5;

/// The tiny model's weights, as the reference reads them: `(name, dims innermost first, values)`.
pub struct TinyWeights {
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    pub vocab: usize,
}

impl TinyWeights {
    pub fn get(&self, name: &str) -> &[f32] {
        &self
            .tensors
            .iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
            .2
    }
}

fn lcg(state: &mut u64) -> f32 {
    *state = state
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    ((*state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

/// Random weights for the tiny model; norms around 1, matrices scaled like an initialisation.
pub fn tiny_weights(vocab: usize, seed: u64) -> TinyWeights {
    let mut state = seed;
    let mut tensors = Vec::new();
    let mut add = |name: String, dims: Vec<usize>, scale: f32, offset: f32| {
        let n = dims.iter().product();
        let values: Vec<f32> = (0..n).map(|_| offset + scale * lcg(&mut state)).collect();
        tensors.push((name, dims, values));
    };
    let kv = KV_HEADS * D / HEADS;
    add("token_embd.weight".into(), vec![D, vocab], 1.0, 0.0);
    add("output_norm.weight".into(), vec![D], 0.2, 1.0);
    for i in 0..LAYERS {
        let n = |p: &str| format!("blk.{i}.{p}.weight");
        add(n("attn_norm"), vec![D], 0.2, 1.0);
        add(n("ffn_norm"), vec![D], 0.2, 1.0);
        add(n("attn_q"), vec![D, D], 0.5, 0.0);
        add(n("attn_k"), vec![D, kv], 0.5, 0.0);
        add(n("attn_v"), vec![D, kv], 0.5, 0.0);
        add(n("attn_output"), vec![D, D], 0.3, 0.0);
        add(n("ffn_gate"), vec![D, FF], 0.5, 0.0);
        add(n("ffn_up"), vec![D, FF], 0.5, 0.0);
        add(n("ffn_down"), vec![FF, D], 0.3, 0.0);
    }
    // The embedding is stored as F16 below: keep the reference on the same values.
    let embd = &mut tensors[0].2;
    for x in embd.iter_mut() {
        *x = half::f16::from_f32(*x).to_f32();
    }
    TinyWeights { tensors, vocab }
}

fn strings(values: Vec<String>) -> MetadataValue {
    MetadataValue::Array(Box::new(
        MetadataArray::new(
            GGUFValueType::String,
            values.into_iter().map(MetadataValue::String).collect(),
        )
        .unwrap(),
    ))
}

/// The tiny model as a GGUF file in memory, with `tokenizer`'s vocabulary and merges.
pub fn tiny_gguf(weights: &TinyWeights, tokens: Vec<String>, merges: Vec<String>) -> Vec<u8> {
    let token_types = MetadataValue::Array(Box::new(
        MetadataArray::new(
            GGUFValueType::I32,
            (0..tokens.len())
                .map(|i| MetadataValue::I32(if i < 3 { 3 } else { 1 }))
                .collect(),
        )
        .unwrap(),
    ));
    let s = |v: &str| MetadataValue::String(v.to_string());
    let mut builder = GGUFBuilder::new()
        .add_metadata("general.architecture", s("llama"))
        .add_metadata("llama.block_count", MetadataValue::U32(LAYERS as u32))
        .add_metadata("llama.context_length", MetadataValue::U32(64))
        .add_metadata("llama.embedding_length", MetadataValue::U32(D as u32))
        .add_metadata("llama.feed_forward_length", MetadataValue::U32(FF as u32))
        .add_metadata("llama.attention.head_count", MetadataValue::U32(HEADS as u32))
        .add_metadata("llama.attention.head_count_kv", MetadataValue::U32(KV_HEADS as u32))
        .add_metadata("llama.rope.freq_base", MetadataValue::F32(THETA as f32))
        .add_metadata(
            "llama.attention.layer_norm_rms_epsilon",
            MetadataValue::F32(EPS as f32),
        )
        .add_metadata("tokenizer.ggml.model", s("gpt2"))
        .add_metadata("tokenizer.ggml.pre", s("smollm"))
        .add_metadata("tokenizer.ggml.tokens", strings(tokens))
        .add_metadata("tokenizer.ggml.merges", strings(merges))
        .add_metadata("tokenizer.ggml.token_type", token_types)
        .add_metadata(
            "tokenizer.chat_template",
            s("{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nBe brief.<|im_end|>\n' }}{% endif %}"),
        );
    for (name, dims, values) in &weights.tensors {
        let dims64 = dims.iter().map(|&d| d as u64).collect();
        builder = if name == "token_embd.weight" {
            let bytes = values
                .iter()
                .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                .collect();
            builder.add_tensor(name.clone(), dims64, TensorType::F16, bytes)
        } else {
            let bytes = values.iter().flat_map(|x| x.to_le_bytes()).collect();
            builder.add_tensor(name.clone(), dims64, TensorType::F32, bytes)
        }
        .unwrap();
    }
    builder.build_to_bytes().unwrap().0
}

/// The tiny model's GGUF (weights from `seed`) read back, its weights and its tokenizer.
pub fn tiny_model_file(seed: u64) -> (Gguf, TinyWeights, Tokenizer) {
    let tokenizer = crate::tokenizer::tests::tiny_tokenizer();
    let (tokens, merges) = crate::tokenizer::tests::tiny_vocab();
    let weights = tiny_weights(tokens.len(), seed);
    let bytes = tiny_gguf(&weights, tokens, merges);
    let gguf = Gguf::read(std::io::Cursor::new(bytes)).expect("the tiny GGUF reads back");
    (gguf, weights, tokenizer)
}

/// `y = W x` for a GGUF `out × in` matrix `w` (listed `[in, out]`).
fn matvec(w: &[f32], x: &[f64], d_out: usize) -> Vec<f64> {
    let d_in = x.len();
    (0..d_out)
        .map(|o| (0..d_in).map(|i| f64::from(w[o * d_in + i]) * x[i]).sum())
        .collect()
}

fn rms_norm(x: &[f64], gamma: &[f32]) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let r = (ms + EPS).sqrt();
    x.iter()
        .zip(gamma)
        .map(|(v, &g)| v / r * f64::from(g))
        .collect()
}

/// Rotates adjacent pairs `(2i, 2i + 1)` of one head by `pos * theta^(-2i / head_dim)`.
fn rope(x: &mut [f64], pos: usize) {
    let hd = x.len();
    for i in 0..hd / 2 {
        let angle = pos as f64 * THETA.powf(-(2.0 * i as f64) / hd as f64);
        let (s, c) = angle.sin_cos();
        let (a, b) = (x[2 * i], x[2 * i + 1]);
        x[2 * i] = a * c - b * s;
        x[2 * i + 1] = a * s + b * c;
    }
}

/// Logits at every position of `tokens`, computed on the host in `f64` from the weights.
pub fn reference_logits(w: &TinyWeights, tokens: &[u32]) -> Vec<Vec<f64>> {
    let hd = D / HEADS;
    let kv = KV_HEADS * hd;
    let embd = w.get("token_embd.weight");
    let mut xs: Vec<Vec<f64>> = tokens
        .iter()
        .map(|&t| {
            embd[t as usize * D..(t as usize + 1) * D]
                .iter()
                .map(|&v| f64::from(v))
                .collect()
        })
        .collect();
    for l in 0..LAYERS {
        let p = |name: &str| w.get(&format!("blk.{l}.{name}.weight"));
        let mut qs = Vec::new();
        let mut ks = Vec::new();
        let mut vs = Vec::new();
        for (pos, x) in xs.iter().enumerate() {
            let h = rms_norm(x, p("attn_norm"));
            let mut q = matvec(p("attn_q"), &h, D);
            let mut k = matvec(p("attn_k"), &h, kv);
            for head in q.chunks_mut(hd).chain(k.chunks_mut(hd)) {
                rope(head, pos);
            }
            qs.push(q);
            ks.push(k);
            vs.push(matvec(p("attn_v"), &h, kv));
        }
        for pos in 0..xs.len() {
            let mut attn = vec![0.0; D];
            for head in 0..HEADS {
                let g = head / (HEADS / KV_HEADS);
                let q = &qs[pos][head * hd..(head + 1) * hd];
                let scores: Vec<f64> = (0..=pos)
                    .map(|j| {
                        let k = &ks[j][g * hd..(g + 1) * hd];
                        q.iter().zip(k).map(|(a, b)| a * b).sum::<f64>() / (hd as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let z: f64 = e.iter().sum();
                for (j, ej) in e.iter().enumerate() {
                    for d in 0..hd {
                        attn[head * hd + d] += ej / z * vs[j][g * hd + d];
                    }
                }
            }
            let o = matvec(p("attn_output"), &attn, D);
            let x: Vec<f64> = xs[pos].iter().zip(&o).map(|(a, b)| a + b).collect();
            let h = rms_norm(&x, p("ffn_norm"));
            let gate = matvec(p("ffn_gate"), &h, FF);
            let up = matvec(p("ffn_up"), &h, FF);
            let act: Vec<f64> = gate
                .iter()
                .zip(&up)
                .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            let down = matvec(p("ffn_down"), &act, D);
            xs[pos] = x.iter().zip(&down).map(|(a, b)| a + b).collect();
        }
    }
    xs.iter()
        .map(|x| {
            let h = rms_norm(x, w.get("output_norm.weight"));
            matvec(embd, &h, w.vocab)
        })
        .collect()
}
