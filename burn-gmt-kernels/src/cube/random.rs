//! The random-mask baseline on the device: the same counter-based draws as the host
//! ([`crate::random`]), so a mask is identical on every backend. SplitMix64 is computed in
//! 32-bit halves: WGSL has no 64-bit integers, and every runtime has `u32`.
//!
//! Entry `i` (row-major) is masked when it is finite and `draw(key, i) < bound` (or `bound` is
//! `u64::MAX`); kept finite entries are multiplied by `scale` in f32, rounded once to the
//! element type, as the host does ([`crate::element::MaskElement::scale`]).

use cubecl::prelude::*;

#[cfg(not(gmt_cuda_codegen))]
use super::count::assert_counters;
use super::count::{MaskedRule, MaskedRuleExpand, count_entries};
use super::key::{KeyKind, WIDE_INF_KEY, wide_key};
#[cfg(not(gmt_cuda_codegen))]
use super::launch::LaunchPlan;
use super::launch::{Grid, PartKernel, PlannedKernel};
#[cfg(not(gmt_cuda_codegen))]
use burn_cubecl::tensor::CubeTensor;

/// A 64-bit word as two 32-bit halves.
#[derive(CubeType, Clone, Copy)]
struct Word {
    hi: u32,
    lo: u32,
}

/// The full 64-bit product of two 32-bit words, from 16-bit partial products.
#[cube]
fn mul_wide(a: u32, b: u32) -> Word {
    let (a0, a1) = (a & 0xFFFFu32, a >> 16u32);
    let (b0, b1) = (b & 0xFFFFu32, b >> 16u32);
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    let mid = (p00 >> 16u32) + (p01 & 0xFFFFu32) + (p10 & 0xFFFFu32);
    Word {
        hi: p11 + (p01 >> 16u32) + (p10 >> 16u32) + (mid >> 16u32),
        lo: (p00 & 0xFFFFu32) | (mid << 16u32),
    }
}

/// `a * b` modulo 2^64.
#[cube]
fn mul64(a: Word, b: Word) -> Word {
    let low = mul_wide(a.lo, b.lo);
    Word {
        hi: low.hi + a.hi * b.lo + a.lo * b.hi,
        lo: low.lo,
    }
}

/// `a ^ (a >> shift)` for `0 < shift < 32`.
#[cube]
fn xor_shift(a: Word, #[comptime] shift: u32) -> Word {
    Word {
        hi: a.hi ^ (a.hi >> shift),
        lo: a.lo ^ ((a.lo >> shift) | (a.hi << (32 - shift))),
    }
}

/// [`crate::random::mix64`].
#[cube]
fn mix64(z: Word) -> Word {
    let z = mul64(
        xor_shift(z, 30u32),
        Word {
            hi: 0xBF58_476Du32,
            lo: 0x1CE4_E5B9u32,
        },
    );
    let z = mul64(
        xor_shift(z, 27u32),
        Word {
            hi: 0x94D0_49BBu32,
            lo: 0x1331_11EBu32,
        },
    );
    xor_shift(z, 31u32)
}

/// Whether entry `index` (below 2^32) is drawn under `key` and `bound`
/// ([`crate::random::is_drawn`]), each given as its two halves.
#[cube]
#[allow(clippy::too_many_arguments)]
fn is_drawn(
    key_hi: u32,
    key_lo: u32,
    bound_hi: u32,
    bound_lo: u32,
    index: u32,
    #[comptime] every: bool,
) -> bool {
    let mut drawn = true;
    if comptime!(!every) {
        let spread = mul64(
            Word {
                hi: 0u32,
                lo: index,
            },
            Word {
                hi: 0xD1B5_4A32u32,
                lo: 0xD192_ED03u32,
            },
        );
        let d = mix64(Word {
            hi: key_hi ^ spread.hi,
            lo: key_lo ^ spread.lo,
        });
        drawn = d.hi < bound_hi || (d.hi == bound_hi && d.lo < bound_lo);
    }
    drawn
}

/// Which entries a random mask draws: the finite ones whose draw under the key is below the
/// bound, every finite one when `every`.
#[derive(CubeLaunch, CubeType)]
pub struct Draw {
    /// The draw key, high and low halves.
    key_hi: u32,
    key_lo: u32,
    /// The draw bound, high and low halves.
    bound_hi: u32,
    bound_lo: u32,
    /// Every finite entry is drawn (`bound` is `u64::MAX`).
    #[cube(comptime)]
    every: bool,
}

#[cube]
impl MaskedRule for Draw {
    fn is_masked(&self, key: u32, index: usize) -> bool {
        let mut drawn = false;
        if key < WIDE_INF_KEY {
            drawn = is_drawn(
                self.key_hi,
                self.key_lo,
                self.bound_hi,
                self.bound_lo,
                index as u32,
                self.every,
            );
        }
        drawn
    }
}

/// The launch argument of the draws under `key` and `bound` (halves: WGSL has no 64-bit
/// integers).
#[cfg(not(gmt_cuda_codegen))]
fn draw(key: u64, bound: u64) -> DrawLaunch {
    let halves = |word: u64| ((word >> 32) as u32, word as u32);
    let (key_hi, key_lo) = halves(key);
    let (bound_hi, bound_lo) = halves(bound);
    DrawLaunch::new(key_hi, key_lo, bound_hi, bound_lo, bound == u64::MAX)
}

/// The buffer and draws of the random mask kernel.
#[derive(CubeLaunch, CubeType)]
pub struct RandomMaskArgs<F: Float, N: Size> {
    /// The gradient, masked in place.
    values: Box<[Vector<F, N>]>,
    /// The entries masked.
    draw: Draw,
    /// The factor of kept entries.
    scale: f32,
    /// Kept entries are scaled (`scale` is not 1).
    #[cube(comptime)]
    rescale: bool,
}

/// The random mask kernel family.
pub struct RandomMask;

#[cube]
impl<F: Float, N: Size> PartKernel<F, N> for RandomMask {
    type Args = RandomMaskArgs<F, N>;

    /// Masks the vector at this unit's position in place.
    fn run(args: &mut RandomMaskArgs<F, N>, start: usize, end: usize, #[comptime] kind: KeyKind) {
        let pos = start + ABSOLUTE_POS;
        if pos < end {
            let x = args.values[pos];
            let keys = wide_key::<F, N>(x, kind);
            let mut out = x;
            #[unroll]
            for lane in 0..N::value() {
                let key = keys.extract(lane);
                // Non-finite entries are neither drawn nor scaled.
                if key < WIDE_INF_KEY {
                    if args.draw.is_masked(key, pos * N::value() + lane) {
                        out.insert(lane, F::new(0.0));
                    } else if comptime![args.rescale] {
                        out.insert(
                            lane,
                            F::cast_from(f32::cast_from(x.extract(lane)) * args.scale),
                        );
                    }
                }
            }
            args.values[pos] = out;
        }
    }
}

// SAFETY: a unit touches `values` at its own position only, after checking it against `end`.
unsafe impl PlannedKernel for RandomMask {
    type Args<F: Float, N: Size> = RandomMaskArgs<F, N>;
    type Part<F: Float, N: Size> = RandomMask;
    const GRID: Grid = Grid::Elementwise;
}

/// The buffers and draws of the random count kernel.
#[derive(CubeLaunch, CubeType)]
pub struct RandomCountArgs<F: Float, N: Size> {
    /// The gradient.
    values: Box<[Vector<F, N>]>,
    /// `[masked, non-finite]`, added to.
    counts: Box<[Atomic<u32>]>,
    /// The entries counted as masked.
    draw: Draw,
}

/// The random count kernel family.
pub struct RandomCount;

#[cube]
impl<F: Float, N: Size> PartKernel<F, N> for RandomCount {
    type Args = RandomCountArgs<F, N>;

    /// Adds to `counts` the drawn finite entries and the non-finite ones of this unit's
    /// positions.
    fn run(args: &mut RandomCountArgs<F, N>, start: usize, end: usize, #[comptime] kind: KeyKind) {
        count_entries::<F, N, Draw>(&args.values, &mut args.counts, &args.draw, start, end, kind);
    }
}

// SAFETY: a unit reads `values` at positions in `start..end` only (the grid-stride loop stops
// at `end`); `launch_count` gives two counters.
unsafe impl PlannedKernel for RandomCount {
    type Args<F: Float, N: Size> = RandomCountArgs<F, N>;
    type Part<F: Float, N: Size> = RandomCount;
    const GRID: Grid = Grid::Reduction;
}

/// Masks `values` (contiguous, writable, fewer than 2^32 entries) in place.
#[cfg(not(gmt_cuda_codegen))]
pub fn launch_mask(values: &CubeTensor, plan: &LaunchPlan, key: u64, bound: u64, scale: f64) {
    plan.launch::<RandomMask>(|| {
        RandomMaskArgsLaunch::new(
            values.clone().into_buffer_arg(),
            draw(key, bound),
            scale as f32,
            scale != 1.0,
        )
    });
}

/// Adds the random-mask counts of `values` (contiguous, fewer than 2^32 entries) to `counts`
/// (two zeroed `u32` counters).
#[cfg(not(gmt_cuda_codegen))]
pub fn launch_count(
    values: &CubeTensor,
    counts: &CubeTensor,
    plan: &LaunchPlan,
    key: u64,
    bound: u64,
) {
    assert_counters(counts);
    plan.launch::<RandomCount>(|| {
        RandomCountArgsLaunch::new(
            values.clone().into_buffer_arg(),
            counts.clone().into_buffer_arg(),
            draw(key, bound),
        )
    });
}
