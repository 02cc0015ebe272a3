//! Configuration of a gradient mask, validated once when the mask is built.

use burn::config::Config;
use burn::module::ParamGroup;

use crate::error::GradMaskError;

/// Which entries share one threshold.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MaskScope {
    /// One threshold per parameter tensor (the default).
    PerTensor,
    /// One threshold over every masked entry of the model, selected over all the gradients
    /// together with no concatenated copy of them: on a GPU their histograms are added into one
    /// selection buffer, on the CPU one sampled bracket is counted in each (gradients on
    /// several devices are read back only as counts and the few keys near the threshold, or as
    /// histograms on GPUs). Needs the module, so it is applied by
    /// [`GradMask`](crate::GradMask), not by the per-tensor optimizer wrapper.
    Global,
}

/// What the mask acts on.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
#[non_exhaustive]
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
#[non_exhaustive]
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
    /// Baseline: Half Fine-Tuning (Hui et al. 2024, arXiv 2404.18466): half of the weight
    /// matrices of each transformer block, chosen by category, are frozen for a stage. Planned
    /// by [`GradMask`](crate::GradMask), which sees the module's structure (the per-tensor
    /// wrapper refuses it), and only with [`MaskTarget::Update`].
    ///
    /// - A *unit* is a module holding parameters directly: a `Linear` (its weight and bias
    ///   freeze together), a `LayerNorm`, an `Embedding`.
    /// - A *category* is the units that share a parent module. In Burn's transformer layer:
    ///   the attention's query, key, value and output projections (`mha`), the feed-forward's
    ///   two matrices (`pwff`), the layer's norms; in a Llama block, q/k/v/o under the
    ///   attention and gate/up/down under the MLP. Units outside the blocks (embeddings,
    ///   final norm, head) form a category at their own parent and are halved alike; list
    ///   them in [`GradMaskConfig::unmasked`] to train them in every stage instead.
    /// - In each category, a fraction `ratio` (0.5 in the paper) of the units is frozen. An
    ///   odd count is rounded up or down at random with the right expectation (one or two of
    ///   a Llama MLP's three matrices). The draw depends on `seed`, the category's path and
    ///   the stage (`step / stage_steps`): re-drawn at each stage, the same in every replica.
    /// - Frozen means not updated at all: the frozen tensors' gradients are withheld from the
    ///   inner optimizer, so neither the parameter nor its optimizer state moves (no
    ///   momentum, no weight decay), as with `requires_grad = false` in the paper. Their
    ///   entries count as masked in the statistics.
    ///
    /// One stage over the whole fine-tuning (`stage_steps` at least the run's optimizer steps)
    /// is the paper's single-task setting; shorter stages re-draw the frozen half.
    Hft {
        /// Seed of the draws.
        seed: u64,
        /// Optimizer steps per stage (at least 1).
        stage_steps: u64,
    },
}

/// How the mask ratio moves over optimizer steps, from [`GradMaskConfig::ratio`] at step 0.
/// Every ratio it reaches must lie in `[0, 1)`. A warm-up
/// ([`GradMaskConfig::warmup_steps`]) scales whatever the schedule gives, from 0 up.
///
/// ```
/// use burn_gmt::{GradMaskConfig, RatioSchedule};
///
/// // 0.1 for 100 steps, then a cosine ramp to 0.4 at step 1,100.
/// let config = GradMaskConfig::new(0.1).with_schedule(RatioSchedule::Cosine {
///     to: 0.4,
///     start: 100,
///     end: 1_100,
/// });
/// assert_eq!(config.ratio_at(50), 0.1);
/// assert!((config.ratio_at(600) - 0.25).abs() < 1e-12);
/// assert_eq!(config.ratio_at(5_000), 0.4);
/// ```
#[derive(Config, Debug, PartialEq)]
#[non_exhaustive]
pub enum RatioSchedule {
    /// The ratio at every step (the default).
    Constant,
    /// The ratio until step `start`, then linearly to `to` at step `end`, `to` after it.
    Linear {
        /// The ratio from step `end` on.
        to: f64,
        /// First step of the ramp.
        start: u64,
        /// Step at which the ramp reaches `to` (at least `start`).
        end: u64,
    },
    /// Like [`Linear`](Self::Linear), along a half cosine (flat at both ends).
    Cosine {
        /// The ratio from step `end` on.
        to: f64,
        /// First step of the ramp.
        start: u64,
        /// Step at which the ramp reaches `to` (at least `start`).
        end: u64,
    },
    /// Straight lines through `(step, ratio)` points with strictly increasing steps, from the
    /// config's ratio at step 0; the last point's ratio after it.
    Piecewise {
        /// The points, by increasing step.
        points: Vec<(u64, f64)>,
    },
}

/// Whether `ratio` is a fraction of entries the mask can mask: in `[0, 1)`.
fn valid_ratio(ratio: f64) -> bool {
    ratio.is_finite() && (0.0..1.0).contains(&ratio)
}

impl RatioSchedule {
    /// The ratio at `step`, starting from `ratio` at step 0.
    pub fn ratio_at(&self, ratio: f64, step: u64) -> f64 {
        let ramp = |to: f64, start: u64, end: u64, shape: fn(f64) -> f64| {
            if step >= end {
                to
            } else if step <= start {
                ratio
            } else {
                let t = (step - start) as f64 / (end - start) as f64;
                ratio + (to - ratio) * shape(t)
            }
        };
        match self {
            RatioSchedule::Constant => ratio,
            RatioSchedule::Linear { to, start, end } => ramp(*to, *start, *end, |t| t),
            RatioSchedule::Cosine { to, start, end } => ramp(*to, *start, *end, |t| {
                (1.0 - (std::f64::consts::PI * t).cos()) / 2.0
            }),
            RatioSchedule::Piecewise { points } => {
                let mut previous = (0u64, ratio);
                for &(at, value) in points {
                    if step < at {
                        let t = (step - previous.0) as f64 / (at - previous.0) as f64;
                        return previous.1 + (value - previous.1) * t;
                    }
                    previous = (at, value);
                }
                previous.1
            }
        }
    }

    /// Checks the ratios and step ranges, naming what is wrong.
    fn validate(&self) -> Result<(), String> {
        match self {
            RatioSchedule::Constant => Ok(()),
            RatioSchedule::Linear { to, start, end } | RatioSchedule::Cosine { to, start, end } => {
                if !valid_ratio(*to) {
                    Err(format!("`to` must be in [0, 1), got {to}"))
                } else if end < start {
                    Err(format!("`end` ({end}) must be at least `start` ({start})"))
                } else {
                    Ok(())
                }
            }
            RatioSchedule::Piecewise { points } => {
                if let Some((_, r)) = points.iter().find(|(_, r)| !valid_ratio(*r)) {
                    return Err(format!("every point's ratio must be in [0, 1), got {r}"));
                }
                let increasing = points.first().is_none_or(|(s, _)| *s > 0)
                    && points.windows(2).all(|w| w[0].0 < w[1].0);
                match increasing {
                    true => Ok(()),
                    false => Err("points need strictly increasing steps, after step 0".into()),
                }
            }
        }
    }
}

/// A group of parameters masked with a ratio (and scope) of its own, in
/// [`GradMaskConfig::groups`].
///
/// ```
/// use burn::module::ParamGroup;
/// use burn_gmt::{GradMaskConfig, MaskGroup, MaskScope};
///
/// // Attention projections at 0.1 with one threshold among them, the rest at 0.3 per tensor.
/// let attention = ParamGroup::from_regex(r"\.attn\.").unwrap();
/// let config = GradMaskConfig::new(0.3)
///     .with_groups(vec![MaskGroup::new(attention, 0.1).with_scope(Some(MaskScope::Global))]);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Config, Debug)]
pub struct MaskGroup {
    /// The parameters, by id, module path or pattern.
    pub params: ParamGroup,
    /// Fraction of each step's entries masked in this group, in `[0, 1)`; at step 0 when the
    /// group has a [`schedule`](Self::schedule).
    pub ratio: f64,
    /// The group's scope. Default: `None`, the config's [`scope`](GradMaskConfig::scope).
    pub scope: Option<MaskScope>,
    /// How the group's ratio moves. Default: [`RatioSchedule::Constant`]. The config's
    /// warm-up scales it as it scales the rest.
    #[config(default = "RatioSchedule::Constant")]
    pub schedule: RatioSchedule,
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
    /// fine-tuning. With a [`schedule`](Self::schedule), the ratio at step 0.
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
    /// Groups of parameters with a ratio (and scope) of their own: a parameter takes the first
    /// group it matches, the others `ratio` and `scope`; `unmasked` wins over every group.
    /// Default: none. Needs the module, so it is applied by [`GradMask`](crate::GradMask); with
    /// the wrapper, give each group its own wrapped optimizer through
    /// `ModuleOptimizer::with_group`.
    #[config(default = "Vec::new()")]
    pub groups: Vec<MaskGroup>,
    /// How the ratio moves over the optimizer steps. Default: [`RatioSchedule::Constant`].
    #[config(default = "RatioSchedule::Constant")]
    pub schedule: RatioSchedule,
    /// Optimizer steps over which the (scheduled) ratio is scaled linearly from 0 up. Default: 0
    /// (the full ratio from the first step).
    #[config(default = 0)]
    pub warmup_steps: u64,
    /// Optimizer steps between two selections of the magnitude threshold. In between, each
    /// tensor is masked against the threshold it last selected: one masking pass instead of
    /// the selection's three (a third of the memory traffic on a GPU). The ratio in force at
    /// a selection holds until the next; statistics report the fraction actually kept. A
    /// tensor with no threshold yet (the first step, a resumed [`GradMask`](crate::GradMask))
    /// is selected afresh. Default: 1 (select at every step); only with
    /// [`MaskStrategy::Magnitude`].
    #[config(default = 1)]
    pub reselect_every: u64,
    /// Collect [`MaskStats`](crate::MaskStats) at each step; default: true. Costs nothing
    /// extra for the magnitude mask on CPU backends. On a GPU, a per-tensor mask takes its
    /// statistics from the selection itself and a global one adds a counting pass per tensor;
    /// they are read back once per [`GradMask`](crate::GradMask) step, or when asked for
    /// through the optimizer wrapper's [`MaskStatsHandle`](crate::MaskStatsHandle). Turn it
    /// off for a step with no host synchronisation at all.
    #[config(default = true)]
    pub collect_stats: bool,
    /// Also measure each gradient's L2 norm and the norm of what the mask keeps of it, for
    /// [`MaskStats::kept_norm_fraction`](crate::MaskStats::kept_norm_fraction) (the share of
    /// the gradient norm that survives the mask, as GASDU users log it). Costs two reductions
    /// per tensor, read back with the rest of the statistics, and on a fusion backend it can
    /// stop the mask from working in place. Default: false; needs `collect_stats`.
    #[config(default = false)]
    pub collect_norms: bool,
}

impl GradMaskConfig {
    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<(), GradMaskError> {
        if !valid_ratio(self.ratio) {
            return Err(GradMaskError::InvalidField {
                field: "ratio",
                reason: format!(
                    "must be a number in [0, 1) (the fraction of entries masked), got {}",
                    self.ratio
                ),
            });
        }
        if let Err(reason) = self.schedule.validate() {
            return Err(GradMaskError::InvalidField {
                field: "schedule",
                reason,
            });
        }
        for (i, group) in self.groups.iter().enumerate() {
            let problem = match valid_ratio(group.ratio) {
                false => Err(format!("must be in [0, 1), got {}", group.ratio)),
                true => group.schedule.validate(),
            };
            if let Err(reason) = problem {
                return Err(GradMaskError::InvalidField {
                    field: "groups",
                    reason: format!("group {i}: ratio or schedule {reason}"),
                });
            }
        }
        if self.reselect_every == 0 {
            return Err(GradMaskError::InvalidField {
                field: "reselect_every",
                reason: "must be at least 1 (select at every step)".into(),
            });
        }
        if self.reselect_every > 1 && self.strategy != MaskStrategy::Magnitude {
            return Err(GradMaskError::InvalidField {
                field: "reselect_every",
                reason: format!(
                    "a threshold is kept between selections only for MaskStrategy::Magnitude, not {:?}",
                    self.strategy
                ),
            });
        }
        if self.collect_norms && !self.collect_stats {
            return Err(GradMaskError::InvalidField {
                field: "collect_norms",
                reason: "norms are reported with the statistics: set collect_stats too".into(),
            });
        }
        if let MaskStrategy::Hft { stage_steps, .. } = self.strategy {
            if stage_steps == 0 {
                return Err(GradMaskError::InvalidField {
                    field: "strategy",
                    reason: "MaskStrategy::Hft needs stage_steps >= 1".into(),
                });
            }
            if self.target != MaskTarget::Update {
                return Err(GradMaskError::InvalidField {
                    field: "target",
                    reason: "MaskStrategy::Hft freezes its tensors: it needs MaskTarget::Update (with_target(MaskTarget::Update))".into(),
                });
            }
        }
        Ok(())
    }

    /// Whether a threshold is selected at optimizer step `step` (or kept from an earlier one).
    pub fn selects_at(&self, step: u64) -> bool {
        step.is_multiple_of(self.reselect_every)
    }

    /// The ratio in force at optimizer step `step` (0-based): the schedule's, scaled by the
    /// warm-up ramp. A pure function of the step, so a resumed run (whose step count the
    /// records keep) continues on the same schedule.
    pub fn ratio_at(&self, step: u64) -> f64 {
        self.warmed_up(self.schedule.ratio_at(self.ratio, step), step)
    }

    /// The ratio of group `group` (an index into [`groups`](Self::groups)) at step `step`.
    pub fn group_ratio_at(&self, group: usize, step: u64) -> f64 {
        let group = &self.groups[group];
        self.warmed_up(group.schedule.ratio_at(group.ratio, step), step)
    }

    /// `ratio`, scaled by the warm-up ramp at `step`.
    fn warmed_up(&self, ratio: f64, step: u64) -> f64 {
        if self.warmup_steps == 0 || step >= self.warmup_steps {
            ratio
        } else {
            ratio * step as f64 / self.warmup_steps as f64
        }
    }

    /// Builds the module-level mask, after validation.
    pub fn init(&self) -> Result<crate::GradMask, GradMaskError> {
        crate::GradMask::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schedule against the formulas written out in f64, step by step.
    #[test]
    fn schedules_follow_their_formulas() {
        let (r, to, start, end) = (0.1, 0.4, 10u64, 30u64);
        let linear = RatioSchedule::Linear { to, start, end };
        let cosine = RatioSchedule::Cosine { to, start, end };
        for step in 0..50u64 {
            let t = (step.clamp(start, end) - start) as f64 / (end - start) as f64;
            let expect_linear = r + (to - r) * t;
            let expect_cosine = r + (to - r) * (1.0 - (std::f64::consts::PI * t).cos()) / 2.0;
            assert!(
                (linear.ratio_at(r, step) - expect_linear).abs() < 1e-15,
                "step {step}"
            );
            assert!(
                (cosine.ratio_at(r, step) - expect_cosine).abs() < 1e-15,
                "step {step}"
            );
        }
        assert_eq!(linear.ratio_at(r, start), r);
        assert_eq!(linear.ratio_at(r, end), to);
        assert_eq!(cosine.ratio_at(r, 20), (r + to) / 2.0);
        assert_eq!(RatioSchedule::Constant.ratio_at(r, 7), r);

        let piecewise = RatioSchedule::Piecewise {
            points: vec![(4, 0.3), (8, 0.3), (12, 0.0)],
        };
        let expected = [
            0.1, 0.15, 0.2, 0.25, 0.3, 0.3, 0.3, 0.3, 0.3, 0.225, 0.15, 0.075, 0.0, 0.0, 0.0,
        ];
        for (step, want) in expected.iter().enumerate() {
            let got = piecewise.ratio_at(r, step as u64);
            assert!((got - want).abs() < 1e-15, "step {step}: {got} vs {want}");
        }
        // A ramp over no steps jumps at `start`.
        let jump = RatioSchedule::Linear {
            to: 0.5,
            start: 3,
            end: 3,
        };
        assert_eq!((jump.ratio_at(r, 2), jump.ratio_at(r, 3)), (r, 0.5));
    }

    #[test]
    fn warmup_scales_the_schedule() {
        let config = GradMaskConfig::new(0.2)
            .with_schedule(RatioSchedule::Linear {
                to: 0.4,
                start: 0,
                end: 8,
            })
            .with_warmup_steps(4);
        assert_eq!(config.ratio_at(0), 0.0);
        assert!((config.ratio_at(2) - 0.25 * 0.5).abs() < 1e-15);
        assert_eq!(config.ratio_at(8), 0.4);
    }

    #[test]
    fn bad_schedules_name_the_field() {
        let bad = [
            RatioSchedule::Linear {
                to: 1.0,
                start: 0,
                end: 5,
            },
            RatioSchedule::Cosine {
                to: 0.3,
                start: 6,
                end: 5,
            },
            RatioSchedule::Piecewise {
                points: vec![(5, 0.1), (5, 0.2)],
            },
            RatioSchedule::Piecewise {
                points: vec![(0, 0.1)],
            },
            RatioSchedule::Piecewise {
                points: vec![(3, f64::NAN)],
            },
        ];
        for schedule in bad {
            let err = GradMaskConfig::new(0.1)
                .with_schedule(schedule.clone())
                .validate()
                .unwrap_err();
            assert!(
                err.to_string().contains("GradMaskConfig.schedule"),
                "{schedule:?}: {err}"
            );
        }
        assert!(
            GradMaskConfig::new(0.1)
                .with_schedule(RatioSchedule::Piecewise { points: vec![] })
                .validate()
                .is_ok()
        );
    }
}
