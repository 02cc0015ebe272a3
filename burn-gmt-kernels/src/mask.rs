//! The one tensor-level interface of the mask: select thresholds, mask a gradient, hold masked
//! parameters still, count what a mask does, and read a step's statistics. burn-gmt reaches
//! the kernels through this module alone (and [`random`](crate::random)); backend
//! implementors implement [`MaskOps`], which these functions call.
//!
//! Every tensor here is a [`DispatchTensor`] on any backend. Thresholds are one-entry tensors
//! of the gradient's dtype on its device, so a device keeps them in its own memory from
//! selection to masking; statistics stay on the device ([`PendingStats`]) until
//! [`resolve_stats`] reads every one of a step at once.
//!
//! ```
//! use burn::tensor::{DType, Device, Tensor};
//! use burn_gmt_kernels::mask;
//!
//! let grad = Tensor::<1>::from_floats([0.5, -3.0, 0.0, 2.0, -1.0], &Device::flex());
//! // Mask the two smallest |g|: the threshold is the third smallest, 1.0.
//! let selection = mask::select_abs(&[grad.clone().into_dispatch()], 2, true);
//! let threshold = selection.thresholds[0].clone();
//! let masked = mask::mask_below(grad.into_dispatch(), threshold);
//! let masked = Tensor::<1>::from_dispatch(masked).into_data();
//! assert_eq!(masked.iter::<f32>().collect::<Vec<_>>(), [0.0, -3.0, 0.0, 2.0, -1.0]);
//!
//! let stats = mask::resolve_stats(selection.stats.unwrap());
//! assert_eq!((stats[0].total, stats[0].masked, stats[0].threshold), (5, 2, Some(1.0)));
//! assert_eq!(mask::key_bits(DType::F16), Some(16));
//! ```

use burn::backend::{Dispatch, DispatchTensor, TensorMetadata};
use burn::tensor::Tensor;

use crate::select::thresholds_on_devices;
use crate::stats::DeviceWords;
use crate::{GradList, MaskOps};

pub use crate::backend::{BackendNotBuilt, check_backend};
pub use crate::element::key_bits;
pub use crate::select::{
    Selection, SharedThreshold, select_abs, select_abs_each, threshold_tensor,
};
pub use crate::stats::{PendingStats, TensorStats, resolve_stats};

/// `grad` with the entries whose `|g|` is below `threshold` (a one-entry tensor of its dtype
/// on its device, at most `+inf`) zeroed; NaN and `±inf` are never masked. In place where the
/// backend can.
pub fn mask_below(grad: DispatchTensor, threshold: DispatchTensor) -> DispatchTensor {
    <Dispatch as MaskOps>::abs_threshold_mask(grad, threshold)
}

/// Each of `grads` masked as [`mask_below`] masks it, gradient `i` against entry `slots[i]`
/// of `thresholds` (a [`SharedThreshold`]'s tensor: gradients of one dtype on its device), in
/// one batched operation: on CubeCL one launch for all of them (per vector width in use and
/// per [`LIST_MAX_TENSORS`](crate::buffer::LIST_MAX_TENSORS) gradients), in place where the
/// backend can.
///
/// # Panics
/// If `grads` and `slots` differ in length or a slot is past `thresholds`.
pub fn mask_below_each(
    grads: Vec<DispatchTensor>,
    thresholds: DispatchTensor,
    slots: Vec<u32>,
) -> Vec<DispatchTensor> {
    if grads.is_empty() {
        return grads;
    }
    <Dispatch as MaskOps>::abs_threshold_mask_each(GradList::new(grads), thresholds, slots).tensors
}

/// `grad` with the finite entries drawn under `key` below `bound` zeroed
/// ([`random::is_drawn`](crate::random::is_drawn), by row-major index) and the kept finite
/// entries multiplied by `scale` (1: no rescaling).
pub fn mask_random(grad: DispatchTensor, key: u64, bound: u64, scale: f64) -> DispatchTensor {
    <Dispatch as MaskOps>::random_mask(grad, key, bound, scale)
}

/// `updated`, except that the entries whose `marker` `|m|` is below `threshold` take their
/// `previous` value: masked parameters do not move. `marker` is the gradient as masked (or any
/// tensor below the threshold exactly where the mask zeroed).
pub fn hold_below(
    marker: DispatchTensor,
    threshold: DispatchTensor,
    updated: DispatchTensor,
    previous: DispatchTensor,
) -> DispatchTensor {
    <Dispatch as MaskOps>::abs_threshold_select(marker, threshold, updated, previous)
}

/// `grad` with its `rank` smallest `|g|` masked (each zeroed, NaN ranking above `+inf` and
/// never masked, nor `±inf`): the per-tensor magnitude mask in one call.
#[derive(Debug, Clone)]
pub struct MaskedSmallest {
    /// The masked gradient.
    pub grad: DispatchTensor,
    /// The threshold it was masked against: entries whose `|g|` is below it were zeroed (a
    /// one-entry tensor of its dtype on its device, at most `+inf`), as
    /// [`select_abs`]`(&[grad], rank)` selects it.
    pub threshold: DispatchTensor,
    /// Its statistics, when collected: those [`select_abs`] gives.
    pub stats: Option<PendingStats>,
}

/// Masks the `rank` smallest `|g|` of `grad` (`rank` below its entries): selected and
/// written in one read-write pass where that is the backend's way ([`masks_in_one_pass`];
/// [`mask_smallest_in_one_pass`] forces it), else [`select_abs`] then [`mask_below`]. The
/// same mask, threshold and statistics either way.
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use burn_gmt_kernels::mask;
///
/// let grad = Tensor::<1>::from_floats([0.5, -3.0, 0.0, 2.0, -1.0], &Device::flex());
/// let masked = mask::mask_smallest(grad.into_dispatch(), 2, true);
/// let values = Tensor::<1>::from_dispatch(masked.grad).into_data();
/// assert_eq!(values.iter::<f32>().collect::<Vec<_>>(), [0.0, -3.0, 0.0, 2.0, -1.0]);
/// let stats = mask::resolve_stats(vec![masked.stats.unwrap()]);
/// assert_eq!((stats[0].masked, stats[0].threshold), (2, Some(1.0)));
/// ```
///
/// # Panics
/// If `grad` is not a float the mask supports, or `rank` is not below its entries.
pub fn mask_smallest(grad: DispatchTensor, rank: u64, collect: bool) -> MaskedSmallest {
    if masks_in_one_pass(&grad) {
        return mask_smallest_in_one_pass(grad, rank, collect);
    }
    let mut selection = select_abs(std::slice::from_ref(&grad), rank, collect);
    let threshold = selection.thresholds.remove(0);
    MaskedSmallest {
        grad: mask_below(grad, threshold.clone()),
        threshold,
        stats: selection.stats.map(|mut s| s.remove(0)),
    }
}

/// [`mask_smallest`] in one read-write pass ([`MaskOps::abs_key_mask_rank`]) whatever the
/// backend's default: on a backend without that way, through its host body (the tensor read
/// back). For benchmarks and backends that compare the two ways.
///
/// # Panics
/// As [`mask_smallest`].
pub fn mask_smallest_in_one_pass(grad: DispatchTensor, rank: u64, collect: bool) -> MaskedSmallest {
    let total = grad.shape().num_elements() as u64;
    assert!(
        rank < total,
        "gradient mask: rank {rank} of {total} entries"
    );
    let (masked, state) = <Dispatch as MaskOps>::abs_key_mask_rank(grad, rank);
    let threshold = <Dispatch as MaskOps>::radix_select_threshold(&masked, state.clone());
    let stats = collect
        .then(|| PendingStats::selected(&masked, DeviceWords::whole(Tensor::from_dispatch(state))));
    MaskedSmallest {
        grad: masked,
        threshold,
        stats,
    }
}

/// Whether [`mask_smallest`] masks `grad` in one read-write pass on its backend (see
/// [`SelectionCapabilities::one_pass_max_entries`](crate::SelectionCapabilities::one_pass_max_entries)):
/// the one place that decides, in the selection's routing.
pub fn masks_in_one_pass(grad: &DispatchTensor) -> bool {
    crate::select::route::one_pass(grad)
}

/// The statistics of `grad` masked against a threshold it did not select (a threshold kept
/// from an earlier step), counted in one pass on its device; `value` is the threshold's, when
/// known.
pub fn count_below(
    grad: &DispatchTensor,
    threshold: &DispatchTensor,
    value: Option<f64>,
) -> PendingStats {
    let stats = PendingStats::counted_below(grad, threshold);
    match value {
        Some(value) => stats.with_threshold(value),
        None => stats,
    }
}

/// The statistics of what [`mask_random`] under `(key, bound)` does to `grad`, counted in one
/// pass on its device; no threshold value.
pub fn count_random(grad: &DispatchTensor, key: u64, bound: u64) -> PendingStats {
    let counts = <Dispatch as MaskOps>::random_mask_count(grad, key, bound);
    PendingStats::counted(grad, Tensor::from_dispatch(counts))
}

/// Statistics of gradients left whole (`frozen: false`: nothing masked) or frozen (every
/// finite entry masked), each counted in one pass against a threshold of 0 or `+inf`; no
/// threshold value.
pub fn count_unselected(grads: &[DispatchTensor], frozen: bool) -> Vec<PendingStats> {
    let Some(first) = grads.first() else {
        return Vec::new();
    };
    let value = if frozen { f64::INFINITY } else { 0.0 };
    thresholds_on_devices(grads, value, first.dtype())
        .iter()
        .zip(grads)
        .map(|(threshold, grad)| PendingStats::counted_below(grad, threshold))
        .collect()
}

// On the Flex CPU backend.
#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use crate::random::ratio_bound;
    use crate::test_values::{gradient, mixed_values as values};
    use burn::tensor::{DType, Device};

    #[test]
    fn unselected_gradients_count_nothing_or_every_finite_entry() {
        let values = values(3_000, 9);
        let grad = gradient(&values, DType::F32);
        let non_finite = values.iter().filter(|x| !x.is_finite()).count() as u64;
        assert!(non_finite > 0);
        let counts =
            |frozen| resolve_stats(count_unselected(std::slice::from_ref(&grad), frozen)).remove(0);
        let expected = |masked| TensorStats {
            total: 3_000,
            masked,
            non_finite,
            threshold: None,
            norms_sq: None,
        };
        assert_eq!(counts(false), expected(0));
        assert_eq!(counts(true), expected(3_000 - non_finite));
    }

    /// Counts, a threshold value and norms of several gradients come back together, each
    /// with its own gradient's, and the counts agree with the masks they describe.
    #[test]
    fn a_step_of_statistics_resolves_together() {
        let values = values(2_000, 4);
        let grad = gradient(&values, DType::F32);
        let threshold = threshold_tensor(0.5, DType::F32, &Device::flex());
        let bound = ratio_bound(0.25);
        let zeros = |t: DispatchTensor| {
            let data = Tensor::<1>::from_dispatch(t).into_data();
            data.iter::<f32>().filter(|x| *x == 0.0).count() as u64
        };
        let zero_before = values.iter().filter(|x| **x == 0.0).count() as u64;
        let norms = Tensor::<1>::from_floats([4.0, 1.5], &Device::flex());
        let pending = vec![
            count_below(&grad, &threshold, Some(0.5)).with_norms(norms),
            count_random(&grad, 7, bound),
            PendingStats::known(TensorStats {
                total: 3,
                masked: 1,
                ..TensorStats::default()
            })
            .with_threshold(2.0),
        ];
        let [below, random, known]: [TensorStats; 3] = resolve_stats(pending).try_into().unwrap();
        assert_eq!(
            (below.threshold, below.norms_sq),
            (Some(0.5), Some((4.0, 1.5)))
        );
        assert_eq!(random.threshold, None);
        assert_eq!(random.norms_sq, None);
        let masked_below = zeros(mask_below(grad.clone(), threshold.clone()));
        let masked_random = zeros(mask_random(grad.clone(), 7, bound, 1.0));
        // Zeros already in the gradient are masked by the threshold, and may be drawn or not.
        assert_eq!(below.masked, masked_below);
        assert!(random.masked <= masked_random && masked_random <= random.masked + zero_before);
        assert_eq!((below.total, random.total), (2_000, 2_000));
        assert_eq!(below.non_finite, random.non_finite);
        assert_eq!(
            (known.total, known.masked, known.threshold),
            (3, 1, Some(2.0))
        );
    }

    /// Held entries take their previous value exactly where the masked gradient is below the
    /// threshold.
    #[test]
    fn held_entries_are_those_the_mask_zeroed() {
        let flex = Device::flex();
        let grad = Tensor::<1>::from_floats([0.1, -2.0, 0.3, 4.0], &flex).into_dispatch();
        let threshold = threshold_tensor(0.5, DType::F32, &flex);
        let masked = mask_below(grad, threshold.clone());
        let updated = Tensor::<1>::from_floats([1.0, 2.0, 3.0, 4.0], &flex).into_dispatch();
        let previous = Tensor::<1>::from_floats([9.0, 9.0, 9.0, 9.0], &flex).into_dispatch();
        let held = hold_below(masked, threshold, updated, previous);
        let held = Tensor::<1>::from_dispatch(held).into_data();
        assert_eq!(held.iter::<f32>().collect::<Vec<_>>(), [9.0, 2.0, 9.0, 4.0]);
    }
}
