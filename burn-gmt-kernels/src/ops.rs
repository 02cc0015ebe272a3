// burn-ndarray is deprecated upstream but still a backend our users run; we keep serving it.
#![allow(deprecated)]

//! The backend extension every mask operation goes through.

use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, TensorMetadata, backend_extension};
use burn::tensor::{TensorData, try_read_sync};

use crate::element::{HISTOGRAM_LEN, MaskElement};
use crate::host;
use crate::with_mask_element;

/// Gradient-mask operations, implemented per backend.
///
/// The default bodies run on the host through [`host`] and serve any backend, at the price of
/// a device round trip; the CPU backends override them to work on their storage directly, in
/// place when the tensor is not shared. This trait is the single place GPU kernels plug in.
///
/// Conventions shared by every method:
/// - Keys: `|x|` ranked by its order-preserving integer key ([`crate::element`]).
/// - Thresholds are one-element tensors of the gradient's dtype, so a device can keep them in
///   its own memory between selection and masking.
/// - Random draws use the row-major index of each entry ([`crate::random`]).
#[backend_extension(
    Flex: cfg(feature = "flex"),
    NdArray: cfg(feature = "ndarray"),
    Cube: cfg(feature = "cube"),
    Fusion: cfg(feature = "cube"),
)]
pub trait MaskOps: Backend {
    /// Radix histogram of `|grad|` for one pass, as an integer tensor of length
    /// [`HISTOGRAM_LEN`]; see [`host::abs_key_histogram`].
    ///
    /// The count dtype is the backend's: `I64` on the CPU backends and in the host fallback,
    /// `U32` on CubeCL (its devices count with 32-bit atomics and may have no 64-bit integers;
    /// a tensor there holds fewer than 2^32 entries). Read it with
    /// [`TensorData::iter::<i64>`](TensorData::iter), which widens either.
    #[fusion(dtype = burn::tensor::DType::U32, shape = histogram_shape())]
    fn abs_key_histogram(grad: &FloatTensor<Self>, shift: u32, prefix: u64) -> IntTensor<Self> {
        host_abs_key_histogram::<Self>(grad, shift, prefix)
    }

    /// `grad` with the entries whose `|g|` is below `threshold` zeroed (NaN and ±inf kept).
    #[fusion(dtype = grad, shape = grad)]
    fn abs_threshold_mask(
        grad: FloatTensor<Self>,
        threshold: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        host_abs_threshold_mask::<Self>(grad, threshold)
    }

    /// `updated`, except that entries whose gradient `|g|` is below `threshold` take their
    /// `previous` value: masked parameters do not move.
    #[fusion(dtype = updated, shape = updated)]
    fn abs_threshold_select(
        grad: FloatTensor<Self>,
        threshold: FloatTensor<Self>,
        updated: FloatTensor<Self>,
        previous: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        host_abs_threshold_select::<Self>(grad, threshold, updated, previous)
    }

    /// `grad` with a random fraction of its finite entries zeroed (entry drawn when its draw
    /// under `key` is below `bound`) and the kept finite entries multiplied by `scale`.
    #[fusion(default)]
    fn random_mask(grad: FloatTensor<Self>, key: u64, bound: u64, scale: f64) -> FloatTensor<Self> {
        let device = grad.device();
        let mut data = read_float::<Self>(grad);
        with_mask_element!(data.dtype(), E => {
            host::random_mask::<E>(float_slice_mut(&mut data), key, bound, scale);
        });
        Self::float_from_data(data, &device)
    }

    /// `[masked, non_finite]` (`i64`) of what [`MaskOps::random_mask`] does to `grad`.
    #[fusion(default)]
    fn random_mask_count(grad: &FloatTensor<Self>, key: u64, bound: u64) -> IntTensor<Self> {
        let device = grad.device();
        let data = read_float::<Self>(grad.clone());
        let counts = with_mask_element!(data.dtype(), E => {
            host::random_mask_count::<E>(float_slice(&data), key, bound)
        });
        Self::int_from_data(count_data(counts), &device)
    }
}

/// Shape of a histogram tensor: [`HISTOGRAM_LEN`] counts (the Fusion output metadata).
#[cfg_attr(not(feature = "cube"), allow(dead_code))]
pub(crate) fn histogram_shape() -> burn::tensor::Shape {
    burn::tensor::Shape::new([HISTOGRAM_LEN])
}

/// [`MaskOps::abs_key_histogram`] on the host (any backend, at the price of a read-back), as
/// an `I64` tensor.
pub(crate) fn host_abs_key_histogram<B: Backend>(
    grad: &FloatTensor<B>,
    shift: u32,
    prefix: u64,
) -> IntTensor<B> {
    let device = grad.device();
    let hist = host_histogram_counts::<B>(grad, shift, prefix);
    B::int_from_data(histogram_data(hist), &device)
}

/// The counts of [`MaskOps::abs_key_histogram`], computed on the host.
pub(crate) fn host_histogram_counts<B: Backend>(
    grad: &FloatTensor<B>,
    shift: u32,
    prefix: u64,
) -> Vec<u64> {
    let data = read_float::<B>(grad.clone());
    let mut hist = vec![0u64; HISTOGRAM_LEN];
    with_mask_element!(data.dtype(), E => {
        host::abs_key_histogram::<E>(float_slice(&data), shift, prefix, &mut hist);
    });
    hist
}

/// [`MaskOps::abs_threshold_mask`] on the host (any backend).
pub(crate) fn host_abs_threshold_mask<B: Backend>(
    grad: FloatTensor<B>,
    threshold: FloatTensor<B>,
) -> FloatTensor<B> {
    let device = grad.device();
    let threshold = read_threshold_key::<B>(threshold);
    let mut data = read_float::<B>(grad);
    with_mask_element!(data.dtype(), E => {
        host::abs_threshold_mask::<E>(float_slice_mut(&mut data), threshold);
    });
    B::float_from_data(data, &device)
}

/// [`MaskOps::abs_threshold_select`] on the host (any backend).
pub(crate) fn host_abs_threshold_select<B: Backend>(
    grad: FloatTensor<B>,
    threshold: FloatTensor<B>,
    updated: FloatTensor<B>,
    previous: FloatTensor<B>,
) -> FloatTensor<B> {
    let device = updated.device();
    let threshold = read_threshold_key::<B>(threshold);
    let grad = read_float::<B>(grad);
    let previous = read_float::<B>(previous);
    let mut updated = read_float::<B>(updated);
    with_mask_element!(updated.dtype(), E => {
        host::abs_threshold_select::<E>(
            float_slice(&grad),
            threshold,
            float_slice_mut(&mut updated),
            float_slice(&previous),
        );
    });
    B::float_from_data(updated, &device)
}

/// Reads a float tensor to the host (row-major, contiguous).
fn read_float<B: Backend>(tensor: FloatTensor<B>) -> TensorData {
    const MSG: &str = "gradient mask: reading a tensor back to the host failed";
    try_read_sync(B::float_into_data(tensor))
        .expect(MSG)
        .expect(MSG)
}

fn read_threshold_key<B: Backend>(threshold: FloatTensor<B>) -> u64 {
    let data = read_float::<B>(threshold);
    with_mask_element!(data.dtype(), E => { float_slice::<E>(&data)[0].abs_key() })
}

fn float_slice<E: MaskElement>(data: &TensorData) -> &[E] {
    data.as_slice::<E>()
        .expect("gradient mask: host data has the tensor's dtype")
}

fn float_slice_mut<E: MaskElement>(data: &mut TensorData) -> &mut [E] {
    data.as_mut_slice::<E>()
        .expect("gradient mask: host data has the tensor's dtype")
}

/// A histogram as the `i64` tensor data the trait returns.
pub(crate) fn histogram_data(hist: Vec<u64>) -> TensorData {
    let len = hist.len();
    TensorData::new(
        hist.into_iter().map(|c| c as i64).collect::<Vec<_>>(),
        [len],
    )
}

/// Random-mask counts as the `[masked, non_finite]` `i64` tensor data the trait returns.
pub(crate) fn count_data(counts: host::RandomMaskCounts) -> TensorData {
    TensorData::new(vec![counts.masked as i64, counts.non_finite as i64], [2])
}

#[cfg(feature = "ndarray")]
impl MaskOps for burn::backend::NdArray {}
