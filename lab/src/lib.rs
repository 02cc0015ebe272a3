//! What the GMT study (`examples/gmt_study`), the LLM example (`examples/llm`, crate
//! `burn-gmt-llm`), the benchmarks and the integration tests share. Not published: it holds the
//! experiments' code, not the library's.
//!
//! - [`methods`]: the fine-tuning methods compared (SFT, GMT, random masks, HFT), set up with
//!   burn-gmt (the module-level ones train inside `burn_gmt::MaskedModel`).
//! - [`data`], [`model`]: the study's generated digit tasks and its small transformer.
//! - [`stats`]: mean ± std, paired and Welch comparisons (t distribution from `statrs`), the
//!   equivalence test (TOST), Holm's correction, interpolation along a frontier;
//!   [`item_tests`]: per-item paired permutation and McNemar tests; [`charts`]: the SVG plots.
//! - [`progress`]: a one-line progress display for burn-train.
//! - [`device`]: a backend by name, the backends compiled in; [`timing`]: timed runs with the
//!   device synchronised.
//! - [`random`]: the seeded random stream of every generated data set; [`hash`]: the stable
//!   hash of split membership and cache keys.
//! - [`testing`]: what the root package's integration tests share.

pub mod charts;
pub mod data;
pub mod device;
pub mod hash;
pub mod item_tests;
pub mod methods;
pub mod model;
pub mod progress;
pub mod random;
pub mod stats;
pub mod testing;
pub mod timing;
