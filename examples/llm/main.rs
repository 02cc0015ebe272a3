//! SmolLM2-135M-Instruct in Burn: greedy generation, and fine-tuning of the top of the whole
//! pretrained model with SFT, GMT and the baselines. The model comes from
//! `scripts/fetch-smollm2.sh` (a GGUF file).
//!
//! ```text
//! cargo run --features ndarray,wgpu --example llm -- generate --prompt "What is the capital of France?" --top 5
//! cargo run --features ndarray,wgpu --example llm -- finetune --preset cpu
//! ```
//! Run with `--help` (or `finetune --help`) for every option and its default; `--device wgpu`
//! etc. need the matching feature.

fn main() {
    burn_gmt_llm::cli::main();
}
