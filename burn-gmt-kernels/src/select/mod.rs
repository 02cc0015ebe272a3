//! The exact selection of the k-th smallest `|g|` over one or several gradients, driven over
//! [`MaskOps`] for any backend: what a caller sees is a threshold per gradient and its
//! statistics, possibly still on the device ([`PendingStats`], read for a whole step at once
//! by [`resolve_stats`](crate::stats::resolve_stats)).
//!
//! Every way is O(n), exact, and copies no gradient. A radix pass histograms one 16-bit digit
//! of the key of every entry whose higher digits match the prefix chosen so far, and a scan of
//! the (summed) histogram picks the next digit: an f32 gradient needs 2 passes, f16/bf16 one,
//! f64 four. A sampled bracket reads every entry once, counts those below it and keeps the few
//! percent inside it, which are selected directly. Several gradients (a global threshold) are
//! selected together: their histograms summed, or their bracket scans merged.
//!
//! Which way a selection goes is the backend's to say ([`MaskOps::selection_capabilities`]),
//! never a match on the device kind (`route.rs`):
//! - **One step**: a lone gradient the backend selects in one call
//!   ([`MaskOps::abs_key_select`]): any size on a CPU backend (one read of its storage in the
//!   common case), small tensors on a GPU (one launch).
//! - **Device steps**: on a device that selects in its own memory (CubeCL: CUDA, ROCm, wgpu),
//!   a selection buffer collects the histograms of every gradient, a digit step picks the
//!   digit and clears it, and the threshold is written to a one-entry tensor the mask kernels
//!   read. Nothing is read back unless statistics are collected, and then once per step. The
//!   per-tensor selections of a whole step ([`select_abs_each`]) share one buffer, a segment
//!   each: the start, each digit step and the threshold write serve all of them at once.
//! - **Host bracket**: several gradients in host memory (a global threshold on the CPU, on one
//!   device or several): a sample drawn from each in proportion to its size brackets the rank,
//!   one read of each counts it against the bracket and keeps its few keys inside
//!   ([`MaskOps::abs_key_sample`], [`MaskOps::abs_key_bracket`]), and those are selected on the
//!   host; a bracket that misses (rarely) falls back to the host passes. The algorithm is the
//!   one a CPU backend selects a lone tensor with ([`host::select_parts`]), the gradients its
//!   parts (`tensors.rs`).
//! - **Host passes**: otherwise (f64 or 2^32 entries and more on a GPU, gradients on several
//!   GPUs), the host drives the radix passes, reading each pass's histograms back (one read
//!   per device) and merging them ([`host::select_by_radix`]); no gradient leaves its device.

mod device;
pub(crate) mod route;
mod tensors;

use std::sync::Arc;

use burn::backend::{Dispatch, DispatchTensor, TensorMetadata};
use burn::tensor::{DType, Device, Tensor};

use crate::buffer::SELECTION_MAX_SEGMENTS;
use crate::element::{inf_key, key_to_f64};
use crate::stats::{DeviceWords, PendingStats, TensorStats};
use crate::{MaskOps, host};
use device::{device_steps, segment_states};
use route::{Route, host_memory, route, total_entries};

pub use tensors::threshold_tensor;
pub(crate) use tensors::thresholds_on_devices;

/// The outcome of a selection.
#[derive(Debug, Clone)]
pub struct Selection {
    /// The threshold `T` for each gradient, in input order: a one-entry tensor of the
    /// gradients' dtype on that gradient's device (one tensor per device). Entries whose `|g|`
    /// is below it are masked. At most `+inf`, so non-finite entries are never masked.
    pub thresholds: Vec<DispatchTensor>,
    /// Per gradient, in input order, when statistics are collected.
    pub stats: Option<Vec<PendingStats>>,
    /// Per gradient, in input order: its threshold as an entry of a tensor of the thresholds
    /// of gradients selected together on a device, when it is one. Their masks can then be
    /// one batched operation ([`mask_below_each`](crate::mask::mask_below_each)).
    pub shared: Vec<Option<SharedThreshold>>,
}

/// A gradient's threshold as entry `slot` of `thresholds`, the threshold tensor of gradients
/// selected together on one device (one segment each of a selection buffer, or one threshold
/// for all of them).
#[derive(Debug, Clone)]
pub struct SharedThreshold {
    /// The thresholds, shared by every gradient of the batch (compare with
    /// [`Arc::ptr_eq`]).
    pub thresholds: Arc<DispatchTensor>,
    /// The gradient's entry.
    pub slot: u32,
}

/// Selects the `(rank + 1)`-th smallest `|g|` over `grads` (all of one supported float dtype,
/// with `rank` below their total entry count), NaN ranking above `+inf`. With `collect`,
/// each gradient's masked and non-finite entries are counted against it and the threshold's
/// value is read (one read-back on a device; free on the host).
///
/// # Panics
/// If `grads` is empty, their dtypes differ or are not floats the mask supports, or `rank`
/// is not below their entries.
pub fn select_abs(grads: &[DispatchTensor], rank: u64, collect: bool) -> Selection {
    let dtype = grads[0].dtype();
    assert!(
        grads.iter().all(|g| g.dtype() == dtype),
        "gradient mask: one selection takes gradients of one dtype"
    );
    check_rank(grads, rank);
    select_routed(grads, dtype, rank, collect, route(grads, dtype))
}

/// Refuses a rank past the entries of `grads`.
fn check_rank(grads: &[DispatchTensor], rank: u64) {
    assert!(
        rank < total_entries(grads),
        "gradient mask: rank {rank} of {} entries",
        total_entries(grads)
    );
}

/// [`select_abs`] along `route`, the one [`route`] picked for `grads`.
fn select_routed(
    grads: &[DispatchTensor],
    dtype: DType,
    rank: u64,
    collect: bool,
    route: Route,
) -> Selection {
    match route {
        Route::OneStep => select_one(&grads[0], rank, collect),
        Route::DeviceSteps => select_on_device(grads, dtype, rank, collect),
        Route::HostBracket => select_on_host(grads, host::select_parts(grads, rank), collect),
        Route::HostPasses => select_on_host(grads, host::select_by_radix(grads, rank), collect),
    }
}

/// One gradient selected in one call, straight to the state words, which also give its
/// statistics.
fn select_one(grad: &DispatchTensor, rank: u64, collect: bool) -> Selection {
    let state = <Dispatch as MaskOps>::abs_key_select(grad, rank);
    let threshold = <Dispatch as MaskOps>::radix_select_threshold(grad, state.clone());
    let state = DeviceWords::whole(Tensor::from_dispatch(state));
    let stats = collect.then(|| vec![PendingStats::selected(grad, state)]);
    Selection {
        thresholds: vec![threshold],
        stats,
        shared: vec![None],
    }
}

/// The selection steps on the device (see the module docs): `2` histogram passes per f32
/// gradient, `1` per f16/bf16 gradient, one digit step per pass and one threshold write,
/// with no read-back unless `collect`.
fn select_on_device(grads: &[DispatchTensor], dtype: DType, rank: u64, collect: bool) -> Selection {
    let selection = device_steps(&[grads.iter().collect()], vec![rank], dtype);
    let threshold = <Dispatch as MaskOps>::radix_select_threshold(&grads[0], selection.clone());
    // Statistics stay on the device until `resolve_stats` reads the whole step's at once.
    let stats = collect.then(|| {
        let state = DeviceWords::whole(segment_states(selection, 1));
        if let [grad] = grads {
            // One gradient: the selection's own state holds its statistics.
            return vec![PendingStats::selected(grad, state)];
        }
        grads
            .iter()
            .map(|g| PendingStats::counted_selected(g, &threshold, state.clone(), dtype))
            .collect()
    });
    let shared = SharedThreshold {
        thresholds: Arc::new(threshold.clone()),
        slot: 0,
    };
    Selection {
        thresholds: vec![threshold; grads.len()],
        stats,
        shared: vec![Some(shared); grads.len()],
    }
}

/// A selection made on the host ([`host::select_parts`] or [`host::select_by_radix`] of
/// `grads`): its threshold written to each gradient's device, its counts known.
fn select_on_host(
    grads: &[DispatchTensor],
    selected: host::PartsSelection,
    collect: bool,
) -> Selection {
    let dtype = grads[0].dtype();
    let inf = inf_key(dtype).expect("a supported float dtype");
    let value = key_to_f64(dtype, selected.state.key.min(inf)).expect("a supported float dtype");
    let stats = grads.iter().zip(selected.counts).map(|(grad, counts)| {
        PendingStats::known(TensorStats {
            total: grad.shape().num_elements() as u64,
            masked: counts.masked,
            non_finite: counts.non_finite,
            threshold: Some(value),
            norms_sq: None,
        })
    });
    Selection {
        thresholds: thresholds_on_devices(grads, value, dtype),
        stats: collect.then(|| stats.collect()),
        shared: vec![None; grads.len()],
    }
}

/// Selects, for each of `grads` on its own, the `(ranks[i] + 1)`-th smallest `|g|` of that
/// gradient (each rank below its gradient's entries): the per-tensor thresholds of a whole
/// step, as [`select_abs`] of each gradient alone would give them, with the same statistics.
///
/// The gradients a device selects in its own memory are selected together, in one selection
/// buffer per device and dtype (a segment each, at most [`SELECTION_MAX_SEGMENTS`] per
/// buffer): the start, each histogram pass over all of them
/// ([`MaskOps::radix_select_count_each`]), each digit step and the threshold write are one
/// call for all of them, so a step's launches do not grow with its number of tensors; the
/// small tensors one launch would select alone join them when there are several. Their
/// thresholds are entries of one tensor ([`Selection::shared`]), so their masks can be one
/// call too. The others (the CPU backends, dtypes the device steps do not take) go their own
/// way, as in [`select_abs`].
///
/// # Panics
/// If `grads` and `ranks` differ in length, or a gradient is not a float the mask supports, or
/// its rank is not below its entries.
pub fn select_abs_each(grads: &[DispatchTensor], ranks: &[u64], collect: bool) -> Selection {
    assert_eq!(
        grads.len(),
        ranks.len(),
        "gradient mask: one rank per gradient"
    );
    let mut thresholds: Vec<Option<DispatchTensor>> = vec![None; grads.len()];
    let mut stats: Vec<Option<PendingStats>> = vec![None; grads.len()];
    let mut shared: Vec<Option<SharedThreshold>> = vec![None; grads.len()];
    // Gradients for the device steps, by device and dtype.
    let mut batches: Vec<((Device, DType), Vec<usize>)> = Vec::new();
    for (i, (grad, &rank)) in grads.iter().zip(ranks).enumerate() {
        let dtype = grad.dtype();
        let alone = std::slice::from_ref(grad);
        check_rank(alone, rank);
        let route = route(alone, dtype);
        // On a device, a tensor small enough for one launch joins the others too: the batched
        // launches cost the same with it, where alone it would add launches of its own (off
        // the host, a one-step route is one the device steps take too).
        let batched = route == Route::DeviceSteps
            || (route == Route::OneStep && grads.len() > 1 && !host_memory(grad));
        if batched {
            let key = (Device::from(grad.device()), dtype);
            match batches.iter_mut().find(|(k, _)| *k == key) {
                Some((_, members)) => members.push(i),
                None => batches.push((key, vec![i])),
            }
            continue;
        }
        let mut selection = select_routed(alone, dtype, rank, collect, route);
        thresholds[i] = Some(selection.thresholds.remove(0));
        stats[i] = selection.stats.map(|mut s| s.remove(0));
        shared[i] = selection.shared.remove(0);
    }
    for ((_, dtype), members) in batches {
        for batch in members.chunks(SELECTION_MAX_SEGMENTS) {
            let batch_grads: Vec<Vec<&DispatchTensor>> =
                batch.iter().map(|&i| vec![&grads[i]]).collect();
            let batch_ranks = batch.iter().map(|&i| ranks[i]).collect();
            let selection = device_steps(&batch_grads, batch_ranks, dtype);
            let like = &grads[batch[0]];
            let all = <Dispatch as MaskOps>::radix_select_threshold(like, selection.clone());
            let values = Tensor::<1>::from_dispatch(all.clone());
            let all = Arc::new(all);
            // One table of state words for the batch, read once for all its gradients.
            let states = collect.then(|| Arc::new(segment_states(selection, batch.len())));
            for (segment, &i) in batch.iter().enumerate() {
                let threshold = values.clone().slice(segment..segment + 1);
                thresholds[i] = Some(threshold.into_dispatch());
                shared[i] = Some(SharedThreshold {
                    thresholds: all.clone(),
                    slot: segment as u32,
                });
                stats[i] = states.as_ref().map(|states| {
                    PendingStats::selected(&grads[i], DeviceWords::state_of(states, segment))
                });
            }
        }
    }
    Selection {
        thresholds: thresholds
            .into_iter()
            .map(|t| t.expect("every gradient selected"))
            .collect(),
        stats: collect.then(|| {
            stats
                .into_iter()
                .map(|s| s.expect("statistics of every gradient"))
                .collect()
        }),
        shared,
    }
}

// On the Flex CPU backend: the device steps run through its host bodies there.
#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::route::Forced;
    use super::*;
    use crate::element::MaskElement;
    use crate::stats::resolve_stats;
    use crate::test_values::{gradient, mixed_values as values};
    use crate::testing::{with_device_select, with_radix_select};
    use burn::tensor::{bf16, f16};

    /// The `|g|` keys of `grad` as stored, by a plain read and `abs_key`.
    fn stored_keys(grad: &DispatchTensor) -> Vec<u64> {
        let data = Tensor::<1>::from_dispatch(grad.clone()).into_data();
        match data.dtype() {
            DType::F16 => data.iter::<f16>().map(|x| x.abs_key()).collect(),
            DType::BF16 => data.iter::<bf16>().map(|x| x.abs_key()).collect(),
            DType::F32 => data.iter::<f32>().map(|x| x.abs_key()).collect(),
            _ => data.iter::<f64>().map(|x| x.abs_key()).collect(),
        }
    }

    /// Every way of selecting gives the threshold and the counts a sort gives.
    fn check(sizes: &[usize], dtype: DType, forced: Option<Forced>) {
        let grads: Vec<DispatchTensor> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| gradient(&values(n, i as u64 + 3), dtype))
            .collect();
        let keys: Vec<Vec<u64>> = grads.iter().map(stored_keys).collect();
        let mut sorted = keys.concat();
        sorted.sort_unstable();
        let inf = inf_key(dtype).unwrap();
        let last = sorted.len() as u64 - 1;
        for rank in [0, last / 3, (7 * last) / 10, last] {
            let select = || select_abs(&grads, rank, true);
            let selection = match forced {
                None => select(),
                Some(Forced::Radix) => with_radix_select(select),
                Some(Forced::DeviceSteps) => with_device_select(select),
                Some(Forced::OnePass) => crate::testing::with_one_pass_mask(select),
            };
            let key = sorted[rank as usize].min(inf);
            let value = key_to_f64(dtype, key).unwrap();
            let context = format!("{sizes:?} {dtype:?} {forced:?} rank {rank}");
            let stats = resolve_stats(selection.stats.unwrap());
            for ((threshold, keys), stats) in selection.thresholds.into_iter().zip(&keys).zip(stats)
            {
                let read = Tensor::<1>::from_dispatch(threshold).into_data();
                assert_eq!(read.iter::<f64>().next(), Some(value), "{context}");
                assert_eq!(stats.threshold, Some(value), "{context}");
                let expected = TensorStats {
                    total: keys.len() as u64,
                    masked: keys.iter().filter(|&&k| k < key && k < inf).count() as u64,
                    non_finite: keys.iter().filter(|&&k| k >= inf).count() as u64,
                    threshold: Some(value),
                    norms_sq: None,
                };
                assert_eq!(stats, expected, "{context}");
            }
        }
    }

    #[test]
    fn every_way_matches_a_sort() {
        for dtype in [DType::F32, DType::F16, DType::F64] {
            for sizes in [&[1][..], &[5_000], &[300, 1, 7_000], &[40_000, 30_000]] {
                for forced in [None, Some(Forced::Radix), Some(Forced::DeviceSteps)] {
                    check(sizes, dtype, forced);
                }
            }
        }
    }

    #[test]
    fn a_cpu_backend_routes_by_what_it_does_well() {
        let grad = |n| gradient(&values(n, 1), DType::F32);
        let one = [grad(100_000)];
        let small = [grad(1_000), grad(2_000)];
        let large = [grad(40_000), grad(30_000)];
        assert_eq!(route(&one, DType::F32), Route::OneStep);
        assert_eq!(route(&small, DType::F32), Route::HostBracket);
        assert_eq!(route(&large, DType::F32), Route::HostBracket);
        assert_eq!(
            with_radix_select(|| route(&large, DType::F32)),
            Route::HostPasses
        );
        assert_eq!(
            with_radix_select(|| route(&one, DType::F32)),
            Route::HostPasses
        );
        assert_eq!(
            with_device_select(|| route(&small, DType::F32)),
            Route::DeviceSteps
        );
        // The forcing ends with its closure.
        assert_eq!(route(&one, DType::F32), Route::OneStep);
        // A per-tensor mask is selected, then masked, unless tests force the one pass.
        use crate::testing::{BracketMiss, with_bracket_miss, with_one_pass_mask};
        let one_pass = || route::one_pass(&one[0]);
        assert!(!one_pass());
        assert!(with_one_pass_mask(one_pass));
        assert!(with_bracket_miss(BracketMiss::Low, one_pass));
        assert!(!with_radix_select(one_pass));
        assert!(!one_pass());
    }

    /// Gradients on two devices: the host passes, each threshold on its gradient's device.
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)] // burn-ndarray: still a backend our users run
    #[test]
    fn gradients_on_two_devices_select_together() {
        use crate::test_values::gradient_on;
        let (a, b) = (values(3_000, 4), values(5_000, 5));
        let grads = [
            gradient_on(&a, DType::F32, &Device::flex()),
            gradient_on(&b, DType::F32, &Device::ndarray()),
        ];
        assert_eq!(route(&grads, DType::F32), Route::HostBracket);
        let mut sorted: Vec<u64> = grads.iter().flat_map(stored_keys).collect();
        sorted.sort_unstable();
        let selection = select_abs(&grads, 4_000, false);
        for (threshold, grad) in selection.thresholds.into_iter().zip(&grads) {
            assert_eq!(threshold.device(), grad.device());
            let read = Tensor::<1>::from_dispatch(threshold).into_data();
            let expected = key_to_f64(DType::F32, sorted[4_000].min(f32::INF_KEY));
            assert_eq!(read.iter::<f64>().next(), expected);
        }
    }

    #[test]
    #[should_panic(expected = "rank 10 of 10 entries")]
    fn a_rank_past_the_end_is_refused() {
        select_abs(&[gradient(&[1.0; 10], DType::F32)], 10, false);
    }
}
