#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
// docs.rs (nightly) labels the items that need a cargo feature.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod error;
mod grad_mask;
mod mask;
#[cfg(feature = "train")]
mod masked_model;
#[cfg(feature = "train")]
#[cfg_attr(docsrs, doc(cfg(feature = "train")))]
pub mod metric;
mod optimizer;
mod plan;
mod select;
mod stats;

pub use config::{GradMaskConfig, MaskGroup, MaskScope, MaskStrategy, MaskTarget, RatioSchedule};
pub use error::GradMaskError;
pub use grad_mask::GradMask;
#[cfg(feature = "train")]
#[cfg_attr(docsrs, doc(cfg(feature = "train")))]
pub use masked_model::MaskedModel;
pub use optimizer::{GradMasked, GradMaskedState, WithGradMask};
pub use select::{masked_count, select_kth_abs};
pub use stats::{MaskStats, MaskStatsHandle, TensorMaskStats};

/// The repository README's Rust examples (its Quickstart), compiled and run with the crate's
/// doc tests. Only under `cfg(doctest)`: the packaged crate does not carry that file.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct RepositoryReadme;
