//! The exact selection of the k-th smallest `|g|` over one or several gradients, driven over
//! [`MaskOps`] for any backend: what a caller sees is a threshold per gradient and its
//! statistics, possibly still on the device ([`PendingStats`], read for a whole step at once
//! by [`resolve_stats`]).
//!
//! Every way is O(n), exact, and copies no gradient. A radix pass histograms one 16-bit digit
//! of the key of every entry whose higher digits match the prefix chosen so far, and a scan of
//! the (summed) histogram picks the next digit: an f32 gradient needs 2 passes, f16/bf16 one,
//! f64 four. A sampled bracket reads every entry once, counts those below it and keeps the few
//! percent inside it, which are selected directly. Several gradients (a global threshold) are
//! selected together: their histograms summed, or their bracket scans merged.
//!
//! Which way a selection goes is the backend's to say ([`MaskOps::selection_capabilities`]),
//! never a match on the device kind:
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
//!   host; a bracket that misses (rarely) falls back to the host passes.
//! - **Host passes**: otherwise (f64 or 2^32 entries and more on a GPU, gradients on several
//!   GPUs), the host drives the radix passes, reading each gradient's histogram back and
//!   merging them; no gradient leaves its device.

use std::sync::Arc;

use burn::backend::{Dispatch, DispatchTensor, TensorMetadata};
use burn::tensor::kind::Basic;
use burn::tensor::{DType, Device, Element, Int, Tensor, TensorData};

use crate::element::{
    BELOW_PREFIX_BIN, DIGIT_BITS, DIGITS, SELECTION_HISTOGRAM, SELECTION_LEN,
    SELECTION_MAX_SEGMENTS, SELECTION_STATE_LEN, SelectionState, inf_key, key_bits, key_to_f64,
};
use crate::{MaskOps, host};

/// What a backend's [`MaskOps`] selection does well, which decides the way a selection goes
/// (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelectionCapabilities {
    /// Tensors live in host memory, where reading keys or a histogram costs no transfer.
    pub host_memory: bool,
    /// The largest tensor [`MaskOps::abs_key_select`] takes, in entries.
    pub one_step_max_entries: u64,
    /// The widest key, in bits, the device steps ([`MaskOps::radix_select_start`] and the
    /// rest) take in the backend's own memory; 0 when they are not the backend's way.
    pub device_key_bits: u32,
    /// The device steps select among fewer entries than this, in all (their counters' range).
    pub device_max_entries: u64,
}

impl SelectionCapabilities {
    /// A CPU backend: everything is read in place on the host, and a lone gradient of any
    /// size is selected in one call.
    pub const HOST: Self = Self {
        host_memory: true,
        one_step_max_entries: u64::MAX,
        device_key_bits: 0,
        device_max_entries: 0,
    };

    /// A device that keeps the whole selection in its memory: `u32` counters and 32-bit keys,
    /// one launch for a tensor of at most [`SMALL_SELECT_MAX_ENTRIES`] entries.
    ///
    /// [`SMALL_SELECT_MAX_ENTRIES`]: crate::element::SMALL_SELECT_MAX_ENTRIES
    pub const DEVICE: Self = Self {
        host_memory: false,
        one_step_max_entries: crate::element::SMALL_SELECT_MAX_ENTRIES as u64,
        device_key_bits: 32,
        device_max_entries: u32::MAX as u64,
    };
}

/// A way of selecting that tests force on a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Forced {
    /// Through the device steps, even on a CPU backend (through its host bodies).
    DeviceSteps,
    /// Through radix passes, with no one-step or bracket shortcut.
    Radix,
}

thread_local! {
    static FORCED: std::cell::Cell<Option<Forced>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with every selection on this thread going through the device steps, even on a
/// CPU backend (where they run through the host bodies of [`MaskOps`]): lets tests check the
/// on-device driver against the same reference everywhere.
#[doc(hidden)]
pub fn with_device_select<R>(f: impl FnOnce() -> R) -> R {
    with_forced(Forced::DeviceSteps, f)
}

/// Runs `f` with every selection on this thread going through radix passes (the device
/// steps where the backend has them, the host passes elsewhere), even for inputs a one-step
/// or bracket selection would take: lets tests check every way against the same reference.
#[doc(hidden)]
pub fn with_radix_select<R>(f: impl FnOnce() -> R) -> R {
    with_forced(Forced::Radix, f)
}

fn with_forced<R>(forced: Forced, f: impl FnOnce() -> R) -> R {
    let previous = FORCED.replace(Some(forced));
    let out = f();
    FORCED.set(previous);
    out
}

/// The way a selection goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    OneStep,
    DeviceSteps,
    HostBracket,
    HostPasses,
}

/// The way `grads` (of `dtype`) are selected, from what their backend says it does well.
fn route(grads: &[DispatchTensor], dtype: DType) -> Route {
    let forced = FORCED.get();
    let shortcut = forced != Some(Forced::Radix);
    let host_memory =
        |g: &DispatchTensor| <Dispatch as MaskOps>::selection_capabilities(g).host_memory;
    if several_devices(grads) {
        return match shortcut && grads.iter().all(host_memory) {
            true => Route::HostBracket,
            false => Route::HostPasses,
        };
    }
    if forced == Some(Forced::DeviceSteps) {
        return Route::DeviceSteps;
    }
    let caps = <Dispatch as MaskOps>::selection_capabilities(&grads[0]);
    let total = total_entries(grads);
    let bits = key_bits(dtype).expect("selection on a supported float dtype");
    let on_device = bits <= caps.device_key_bits && total < caps.device_max_entries;
    if shortcut
        && grads.len() == 1
        && total <= caps.one_step_max_entries
        && (caps.host_memory || on_device)
    {
        Route::OneStep
    } else if on_device {
        Route::DeviceSteps
    } else if shortcut && caps.host_memory {
        Route::HostBracket
    } else {
        Route::HostPasses
    }
}

/// Whether `grads` live on more than one device.
fn several_devices(grads: &[DispatchTensor]) -> bool {
    grads
        .windows(2)
        .any(|pair| pair[0].device() != pair[1].device())
}

fn total_entries(grads: &[DispatchTensor]) -> u64 {
    grads.iter().map(|g| g.shape().num_elements() as u64).sum()
}

/// Counts of one gradient against its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Entries of the gradient.
    pub total: u64,
    /// Entries masked: finite, with `|g|` below the threshold.
    pub masked: u64,
    /// NaN and infinite entries (never masked).
    pub non_finite: u64,
}

/// The outcome of a selection.
#[derive(Debug, Clone)]
pub struct Selection {
    /// The threshold `T` for each gradient, in input order: a one-entry tensor of the
    /// gradients' dtype on that gradient's device (one tensor per device). Entries whose `|g|`
    /// is below it are masked. At most `+inf`, so non-finite entries are never masked.
    pub thresholds: Vec<DispatchTensor>,
    /// Per gradient, in input order, when statistics are collected.
    pub stats: Option<Vec<PendingStats>>,
}

/// Where the statistics of one gradient come from.
#[derive(Debug, Clone)]
enum Source {
    /// Known on the host.
    Known(Counts, Option<f64>),
    /// `[masked, non_finite]` counted on the device; the threshold value known (or none).
    Counted(DeviceWords, Option<f64>),
    /// `[masked, non_finite]` counted on the device against a selection whose state words
    /// give the threshold key in the gradients' dtype (a selection over several gradients).
    CountedSelected(DeviceWords, DeviceWords, DType),
    /// The state words of a one-gradient selection: counts and threshold, no counting pass.
    Selected(DeviceWords, DType),
}

/// Words on the device that statistics are read from: `len` words from `start` of a tensor
/// that several gradients may share (the state words of a step's selections made together,
/// the state of a global selection), which [`resolve_stats`] reads once for all of them.
#[derive(Debug, Clone)]
struct DeviceWords {
    tensor: Arc<Tensor<1, Int>>,
    start: usize,
    len: usize,
}

impl DeviceWords {
    /// Every word of `tensor`.
    fn whole(tensor: Tensor<1, Int>) -> Self {
        let len = tensor.shape().num_elements();
        Self {
            tensor: Arc::new(tensor),
            start: 0,
            len,
        }
    }

    /// The state words of selection `segment` in a table of them (`[segments × 4]` words).
    fn state_of(table: &Arc<Tensor<1, Int>>, segment: usize) -> Self {
        Self {
            tensor: table.clone(),
            start: segment * SELECTION_STATE_LEN,
            len: SELECTION_STATE_LEN,
        }
    }
}

/// The statistics of one gradient against its threshold, possibly still on the device:
/// [`resolve_stats`] reads every pending one of a step in one go.
#[derive(Debug, Clone)]
pub struct PendingStats {
    total: u64,
    source: Source,
}

impl PendingStats {
    /// Statistics known on the host, with the threshold's value when there is one.
    pub fn known(counts: Counts, threshold: Option<f64>) -> Self {
        Self {
            total: counts.total,
            source: Source::Known(counts, threshold),
        }
    }

    /// The statistics of `grad` from `[masked, non_finite]` counted on the device (as
    /// [`MaskOps::abs_threshold_count`] and [`MaskOps::random_mask_count`] return them), read
    /// with the rest of the step's.
    pub fn counted(grad: &DispatchTensor, counts: Tensor<1, Int>) -> Self {
        Self {
            total: grad.shape().num_elements() as u64,
            source: Source::Counted(DeviceWords::whole(counts), None),
        }
    }

    /// The statistics of `grad`, the one gradient of a selection, from its state words.
    fn selected(grad: &DispatchTensor, state: DeviceWords) -> Self {
        Self {
            total: grad.shape().num_elements() as u64,
            source: Source::Selected(state, grad.dtype()),
        }
    }

    /// These statistics with a threshold value known on the host (a selection's own value
    /// is kept).
    pub fn with_threshold(mut self, value: f64) -> Self {
        match &mut self.source {
            Source::Known(_, threshold) | Source::Counted(_, threshold) => *threshold = Some(value),
            Source::CountedSelected(..) | Source::Selected(..) => {}
        }
        self
    }

    fn device_words(&self) -> Vec<&DeviceWords> {
        match &self.source {
            Source::Known(..) => vec![],
            Source::Counted(counts, _) => vec![counts],
            Source::CountedSelected(counts, state, _) => vec![counts, state],
            Source::Selected(state, _) => vec![state],
        }
    }

    /// The counts and threshold, from this gradient's words in the order of
    /// [`device_words`](Self::device_words).
    fn decode(self, words: &[Vec<u64>]) -> (Counts, Option<f64>) {
        let total = self.total;
        let counted = |words: &[u64]| Counts {
            total,
            masked: words[0],
            non_finite: words[1],
        };
        let threshold = |state: &SelectionState, dtype| {
            let inf = inf_key(dtype).expect("a supported float dtype");
            key_to_f64(dtype, state.key.min(inf)).expect("a supported float dtype")
        };
        match self.source {
            Source::Known(counts, threshold) => (counts, threshold),
            Source::Counted(_, threshold) => (counted(&words[0]), threshold),
            Source::CountedSelected(_, _, dtype) => {
                let state = SelectionState::from_words(&words[1]);
                (counted(&words[0]), Some(threshold(&state, dtype)))
            }
            Source::Selected(_, dtype) => {
                let state = SelectionState::from_words(&words[0]);
                let inf = inf_key(dtype).expect("a supported float dtype");
                let counts = Counts {
                    total,
                    masked: state.masked(total, inf),
                    non_finite: state.non_finite,
                };
                (counts, Some(threshold(&state, dtype)))
            }
        }
    }
}

/// The counts and threshold value of each of `pending`: every device-side word read back
/// with one read per device, each tensor once however many gradients share it.
pub fn resolve_stats(pending: Vec<PendingStats>) -> Vec<(Counts, Option<f64>)> {
    let mut distinct: Vec<Arc<Tensor<1, Int>>> = Vec::new();
    // Per gradient, where each of its words lie: (distinct tensor, start, len).
    let places: Vec<Vec<(usize, usize, usize)>> = pending
        .iter()
        .map(|p| {
            p.device_words()
                .into_iter()
                .map(|w| {
                    let at = distinct.iter().position(|t| Arc::ptr_eq(t, &w.tensor));
                    let at = at.unwrap_or_else(|| {
                        distinct.push(w.tensor.clone());
                        distinct.len() - 1
                    });
                    (at, w.start, w.len)
                })
                .collect()
        })
        .collect();
    let tensors = distinct.iter().map(|t| t.as_ref().clone()).collect();
    let values: Vec<Vec<u64>> = read_per_device::<Int, i64>(tensors)
        .into_iter()
        .map(|w| w.into_iter().map(|w| w as u64).collect())
        .collect();
    pending
        .into_iter()
        .zip(places)
        .map(|(p, places)| {
            let own: Vec<Vec<u64>> = places
                .into_iter()
                .map(|(at, start, len)| values[at][start..start + len].to_vec())
                .collect();
            p.decode(&own)
        })
        .collect()
}

/// The values of each of `tensors` (gradients of one step may live on several devices), read
/// back with one read per device: the tensors of a device are concatenated first.
pub fn read_per_device<K: Basic, E: Element>(tensors: Vec<Tensor<1, K>>) -> Vec<Vec<E>> {
    let mut groups: Vec<(Device, Vec<usize>)> = Vec::new();
    for (i, tensor) in tensors.iter().enumerate() {
        let device = tensor.device();
        match groups.iter_mut().find(|(d, _)| *d == device) {
            Some((_, members)) => members.push(i),
            None => groups.push((device, vec![i])),
        }
    }
    let mut values: Vec<Vec<E>> = tensors.iter().map(|_| Vec::new()).collect();
    for (_, members) in groups {
        let parts = members.iter().map(|&i| tensors[i].clone()).collect();
        let data = Tensor::cat(parts, 0).into_data();
        let mut read = data.iter::<E>();
        for i in members {
            let len = tensors[i].shape().num_elements();
            values[i] = read.by_ref().take(len).collect();
        }
    }
    values
}

/// A one-entry tensor of `dtype` holding `value` (exact when `value` comes from that dtype).
pub fn threshold_tensor(value: f64, dtype: DType, device: &Device) -> DispatchTensor {
    Tensor::<1>::from_data(TensorData::from([value]), (device, dtype)).into_dispatch()
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
    assert!(
        rank < total_entries(grads),
        "gradient mask: rank {rank} of {} entries",
        total_entries(grads)
    );
    select_routed(grads, dtype, rank, collect, route(grads, dtype))
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
        Route::HostBracket => select_host_bracket(grads, dtype, rank)
            .unwrap_or_else(|| select_host_passes(grads, dtype, rank))
            .into_selection(grads, collect),
        Route::HostPasses => select_host_passes(grads, dtype, rank).into_selection(grads, collect),
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
            .map(|g| PendingStats {
                total: g.shape().num_elements() as u64,
                source: Source::CountedSelected(
                    DeviceWords::whole(device_count(g, &threshold)),
                    state.clone(),
                    dtype,
                ),
            })
            .collect()
    });
    Selection {
        thresholds: vec![threshold; grads.len()],
        stats,
    }
}

/// Runs the device steps of `members.len()` selections made together (at most
/// [`SELECTION_MAX_SEGMENTS`], all on one device): selection `s` seeks rank `ranks[s]` among
/// the gradients `members[s]` and has segment `s` of the returned selection buffer. Each pass
/// counts every gradient into its segment, then one digit step serves every segment.
fn device_steps(members: &[Vec<&DispatchTensor>], ranks: Vec<u64>, dtype: DType) -> DispatchTensor {
    let bits = key_bits(dtype).expect("selection on a supported float dtype");
    let inf = inf_key(dtype).expect("selection on a supported float dtype");
    let mut selection = <Dispatch as MaskOps>::radix_select_start(members[0][0], ranks);
    for pass in 0..bits / DIGIT_BITS {
        let shift = bits - DIGIT_BITS * (pass + 1);
        for (segment, grads) in members.iter().enumerate() {
            for grad in grads {
                selection = <Dispatch as MaskOps>::radix_select_count(
                    grad,
                    selection,
                    shift,
                    segment as u32,
                );
            }
        }
        // The first digit step also counts the non-finite entries (digits from +inf's up).
        let inf_digit = match pass {
            0 => inf >> shift,
            _ => DIGITS as u64,
        };
        selection = <Dispatch as MaskOps>::radix_select_digit(selection, inf_digit as u32);
    }
    selection
}

/// The state words of the `segments` segments of a selection buffer, segment after segment
/// (4 words each), in a tensor of their own (`+ 0` materialises the slice, one launch), so
/// that statistics waiting to be read do not keep the buffer's histograms alive.
fn segment_states(selection: DispatchTensor, segments: usize) -> Tensor<1, Int> {
    Tensor::<1, Int>::from_dispatch(selection)
        .reshape([segments, SELECTION_LEN])
        .slice([0..segments, 0..SELECTION_STATE_LEN])
        .add_scalar(0)
        .reshape([segments * SELECTION_STATE_LEN])
}

/// Selects, for each of `grads` on its own, the `(ranks[i] + 1)`-th smallest `|g|` of that
/// gradient (each rank below its gradient's entries): the per-tensor thresholds of a whole
/// step, as [`select_abs`] of each gradient alone would give them, with the same statistics.
///
/// The gradients a device selects in its own memory are selected together, in one selection
/// buffer per device and dtype (a segment each, at most [`SELECTION_MAX_SEGMENTS`] per
/// buffer): the histogram passes read each gradient as before, but the start, every digit step
/// and the threshold write are one call for all of them, so a step's launches other than its
/// passes over the gradients do not grow with its number of tensors. The others (the CPU
/// backends, tensors one launch selects, dtypes the device steps do not take) go their own
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
    // Gradients for the device steps, by device and dtype.
    let mut batches: Vec<((Device, DType), Vec<usize>)> = Vec::new();
    for (i, (grad, &rank)) in grads.iter().zip(ranks).enumerate() {
        let dtype = grad.dtype();
        let alone = std::slice::from_ref(grad);
        assert!(
            rank < total_entries(alone),
            "gradient mask: rank {rank} of {} entries",
            total_entries(alone)
        );
        let route = route(alone, dtype);
        if route == Route::DeviceSteps {
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
    }
    for ((_, dtype), members) in batches {
        for batch in members.chunks(SELECTION_MAX_SEGMENTS) {
            let batch_grads: Vec<Vec<&DispatchTensor>> =
                batch.iter().map(|&i| vec![&grads[i]]).collect();
            let batch_ranks = batch.iter().map(|&i| ranks[i]).collect();
            let selection = device_steps(&batch_grads, batch_ranks, dtype);
            let like = &grads[batch[0]];
            let values = Tensor::<1>::from_dispatch(<Dispatch as MaskOps>::radix_select_threshold(
                like,
                selection.clone(),
            ));
            // One table of state words for the batch, read once for all its gradients.
            let states = collect.then(|| Arc::new(segment_states(selection, batch.len())));
            for (segment, &i) in batch.iter().enumerate() {
                let threshold = values.clone().slice(segment..segment + 1);
                thresholds[i] = Some(threshold.into_dispatch());
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
    }
}

/// A selection made on the host: the threshold key and each gradient's counts.
struct HostSelection {
    key: u64,
    dtype: DType,
    counts: Vec<Counts>,
}

impl HostSelection {
    fn into_selection(self, grads: &[DispatchTensor], collect: bool) -> Selection {
        let value = key_to_f64(self.dtype, self.key).expect("supported dtype");
        let thresholds = thresholds_on_devices(grads, value, self.dtype);
        let stats = self
            .counts
            .into_iter()
            .map(|counts| PendingStats::known(counts, Some(value)));
        Selection {
            thresholds,
            stats: collect.then(|| stats.collect()),
        }
    }
}

/// A threshold of `value` for each of `grads`: one one-entry tensor per device they live on.
fn thresholds_on_devices(
    grads: &[DispatchTensor],
    value: f64,
    dtype: DType,
) -> Vec<DispatchTensor> {
    let mut per_device: Vec<(Device, DispatchTensor)> = Vec::new();
    grads
        .iter()
        .map(|grad| {
            let device: Device = grad.device().into();
            if let Some((_, t)) = per_device.iter().find(|(d, _)| *d == device) {
                return t.clone();
            }
            let t = threshold_tensor(value, dtype, &device);
            per_device.push((device, t.clone()));
            t
        })
        .collect()
}

/// Several gradients in host memory through a sampled bracket (see the module docs), or
/// `None` when the bracket misses the rank or a gradient holds too many keys inside it.
fn select_host_bracket(grads: &[DispatchTensor], dtype: DType, rank: u64) -> Option<HostSelection> {
    let inf = inf_key(dtype).expect("a supported float dtype");
    let sizes: Vec<u64> = grads
        .iter()
        .map(|g| g.shape().num_elements() as u64)
        .collect();
    let total: u64 = sizes.iter().sum();
    // A sample of the whole input: each gradient's share in proportion to its size.
    let samples = host::sample_len(total);
    let drawn = grads
        .iter()
        .zip(&sizes)
        .filter(|(_, n)| **n > 0)
        .map(|(g, &n)| {
            let count = (samples * n).div_ceil(total);
            Tensor::from_dispatch(<Dispatch as MaskOps>::abs_key_sample(g, count))
        })
        .collect();
    let mut sample: Vec<u64> = read_per_device::<Int, i64>(drawn)
        .into_iter()
        .flatten()
        .map(|k| k as u64)
        .collect();
    sample.sort_unstable();
    let bracket = host::bracket_around(&sample, rank, total);
    // Keys kept in all, at most: an eighth of the entries (a bracket that wide means ties).
    let cap = (total / 8).max(samples);
    let scanned = grads
        .iter()
        .zip(&sizes)
        .map(|(g, &n)| {
            let own_cap = cap * n / total + 1;
            let words =
                <Dispatch as MaskOps>::abs_key_bracket(g, bracket.lo, bracket.last, own_cap);
            Tensor::from_dispatch(words)
        })
        .collect();
    let mut scans: Vec<host::BracketScan<u64>> = read_per_device::<Int, i64>(scanned)
        .into_iter()
        .map(|words| {
            let words: Vec<u64> = words.into_iter().map(|w| w as u64).collect();
            host::BracketScan::from_words(&words)
        })
        .collect();
    // The scans' keys are only counted below: their order does not matter.
    let key = host::select_in_bracket(bracket, &mut scans, rank)?
        .key
        .min(inf);
    let counts = scans
        .iter()
        .zip(&sizes)
        .map(|(scan, &total)| Counts {
            total,
            masked: match key >= inf {
                true => total - scan.non_finite,
                false => scan.below + scan.keys.iter().filter(|&&k| k < key).count() as u64,
            },
            non_finite: scan.non_finite,
        })
        .collect();
    Some(HostSelection { key, dtype, counts })
}

/// The last-pass histogram of one gradient, kept sparse to count its masked entries once
/// the final digit is known.
struct LastPass {
    below: u64,
    digits: Vec<(usize, u64)>,
}

/// A histogram of `grad` for one pass ([`MaskOps::abs_key_histogram`]), read back.
fn histogram(grad: &DispatchTensor, shift: u32, prefix: u64) -> Vec<u64> {
    let hist = <Dispatch as MaskOps>::abs_key_histogram(grad, shift, prefix);
    Tensor::<1, Int>::from_dispatch(hist)
        .into_data()
        .iter::<i64>()
        .map(|count| count as u64)
        .collect()
}

/// The radix passes driven from the host: each gradient's histogram read back per pass and
/// merged; the digit steps on a host buffer ([`host::select_digit`]).
fn select_host_passes(grads: &[DispatchTensor], dtype: DType, rank: u64) -> HostSelection {
    let bits = key_bits(dtype).expect("selection on a supported float dtype");
    let inf = inf_key(dtype).expect("selection on a supported float dtype");
    let passes = bits / DIGIT_BITS;
    let mut counts: Vec<Counts> = grads
        .iter()
        .map(|g| Counts {
            total: g.shape().num_elements() as u64,
            ..Counts::default()
        })
        .collect();
    let mut selection = host::selection_buffer(rank);
    let mut last: Vec<LastPass> = Vec::with_capacity(grads.len());
    for pass in 0..passes {
        let shift = bits - DIGIT_BITS * (pass + 1);
        let prefix = SelectionState::from_words(&selection).key;
        let inf_digit = match pass {
            0 => (inf >> shift) as u32,
            _ => DIGITS as u32,
        };
        for (grad, count) in grads.iter().zip(counts.iter_mut()) {
            let hist = histogram(grad, shift, prefix);
            if pass == 0 {
                // The `+inf` key's top digit has zero low bits for every supported dtype, so
                // the digits from it up hold exactly the non-finite keys.
                count.non_finite = hist[inf_digit as usize..DIGITS].iter().sum();
            }
            if pass + 1 == passes {
                last.push(LastPass {
                    below: hist[BELOW_PREFIX_BIN],
                    digits: hist[..DIGITS]
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| **c > 0)
                        .map(|(d, c)| (d, *c))
                        .collect(),
                });
            }
            selection[SELECTION_HISTOGRAM..]
                .iter_mut()
                .zip(&hist)
                .for_each(|(m, h)| *m += h);
        }
        host::select_digit(&mut selection, inf_digit);
    }

    let key = SelectionState::from_words(&selection).key.min(inf);
    for (count, last) in counts.iter_mut().zip(&last) {
        count.masked = if key == inf {
            count.total - count.non_finite
        } else {
            let digit = (key & (DIGITS as u64 - 1)) as usize;
            last.below
                + last
                    .digits
                    .iter()
                    .filter(|(d, _)| *d < digit)
                    .map(|(_, c)| c)
                    .sum::<u64>()
        };
    }
    HostSelection { key, dtype, counts }
}

/// The statistics of `grad` masked against a threshold it did not select (a threshold kept
/// from an earlier step), counted in one pass; `value` is the threshold's, when known.
pub fn count_against(
    grad: &DispatchTensor,
    threshold: &DispatchTensor,
    value: Option<f64>,
) -> PendingStats {
    let stats = PendingStats::counted(grad, device_count(grad, threshold));
    match value {
        Some(value) => stats.with_threshold(value),
        None => stats,
    }
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
        .map(|(threshold, grad)| PendingStats::counted(grad, device_count(grad, threshold)))
        .collect()
}

/// `[masked, non_finite]` of `grad` against `threshold`, counted on its device.
fn device_count(grad: &DispatchTensor, threshold: &DispatchTensor) -> Tensor<1, Int> {
    Tensor::from_dispatch(<Dispatch as MaskOps>::abs_threshold_count(grad, threshold))
}

// On the Flex CPU backend: the device steps run through its host bodies there.
#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use crate::element::MaskElement;
    use crate::random::mix64;
    use burn::tensor::{bf16, f16};

    /// Values with ties, zeros and non-finite entries, from a seed.
    fn values(n: usize, seed: u64) -> Vec<f64> {
        (0..n as u64)
            .map(|i| {
                let r = mix64(seed ^ mix64(i));
                match r % 23 {
                    0 => 0.0,
                    1 => -0.5,
                    2 if i % 5 == 0 => [f64::NAN, f64::INFINITY, -f64::INFINITY][(r % 3) as usize],
                    _ => ((r >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 4.0,
                }
            })
            .collect()
    }

    fn gradient(values: &[f64], dtype: DType) -> DispatchTensor {
        gradient_on(values, dtype, &Device::flex())
    }

    fn gradient_on(values: &[f64], dtype: DType, device: &Device) -> DispatchTensor {
        let data = TensorData::new(values.to_vec(), [values.len()]);
        Tensor::<1>::from_data(data, (device, dtype)).into_dispatch()
    }

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
            };
            let key = sorted[rank as usize].min(inf);
            let value = key_to_f64(dtype, key).unwrap();
            let context = format!("{sizes:?} {dtype:?} {forced:?} rank {rank}");
            let stats = resolve_stats(selection.stats.unwrap());
            for ((threshold, keys), (counts, threshold_value)) in
                selection.thresholds.into_iter().zip(&keys).zip(stats)
            {
                let read = Tensor::<1>::from_dispatch(threshold).into_data();
                assert_eq!(read.iter::<f64>().next(), Some(value), "{context}");
                assert_eq!(threshold_value, Some(value), "{context}");
                let expected = Counts {
                    total: keys.len() as u64,
                    masked: keys.iter().filter(|&&k| k < key && k < inf).count() as u64,
                    non_finite: keys.iter().filter(|&&k| k >= inf).count() as u64,
                };
                assert_eq!(counts, expected, "{context}");
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
    }

    /// Gradients on two devices: the host passes, each threshold on its gradient's device.
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)] // burn-ndarray: still a backend our users run
    #[test]
    fn gradients_on_two_devices_select_together() {
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
    fn unselected_gradients_count_nothing_or_every_finite_entry() {
        let values = values(3_000, 9);
        let grad = gradient(&values, DType::F32);
        let non_finite = values.iter().filter(|x| !x.is_finite()).count() as u64;
        assert!(non_finite > 0);
        let counts = |frozen| {
            resolve_stats(count_unselected(std::slice::from_ref(&grad), frozen))
                .remove(0)
                .0
        };
        let expected = |masked| Counts {
            total: 3_000,
            masked,
            non_finite,
        };
        assert_eq!(counts(false), expected(0));
        assert_eq!(counts(true), expected(3_000 - non_finite));
    }

    #[test]
    #[should_panic(expected = "rank 10 of 10 entries")]
    fn a_rank_past_the_end_is_refused() {
        select_abs(&[gradient(&[1.0; 10], DType::F32)], 10, false);
    }
}
