//! What a decided mask does to one parameter tensor: masking its gradient, and holding its
//! masked entries still. Shared by the optimizer wrapper and [`GradMask`](crate::GradMask);
//! deciding the mask is [`crate::plan`]'s.

use burn::backend::DispatchTensor;
use burn::tensor::{DType, Device, Tensor};

use crate::error::GradMaskError;
use burn_gmt_kernels::mask::{self as kernels, check_backend, key_bits, threshold_tensor};

/// What the mask does to one parameter tensor at one step.
#[derive(Debug, Clone)]
pub(crate) enum TensorMask {
    /// Nothing is masked: the gradient passes through untouched.
    Keep,
    /// Entries whose `|g|` is below `threshold` (a one-entry tensor of the gradient's dtype
    /// on its device, at most `+inf`) are masked, never NaN or `±inf`.
    Below { threshold: DispatchTensor },
    /// Finite entries drawn below `bound` under `key` are masked; kept ones are scaled.
    Random { key: u64, bound: u64, scale: f64 },
    /// The whole tensor is frozen (HFT): its gradient is withheld from the optimizer, so
    /// neither the parameter nor its optimizer state moves.
    Frozen,
}

/// Checks that a gradient's backend is one this build serves, and that its dtype can be
/// ranked and computed with on its device: the earliest point to refuse it, before any kernel
/// is built for it (a backend left out would reach the backend extension's `unimplemented!`).
pub(crate) fn check_gradient(
    dtype: DType,
    device: &Device,
    param: impl FnOnce() -> String,
) -> Result<(), GradMaskError> {
    if let Err(not_built) = check_backend(device) {
        return Err(GradMaskError::BackendNotBuilt {
            param: param(),
            backend: not_built.backend,
            feature: not_built.feature,
        });
    }
    if key_bits(dtype).is_none() {
        return Err(GradMaskError::UnsupportedDType {
            param: param(),
            dtype: format!("{dtype:?}"),
        });
    }
    if !device.supports_dtype(dtype) {
        return Err(GradMaskError::DTypeNotOnDevice {
            param: param(),
            dtype: format!("{dtype:?}"),
            device: format!("{device:?}"),
        });
    }
    Ok(())
}

/// The gradient with its masked entries zeroed as [`mask_gradient`] does and, with `norms`,
/// `[‖g‖², ‖kept‖²]` over its finite entries (the kept part before the random mask's rescale).
pub(crate) fn mask_measured<const D: usize>(
    grad: Tensor<D>,
    mask: TensorMask,
    norms: bool,
) -> (Tensor<D>, Option<Tensor<1>>) {
    if !norms {
        return (mask_gradient(grad, mask), None);
    }
    let before = finite_square_sum(&grad);
    let unscale = match &mask {
        TensorMask::Random { scale, .. } => 1.0 / (scale * scale),
        _ => 1.0,
    };
    let masked = mask_gradient(grad, mask);
    let after = finite_square_sum(&masked).mul_scalar(unscale);
    (masked, Some(Tensor::cat(vec![before, after], 0)))
}

/// The sum of the squares of the finite entries, in f32 (an f16 square overflows at 256).
fn finite_square_sum<const D: usize>(grad: &Tensor<D>) -> Tensor<1> {
    let g = grad.clone().cast(DType::F32);
    let non_finite = g.clone().is_finite().bool_not();
    (g.clone() * g).mask_fill(non_finite, 0.0).sum()
}

/// The gradient with its masked entries zeroed (in place when the backend can).
fn mask_gradient<const D: usize>(grad: Tensor<D>, mask: TensorMask) -> Tensor<D> {
    match mask {
        TensorMask::Keep => grad,
        // Callers withhold a frozen tensor's gradient; a zero one is its masked form.
        TensorMask::Frozen => grad.zeros_like(),
        TensorMask::Below { threshold } => {
            Tensor::from_dispatch(kernels::mask_below(grad.into_dispatch(), threshold))
        }
        TensorMask::Random { key, bound, scale } => Tensor::from_dispatch(kernels::mask_random(
            grad.into_dispatch(),
            key,
            bound,
            scale,
        )),
    }
}

/// `updated`, with the masked entries put back to `previous` (for
/// [`MaskTarget::Update`](crate::MaskTarget::Update)). `masked_grad` is the gradient as
/// [`mask_gradient`] returned it.
pub(crate) fn hold_masked<const D: usize>(
    updated: Tensor<D>,
    previous: Tensor<D>,
    masked_grad: Tensor<D>,
    mask: TensorMask,
) -> Tensor<D> {
    let (marker, threshold) = match mask {
        TensorMask::Keep => return updated,
        TensorMask::Frozen => return previous,
        // An entry was masked exactly when its masked gradient is below the same threshold:
        // masked entries are 0 < T, kept ones keep |g| >= T (and with T = 0 nothing is).
        TensorMask::Below { threshold } => (masked_grad, threshold),
        // 0 where drawn, 1 elsewhere; `g - g` turns non-finite entries (never masked) to NaN.
        TensorMask::Random { key, bound, .. } => {
            let drawn =
                kernels::mask_random(masked_grad.ones_like().into_dispatch(), key, bound, 1.0);
            let marker = Tensor::<D>::from_dispatch(drawn) + (masked_grad.clone() - masked_grad);
            let half = threshold_tensor(0.5, marker.dtype(), &marker.device());
            (marker, half)
        }
    };
    Tensor::from_dispatch(kernels::hold_below(
        marker.into_dispatch(),
        threshold,
        updated.into_dispatch(),
        previous.into_dispatch(),
    ))
}
