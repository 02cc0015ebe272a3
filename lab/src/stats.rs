//! Mean ± standard deviation, and comparisons: the mean difference of paired scores (or of two
//! independent samples), its 95% Student-t interval and the two-sided p-value of a t-test (no
//! statistics dependency: the t distribution through the regularized incomplete beta
//! function).

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
    /// Mean of the differences.
    pub mean: f64,
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
            mean,
            low: mean,
            high: mean,
            p,
        };
    }
    let half = t_quantile_two_sided(0.05, df) * se;
    Paired {
        n,
        mean,
        low: mean - half,
        high: mean + half,
        p: t_two_sided_p(mean / se, df),
    }
}

/// `P(|T| >= |t|)` for Student's t with `df` degrees of freedom.
pub fn t_two_sided_p(t: f64, df: f64) -> f64 {
    incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
}

/// The `t` with `P(|T| >= t) = alpha`, by bisection on [`t_two_sided_p`].
pub fn t_quantile_two_sided(alpha: f64, df: f64) -> f64 {
    let (mut lo, mut hi) = (0.0, 1e3);
    for _ in 0..200 {
        let mid = (lo + hi) / 2.0;
        if t_two_sided_p(mid, df) > alpha {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo + hi) / 2.0
}

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, 9 terms: about 15 significant digits).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let sum = C[1..]
        .iter()
        .enumerate()
        .fold(C[0], |acc, (i, c)| acc + c / (x + i as f64 + 1.0));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// The regularized incomplete beta function `I_x(a, b)` (continued fraction, modified Lentz).
pub fn incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    // The fraction converges fast for x < (a + 1) / (a + b + 2); use the symmetry otherwise.
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_fraction(a, b, x) / a
    } else {
        1.0 - front * beta_fraction(b, a, 1.0 - x) / b
    }
}

fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut c = 1.0;
    let mut d = 1.0 - (a + b) * x / (a + 1.0);
    d = 1.0 / if d.abs() < TINY { TINY } else { d };
    let mut h = d;
    for m in 1..300 {
        let m = m as f64;
        for numerator in [
            m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0)),
        ] {
            d = 1.0 + numerator * d;
            d = 1.0 / if d.abs() < TINY { TINY } else { d };
            c = 1.0 + numerator / c;
            if c.abs() < TINY {
                c = TINY;
            }
            h *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
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
