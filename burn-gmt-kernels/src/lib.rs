//! Selection and masking kernels for [burn-gmt](https://docs.rs/burn-gmt), wired into Burn
//! through one backend extension, [`MaskOps`].
//!
//! - [`mask`]: the one tensor-level interface callers use: select thresholds, mask, hold,
//!   count, and read a step's statistics at once; and ask whether this build serves a
//!   device's backend ([`mask::check_backend`]).
//! - [`random`]: counter-based draws for the random-mask baseline (pure host math the kernels
//!   share).
//! - [`MaskOps`]: the backend extension [`mask`] calls, what a backend implementor touches.
//!   The CPU backends (Flex, NdArray) implement it on their own storage; CubeCL (CUDA, ROCm,
//!   wgpu/Vulkan/Metal/WebGPU, with the `cube` features) implements it with kernels that keep
//!   a whole mask, the exact radix selection included, on the device; any other backend falls
//!   back to the host through its default bodies.
//!
//! Inside, for backends and tests: [`element`] (the order-preserving integer key of `|x|`
//! that makes selection exact), [`buffer`] (the radix selection's digits, histograms and
//! selection buffer), [`host`] (the one-pass host implementations: the CPU backends and the
//! reference), [`select`] (routing and driving a selection on any backend), [`stats`] (pending
//! and resolved statistics).
//!
//! The host passes on a slice, as the CPU backends run them:
//!
//! ```
//! use burn_gmt_kernels::buffer::HISTOGRAM_LEN;
//! use burn_gmt_kernels::element::MaskElement;
//! use burn_gmt_kernels::host;
//!
//! let mut grad = [0.5f32, -3.0, 0.0, 2.0, -1.0, f32::NAN];
//! // |x| keys order like |x|; NaN ranks above every number.
//! assert!((-3.0f32).abs_key() > 2.0f32.abs_key());
//! assert!(f32::NAN.abs_key() > f32::INFINITY.abs_key());
//!
//! // First radix pass (bits 16..32 of the key): every entry lands in a digit bin.
//! let mut hist = vec![0u64; HISTOGRAM_LEN];
//! host::abs_key_histogram(&grad, 16, 0, &mut hist);
//! assert_eq!(hist.iter().sum::<u64>(), 6);
//!
//! // Mask |x| < 1: 0.5 and 0 are zeroed, NaN is kept.
//! host::abs_threshold_mask(&mut grad, 1.0f32.abs_key());
//! assert_eq!(&grad[..5], &[0.0, -3.0, 0.0, 2.0, -1.0]);
//! assert!(grad[5].is_nan());
//! ```

// docs.rs (nightly) labels the items that need a cargo feature.
#![cfg_attr(docsrs, feature(doc_cfg))]
// With no backend feature (the default; `cargo package` verifies that build), the backend
// extension's dispatch has no arm to pass its arguments to, and the CPU backends' shared
// implementation has no backend to implement.
#![cfg_attr(
    not(any(feature = "flex", feature = "ndarray", feature = "cube")),
    allow(unused_variables, unused_macros, dead_code)
)]

pub mod mask;
pub mod random;

#[doc(hidden)]
pub mod buffer;
#[doc(hidden)]
pub mod element;
#[doc(hidden)]
pub mod host;
#[doc(hidden)]
pub mod select;
#[doc(hidden)]
pub mod stats;
#[cfg(any(test, feature = "testing"))]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

mod backend;
mod list;
pub use list::GradList;
mod bracket_simd;
mod ops;
pub use ops::{MaskOps, SelectionCapabilities};

#[cfg(feature = "cube")]
mod cube;
#[cfg(feature = "flex")]
mod flex;
mod host_ops;
#[cfg(feature = "ndarray")]
mod ndarray;
#[cfg_attr(not(any(feature = "flex", feature = "ndarray")), allow(dead_code))]
mod spare;
#[cfg(test)]
mod test_values;
