//! `MaskOps` on the CPU backends, written once: the host passes of [`crate::host`] run on the
//! backend's own storage (no copy of a contiguous tensor, in place when the tensor is not
//! shared). Each CPU backend says how to reach its storage ([`HostStorage`]) and delegates its
//! `MaskOps` methods here.

use burn::backend::Backend;
use burn::backend::TensorMetadata;
use burn::backend::tensor::{FloatTensor, IntTensor};

use crate::element::{HISTOGRAM_LEN, MaskElement};
use crate::ops::{count_data, counter_data};
use crate::{host, with_mask_element};

/// A backend whose float tensors live in host memory.
pub(crate) trait HostStorage: Backend {
    /// Runs `f` on the row-major values of `tensor` (of element type `E`), copying only a
    /// strided view.
    fn with_values<E: MaskElement, R>(tensor: &FloatTensor<Self>, f: impl FnOnce(&[E]) -> R) -> R;

    /// `tensor` laid out row-major and owned by this call (copied only when strided or
    /// shared), after `f` ran on its values.
    fn update_values<E: MaskElement>(
        tensor: FloatTensor<Self>,
        f: impl FnOnce(&mut [E]),
    ) -> FloatTensor<Self>;
}

fn threshold_key<B: HostStorage>(threshold: &FloatTensor<B>) -> u64 {
    with_mask_element!(threshold.dtype(), E => {
        B::with_values::<E, _>(threshold, |t| t[0].abs_key())
    })
}

/// [`MaskOps::abs_key_histogram`](crate::MaskOps::abs_key_histogram).
pub(crate) fn abs_key_histogram<B: HostStorage>(
    grad: &FloatTensor<B>,
    shift: u32,
    prefix: u64,
) -> IntTensor<B> {
    let mut hist = vec![0u64; HISTOGRAM_LEN];
    with_mask_element!(grad.dtype(), E => {
        B::with_values::<E, _>(grad, |g| host::abs_key_histogram(g, shift, prefix, &mut hist));
    });
    B::int_from_data(counter_data(hist), &grad.device())
}

/// [`MaskOps::abs_threshold_mask`](crate::MaskOps::abs_threshold_mask).
pub(crate) fn abs_threshold_mask<B: HostStorage>(
    grad: FloatTensor<B>,
    threshold: FloatTensor<B>,
) -> FloatTensor<B> {
    let key = threshold_key::<B>(&threshold);
    with_mask_element!(grad.dtype(), E => {
        B::update_values::<E>(grad, |g| host::abs_threshold_mask(g, key))
    })
}

/// [`MaskOps::abs_threshold_select`](crate::MaskOps::abs_threshold_select).
pub(crate) fn abs_threshold_select<B: HostStorage>(
    grad: FloatTensor<B>,
    threshold: FloatTensor<B>,
    updated: FloatTensor<B>,
    previous: FloatTensor<B>,
) -> FloatTensor<B> {
    let key = threshold_key::<B>(&threshold);
    with_mask_element!(updated.dtype(), E => {
        B::with_values::<E, _>(&grad, |g| {
            B::with_values::<E, _>(&previous, |p| {
                B::update_values::<E>(updated, |u| host::abs_threshold_select(g, key, u, p))
            })
        })
    })
}

/// [`MaskOps::abs_threshold_count`](crate::MaskOps::abs_threshold_count).
pub(crate) fn abs_threshold_count<B: HostStorage>(
    grad: &FloatTensor<B>,
    threshold: &FloatTensor<B>,
) -> IntTensor<B> {
    let key = threshold_key::<B>(threshold);
    let counts = with_mask_element!(grad.dtype(), E => {
        B::with_values::<E, _>(grad, |g| host::abs_threshold_count(g, key))
    });
    B::int_from_data(
        counter_data(vec![counts.masked, counts.non_finite]),
        &grad.device(),
    )
}

/// [`MaskOps::random_mask`](crate::MaskOps::random_mask).
pub(crate) fn random_mask<B: HostStorage>(
    grad: FloatTensor<B>,
    key: u64,
    bound: u64,
    scale: f64,
) -> FloatTensor<B> {
    with_mask_element!(grad.dtype(), E => {
        B::update_values::<E>(grad, |g| {
            host::random_mask(g, key, bound, scale);
        })
    })
}

/// [`MaskOps::random_mask_count`](crate::MaskOps::random_mask_count).
pub(crate) fn random_mask_count<B: HostStorage>(
    grad: &FloatTensor<B>,
    key: u64,
    bound: u64,
) -> IntTensor<B> {
    let counts = with_mask_element!(grad.dtype(), E => {
        B::with_values::<E, _>(grad, |g| host::random_mask_count(g, key, bound))
    });
    B::int_from_data(count_data(counts), &grad.device())
}

/// The `MaskOps` methods of a [`HostStorage`] backend, delegated to this module; the
/// selection steps keep the trait's host bodies.
macro_rules! host_mask_ops {
    ($backend:ty) => {
        impl $crate::ops::MaskOps for $backend {
            fn abs_key_histogram(
                grad: &FloatTensor<Self>,
                shift: u32,
                prefix: u64,
            ) -> IntTensor<Self> {
                $crate::host_backend::abs_key_histogram::<Self>(grad, shift, prefix)
            }

            fn abs_threshold_mask(
                grad: FloatTensor<Self>,
                threshold: FloatTensor<Self>,
            ) -> FloatTensor<Self> {
                $crate::host_backend::abs_threshold_mask::<Self>(grad, threshold)
            }

            fn abs_threshold_select(
                grad: FloatTensor<Self>,
                threshold: FloatTensor<Self>,
                updated: FloatTensor<Self>,
                previous: FloatTensor<Self>,
            ) -> FloatTensor<Self> {
                $crate::host_backend::abs_threshold_select::<Self>(
                    grad, threshold, updated, previous,
                )
            }

            fn abs_threshold_count(
                grad: &FloatTensor<Self>,
                threshold: &FloatTensor<Self>,
            ) -> IntTensor<Self> {
                $crate::host_backend::abs_threshold_count::<Self>(grad, threshold)
            }

            fn random_mask(
                grad: FloatTensor<Self>,
                key: u64,
                bound: u64,
                scale: f64,
            ) -> FloatTensor<Self> {
                $crate::host_backend::random_mask::<Self>(grad, key, bound, scale)
            }

            fn random_mask_count(
                grad: &FloatTensor<Self>,
                key: u64,
                bound: u64,
            ) -> IntTensor<Self> {
                $crate::host_backend::random_mask_count::<Self>(grad, key, bound)
            }
        }
    };
}
pub(crate) use host_mask_ops;
