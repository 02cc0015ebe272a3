//! The mask statistics as burn-train metrics: the kept fraction and the mean threshold of the
//! latest masked step.

use std::sync::Arc;

use burn::tensor::TensorReadError;
use burn::train::metric::state::{FormatOptions, NumericMetricState};
use burn::train::metric::{
    Metric, MetricAttributes, MetricMetadata, MetricName, Numeric, NumericAttributes, NumericEntry,
    SerializedEntry,
};
use burn_gmt::MaskStats;

/// Where the metrics read the latest statistics from (the optimizer wrapper's handle or the
/// module-level mask).
pub type StatsSource = Arc<dyn Fn() -> Option<MaskStats> + Send + Sync>;

/// Which statistic a [`MaskStatMetric`] shows.
#[derive(Clone, Copy)]
pub enum MaskStat {
    /// Percentage of gradient entries kept.
    KeptPercent,
    /// Mean over tensors of the finite magnitude thresholds.
    MeanThreshold,
}

/// One statistic of the mask at the latest optimizer step.
#[derive(Clone)]
pub struct MaskStatMetric {
    name: MetricName,
    stat: MaskStat,
    source: StatsSource,
    state: NumericMetricState,
}

impl MaskStatMetric {
    pub fn new(stat: MaskStat, source: StatsSource) -> Self {
        let name = match stat {
            MaskStat::KeptPercent => "Mask kept",
            MaskStat::MeanThreshold => "Mask threshold",
        };
        Self {
            name: Arc::new(name.to_string()),
            stat,
            source,
            state: NumericMetricState::new(),
        }
    }

    fn measure(&self, stats: Option<MaskStats>) -> f64 {
        match (self.stat, stats) {
            (MaskStat::KeptPercent, stats) => stats.map_or(100.0, |s| 100.0 * s.kept_fraction()),
            (MaskStat::MeanThreshold, None) => 0.0,
            (MaskStat::MeanThreshold, Some(stats)) => {
                let thresholds: Vec<f64> = stats
                    .tensors
                    .iter()
                    .filter_map(|t| t.threshold)
                    .filter(|t| t.is_finite())
                    .collect();
                if thresholds.is_empty() {
                    0.0
                } else {
                    thresholds.iter().sum::<f64>() / thresholds.len() as f64
                }
            }
        }
    }

    fn format(&self) -> FormatOptions {
        match self.stat {
            MaskStat::KeptPercent => FormatOptions::new(self.name()).unit("%").precision(2),
            MaskStat::MeanThreshold => FormatOptions::new(self.name()).precision(6),
        }
    }
}

impl Metric for MaskStatMetric {
    type Input = ();

    fn update(
        &mut self,
        _item: &(),
        _metadata: &MetricMetadata,
    ) -> Result<SerializedEntry, TensorReadError> {
        let value = self.measure((self.source)());
        self.state.update(value, 1);
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
        let unit = matches!(self.stat, MaskStat::KeptPercent).then(|| "%".to_string());
        NumericAttributes {
            unit,
            higher_is_better: false,
        }
        .into()
    }
}

impl Numeric for MaskStatMetric {
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
