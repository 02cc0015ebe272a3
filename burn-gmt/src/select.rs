//! Exact k-th magnitude selection by radix select over histograms of `|g|` keys.
//!
//! A pass histograms one 16-bit digit of the key of every entry whose higher digits match
//! the prefix chosen so far; a scan of the (summed) histogram picks the next digit. An f32
//! gradient needs 2 passes, f16/bf16 one, f64 four: O(n) work, no sort, no copy of the
//! gradient. Several gradients (the [`Global`](crate::MaskScope::Global) scope) are selected
//! together by summing their histograms, so memory stays one histogram per tensor at most.
//!
//! Where the selection runs:
//! - On a CPU backend (Flex, NdArray) the driver reads each pass's histogram (or, for inputs
//!   of at most [`HOST_SELECT_MAX_ENTRIES`] entries, the keys themselves) on the host: it is
//!   already there.
//! - On any other device (CubeCL: CUDA, ROCm, wgpu) the whole selection stays on the device:
//!   a selection buffer collects the histograms of every gradient, a digit step picks the
//!   digit and clears it, and the threshold is written to a one-entry tensor the mask kernels
//!   read. Nothing is read back unless statistics are collected, and then once per step.

use burn::backend::ops::FloatTensorOps;
use burn::backend::{Dispatch, DispatchDevice, DispatchTensor, TensorMetadata};
use burn::tensor::kind::Basic;
use burn::tensor::{DType, Device, Element, Int, Tensor, TensorData, try_read_sync};
use burn_gmt_kernels::element::MaskElement;
use burn_gmt_kernels::element::{
    BELOW_PREFIX_BIN, DIGIT_BITS, DIGITS, SELECTION_PREFIX, SELECTION_STATE_LEN,
    SMALL_SELECT_MAX_ENTRIES, inf_key, key_bits, key_to_f64,
};
use burn_gmt_kernels::{MaskOps, host, with_mask_element};

/// Up to this many entries in all, selection on a CPU backend reads the keys and runs an O(n)
/// `select_nth_unstable`: a histogram pass has a fixed cost of one 65,536-bin table, which
/// dominates on small tensors (biases, norms, small layers). (On a GPU that table costs
/// microseconds and a read-back costs a synchronisation, so the selection stays there.)
pub const HOST_SELECT_MAX_ENTRIES: u64 = 1 << 16;

thread_local! {
    static FORCE_RADIX: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static FORCE_DEVICE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with every selection on this thread going through the on-device steps, even on
/// a CPU backend (where they run through the host bodies of `MaskOps`): lets tests check the
/// on-device driver against the same reference everywhere.
#[doc(hidden)]
pub fn with_device_select<R>(f: impl FnOnce() -> R) -> R {
    with_forced(&FORCE_DEVICE, f)
}

/// Runs `f` with the thread's `flag` set, then puts it back.
fn with_forced<R>(
    flag: &'static std::thread::LocalKey<std::cell::Cell<bool>>,
    f: impl FnOnce() -> R,
) -> R {
    let previous = flag.replace(true);
    let out = f();
    flag.set(previous);
    out
}

/// Whether the gradients live in host memory (a CPU backend), where reading a histogram
/// back costs nothing.
#[allow(unreachable_patterns)]
fn host_memory(device: &DispatchDevice) -> bool {
    match device {
        #[cfg(feature = "flex")]
        DispatchDevice::Flex(_) => true,
        #[cfg(feature = "ndarray")]
        DispatchDevice::NdArray(_) => true,
        _ => false,
    }
}

/// Whether `grads` are selected with the on-device steps: off a CPU backend, for keys of at
/// most 32 bits and fewer than 2^32 entries in all (the device counts in `u32`). Otherwise
/// (f64 or more entries on a GPU) the host drives the passes, reading each histogram back.
fn on_device(grads: &[DispatchTensor], dtype: DType) -> bool {
    let fits =
        key_bits(dtype).is_some_and(|bits| bits <= 32) && total_entries(grads) < u32::MAX as u64;
    FORCE_DEVICE.get() || (fits && !host_memory(&grads[0].device()))
}

/// Runs `f` with every selection on this thread going through the histogram passes, even
/// for small inputs: lets tests check both selection paths against the same reference.
#[doc(hidden)]
pub fn with_radix_select<R>(f: impl FnOnce() -> R) -> R {
    with_forced(&FORCE_RADIX, f)
}

/// Whether inputs of `grads` are small enough for the host selection.
fn on_host(grads: &[DispatchTensor]) -> bool {
    !FORCE_RADIX.get() && total_entries(grads) <= HOST_SELECT_MAX_ENTRIES
}

/// How many entries of `n` a ratio masks: `floor(ratio · n)`, computed in f64.
pub fn masked_count(ratio: f64, n: u64) -> u64 {
    ((ratio * n as f64).floor() as u64).min(n.saturating_sub(1))
}

/// Counts of one gradient against the selected threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Counts {
    pub total: u64,
    pub masked: u64,
    pub non_finite: u64,
}

/// The outcome of a selection.
#[derive(Debug, Clone)]
pub(crate) struct Selection {
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
    Counted(Box<Tensor<1, Int>>, Option<f64>),
    /// `[masked, non_finite]` counted on the device against a selection whose state words
    /// (`[prefix, remaining, below, non_finite]`) give the threshold key in the gradients'
    /// dtype (the global scope).
    CountedSelected(Box<Tensor<1, Int>>, Box<Tensor<1, Int>>, DType),
    /// The state words of a one-gradient selection: counts and threshold, no counting pass.
    Selected(Box<Tensor<1, Int>>, DType),
}

/// The statistics of one gradient against its threshold, possibly still on the device:
/// [`resolve_stats`] reads every pending one of a step in one go.
#[derive(Debug, Clone)]
pub(crate) struct PendingStats {
    total: u64,
    source: Source,
}

impl PendingStats {
    /// Statistics known on the host.
    pub(crate) fn known(counts: Counts, threshold: Option<f64>) -> Self {
        Self {
            total: counts.total,
            source: Source::Known(counts, threshold),
        }
    }

    /// The statistics of `grad` from its `[masked, non_finite]` counted on the device, read
    /// with the rest of the step's.
    pub(crate) fn counted(grad: &DispatchTensor, counts: Tensor<1, Int>) -> Self {
        Self {
            total: grad.shape().num_elements() as u64,
            source: Source::Counted(Box::new(counts), None),
        }
    }

    /// The statistics of `grad`, the one gradient of a selection, from its state words.
    fn selected(grad: &DispatchTensor, state: Tensor<1, Int>) -> Self {
        Self {
            total: grad.shape().num_elements() as u64,
            source: Source::Selected(Box::new(state), grad.dtype()),
        }
    }

    /// These statistics with a threshold value known on the host.
    pub(crate) fn with_threshold(mut self, value: f64) -> Self {
        match &mut self.source {
            Source::Known(_, threshold) | Source::Counted(_, threshold) => *threshold = Some(value),
            Source::CountedSelected(..) | Source::Selected(..) => {}
        }
        self
    }

    fn device_words(&self) -> Vec<&Tensor<1, Int>> {
        match &self.source {
            Source::Known(..) => vec![],
            Source::Counted(counts, _) => vec![counts],
            Source::CountedSelected(counts, state, _) => vec![counts, state],
            Source::Selected(state, _) => vec![state],
        }
    }

    /// The counts and threshold, taking this gradient's words from `words` in the order of
    /// [`device_words`](Self::device_words).
    fn decode(self, words: &mut impl FnMut(usize) -> u64) -> (Counts, Option<f64>) {
        let total = self.total;
        let counts = |masked, non_finite| Counts {
            total,
            masked,
            non_finite,
        };
        // State words: the threshold is the prefix, at most +inf; "below" counts the entries
        // under the prefix, which is every finite entry once the prefix reaches +inf.
        let state = |words: &mut dyn FnMut(usize) -> u64, dtype, non_finite: Option<u64>| {
            let (prefix, _remaining, below, state_non_finite) =
                (words(0), words(0), words(0), words(0));
            let inf = inf_key(dtype).expect("a supported float dtype");
            let non_finite = non_finite.unwrap_or(state_non_finite);
            let masked = if prefix >= inf {
                total - non_finite
            } else {
                below
            };
            let value = key_to_f64(dtype, prefix.min(inf)).expect("a supported float dtype");
            (masked, non_finite, value)
        };
        match self.source {
            Source::Known(c, threshold) => (c, threshold),
            Source::Counted(_, threshold) => (counts(words(0), words(0)), threshold),
            Source::CountedSelected(_, _, dtype) => {
                let (masked, non_finite) = (words(0), words(0));
                let (_, _, value) = state(words, dtype, Some(non_finite));
                (counts(masked, non_finite), Some(value))
            }
            Source::Selected(_, dtype) => {
                let (masked, non_finite, value) = state(words, dtype, None);
                (counts(masked, non_finite), Some(value))
            }
        }
    }
}

/// The statistics of each entry of `pending`: every device-side word read back with one read
/// per device, in order.
pub(crate) fn resolve_stats(pending: Vec<PendingStats>) -> Vec<(Counts, Option<f64>)> {
    let tensors = pending
        .iter()
        .flat_map(PendingStats::device_words)
        .cloned()
        .collect();
    let mut words = read_per_device::<Int, i64>(tensors)
        .into_iter()
        .flatten()
        .map(|w| w as u64);
    let mut next = |_: usize| words.next().expect("a word per slot");
    pending.into_iter().map(|p| p.decode(&mut next)).collect()
}

/// The values of each of `tensors` (gradients of one step may live on several devices), read
/// back with one read per device: the tensors of a device are concatenated first.
pub(crate) fn read_per_device<K: Basic, E: Element>(tensors: Vec<Tensor<1, K>>) -> Vec<Vec<E>> {
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

/// A host-side selection: the threshold key, its value and the counts.
struct HostSelection {
    key: u64,
    counts: Vec<Counts>,
}

impl HostSelection {
    fn into_selection(self, grads: &[DispatchTensor], dtype: DType, collect: bool) -> Selection {
        let value = key_to_f64(dtype, self.key).expect("supported dtype");
        let stats = self
            .counts
            .into_iter()
            .map(|counts| PendingStats::known(counts, Some(value)));
        // One threshold tensor per device the gradients live on.
        let mut per_device: Vec<(Device, DispatchTensor)> = Vec::new();
        let thresholds = grads
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
            .collect();
        Selection {
            thresholds,
            stats: collect.then(|| stats.collect()),
        }
    }
}

/// A one-entry tensor of `dtype` holding `value` (exact when `value` comes from that dtype).
pub(crate) fn threshold_tensor(value: f64, dtype: DType, device: &Device) -> DispatchTensor {
    Tensor::<1>::from_data(TensorData::from([value]), (device, dtype)).into_dispatch()
}

/// The last-pass histogram of one gradient, kept sparse to count its masked entries once
/// the final digit is known.
struct LastPass {
    below: u64,
    digits: Vec<(usize, u64)>,
}

fn histogram(grad: &DispatchTensor, shift: u32, prefix: u64) -> Vec<u64> {
    let hist = <Dispatch as MaskOps>::abs_key_histogram(grad, shift, prefix);
    Tensor::<1, Int>::from_dispatch(hist)
        .into_data()
        .iter::<i64>()
        .map(|count| count as u64)
        .collect()
}

/// Selects the `(rank + 1)`-th smallest `|g|` over `grads` (all of `dtype`, a supported
/// float dtype, with `rank` below their total entry count), NaN ranking above `+inf`.
/// With `collect`, each gradient's masked and non-finite entries are counted against it and
/// the threshold's value is read (one read-back on a device; free on the host paths).
///
/// Gradients spread over several devices are selected by the host-driven passes: each
/// gradient's histogram is read back and merged on the host (no gradient leaves its
/// device), and the threshold is written on every device.
pub(crate) fn select(
    grads: &[DispatchTensor],
    dtype: DType,
    rank: u64,
    collect: bool,
) -> Selection {
    if let [grad] = grads
        && one_step(grad, dtype)
    {
        return select_one(grad, rank, collect);
    }
    let one_device = !several_devices(grads);
    if one_device && on_device(grads, dtype) {
        return select_on_device(grads, dtype, rank, collect);
    }
    let host = if one_device && on_host(grads) {
        select_on_host(grads, dtype, rank)
    } else {
        select_by_passes(grads, dtype, rank)
    };
    host.into_selection(grads, dtype, collect)
}

/// Whether `grads` live on more than one device.
fn several_devices(grads: &[DispatchTensor]) -> bool {
    grads
        .windows(2)
        .any(|pair| pair[0].device() != pair[1].device())
}

/// Whether a lone gradient is selected in one step ([`MaskOps::abs_key_select`]): on a CPU
/// backend whatever its size (one read of its storage in the common case), on a device when
/// it has at most [`SMALL_SELECT_MAX_ENTRIES`] entries (one launch instead of five).
fn one_step(grad: &DispatchTensor, dtype: DType) -> bool {
    let on_cpu = host_memory(&grad.device()) && !FORCE_DEVICE.get() && !FORCE_RADIX.get();
    let small = grad.shape().num_elements() <= SMALL_SELECT_MAX_ENTRIES;
    on_cpu || (small && on_device(std::slice::from_ref(grad), dtype))
}

/// One gradient selected in one step, straight to the state words, which also give its
/// statistics.
fn select_one(grad: &DispatchTensor, rank: u64, collect: bool) -> Selection {
    let state = <Dispatch as MaskOps>::abs_key_select(grad, rank);
    let threshold = <Dispatch as MaskOps>::radix_select_threshold(grad, state.clone());
    let stats = collect.then(|| vec![PendingStats::selected(grad, Tensor::from_dispatch(state))]);
    Selection {
        thresholds: vec![threshold],
        stats,
    }
}

/// The selection steps on the device (see the module docs): `2` histogram passes per f32
/// gradient, `1` per f16/bf16 gradient, one digit step per pass and one threshold write,
/// with no read-back unless `collect`.
fn select_on_device(grads: &[DispatchTensor], dtype: DType, rank: u64, collect: bool) -> Selection {
    let bits = key_bits(dtype).expect("selection on a supported float dtype");
    let like = &grads[0];
    let inf = inf_key(dtype).expect("selection on a supported float dtype");
    let mut selection = <Dispatch as MaskOps>::radix_select_start(like, rank);
    for pass in 0..bits / DIGIT_BITS {
        let shift = bits - DIGIT_BITS * (pass + 1);
        for grad in grads {
            selection = <Dispatch as MaskOps>::radix_select_count(grad, selection, shift);
        }
        // The first digit step also counts the non-finite entries (digits from +inf's up).
        let inf_digit = if pass == 0 {
            inf >> shift
        } else {
            DIGITS as u64
        };
        selection = <Dispatch as MaskOps>::radix_select_digit(selection, inf_digit as u32);
    }
    let threshold = <Dispatch as MaskOps>::radix_select_threshold(like, selection.clone());
    // Statistics stay on the device until `resolve_stats` reads the whole step's at once.
    let stats = collect.then(|| {
        // The four state words in a tensor of their own (`+ 0` materialises the slice), so
        // that statistics waiting to be read do not keep the 256 KiB buffer alive.
        let state = Tensor::<1, Int>::from_dispatch(selection)
            .slice(SELECTION_PREFIX..SELECTION_PREFIX + SELECTION_STATE_LEN)
            .add_scalar(0);
        if let [grad] = grads {
            // One gradient: the selection's own state words hold its statistics.
            return vec![PendingStats::selected(grad, state)];
        }
        grads
            .iter()
            .map(|g| PendingStats {
                total: g.shape().num_elements() as u64,
                source: Source::CountedSelected(
                    Box::new(device_count(g, &threshold)),
                    Box::new(state.clone()),
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

/// The statistics of `grad` masked against a threshold it did not select (a threshold kept
/// from an earlier step), counted in one pass; `value` is the threshold's, when known.
pub(crate) fn count_against(
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

/// `[masked, non_finite]` of `grad` against `threshold`, counted on the device.
fn device_count(grad: &DispatchTensor, threshold: &DispatchTensor) -> Tensor<1, Int> {
    Tensor::from_dispatch(<Dispatch as MaskOps>::abs_threshold_count(grad, threshold))
}

/// The radix passes driven from the host: each gradient's histogram read back per pass.
fn select_by_passes(grads: &[DispatchTensor], dtype: DType, rank: u64) -> HostSelection {
    let bits = key_bits(dtype).expect("selection on a supported float dtype");
    let inf = inf_key(dtype).expect("selection on a supported float dtype");
    let passes = bits / DIGIT_BITS;
    let mut counts = empty_counts(grads);
    let mut prefix = 0u64;
    let mut remaining = rank;
    let mut last: Vec<LastPass> = Vec::with_capacity(grads.len());
    for pass in 0..passes {
        let shift = bits - DIGIT_BITS * (pass + 1);
        let mut merged = vec![0u64; DIGITS];
        for (grad, count) in grads.iter().zip(counts.iter_mut()) {
            let hist = histogram(grad, shift, prefix);
            if pass == 0 {
                count.non_finite = non_finite_in(&hist, inf, shift);
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
            merged
                .iter_mut()
                .zip(&hist[..DIGITS])
                .for_each(|(m, h)| *m += h);
        }
        let (digit, before) = host::digit_of_rank(&merged, remaining);
        remaining -= before;
        prefix = (prefix << DIGIT_BITS) | digit as u64;
    }

    let key = prefix.min(inf);
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
    HostSelection { key, counts }
}

/// Statistics of gradients left whole (`frozen: false`: nothing masked) or frozen (every
/// finite entry masked), in one counting pass; no threshold value.
pub(crate) fn count_unselected(
    grads: &[DispatchTensor],
    dtype: DType,
    frozen: bool,
) -> Vec<PendingStats> {
    if several_devices(grads) {
        return grads
            .iter()
            .flat_map(|g| count_unselected(std::slice::from_ref(g), dtype, frozen))
            .collect();
    }
    if on_device(grads, dtype) {
        let value = if frozen { f64::INFINITY } else { 0.0 };
        let threshold = threshold_tensor(value, dtype, &grads[0].device().into());
        return grads
            .iter()
            .map(|g| PendingStats::counted(g, device_count(g, &threshold)))
            .collect();
    }
    count_non_finite(grads, dtype)
        .into_iter()
        .map(|mut counts| {
            if frozen {
                counts.masked = counts.total - counts.non_finite;
            }
            PendingStats::known(counts, None)
        })
        .collect()
}

/// Entry and non-finite counts of each gradient, read by the host in one pass.
fn count_non_finite(grads: &[DispatchTensor], dtype: DType) -> Vec<Counts> {
    if on_host(grads) {
        let inf = inf_key(dtype).expect("a supported float dtype");
        return grads
            .iter()
            .map(|g| count_keys(&host_keys(g), 0, inf))
            .collect();
    }
    let bits = key_bits(dtype).expect("a supported float dtype");
    let inf = inf_key(dtype).expect("a supported float dtype");
    let shift = bits - DIGIT_BITS;
    let mut counts = empty_counts(grads);
    for (grad, count) in grads.iter().zip(counts.iter_mut()) {
        count.non_finite = non_finite_in(&histogram(grad, shift, 0), inf, shift);
    }
    counts
}

fn total_entries(grads: &[DispatchTensor]) -> u64 {
    grads.iter().map(|g| g.shape().num_elements() as u64).sum()
}

/// The `|g|` keys of a (small) gradient, on the host.
fn host_keys(grad: &DispatchTensor) -> Vec<u64> {
    const MSG: &str = "gradient mask: reading a small gradient to the host failed";
    let data = try_read_sync(<Dispatch as FloatTensorOps<Dispatch>>::float_into_data(
        grad.clone(),
    ))
    .expect(MSG)
    .expect(MSG);
    with_mask_element!(data.dtype(), E => {
        data.as_slice::<E>().expect(MSG).iter().map(|x| x.abs_key()).collect()
    })
}

/// Counts of one gradient's keys against `key` (masked: finite keys below it).
fn count_keys(keys: &[u64], key: u64, inf: u64) -> Counts {
    Counts {
        total: keys.len() as u64,
        masked: keys.iter().filter(|&&k| k < key && k < inf).count() as u64,
        non_finite: keys.iter().filter(|&&k| k >= inf).count() as u64,
    }
}

/// [`select`] for small inputs: the keys of every gradient gathered on the host (at most
/// [`HOST_SELECT_MAX_ENTRIES`]) and an O(n) selection.
fn select_on_host(grads: &[DispatchTensor], dtype: DType, rank: u64) -> HostSelection {
    let inf = inf_key(dtype).expect("a supported float dtype");
    let keys: Vec<Vec<u64>> = grads.iter().map(host_keys).collect();
    let mut all: Vec<u64> = keys.concat();
    let (_, kth, _) = all.select_nth_unstable(rank as usize);
    let key = (*kth).min(inf);
    HostSelection {
        key,
        counts: keys.iter().map(|k| count_keys(k, key, inf)).collect(),
    }
}

fn empty_counts(grads: &[DispatchTensor]) -> Vec<Counts> {
    grads
        .iter()
        .map(|g| Counts {
            total: g.shape().num_elements() as u64,
            ..Counts::default()
        })
        .collect()
}

/// Non-finite entries of a first-pass histogram: the `+inf` key's top digit has zero low
/// bits for every supported dtype, so the digits from it up hold exactly the non-finite keys.
fn non_finite_in(first_pass: &[u64], inf: u64, shift: u32) -> u64 {
    first_pass[(inf >> shift) as usize..DIGITS].iter().sum()
}

/// The `(k + 1)`-th smallest `|g|` of `grad` (0-based rank `k`), exactly, in O(n) and without
/// sorting or copying the tensor. NaN ranks above `+inf`; the result is at most `+inf`.
/// Returns `None` when `k` is out of range or the dtype is not a float the mask supports.
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// let device = Device::default();
/// let g = Tensor::<1>::from_floats([0.5, -3.0, 0.0, 2.0, -1.0], &device);
/// assert_eq!(burn_gmt::select_kth_abs(&g, 0), Some(0.0));
/// assert_eq!(burn_gmt::select_kth_abs(&g, 2), Some(1.0));
/// assert_eq!(burn_gmt::select_kth_abs(&g, 4), Some(3.0));
/// assert_eq!(burn_gmt::select_kth_abs(&g, 5), None);
/// ```
pub fn select_kth_abs<const D: usize>(grad: &Tensor<D>, k: u64) -> Option<f64> {
    let dtype = grad.dtype();
    key_bits(dtype)?;
    if k >= grad.shape().num_elements() as u64 {
        return None;
    }
    let mut selection = select(&[grad.clone().into_dispatch()], dtype, k, false);
    Tensor::<1>::from_dispatch(selection.thresholds.remove(0))
        .into_data()
        .iter::<f64>()
        .next()
}
