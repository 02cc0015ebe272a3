//! The GMT study's model: a small decoder-only transformer language model, trained through
//! burn-train.

use burn::module::Module;
use burn::nn::attention::generate_autoregressive_mask;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::transformer::{
    TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput,
};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor};
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};

use crate::data::{LmBatch, PAD, SEQ_LEN, VOCAB};

/// The model's sizes.
#[derive(burn::config::Config, Debug)]
pub struct LmConfig {
    /// Width of the embeddings and the residual stream.
    pub d_model: usize,
    /// Transformer layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Width of the feed-forward layers.
    pub d_ff: usize,
}

/// The language model proper (what checkpoints hold).
#[derive(Module, Debug)]
pub struct TinyLm {
    tokens: Embedding,
    positions: Embedding,
    blocks: TransformerEncoder,
    norm: LayerNorm,
    head: Linear,
}

impl LmConfig {
    /// A model of these sizes, initialised from `device`'s random state.
    pub fn init(&self, device: &Device) -> TinyLm {
        TinyLm {
            tokens: EmbeddingConfig::new(VOCAB, self.d_model).init(device),
            positions: EmbeddingConfig::new(SEQ_LEN, self.d_model).init(device),
            blocks: TransformerEncoderConfig::new(self.d_model, self.d_ff, self.heads, self.layers)
                .with_norm_first(true)
                .with_dropout(0.0)
                .init(device),
            norm: LayerNormConfig::new(self.d_model).init(device),
            head: LinearConfig::new(self.d_model, VOCAB).init(device),
        }
    }
}

impl TinyLm {
    /// Logits `[batch, len, vocab]` of the next token at every position.
    pub fn forward(&self, inputs: Tensor<2, Int>) -> Tensor<3> {
        let [batch, len] = inputs.dims();
        let device = inputs.device();
        let positions = Tensor::<1, Int>::arange(0..len as i64, &device)
            .reshape([1, len])
            .repeat_dim(0, batch);
        let x = self.tokens.forward(inputs) + self.positions.forward(positions);
        let mask = generate_autoregressive_mask(batch, len, &device);
        let x = self
            .blocks
            .forward(TransformerEncoderInput::new(x).mask_attn(mask));
        self.head.forward(self.norm.forward(x))
    }

    /// Loss on the answer tokens and the flattened logits and targets.
    pub fn forward_loss(&self, batch: LmBatch) -> ClassificationOutput {
        answer_loss(self.forward(batch.inputs), batch.targets)
    }
}

/// burn-train trains the model alone (SFT, pre-training) or inside `burn_gmt::MaskedModel`.
impl TrainStep for TinyLm {
    type Input = LmBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: LmBatch) -> TrainOutput<ClassificationOutput> {
        let item = self.forward_loss(batch);
        TrainOutput::new(self, item.loss.backward(), item)
    }
}

impl InferenceStep for TinyLm {
    type Input = LmBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: LmBatch) -> ClassificationOutput {
        self.forward_loss(batch)
    }
}

/// Loss on the answer tokens (`PAD` targets ignored) of `logits` `[batch, len, vocab]`, with
/// the flattened logits and targets.
pub fn answer_loss(logits: Tensor<3>, targets: Tensor<2, Int>) -> ClassificationOutput {
    let [b, t, v] = logits.dims();
    let output = logits.reshape([b * t, v]);
    let targets = targets.reshape([b * t]);
    let loss = CrossEntropyLossConfig::new()
        .with_pad_tokens(Some(vec![PAD]))
        .init(&output.device())
        .forward(output.clone(), targets.clone());
    ClassificationOutput {
        loss,
        output,
        targets,
    }
}
