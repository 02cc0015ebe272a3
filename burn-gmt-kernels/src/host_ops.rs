//! The host implementations of `MaskOps`, written once for every backend: the passes of
//! [`crate::host`] run on a backend's float values, reached through a [`HostAccess`].
//! [`ViaData`] reads any backend's tensor back and uploads the result (the trait's default
//! bodies, and CubeCL's fallbacks); [`InPlace`] works on a CPU backend's own storage, with no
//! copy of a contiguous tensor and in place when the tensor is not shared (Flex, NdArray,
//! through [`host_mask_ops`]).

use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, TensorMetadata};
use burn::tensor::{TensorData, try_read_sync};

use crate::buffer::HISTOGRAM_LEN;
use crate::element::MaskElement;
use crate::host::MaskCounts;
use crate::{host, with_mask_element};

/// How the host passes reach the float values of backend `B`.
pub(crate) trait HostAccess<B: Backend> {
    /// Runs `f` on the row-major values of `tensor` (of element type `E`).
    fn with_values<E: MaskElement, R>(tensor: &FloatTensor<B>, f: impl FnOnce(&[E]) -> R) -> R;

    /// `tensor`, row-major and owned by this call, after `f` ran on its values.
    fn update_values<E: MaskElement>(
        tensor: FloatTensor<B>,
        f: impl FnOnce(&mut [E]),
    ) -> FloatTensor<B>;

    /// A tensor of `tensor`'s shape whose row-major values `f` writes, every one, into a
    /// buffer other than `tensor`'s (which it reads): the one-pass mask's output
    /// ([`host::mask_smallest`]). `tensor`'s buffer, when this call owned it alone, is kept
    /// for a later output of its size ([`crate::spare`]).
    fn map_values<E: MaskElement, R>(
        tensor: FloatTensor<B>,
        f: impl FnOnce(&[E], &mut [E]) -> R,
    ) -> (FloatTensor<B>, R);
}

/// Any backend: the tensor read back to the host, the result uploaded.
pub(crate) struct ViaData;

/// A CPU backend's own storage (implemented next to each CPU backend).
pub(crate) struct InPlace;

/// Reads a float tensor to the host (row-major, contiguous).
fn read_float<B: Backend>(tensor: FloatTensor<B>) -> TensorData {
    const MSG: &str = "gradient mask: reading a tensor back to the host failed";
    try_read_sync(B::float_into_data(tensor))
        .expect(MSG)
        .expect(MSG)
}

impl<B: Backend> HostAccess<B> for ViaData {
    fn with_values<E: MaskElement, R>(tensor: &FloatTensor<B>, f: impl FnOnce(&[E]) -> R) -> R {
        let data = read_float::<B>(tensor.clone());
        f(data
            .as_slice::<E>()
            .expect("gradient mask: host data has the tensor's dtype"))
    }

    fn update_values<E: MaskElement>(
        tensor: FloatTensor<B>,
        f: impl FnOnce(&mut [E]),
    ) -> FloatTensor<B> {
        let device = tensor.device();
        let mut data = read_float::<B>(tensor);
        f(data
            .as_mut_slice::<E>()
            .expect("gradient mask: host data has the tensor's dtype"));
        B::float_from_data(data, &device)
    }

    fn map_values<E: MaskElement, R>(
        tensor: FloatTensor<B>,
        f: impl FnOnce(&[E], &mut [E]) -> R,
    ) -> (FloatTensor<B>, R) {
        let device = tensor.device();
        let data = read_float::<B>(tensor);
        let input = data
            .as_slice::<E>()
            .expect("gradient mask: host data has the tensor's dtype");
        let mut output = vec![E::zero(); input.len()];
        let out = f(input, &mut output);
        let masked = TensorData::new(output, data.shape().clone());
        (B::float_from_data(masked, &device), out)
    }
}

fn threshold_key<B: Backend, A: HostAccess<B>>(threshold: &FloatTensor<B>) -> u64 {
    with_mask_element!(threshold.dtype(), E => {
        A::with_values::<E, _>(threshold, |t| t[0].abs_key())
    })
}

/// [`MaskOps::abs_key_select`](crate::MaskOps::abs_key_select): the state words of
/// [`host::select_abs_key`], as an `I64` tensor.
pub(crate) fn abs_key_select<B: Backend, A: HostAccess<B>>(
    grad: &FloatTensor<B>,
    rank: u64,
) -> IntTensor<B> {
    let selected = with_mask_element!(grad.dtype(), E => {
        A::with_values::<E, _>(grad, |g| host::select_abs_key(g, rank))
    });
    B::int_from_data(counter_data(selected.to_words().to_vec()), &grad.device())
}

/// [`MaskOps::abs_key_sample`](crate::MaskOps::abs_key_sample): [`host::sample_keys`], as an
/// `I64` tensor.
pub(crate) fn abs_key_sample<B: Backend, A: HostAccess<B>>(
    grad: &FloatTensor<B>,
    count: u64,
) -> IntTensor<B> {
    let keys = with_mask_element!(grad.dtype(), E => {
        A::with_values::<E, _>(grad, |g| host::sample_keys(g, count))
    });
    B::int_from_data(counter_data(keys), &grad.device())
}

/// [`MaskOps::abs_key_bracket`](crate::MaskOps::abs_key_bracket): the words of
/// [`host::scan_bracket`], as an `I64` tensor.
pub(crate) fn abs_key_bracket<B: Backend, A: HostAccess<B>>(
    grad: &FloatTensor<B>,
    bracket: host::KeyBracket,
    cap: u64,
) -> IntTensor<B> {
    let words = with_mask_element!(grad.dtype(), E => {
        A::with_values::<E, _>(grad, |g| host::scan_bracket(g, bracket, cap as usize).to_words())
    });
    B::int_from_data(counter_data(words), &grad.device())
}

/// The counts of [`MaskOps::abs_key_histogram`](crate::MaskOps::abs_key_histogram).
pub(crate) fn histogram_counts<B: Backend, A: HostAccess<B>>(
    grad: &FloatTensor<B>,
    shift: u32,
    prefix: u64,
) -> Vec<u64> {
    let mut hist = vec![0u64; HISTOGRAM_LEN];
    with_mask_element!(grad.dtype(), E => {
        A::with_values::<E, _>(grad, |g| host::abs_key_histogram(g, shift, prefix, &mut hist));
    });
    hist
}

/// The counts of [`MaskOps::abs_threshold_count`](crate::MaskOps::abs_threshold_count).
pub(crate) fn threshold_counts<B: Backend, A: HostAccess<B>>(
    grad: &FloatTensor<B>,
    threshold: &FloatTensor<B>,
) -> MaskCounts {
    let key = threshold_key::<B, A>(threshold);
    with_mask_element!(grad.dtype(), E => {
        A::with_values::<E, _>(grad, |g| host::abs_threshold_count(g, key))
    })
}

/// The counts of [`MaskOps::random_mask_count`](crate::MaskOps::random_mask_count).
pub(crate) fn random_mask_counts<B: Backend, A: HostAccess<B>>(
    grad: &FloatTensor<B>,
    key: u64,
    bound: u64,
) -> MaskCounts {
    with_mask_element!(grad.dtype(), E => {
        A::with_values::<E, _>(grad, |g| host::random_mask_count(g, key, bound))
    })
}

/// [`MaskOps::abs_key_histogram`](crate::MaskOps::abs_key_histogram), as an `I64` tensor.
pub(crate) fn abs_key_histogram<B: Backend, A: HostAccess<B>>(
    grad: &FloatTensor<B>,
    shift: u32,
    prefix: u64,
) -> IntTensor<B> {
    let hist = histogram_counts::<B, A>(grad, shift, prefix);
    B::int_from_data(counter_data(hist), &grad.device())
}

/// [`MaskOps::abs_threshold_count`](crate::MaskOps::abs_threshold_count), as an `I64` tensor.
pub(crate) fn abs_threshold_count<B: Backend, A: HostAccess<B>>(
    grad: &FloatTensor<B>,
    threshold: &FloatTensor<B>,
) -> IntTensor<B> {
    let counts = threshold_counts::<B, A>(grad, threshold);
    B::int_from_data(count_data(counts), &grad.device())
}

/// [`MaskOps::random_mask_count`](crate::MaskOps::random_mask_count), as an `I64` tensor.
pub(crate) fn random_mask_count<B: Backend, A: HostAccess<B>>(
    grad: &FloatTensor<B>,
    key: u64,
    bound: u64,
) -> IntTensor<B> {
    let counts = random_mask_counts::<B, A>(grad, key, bound);
    B::int_from_data(count_data(counts), &grad.device())
}

/// [`MaskOps::abs_threshold_mask`](crate::MaskOps::abs_threshold_mask).
pub(crate) fn abs_threshold_mask<B: Backend, A: HostAccess<B>>(
    grad: FloatTensor<B>,
    threshold: FloatTensor<B>,
) -> FloatTensor<B> {
    let key = threshold_key::<B, A>(&threshold);
    with_mask_element!(grad.dtype(), E => {
        A::update_values::<E>(grad, |g| host::abs_threshold_mask(g, key))
    })
}

/// [`MaskOps::abs_key_mask_rank`](crate::MaskOps::abs_key_mask_rank): the output and the
/// state words of [`host::mask_smallest`], the words as an `I64` tensor.
pub(crate) fn abs_key_mask_rank<B: Backend, A: HostAccess<B>>(
    grad: FloatTensor<B>,
    rank: u64,
) -> (FloatTensor<B>, IntTensor<B>) {
    let device = grad.device();
    let (masked, state) = with_mask_element!(grad.dtype(), E => {
        A::map_values::<E, _>(grad, |input, output| host::mask_smallest(input, output, rank))
    });
    let words = B::int_from_data(counter_data(state.to_words().to_vec()), &device);
    (masked, words)
}

/// [`MaskOps::abs_threshold_select`](crate::MaskOps::abs_threshold_select).
pub(crate) fn abs_threshold_select<B: Backend, A: HostAccess<B>>(
    grad: FloatTensor<B>,
    threshold: FloatTensor<B>,
    updated: FloatTensor<B>,
    previous: FloatTensor<B>,
) -> FloatTensor<B> {
    let key = threshold_key::<B, A>(&threshold);
    with_mask_element!(updated.dtype(), E => {
        A::with_values::<E, _>(&grad, |g| {
            A::with_values::<E, _>(&previous, |p| {
                A::update_values::<E>(updated, |u| host::abs_threshold_select(g, key, u, p))
            })
        })
    })
}

/// [`MaskOps::random_mask`](crate::MaskOps::random_mask).
pub(crate) fn random_mask<B: Backend, A: HostAccess<B>>(
    grad: FloatTensor<B>,
    key: u64,
    bound: u64,
    scale: f64,
) -> FloatTensor<B> {
    with_mask_element!(grad.dtype(), E => {
        A::update_values::<E>(grad, |g| {
            host::random_mask(g, key, bound, scale);
        })
    })
}

/// Counters (a histogram, a selection buffer) as the `i64` tensor data the host bodies return.
pub(crate) fn counter_data(hist: Vec<u64>) -> TensorData {
    let len = hist.len();
    TensorData::new(
        hist.into_iter().map(|c| c as i64).collect::<Vec<_>>(),
        [len],
    )
}

/// `[masked, non_finite]` as the `i64` tensor data the host bodies return.
pub(crate) fn count_data(counts: MaskCounts) -> TensorData {
    TensorData::new(vec![counts.masked as i64, counts.non_finite as i64], [2])
}
