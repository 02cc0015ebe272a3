//! SmolLM2-135M (a Llama-architecture model) in Burn, loaded from a GGUF file, and its
//! fine-tuning with Gradient-Mask Tuning through burn-train.
//!
//! - [`gguf`]: the GGUF container (via `gguf-rs-lib`) and [`quant`]: dequantisation of F32, F16,
//!   Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 blocks, bit-exact against ggml's definitions.
//! - [`tokenizer`]: byte-level BPE from the GGUF vocabulary and merges, and the ChatML template.
//! - [`model`]: the Llama module (`burn::nn` RMSNorm, rotary encoding, SwiGLU; grouped-query
//!   attention with a KV cache).
//! - [`generate`]: greedy decoding.
//! - [`task`], [`train`]: the generated arithmetic task, the forgetting probe and the
//!   fine-tuning through burn-train's `Learner` with SFT, GMT, global GMT, random masks and HFT.
//!
//! Run it with `cargo run --release --example llm -- generate|finetune ...` (see the README).

pub mod cache;
pub mod cli;
pub mod experiment;
pub mod generate;
pub mod gguf;
pub mod model;
pub mod quant;
pub mod task;
pub mod tokenizer;
pub mod train;

#[cfg(test)]
mod testing;

/// What can go wrong, with a message for the command line.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A GGUF file, tensor or tokenizer entry is malformed or unsupported.
    #[error("{0}")]
    Format(String),
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
}
