//! The public face of the exact selection: how many entries a ratio masks, and the k-th
//! magnitude of a tensor. The selection itself, on every backend, is
//! [`burn_gmt_kernels::mask`].

use burn::tensor::Tensor;
use burn_gmt_kernels::mask::{key_bits, select_abs};

use crate::mask::check_gradient;

/// How many entries of `n` a ratio masks: `floor(ratio · n)`, computed in f64.
pub fn masked_count(ratio: f64, n: u64) -> u64 {
    ((ratio * n as f64).floor() as u64).min(n.saturating_sub(1))
}

/// The `(k + 1)`-th smallest `|g|` of `grad` (0-based rank `k`), exactly, in O(n) and without
/// sorting or copying the tensor. NaN ranks above `+inf`; the result is at most `+inf`.
/// Returns `None` when `k` is out of range or the dtype is not a float the mask supports.
///
/// # Panics
/// If `grad` is on a backend this build of burn-gmt does not serve, naming the cargo feature
/// that would ([`GradMaskError::BackendNotBuilt`](crate::GradMaskError::BackendNotBuilt)), or
/// its device does not compute with its dtype.
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// let device = Device::default();
/// let g = Tensor::<1>::from_floats([0.5, -3.0, 0.0, 2.0, -1.0], &device);
/// assert_eq!(burn_gmt::select_kth_abs(&g, 0), Some(0.0));
/// assert_eq!(burn_gmt::select_kth_abs(&g, 2), Some(1.0));
/// assert_eq!(burn_gmt::select_kth_abs(&g, 4), Some(3.0));
/// assert_eq!(burn_gmt::select_kth_abs(&g, 5), None);
/// ```
pub fn select_kth_abs<const D: usize>(grad: &Tensor<D>, k: u64) -> Option<f64> {
    key_bits(grad.dtype())?;
    if let Err(err) = check_gradient(grad.dtype(), &grad.device(), || "select_kth_abs".into()) {
        panic!("{err}");
    }
    if k >= grad.shape().num_elements() as u64 {
        return None;
    }
    let mut selection = select_abs(&[grad.clone().into_dispatch()], k, false);
    Tensor::<1>::from_dispatch(selection.thresholds.remove(0))
        .into_data()
        .iter::<f64>()
        .next()
}
