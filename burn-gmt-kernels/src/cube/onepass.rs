//! The exact per-tensor mask in one read-write pass over the gradient
//! ([`MaskOps::abs_key_mask_rank`](crate::MaskOps::abs_key_mask_rank)), for tensors over
//! [`SMALL_SELECT_MAX_ENTRIES`] entries:
//!
//! 1. **Bracket** ([`super::small`], one cube): a sample of the keys (one per stratum, at a
//!    hashed offset) and the two sample keys around the sought rank's quantile, as the host
//!    bracket picks them ([`crate::host::bracket_positions`]); written to the work words.
//! 2. **Pass** ([`BracketPass`], one launch over the whole vectors and one over the tail): each
//!    entry is read once and written once, **into a new tensor**: below the bracket → 0 (unless
//!    NaN or ±inf, never masked), else kept; the entries inside the bracket are also appended (position and value) to a small
//!    buffer by compaction, one global atomic per cube; the entries below and the non-finite
//!    ones are counted (one atomic per cube each).
//! 3. **Start** ([`one_pass_start_kernel`], one launch): from the counts, whether the bracket
//!    holds the rank (and the buffer all its entries). If so, the selection buffer seeks the
//!    rank among the buffer's values; if not, among the input's.
//! 4. **Selection** (the existing digit steps, [`super::histogram`] and [`super::radix`]):
//!    per 16-bit digit, a histogram of the buffer's values and one of the input, each launched
//!    with a guard word so that only the route step 3 chose counts (the other launch ends at
//!    once), and the digit step.
//! 5. **Resolve** ([`one_pass_resolve_kernel`], one launch): on the bracket route, a scatter
//!    over the buffer zeroes the entries inside the bracket below the selected key; on the
//!    fallback route, the output is written again from the input against the key (today's
//!    mask). Unit 0 writes the selection's state words.
//!
//! # Why it stays exact
//!
//! The pass learns only at its end whether the rank lies inside the bracket, and by then it
//! has zeroed the entries below the bracket and kept all the others. So it writes a tensor
//! other than its input, which stays intact until the counts are known (one read and one
//! write of every entry, the traffic of an in-place mask):
//! - a hit (the rank inside, every inside entry in the buffer): the entries below the bracket
//!   are below the threshold and those above it are not, so only the buffer's entries can
//!   still be wrong, and the scatter zeroes exactly those below the threshold;
//! - a miss low (the threshold below the bracket: the pass zeroed entries that stay), a miss
//!   high or an overfull buffer: the selection and the mask run from the intact input, as
//!   the two-pass mask does. Nothing the pass wrote is kept.
//!
//! Ties, ±0, subnormals, NaN and ±inf are ranked by the same keys as everywhere
//! ([`super::key`]); the buffer's unused slots are zeros, which rank below every entry
//! inside, so the selection among the buffer seeks its rank above them, and the resolve
//! takes them out of the counts.
//!
//! The buffer is sized for the bracket's expected share of the entries (about `7/√s` of them
//! for a sample of `s` keys near the median) with a margin of a quarter and 1,024 entries;
//! the bracket misses about once in 2,000 selections. Launches on the bracket route: the zero
//! fill, the bracket, the pass (+ tail), the start, two guarded histograms (+ tail) and a
//! digit step per 16-bit digit, the resolve: 11 for f32, 8 for f16/bf16, each whatever the
//! route; memory passes: one read and one write of the gradient, plus about three reads and
//! two writes of the bracket's few percent.

use cubecl::prelude::*;

use super::count::add_cube_counts;
#[cfg(not(gmt_cuda_codegen))]
use super::histogram::{self, Prefix};
use super::key::{KeyKind, narrow_key, wide_key};
use super::launch::{Grid, PartKernel, PlannedKernel};
#[cfg(not(gmt_cuda_codegen))]
use super::launch::{LaunchPlan, count_launch, reduction_grid};
#[cfg(not(gmt_cuda_codegen))]
use super::radix;
#[cfg(not(gmt_cuda_codegen))]
use super::small::{self, BracketSample};
use crate::buffer::{
    SELECTION_LEN, SELECTION_STATE_LEN, SMALL_SELECT_MAX_ENTRIES, STATE_BELOW, STATE_KEY,
    STATE_NON_FINITE, STATE_REMAINING, WORK_BELOW, WORK_INSIDE, WORK_LAST, WORK_LEN, WORK_LO,
    WORK_NON_FINITE, WORK_ROUTE, radix_passes,
};
#[cfg(not(gmt_cuda_codegen))]
use crate::host::{BracketMiss, bracket_positions, sample_len};
#[cfg(not(gmt_cuda_codegen))]
use burn::tensor::{DType, Shape};
#[cfg(not(gmt_cuda_codegen))]
use burn_cubecl::ops::numeric::{empty_device_dtype, zeros_client};
#[cfg(not(gmt_cuda_codegen))]
use burn_cubecl::tensor::CubeTensor;

/// The bracket holds the rank and the buffer all its entries.
const ROUTE_BRACKET: u32 = 0;
/// The bracket missed or the buffer overflowed: the mask runs from the input.
const ROUTE_FALLBACK: u32 = 1;

/// The buffers of the one-pass kernel.
#[derive(CubeLaunch, CubeType)]
pub struct BracketPassArgs<F: Float, N: Size> {
    /// The gradient, read only.
    values: Box<[Vector<F, N>]>,
    /// The masked gradient: below the bracket 0, else the input.
    out: Box<[Vector<F, N>]>,
    /// Positions (in entries) of the entries inside the bracket, in no order.
    positions: Box<[u32]>,
    /// Their values, slot for slot.
    inside: Box<[F]>,
    /// The selection buffer with the work words.
    work: Box<[Atomic<u32>]>,
    /// Where the work words start in `work`.
    work_start: usize,
    /// Slots of `positions` and `inside`.
    cap: u32,
    /// The key of `+inf` of the element's own width.
    inf_key: u32,
}

/// The one-pass kernel family.
pub struct BracketPass;

#[cube]
impl<F: Float, N: Size> PartKernel<F, N> for BracketPass {
    type Args = BracketPassArgs<F, N>;

    /// Masks the vector at this unit's position below the bracket into `out`, appends its
    /// entries inside the bracket to the buffer and adds its counts.
    fn run(args: &mut BracketPassArgs<F, N>, start: usize, end: usize, #[comptime] kind: KeyKind) {
        let work = args.work_start;
        let lo = args.work[work + WORK_LO].load();
        let last = args.work[work + WORK_LAST].load();
        // Entries inside the bracket in the whole cube so far, and the cube's first slot.
        let inside_count = Shared::<[Atomic<u32>]>::new_slice(1usize);
        let mut first_slot = Shared::<[u32]>::new_slice(1usize);
        if UNIT_POS == 0u32 {
            inside_count[0usize].store(0u32);
        }
        sync_cube();

        let pos = start + ABSOLUTE_POS;
        let mut x = Vector::<F, N>::new(F::new(0.0));
        let mut keys = Vector::<u32, N>::new(0u32);
        let mut below = 0u32;
        let mut inside = 0u32;
        let mut non_finite = 0u32;
        // Every unit reaches the barriers below, also past the end.
        if pos < end {
            x = args.values[pos];
            let wide = wide_key::<F, N>(x, kind);
            let mut out = x;
            #[unroll]
            for lane in 0..N::value() {
                let key = narrow_key(wide.extract(lane), kind);
                keys.insert(lane, key);
                if key < lo {
                    // NaN and ±inf are never masked, even below a bracket of NaN keys.
                    if key < args.inf_key {
                        out.insert(lane, F::new(0.0));
                    }
                    below += 1u32;
                } else if key <= last {
                    inside += 1u32;
                }
                if key >= args.inf_key {
                    non_finite += 1u32;
                }
            }
            args.out[pos] = out;
        }
        let mut offset = 0u32;
        if inside > 0u32 {
            offset = inside_count[0usize].fetch_add(inside);
        }
        sync_cube();
        if UNIT_POS == 0u32 {
            let cube_inside = inside_count[0usize].load();
            let mut slot = 0u32;
            if cube_inside > 0u32 {
                slot = args.work[work + WORK_INSIDE].fetch_add(cube_inside);
            }
            first_slot[0usize] = slot;
        }
        add_cube_counts(&mut args.work, work + WORK_BELOW, below, non_finite);
        if inside > 0u32 {
            let mut slot = first_slot[0usize] + offset;
            #[unroll]
            for lane in 0..N::value() {
                let key = keys.extract(lane);
                if key >= lo && key <= last {
                    // Past the capacity the count tells the start, which then falls back.
                    if slot < args.cap {
                        args.positions[slot as usize] = (pos * N::value() + lane) as u32;
                        args.inside[slot as usize] = x.extract(lane);
                    }
                    slot += 1u32;
                }
            }
        }
    }
}

// SAFETY: a unit reads `values` and writes `out` at its own position only, after checking it
// against `end`; it writes `positions` and `inside` at slots below `cap`, their length
// (`launch` builds them so); `work` indices are `work_start + WORK_*`, within the buffer
// (`mask_rank` checks it); shared indices are constants below the slices' lengths.
unsafe impl PlannedKernel for BracketPass {
    type Args<F: Float, N: Size> = BracketPassArgs<F, N>;
    type Part<F: Float, N: Size> = BracketPass;
    const GRID: Grid = Grid::Elementwise;
}

/// Starts the selection of a one-pass mask in its segment at `segment_start` of `buffer`,
/// from the pass's counts in the work words at `work_start`: on the bracket route it seeks
/// `rank` among the buffer's values (above its `cap - inside` zero slots), else `rank` among
/// the input's; clears the segment's histogram and records the route.
#[cube(launch_unchecked, create_dummy_kernel)]
pub(crate) fn one_pass_start_kernel(
    buffer: &mut [u32],
    segment_start: usize,
    work_start: usize,
    rank: u32,
    cap: u32,
) {
    let pos = ABSOLUTE_POS;
    if pos >= SELECTION_LEN {
        terminate!();
    }
    let below = buffer[work_start + WORK_BELOW];
    let inside = buffer[work_start + WORK_INSIDE];
    // `below + inside` counts distinct entries: no overflow.
    let hit = rank >= below && rank < below + inside && inside <= cap;
    let mut word = 0u32;
    if pos == STATE_REMAINING {
        word = rank;
        if hit {
            word = (cap - inside) + (rank - below);
        }
    }
    buffer[segment_start + pos] = word;
    if pos == 0usize {
        buffer[work_start + WORK_ROUTE] = select(hit, ROUTE_BRACKET, ROUTE_FALLBACK);
    }
}

/// Ends a one-pass mask of `len` entries (a grid-stride loop): on the bracket route, zeroes
/// in `out` the buffer's entries whose key is below the selected one (at most `inf_key`); on
/// the fallback route, writes `out` from `values` masked against it. Unit 0 writes the
/// selection's state words to `state`, the counts of the zero slots taken out.
#[cube(launch_unchecked, create_dummy_kernel)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn one_pass_resolve_kernel<F: Float>(
    values: &[F],
    out: &mut [F],
    positions: &[u32],
    inside: &[F],
    buffer: &[u32],
    state: &mut [u32],
    segment_start: usize,
    work_start: usize,
    len: u32,
    cap: u32,
    inf_key: u32,
    #[comptime] kind: KeyKind,
    #[define(F)] _dtype: ElemType,
) {
    let route = buffer[work_start + WORK_ROUTE];
    let key = buffer[segment_start + STATE_KEY];
    let limit = u32::min(key, inf_key);
    let stride = (CUBE_COUNT * (CUBE_DIM as usize)) as u32;
    let mut i = ABSOLUTE_POS as u32;
    if route == ROUTE_BRACKET {
        let filled = u32::min(buffer[work_start + WORK_INSIDE], cap);
        while i < filled {
            let wide = wide_key::<F, Const<1>>(Vector::new(inside[i as usize]), kind);
            if narrow_key(wide.extract(0usize), kind) < limit {
                out[positions[i as usize] as usize] = F::new(0.0);
            }
            i += stride;
        }
    } else {
        while i < len {
            let x = values[i as usize];
            let wide = wide_key::<F, Const<1>>(Vector::new(x), kind);
            let mut y = x;
            if narrow_key(wide.extract(0usize), kind) < limit {
                y = F::new(0.0);
            }
            out[i as usize] = y;
            i += stride;
        }
    }
    if ABSOLUTE_POS == 0usize {
        let remaining = buffer[segment_start + STATE_REMAINING];
        let below = buffer[segment_start + STATE_BELOW];
        state[STATE_KEY] = key;
        if route == ROUTE_BRACKET {
            // The zero slots rank below every entry inside: below the key, or tied with a
            // key of 0 (then nothing lies below the bracket either).
            let zero_slots = cap - buffer[work_start + WORK_INSIDE];
            let pass_below = buffer[work_start + WORK_BELOW];
            if key == 0u32 {
                state[STATE_REMAINING] = remaining - zero_slots;
                state[STATE_BELOW] = pass_below;
            } else {
                state[STATE_REMAINING] = remaining;
                state[STATE_BELOW] = pass_below + below - zero_slots;
            }
            state[STATE_NON_FINITE] = buffer[work_start + WORK_NON_FINITE];
        } else {
            state[STATE_REMAINING] = remaining;
            state[STATE_BELOW] = below;
            state[STATE_NON_FINITE] = buffer[segment_start + STATE_NON_FINITE];
        }
    }
}

/// Entries the buffer of a one-pass mask of `len` entries holds, for a bracket between the
/// sample positions `lo_at` and `hi_at` among `samples` keys: the bracket's expected share
/// and a quarter more, plus 1,024, at most `len`; rounded up to whole vectors of 64 entries,
/// so that its histograms launch no tail.
#[cfg(not(gmt_cuda_codegen))]
fn buffer_cap(len: usize, samples: usize, lo_at: Option<usize>, hi_at: Option<usize>) -> usize {
    let span = hi_at.unwrap_or(samples) + 1 - lo_at.unwrap_or(0);
    let expected = span as f64 / samples as f64 * len as f64;
    let cap = ((expected * 1.25).ceil() as usize + 1024).min(len);
    cap.next_multiple_of(64)
}

/// The largest tensor of a one-pass mask: its `u32` grid-stride loops step past the end by
/// less than 2^18 without wrapping.
pub const ONE_PASS_MAX_ENTRIES: usize = 1 << 31;

/// The mask of the `rank` smallest `|g|` of `grad` (contiguous, `plan.len` entries, more
/// than [`SMALL_SELECT_MAX_ENTRIES`] and at most [`ONE_PASS_MAX_ENTRIES`]) in one read-write pass (see
/// the module docs), into a new tensor, with the selection's state words (`U32`). `miss`
/// forces a bracket that misses (tests only).
#[cfg(not(gmt_cuda_codegen))]
pub fn mask_rank(
    grad: &CubeTensor,
    plan: &LaunchPlan,
    rank: u32,
    inf_key: u32,
    miss: Option<BracketMiss>,
) -> (CubeTensor, CubeTensor) {
    let len = plan.len;
    assert!(
        len > SMALL_SELECT_MAX_ENTRIES && len <= ONE_PASS_MAX_ENTRIES && (rank as usize) < len,
        "gradient mask: a one-pass mask takes {SMALL_SELECT_MAX_ENTRIES} to 2^31 entries and a rank below them"
    );
    let (client, device) = (&grad.client, &grad.device);
    let u32_tensor = |len: usize| {
        empty_device_dtype(
            client.clone(),
            device.clone(),
            Shape::new([len]),
            DType::U32,
        )
    };

    let samples = (sample_len(len as u64) as usize).min(SMALL_SELECT_MAX_ENTRIES);
    let (lo_at, hi_at) = bracket_positions(samples, rank as u64, len as u64);
    let cap = match miss {
        Some(BracketMiss::Overfull) => 1,
        _ => buffer_cap(len, samples, lo_at, hi_at),
    };
    // One segment of selection buffer, then the work words.
    let buffer = u32_tensor(SELECTION_LEN + WORK_LEN);
    let (segment_start, work_start) = (0, SELECTION_LEN);
    let sample = BracketSample {
        samples: samples as u32,
        lo_at: lo_at.map(|at| at as u32),
        hi_at: hi_at.map(|at| at as u32),
        forced: match miss {
            Some(BracketMiss::Low) => 1,
            Some(BracketMiss::High) => 2,
            _ => 0,
        },
    };
    small::launch_bracket(grad, &buffer, plan, &sample, work_start, inf_key);

    let out = empty_device_dtype(
        client.clone(),
        device.clone(),
        grad.meta.shape().clone(),
        grad.dtype,
    );
    let positions = u32_tensor(cap);
    let inside = zeros_client(
        client.clone(),
        device.clone(),
        Shape::new([cap]),
        grad.dtype,
    );
    plan.launch::<BracketPass>(|| {
        BracketPassArgsLaunch::new(
            grad.clone().into_buffer_arg(),
            out.clone().into_buffer_arg(),
            positions.clone().into_buffer_arg(),
            inside.clone().into_buffer_arg(),
            buffer.clone().into_buffer_arg(),
            work_start,
            cap as u32,
            inf_key,
        )
    });

    let cube_dim = CubeDim::new(client, SELECTION_LEN);
    let cube_count = cubecl::calculate_cube_count_elemwise(client, SELECTION_LEN, cube_dim);
    count_launch();
    // SAFETY: units past the segment end at once; the others write their word of the
    // segment at `segment_start` and unit 0 the route word, both within the buffer of
    // `SELECTION_LEN + WORK_LEN` words; every read is of a work word.
    unsafe {
        one_pass_start_kernel::launch_unchecked(
            client,
            cube_count,
            cube_dim,
            buffer.clone().into_buffer_arg(),
            segment_start,
            work_start,
            rank,
            cap as u32,
        );
    }

    let inside_plan = LaunchPlan::new(&[&inside], cap).expect("the gradient's dtype");
    let route = work_start + WORK_ROUTE;
    for pass in radix_passes(plan.kind.key_bits(), inf_key as u64) {
        let prefix = || Prefix::InBuffer(segment_start);
        let guard = |value| Some((route, value));
        histogram::launch(
            &inside,
            &buffer,
            &inside_plan,
            pass.shift,
            prefix(),
            guard(ROUTE_BRACKET),
        );
        histogram::launch(
            grad,
            &buffer,
            plan,
            pass.shift,
            prefix(),
            guard(ROUTE_FALLBACK),
        );
        radix::launch_digit(&buffer, pass.inf_digit);
    }

    let state = u32_tensor(SELECTION_STATE_LEN);
    let (cube_count, cube_dim) = reduction_grid(client, len);
    count_launch();
    // SAFETY: the grid-stride loops stop at `len` (the length of `values` and `out`) and at
    // `min(inside, cap)` (the length of `positions` and `inside`), and a position read from
    // `positions` is one the pass wrote, below `len`; `buffer` is read at its segment's state
    // words and its work words; unit 0 writes the 4 state words.
    unsafe {
        one_pass_resolve_kernel::launch_unchecked(
            client,
            cube_count,
            cube_dim,
            grad.clone().into_buffer_arg(),
            out.clone().into_buffer_arg(),
            positions.into_buffer_arg(),
            inside.into_buffer_arg(),
            buffer.into_buffer_arg(),
            state.clone().into_buffer_arg(),
            segment_start,
            work_start,
            len as u32,
            cap as u32,
            inf_key,
            plan.kind,
            plan.storage,
        );
    }
    (out, state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_holds_the_brackets_share_with_a_margin() {
        // A bracket over a tenth of the sample: a tenth of the entries, a quarter more, in
        // whole vectors.
        assert_eq!(buffer_cap(1_024_000, 1_000, Some(100), Some(199)), 129_024);
        // Open ends count from the sample's first key and to its last.
        assert_eq!(buffer_cap(1_024_000, 1_000, None, Some(99)), 129_024);
        // Never more than the tensor's whole vectors.
        assert_eq!(buffer_cap(5_000, 256, None, None), 5_056);
    }
}
