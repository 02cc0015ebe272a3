//! The fine-tuning methods compared (SFT, GMT per tensor and with a global threshold, random
//! masks, HFT) and how each is set up with burn-gmt, for the study and the LLM example alike.

use burn::optim::{AdamWConfig, ModuleOptimizer};
use burn_gmt::{
    GradMask, GradMaskConfig, MaskScope, MaskStatsHandle, MaskStrategy, MaskTarget, WithGradMask,
};

/// A fine-tuning method.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// Plain supervised fine-tuning.
    Sft,
    /// GMT: the smallest-|g| fraction `r` of each gradient tensor is zeroed.
    Gmt(f64),
    /// GMT with one threshold over the whole model.
    GmtGlobal(f64),
    /// GMT per tensor with [`MaskTarget::Update`]: the masked entries are held still, AdamW's
    /// momentum and weight decay included.
    GmtUpdate(f64),
    /// A random fraction `r` of each gradient tensor is zeroed (the control for GMT).
    Random(f64),
    /// As [`Method::Random`], the kept entries scaled by `1 / (1 - r)` (ChildTuning-F).
    RandomRescaled(f64),
    /// Half Fine-Tuning: half of each block's matrices by category frozen for a stage
    /// ([`MaskStrategy::Hft`]).
    Hft,
}

impl Method {
    /// Name in tables, logs and folder names.
    pub fn name(&self) -> String {
        match self {
            Method::Sft => "SFT".into(),
            Method::Gmt(r) => format!("GMT r={r}"),
            Method::GmtGlobal(r) => format!("GMT global r={r}"),
            Method::GmtUpdate(r) => format!("GMT-update r={r}"),
            Method::Random(r) => format!("Random mask r={r}"),
            Method::RandomRescaled(r) => format!("Random mask r={r} rescaled"),
            Method::Hft => "HFT".into(),
        }
    }

    /// The mask ratio, for the methods that have one.
    pub fn ratio(&self) -> Option<f64> {
        match self {
            Method::Gmt(r)
            | Method::GmtGlobal(r)
            | Method::GmtUpdate(r)
            | Method::Random(r)
            | Method::RandomRescaled(r) => Some(*r),
            Method::Sft | Method::Hft => None,
        }
    }

    /// The mask of the method (`None` for SFT). `seed` varies the random draws; HFT re-draws
    /// its frozen half every `hft_stage_steps` optimizer steps.
    pub fn mask_config(&self, seed: u64, hft_stage_steps: u64) -> Option<GradMaskConfig> {
        let random = |r: f64, rescale| {
            GradMaskConfig::new(r).with_strategy(MaskStrategy::Random {
                seed: 1000 + seed,
                rescale,
            })
        };
        Some(match *self {
            Method::Sft => return None,
            Method::Gmt(r) => GradMaskConfig::new(r),
            Method::GmtGlobal(r) => GradMaskConfig::new(r).with_scope(MaskScope::Global),
            Method::GmtUpdate(r) => GradMaskConfig::new(r).with_target(MaskTarget::Update),
            Method::Random(r) => random(r, false),
            Method::RandomRescaled(r) => random(r, true),
            Method::Hft => GradMaskConfig::new(0.5)
                .with_strategy(MaskStrategy::Hft {
                    seed: 2000 + seed,
                    stage_steps: hft_stage_steps.max(1),
                })
                .with_target(MaskTarget::Update),
        })
    }

    /// Whether the method needs the whole module (a global threshold, HFT's blocks), so the
    /// module-level [`GradMask`] rather than the optimizer wrapper.
    pub fn module_level(&self) -> bool {
        matches!(self, Method::GmtGlobal(_) | Method::Hft)
    }
}

/// The optimizer, the module-level mask (global GMT, HFT) and the handle on the mask statistics
/// of `method`, over `adamw`. `seed` varies the random draws; HFT re-draws its frozen half every
/// `hft_stage_steps` optimizer steps.
pub fn method_parts(
    method: Method,
    adamw: &AdamWConfig,
    seed: u64,
    hft_stage_steps: u64,
) -> (ModuleOptimizer, Option<GradMask>, Option<MaskStatsHandle>) {
    let module_level = |config: GradMaskConfig| {
        let mask = config.init().expect("valid mask config");
        let stats = mask.stats_handle();
        (adamw.init(), Some(mask), Some(stats))
    };
    let per_tensor = |config: GradMaskConfig| {
        let wrapped = adamw.build().with_grad_mask_config(config);
        let stats = wrapped.stats_handle();
        (ModuleOptimizer::from(wrapped), None, Some(stats))
    };
    match method.mask_config(seed, hft_stage_steps) {
        None => (adamw.init(), None, None),
        Some(config) if method.module_level() => module_level(config),
        Some(config) => per_tensor(config),
    }
}
