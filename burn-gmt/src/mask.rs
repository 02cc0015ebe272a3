//! What the mask does to one parameter tensor: deciding, masking the gradient, and holding
//! masked parameters still. Shared by the optimizer wrapper and the module-level mask.

use burn::backend::{Dispatch, DispatchTensor, TensorMetadata};
use burn::tensor::{DType, Device, Float, Tensor};
use burn_gmt_kernels::MaskOps;
use burn_gmt_kernels::element::key_bits;
use burn_gmt_kernels::random::{draw_key, ratio_bound};

use crate::config::MaskStrategy;
use crate::error::GradMaskError;
use crate::select::masked_count;
use crate::stats::TensorMaskStats;
use burn_gmt_kernels::select::{
    self, PendingStats, read_per_device, resolve_stats, threshold_tensor,
};

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

/// A decided mask with the statistics that came with deciding it.
pub(crate) struct Plan {
    pub mask: TensorMask,
    /// Collected statistics, possibly still on the device.
    pub stats: Option<PendingStats>,
}

/// A tensor's statistics at one step, possibly still on the device.
#[derive(Debug, Clone)]
pub(crate) struct PendingTensorStats {
    pub counts: PendingStats,
    /// With `collect_norms`: `[‖g‖², ‖kept‖²]` over the finite entries, f32 on the
    /// gradient's device.
    pub norms_sq: Option<Tensor<1>>,
}

/// Pending statistics, each named by its parameter, with every device-side value of the
/// step read back at once (counts in one read per device, norms in another).
pub(crate) fn resolve_named(named: Vec<(String, PendingTensorStats)>) -> Vec<TensorMaskStats> {
    let (params, pending): (Vec<_>, Vec<_>) = named.into_iter().unzip();
    let (counts, norms): (Vec<_>, Vec<_>) =
        pending.into_iter().map(|p| (p.counts, p.norms_sq)).unzip();
    let norms = read_norms(norms);
    resolve_stats(counts)
        .into_iter()
        .zip(norms)
        .zip(params)
        .map(|(((c, threshold), norms_sq), param)| TensorMaskStats {
            param,
            total: c.total,
            masked: c.masked,
            kept: c.total - c.masked,
            non_finite: c.non_finite,
            threshold,
            norms_sq,
        })
        .collect()
}

/// The `[‖g‖², ‖kept‖²]` pairs, read with one read per device.
fn read_norms(norms: Vec<Option<Tensor<1>>>) -> Vec<Option<(f64, f64)>> {
    let measured = norms.iter().flatten().cloned().collect();
    let mut values = read_per_device::<Float, f64>(measured).into_iter();
    norms
        .iter()
        .map(|pair| {
            pair.as_ref()?;
            let pair = values.next().expect("values per measured tensor");
            Some((pair[0], pair[1]))
        })
        .collect()
}

/// Checks that a gradient's dtype can be ranked, and computed with on its device: the
/// earliest point to refuse it, before any kernel is built for it.
pub(crate) fn check_dtype(
    dtype: DType,
    device: &Device,
    param: impl FnOnce() -> String,
) -> Result<(), GradMaskError> {
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

/// Decides the mask of one tensor on its own (per-tensor scope, or the optimizer wrapper).
///
/// `stream` identifies the parameter for the random draws; `step` is the optimizer step.
pub(crate) fn plan_tensor(
    strategy: MaskStrategy,
    grad: &DispatchTensor,
    ratio: f64,
    stream: u64,
    step: u64,
    collect_stats: bool,
) -> Plan {
    match strategy {
        MaskStrategy::Magnitude => {
            plan_magnitude(std::slice::from_ref(grad), ratio, collect_stats).remove(0)
        }
        MaskStrategy::Random { seed, rescale } => {
            let key = draw_key(seed, stream, step);
            let bound = ratio_bound(ratio);
            let scale = if rescale && ratio > 0.0 {
                1.0 / (1.0 - ratio)
            } else {
                1.0
            };
            let mask = if ratio > 0.0 {
                TensorMask::Random { key, bound, scale }
            } else {
                TensorMask::Keep
            };
            // Counted on the device, read with the rest of the step's statistics.
            let stats = collect_stats.then(|| {
                let counts = <Dispatch as MaskOps>::random_mask_count(grad, key, bound);
                PendingStats::counted(grad, Tensor::from_dispatch(counts))
            });
            Plan { mask, stats }
        }
        // Validation and the wrapper's constructor route HFT to the module-level plan.
        MaskStrategy::Hft { .. } => {
            unreachable!("HFT is planned per block by GradMask, which sees the module")
        }
    }
}

/// The magnitude masks of `grads`, each with its own threshold (per-tensor scope), their
/// selections made together ([`select::select_abs_each`]: on a GPU the steps that read no
/// gradient are one launch for all of them). A tensor too small for `ratio` (rank 0) keeps
/// its gradient.
pub(crate) fn plan_magnitude(
    grads: &[DispatchTensor],
    ratio: f64,
    collect_stats: bool,
) -> Vec<Plan> {
    let ranks: Vec<u64> = grads
        .iter()
        .map(|g| masked_count(ratio, g.shape().num_elements() as u64))
        .collect();
    let (selected, selected_ranks): (Vec<DispatchTensor>, Vec<u64>) = grads
        .iter()
        .zip(&ranks)
        .filter(|(_, rank)| **rank > 0)
        .map(|(g, &rank)| (g.clone(), rank))
        .unzip();
    let selection = select::select_abs_each(&selected, &selected_ranks, collect_stats);
    let mut thresholds = selection.thresholds.into_iter();
    let mut stats = selection.stats.map(|s| s.into_iter());
    grads
        .iter()
        .zip(&ranks)
        .map(|(grad, &rank)| match rank {
            0 => Plan {
                mask: TensorMask::Keep,
                stats: collect_stats
                    .then(|| select::count_unselected(std::slice::from_ref(grad), false).remove(0)),
            },
            _ => Plan {
                mask: TensorMask::Below {
                    threshold: thresholds
                        .next()
                        .expect("a threshold per selected gradient"),
                },
                stats: stats
                    .as_mut()
                    .map(|s| s.next().expect("statistics per selected gradient")),
            },
        })
        .collect()
}

/// The plan of a tensor masked again as an earlier step decided (`reselect_every`): the same
/// threshold (of value `value`, when known), its statistics counted anew.
pub(crate) fn plan_reused(
    grad: &DispatchTensor,
    mask: TensorMask,
    value: Option<f64>,
    collect_stats: bool,
) -> Plan {
    let stats = collect_stats.then(|| match &mask {
        TensorMask::Below { threshold } => select::count_against(grad, threshold, value),
        _ => select::count_unselected(std::slice::from_ref(grad), false).remove(0),
    });
    Plan { mask, stats }
}

/// The plan of a tensor frozen (every finite entry counted as masked) or left alone for an
/// HFT stage.
pub(crate) fn plan_frozen(grad: &DispatchTensor, frozen: bool, collect_stats: bool) -> Plan {
    let stats = collect_stats
        .then(|| select::count_unselected(std::slice::from_ref(grad), frozen).remove(0));
    match frozen {
        true => Plan {
            mask: TensorMask::Frozen,
            stats: stats.map(|s| s.with_threshold(f64::INFINITY)),
        },
        false => Plan {
            mask: TensorMask::Keep,
            stats,
        },
    }
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
        TensorMask::Below { threshold } => Tensor::from_dispatch(
            <Dispatch as MaskOps>::abs_threshold_mask(grad.into_dispatch(), threshold),
        ),
        TensorMask::Random { key, bound, scale } => Tensor::from_dispatch(
            <Dispatch as MaskOps>::random_mask(grad.into_dispatch(), key, bound, scale),
        ),
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
            let drawn = <Dispatch as MaskOps>::random_mask(
                masked_grad.ones_like().into_dispatch(),
                key,
                bound,
                1.0,
            );
            let marker = Tensor::<D>::from_dispatch(drawn) + (masked_grad.clone() - masked_grad);
            let half = threshold_tensor(0.5, marker.dtype(), &marker.device());
            (marker, half)
        }
    };
    Tensor::from_dispatch(<Dispatch as MaskOps>::abs_threshold_select(
        marker.into_dispatch(),
        threshold,
        updated.into_dispatch(),
        previous.into_dispatch(),
    ))
}
