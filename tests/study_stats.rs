//! The study's statistics against closed forms and tabulated values: Student's t tail
//! probabilities and quantiles, the paired comparison and Welch's test.

use burn_gmt_lab::stats::{
    holm, interpolate, paired, t_quantile_two_sided, t_two_sided_p, tost, welch,
};
use statrs::function::beta::beta_reg as incomplete_beta;

fn close(a: f64, b: f64, tol: f64, what: &str) {
    assert!((a - b).abs() <= tol, "{what}: {a} vs {b}");
}

#[test]
fn incomplete_beta_matches_closed_forms() {
    for x in [0.01, 0.2, 0.5, 0.77, 0.99] {
        close(incomplete_beta(1.0, 1.0, x), x, 1e-12, "I_x(1,1) = x");
        close(
            incomplete_beta(3.0, 1.0, x),
            x.powi(3),
            1e-12,
            "I_x(a,1) = x^a",
        );
        close(
            incomplete_beta(1.0, 4.0, x),
            1.0 - (1.0 - x).powi(4),
            1e-12,
            "I_x(1,b) = 1-(1-x)^b",
        );
        close(
            incomplete_beta(2.5, 0.5, x) + incomplete_beta(0.5, 2.5, 1.0 - x),
            1.0,
            1e-12,
            "symmetry",
        );
    }
}

#[test]
fn t_tails_match_closed_forms_and_tables() {
    for t in [0.0, 0.3, 1.0, 2.5, 7.0, 40.0] {
        // df = 1 is the Cauchy distribution; df = 2 has a closed form too.
        let cauchy = 1.0 - 2.0 / std::f64::consts::PI * f64::atan(t);
        close(t_two_sided_p(t, 1.0), cauchy, 1e-10, "df 1");
        let df2 = 1.0 - t / (2.0 + t * t).sqrt();
        close(t_two_sided_p(t, 2.0), df2, 1e-10, "df 2");
    }
    // Numerically integrated densities (Simpson, 200,000 intervals).
    close(t_two_sided_p(2.0, 10.0), 0.073_388_03, 1e-7, "t 2.0, df 10");
    close(t_two_sided_p(1.5, 30.0), 0.144_065_93, 1e-7, "t 1.5, df 30");
    // Tabulated 97.5% quantiles.
    close(t_quantile_two_sided(0.05, 1.0), 12.706_205, 1e-5, "df 1");
    close(t_quantile_two_sided(0.05, 4.0), 2.776_445, 1e-5, "df 4");
    close(t_quantile_two_sided(0.05, 14.0), 2.144_787, 1e-5, "df 14");
}

#[test]
fn paired_comparison_of_three_pairs() {
    let a = [0.5, 0.25, 0.75];
    let b = [1.5, 2.25, 4.75]; // differences 1, 2, 4
    let d = paired(&a, &b);
    let mean: f64 = 7.0 / 3.0;
    let variance = ((1.0 - mean).powi(2) + (2.0 - mean).powi(2) + (4.0 - mean).powi(2)) / 2.0;
    let se = variance.sqrt() / 3f64.sqrt();
    let t = mean / se;
    close(d.mean, mean, 1e-12, "mean");
    close(
        d.p,
        1.0 - t / (2.0 + t * t).sqrt(),
        1e-10,
        "p (df 2 closed form)",
    );
    // The 97.5% quantile of t with 2 degrees of freedom is 4.302653.
    close(d.high - d.mean, 4.302_653 * se, 1e-5, "interval");
    close(d.mean - d.low, 4.302_653 * se, 1e-5, "interval");
    // Swapped, the difference changes sign and the p-value stays.
    let back = paired(&b, &a);
    close(back.mean, -mean, 1e-12, "swapped mean");
    close(back.p, d.p, 1e-12, "swapped p");
    // No difference at all.
    assert_eq!(paired(&a, &a).p, 1.0);
}

#[test]
fn welch_with_equal_variances_is_the_pooled_t_test() {
    let a = [1.0, 2.0, 3.0, 4.0];
    let b = [2.0, 3.5, 4.0, 6.5];
    let d = welch(&a, &b);
    let (ma, mb): (f64, f64) = (2.5, 4.0);
    let va: f64 = 5.0 / 3.0; // sample variance of a
    let vb: f64 = (4.0 + 0.25 + 0.0 + 6.25) / 3.0; // of b
    let se = (va / 4.0 + vb / 4.0).sqrt();
    let df = (va / 4.0 + vb / 4.0).powi(2) / ((va / 4.0).powi(2) / 3.0 + (vb / 4.0).powi(2) / 3.0);
    close(d.mean, mb - ma, 1e-12, "difference");
    close(d.p, t_two_sided_p((mb - ma) / se, df), 1e-12, "p");
    // Equal spreads: Welch's degrees of freedom are the pooled test's 2n - 2.
    let c = [3.0, 4.0, 5.0, 6.0];
    let same = welch(&a, &c);
    let pooled_se = (2.0 * va / 4.0).sqrt();
    close(same.p, t_two_sided_p(2.0 / pooled_se, 6.0), 1e-10, "pooled");
}

/// Student's t with 2 degrees of freedom has a closed-form distribution function.
fn t2_cdf(t: f64) -> f64 {
    0.5 + t / (2.0 * (2.0 + t * t).sqrt())
}

#[test]
fn equivalence_test_of_three_pairs() {
    let a = [0.5, 0.25, 0.75];
    let b = [1.5, 2.25, 4.75]; // differences 1, 2, 4: mean 7/3, df 2
    let mean: f64 = 7.0 / 3.0;
    let variance = ((1.0 - mean).powi(2) + (2.0 - mean).powi(2) + (4.0 - mean).powi(2)) / 2.0;
    let se = (variance / 3.0).sqrt();
    for margin in [1.0, 5.0, 10.0] {
        let below_upper = t2_cdf((mean - margin) / se);
        let above_lower = 1.0 - t2_cdf((mean + margin) / se);
        let expected = below_upper.max(above_lower);
        close(tost(&a, &b, margin), expected, 1e-10, "TOST p");
    }
    // A margin the mean lies outside of is never equivalent; a wide one is.
    assert!(tost(&a, &b, 1.0) > 0.5);
    assert!(tost(&a, &b, 10.0) < 0.05);
    // Identical scores: exactly equivalent.
    assert_eq!(tost(&a, &a, 0.01), 0.0);
}

#[test]
fn holm_adjusts_step_down_by_hand() {
    // Sorted: 0.005 × 4 = 0.02, 0.01 × 3 = 0.03, 0.03 × 2 = 0.06, 0.04 × 1 = 0.04 → 0.06.
    let adjusted = holm(&[0.01, 0.04, 0.03, 0.005]);
    for (got, want) in adjusted.iter().zip([0.03, 0.06, 0.06, 0.02]) {
        close(*got, want, 1e-15, "Holm");
    }
    // Capped at 1, and monotone in the sorted order.
    assert_eq!(holm(&[0.5, 0.6]), vec![1.0, 1.0]);
    assert_eq!(holm(&[0.2]), vec![0.2]);
}

#[test]
fn interpolation_along_a_frontier_by_hand() {
    let points = [(3.0, 30.0), (1.0, 10.0), (2.0, 40.0)];
    assert_eq!(interpolate(&points, 1.5), (25.0, true));
    assert_eq!(interpolate(&points, 2.5), (35.0, true));
    assert_eq!(interpolate(&points, 3.0), (30.0, true));
    // Outside the range the end segments are extended, and said to be.
    assert_eq!(interpolate(&points, 0.0), (-20.0, false));
    assert_eq!(interpolate(&points, 4.0), (20.0, false));
    // Two points at x = 2 count as their mean, 40.
    let tied = [(1.0, 10.0), (2.0, 30.0), (2.0, 50.0), (3.0, 30.0)];
    assert_eq!(interpolate(&tied, 1.5), (25.0, true));
}
