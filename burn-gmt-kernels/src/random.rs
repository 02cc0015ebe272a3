//! Counter-based random draws for the random-mask baseline.
//!
//! Every entry's draw is a pure function of `(seed, stream, step, index)`, so a mask is
//! reproducible after a checkpoint resume, identical on every backend and parallel by
//! construction: there is no generator state to carry or split.

/// SplitMix64's finaliser: a bijective 64-bit mixer with full avalanche.
#[inline(always)]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The key of one mask draw: combines the seed, the parameter's stream and the step.
#[inline]
pub fn draw_key(seed: u64, stream: u64, step: u64) -> u64 {
    mix64(mix64(mix64(seed) ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)) ^ step)
}

/// A uniform draw in `[0, 2^64)` for entry `index` under `key`.
#[inline(always)]
pub fn draw(key: u64, index: u64) -> u64 {
    mix64(key ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03))
}

/// The draw bound below which an entry is masked: `ratio · 2^64`, saturating at `u64::MAX`
/// so that ratio 1 masks every entry.
pub fn ratio_bound(ratio: f64) -> u64 {
    if ratio >= 1.0 {
        u64::MAX
    } else if ratio <= 0.0 {
        0
    } else {
        (ratio * 18_446_744_073_709_551_616.0) as u64
    }
}

/// Whether entry `index` is drawn for masking under `key` and `bound`.
#[inline(always)]
pub fn is_drawn(key: u64, index: u64, bound: u64) -> bool {
    bound == u64::MAX || draw(key, index) < bound
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_have_the_requested_frequency() {
        let key = draw_key(7, 3, 11);
        for ratio in [0.1, 0.3, 0.5, 0.9] {
            let bound = ratio_bound(ratio);
            let n = 200_000u64;
            let hits = (0..n).filter(|&i| is_drawn(key, i, bound)).count() as f64;
            // 5 sigma of a binomial(n, ratio).
            let sigma = (n as f64 * ratio * (1.0 - ratio)).sqrt();
            assert!(
                (hits - n as f64 * ratio).abs() < 5.0 * sigma,
                "ratio {ratio}: {hits}"
            );
        }
    }

    #[test]
    fn streams_and_steps_give_different_masks() {
        let bound = ratio_bound(0.5);
        let a: Vec<bool> = (0..256)
            .map(|i| is_drawn(draw_key(1, 0, 0), i, bound))
            .collect();
        let b: Vec<bool> = (0..256)
            .map(|i| is_drawn(draw_key(1, 1, 0), i, bound))
            .collect();
        let c: Vec<bool> = (0..256)
            .map(|i| is_drawn(draw_key(1, 0, 1), i, bound))
            .collect();
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(ratio_bound(0.0), 0);
        assert!(!is_drawn(draw_key(1, 0, 0), 5, 0));
        assert!(is_drawn(draw_key(1, 0, 0), 5, ratio_bound(1.0)));
    }
}
