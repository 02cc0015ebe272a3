//! Radix digit histogram of the `|x|` keys, one pass over the tensor, exactly as
//! [`crate::host::abs_key_histogram`] defines it: entries whose key bits above the digit equal
//! `prefix` are counted in the bin of their 16-bit digit, entries whose high bits are below it
//! in the last bin, the others nowhere.
//!
//! 65,536 bins do not fit in the shared memory of a cube, so each cube keeps a window of
//! `window` consecutive bins in shared memory (plus one for digit 0, where zeros and ties at
//! zero land, and one for the "below prefix" count), counts there with shared-memory atomics
//! and merges the non-zero bins into the global histogram with one global atomic each at the
//! end. The window is centred on the median digit of a few entries sampled from the cube's
//! first slice, so the bulk of a gradient's digits (and a tie's hot digit) is counted in
//! shared memory; digits outside it go straight to global atomics. The window is a matter of
//! speed only: every entry is counted exactly once whatever it is. No plane (warp) operation
//! is used, so this runs on lavapipe and the CubeCL CPU runtime too.

use cubecl::prelude::*;

use super::key::{KeyKind, narrow_key, wide_key};
#[cfg(not(gmt_cuda_codegen))]
use super::launch::LaunchPlan;
use super::launch::{Grid, PartKernel, PlannedKernel};
use crate::buffer::{
    BELOW_PREFIX_BIN, DIGITS, HISTOGRAM_LEN, SELECTION_HISTOGRAM, SELECTION_LEN, STATE_KEY,
};
#[cfg(not(gmt_cuda_codegen))]
use burn_cubecl::tensor::CubeTensor;
#[cfg(not(gmt_cuda_codegen))]
use cubecl::client::Client;

/// Entries sampled per cube to place its shared window.
pub const SAMPLES: u32 = 16;
/// No sample: the sampled entry is out of range or outside the prefix.
pub const NO_SAMPLE: u32 = 0xFFFF_FFFF;

/// The buffers, pass and window of the histogram kernel.
#[derive(CubeLaunch, CubeType)]
pub struct HistogramArgs<F: Float, N: Size> {
    /// The gradient.
    values: Box<[Vector<F, N>]>,
    /// `u32` counters added to: [`HISTOGRAM_LEN`] bins, or a selection buffer.
    hist: Box<[Atomic<u32>]>,
    /// The digit is `(key >> shift) & 0xFFFF`.
    shift: u32,
    /// The high bits are `key >> high_shift` (at most 31, where the sign-free key has no bit
    /// left).
    high_shift: u32,
    /// The high bits counted in the digit bins, unless `prefix_in_buffer`.
    prefix: u32,
    /// The first word of the selection buffer's segment, when `prefix_in_buffer`.
    segment_start: usize,
    /// Bins of the shared window.
    #[cube(comptime)]
    window: u32,
    /// `hist` is a selection buffer: the prefix is the key of the state at `segment_start`,
    /// and the bins follow that state.
    #[cube(comptime)]
    prefix_in_buffer: bool,
    /// The word of `hist` that must hold `guard_value` for this pass to count, when
    /// `guarded`; otherwise the whole launch does nothing (a one-pass mask launches the
    /// histograms of both its routes and lets its work words pick one on the device).
    guard_word: usize,
    /// See `guard_word`.
    guard_value: u32,
    /// See `guard_word`.
    #[cube(comptime)]
    guarded: bool,
}

/// The histogram kernel family.
pub struct Histogram;

#[cube]
impl<F: Float, N: Size> PartKernel<F, N> for Histogram {
    type Args = HistogramArgs<F, N>;

    /// Adds this cube's share of the histogram of the positions `start..end`.
    fn run(args: &mut HistogramArgs<F, N>, start: usize, end: usize, #[comptime] kind: KeyKind) {
        // The same word for every unit: the whole launch stops, before any barrier.
        if comptime![args.guarded] && args.hist[args.guard_word].load() != args.guard_value {
            terminate!();
        }
        let window = comptime![args.window];
        // In a selection buffer the prefix is the one the previous digit step chose on the
        // device.
        let mut prefix = args.prefix;
        let mut bins = 0usize;
        if comptime![args.prefix_in_buffer] {
            prefix = args.hist[args.segment_start + STATE_KEY].load();
            bins = args.segment_start + SELECTION_HISTOGRAM;
        }
        let local = Shared::<[Atomic<u32>]>::new_slice((window + 2u32) as usize);
        let mut samples = Shared::<[u32]>::new_slice(SAMPLES as usize);
        let mut window_base = Shared::<[u32]>::new_slice(1usize);
        count_cube::<F, N>(
            &args.values,
            &mut args.hist,
            &local,
            &mut samples,
            &mut window_base,
            CUBE_POS,
            CUBE_COUNT,
            start,
            end,
            args.shift,
            args.high_shift,
            prefix,
            bins,
            window,
            kind,
        );
    }
}

/// One cube's share of a histogram pass over `values`: it is cube `cube` of the `cubes` that
/// cover the positions `start..end` (a grid-stride loop), counts the digit at `shift` of the
/// keys whose bits from `high_shift` up equal `prefix` in the cube's shared window (`local`:
/// `window + 2` counters, `samples`, `window_base`, which the kernel allocates once) and
/// merges into the bins of `hist` from word `bins`. Every unit of the cube must call it (it
/// synchronises the cube). The batched kernel (`list.rs`) calls its parts itself, reading
/// the gradient of its piece only in [`sample_digit`] and [`count_digits`].
#[cube]
#[allow(clippy::too_many_arguments)]
pub fn count_cube<F: Float, N: Size>(
    values: &[Vector<F, N>],
    hist: &mut [Atomic<u32>],
    local: &Shared<[Atomic<u32>]>,
    samples: &mut Shared<[u32]>,
    window_base: &mut Shared<[u32]>,
    cube: usize,
    cubes: usize,
    start: usize,
    end: usize,
    shift: u32,
    high_shift: u32,
    prefix: u32,
    bins: usize,
    #[comptime] window: u32,
    #[comptime] kind: KeyKind,
) {
    let mut sample = 0xFFFF_FFFFu32; // NO_SAMPLE, as a runtime value
    if UNIT_POS < SAMPLES {
        sample = sample_digit::<F, N>(values, cube, start, end, shift, high_shift, prefix, kind);
    }
    let base = place_window(local, samples, window_base, sample, window);
    let below = count_digits::<F, N>(
        values, hist, local, base, cube, cubes, start, end, shift, high_shift, prefix, bins,
        window, kind,
    );
    merge_window(local, hist, base, below, bins, window);
}

/// The digit of this unit's sample (lane 0 of a vector spread over cube `cube`'s first
/// slice; with fewer units than samples, some samples coincide), or [`NO_SAMPLE`] when the
/// position is past `end` or the key is outside the prefix. For units below [`SAMPLES`].
#[cube]
#[allow(clippy::too_many_arguments)]
pub fn sample_digit<F: Float, N: Size>(
    values: &[Vector<F, N>],
    cube: usize,
    start: usize,
    end: usize,
    shift: u32,
    high_shift: u32,
    prefix: u32,
    #[comptime] kind: KeyKind,
) -> u32 {
    let units = CUBE_DIM as usize;
    let step = units / (SAMPLES as usize);
    let pos = start + cube * units + (UNIT_POS as usize) * step;
    let mut sample = 0xFFFF_FFFFu32; // NO_SAMPLE, as a runtime value
    if pos < end {
        let key = narrow_key(wide_key::<F, N>(values[pos], kind).extract(0usize), kind);
        if key >> high_shift == prefix {
            sample = (key >> shift) & ((DIGITS as u32) - 1u32);
        }
    }
    sample
}

/// Clears the cube's window and places it around the median of the units' samples (`sample`,
/// from the units below [`SAMPLES`]): the first bin of the window. Every unit of the cube must
/// call it (it synchronises the cube).
#[cube]
pub fn place_window(
    local: &Shared<[Atomic<u32>]>,
    samples: &mut Shared<[u32]>,
    window_base: &mut Shared<[u32]>,
    sample: u32,
    #[comptime] window: u32,
) -> u32 {
    // [0, window): the window; window: digit 0; window + 1: below the prefix.
    let mut bin = UNIT_POS;
    while bin < window + 2u32 {
        local[bin as usize].store(0u32);
        bin += CUBE_DIM;
    }
    if UNIT_POS == 0u32 {
        // No valid sample: the window starts at digit 0.
        window_base[0usize] = 0u32;
    }
    if UNIT_POS < SAMPLES {
        samples[UNIT_POS as usize] = sample;
    }
    sync_cube();

    // Each sampling unit ranks its own sample (ties broken by position, so ranks are
    // distinct); the one at the median places the window around it.
    if UNIT_POS < SAMPLES {
        let own = samples[UNIT_POS as usize];
        if own != NO_SAMPLE {
            let mut valid = 0u32;
            let mut rank = 0u32;
            for k in 0..SAMPLES {
                let t = samples[k as usize];
                if t != NO_SAMPLE {
                    valid += 1u32;
                    if t < own || (t == own && k < UNIT_POS) {
                        rank += 1u32;
                    }
                }
            }
            if rank == valid / 2u32 {
                let half = window / 2u32;
                let last_base = (DIGITS as u32) - window;
                let mut base = 0u32;
                if own > half {
                    base = own - half;
                    if base > last_base {
                        base = last_base;
                    }
                }
                window_base[0usize] = base;
            }
        }
    }
    sync_cube();
    window_base[0usize]
}

/// Counts this unit's positions of cube `cube` of `cubes` over `start..end` (a grid-stride
/// loop over whole vectors): digits in the window at `base` in `local`, digit 0 in
/// `local[window]`, other digits straight into `hist`; returns the entries below the prefix.
#[cube]
#[allow(clippy::too_many_arguments)]
pub fn count_digits<F: Float, N: Size>(
    values: &[Vector<F, N>],
    hist: &mut [Atomic<u32>],
    local: &Shared<[Atomic<u32>]>,
    base: u32,
    cube: usize,
    cubes: usize,
    start: usize,
    end: usize,
    shift: u32,
    high_shift: u32,
    prefix: u32,
    bins: usize,
    #[comptime] window: u32,
    #[comptime] kind: KeyKind,
) -> u32 {
    let units = CUBE_DIM as usize;
    let digit_mask = (DIGITS as u32) - 1u32;
    let mut below = 0u32;
    let stride = cubes * units;
    let mut pos = start + cube * units + UNIT_POS as usize;
    while pos < end {
        let keys = wide_key::<F, N>(values[pos], kind);
        #[unroll]
        for lane in 0..N::value() {
            let key = narrow_key(keys.extract(lane), kind);
            let high = key >> high_shift;
            if high == prefix {
                let digit = (key >> shift) & digit_mask;
                if digit >= base && digit < base + window {
                    local[(digit - base) as usize].fetch_add(1u32);
                } else if digit == 0u32 {
                    local[window as usize].fetch_add(1u32);
                } else {
                    hist[bins + digit as usize].fetch_add(1u32);
                }
            } else if high < prefix {
                below += 1u32;
            }
        }
        pos += stride;
    }
    below
}

/// Adds `below` (this unit's entries below the prefix) to the window, then merges the non-zero
/// shared bins into the bins of `hist` from word `bins`. Every unit of the cube must call it
/// (it synchronises the cube).
#[cube]
pub fn merge_window(
    local: &Shared<[Atomic<u32>]>,
    hist: &mut [Atomic<u32>],
    base: u32,
    below: u32,
    bins: usize,
    #[comptime] window: u32,
) {
    if below > 0u32 {
        local[(window + 1u32) as usize].fetch_add(below);
    }
    sync_cube();
    let mut slot = UNIT_POS;
    while slot < window {
        let count = local[slot as usize].load();
        if count > 0u32 {
            hist[bins + (base + slot) as usize].fetch_add(count);
        }
        slot += CUBE_DIM;
    }
    if UNIT_POS == 0u32 {
        let zeros = local[window as usize].load();
        if zeros > 0u32 {
            hist[bins].fetch_add(zeros);
        }
        let below = local[(window + 1u32) as usize].load();
        if below > 0u32 {
            hist[bins + BELOW_PREFIX_BIN].fetch_add(below);
        }
    }
}

// SAFETY: a unit reads `values` at positions in `start..end` only (the sampled positions and
// the grid-stride loop both stop at `end`); `hist` indices are digits (below 65,536) or
// `BELOW_PREFIX_BIN` after `segment_start`'s state words, and `launch` checks that a segment
// lies within the selection buffer (a plain histogram has every bin) and the guard word
// within `hist`; shared indices stay
// below `window + 2` and `SAMPLES`.
unsafe impl PlannedKernel for Histogram {
    type Args<F: Float, N: Size> = HistogramArgs<F, N>;
    type Part<F: Float, N: Size> = Histogram;
    const GRID: Grid = Grid::Reduction;
}

/// Where the histogram kernel finds the key prefix of its pass.
#[cfg(not(gmt_cuda_codegen))]
pub enum Prefix {
    /// Given by the host.
    Value(u64),
    /// In the state of a segment (this index) of the selection buffer the histogram is added
    /// to.
    InBuffer(usize),
}

/// Adds the histogram of `grad` (contiguous, `plan.len` entries) to `hist` (a `u32` buffer
/// of [`HISTOGRAM_LEN`] counters, or a selection buffer), only if word `guard.0` of `hist`
/// holds `guard.1` when a guard is given.
#[cfg(not(gmt_cuda_codegen))]
pub fn launch(
    grad: &CubeTensor,
    hist: &CubeTensor,
    plan: &LaunchPlan,
    shift: u32,
    prefix: Prefix,
    guard: Option<(usize, u32)>,
) {
    let (window, high_shift) = pass_shape(&grad.client, plan.kind, shift);
    // High bits fit in 16 bits, so a prefix past u32 is above every entry, as on the host.
    let (prefix, segment_start, prefix_in_buffer) = match prefix {
        Prefix::Value(prefix) => {
            assert!(
                hist.meta.num_elements() >= HISTOGRAM_LEN,
                "gradient mask: a histogram of {HISTOGRAM_LEN} bins"
            );
            (u32::try_from(prefix).unwrap_or(u32::MAX), 0, false)
        }
        Prefix::InBuffer(segment) => {
            let start = segment * SELECTION_LEN;
            assert!(
                start + SELECTION_LEN <= hist.meta.num_elements(),
                "gradient mask: segment {segment} past the selection buffer"
            );
            (0, start, true)
        }
    };
    if let Some((word, _)) = guard {
        assert!(
            word < hist.meta.num_elements(),
            "gradient mask: a guard past the buffer"
        );
    }
    let (guard_word, guard_value) = guard.unwrap_or((0, 0));
    plan.launch::<Histogram>(|| {
        HistogramArgsLaunch::new(
            grad.clone().into_buffer_arg(),
            hist.clone().into_buffer_arg(),
            shift,
            high_shift,
            prefix,
            segment_start,
            window,
            prefix_in_buffer,
            guard_word,
            guard_value,
            guard.is_some(),
        )
    });
}

/// The shared window (bins per cube, [`window_bins`]) and the high-bit shift of a histogram
/// pass over the digit at `shift` of `kind`'s keys on `client`'s device, for every histogram
/// kernel.
#[cfg(not(gmt_cuda_codegen))]
pub(crate) fn pass_shape(client: &Client, kind: KeyKind, shift: u32) -> (u32, u32) {
    let first_pass = shift + crate::buffer::DIGIT_BITS >= kind.key_bits();
    let window = window_bins(
        client.properties().hardware.max_shared_memory_size,
        first_pass,
    );
    // Bits above the digit: none left past bit 31 of the sign-free key.
    let high_shift = (shift + crate::buffer::DIGIT_BITS).min(31);
    (window, high_shift)
}

/// Shared bins per cube, a power of two that fits the device's shared memory with the extra
/// counters and the samples. A first pass counts every entry, and a gradient's leading
/// digits (exponent and top mantissa bits) cluster within a few binades of the median: 2,048
/// bins (16 binades of f32) take nearly all of them. A later pass counts only the entries
/// that share the chosen prefix, usually few, but all of them when many entries tie: 512 bins
/// around the median catch a tie. Fewer bins are fewer to clear and merge per cube.
#[cfg(not(gmt_cuda_codegen))]
fn window_bins(max_shared_bytes: usize, first_pass: bool) -> u32 {
    let words = (max_shared_bytes / 4).saturating_sub(2 + SAMPLES as usize + 16);
    let mut bins = if first_pass { 2048usize } else { 512 };
    while bins > 64 && bins > words {
        bins /= 2;
    }
    bins as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_shrink_to_the_shared_memory() {
        // 48 KiB, the usual minimum: the full windows fit.
        assert_eq!(window_bins(48 * 1024, true), 2048);
        assert_eq!(window_bins(48 * 1024, false), 512);
        // 4 KiB: 1,024 words less the extra counters and samples.
        assert_eq!(window_bins(4096, true), 512);
        // Never below 64 bins, whatever the device says.
        assert_eq!(window_bins(0, true), 64);
    }
}
