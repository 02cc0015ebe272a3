//! The plots: hand-written SVG, no plotting dependency.

use std::fmt::Write;

/// A scatter plot: each series' points small, its mean large; with `curve`, a named black
/// line through its points in order (a reference such as a frontier).
pub fn scatter_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
    curve: Option<(&str, &[(f64, f64)])>,
) -> String {
    let (w, h, left, right, top, bottom) = (720.0, 440.0, 70.0, 230.0, 40.0, 50.0);
    let curve_points = curve.map_or(&[][..], |(_, points)| points);
    let all = series
        .iter()
        .flat_map(|(_, p)| p.iter().copied())
        .chain(curve_points.iter().copied());
    let (mut x0, mut x1, mut y0, mut y1) = all.fold(
        (f64::MAX, f64::MIN, f64::MAX, f64::MIN),
        |(a, b, c, d), (x, y)| (a.min(x), b.max(x), c.min(y), d.max(y)),
    );
    for (lo, hi) in [(&mut x0, &mut x1), (&mut y0, &mut y1)] {
        let pad = ((*hi - *lo) * 0.08).max(0.5);
        *lo -= pad;
        *hi += pad;
    }
    let frame = Frame::new((w, h, left, right, top, bottom), (x0, x1), (y0, y1));
    let mut svg = frame.open(title, x_label, y_label);
    frame.ticks(&mut svg, false);
    if let Some((name, points)) = curve {
        let path: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", frame.px(x), frame.py(y)))
            .collect();
        writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="black" stroke-width="1.5"/>"#,
            path.join(" ")
        )
        .unwrap();
        writeln!(
            svg,
            r#"<text x="{}" y="{}">— {name}</text>"#,
            w - right + 10.0,
            top + 10.0 + 18.0 * series.len() as f64
        )
        .unwrap();
    }
    for (i, (name, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        for &(x, y) in points {
            writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}" fill-opacity="0.45"/>"#,
                frame.px(x),
                frame.py(y)
            )
            .unwrap();
        }
        let n = points.len().max(1) as f64;
        let (mx, my) = points
            .iter()
            .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
        writeln!(
            svg,
            r#"<circle cx="{:.1}" cy="{:.1}" r="7" fill="{color}" stroke="black"/>"#,
            frame.px(mx),
            frame.py(my)
        )
        .unwrap();
        writeln!(
            svg,
            r#"<text x="{}" y="{}" fill="{color}">● {name}</text>"#,
            w - right + 10.0,
            top + 10.0 + 18.0 * i as f64
        )
        .unwrap();
    }
    svg.push_str("</svg>\n");
    svg
}

/// A chart's frame: its size and margins `(w, h, left, right, top, bottom)` and the data
/// ranges its axes span.
struct Frame {
    size: (f64, f64, f64, f64, f64, f64),
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame {
    fn new(size: (f64, f64, f64, f64, f64, f64), x: (f64, f64), y: (f64, f64)) -> Self {
        Self { size, x, y }
    }

    fn px(&self, x: f64) -> f64 {
        let (w, _, left, right, _, _) = self.size;
        left + (x - self.x.0) / (self.x.1 - self.x.0) * (w - left - right)
    }

    fn py(&self, y: f64) -> f64 {
        let (_, h, _, _, top, bottom) = self.size;
        top + (1.0 - (y - self.y.0) / (self.y.1 - self.y.0)) * (h - top - bottom)
    }

    /// The tick labels of both axes, at round values ([`ticks`]), and with `grid` a light
    /// horizontal line at each y tick.
    fn ticks(&self, svg: &mut String, grid: bool) {
        let (w, h, left, right, _, bottom) = self.size;
        for (y, text) in ticks(self.y.0, self.y.1) {
            let py = self.py(y);
            writeln!(
                svg,
                r#"<text x="{}" y="{}" text-anchor="end">{text}</text>"#,
                left - 6.0,
                py + 4.0
            )
            .unwrap();
            if grid {
                writeln!(
                    svg,
                    r##"<line x1="{left}" y1="{py}" x2="{}" y2="{py}" stroke="#eee"/>"##,
                    w - right
                )
                .unwrap();
            }
        }
        for (x, text) in ticks(self.x.0, self.x.1) {
            writeln!(
                svg,
                r#"<text x="{}" y="{}" text-anchor="middle">{text}</text>"#,
                self.px(x),
                h - bottom + 16.0
            )
            .unwrap();
        }
    }

    /// The opening of the SVG: background, title, axes and their labels.
    fn open(&self, title: &str, x_label: &str, y_label: &str) -> String {
        let (w, h, left, right, top, bottom) = self.size;
        let mut buffer = String::new();
        let svg = &mut buffer;
        writeln!(svg, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#).unwrap();
        writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#).unwrap();
        writeln!(
            svg,
            r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{title}</text>"#,
            (w - right + left) / 2.0
        )
        .unwrap();
        writeln!(
            svg,
            r#"<line x1="{left}" y1="{0}" x2="{1}" y2="{0}" stroke="black"/>"#,
            h - bottom,
            w - right
        )
        .unwrap();
        writeln!(
            svg,
            r#"<line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="black"/>"#,
            h - bottom
        )
        .unwrap();
        writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">{x_label}</text>"#,
            (w - right + left) / 2.0,
            h - 10.0
        )
        .unwrap();
        writeln!(svg, r#"<text x="16" y="{0}" text-anchor="middle" transform="rotate(-90 16 {0})">{y_label}</text>"#, (h - bottom + top) / 2.0).unwrap();
        buffer
    }
}
const COLORS: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#7f7f7f", "#8c564b", "#e377c2",
    "#bcbd22", "#17becf",
];

/// Points of a series: (x, mean, standard deviation).
pub type Points = Vec<(f64, f64, f64)>;

/// A line chart: each series is (name, points); optional horizontal reference lines.
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Points)],
    hlines: &[(String, f64)],
) -> String {
    let (w, h, left, right, top, bottom) = (720.0, 440.0, 70.0, 190.0, 40.0, 50.0);
    let xs = series.iter().flat_map(|(_, p)| p.iter().map(|q| q.0));
    let ys = series
        .iter()
        .flat_map(|(_, p)| p.iter().flat_map(|q| [q.1 - q.2, q.1 + q.2]))
        .chain(hlines.iter().map(|l| l.1));
    let (x0, x1) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let (mut y0, mut y1) = ys.fold((f64::MAX, f64::MIN), |(a, b), y| (a.min(y), b.max(y)));
    if y1 - y0 < 1e-9 {
        y0 -= 0.5;
        y1 += 0.5;
    }
    let pad = (y1 - y0) * 0.08;
    let (y0, y1) = (y0 - pad, y1 + pad);
    let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
    let frame = Frame::new((w, h, left, right, top, bottom), (x0, x1), (y0, y1));
    let mut svg = frame.open(title, x_label, y_label);
    frame.ticks(&mut svg, true);
    let mut legend_y = top + 10.0;
    let mut legend = |svg: &mut String, color: &str, label: String| {
        writeln!(
            svg,
            r#"<text x="{}" y="{legend_y}" fill="{color}">{label}</text>"#,
            w - right + 10.0
        )
        .unwrap();
        legend_y += 18.0;
    };
    for (i, (name, value)) in hlines.iter().enumerate() {
        let color = COLORS[(series.len() + i) % COLORS.len()];
        writeln!(svg, r#"<line x1="{left}" y1="{0}" x2="{1}" y2="{0}" stroke="{color}" stroke-dasharray="6 4"/>"#, frame.py(*value), w - right).unwrap();
        legend(&mut svg, color, format!("- - {name}"));
    }
    for (i, (name, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = points
            .iter()
            .map(|&(x, y, _)| format!("{:.1},{:.1}", frame.px(x), frame.py(y)))
            .collect();
        writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        )
        .unwrap();
        for &(x, y, sd) in points {
            if sd > 0.0 {
                writeln!(
                    svg,
                    r#"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="{color}"/>"#,
                    frame.px(x),
                    frame.py(y - sd),
                    frame.py(y + sd)
                )
                .unwrap();
            }
            if points.len() < 30 {
                writeln!(
                    svg,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                    frame.px(x),
                    frame.py(y)
                )
                .unwrap();
            }
        }
        legend(&mut svg, color, format!("— {name}"));
    }
    svg.push_str("</svg>\n");
    svg
}

/// Axis ticks over `lo..=hi` at round values: multiples of a step of 1, 2 or 5 × 10^k, the
/// smallest such step that gives at most six ticks, each with its label (as many decimals as
/// the step needs).
fn ticks(lo: f64, hi: f64) -> Vec<(f64, String)> {
    let span = (hi - lo).max(f64::EPSILON);
    let raw = span / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&step| step >= raw)
        .unwrap_or(10.0 * magnitude);
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last)
        .map(|i| {
            let value = i as f64 * step;
            (value, format!("{value:.decimals$}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::ticks;

    /// Ticks are round (a multiple of 1, 2 or 5 × 10^k), inside the range, two to six of them,
    /// and their labels read as their values.
    #[test]
    fn ticks_fall_on_round_values() {
        for (lo, hi) in [
            (64.3, 77.7),
            (0.0, 1.0),
            (0.4213, 0.4791),
            (-3.2, 41.0),
            (1.0, 25.0),
            (0.0021, 0.0093),
        ] {
            let ticks = ticks(lo, hi);
            assert!((2..=6).contains(&ticks.len()), "{lo}..{hi}: {ticks:?}");
            let step = ticks[1].0 - ticks[0].0;
            let mantissa = step / 10f64.powf(step.log10().floor());
            assert!(
                [1.0, 2.0, 5.0].iter().any(|m| (mantissa - m).abs() < 1e-9),
                "{lo}..{hi}: step {step}"
            );
            for (value, label) in &ticks {
                assert!((lo..=hi).contains(value), "{lo}..{hi}: {value}");
                assert!((value / step - (value / step).round()).abs() < 1e-9);
                assert!((label.parse::<f64>().unwrap() - value).abs() < step * 1e-6);
            }
        }
        let labels: Vec<String> = ticks(64.3, 77.7).into_iter().map(|t| t.1).collect();
        assert_eq!(labels, ["65", "70", "75"]);
    }
}
