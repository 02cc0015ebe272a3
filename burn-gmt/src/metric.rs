//! Mask statistics as burn-train metrics (feature `train`): numeric, so the TUI and CLI
//! renderers plot them and the file loggers keep them with the loss.
//!
//! ```
//! use burn::optim::AdamWConfig;
//! use burn_gmt::metric::MaskMetric;
//! use burn_gmt::{GradMaskConfig, WithGradMask};
//!
//! let config = GradMaskConfig::new(0.3).with_collect_norms(true);
//! let optim = AdamWConfig::new().build().with_grad_mask_config(config);
//! let stats = optim.stats_handle();
//! // Registered with `SupervisedTraining::metric_train_numeric(..)`, each shows the
//! // latest optimizer step's value at every iteration.
//! let metrics = [
//!     MaskMetric::kept(&stats),
//!     MaskMetric::threshold(&stats),
//!     MaskMetric::non_finite(&stats),
//!     MaskMetric::kept_norm(&stats).unwrap(),
//!     MaskMetric::kept(&stats).for_params("encoder.layers.3."),
//! ];
//! # let _ = metrics;
//! // Norms are measured only on request.
//! let plain = AdamWConfig::new().build().with_grad_mask(0.3).stats_handle();
//! assert!(MaskMetric::kept_norm(&plain).unwrap_err().to_string().contains("collect_norms"));
//! ```

use std::sync::Arc;

use burn::tensor::TensorReadError;
use burn::train::metric::state::{FormatOptions, NumericMetricState};
use burn::train::metric::{
    Metric, MetricAttributes, MetricMetadata, MetricName, Numeric, NumericAttributes, NumericEntry,
    SerializedEntry,
};

use crate::error::GradMaskError;
use crate::stats::{MaskStats, MaskStatsHandle};

/// Which statistic a [`MaskMetric`] shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MaskStatistic {
    /// Percentage of gradient entries kept ([`MaskStats::kept_fraction`]).
    KeptPercent,
    /// Mean of the finite magnitude thresholds ([`MaskStats::mean_threshold`]; 0 when none).
    Threshold,
    /// NaN and infinite gradient entries ([`MaskStats::non_finite`]); never masked.
    NonFinite,
    /// Percentage of the gradient's L2 norm kept ([`MaskStats::kept_norm_fraction`]).
    KeptNormPercent,
}

impl MaskStatistic {
    fn label(self) -> &'static str {
        match self {
            Self::KeptPercent => "Mask kept",
            Self::Threshold => "Mask threshold",
            Self::NonFinite => "Mask non-finite",
            Self::KeptNormPercent => "Mask norm kept",
        }
    }

    fn unit(self) -> Option<&'static str> {
        matches!(self, Self::KeptPercent | Self::KeptNormPercent).then_some("%")
    }

    /// The statistic's value; before the first step (or with nothing measured), what an
    /// unmasked step would show.
    fn measure(self, stats: &MaskStats) -> f64 {
        match self {
            Self::KeptPercent => 100.0 * stats.kept_fraction(),
            Self::Threshold => stats.mean_threshold().unwrap_or(0.0),
            Self::NonFinite => stats.non_finite() as f64,
            Self::KeptNormPercent => 100.0 * stats.kept_norm_fraction().unwrap_or(1.0),
        }
    }
}

/// One statistic of the mask at the latest optimizer step, as a numeric burn-train metric,
/// read from a [`MaskStatsHandle`] (the optimizer wrapper's or a
/// [`GradMask`](crate::GradMask)'s). Its input is `()`, so any training output feeds it.
#[derive(Clone)]
pub struct MaskMetric {
    name: MetricName,
    statistic: MaskStatistic,
    handle: MaskStatsHandle,
    /// Only the parameters whose path starts with this.
    params: Option<String>,
    state: NumericMetricState,
}

impl std::fmt::Debug for MaskMetric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskMetric")
            .field("name", &self.name)
            .field("statistic", &self.statistic)
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl MaskMetric {
    /// `statistic`, read from `handle`.
    ///
    /// # Errors
    /// [`MaskStatistic::KeptNormPercent`] from a mask that does not measure norms (the field
    /// [`collect_norms`](crate::GradMaskConfig::collect_norms)).
    pub fn new(statistic: MaskStatistic, handle: &MaskStatsHandle) -> Result<Self, GradMaskError> {
        if statistic == MaskStatistic::KeptNormPercent && !handle.collects_norms() {
            return Err(GradMaskError::InvalidField {
                field: "collect_norms",
                reason: "the norm-kept metric needs the mask to measure norms: set collect_norms"
                    .into(),
            });
        }
        Ok(Self {
            name: Arc::new(statistic.label().to_string()),
            statistic,
            handle: handle.clone(),
            params: None,
            state: NumericMetricState::new(),
        })
    }

    /// The percentage of gradient entries kept.
    pub fn kept(handle: &MaskStatsHandle) -> Self {
        Self::infallible(MaskStatistic::KeptPercent, handle)
    }

    /// The mean finite magnitude threshold (the threshold itself with
    /// [`MaskScope::Global`](crate::MaskScope::Global)).
    pub fn threshold(handle: &MaskStatsHandle) -> Self {
        Self::infallible(MaskStatistic::Threshold, handle)
    }

    /// The number of NaN and infinite gradient entries.
    pub fn non_finite(handle: &MaskStatsHandle) -> Self {
        Self::infallible(MaskStatistic::NonFinite, handle)
    }

    /// The percentage of the gradient's L2 norm the mask keeps.
    ///
    /// # Errors
    /// When the mask does not measure norms
    /// ([`collect_norms`](crate::GradMaskConfig::collect_norms)).
    pub fn kept_norm(handle: &MaskStatsHandle) -> Result<Self, GradMaskError> {
        Self::new(MaskStatistic::KeptNormPercent, handle)
    }

    fn infallible(statistic: MaskStatistic, handle: &MaskStatsHandle) -> Self {
        Self::new(statistic, handle).expect("only the norm metric can be refused")
    }

    /// Only the parameters whose module path starts with `prefix` (a layer, or one
    /// parameter's whole path); the metric's name says which.
    pub fn for_params(mut self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        self.name = Arc::new(format!("{} [{prefix}]", self.statistic.label()));
        self.params = Some(prefix);
        self
    }

    /// The statistic at the latest step.
    fn current(&self) -> f64 {
        let stats = self.handle.latest();
        let stats = match &self.params {
            Some(prefix) => stats.filter_params(prefix),
            None => stats,
        };
        self.statistic.measure(&stats)
    }

    fn format(&self) -> FormatOptions {
        let format = FormatOptions::new(self.name());
        match self.statistic {
            MaskStatistic::KeptPercent | MaskStatistic::KeptNormPercent => {
                format.unit("%").precision(2)
            }
            MaskStatistic::Threshold => format.precision(6),
            MaskStatistic::NonFinite => format.precision(0),
        }
    }
}

impl Metric for MaskMetric {
    type Input = ();

    fn update(
        &mut self,
        _item: &(),
        _metadata: &MetricMetadata,
    ) -> Result<SerializedEntry, TensorReadError> {
        self.state.update(self.current(), 1);
        Ok(self.state.compute_update(self.format()))
    }

    fn compute(&mut self) -> Result<SerializedEntry, TensorReadError> {
        Ok(self.state.compute_final(self.format()))
    }

    fn clear(&mut self) {
        self.state.reset()
    }

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: self.statistic.unit().map(str::to_string),
            // Kept shares: more is closer to plain fine-tuning, neither better nor worse;
            // non-finite entries are better absent.
            higher_is_better: false,
        }
        .into()
    }
}

impl Numeric for MaskMetric {
    fn value(&self) -> Option<NumericEntry> {
        Some(self.state.current_value())
    }

    fn running_value(&self) -> Option<NumericEntry> {
        Some(self.state.running_value())
    }

    fn final_value(&self) -> NumericEntry {
        self.state.final_value()
    }
}

#[cfg(test)]
mod tests {
    use burn::data::dataloader::Progress;
    use burn::module::Module;
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::GradientsParams;
    use burn::tensor::{Device, Tensor, TensorData};
    use burn::train::metric::{MetricMetadata, Numeric};

    use super::*;
    use crate::GradMaskConfig;

    #[derive(Module, Debug)]
    struct Model {
        first: Linear,
        second: Linear,
    }

    fn metadata() -> MetricMetadata {
        MetricMetadata {
            progress: Progress {
                items_processed: 1,
                items_total: 1,
                unit: None,
            },
            iteration: Some(0),
            lr: None,
        }
    }

    fn value(metric: &mut MaskMetric) -> f64 {
        metric.update(&(), &metadata()).unwrap();
        metric.value().unwrap().current()
    }

    /// Each metric against the statistics worked out on the host: distinct gradient
    /// magnitudes, so exactly `floor(0.25 n)` entries of each tensor are masked, the smallest.
    #[test]
    fn metrics_show_the_latest_step() {
        let device = Device::default().autodiff();
        let model = Model {
            first: LinearConfig::new(4, 3).init(&device),
            second: LinearConfig::new(3, 2).init(&device),
        };
        let config = GradMaskConfig::new(0.25).with_collect_norms(true);
        let mut mask = config.init().unwrap();
        let handle = mask.stats_handle();
        let mut kept = MaskMetric::kept(&handle);
        let mut threshold = MaskMetric::threshold(&handle);
        let mut non_finite = MaskMetric::non_finite(&handle);
        let mut norm = MaskMetric::kept_norm(&handle).unwrap();
        let mut second = MaskMetric::kept(&handle).for_params("second.");
        assert_eq!(value(&mut kept), 100.0, "before any step");
        let inner = device.clone().inner();

        // Gradients 1, 2, 3, ... in module order, one of them +inf.
        let mut next = 0.0f32;
        let mut grads = GradientsParams::new();
        let mut magnitudes: Vec<Vec<f64>> = Vec::new();
        for (id, shape) in [
            (model.first.weight.id, vec![4, 3]),
            (model.first.bias.as_ref().unwrap().id, vec![3]),
            (model.second.weight.id, vec![3, 2]),
            (model.second.bias.as_ref().unwrap().id, vec![2]),
        ] {
            let n: usize = shape.iter().product();
            let mut values: Vec<f32> = (0..n)
                .map(|_| {
                    next += 1.0;
                    next
                })
                .collect();
            if magnitudes.len() == 2 {
                values[0] = f32::INFINITY;
            }
            magnitudes.push(values.iter().map(|&v| v as f64).collect());
            let data = TensorData::new(values, shape.clone());
            match shape.len() {
                2 => grads.register::<2>(id, Tensor::from_data(data, &inner)),
                _ => grads.register::<1>(id, Tensor::from_data(data, &inner)),
            }
        }
        let _ = mask.apply(&model, grads);

        // The host reference: per tensor, the floor(0.25 n) smallest magnitudes go.
        let (mut total, mut kept_count, mut thresholds) = (0usize, 0usize, Vec::new());
        let (mut norm_all, mut norm_kept) = (0.0, 0.0);
        for values in &magnitudes {
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let masked = (0.25 * values.len() as f64).floor() as usize;
            total += values.len();
            kept_count += values.len() - masked;
            if masked > 0 {
                thresholds.push(sorted[masked]);
            }
            let finite = sorted.iter().filter(|v| v.is_finite());
            norm_all += finite.clone().map(|v| v * v).sum::<f64>();
            norm_kept += finite.skip(masked).map(|v| v * v).sum::<f64>();
        }
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * b.abs().max(1.0);
        assert_eq!(value(&mut kept), 100.0 * kept_count as f64 / total as f64);
        let mean = thresholds.iter().sum::<f64>() / thresholds.len() as f64;
        assert!(close(value(&mut threshold), mean));
        assert_eq!(value(&mut non_finite), 1.0);
        let expected_norm = 100.0 * (norm_kept / norm_all).sqrt();
        assert!(close(value(&mut norm), expected_norm), "{expected_norm}");
        // second.weight: 6 entries, 1 masked; second.bias: 2 entries, none.
        assert_eq!(value(&mut second), 100.0 * 7.0 / 8.0);
        assert_eq!(second.name().as_str(), "Mask kept [second.]");
    }
}
