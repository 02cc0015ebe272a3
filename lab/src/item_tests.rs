//! Per-item tests of two models scored on the same items: a paired permutation test of a
//! per-item score (an NLL) and McNemar's exact test of a per-item pass/fail (exact match).
//! Both treat the items as the only source of chance: they ignore the training noise that a
//! test over seeds measures.

use crate::random::{Rng, stream};

/// Two-sided p-value of a paired permutation (sign-flip) test of "`a` and `b` have the same
/// mean": each item's difference `b - a` keeps its size and takes a random sign, `rounds`
/// times (draws from `seed`); the p-value counts the observed statistic as one of the draws,
/// so it is never 0.
pub fn paired_permutation_p(a: &[f64], b: &[f64], rounds: usize, seed: u64) -> f64 {
    assert_eq!(a.len(), b.len(), "paired scores");
    let diffs: Vec<f64> = a.iter().zip(b).map(|(x, y)| y - x).collect();
    let observed = diffs.iter().sum::<f64>().abs();
    let mut rng = stream(seed);
    let mut at_least = 0usize;
    for _ in 0..rounds {
        let mut sum = 0.0;
        let mut bits = 0u64;
        for (i, d) in diffs.iter().enumerate() {
            if i % 64 == 0 {
                bits = rng.next_u64();
            }
            sum += if bits >> (i % 64) & 1 == 1 { *d } else { -*d };
        }
        // A small tolerance: sums of the same terms in another order round differently.
        if sum.abs() >= observed * (1.0 - 1e-12) {
            at_least += 1;
        }
    }
    (at_least + 1) as f64 / (rounds + 1) as f64
}

/// McNemar's test of paired pass/fail outcomes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct McNemar {
    /// Items `a` passes and `b` fails.
    pub only_a: usize,
    /// Items `b` passes and `a` fails.
    pub only_b: usize,
    /// Exact two-sided p-value: the discordant items split as a fair coin would.
    pub p: f64,
}

/// McNemar's exact test of `b` against `a` (same items, same order).
pub fn mcnemar(a: &[bool], b: &[bool]) -> McNemar {
    assert_eq!(a.len(), b.len(), "paired outcomes");
    let only_a = a.iter().zip(b).filter(|&(&x, &y)| x && !y).count();
    let only_b = a.iter().zip(b).filter(|&(&x, &y)| !x && y).count();
    let n = only_a + only_b;
    let k = only_a.min(only_b);
    // 2 · P(X ≤ k) for X ~ Binomial(n, 1/2), summed in logs to stay finite for large n.
    let ln_choose = |n: usize, k: usize| -> f64 {
        (1..=k)
            .map(|i| ((n - k + i) as f64).ln() - (i as f64).ln())
            .sum()
    };
    let tail: f64 = (0..=k)
        .map(|i| (ln_choose(n, i) - n as f64 * std::f64::consts::LN_2).exp())
        .sum();
    McNemar {
        only_a,
        only_b,
        p: (2.0 * tail).min(1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcnemar_matches_the_binomial_tail() {
        // 10 discordant items split 2 / 8: 2 · (1 + 10 + 45) / 1024.
        let a: Vec<bool> = (0..30).map(|i| !(2..20).contains(&i)).collect();
        let b: Vec<bool> = (0..30).map(|i| (2..10).contains(&i) || i >= 20).collect();
        let m = mcnemar(&a, &b);
        assert_eq!((m.only_a, m.only_b), (2, 8));
        assert!((m.p - 2.0 * 56.0 / 1024.0).abs() < 1e-12, "{}", m.p);
        // An even split, and no discordant item at all, give p = 1.
        assert_eq!(mcnemar(&[true, false], &[false, true]).p, 1.0);
        assert_eq!(mcnemar(&[true, false], &[true, false]).p, 1.0);
    }

    #[test]
    fn permutation_p_is_small_for_a_shift_and_large_for_noise() {
        // Exact reference for 4 items: of the 16 sign patterns, only the two all-same
        // patterns reach |sum| = 4, so p → 2/16 as rounds grow.
        let p = paired_permutation_p(&[0.0; 4], &[1.0; 4], 20_000, 1);
        assert!((p - 0.125).abs() < 0.01, "{p}");
        let a: Vec<f64> = (0..200).map(|i| (i % 7) as f64).collect();
        let shifted: Vec<f64> = a.iter().map(|x| x + 0.5).collect();
        assert!(paired_permutation_p(&a, &shifted, 999, 2) <= 0.002);
        let noise: Vec<f64> = a
            .iter()
            .enumerate()
            .map(|(i, x)| x + if i % 2 == 0 { 0.5 } else { -0.5 })
            .collect();
        assert!(paired_permutation_p(&a, &noise, 999, 3) > 0.5);
    }
}
