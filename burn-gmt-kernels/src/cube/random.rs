//! The random-mask baseline on the device: the same counter-based draws as the host
//! ([`crate::random`]), so a mask is identical on every backend. SplitMix64 is computed in
//! 32-bit halves: WGSL has no 64-bit integers, and every runtime has `u32`.
//!
//! Entry `i` (row-major) is masked when it is finite and `draw(key, i) < bound` (or `bound` is
//! `u64::MAX`); kept finite entries are multiplied by `scale` in f32, rounded once to the
//! element type, as the host does ([`crate::element::MaskElement::scale`]).

use cubecl::prelude::*;

use super::count::add_cube_counts;
use super::key::{WIDE_INF_KEY, wide_key};
use super::{Launch, LaunchPlan};
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

/// Masks `values[start..end]` (vectors) in place.
#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
fn random_mask_kernel<F: Float, N: Size>(
    values: &mut [Vector<F, N>],
    key_hi: u32,
    key_lo: u32,
    bound_hi: u32,
    bound_lo: u32,
    scale: f32,
    start: usize,
    end: usize,
    #[comptime] every: bool,
    #[comptime] rescale: bool,
    #[comptime] kind: u32,
    #[define(F)] _dtype: ElemType,
) {
    let pos = start + ABSOLUTE_POS;
    if pos >= end {
        terminate!();
    }
    let x = values[pos];
    let keys = wide_key::<F, N>(x, kind);
    let mut out = x;
    #[unroll]
    for lane in 0..N::value() {
        if keys.extract(lane) < WIDE_INF_KEY {
            let index = (pos * N::value() + lane) as u32;
            if is_drawn(key_hi, key_lo, bound_hi, bound_lo, index, every) {
                out.insert(lane, F::new(0.0));
            } else if comptime!(rescale) {
                out.insert(lane, F::cast_from(f32::cast_from(x.extract(lane)) * scale));
            }
        }
    }
    values[pos] = out;
}

/// Adds to `counts` the drawn finite entries and the non-finite ones of `values[start..end]`.
#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
fn random_mask_count_kernel<F: Float, N: Size>(
    values: &[Vector<F, N>],
    counts: &mut [Atomic<u32>],
    key_hi: u32,
    key_lo: u32,
    bound_hi: u32,
    bound_lo: u32,
    start: usize,
    end: usize,
    #[comptime] every: bool,
    #[comptime] kind: u32,
    #[define(F)] _dtype: ElemType,
) {
    let mut masked = 0u32;
    let mut non_finite = 0u32;
    let stride = CUBE_COUNT * (CUBE_DIM as usize);
    let mut pos = start + ABSOLUTE_POS;
    while pos < end {
        let keys = wide_key::<F, N>(values[pos], kind);
        #[unroll]
        for lane in 0..N::value() {
            if keys.extract(lane) >= WIDE_INF_KEY {
                non_finite += 1u32;
            } else if is_drawn(
                key_hi,
                key_lo,
                bound_hi,
                bound_lo,
                (pos * N::value() + lane) as u32,
                every,
            ) {
                masked += 1u32;
            }
        }
        pos += stride;
    }
    add_cube_counts(counts, masked, non_finite);
}

/// A 64-bit scalar as the kernels' two halves.
fn halves(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

/// Launches [`random_mask_kernel`] over `values` (contiguous, writable, fewer than 2^32
/// entries).
pub fn launch_mask(values: &CubeTensor, plan: &LaunchPlan, key: u64, bound: u64, scale: f64) {
    let (key_hi, key_lo) = halves(key);
    let (bound_hi, bound_lo) = halves(bound);
    for launch in plan.launches() {
        let Launch {
            vector_size,
            start,
            end,
            cube_count,
            cube_dim,
        } = launch;
        // SAFETY: every unit checks its position against `end`, within the buffer.
        unsafe {
            random_mask_kernel::launch_unchecked(
                &values.client,
                cube_count,
                cube_dim,
                plan.address_type,
                vector_size,
                values.clone().into_buffer_arg(),
                key_hi,
                key_lo,
                bound_hi,
                bound_lo,
                scale as f32,
                start,
                end,
                bound == u64::MAX,
                scale != 1.0,
                plan.kind,
                plan.storage,
            );
        }
    }
}

/// Launches [`random_mask_count_kernel`] over `values` (contiguous, fewer than 2^32 entries),
/// adding to `counts` (two zeroed `u32` counters).
pub fn launch_count(
    values: &CubeTensor,
    counts: &CubeTensor,
    plan: &LaunchPlan,
    key: u64,
    bound: u64,
) {
    let (key_hi, key_lo) = halves(key);
    let (bound_hi, bound_lo) = halves(bound);
    for launch in plan.reduction_launches() {
        let Launch {
            vector_size,
            start,
            end,
            cube_count,
            cube_dim,
        } = launch;
        // SAFETY: every unit reads positions in `start..end`, within the buffer; the counts
        // hold two entries.
        unsafe {
            random_mask_count_kernel::launch_unchecked(
                &values.client,
                cube_count,
                cube_dim,
                plan.address_type,
                vector_size,
                values.clone().into_buffer_arg(),
                counts.clone().into_buffer_arg(),
                key_hi,
                key_lo,
                bound_hi,
                bound_lo,
                start,
                end,
                bound == u64::MAX,
                plan.kind,
                plan.storage,
            );
        }
    }
}
