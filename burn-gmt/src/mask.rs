//! What a decided mask does to one parameter tensor: masking its gradient, and holding its
//! masked entries still. Shared by the optimizer wrapper and [`GradMask`](crate::GradMask);
//! deciding the mask is [`crate::plan`]'s.

use std::collections::HashMap;
use std::sync::Arc;

use burn::backend::DispatchTensor;
use burn::module::ParamId;
use burn::tensor::{DType, Device, Tensor};

use crate::error::GradMaskError;
use burn_gmt_kernels::mask::{
    self as kernels, PendingStats, SharedThreshold, check_backend, key_bits, threshold_tensor,
};

/// What the mask does to one parameter tensor at one step.
#[derive(Debug, Clone)]
pub(crate) enum TensorMask {
    /// Nothing is masked: the gradient passes through untouched.
    Keep,
    /// Entries whose `|g|` is below `threshold` (a one-entry tensor of the gradient's dtype
    /// on its device, at most `+inf`) are masked, never NaN or `±inf`.
    Below { threshold: DispatchTensor },
    /// The `rank` smallest `|g|` are masked (never NaN or `±inf`), selected while the mask
    /// is written, in one read-write pass ([`kernels::mask_smallest`]); applying it resolves
    /// it into the `Below` of the threshold it selected ([`Applied::mask`]).
    Smallest { rank: u64 },
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

/// A mask applied to one gradient.
pub(crate) struct Applied<const D: usize> {
    /// The gradient with its masked entries zeroed (in place when the backend can).
    pub grad: Tensor<D>,
    /// The mask as applied: a [`TensorMask::Smallest`] resolved into the `Below` of the
    /// threshold it selected, any other as it was (what holding and reselection reuse).
    pub mask: TensorMask,
    /// The statistics a `Smallest` mask counted while it was applied, when collected (the
    /// others' come with their plan).
    pub stats: Option<PendingStats>,
    /// With `norms`: `[‖g‖², ‖kept‖²]` over the finite entries (the kept part before the
    /// random mask's rescale).
    pub norms_sq: Option<Tensor<1>>,
}

/// Applies `mask` to `grad`, measuring its norms with `norms` and, for a `Smallest` mask,
/// collecting its statistics with `collect`.
pub(crate) fn mask_measured<const D: usize>(
    grad: Tensor<D>,
    mask: TensorMask,
    norms: bool,
    collect: bool,
) -> Applied<D> {
    let before = norms.then(|| finite_square_sum(&grad));
    let unscale = match &mask {
        TensorMask::Random { scale, .. } => 1.0 / (scale * scale),
        _ => 1.0,
    };
    let (masked, mask, stats) = mask_gradient(grad, mask, collect);
    let norms_sq = before.map(|before| {
        let after = finite_square_sum(&masked).mul_scalar(unscale);
        Tensor::cat(vec![before, after], 0)
    });
    Applied {
        grad: masked,
        mask,
        stats,
        norms_sq,
    }
}

/// The gradients of `taken` masked below their shared thresholds, one call per batch (the
/// gradients whose thresholds are entries of one tensor: [`kernels::mask_below_each`]), by
/// parameter.
pub(crate) fn mask_below_batched(
    taken: Vec<(ParamId, DispatchTensor, SharedThreshold)>,
) -> HashMap<ParamId, DispatchTensor> {
    type Member = (ParamId, DispatchTensor, u32);
    let mut batches: Vec<(Arc<DispatchTensor>, Vec<Member>)> = Vec::new();
    for (id, grad, shared) in taken {
        let member = (id, grad, shared.slot);
        match batches
            .iter_mut()
            .find(|(thresholds, _)| Arc::ptr_eq(thresholds, &shared.thresholds))
        {
            Some((_, members)) => members.push(member),
            None => batches.push((shared.thresholds, vec![member])),
        }
    }
    let mut masked = HashMap::new();
    for (thresholds, members) in batches {
        let mut ids = Vec::with_capacity(members.len());
        let mut grads = Vec::with_capacity(members.len());
        let mut slots = Vec::with_capacity(members.len());
        for (id, grad, slot) in members {
            ids.push(id);
            grads.push(grad);
            slots.push(slot);
        }
        let done = kernels::mask_below_each(grads, (*thresholds).clone(), slots);
        masked.extend(ids.into_iter().zip(done));
    }
    masked
}

/// The sum of the squares of the finite entries, in f32 (an f16 square overflows at 256).
fn finite_square_sum<const D: usize>(grad: &Tensor<D>) -> Tensor<1> {
    let g = grad.clone().cast(DType::F32);
    let non_finite = g.clone().is_finite().bool_not();
    (g.clone() * g).mask_fill(non_finite, 0.0).sum()
}

/// The gradient with its masked entries zeroed (in place when the backend can), the mask as
/// applied and, for a `Smallest` mask with `collect`, its statistics.
fn mask_gradient<const D: usize>(
    grad: Tensor<D>,
    mask: TensorMask,
    collect: bool,
) -> (Tensor<D>, TensorMask, Option<PendingStats>) {
    let masked =
        match &mask {
            TensorMask::Keep => grad,
            // Callers withhold a frozen tensor's gradient; a zero one is its masked form.
            TensorMask::Frozen => grad.zeros_like(),
            TensorMask::Below { threshold } => {
                Tensor::from_dispatch(kernels::mask_below(grad.into_dispatch(), threshold.clone()))
            }
            TensorMask::Random { key, bound, scale } => Tensor::from_dispatch(
                kernels::mask_random(grad.into_dispatch(), *key, *bound, *scale),
            ),
            &TensorMask::Smallest { rank } => {
                let masked = kernels::mask_smallest(grad.into_dispatch(), rank, collect);
                let below = TensorMask::Below {
                    threshold: masked.threshold,
                };
                return (Tensor::from_dispatch(masked.grad), below, masked.stats);
            }
        };
    (masked, mask, None)
}

/// `updated`, with the masked entries put back to `previous` (for
/// [`MaskTarget::Update`](crate::MaskTarget::Update)). `masked_grad` and `mask` are the
/// gradient and the mask as [`mask_measured`] applied them ([`Applied`]).
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
        TensorMask::Smallest { .. } => {
            unreachable!("gradient mask: a mask is held as applied, its threshold selected")
        }
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
