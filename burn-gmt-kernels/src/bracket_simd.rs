//! The bracket scan ([`crate::host::scan_bracket`]) in vector code, where the CPU has it:
//! AVX-512 (16 keys a step, the kept ones packed by one compress instruction) or AVX2 (8 keys
//! a step, packed by a permutation looked up from the lane mask). `f32` keys are read as they
//! are; `f16` and `bf16` keys are widened to 32-bit lanes on load and narrowed back on store,
//! so one body serves both widths.
//!
//! The portable loop keeps a key by writing every key at the end of the kept ones, a store
//! whose address depends on the previous element: it runs at about 2 ns an entry, four times
//! slower than counting alone, and is most of a CPU mask's time. Packing a vector at once takes
//! that dependency off every entry. The packed keys go out in one full-width store (the memory
//! form of `vpcompressd` is microcoded on some AMD cores), so the output needs 16 spare slots
//! past its cap.
//!
//! The one-pass mask ([`crate::host::mask_smallest`]) runs the same scan while it writes each
//! entry to a second buffer ([`mask_keys`]): zeroed below the bracket, as it is otherwise,
//! with the positions of the kept keys packed beside them; a block with no key inside the
//! bracket (most of them) packs nothing. Plain stores, not non-temporal ones: on this
//! project's AMD EPYC test machine a pass that streamed its output past the cache took twice
//! as long (16M f32 entries, one thread, best of 15 on shared cores: 26 ms against 12.5 ms).

/// What one scan found: `(below, non_finite, inside)`, with the first `min(inside, cap)`
/// keys inside the bracket written to `keys` in order.
pub(crate) type Found = (u32, u32, usize);

use std::mem::MaybeUninit;

/// The bracket of a scan in key bits: `lo..=last` inside, `inf` and up non-finite, every key
/// clamped to `nan` first (every NaN the one NaN key).
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyBounds {
    pub lo: u32,
    pub last: u32,
    pub inf: u32,
    pub nan: u32,
}

/// Where [`mask_keys`] writes: every entry to `values` (the length of the input), the first
/// `cap` kept keys to `keys` and their positions in the chunk to `positions`, from the start
/// (both possibly uninitialised, with 16 spare slots past `cap`).
pub(crate) struct MaskOut<'a, L> {
    pub values: &'a mut [L],
    pub keys: &'a mut [MaybeUninit<L>],
    pub positions: &'a mut [MaybeUninit<u32>],
    pub cap: usize,
}

/// The bits of a float the vector scan reads: `u32` for `f32`, `u16` for `f16` and `bf16`.
pub(crate) trait KeyLane: bytemuck::Pod + Default {
    /// Whether a lane is read as it is (32 bits) rather than widened from 16.
    const WIDE: bool;
    /// The bits below the sign.
    const MAGNITUDE: u32;
    /// The lane's bits, widened.
    fn widen(self) -> u32;
    /// A key (below 2^16 for a 16-bit lane), narrowed to the lane.
    fn narrow(key: u32) -> Self;
}

impl KeyLane for u32 {
    const WIDE: bool = true;
    const MAGNITUDE: u32 = 0x7FFF_FFFF;
    fn widen(self) -> u32 {
        self
    }
    fn narrow(key: u32) -> Self {
        key
    }
}

impl KeyLane for u16 {
    const WIDE: bool = false;
    const MAGNITUDE: u32 = 0x7FFF;
    fn widen(self) -> u32 {
        self.into()
    }
    fn narrow(key: u32) -> Self {
        key as u16
    }
}

/// The vector code this CPU runs the scan with, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    Avx512,
    Avx2,
}

/// The best of [`Isa`] this CPU has (a cached CPUID read).
pub(crate) fn best() -> Option<Isa> {
    [Isa::Avx512, Isa::Avx2].into_iter().find(|&isa| has(isa))
}

/// Whether this CPU runs the vector code `isa`. Both also count the lanes they keep with
/// `popcnt` (which every CPU with AVX2 has): without it, `count_ones` is a dozen instructions
/// per count and the scan took twice as long.
fn has(isa: Isa) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let popcnt = std::is_x86_feature_detected!("popcnt");
        match isa {
            Isa::Avx512 => popcnt && std::is_x86_feature_detected!("avx512f"),
            Isa::Avx2 => popcnt && std::is_x86_feature_detected!("avx2"),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = isa;
        false
    }
}

/// The scan of `chunk` (float bits, fewer than 2^32 entries) against `bounds` (keys of at most
/// the NaN key, so below the lane's sign bit) with the vector code `isa` ([`best`] for this
/// CPU), or `None` when this CPU does not have it. `keys` must hold `cap + 16` entries.
pub(crate) fn scan_keys<L: KeyLane>(
    isa: Isa,
    chunk: &[L],
    bounds: KeyBounds,
    keys: &mut [L],
    cap: usize,
) -> Option<Found> {
    assert!(
        keys.len() >= cap + 16,
        "bracket scan: room for 16 keys past the cap"
    );
    assert!(
        bounds.nan <= L::MAGNITUDE,
        "bracket scan: keys are below the sign bit"
    );
    #[cfg(target_arch = "x86_64")]
    if has(isa) {
        return Some(match isa {
            // SAFETY: AVX-512F and POPCNT are present; the function reads `chunk` and writes
            // at most 16 keys from an offset below `cap`, within `keys` (checked above).
            Isa::Avx512 => unsafe { x86::scan_avx512(chunk, bounds, keys, cap) },
            // SAFETY: AVX2 and POPCNT are present; as above, with 8 keys per store.
            Isa::Avx2 => unsafe { x86::scan_avx2(chunk, bounds, keys, cap) },
        });
    }
    let _ = (isa, chunk, bounds, cap);
    None
}

/// The one pass of [`crate::host::mask_smallest`] over `chunk` (float bits, fewer than 2^32
/// entries) with the vector code `isa`: the counts of [`scan_keys`], the kept keys and their
/// positions (the first `min(inside, cap)` of each written), and every entry written to
/// `out.values`, zeroed when its key is below `zero` (the bracket's low edge, at most the
/// `+inf` key, so NaN and ±inf are never zeroed). `None` when this CPU does not have `isa`.
pub(crate) fn mask_keys<L: KeyLane>(
    isa: Isa,
    chunk: &[L],
    bounds: KeyBounds,
    zero: u32,
    out: MaskOut<'_, L>,
) -> Option<Found> {
    assert_eq!(chunk.len(), out.values.len(), "one pass: output length");
    assert!(
        out.keys.len() >= out.cap + 16 && out.positions.len() >= out.cap + 16,
        "one pass: room for 16 keys and positions past the cap"
    );
    assert!(
        bounds.nan <= L::MAGNITUDE && zero <= bounds.inf,
        "one pass: keys below the sign bit, zero edge at most +inf"
    );
    #[cfg(target_arch = "x86_64")]
    if has(isa) {
        return Some(match isa {
            // SAFETY: AVX-512F and POPCNT are present; the function reads `chunk`, writes
            // `out.values` entry for entry (same length, checked above), and at most 16 keys
            // and positions from an offset below `cap` (room checked above).
            Isa::Avx512 => unsafe { x86::mask_avx512(chunk, bounds, zero, out) },
            // SAFETY: AVX2 and POPCNT are present; as above, with 8 entries per store.
            Isa::Avx2 => unsafe { x86::mask_avx2(chunk, bounds, zero, out) },
        });
    }
    let _ = (isa, chunk, bounds, zero, out);
    None
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Found, KeyBounds, KeyLane, MaskOut};
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// See [`super::scan_keys`].
    ///
    /// # Safety
    /// The CPU has AVX-512F and POPCNT, and `keys.len() >= cap + 16`.
    #[target_feature(enable = "avx512f,popcnt")]
    pub(super) unsafe fn scan_avx512<L: KeyLane>(
        chunk: &[L],
        bounds: KeyBounds,
        keys: &mut [L],
        cap: usize,
    ) -> Found {
        let splat = |v: u32| _mm512_set1_epi32(v as i32);
        let (magnitude, lo, last) = (splat(L::MAGNITUDE), splat(bounds.lo), splat(bounds.last));
        let (inf, nan) = (splat(bounds.inf), splat(bounds.nan));
        scan_blocks::<L, 16>(chunk, bounds, keys, cap, |block, out| {
            // SAFETY: `block` holds 16 lanes, read unaligned (16-bit lanes widened).
            let bits = unsafe {
                match L::WIDE {
                    true => _mm512_loadu_si512(block.as_ptr().cast()),
                    false => _mm512_cvtepu16_epi32(_mm256_loadu_si256(block.as_ptr().cast())),
                }
            };
            let key = _mm512_min_epu32(_mm512_and_si512(bits, magnitude), nan);
            let is_below = _mm512_cmplt_epu32_mask(key, lo);
            let is_inside = !is_below & _mm512_cmple_epu32_mask(key, last);
            if let Some(out) = out {
                let packed = _mm512_maskz_compress_epi32(is_inside, key);
                // SAFETY: `out` has room for a block of keys (`scan_blocks`).
                unsafe {
                    match L::WIDE {
                        true => _mm512_storeu_si512(out.cast(), packed),
                        false => _mm256_storeu_si256(out.cast(), _mm512_cvtepi32_epi16(packed)),
                    }
                }
            }
            let is_non_finite = _mm512_cmpge_epu32_mask(key, inf);
            (
                is_below.count_ones(),
                is_non_finite.count_ones(),
                is_inside.count_ones(),
            )
        })
    }

    /// See [`super::mask_keys`].
    ///
    /// # Safety
    /// The CPU has AVX-512F and POPCNT; `out` has the room [`super::mask_keys`] checks.
    #[target_feature(enable = "avx512f,popcnt")]
    pub(super) unsafe fn mask_avx512<L: KeyLane>(
        chunk: &[L],
        bounds: KeyBounds,
        zero: u32,
        out: MaskOut<'_, L>,
    ) -> Found {
        let splat = |v: u32| _mm512_set1_epi32(v as i32);
        let (magnitude, lo, last) = (splat(L::MAGNITUDE), splat(bounds.lo), splat(bounds.last));
        let (inf, nan, zero_edge) = (splat(bounds.inf), splat(bounds.nan), splat(zero));
        let iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        mask_blocks::<L, 16>(chunk, bounds, zero, out, |block, at, dest, kept| {
            // SAFETY: `block` holds 16 lanes, read unaligned (16-bit lanes widened).
            let bits = unsafe {
                match L::WIDE {
                    true => _mm512_loadu_si512(block.as_ptr().cast()),
                    false => _mm512_cvtepu16_epi32(_mm256_loadu_si256(block.as_ptr().cast())),
                }
            };
            let key = _mm512_min_epu32(_mm512_and_si512(bits, magnitude), nan);
            let is_below = _mm512_cmplt_epu32_mask(key, lo);
            let is_inside = !is_below & _mm512_cmple_epu32_mask(key, last);
            let is_kept = !_mm512_cmplt_epu32_mask(key, zero_edge);
            let written = _mm512_maskz_mov_epi32(is_kept, bits);
            // SAFETY: `dest` has room for the block's 16 entries (`mask_blocks`).
            unsafe {
                match L::WIDE {
                    true => _mm512_storeu_si512(dest.cast(), written),
                    false => _mm256_storeu_si256(dest.cast(), _mm512_cvtepi32_epi16(written)),
                }
            }
            if let Some((keys, positions)) = kept.filter(|_| is_inside != 0) {
                let packed = _mm512_maskz_compress_epi32(is_inside, key);
                let at = _mm512_add_epi32(iota, _mm512_set1_epi32(at as i32));
                let packed_at = _mm512_maskz_compress_epi32(is_inside, at);
                // SAFETY: `keys` and `positions` have room for a block (`mask_blocks`).
                unsafe {
                    match L::WIDE {
                        true => _mm512_storeu_si512(keys.cast(), packed),
                        false => _mm256_storeu_si256(keys.cast(), _mm512_cvtepi32_epi16(packed)),
                    }
                    _mm512_storeu_si512(positions.cast(), packed_at);
                }
            }
            let is_non_finite = _mm512_cmpge_epu32_mask(key, inf);
            (
                is_below.count_ones(),
                is_non_finite.count_ones(),
                is_inside.count_ones(),
            )
        })
    }

    /// See [`super::mask_keys`].
    ///
    /// # Safety
    /// The CPU has AVX2 and POPCNT; `out` has the room [`super::mask_keys`] checks.
    #[target_feature(enable = "avx2,popcnt")]
    pub(super) unsafe fn mask_avx2<L: KeyLane>(
        chunk: &[L],
        bounds: KeyBounds,
        zero: u32,
        out: MaskOut<'_, L>,
    ) -> Found {
        let splat = |v: u32| _mm256_set1_epi32(v as i32);
        let (magnitude, lo, last) = (splat(L::MAGNITUDE), splat(bounds.lo), splat(bounds.last));
        let (inf, nan, zero_edge) = (splat(bounds.inf), splat(bounds.nan), splat(zero));
        let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let lanes = |m: __m256i| _mm256_movemask_ps(_mm256_castsi256_ps(m)) as u32;
        let narrow = |v: __m256i| {
            // 16-bit keys and bits fit the unsigned saturation of the pack exactly.
            _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v))
        };
        mask_blocks::<L, 8>(chunk, bounds, zero, out, |block, at, dest, kept| {
            // SAFETY: `block` holds 8 lanes, read unaligned (16-bit lanes widened).
            let bits = unsafe {
                match L::WIDE {
                    true => _mm256_loadu_si256(block.as_ptr().cast()),
                    false => _mm256_cvtepu16_epi32(_mm_loadu_si128(block.as_ptr().cast())),
                }
            };
            let key = _mm256_min_epi32(_mm256_and_si256(bits, magnitude), nan);
            let is_below = lanes(_mm256_cmpgt_epi32(lo, key));
            let is_above = lanes(_mm256_cmpgt_epi32(key, last));
            let is_finite = lanes(_mm256_cmpgt_epi32(inf, key));
            let is_inside = !(is_below | is_above) & 0xFF;
            let written = _mm256_andnot_si256(_mm256_cmpgt_epi32(zero_edge, key), bits);
            // SAFETY: `dest` has room for the block's 8 entries (`mask_blocks`).
            unsafe {
                match L::WIDE {
                    true => _mm256_storeu_si256(dest.cast(), written),
                    false => _mm_storeu_si128(dest.cast(), narrow(written)),
                }
            }
            if let Some((keys, positions)) = kept.filter(|_| is_inside != 0) {
                // SAFETY: `PACK` rows hold 8 lanes; `keys` and `positions` have room for a
                // block (`mask_blocks`).
                unsafe {
                    let order = _mm256_loadu_si256(PACK[is_inside as usize].as_ptr().cast());
                    let packed = _mm256_permutevar8x32_epi32(key, order);
                    let at = _mm256_add_epi32(iota, _mm256_set1_epi32(at as i32));
                    let packed_at = _mm256_permutevar8x32_epi32(at, order);
                    match L::WIDE {
                        true => _mm256_storeu_si256(keys.cast(), packed),
                        false => _mm_storeu_si128(keys.cast(), narrow(packed)),
                    }
                    _mm256_storeu_si256(positions.cast(), packed_at);
                }
            }
            (
                is_below.count_ones(),
                8 - is_finite.count_ones(),
                is_inside.count_ones(),
            )
        })
    }

    /// The loop both vector one-pass codes share, `LANES` entries a block:
    /// `block(entries, at, dest, kept)` handles the block at position `at`, writing its
    /// entries to `dest` and, while fewer than `cap` keys are kept, its kept keys and their
    /// positions to `kept` (a full block's width: both have 16 slots past `cap`), and returns
    /// its `(below, non_finite, inside)` counts. The last entries go one at a time
    /// ([`mask_one`]). Inlined into each vector function, whose features the closure shares.
    #[inline(always)]
    fn mask_blocks<L: KeyLane, const LANES: usize>(
        chunk: &[L],
        bounds: KeyBounds,
        zero: u32,
        out: MaskOut<'_, L>,
        mut block: impl FnMut(&[L], usize, *mut L, Option<(*mut L, *mut u32)>) -> (u32, u32, u32),
    ) -> Found {
        let MaskOut {
            values,
            keys,
            positions,
            cap,
        } = out;
        let (mut below, mut non_finite, mut kept) = (0u32, 0u32, 0usize);
        let body = chunk.len() / LANES * LANES;
        for at in (0..body).step_by(LANES) {
            // SAFETY: `at + LANES <= chunk.len() == values.len()`; `kept < cap`, within
            // `keys` and `positions`.
            let dest = unsafe { values.as_mut_ptr().add(at) };
            let out = (kept < cap).then(|| unsafe {
                (
                    keys.as_mut_ptr().add(kept).cast::<L>(),
                    positions.as_mut_ptr().add(kept).cast::<u32>(),
                )
            });
            let (block_below, block_non_finite, block_inside) =
                block(&chunk[at..at + LANES], at, dest, out);
            below = below.wrapping_add(block_below);
            non_finite = non_finite.wrapping_add(block_non_finite);
            kept += block_inside as usize;
        }
        let mut found = (below, non_finite, kept);
        for at in body..chunk.len() {
            mask_one(
                chunk[at],
                at,
                bounds,
                zero,
                &mut values[at],
                keys,
                positions,
                cap,
                &mut found,
            );
        }
        found
    }

    /// One entry of the one pass, added to what was found so far.
    #[allow(clippy::too_many_arguments)]
    fn mask_one<L: KeyLane>(
        x: L,
        at: usize,
        bounds: KeyBounds,
        zero: u32,
        value: &mut L,
        keys: &mut [MaybeUninit<L>],
        positions: &mut [MaybeUninit<u32>],
        cap: usize,
        found: &mut Found,
    ) {
        let key = (x.widen() & L::MAGNITUDE).min(bounds.nan);
        *value = if key < zero { L::default() } else { x };
        found.0 = found.0.wrapping_add(u32::from(key < bounds.lo));
        found.1 = found.1.wrapping_add(u32::from(key >= bounds.inf));
        if (bounds.lo..=bounds.last).contains(&key) {
            if found.2 < cap {
                keys[found.2] = MaybeUninit::new(L::narrow(key));
                positions[found.2] = MaybeUninit::new(at as u32);
            }
            found.2 += 1;
        }
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

    /// See [`super::scan_keys`]. Keys below 2^31 compare alike as signed integers, which is
    /// all AVX2 compares.
    ///
    /// # Safety
    /// The CPU has AVX2 and POPCNT, and `keys.len() >= cap + 16`.
    #[target_feature(enable = "avx2,popcnt")]
    pub(super) unsafe fn scan_avx2<L: KeyLane>(
        chunk: &[L],
        bounds: KeyBounds,
        keys: &mut [L],
        cap: usize,
    ) -> Found {
        let splat = |v: u32| _mm256_set1_epi32(v as i32);
        let (magnitude, lo, last) = (splat(L::MAGNITUDE), splat(bounds.lo), splat(bounds.last));
        let (inf, nan) = (splat(bounds.inf), splat(bounds.nan));
        let lanes = |m: __m256i| _mm256_movemask_ps(_mm256_castsi256_ps(m)) as u32;
        scan_blocks::<L, 8>(chunk, bounds, keys, cap, |block, out| {
            // SAFETY: `block` holds 8 lanes, read unaligned (16-bit lanes widened).
            let bits = unsafe {
                match L::WIDE {
                    true => _mm256_loadu_si256(block.as_ptr().cast()),
                    false => _mm256_cvtepu16_epi32(_mm_loadu_si128(block.as_ptr().cast())),
                }
            };
            let key = _mm256_min_epi32(_mm256_and_si256(bits, magnitude), nan);
            let is_below = lanes(_mm256_cmpgt_epi32(lo, key));
            let is_above = lanes(_mm256_cmpgt_epi32(key, last));
            let is_finite = lanes(_mm256_cmpgt_epi32(inf, key));
            let is_inside = !(is_below | is_above) & 0xFF;
            if let Some(out) = out {
                // SAFETY: `PACK` rows hold 8 lanes; `out` has room for a block of keys
                // (`scan_blocks`).
                unsafe {
                    let order = _mm256_loadu_si256(PACK[is_inside as usize].as_ptr().cast());
                    let packed = _mm256_permutevar8x32_epi32(key, order);
                    match L::WIDE {
                        true => _mm256_storeu_si256(out.cast(), packed),
                        // 16-bit keys fit the unsigned saturation of the pack exactly.
                        false => _mm_storeu_si128(
                            out.cast(),
                            _mm_packus_epi32(
                                _mm256_castsi256_si128(packed),
                                _mm256_extracti128_si256::<1>(packed),
                            ),
                        ),
                    }
                }
            }
            (
                is_below.count_ones(),
                8 - is_finite.count_ones(),
                is_inside.count_ones(),
            )
        })
    }

    /// The loop both vector codes share, `LANES` keys a block: `block` returns a block's
    /// `(below, non_finite, inside)` counts and, given where the kept keys end, stores the
    /// block's inside keys there, packed (a full block's width: `keys` has 16 slots past
    /// `cap`, and `out` is given only while fewer than `cap` keys are kept). The last entries
    /// go through [`scan_tail`]. Inlined into each vector function, whose features the
    /// closure shares.
    #[inline(always)]
    fn scan_blocks<L: KeyLane, const LANES: usize>(
        chunk: &[L],
        bounds: KeyBounds,
        keys: &mut [L],
        cap: usize,
        mut block: impl FnMut(&[L], Option<*mut L>) -> (u32, u32, u32),
    ) -> Found {
        let (mut below, mut non_finite, mut kept) = (0u32, 0u32, 0usize);
        let mut blocks = chunk.chunks_exact(LANES);
        for entries in &mut blocks {
            // SAFETY: `kept < cap`, within `keys`.
            let out = (kept < cap).then(|| unsafe { keys.as_mut_ptr().add(kept) });
            let (block_below, block_non_finite, block_inside) = block(entries, out);
            below = below.wrapping_add(block_below);
            non_finite = non_finite.wrapping_add(block_non_finite);
            kept += block_inside as usize;
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
    fn scan_tail<L: KeyLane>(
        tail: &[L],
        bounds: KeyBounds,
        keys: &mut [L],
        cap: usize,
        found: Found,
    ) -> Found {
        let (mut below, mut non_finite, mut kept) = found;
        for &x in tail {
            let key = (x.widen() & L::MAGNITUDE).min(bounds.nan);
            below = below.wrapping_add(u32::from(key < bounds.lo));
            non_finite = non_finite.wrapping_add(u32::from(key >= bounds.inf));
            if (bounds.lo..=bounds.last).contains(&key) {
                if kept < cap {
                    keys[kept] = L::narrow(key);
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
    use crate::test_values::awkward_bits16;

    /// The scan one entry at a time: the reference.
    fn plain<L: KeyLane>(values: &[L], b: KeyBounds, cap: usize) -> (u32, u32, usize, Vec<u32>) {
        let keys: Vec<u32> = values
            .iter()
            .map(|x| (x.widen() & L::MAGNITUDE).min(b.nan))
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

    /// The vector code `isa` against the reference for `values`, at brackets of every width
    /// (everything, one interval, the non-finite keys, one key) and caps that hold every key
    /// or overflow. The caller checked that the CPU has `isa`.
    fn check_isa<L: KeyLane>(isa: Isa, values: &[L], inf: u32, one: u32, context: &str) {
        let n = values.len();
        let nan = inf + 1;
        for (lo, last) in [(0, nan), (one, one + one / 64), (inf, nan), (0, 0)] {
            let bounds = KeyBounds { lo, last, inf, nan };
            for cap in [n, n / 3, 0] {
                let mut keys = vec![L::default(); cap + 16];
                let (below, non_finite, kept) = scan_keys(isa, values, bounds, &mut keys, cap)
                    .expect("the CPU has the vector code");
                let context = format!("{context} {isa:?} n={n} {bounds:?} cap={cap}");
                let expected = plain(values, bounds, cap);
                assert_eq!(
                    (below, non_finite, kept),
                    (expected.0, expected.1, expected.2),
                    "{context}"
                );
                let kept_keys: Vec<u32> = keys[..kept.min(cap)].iter().map(|k| k.widen()).collect();
                assert_eq!(kept_keys, expected.3, "{context}: kept keys");
            }
        }
    }

    /// Whether the CPU running the tests has `isa`: the build script found it on the CPU
    /// that built them (a test of an instruction set that CPU lacks is ignored, with the
    /// reason); a test binary moved to a CPU without it says so on stderr and checks nothing.
    fn runs_here(isa: Isa) -> bool {
        let here = has(isa);
        if !here {
            eprintln!(
                "skipped: this CPU lacks {isa:?} (or popcnt), though the building CPU had it"
            );
        }
        here
    }

    /// Lengths around both vector widths (8 and 16 lanes) and one well past them.
    const LENGTHS: [usize; 11] = [0, 1, 7, 8, 9, 15, 16, 17, 31, 100, 5_000];

    /// `isa` against the reference on f32 keys.
    fn check_f32(isa: Isa) {
        for n in LENGTHS {
            let bits: Vec<u32> = crate::test_values::awkward_f32(n, 0x51)
                .into_iter()
                .map(f32::to_bits)
                .collect();
            check_isa(isa, &bits, 0x7F80_0000, 1.0f32.to_bits(), "f32");
        }
    }

    /// `isa` against the reference on f16 and bf16 keys.
    fn check_f16_and_bf16(isa: Isa) {
        for n in LENGTHS {
            let (f16_inf, f16_one) = (0x7C00, 0x3C00);
            let f16 = awkward_bits16(n, 0x52, f16_inf, f16_one);
            check_isa(isa, &f16, f16_inf.into(), f16_one.into(), "f16");
            let (bf16_inf, bf16_one) = (0x7F80, 0x3F80);
            let bf16 = awkward_bits16(n, 0x53, bf16_inf, bf16_one);
            check_isa(isa, &bf16, bf16_inf.into(), bf16_one.into(), "bf16");
        }
    }

    #[test]
    #[cfg_attr(
        not(gmt_cpu_avx512),
        ignore = "this CPU lacks AVX-512 (or popcnt): its vector code is untested here"
    )]
    fn avx512_matches_a_plain_scan_of_f32() {
        if runs_here(Isa::Avx512) {
            check_f32(Isa::Avx512);
        }
    }

    #[test]
    #[cfg_attr(
        not(gmt_cpu_avx2),
        ignore = "this CPU lacks AVX2 (or popcnt): its vector code is untested here"
    )]
    fn avx2_matches_a_plain_scan_of_f32() {
        if runs_here(Isa::Avx2) {
            check_f32(Isa::Avx2);
        }
    }

    #[test]
    #[cfg_attr(
        not(gmt_cpu_avx512),
        ignore = "this CPU lacks AVX-512 (or popcnt): its vector code is untested here"
    )]
    fn avx512_matches_a_plain_scan_of_f16_and_bf16() {
        if runs_here(Isa::Avx512) {
            check_f16_and_bf16(Isa::Avx512);
        }
    }

    #[test]
    #[cfg_attr(
        not(gmt_cpu_avx2),
        ignore = "this CPU lacks AVX2 (or popcnt): its vector code is untested here"
    )]
    fn avx2_matches_a_plain_scan_of_f16_and_bf16() {
        if runs_here(Isa::Avx2) {
            check_f16_and_bf16(Isa::Avx2);
        }
    }
}
