//! Configuration of a gradient mask, validated once when the mask is built.

use burn::config::Config;
use burn::module::ParamGroup;

use crate::error::GradMaskError;

/// Which entries share one threshold.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum MaskScope {
    /// One threshold per parameter tensor (the default).
    PerTensor,
    /// One threshold over every masked entry of the model, found by merging per-tensor
    /// histograms (no concatenated copy of the gradients; gradients on several devices have
    /// their histograms merged on the host). Needs the module, so it is applied by
    /// [`GradMask`](crate::GradMask), not by the per-tensor optimizer wrapper.
    Global,
}

/// What the mask acts on.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum MaskTarget {
    /// Zero the masked gradient entries before the inner optimizer (the usual GMT). Under
    /// AdamW, masked weights still move through momentum and weight decay.
    Gradient,
    /// Masked parameters do not move at all this step, whatever the inner optimizer does
    /// (momentum, weight decay). The gradient is masked too, so the optimizer state sees
    /// the same masked gradient as with [`MaskTarget::Gradient`].
    Update,
}

/// How the masked entries are chosen.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum MaskStrategy {
    /// GMT: mask the entries with the smallest `|g|` (exact selection).
    Magnitude,
    /// Baseline: mask a random fraction `ratio` of the entries, drawn anew each step from
    /// `seed` (ChildTuning-F style). With `rescale`, kept entries are multiplied by
    /// `1 / (1 - ratio)`.
    Random {
        /// Seed of the counter-based draws.
        seed: u64,
        /// Rescale kept entries by `1 / (1 - ratio)`.
        rescale: bool,
    },
    /// Baseline: Half Fine-Tuning. A fraction `ratio` (0.5 in the paper) of the parameter
    /// tensors of each layer is frozen, re-drawn every `stage_steps` optimizer steps.
    Hft {
        /// Seed of the draws.
        seed: u64,
        /// Optimizer steps per stage (at least 1).
        stage_steps: u64,
    },
}

/// Configuration of Gradient-Mask Tuning.
///
/// ```
/// use burn_gmt::{GradMaskConfig, MaskScope};
///
/// let config = GradMaskConfig::new(0.3).with_scope(MaskScope::Global);
/// assert!(config.validate().is_ok());
/// let err = GradMaskConfig::new(1.0).validate().unwrap_err();
/// assert!(err.to_string().contains("ratio"));
/// ```
#[derive(Config, Debug)]
pub struct GradMaskConfig {
    /// Fraction of the entries **masked** (zeroed) at each step, in `[0, 1)`; 0 is plain
    /// fine-tuning.
    pub ratio: f64,
    /// Which entries share a threshold. Default: [`MaskScope::PerTensor`].
    #[config(default = "MaskScope::PerTensor")]
    pub scope: MaskScope,
    /// What the mask acts on. Default: [`MaskTarget::Gradient`].
    #[config(default = "MaskTarget::Gradient")]
    pub target: MaskTarget,
    /// How masked entries are chosen. Default: [`MaskStrategy::Magnitude`] (GMT).
    #[config(default = "MaskStrategy::Magnitude")]
    pub strategy: MaskStrategy,
    /// Parameters never masked (for example embeddings, norms or biases), matched by id or
    /// module path. Default: none. With the optimizer wrapper, use
    /// `ModuleOptimizer::with_group` with the unwrapped optimizer instead.
    pub unmasked: Option<ParamGroup>,
    /// Optimizer steps over which the ratio ramps linearly from 0 to `ratio`. Default: 0
    /// (the full ratio from the first step).
    #[config(default = 0)]
    pub warmup_steps: u64,
    /// Collect [`MaskStats`](crate::MaskStats) at each step; default: true. Costs nothing
    /// extra for the magnitude mask on CPU backends. On a GPU, a per-tensor mask takes its
    /// statistics from the selection itself and a global one adds a counting pass per tensor;
    /// they are read back once per [`GradMask`](crate::GradMask) step, or when asked for
    /// through the optimizer wrapper's [`MaskStatsHandle`](crate::MaskStatsHandle). Turn it
    /// off for a step with no host synchronisation at all.
    #[config(default = true)]
    pub collect_stats: bool,
}

impl GradMaskConfig {
    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<(), GradMaskError> {
        if !(self.ratio.is_finite() && (0.0..1.0).contains(&self.ratio)) {
            return Err(GradMaskError::InvalidField {
                field: "ratio",
                reason: format!(
                    "must be a number in [0, 1) (the fraction of entries masked), got {}",
                    self.ratio
                ),
            });
        }
        if let MaskStrategy::Hft { stage_steps: 0, .. } = self.strategy {
            return Err(GradMaskError::InvalidField {
                field: "strategy",
                reason: "MaskStrategy::Hft needs stage_steps >= 1".into(),
            });
        }
        Ok(())
    }

    /// The ratio in force at optimizer step `step` (0-based), after the warm-up ramp.
    pub fn ratio_at(&self, step: u64) -> f64 {
        if self.warmup_steps == 0 || step >= self.warmup_steps {
            self.ratio
        } else {
            self.ratio * step as f64 / self.warmup_steps as f64
        }
    }

    /// Builds the module-level mask, after validation.
    pub fn init(&self) -> Result<crate::GradMask, GradMaskError> {
        crate::GradMask::new(self.clone())
    }
}
