//! The on-device steps of an exact radix selection around the histogram pass
//! ([`super::histogram`]): starting a selection buffer, picking a digit, and turning the
//! selected key into a threshold value. Each is one small launch over the 65,539-word buffer
//! (or one unit), so a selection never waits on the host: the threshold stays on the device
//! for the mask kernels.
//!
//! Buffer layout (`u32` words, [`SELECTION_LEN`]): the state words of a
//! [`SelectionState`](crate::element::SelectionState) (the key prefix chosen so far, the rank
//! still sought within it, the entries below the prefix and the non-finite entries), then the
//! histogram bins and the "below the prefix" bin.

use cubecl::calculate_cube_count_elemwise;
use cubecl::prelude::*;

use super::key::value_of_key;
use burn_cubecl::tensor::CubeTensor;

use crate::element::{
    BELOW_PREFIX_BIN, DIGIT_BITS, DIGITS, SELECTION_HISTOGRAM, SELECTION_LEN, STATE_BELOW,
    STATE_KEY, STATE_NON_FINITE, STATE_REMAINING,
};

/// A cleared selection buffer seeking rank `rank`.
#[cube(launch_unchecked)]
fn radix_select_start_kernel(selection: &mut [u32], rank: u32) {
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

/// One cube of `units` units: each unit sums its run of `DIGITS / units` bins (and, on the
/// first pass, the bins from `inf_digit` up), unit 0 walks the run sums and then the bins of
/// the run that holds the sought rank, appends that digit to the prefix, lowers the rank by
/// the entries of the smaller digits and records the counts; then every unit clears its run
/// for the next pass. No plane operation: runs on any device.
#[cube(launch_unchecked)]
fn radix_select_digit_kernel(selection: &mut [u32], inf_digit: u32, #[comptime] units: u32) {
    let run = (DIGITS as u32) / units;
    let mut sums = Shared::<[u32]>::new_slice(units as usize);
    let mut non_finite = Shared::<[u32]>::new_slice(units as usize);
    let first = UNIT_POS * run;
    let mut sum = 0u32;
    let mut above_inf = 0u32;
    for i in 0..run {
        let count = selection[SELECTION_HISTOGRAM + (first + i) as usize];
        sum += count;
        if first + i >= inf_digit {
            above_inf += count;
        }
    }
    sums[UNIT_POS as usize] = sum;
    non_finite[UNIT_POS as usize] = above_inf;
    sync_cube();

    if UNIT_POS == 0u32 {
        let remaining = selection[STATE_REMAINING];
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
            let count = selection[SELECTION_HISTOGRAM + bin as usize];
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
            selection[STATE_NON_FINITE] = total_non_finite;
        }
        selection[STATE_BELOW] = selection[SELECTION_HISTOGRAM + BELOW_PREFIX_BIN] + before;
        let prefix = selection[STATE_KEY];
        selection[STATE_KEY] = (prefix << DIGIT_BITS) | digit;
        selection[STATE_REMAINING] = remaining - before;
        selection[SELECTION_HISTOGRAM + BELOW_PREFIX_BIN] = 0u32;
    }
    sync_cube();

    for i in 0..run {
        selection[SELECTION_HISTOGRAM + (first + i) as usize] = 0u32;
    }
}

/// Writes the value of the selected key (the state's first word, in a selection buffer or in
/// the state words of a one-step selection), at most `+inf` (`inf_key`), into `threshold[0]`.
#[cube(launch_unchecked)]
fn radix_select_threshold_kernel<F: Float>(
    selection: &[u32],
    threshold: &mut [F],
    inf_key: u32,
    #[comptime] kind: u32,
    #[define(F)] _dtype: ElemType,
) {
    if ABSOLUTE_POS == 0 {
        let key = u32::min(selection[STATE_KEY], inf_key);
        threshold[0] = value_of_key::<F>(key, kind);
    }
}

/// Launches [`radix_select_start_kernel`] over `selection` ([`SELECTION_LEN`] `u32` words).
pub fn launch_start(selection: &CubeTensor, rank: u32) {
    let client = &selection.client;
    let cube_dim = CubeDim::new(client, SELECTION_LEN);
    let cube_count = calculate_cube_count_elemwise(client, SELECTION_LEN, cube_dim);
    // SAFETY: every unit checks its position against the buffer length.
    unsafe {
        radix_select_start_kernel::launch_unchecked(
            client,
            cube_count,
            cube_dim,
            selection.clone().into_buffer_arg(),
            rank,
        );
    }
}

/// Launches [`radix_select_digit_kernel`] on `selection` (one cube); `inf_digit` as in
/// [`crate::host::select_digit`].
pub fn launch_digit(selection: &CubeTensor, inf_digit: u32) {
    let client = &selection.client;
    let max_units = client.properties().hardware.max_units_per_cube;
    // A power of two dividing the digit count; 256 on any GPU, fewer on a tiny device.
    let mut units = 256u32;
    while units > 1 && units > max_units {
        units /= 2;
    }
    // SAFETY: unit `u` touches bins `u * run .. (u + 1) * run` (all below `DIGITS`, after the
    // state words) and unit 0 the state words and the below bin; the buffer holds
    // `SELECTION_LEN` words.
    unsafe {
        radix_select_digit_kernel::launch_unchecked(
            client,
            CubeCount::new_1d(1),
            CubeDim::new_1d(units),
            selection.clone().into_buffer_arg(),
            inf_digit,
            units,
        );
    }
}

/// Launches [`radix_select_threshold_kernel`] writing into `threshold` (one entry of the
/// plan's dtype).
pub fn launch_threshold(
    selection: &CubeTensor,
    threshold: &CubeTensor,
    inf_key: u32,
    kind: u32,
    storage: ElemType,
) {
    // SAFETY: one unit reads the first word of the selection buffer (or state) and writes
    // entry 0.
    unsafe {
        radix_select_threshold_kernel::launch_unchecked(
            &selection.client,
            CubeCount::new_1d(1),
            CubeDim::new_1d(1),
            selection.clone().into_buffer_arg(),
            threshold.clone().into_buffer_arg(),
            inf_key,
            kind,
            storage,
        );
    }
}
