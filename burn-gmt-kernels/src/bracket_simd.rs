//! The bracket scan of `f32` keys ([`crate::host::scan_bracket`]) in vector code, where the
//! CPU has it: AVX-512 (16 keys a step, the kept ones packed by one compress instruction) or
//! AVX2 (8 keys a step, packed by a permutation looked up from the lane mask).
//!
//! The portable loop keeps a key by writing every key at the end of the kept ones, a store
//! whose address depends on the previous element: it runs at about 2 ns an entry, four times
//! slower than counting alone, and is most of a CPU mask's time. Packing a vector at once takes
//! that dependency off every entry. The packed keys go out in one full-width store (the memory
//! form of `vpcompressd` is microcoded on some AMD cores), so the output needs 16 spare slots
//! past its cap.

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

/// The vector code this CPU runs the scan with, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    Avx512,
    Avx2,
}

/// The best of [`Isa`] this CPU has (a cached CPUID read).
pub(crate) fn best() -> Option<Isa> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return Some(Isa::Avx512);
        }
        if std::is_x86_feature_detected!("avx2") {
            return Some(Isa::Avx2);
        }
    }
    None
}

/// The scan of `chunk` (fewer than 2^32 entries) against `bounds` (keys of at most the NaN
/// key, so below 2^31) with the vector code `isa` ([`best`] for this CPU), or `None` when this
/// CPU does not have it. `keys` must hold `cap + 16` entries.
pub(crate) fn scan_f32(
    isa: Isa,
    chunk: &[f32],
    bounds: F32Bounds,
    keys: &mut [u32],
    cap: usize,
) -> Option<Found> {
    assert!(
        keys.len() >= cap + 16,
        "bracket scan: room for 16 keys past the cap"
    );
    assert!(
        bounds.nan < 1 << 31,
        "bracket scan: f32 keys are below 2^31"
    );
    #[cfg(target_arch = "x86_64")]
    match isa {
        Isa::Avx512 if std::is_x86_feature_detected!("avx512f") => {
            // SAFETY: AVX-512F is present; the function reads `chunk` and writes at most 16
            // keys from an offset below `cap`, within `keys` (checked above).
            return Some(unsafe { x86::scan_f32_avx512(chunk, bounds, keys, cap) });
        }
        Isa::Avx2 if std::is_x86_feature_detected!("avx2") => {
            // SAFETY: AVX2 is present; as above, with 8 keys per store.
            return Some(unsafe { x86::scan_f32_avx2(chunk, bounds, keys, cap) });
        }
        _ => {}
    }
    let _ = (isa, chunk, bounds, cap);
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
    pub(super) unsafe fn scan_f32_avx512(
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
        scan_tail(
            blocks.remainder(),
            bounds,
            keys,
            cap,
            (below, non_finite, kept),
        )
    }

    /// For each 8-bit lane mask, the lanes it selects, packed to the front: the permutation
    /// that packs the kept keys of an AVX2 vector.
    static PACK: [[u32; 8]; 256] = {
        let mut table = [[0u32; 8]; 256];
        let mut mask = 0;
        while mask < 256 {
            let (mut lane, mut packed) = (0, 0);
            while lane < 8 {
                if (mask >> lane) & 1 == 1 {
                    table[mask][packed] = lane as u32;
                    packed += 1;
                }
                lane += 1;
            }
            mask += 1;
        }
        table
    };

    /// See [`super::scan_f32`]. Keys below 2^31 compare alike as signed integers, which is
    /// all AVX2 compares.
    ///
    /// # Safety
    /// The CPU has AVX2, and `keys.len() >= cap + 16`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn scan_f32_avx2(
        chunk: &[f32],
        bounds: F32Bounds,
        keys: &mut [u32],
        cap: usize,
    ) -> Found {
        let splat = |v: u32| _mm256_set1_epi32(v as i32);
        let (sign_off, lo, last) = (splat(0x7FFF_FFFF), splat(bounds.lo), splat(bounds.last));
        let (inf, nan) = (splat(bounds.inf), splat(bounds.nan));
        let lanes = |m: __m256i| _mm256_movemask_ps(_mm256_castsi256_ps(m)) as u32;
        let (mut below, mut non_finite, mut kept) = (0u32, 0u32, 0usize);
        let mut blocks = chunk.chunks_exact(8);
        for block in &mut blocks {
            // SAFETY: `block` holds 8 f32, read unaligned.
            let bits = unsafe { _mm256_loadu_si256(block.as_ptr().cast()) };
            let key = _mm256_min_epi32(_mm256_and_si256(bits, sign_off), nan);
            let is_below = lanes(_mm256_cmpgt_epi32(lo, key));
            let is_above = lanes(_mm256_cmpgt_epi32(key, last));
            let is_finite = lanes(_mm256_cmpgt_epi32(inf, key));
            let is_inside = !(is_below | is_above) & 0xFF;
            below = below.wrapping_add(is_below.count_ones());
            non_finite = non_finite.wrapping_add(8 - is_finite.count_ones());
            if kept < cap {
                // SAFETY: `PACK` rows hold 8 lanes; `kept < cap` and `keys` has 16 slots past
                // `cap`.
                unsafe {
                    let order = _mm256_loadu_si256(PACK[is_inside as usize].as_ptr().cast());
                    let packed = _mm256_permutevar8x32_epi32(key, order);
                    _mm256_storeu_si256(keys.as_mut_ptr().add(kept).cast(), packed);
                }
            }
            kept += is_inside.count_ones() as usize;
        }
        scan_tail(
            blocks.remainder(),
            bounds,
            keys,
            cap,
            (below, non_finite, kept),
        )
    }

    /// The last entries of a chunk, one at a time, added to what the vector loop found.
    fn scan_tail(
        tail: &[f32],
        bounds: F32Bounds,
        keys: &mut [u32],
        cap: usize,
        found: Found,
    ) -> Found {
        let (mut below, mut non_finite, mut kept) = found;
        for &x in tail {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The scan one entry at a time: the reference.
    fn plain(values: &[f32], b: F32Bounds, cap: usize) -> (u32, u32, usize, Vec<u32>) {
        let keys: Vec<u32> = values
            .iter()
            .map(|x| (x.to_bits() & 0x7FFF_FFFF).min(b.nan))
            .collect();
        let inside: Vec<u32> = keys
            .iter()
            .copied()
            .filter(|k| (b.lo..=b.last).contains(k))
            .collect();
        let below = keys.iter().filter(|&&k| k < b.lo).count() as u32;
        let non_finite = keys.iter().filter(|&&k| k >= b.inf).count() as u32;
        let kept = inside.len();
        (
            below,
            non_finite,
            kept,
            inside.into_iter().take(cap).collect(),
        )
    }

    /// Every vector code this CPU has against the reference, at lengths around both vector
    /// widths, with NaN payloads, infinities and subnormals, for brackets of every width and
    /// caps that hold every key or overflow.
    #[test]
    fn every_vector_code_here_matches_a_plain_scan() {
        for isa in [Isa::Avx512, Isa::Avx2] {
            for n in [0usize, 1, 7, 8, 9, 15, 16, 17, 31, 100, 5_000] {
                let values = crate::test_values::awkward_f32(n, 0x51);
                let (inf, nan) = (0x7F80_0000, 0x7F80_0001);
                for (lo, last) in [
                    (0, nan),
                    (1.0f32.to_bits(), 2.0f32.to_bits()),
                    (inf, nan),
                    (0, 0),
                ] {
                    let bounds = F32Bounds { lo, last, inf, nan };
                    for cap in [n, n / 3, 0] {
                        let mut keys = vec![0u32; cap + 16];
                        let Some((below, non_finite, kept)) =
                            scan_f32(isa, &values, bounds, &mut keys, cap)
                        else {
                            continue;
                        };
                        let context = format!("{isa:?} n={n} lo={lo:#x} last={last:#x} cap={cap}");
                        let expected = plain(&values, bounds, cap);
                        assert_eq!(
                            (below, non_finite, kept),
                            (expected.0, expected.1, expected.2),
                            "{context}"
                        );
                        assert_eq!(
                            &keys[..kept.min(cap)],
                            &expected.3[..],
                            "{context}: kept keys"
                        );
                    }
                }
            }
        }
    }
}
