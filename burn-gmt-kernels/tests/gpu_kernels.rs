//! The CubeCL kernels of `MaskOps` on the GPU under test (wgpu, on Mesa's lavapipe in CI: a
//! real Vulkan driver on the CPU; CUDA or ROCm when built with those features), each compared
//! bit for bit with the host reference of `burn_gmt_kernels::host`, through the public
//! dispatch path (`Dispatch as MaskOps`, which a GPU device routes to `Fusion<CubeBackend>`).
//!
//! Without a device each test prints `skipped: <name> (no ... device)` and passes, unless
//! `GMT_REQUIRE_WGPU=1` (wgpu) or `GMT_REQUIRE_GPU=1` turns a missing device into a failure.
#![cfg(any(feature = "wgpu", feature = "cuda", feature = "rocm"))]

mod common;

use burn::backend::Dispatch;
use burn::tensor::{DType, Device, Int, Tensor, TensorData, bf16, f16};
use burn_gmt_kernels::MaskOps;
use burn_gmt_kernels::buffer::{
    DIGIT_BITS, DIGITS, HISTOGRAM_LEN, SELECTION_LEN, SMALL_SELECT_MAX_ENTRIES, SelectionState,
    selection_histogram,
};
use burn_gmt_kernels::element::MaskElement;
use burn_gmt_kernels::host;
use burn_gmt_kernels::random::{draw_key, ratio_bound};
use common::{TestFloat, gpu_device, has_dtype, sample};

const SIZES: [usize; 9] = [1, 2, 3, 255, 256, 257, 4095, 1 << 20, (1 << 20) + 7];

fn tensor<E: TestFloat, const D: usize>(
    values: &[E],
    shape: [usize; D],
    device: &Device,
) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), (device, E::DTYPE))
}

fn read<E: TestFloat, const D: usize>(tensor: Tensor<D>) -> Vec<E> {
    tensor.into_data().try_to_vec::<E>().expect("dtype")
}

fn assert_bits<E: TestFloat>(got: &[E], expected: &[E], context: &str) {
    assert_eq!(got.len(), expected.len(), "{context}: length");
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert_eq!(
            g.bits(),
            e.bits(),
            "{context}: entry {i}: got {g:?}, expected {e:?}"
        );
    }
}

/// Thresholds worth testing on `values`: nothing masked, the smallest subnormal, a tie value,
/// the values at about 30% and 90% of the sorted keys, and +inf (every finite entry masked).
fn thresholds<E: TestFloat>(values: &[E]) -> Vec<E> {
    let mut keys: Vec<u64> = values.iter().map(|x| x.abs_key().min(E::INF_KEY)).collect();
    keys.sort_unstable();
    let at = |q: f64| E::from_key(keys[((keys.len() - 1) as f64 * q) as usize]);
    vec![
        E::zero(),
        E::from_key(1),
        E::from_f64(0.25),
        at(0.3),
        at(0.9),
        E::from_key(E::INF_KEY),
    ]
}

fn device_mask<E: TestFloat, const D: usize>(
    grad: Tensor<D>,
    threshold: E,
    device: &Device,
) -> Vec<E> {
    let threshold = tensor(&[threshold], [1], device);
    read(Tensor::<D>::from_dispatch(
        <Dispatch as MaskOps>::abs_threshold_mask(grad.into_dispatch(), threshold.into_dispatch()),
    ))
}

fn device_select<E: TestFloat, const D: usize>(
    grad: Tensor<D>,
    threshold: E,
    updated: Tensor<D>,
    previous: Tensor<D>,
    device: &Device,
) -> Vec<E> {
    let threshold = tensor(&[threshold], [1], device);
    read(Tensor::<D>::from_dispatch(
        <Dispatch as MaskOps>::abs_threshold_select(
            grad.into_dispatch(),
            threshold.into_dispatch(),
            updated.into_dispatch(),
            previous.into_dispatch(),
        ),
    ))
}

/// An integer tensor of counters read back, widened to `u64` (the device counts in `u32`).
fn words(tensor: burn::backend::DispatchTensor) -> Vec<u64> {
    Tensor::<1, Int>::from_dispatch(tensor)
        .into_data()
        .iter::<i64>()
        .map(|w| w as u64)
        .collect()
}

fn device_histogram<const D: usize>(grad: &Tensor<D>, shift: u32, prefix: u64) -> Vec<u64> {
    let hist =
        <Dispatch as MaskOps>::abs_key_histogram(&grad.clone().into_dispatch(), shift, prefix);
    words(hist)
}

fn host_mask<E: TestFloat>(values: &[E], threshold: E) -> Vec<E> {
    let mut out = values.to_vec();
    host::abs_threshold_mask(&mut out, threshold.abs_key());
    out
}

fn host_histogram<E: TestFloat>(values: &[E], shift: u32, prefix: u64) -> Vec<u64> {
    let mut hist = vec![0u64; HISTOGRAM_LEN];
    host::abs_key_histogram(values, shift, prefix, &mut hist);
    hist
}

fn assert_histogram(got: &[u64], expected: &[u64], context: &str) {
    assert_eq!(got.len(), HISTOGRAM_LEN, "{context}: histogram length");
    if let Some(bin) = (0..HISTOGRAM_LEN).find(|&b| got[b] != expected[b]) {
        panic!(
            "{context}: bin {bin}: got {}, expected {} (totals {} and {})",
            got[bin],
            expected[bin],
            got.iter().sum::<u64>(),
            expected.iter().sum::<u64>()
        );
    }
}

/// The (shift, prefix) passes to check on `values`: every pass of the radix select towards the
/// key at about 30%, then prefixes matching nothing, zeros only, and above everything.
fn passes<E: TestFloat>(values: &[E]) -> Vec<(u32, u64)> {
    let mut keys: Vec<u64> = values.iter().map(|x| x.abs_key()).collect();
    keys.sort_unstable();
    let target = keys[(keys.len() - 1) * 3 / 10];
    let mut out = Vec::new();
    let mut shift = E::KEY_BITS;
    while shift >= DIGIT_BITS {
        shift -= DIGIT_BITS;
        let prefix = target.checked_shr(shift + DIGIT_BITS).unwrap_or(0);
        out.push((shift, prefix));
    }
    out.push((0, 0));
    out.push((0, 1));
    out.push((0, 1 << 20));
    if E::KEY_BITS > DIGIT_BITS {
        out.push((8, 3));
        out.push((0, (E::INF_KEY >> DIGIT_BITS) + 1));
    }
    out
}

fn check_mask<E: TestFloat>(device: &Device) {
    for (case, n) in SIZES.into_iter().enumerate() {
        let values = sample::<E>(n, case as u64 + 1);
        for threshold in thresholds(&values) {
            let got = device_mask(tensor(&values, [n], device), threshold, device);
            let context = format!("mask {:?} n={n} T={threshold:?}", E::DTYPE);
            assert_bits(&got, &host_mask(&values, threshold), &context);
        }
    }
}

fn check_select<E: TestFloat>(device: &Device) {
    for (case, n) in SIZES.into_iter().enumerate() {
        let grad = sample::<E>(n, case as u64 + 11);
        let updated = sample::<E>(n, case as u64 + 21);
        let previous = sample::<E>(n, case as u64 + 31);
        for threshold in thresholds(&grad) {
            let got = device_select(
                tensor(&grad, [n], device),
                threshold,
                tensor(&updated, [n], device),
                tensor(&previous, [n], device),
                device,
            );
            let mut expected = updated.clone();
            host::abs_threshold_select(&grad, threshold.abs_key(), &mut expected, &previous);
            let context = format!("select {:?} n={n} T={threshold:?}", E::DTYPE);
            assert_bits(&got, &expected, &context);
        }
    }
}

fn check_histogram<E: TestFloat>(device: &Device) {
    for (case, n) in SIZES.into_iter().enumerate() {
        let values = sample::<E>(n, case as u64 + 41);
        let grad = tensor(&values, [n], device);
        for (shift, prefix) in passes(&values) {
            let got = device_histogram(&grad, shift, prefix);
            let context = format!(
                "histogram {:?} n={n} shift={shift} prefix={prefix}",
                E::DTYPE
            );
            assert_histogram(&got, &host_histogram(&values, shift, prefix), &context);
        }
    }
}

#[test]
fn threshold_mask_matches_host_on_gpu() {
    let Some(device) = gpu_device("threshold_mask_matches_host_on_gpu") else {
        return;
    };
    check_mask::<f32>(&device);
    if has_dtype(&device, DType::F16, "threshold_mask_matches_host_on_gpu") {
        check_mask::<f16>(&device);
    }
    if has_dtype(&device, DType::BF16, "threshold_mask_matches_host_on_gpu") {
        check_mask::<bf16>(&device);
    }
}

#[test]
fn threshold_select_matches_host_on_gpu() {
    let Some(device) = gpu_device("threshold_select_matches_host_on_gpu") else {
        return;
    };
    check_select::<f32>(&device);
    if has_dtype(&device, DType::F16, "threshold_select_matches_host_on_gpu") {
        check_select::<f16>(&device);
    }
    if has_dtype(&device, DType::BF16, "threshold_select_matches_host_on_gpu") {
        check_select::<bf16>(&device);
    }
}

#[test]
fn key_histogram_matches_host_on_gpu() {
    let Some(device) = gpu_device("key_histogram_matches_host_on_gpu") else {
        return;
    };
    check_histogram::<f32>(&device);
    if has_dtype(&device, DType::F16, "key_histogram_matches_host_on_gpu") {
        check_histogram::<f16>(&device);
    }
    if has_dtype(&device, DType::BF16, "key_histogram_matches_host_on_gpu") {
        check_histogram::<bf16>(&device);
    }
}

/// One value repeated (a single hot bin), and all zeros: the contended cases of the histogram.
#[test]
fn ties_and_zeros_on_gpu() {
    let Some(device) = gpu_device("ties_and_zeros_on_gpu") else {
        return;
    };
    let n = (1 << 20) + 3;
    for value in [0.0f32, -0.0, 0.375, f32::from_bits(5), f32::MAX] {
        let values = vec![value; n];
        let grad = tensor(&values, [n], &device);
        for (shift, prefix) in passes(&values) {
            let got = device_histogram(&grad, shift, prefix);
            let context = format!("histogram of {value:?} shift={shift} prefix={prefix}");
            assert_histogram(&got, &host_histogram(&values, shift, prefix), &context);
        }
        for threshold in [0.0f32, value.abs(), f32::INFINITY] {
            let got = device_mask(grad.clone(), threshold, &device);
            assert_bits(
                &got,
                &host_mask(&values, threshold),
                &format!("mask of {value:?}"),
            );
        }
    }
    // Two hot values, one of them zero, interleaved (f16).
    if !has_dtype(&device, DType::F16, "ties_and_zeros_on_gpu") {
        return;
    }
    let values: Vec<f16> = (0..n)
        .map(|i| f16::from_f32(if i % 3 == 0 { 0.0 } else { -2.5 }))
        .collect();
    let grad = tensor(&values, [n], &device);
    let got = device_histogram(&grad, 0, 0);
    assert_histogram(
        &got,
        &host_histogram(&values, 0, 0),
        "histogram of f16 ties",
    );
}

/// Transposed (non-contiguous) inputs, row-major order of the logical tensor.
#[test]
fn non_contiguous_inputs_on_gpu() {
    let Some(device) = gpu_device("non_contiguous_inputs_on_gpu") else {
        return;
    };
    for (rows, cols) in [(1, 1), (3, 5), (17, 255), (1024, 1025)] {
        let values = sample::<f32>(rows * cols, (rows * cols) as u64);
        let others = sample::<f32>(rows * cols, 7);
        // `values` laid out [cols, rows], seen transposed as [rows, cols].
        let logical: Vec<f32> = (0..rows)
            .flat_map(|r| (0..cols).map(move |c| (r, c)))
            .map(|(r, c)| values[c * rows + r])
            .collect();
        let grad = || tensor(&values, [cols, rows], &device).transpose();
        let context = format!("transposed {rows}x{cols}");
        for threshold in thresholds(&logical) {
            let got = device_mask(grad(), threshold, &device);
            assert_bits(&got, &host_mask(&logical, threshold), &context);

            let got = device_select(
                grad(),
                threshold,
                tensor(&others, [rows, cols], &device),
                tensor(&logical, [rows, cols], &device).zeros_like(),
                &device,
            );
            let mut expected = others.clone();
            host::abs_threshold_select(
                &logical,
                threshold.abs_key(),
                &mut expected,
                &vec![0.0; rows * cols],
            );
            assert_bits(&got, &expected, &format!("select {context}"));
        }
        for (shift, prefix) in passes(&logical) {
            let got = device_histogram(&grad(), shift, prefix);
            assert_histogram(&got, &host_histogram(&logical, shift, prefix), &context);
        }
    }
}

/// A gradient that is still held elsewhere is not written in place.
#[test]
fn shared_inputs_are_not_overwritten_on_gpu() {
    let Some(device) = gpu_device("shared_inputs_are_not_overwritten_on_gpu") else {
        return;
    };
    let n = 4099;
    let values = sample::<f32>(n, 5);
    let grad = tensor(&values, [n], &device);
    let threshold = thresholds(&values)[3];
    let masked = device_mask(grad.clone(), threshold, &device);
    assert_bits(&masked, &host_mask(&values, threshold), "masked copy");
    assert_bits(&read::<f32, 1>(grad.clone()), &values, "the held gradient");

    let updated = tensor(&sample::<f32>(n, 6), [n], &device);
    let previous = tensor(&sample::<f32>(n, 7), [n], &device);
    let before = read::<f32, 1>(updated.clone());
    let _ = device_select(grad, threshold, updated.clone(), previous, &device);
    assert_bits(&read::<f32, 1>(updated), &before, "the held update");
}

/// The counting kernel of the statistics against the host count, every size and threshold,
/// and on a transposed input.
#[test]
fn threshold_count_matches_host_on_gpu() {
    let Some(device) = gpu_device("threshold_count_matches_host_on_gpu") else {
        return;
    };
    fn check<E: TestFloat>(device: &Device) {
        for (case, n) in SIZES.into_iter().enumerate() {
            let values = sample::<E>(n, case as u64 + 71);
            let grad = tensor(&values, [n], device);
            for threshold in thresholds(&values) {
                let got = device_count(&grad, threshold, device);
                let expected = host::abs_threshold_count(&values, threshold.abs_key());
                let context = format!("count {:?} n={n} T={threshold:?}", E::DTYPE);
                assert_eq!(got, [expected.masked, expected.non_finite], "{context}");
            }
        }
    }
    check::<f32>(&device);
    if has_dtype(&device, DType::F16, "threshold_count_matches_host_on_gpu") {
        check::<f16>(&device);
    }
    if has_dtype(&device, DType::BF16, "threshold_count_matches_host_on_gpu") {
        check::<bf16>(&device);
    }
    let (rows, cols) = (333, 517);
    let values = sample::<f32>(rows * cols, 3);
    let logical: Vec<f32> = (0..rows)
        .flat_map(|r| (0..cols).map(move |c| (r, c)))
        .map(|(r, c)| values[c * rows + r])
        .collect();
    let grad = tensor(&values, [cols, rows], &device).transpose();
    for threshold in thresholds(&logical) {
        let expected = host::abs_threshold_count(&logical, threshold.abs_key());
        assert_eq!(
            device_count(&grad, threshold, &device),
            [expected.masked, expected.non_finite],
            "transposed count T={threshold:?}"
        );
    }
}

fn device_count<E: TestFloat, const D: usize>(
    grad: &Tensor<D>,
    threshold: E,
    device: &Device,
) -> [u64; 2] {
    let threshold = tensor(&[threshold], [1], device);
    let counts = <Dispatch as MaskOps>::abs_threshold_count(
        &grad.clone().into_dispatch(),
        &threshold.into_dispatch(),
    );
    let got = words(counts);
    [got[0], got[1]]
}

/// The on-device selection steps one by one against a host sort: the buffer after each digit
/// step holds the key prefix of the sought rank, and the threshold is that key's value.
#[test]
fn radix_select_steps_match_host_sort_on_gpu() {
    let Some(device) = gpu_device("radix_select_steps_match_host_sort_on_gpu") else {
        return;
    };
    // The three ranks of each size are three selections in one buffer, one segment each, as
    // a step's per-tensor selections are made: every step serves every segment at once.
    fn check<E: TestFloat>(device: &Device) {
        for (case, n) in SIZES.into_iter().enumerate() {
            let values = sample::<E>(n, case as u64 + 81);
            let grad = tensor(&values, [n], device).into_dispatch();
            let mut keys: Vec<u64> = values.iter().map(|x| x.abs_key()).collect();
            keys.sort_unstable();
            let ranks = [0, n / 3, n - 1];
            let ranks_u64 = ranks.iter().map(|&r| r as u64).collect();
            let mut selection = <Dispatch as MaskOps>::radix_select_start(&grad, ranks_u64);
            let mut shift = E::KEY_BITS;
            let non_finite = keys.iter().filter(|&&k| k >= E::INF_KEY).count() as u64;
            while shift > 0 {
                let first = shift == E::KEY_BITS;
                shift -= DIGIT_BITS;
                let inf_digit = if first {
                    E::INF_KEY >> shift
                } else {
                    DIGITS as u64
                };
                for segment in 0..ranks.len() as u32 {
                    selection =
                        <Dispatch as MaskOps>::radix_select_count(&grad, selection, shift, segment);
                }
                selection = <Dispatch as MaskOps>::radix_select_digit(selection, inf_digit as u32);
                let buffer = words(selection.clone());
                assert_eq!(buffer.len(), ranks.len() * SELECTION_LEN, "buffer length");
                for (segment, own) in buffer.chunks(SELECTION_LEN).enumerate() {
                    let rank = ranks[segment];
                    let target = keys[rank];
                    let context = format!("{:?} n={n} rank={rank} shift={shift}", E::DTYPE);
                    let below = keys
                        .iter()
                        .filter(|&&k| k >> shift < target >> shift)
                        .count() as u64;
                    let expected = SelectionState {
                        key: target >> shift,
                        remaining: rank as u64 - below,
                        below,
                        non_finite,
                    };
                    assert_eq!(SelectionState::from_words(own), expected, "{context}");
                    let hist = selection_histogram(own);
                    assert_eq!(hist.len(), HISTOGRAM_LEN, "{context}: histogram length");
                    assert!(hist.iter().all(|&w| w == 0), "{context}: cleared");
                }
            }
            let threshold = <Dispatch as MaskOps>::radix_select_threshold(&grad, selection);
            let got = read::<E, 1>(Tensor::from_dispatch(threshold));
            let expected: Vec<E> = ranks
                .iter()
                .map(|&rank| E::from_key(keys[rank].min(E::INF_KEY)))
                .collect();
            assert_bits(&got, &expected, &format!("thresholds {:?} n={n}", E::DTYPE));
        }
    }
    check::<f32>(&device);
    if has_dtype(
        &device,
        DType::F16,
        "radix_select_steps_match_host_sort_on_gpu",
    ) {
        check::<f16>(&device);
    }
    if has_dtype(
        &device,
        DType::BF16,
        "radix_select_steps_match_host_sort_on_gpu",
    ) {
        check::<bf16>(&device);
    }
}

/// The random mask and its counts against the host: the same draws (SplitMix64 in 32-bit
/// halves on the device), the same rescaling, every size, ratios 0, 0.3 and 1 (every finite
/// entry), f32 and f16.
#[test]
fn random_mask_matches_host_on_gpu() {
    let Some(device) = gpu_device("random_mask_matches_host_on_gpu") else {
        return;
    };
    fn check<E: TestFloat>(device: &Device) {
        for (case, n) in SIZES.into_iter().enumerate() {
            let values = sample::<E>(n, case as u64 + 91);
            for (ratio, scale) in [(0.3, 1.0), (0.3, 1.0 / 0.7), (0.0, 1.0), (1.0, 1.0)] {
                let key = draw_key(7, case as u64, 3);
                let bound = ratio_bound(ratio);
                let context = format!("random {:?} n={n} r={ratio} s={scale}", E::DTYPE);
                let grad = tensor(&values, [n], device);
                let counts = <Dispatch as MaskOps>::random_mask_count(
                    &grad.clone().into_dispatch(),
                    key,
                    bound,
                );
                let got = read::<E, 1>(Tensor::from_dispatch(<Dispatch as MaskOps>::random_mask(
                    grad.into_dispatch(),
                    key,
                    bound,
                    scale,
                )));
                let mut expected = values.clone();
                let host_counts = host::random_mask(&mut expected, key, bound, scale);
                assert_bits(&got, &expected, &context);
                let counts = words(counts);
                assert_eq!(
                    counts,
                    [host_counts.masked, host_counts.non_finite],
                    "{context}: counts"
                );
            }
        }
    }
    check::<f32>(&device);
    if has_dtype(&device, DType::F16, "random_mask_matches_host_on_gpu") {
        check::<f16>(&device);
    }
    if has_dtype(&device, DType::BF16, "random_mask_matches_host_on_gpu") {
        check::<bf16>(&device);
    }
}

/// The one-launch selection of small tensors against a host sort: the state words (selected
/// key, rank left within its ties, keys below it, non-finite keys) at every rank class, on
/// random values and on all-equal ones.
#[test]
fn small_select_matches_host_sort_on_gpu() {
    let Some(device) = gpu_device("small_select_matches_host_sort_on_gpu") else {
        return;
    };
    fn check<E: TestFloat>(device: &Device) {
        let sizes = SIZES.into_iter().filter(|&n| n <= SMALL_SELECT_MAX_ENTRIES);
        for (case, n) in sizes.enumerate() {
            for values in [
                sample::<E>(n, case as u64 + 101),
                vec![E::from_f64(-0.75); n],
            ] {
                let grad = tensor(&values, [n], device).into_dispatch();
                let mut keys: Vec<u64> = values.iter().map(|x| x.abs_key()).collect();
                keys.sort_unstable();
                let non_finite = keys.iter().filter(|&&k| k >= E::INF_KEY).count() as u64;
                for rank in [0, n / 3, n / 2, n - 1] {
                    let state = <Dispatch as MaskOps>::abs_key_select(&grad, rank as u64);
                    let got = SelectionState::from_words(&words(state));
                    let key = keys[rank];
                    let below = keys.iter().filter(|&&k| k < key).count() as u64;
                    let expected = SelectionState {
                        key,
                        remaining: rank as u64 - below,
                        below,
                        non_finite,
                    };
                    assert_eq!(got, expected, "{:?} n={n} rank={rank}", E::DTYPE);
                }
            }
        }
    }
    check::<f32>(&device);
    if has_dtype(&device, DType::F16, "small_select_matches_host_sort_on_gpu") {
        check::<f16>(&device);
    }
    if has_dtype(
        &device,
        DType::BF16,
        "small_select_matches_host_sort_on_gpu",
    ) {
        check::<bf16>(&device);
    }
}

#[test]
fn histogram_dtype_is_u32_on_gpu() {
    let Some(device) = gpu_device("histogram_dtype_is_u32_on_gpu") else {
        return;
    };
    let grad = tensor(&sample::<f32>(300, 9), [300], &device);
    let hist = <Dispatch as MaskOps>::abs_key_histogram(&grad.into_dispatch(), 16, 0);
    let hist = Tensor::<1, Int>::from_dispatch(hist);
    assert_eq!(hist.dtype(), DType::U32);
    assert_eq!(hist.dims(), [DIGITS + 1]);
}

/// The state words and the masked gradient a sort gives for the `rank` smallest `|g|` of
/// `values`: the two-pass mask's result, which the one-pass mask must equal.
fn sorted_mask_rank<E: TestFloat>(values: &[E], rank: usize) -> (SelectionState, Vec<E>) {
    let mut keys: Vec<u64> = values.iter().map(|x| x.abs_key()).collect();
    keys.sort_unstable();
    let key = keys[rank];
    let below = keys.iter().filter(|&&k| k < key).count() as u64;
    let state = SelectionState {
        key,
        remaining: rank as u64 - below,
        below,
        non_finite: keys.iter().filter(|&&k| k >= E::INF_KEY).count() as u64,
    };
    let threshold = E::from_key(key.min(E::INF_KEY));
    (state, host_mask(values, threshold))
}

/// The one-pass mask of `values` at `rank` on the device: the masked gradient and the state.
fn device_mask_rank<E: TestFloat>(
    values: &[E],
    rank: usize,
    device: &Device,
) -> (SelectionState, Vec<E>) {
    let grad = tensor(values, [values.len()], device).into_dispatch();
    let (masked, state) = <Dispatch as MaskOps>::abs_key_mask_rank(grad, rank as u64);
    let state = SelectionState::from_words(&words(state));
    (state, read(Tensor::<1>::from_dispatch(masked)))
}

fn check_mask_rank<E: TestFloat>(values: &[E], ranks: &[usize], device: &Device, context: &str) {
    for &rank in ranks {
        let (state, masked) = device_mask_rank(values, rank, device);
        let (expected_state, expected) = sorted_mask_rank(values, rank);
        let context = format!("{context} {:?} n={} rank={rank}", E::DTYPE, values.len());
        assert_eq!(state, expected_state, "{context}");
        assert_bits(&masked, &expected, &context);
    }
}

/// The one-pass mask (and the two-pass mask it takes over from at 4,096 entries and below)
/// equals the sort's mask and statistics, on awkward values and on ties.
#[test]
fn one_pass_mask_matches_host_sort_on_gpu() {
    let Some(device) = gpu_device("one_pass_mask_matches_host_sort_on_gpu") else {
        return;
    };
    fn check<E: TestFloat>(device: &Device) {
        for (case, n) in [4096, 4097, 65_537, (1 << 20) + 7].into_iter().enumerate() {
            let ranks = [0, n / 3, (7 * n) / 10, n - 1];
            check_mask_rank(&sample::<E>(n, case as u64 + 201), &ranks, device, "sample");
            // All tied, and ties at zero among a few others.
            check_mask_rank(&vec![E::from_f64(-0.75); n], &ranks, device, "ties");
            let zeros: Vec<E> = (0..n)
                .map(|i| E::from_f64(if i % 5 == 0 { 1.5 } else { 0.0 }))
                .collect();
            check_mask_rank(&zeros, &ranks, device, "zeros");
        }
    }
    check::<f32>(&device);
    if has_dtype(
        &device,
        DType::F16,
        "one_pass_mask_matches_host_sort_on_gpu",
    ) {
        check::<f16>(&device);
    }
    if has_dtype(
        &device,
        DType::BF16,
        "one_pass_mask_matches_host_sort_on_gpu",
    ) {
        check::<bf16>(&device);
    }
}

/// A transposed input is masked in its logical (row-major) order, and an input held elsewhere
/// is left as it was (the pass writes a new tensor either way).
#[test]
fn one_pass_mask_of_transposed_and_shared_inputs_on_gpu() {
    let Some(device) = gpu_device("one_pass_mask_of_transposed_and_shared_inputs_on_gpu") else {
        return;
    };
    let (rows, cols) = (1024, 1025);
    let n = rows * cols;
    let values = sample::<f32>(n, 501);
    let logical: Vec<f32> = (0..rows)
        .flat_map(|r| (0..cols).map(move |c| (r, c)))
        .map(|(r, c)| values[c * rows + r])
        .collect();
    let held = tensor(&values, [cols, rows], &device);
    let grad = held.clone().transpose().into_dispatch();
    let (masked, state) = <Dispatch as MaskOps>::abs_key_mask_rank(grad, n as u64 / 3);
    let (expected_state, expected) = sorted_mask_rank(&logical, n / 3);
    assert_eq!(SelectionState::from_words(&words(state)), expected_state);
    assert_bits(
        &read(Tensor::<2>::from_dispatch(masked)),
        &expected,
        "transposed",
    );
    assert_bits(&read(held), &values, "the held input");
}

/// A bracket that misses on either side, or whose entries overflow their buffer, still
/// gives the exact mask: the pass wrote a new tensor, and the mask runs again from the input.
#[cfg(feature = "testing")]
#[test]
fn one_pass_mask_survives_a_missed_bracket_on_gpu() {
    use burn_gmt_kernels::testing::{BracketMiss, with_bracket_miss};
    let Some(device) = gpu_device("one_pass_mask_survives_a_missed_bracket_on_gpu") else {
        return;
    };
    fn check<E: TestFloat>(device: &Device) {
        let n = 70_001;
        let values = sample::<E>(n, 301);
        // Ranks above the zeros (a bracket forced to key 0 then misses high) and below the
        // finite entries (one forced above them misses low).
        let ranks = [n / 3, n / 2, (7 * n) / 10];
        for miss in [BracketMiss::Low, BracketMiss::High, BracketMiss::Overfull] {
            let context = format!("{miss:?}");
            with_bracket_miss(miss, || check_mask_rank(&values, &ranks, device, &context));
        }
    }
    check::<f32>(&device);
    if has_dtype(
        &device,
        DType::F16,
        "one_pass_mask_survives_a_missed_bracket_on_gpu",
    ) {
        check::<f16>(&device);
    }
    if has_dtype(
        &device,
        DType::BF16,
        "one_pass_mask_survives_a_missed_bracket_on_gpu",
    ) {
        check::<bf16>(&device);
    }
}

/// The per-tensor selections of many gradients at once and their batched masks
/// (`select_abs_each`, then `mask_below_each` against the shared thresholds): sizes with and
/// without a vector tail, small tensors that would be selected alone, an empty one, and more
/// gradients than one batched launch binds (`LIST_MAX_TENSORS`), each masked exactly as a
/// sort of its own keys says.
fn check_batched<E: TestFloat>(device: &Device) {
    use burn_gmt_kernels::buffer::LIST_MAX_TENSORS;
    use burn_gmt_kernels::mask::{mask_below_each, select_abs_each};
    let sizes: Vec<usize> = (0..LIST_MAX_TENSORS + 5)
        .map(|i| match i % 6 {
            0 => 5_000 + i,
            1 => 3 * 4099,
            2 => 1 + i % 7,
            3 => 576,
            4 => 70_001,
            _ => 4_096,
        })
        .collect();
    let values: Vec<Vec<E>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| sample::<E>(n, 900 + i as u64))
        .collect();
    let grads: Vec<_> = values
        .iter()
        .map(|v| tensor(v, [v.len()], device).into_dispatch())
        .collect();
    let ranks: Vec<u64> = sizes.iter().map(|&n| (3 * n as u64) / 10).collect();
    let selection = select_abs_each(&grads, &ranks, false);
    let shared: Vec<_> = selection
        .shared
        .iter()
        .map(|s| {
            s.clone()
                .expect("every gradient selected together on a device")
        })
        .collect();
    assert!(
        shared
            .windows(2)
            .all(|w| std::sync::Arc::ptr_eq(&w[0].thresholds, &w[1].thresholds)),
        "one threshold tensor for the batch"
    );
    let slots = shared.iter().map(|s| s.slot).collect();
    let masked = mask_below_each(grads, (*shared[0].thresholds).clone(), slots);
    for (i, (got, vals)) in masked.into_iter().zip(&values).enumerate() {
        let mut keys: Vec<u64> = vals.iter().map(|x| x.abs_key()).collect();
        keys.sort_unstable();
        let threshold = E::from_key(keys[ranks[i] as usize].min(E::INF_KEY));
        let got = read::<E, 1>(Tensor::from_dispatch(got));
        let context = format!("{:?} batched gradient {i} of {}", E::DTYPE, vals.len());
        assert_bits(&got, &host_mask(vals, threshold), &context);
    }
}

#[test]
fn batched_selection_and_mask_match_host_sort_on_gpu() {
    let test = "batched_selection_and_mask_match_host_sort_on_gpu";
    let Some(device) = gpu_device(test) else {
        return;
    };
    check_batched::<f32>(&device);
    if has_dtype(&device, DType::F16, test) {
        check_batched::<f16>(&device);
    }
    if has_dtype(&device, DType::BF16, test) {
        check_batched::<bf16>(&device);
    }
}
