//! Selection and masking kernels for [burn-gmt](https://docs.rs/burn-gmt), wired into Burn
//! through one backend extension, [`MaskOps`].
//!
//! - [`element`]: the order-preserving integer key of `|x|` that makes selection exact.
//! - [`host`]: the one-pass host implementations (the CPU backends and the reference).
//! - [`random`]: counter-based draws for the random-mask baseline.
//! - [`MaskOps`]: the backend extension the library calls; CPU backends implement it on their
//!   storage, any other backend falls back to the host through its default bodies.

pub mod element;
pub mod host;
pub mod random;

mod ops;
pub use ops::MaskOps;

#[cfg(feature = "flex")]
mod flex;
