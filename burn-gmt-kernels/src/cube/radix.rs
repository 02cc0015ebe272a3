//! The on-device steps of exact radix selections around the histogram pass
//! ([`super::histogram`]): starting a selection buffer, picking a digit, and turning the
//! selected keys into threshold values. Each is one small launch over the whole buffer,
//! whatever number of selections it holds (one cube per segment for the digit step, one unit
//! per segment for the thresholds), so a selection never waits on the host and the selections
//! of a step share these launches: the thresholds stay on the device for the mask kernels.
//!
//! Buffer layout (`u32` words): one segment of [`SELECTION_LEN`] words per selection, each
//! the state words of a [`SelectionState`](crate::buffer::SelectionState) (the key prefix
//! chosen so far, the rank still sought within it, the entries below the prefix and the
//! non-finite entries), then the histogram bins and the "below the prefix" bin.

#[cfg(not(gmt_cuda_codegen))]
use cubecl::calculate_cube_count_elemwise;
use cubecl::prelude::*;

use super::key::{KeyKind, value_of_key};
#[cfg(not(gmt_cuda_codegen))]
use super::launch::count_launch;
#[cfg(not(gmt_cuda_codegen))]
use burn::backend::ops::IntTensorOps;
#[cfg(not(gmt_cuda_codegen))]
use burn::tensor::TensorData;
#[cfg(not(gmt_cuda_codegen))]
use burn_cubecl::CubeBackend;
#[cfg(not(gmt_cuda_codegen))]
use burn_cubecl::tensor::CubeTensor;

use crate::buffer::{
    BELOW_PREFIX_BIN, DIGIT_BITS, DIGITS, SELECTION_HISTOGRAM, SELECTION_LEN, STATE_BELOW,
    STATE_KEY, STATE_NON_FINITE, STATE_REMAINING, selection_segment_start, selection_segments,
};

/// A cleared selection buffer whose segment `s` seeks rank `ranks[s]`.
#[cube(launch_unchecked, create_dummy_kernel)]
pub(crate) fn radix_select_start_kernel(selection: &mut [u32], ranks: &[u32]) {
    let pos = ABSOLUTE_POS;
    if pos >= selection.len() {
        terminate!();
    }
    let mut word = 0u32;
    if pos % SELECTION_LEN == STATE_REMAINING {
        word = ranks[pos / SELECTION_LEN];
    }
    selection[pos] = word;
}

/// A cleared selection buffer of one segment seeking rank `rank`, given as a launch argument:
/// the one selection of a lone gradient (the optimizer wrapper's) uploads nothing.
#[cube(launch_unchecked, create_dummy_kernel)]
pub(crate) fn radix_select_start_one_kernel(selection: &mut [u32], rank: u32) {
    let pos = ABSOLUTE_POS;
    if pos >= selection.len() {
        terminate!();
    }
    let mut word = 0u32;
    if pos == STATE_REMAINING {
        word = rank;
    }
    selection[pos] = word;
}

/// One cube of `units` units per segment (cube `s` works on segment `s`): each unit sums its
/// run of `DIGITS / units` bins (and, on the first pass, the bins from `inf_digit` up), unit
/// 0 walks the run sums and then the bins of
/// the run that holds the sought rank, appends that digit to the prefix, lowers the rank by
/// the entries of the smaller digits and records the counts; then every unit clears its run
/// for the next pass. No plane operation: runs on any device.
#[cube(launch_unchecked, create_dummy_kernel)]
pub(crate) fn radix_select_digit_kernel(
    selection: &mut [u32],
    inf_digit: u32,
    #[comptime] units: u32,
) {
    // This cube's segment: its state words, then its bins.
    let state = CUBE_POS * SELECTION_LEN;
    let bins = state + SELECTION_HISTOGRAM;
    let run = (DIGITS as u32) / units;
    let mut sums = Shared::<[u32]>::new_slice(units as usize);
    let mut non_finite = Shared::<[u32]>::new_slice(units as usize);
    let first = UNIT_POS * run;
    let mut sum = 0u32;
    let mut above_inf = 0u32;
    for i in 0..run {
        let count = selection[bins + (first + i) as usize];
        sum += count;
        if first + i >= inf_digit {
            above_inf += count;
        }
    }
    sums[UNIT_POS as usize] = sum;
    non_finite[UNIT_POS as usize] = above_inf;
    sync_cube();

    if UNIT_POS == 0u32 {
        let remaining = selection[state + STATE_REMAINING];
        // The run holding the rank: the first whose running total passes it.
        let mut before = 0u32;
        let mut chosen = 0u32;
        let mut found = false;
        let mut total_non_finite = 0u32;
        for r in 0..units {
            let count = sums[r as usize];
            total_non_finite += non_finite[r as usize];
            if !found {
                if remaining < before + count {
                    chosen = r;
                    found = true;
                } else {
                    before += count;
                }
            }
        }
        // The digit within that run.
        let mut digit = chosen * run;
        found = false;
        for i in 0..run {
            let bin = chosen * run + i;
            let count = selection[bins + bin as usize];
            if !found {
                if remaining < before + count {
                    digit = bin;
                    found = true;
                } else {
                    before += count;
                }
            }
        }
        if inf_digit < (DIGITS as u32) {
            selection[state + STATE_NON_FINITE] = total_non_finite;
        }
        selection[state + STATE_BELOW] = selection[bins + BELOW_PREFIX_BIN] + before;
        let prefix = selection[state + STATE_KEY];
        selection[state + STATE_KEY] = (prefix << DIGIT_BITS) | digit;
        selection[state + STATE_REMAINING] = remaining - before;
        selection[bins + BELOW_PREFIX_BIN] = 0u32;
    }
    sync_cube();

    for i in 0..run {
        selection[bins + (first + i) as usize] = 0u32;
    }
}

/// Writes the value of each segment's selected key (the first word of its state, `stride`
/// words apart: a selection buffer's segments, or the state words of a one-step selection),
/// at most `+inf` (`inf_key`), into `threshold[segment]`.
#[cube(launch_unchecked, create_dummy_kernel)]
pub(crate) fn radix_select_threshold_kernel<F: Float>(
    selection: &[u32],
    threshold: &mut [F],
    stride: usize,
    inf_key: u32,
    #[comptime] kind: KeyKind,
    #[define(F)] _dtype: ElemType,
) {
    let segment = ABSOLUTE_POS;
    if segment < threshold.len() {
        let key = u32::min(selection[segment * stride + STATE_KEY], inf_key);
        threshold[segment] = value_of_key::<F>(key, kind);
    }
}

/// Starts `selection`, one segment of [`SELECTION_LEN`] `u32` words per entry of `ranks`:
/// [`radix_select_start_one_kernel`] for one rank, else [`radix_select_start_kernel`] with the
/// ranks uploaded (one small transfer for all the selections of a step).
#[cfg(not(gmt_cuda_codegen))]
pub fn launch_start(selection: &CubeTensor, ranks: &[u32]) {
    let client = &selection.client;
    let len = selection.meta.num_elements();
    assert_eq!(len, ranks.len() * SELECTION_LEN, "selection buffer length");
    let cube_dim = CubeDim::new(client, len);
    let cube_count = calculate_cube_count_elemwise(client, len, cube_dim);
    let buffer = selection.clone().into_buffer_arg();
    count_launch();
    if let [rank] = ranks {
        // SAFETY: every unit checks its position against the buffer length.
        unsafe {
            radix_select_start_one_kernel::launch_unchecked(
                client, cube_count, cube_dim, buffer, *rank,
            );
        }
        return;
    }
    let data = TensorData::new(ranks.to_vec(), [ranks.len()]);
    let ranks = CubeBackend::int_from_data(data, &selection.device);
    // SAFETY: every unit checks its position against the buffer length; segment `s` of the
    // buffer reads `ranks[s]`, and the buffer has one segment per rank.
    unsafe {
        radix_select_start_kernel::launch_unchecked(
            client,
            cube_count,
            cube_dim,
            buffer,
            ranks.into_buffer_arg(),
        );
    }
}

/// Launches [`radix_select_digit_kernel`] on every segment of `selection` (one cube each);
/// `inf_digit` as in [`crate::buffer::select_digit`].
#[cfg(not(gmt_cuda_codegen))]
pub fn launch_digit(selection: &CubeTensor, inf_digit: u32) {
    let client = &selection.client;
    let segments = selection.meta.num_elements() / SELECTION_LEN;
    let max_units = client.properties().hardware.max_units_per_cube;
    // A power of two dividing the digit count; 256 on any GPU, fewer on a tiny device.
    let mut units = 256u32;
    while units > 1 && units > max_units {
        units /= 2;
    }
    count_launch();
    // SAFETY: cube `s` touches segment `s` only (the buffer holds `segments` whole segments):
    // unit `u` bins `u * run .. (u + 1) * run` of it (all below `DIGITS`, after the state
    // words) and unit 0 its state words and its below bin.
    unsafe {
        radix_select_digit_kernel::launch_unchecked(
            client,
            CubeCount::new_1d(segments as u32),
            CubeDim::new_1d(units),
            selection.clone().into_buffer_arg(),
            inf_digit,
            units,
        );
    }
}

/// Launches [`radix_select_threshold_kernel`] writing into `threshold` (one entry of the
/// plan's dtype per segment of `selection`).
#[cfg(not(gmt_cuda_codegen))]
pub fn launch_threshold(
    selection: &CubeTensor,
    threshold: &CubeTensor,
    inf_key: u32,
    kind: KeyKind,
    storage: ElemType,
) {
    let client = &selection.client;
    let len = selection.meta.num_elements();
    let segments = selection_segments(len);
    assert_eq!(
        threshold.meta.num_elements(),
        segments,
        "one threshold per segment"
    );
    // Segment 1 would start at the second state: state words alone hold one segment.
    let stride = selection_segment_start(len, 1);
    let cube_dim = CubeDim::new(client, segments);
    let cube_count = calculate_cube_count_elemwise(client, segments, cube_dim);
    count_launch();
    // SAFETY: unit `s` below the threshold count reads word `s * stride` (the key of segment
    // `s`, within the buffer) and writes entry `s`.
    unsafe {
        radix_select_threshold_kernel::launch_unchecked(
            client,
            cube_count,
            cube_dim,
            selection.clone().into_buffer_arg(),
            threshold.clone().into_buffer_arg(),
            stride,
            inf_key,
            kind,
            storage,
        );
    }
}
