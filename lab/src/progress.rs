//! A one-line progress display for burn-train: epoch, split progress and the latest metrics,
//! redrawn in place on a terminal (burn-train's plain CLI renderer prints a debug line per
//! batch), and written once per split and epoch when the output is a file or a pipe, so a
//! redirected log holds lines, not one line of carriage returns.

use std::io::{IsTerminal, Write};

use burn::train::LearnerSummary;
use burn::train::logger::{EvaluationProgressLogger, TrainingProgressLogger};
use burn::train::metric::{MetricDefinition, MetricId};
use burn::train::renderer::{
    EvaluationName, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining,
};

/// Redraws burn-train's progress in place on one line, labelled (e.g. `pretrain-0`).
#[derive(Default)]
pub struct LineRenderer {
    label: String,
    /// Standard output is a terminal: the line is redrawn as batches go.
    live: bool,
    epoch: usize,
    epochs: usize,
    split: String,
    done: usize,
    total: usize,
    /// Names of the registered metrics, by id.
    names: Vec<(MetricId, String)>,
    /// Latest value of each metric, by id: (id, "name: value").
    metrics: Vec<(MetricId, String)>,
}

impl LineRenderer {
    /// A renderer whose line starts with `label`.
    pub fn new(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            live: std::io::stdout().is_terminal(),
            ..Self::default()
        }
    }

    fn record(&mut self, state: MetricState) {
        let entry = match state {
            MetricState::Generic(entry) | MetricState::Numeric(entry, _) => entry,
        };
        // Formatted as "epoch X - batch Y": show the running epoch value.
        let formatted = entry.serialized_entry.formatted;
        let value = formatted
            .split(" - ")
            .next()
            .unwrap_or(&formatted)
            .trim_start_matches("epoch ")
            .to_string();
        let name = self
            .names
            .iter()
            .find(|(id, _)| *id == entry.metric_id)
            .map_or("?", |(_, n)| n.as_str());
        let text = format!("{name}: {value}");
        match self
            .metrics
            .iter_mut()
            .find(|(id, _)| *id == entry.metric_id)
        {
            Some(slot) => slot.1 = text,
            None => self.metrics.push((entry.metric_id, text)),
        }
    }

    /// The progress line as it stands.
    fn line(&self) -> String {
        let width = 24;
        let filled = (self.done * width).checked_div(self.total).unwrap_or(0);
        format!(
            "  {} epoch {}/{} {:<5} [{}{}] {:>5}/{:<5} {}",
            self.label,
            self.epoch.min(self.epochs.max(1)),
            self.epochs,
            self.split,
            "#".repeat(filled),
            ".".repeat(width - filled),
            self.done,
            self.total,
            self.metrics
                .iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>()
                .join(" | ")
        )
    }

    /// Redraws the line in place (on a terminal only).
    fn redraw(&self) {
        if self.live {
            print!("\r{}   ", self.line());
            let _ = std::io::stdout().flush();
        }
    }
}

impl MetricsRendererTraining for LineRenderer {
    fn update_train(&mut self, state: MetricState) {
        self.record(state);
    }

    fn update_valid(&mut self, state: MetricState) {
        self.record(state);
    }

    fn on_train_end(
        &mut self,
        _summary: Option<LearnerSummary>,
    ) -> Result<(), Box<dyn core::error::Error>> {
        Ok(())
    }
}

impl MetricsRendererEvaluation for LineRenderer {
    fn update_test(&mut self, _name: EvaluationName, state: MetricState) {
        self.record(state);
    }
}

impl TrainingProgressLogger for LineRenderer {
    fn start(
        &mut self,
        total_epochs: usize,
        starting_epoch: usize,
        _total_items: Option<usize>,
        _label: Option<&str>,
    ) {
        self.epochs = total_epochs;
        self.epoch = starting_epoch.max(1);
    }

    fn update_epoch(&mut self, epoch: usize) {
        self.epoch = epoch + 1;
    }

    fn start_split(&mut self, split: &str, total_items: usize) {
        self.split = split.to_string();
        self.total = total_items;
        self.done = 0;
        self.metrics.clear();
    }

    fn update_split(&mut self, items_processed: usize) {
        self.done = items_processed;
        self.redraw();
    }

    /// The split's last state stays on its own line: the live line ended, or one line written.
    fn end_split(&mut self) {
        match self.live {
            true => {
                self.redraw();
                println!();
            }
            false => println!("{}", self.line()),
        }
    }

    fn end(&mut self) {}

    fn log_event_training(&mut self, _event: String) {}
}

impl EvaluationProgressLogger for LineRenderer {
    fn start_global_progress(&mut self, _total_tests: usize) {}
    fn start_test(&mut self, name: &str, total_items: usize) {
        self.start_split(name, total_items);
    }
    fn update_test_progress(&mut self, items_processed: usize) {
        self.update_split(items_processed);
    }
    fn end_test(&mut self) {
        self.end_split();
    }
    fn end_global_progress(&mut self) {}
    fn log_event_evaluation(&mut self, _event: String) {}
}

impl MetricsRenderer for LineRenderer {
    fn manual_close(&mut self) {}
    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names
            .push((definition.metric_id, definition.name.to_string()));
    }
}
