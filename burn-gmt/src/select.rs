//! Exact k-th magnitude selection by radix select over histograms of `|g|` keys.
//!
//! A pass histograms one 16-bit digit of the key of every entry whose higher digits match
//! the prefix chosen so far; a scan of the (summed) histogram picks the next digit. An f32
//! gradient needs 2 passes, f16/bf16 one, f64 four: O(n) work, no sort, no copy of the
//! gradient. Several gradients (the [`Global`](crate::MaskScope::Global) scope) are selected
//! together by summing their histograms, so memory stays one histogram per tensor at most.

use burn::backend::ops::FloatTensorOps;
use burn::backend::{Dispatch, DispatchTensor, TensorMetadata};
use burn::tensor::{DType, Int, Tensor, try_read_sync};
use burn_gmt_kernels::element::MaskElement;
use burn_gmt_kernels::element::{
    BELOW_PREFIX_BIN, DIGIT_BITS, DIGITS, inf_key, key_bits, key_to_f64,
};
use burn_gmt_kernels::{MaskOps, with_mask_element};

/// Up to this many entries in all, selection reads the keys to the host and runs an O(n)
/// `select_nth_unstable`: a histogram pass has a fixed cost of one 65,536-bin table, which
/// dominates on small tensors (biases, norms, small layers).
pub const HOST_SELECT_MAX_ENTRIES: u64 = 1 << 16;

thread_local! {
    static FORCE_RADIX: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with every selection on this thread going through the histogram passes, even
/// for small inputs: lets tests check both selection paths against the same reference.
#[doc(hidden)]
pub fn with_radix_select<R>(f: impl FnOnce() -> R) -> R {
    let previous = FORCE_RADIX.replace(true);
    let out = f();
    FORCE_RADIX.set(previous);
    out
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
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Selection {
    /// Key of the threshold: entries whose `|g|` key is below it are masked. At most the key
    /// of `+inf`, so non-finite entries are never masked.
    pub key: u64,
    /// The threshold's value.
    pub threshold: f64,
    /// Per gradient, in input order.
    pub counts: Vec<Counts>,
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

/// Selects the key of the `(rank + 1)`-th smallest `|g|` over `grads` (all of `dtype`, a
/// supported float dtype, with `rank` below their total entry count), NaN ranking above
/// `+inf`, and counts each gradient's masked and non-finite entries against it.
pub(crate) fn select(grads: &[DispatchTensor], dtype: DType, rank: u64) -> Selection {
    if on_host(grads) {
        return select_on_host(grads, dtype, rank);
    }
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
        let mut before = 0u64;
        let digit = merged
            .iter()
            .position(|&c| {
                let found = remaining < before + c;
                if !found {
                    before += c;
                }
                found
            })
            .expect("rank below the number of entries in the prefix");
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
    Selection {
        key,
        threshold: key_to_f64(dtype, key).expect("supported dtype"),
        counts,
    }
}

/// Entry and non-finite counts of each gradient, in one histogram pass; nothing masked.
pub(crate) fn count_non_finite(grads: &[DispatchTensor], dtype: DType) -> Vec<Counts> {
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
fn select_on_host(grads: &[DispatchTensor], dtype: DType, rank: u64) -> Selection {
    let inf = inf_key(dtype).expect("a supported float dtype");
    let keys: Vec<Vec<u64>> = grads.iter().map(host_keys).collect();
    let mut all: Vec<u64> = keys.concat();
    let (_, kth, _) = all.select_nth_unstable(rank as usize);
    let key = (*kth).min(inf);
    Selection {
        key,
        threshold: key_to_f64(dtype, key).expect("supported dtype"),
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
    Some(select(&[grad.clone().into_dispatch()], dtype, k).threshold)
}
