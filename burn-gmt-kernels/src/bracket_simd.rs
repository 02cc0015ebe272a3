//! The bracket scan of `f32` keys ([`crate::host::scan_bracket`]) in AVX-512, where the CPU
//! has it: 16 keys a step, the ones inside the bracket packed with one compress instruction.
//!
//! The portable loop keeps a key by writing every key at the end of the kept ones, a store
//! whose address depends on the previous element: it runs at about 2 ns an entry, four times
//! slower than counting alone, and is most of a CPU mask's time. Compressing 16 lanes at once
//! takes that dependency off every entry. The compress goes to a register and then a full
//! 16-lane store (the memory form of `vpcompressd` is microcoded on some AMD cores), so the
//! output needs 16 spare slots past its cap.

/// What one scan found: `(below, non_finite, inside)`, with the first `min(inside, cap)`
/// keys inside the bracket written to `keys` in order.
pub(crate) type Found = (u32, u32, usize);

/// The bracket of a scan in `f32` key bits: `lo..=last` inside, `inf` and up non-finite,
/// every key clamped to `nan` first (every NaN the one NaN key).
#[derive(Debug, Clone, Copy)]
pub(crate) struct F32Bounds {
    pub lo: u32,
    pub last: u32,
    pub inf: u32,
    pub nan: u32,
}

/// Whether [`scan_f32`] runs here (checked once per call: a cached CPUID read).
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The scan of `chunk` (fewer than 2^32 entries) against `bounds`, or `None` when this CPU has
/// no AVX-512. `keys` must hold `cap + 16` entries.
pub(crate) fn scan_f32(
    chunk: &[f32],
    bounds: F32Bounds,
    keys: &mut [u32],
    cap: usize,
) -> Option<Found> {
    assert!(
        keys.len() >= cap + 16,
        "bracket scan: room for 16 keys past the cap"
    );
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: AVX-512F is present (checked above); the function reads `chunk` and writes
        // at most 16 keys from an offset below `cap`, within `keys` (checked above).
        return Some(unsafe { x86::scan_f32(chunk, bounds, keys, cap) });
    }
    let _ = (chunk, bounds, cap);
    None
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{F32Bounds, Found};
    use std::arch::x86_64::*;

    /// See [`super::scan_f32`].
    ///
    /// # Safety
    /// The CPU has AVX-512F, and `keys.len() >= cap + 16`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scan_f32(
        chunk: &[f32],
        bounds: F32Bounds,
        keys: &mut [u32],
        cap: usize,
    ) -> Found {
        let splat = |v: u32| _mm512_set1_epi32(v as i32);
        let (sign_off, lo, last) = (splat(0x7FFF_FFFF), splat(bounds.lo), splat(bounds.last));
        let (inf, nan) = (splat(bounds.inf), splat(bounds.nan));
        let (mut below, mut non_finite, mut kept) = (0u32, 0u32, 0usize);
        let mut blocks = chunk.chunks_exact(16);
        for block in &mut blocks {
            // SAFETY: `block` holds 16 f32, read unaligned.
            let bits = unsafe { _mm512_loadu_si512(block.as_ptr().cast()) };
            let key = _mm512_min_epu32(_mm512_and_si512(bits, sign_off), nan);
            let is_below = _mm512_cmplt_epu32_mask(key, lo);
            let is_inside = !is_below & _mm512_cmple_epu32_mask(key, last);
            below = below.wrapping_add(is_below.count_ones());
            non_finite = non_finite.wrapping_add(_mm512_cmpge_epu32_mask(key, inf).count_ones());
            if kept < cap {
                let packed = _mm512_maskz_compress_epi32(is_inside, key);
                // SAFETY: `kept < cap` and `keys` has 16 slots past `cap`.
                unsafe { _mm512_storeu_si512(keys.as_mut_ptr().add(kept).cast(), packed) };
            }
            kept += is_inside.count_ones() as usize;
        }
        for &x in blocks.remainder() {
            let key = (x.to_bits() & 0x7FFF_FFFF).min(bounds.nan);
            below = below.wrapping_add(u32::from(key < bounds.lo));
            non_finite = non_finite.wrapping_add(u32::from(key >= bounds.inf));
            if (bounds.lo..=bounds.last).contains(&key) {
                if kept < cap {
                    keys[kept] = key;
                }
                kept += 1;
            }
        }
        (below, non_finite, kept)
    }
}
