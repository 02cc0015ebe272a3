//! burn-gmt's integration tests: the mask, the optimizer wrapper and `GradMask` against an
//! independent host reference, on every CPU backend compiled in and on the GPU under test.
//!
//! One test binary of several modules rather than one per file: the modules share
//! [`common`] without any of them leaving a helper unused, and the crate links once.

mod backends;
mod common;
mod gpu;
mod grad_mask;
mod lora;
mod mask_props;
mod optimizer;
