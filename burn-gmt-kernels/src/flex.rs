//! `MaskOps` for the Flex CPU backend: the host passes run on Flex's storage directly, with
//! no copy of a contiguous tensor and in place when the tensor is not shared.

use burn::backend::Flex;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn_flex::FlexTensor;

use crate::element::{HISTOGRAM_LEN, MaskElement};
use crate::ops::{MaskOps, count_data, counter_data};
use crate::{host, with_mask_element};

/// The tensor laid out row-major over exactly its own buffer (a copy only when it is a
/// strided or offset view).
fn contiguous(tensor: FlexTensor) -> FlexTensor {
    let out = tensor.to_contiguous();
    drop(tensor);
    out
}

/// Read-only row-major view, copying only a strided tensor.
fn with_values<R>(tensor: &FlexTensor, f: impl FnOnce(&FlexTensor) -> R) -> R {
    if tensor.layout().contiguous_offsets().is_some() {
        f(tensor)
    } else {
        f(&tensor.to_contiguous())
    }
}

fn values<E: MaskElement>(tensor: &FlexTensor) -> &[E] {
    let (start, end) = tensor
        .layout()
        .contiguous_offsets()
        .expect("gradient mask: contiguous tensor");
    &tensor.storage::<E>()[start..end]
}

/// Mutable row-major values: in place when unique, copy-on-write otherwise.
fn values_mut<E: MaskElement>(tensor: &mut FlexTensor) -> &mut [E] {
    tensor.storage_mut::<E>()
}

fn threshold_key(threshold: &FlexTensor) -> u64 {
    with_values(
        threshold,
        |t| with_mask_element!(t.dtype(), E => { values::<E>(t)[0].abs_key() }),
    )
}

impl MaskOps for Flex {
    fn abs_key_histogram(grad: &FloatTensor<Self>, shift: u32, prefix: u64) -> IntTensor<Self> {
        let mut hist = vec![0u64; HISTOGRAM_LEN];
        with_values(grad, |g| {
            with_mask_element!(g.dtype(), E => {
                host::abs_key_histogram::<E>(values(g), shift, prefix, &mut hist);
            })
        });
        FlexTensor::from_data(counter_data(hist))
    }

    fn abs_threshold_mask(
        grad: FloatTensor<Self>,
        threshold: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let key = threshold_key(&threshold);
        let mut out = contiguous(grad);
        with_mask_element!(out.dtype(), E => {
            host::abs_threshold_mask::<E>(values_mut(&mut out), key);
        });
        out
    }

    fn abs_threshold_select(
        grad: FloatTensor<Self>,
        threshold: FloatTensor<Self>,
        updated: FloatTensor<Self>,
        previous: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let key = threshold_key(&threshold);
        let grad = contiguous(grad);
        let previous = contiguous(previous);
        let mut out = contiguous(updated);
        with_mask_element!(out.dtype(), E => {
            host::abs_threshold_select::<E>(values(&grad), key, values_mut(&mut out), values(&previous));
        });
        out
    }

    fn random_mask(grad: FloatTensor<Self>, key: u64, bound: u64, scale: f64) -> FloatTensor<Self> {
        let mut out = contiguous(grad);
        with_mask_element!(out.dtype(), E => {
            host::random_mask::<E>(values_mut(&mut out), key, bound, scale);
        });
        out
    }

    fn random_mask_count(grad: &FloatTensor<Self>, key: u64, bound: u64) -> IntTensor<Self> {
        let counts = with_values(
            grad,
            |g| with_mask_element!(g.dtype(), E => { host::random_mask_count::<E>(values(g), key, bound) }),
        );
        FlexTensor::from_data(count_data(counts))
    }
}
