//! The mask statistics as a burn-train metric: the kept fraction of the latest masked step.

use std::sync::Arc;

use burn::tensor::TensorReadError;
use burn::train::metric::state::{FormatOptions, NumericMetricState};
use burn::train::metric::{
    Metric, MetricAttributes, MetricMetadata, MetricName, Numeric, NumericAttributes, NumericEntry,
    SerializedEntry,
};
use burn_gmt::MaskStats;

/// Where the metric reads the latest statistics from (the optimizer wrapper's handle or the
/// module-level mask).
pub type StatsSource = Arc<dyn Fn() -> Option<MaskStats> + Send + Sync>;

/// Percentage of gradient entries kept by the mask at the latest optimizer step.
#[derive(Clone)]
pub struct MaskKeptMetric {
    name: MetricName,
    source: StatsSource,
    state: NumericMetricState,
}

impl MaskKeptMetric {
    pub fn new(source: StatsSource) -> Self {
        Self {
            name: Arc::new("Mask kept %".to_string()),
            source,
            state: NumericMetricState::new(),
        }
    }
}

impl Metric for MaskKeptMetric {
    type Input = ();

    fn update(
        &mut self,
        _item: &(),
        _metadata: &MetricMetadata,
    ) -> Result<SerializedEntry, TensorReadError> {
        let kept = (self.source)().map_or(100.0, |stats| 100.0 * stats.kept_fraction());
        self.state.update(kept, 1);
        Ok(self
            .state
            .compute_update(FormatOptions::new(self.name()).unit("%").precision(2)))
    }

    fn compute(&mut self) -> Result<SerializedEntry, TensorReadError> {
        Ok(self
            .state
            .compute_final(FormatOptions::new(self.name()).unit("%").precision(2)))
    }

    fn clear(&mut self) {
        self.state.reset()
    }

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: Some("%".to_string()),
            higher_is_better: false,
        }
        .into()
    }
}

impl Numeric for MaskKeptMetric {
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
