//! Mean ± standard deviation, and comparisons: the mean difference of paired scores (or of two
//! independent samples), its 95% Student-t interval and the two-sided p-value of a t-test
//! (the t distribution from `statrs`); the equivalence test (TOST), Holm's correction for a
//! family of tests, and piecewise-linear interpolation along a curve (the study's frontier).

use statrs::distribution::{ContinuousCDF, StudentsT};

/// Mean and sample standard deviation (0 for fewer than two values).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// The comparison of paired scores `b - a`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Paired {
    /// Pairs compared.
    pub n: usize,
    /// Degrees of freedom of the t distribution the interval and p-value come from.
    pub df: f64,
    /// Mean of the differences.
    pub mean: f64,
    /// Its standard error.
    pub se: f64,
    /// The 95% confidence interval of the mean difference: its lower end...
    pub low: f64,
    /// ...and its upper end.
    pub high: f64,
    /// Two-sided p-value of "the mean difference is 0" (paired t-test); 1 when every
    /// difference is 0.
    pub p: f64,
}

/// The paired comparison of `b` against `a` (same length, at least two pairs).
pub fn paired(a: &[f64], b: &[f64]) -> Paired {
    assert_eq!(a.len(), b.len(), "paired scores");
    assert!(a.len() >= 2, "a paired test needs two pairs");
    let diffs: Vec<f64> = a.iter().zip(b).map(|(x, y)| y - x).collect();
    let (mean, sd) = mean_std(&diffs);
    let n = diffs.len();
    let se = sd / (n as f64).sqrt();
    t_comparison(n, mean, se, (n - 1) as f64)
}

/// The comparison of a mean difference `mean` with standard error `se` on Student's t with
/// `df` degrees of freedom (an exact difference when `se` is 0).
fn t_comparison(n: usize, mean: f64, se: f64, df: f64) -> Paired {
    if se == 0.0 {
        let p = if mean == 0.0 { 1.0 } else { 0.0 };
        return Paired {
            n,
            df,
            mean,
            se,
            low: mean,
            high: mean,
            p,
        };
    }
    let half = t_quantile_two_sided(0.05, df) * se;
    Paired {
        n,
        df,
        mean,
        se,
        low: mean - half,
        high: mean + half,
        p: t_two_sided_p(mean / se, df),
    }
}

/// Student's t with `df` degrees of freedom.
fn students_t(df: f64) -> StudentsT {
    StudentsT::new(0.0, 1.0, df).unwrap_or_else(|e| panic!("t distribution, df {df}: {e}"))
}

/// `P(|T| >= |t|)` for Student's t with `df` degrees of freedom.
pub fn t_two_sided_p(t: f64, df: f64) -> f64 {
    (2.0 * students_t(df).sf(t.abs())).min(1.0)
}

/// The `t` with `P(|T| >= t) = alpha`.
pub fn t_quantile_two_sided(alpha: f64, df: f64) -> f64 {
    students_t(df).inverse_cdf(1.0 - alpha / 2.0)
}

/// Welch's comparison of two independent samples: the difference of means `b - a`, its 95%
/// interval and two-sided p-value, with the Welch–Satterthwaite degrees of freedom.
pub fn welch(a: &[f64], b: &[f64]) -> Paired {
    assert!(
        a.len() >= 2 && b.len() >= 2,
        "Welch's test needs two values a side"
    );
    let ((ma, sa), (mb, sb)) = (mean_std(a), mean_std(b));
    let (va, vb) = (sa * sa / a.len() as f64, sb * sb / b.len() as f64);
    let mean = mb - ma;
    let se = (va + vb).sqrt();
    let df =
        (va + vb).powi(2) / (va * va / (a.len() as f64 - 1.0) + vb * vb / (b.len() as f64 - 1.0));
    t_comparison(a.len() + b.len(), mean, se, df)
}

/// The equivalence test (two one-sided t-tests, TOST) of the paired differences `b - a`
/// against the margin `±margin`: the p-value of "the mean difference lies outside
/// (−margin, margin)", the larger of the two one-sided p-values. Below 0.05, the 90% interval
/// lies inside the margin and the two are equivalent at the 5% level.
pub fn tost(a: &[f64], b: &[f64], margin: f64) -> f64 {
    assert!(
        margin > 0.0,
        "tost: the margin must be positive, got {margin}"
    );
    let d = paired(a, b);
    if d.se == 0.0 {
        return if d.mean.abs() < margin { 0.0 } else { 1.0 };
    }
    let t = students_t(d.df);
    let above_lower = t.sf((d.mean + margin) / d.se);
    let below_upper = t.cdf((d.mean - margin) / d.se);
    above_lower.max(below_upper)
}

/// Holm's step-down adjustment of a family of p-values, in their order: the smallest is
/// multiplied by the family's size, the next by one less, and so on, each kept at least as
/// large as the one before it and at most 1. Rejecting where the adjusted p is below α holds
/// the family-wise error rate at α.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&i, &j| p[i].total_cmp(&p[j]));
    let mut adjusted = vec![0.0; p.len()];
    let mut running = 0.0f64;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((p.len() - rank) as f64 * p[i]).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}

/// The value at `x` of the piecewise-linear curve through `points` `(x, y)` (any order, at
/// least two distinct x; points at the same x count as their mean), and whether `x` lies within the points' range; outside it the end
/// segment is extended.
pub fn interpolate(points: &[(f64, f64)], x: f64) -> (f64, bool) {
    let mut sorted = points.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Points at the same x: their mean.
    let mut merged: Vec<(f64, f64, f64)> = Vec::new();
    for &(x, y) in &sorted {
        match merged.last_mut() {
            Some(last) if last.0 == x => {
                last.1 += y;
                last.2 += 1.0;
            }
            _ => merged.push((x, y, 1.0)),
        }
    }
    let sorted: Vec<(f64, f64)> = merged.iter().map(|&(x, y, n)| (x, y / n)).collect();
    assert!(
        sorted.len() >= 2,
        "interpolate: needs two points with distinct x, got {points:?}"
    );
    let inside = (sorted[0].0..=sorted[sorted.len() - 1].0).contains(&x);
    let segment = sorted
        .windows(2)
        .position(|w| x <= w[1].0)
        .unwrap_or(sorted.len() - 2);
    let ((x0, y0), (x1, y1)) = (sorted[segment], sorted[segment + 1]);
    (y0 + (y1 - y0) * (x - x0) / (x1 - x0), inside)
}
