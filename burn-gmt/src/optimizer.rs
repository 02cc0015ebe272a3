//! [`GradMasked`]: any Burn [`Optimizer`] with a gradient mask in front of it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use burn::optim::{LearningRate, Optimizer, RecordState, StateSink, StateSource, join_path};
use burn::tensor::{Device, Tensor};
use burn_pack::Scalar;

use crate::config::{GradMaskConfig, MaskScope, MaskTarget};
use crate::error::GradMaskError;
use crate::mask::{check_dtype, hold_masked, mask_gradient, plan_tensor, resolve_named};
use crate::select::PendingStats;
use crate::stats::MaskStats;

/// An optimizer whose gradients are masked, tensor by tensor, before the inner optimizer
/// steps. It is itself an [`Optimizer`], so [`ModuleOptimizer::from`](burn::optim::ModuleOptimizer)
/// and burn-train's `Learner` take it unchanged. Build one with [`WithGradMask`].
///
/// Each parameter's state carries the inner optimizer's state, the step count (for the ratio
/// warm-up and the random draws) and the parameter's draw stream, so checkpoints resume the
/// exact same masks.
#[derive(Clone)]
pub struct GradMasked<O> {
    inner: O,
    config: Arc<GradMaskConfig>,
    next_stream: Arc<AtomicU64>,
    stats: Arc<Mutex<LatestStats>>,
}

/// The statistics of the latest step, kept as the plans left them (on a GPU, counts still
/// on the device) and read when asked for: stepping never waits on a read-back.
#[derive(Default)]
struct LatestStats {
    step: u64,
    ratio: f64,
    tensors: Vec<(String, PendingStats)>,
    /// What the last [`MaskStatsHandle::latest`] read, until the next step changes it.
    read: Option<MaskStats>,
}

/// State of a [`GradMasked`] optimizer for one parameter.
#[derive(Clone)]
pub struct GradMaskedState<S> {
    /// The inner optimizer's state.
    pub inner: Option<S>,
    /// Optimizer steps taken for this parameter.
    pub step: u64,
    /// The parameter's stream of random draws.
    pub stream: u64,
}

impl<S: RecordState> RecordState for GradMaskedState<S> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        if let Some(inner) = &self.inner {
            inner.state_flatten(&join_path(prefix, "inner"), out);
            out.push_scalar(prefix, "has_inner", Scalar::from(true));
        }
        out.push_scalar(prefix, "mask_step", Scalar::from(self.step));
        out.push_scalar(prefix, "mask_stream", Scalar::from(self.stream));
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        let scalar = |src: &mut StateSource, leaf| {
            src.take_scalar(prefix, leaf)
                .and_then(|s| u64::try_from(s).ok())
        };
        let step = scalar(src, "mask_step")?;
        let stream = scalar(src, "mask_stream")?;
        let has_inner = matches!(
            src.take_scalar(prefix, "has_inner"),
            Some(Scalar::Bool(true))
        );
        let inner = match has_inner {
            true => Some(S::state_unflatten(
                &join_path(prefix, "inner"),
                src,
                device,
            )?),
            false => None,
        };
        Some(Self {
            inner,
            step,
            stream,
        })
    }
}

impl<O: Optimizer> GradMasked<O> {
    /// Wraps `inner` with the mask `config`, after validating it.
    ///
    /// The per-tensor wrapper sees one tensor at a time, so it refuses
    /// [`MaskScope::Global`] (use [`GradMask`](crate::GradMask)) and `unmasked` groups (use
    /// `ModuleOptimizer::with_group` with the unwrapped optimizer).
    pub fn new(inner: O, config: GradMaskConfig) -> Result<Self, GradMaskError> {
        config.validate()?;
        if config.scope == MaskScope::Global {
            return Err(GradMaskError::Unsupported {
                field: "scope",
                value: "MaskScope::Global".into(),
                reason: "an optimizer sees one tensor at a time; apply a global mask with GradMask::apply (for example in TrainStep::optimize)",
            });
        }
        if config.unmasked.is_some() {
            return Err(GradMaskError::Unsupported {
                field: "unmasked",
                value: "Some(..)".into(),
                reason: "an optimizer does not see parameter paths; add the unmasked parameters with ModuleOptimizer::with_group and the unwrapped optimizer",
            });
        }
        Ok(Self {
            inner,
            config: Arc::new(config),
            next_stream: Arc::new(AtomicU64::new(0)),
            stats: Arc::new(Mutex::new(LatestStats::default())),
        })
    }

    /// The mask configuration.
    pub fn config(&self) -> &GradMaskConfig {
        &self.config
    }

    /// A handle on the statistics of the latest step, shared with every clone of this
    /// optimizer (keep one before moving the optimizer into a `ModuleOptimizer`).
    pub fn stats_handle(&self) -> MaskStatsHandle {
        MaskStatsHandle(self.stats.clone())
    }
}

/// Shared view of the statistics a [`GradMasked`] optimizer collects.
#[derive(Clone)]
pub struct MaskStatsHandle(Arc<Mutex<LatestStats>>);

impl std::fmt::Debug for MaskStatsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("MaskStatsHandle").finish_non_exhaustive()
    }
}

impl MaskStatsHandle {
    /// The statistics of the latest optimizer step. On a GPU the counts stay on the device
    /// during the step; this reads them, every tensor's at once.
    pub fn latest(&self) -> MaskStats {
        let mut latest = self.0.lock().expect("mask statistics lock");
        if let Some(read) = &latest.read {
            return read.clone();
        }
        let read = MaskStats {
            step: latest.step,
            ratio: latest.ratio,
            tensors: resolve_named(latest.tensors.clone()),
        };
        latest.read = Some(read.clone());
        read
    }
}

impl<O: Optimizer> Optimizer for GradMasked<O> {
    type State<const D: usize> = GradMaskedState<O::State<D>>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let (inner_state, step, stream) = match state {
            Some(state) => (state.inner, state.step, state.stream),
            None => (None, 0, self.next_stream.fetch_add(1, Ordering::Relaxed)),
        };
        if let Err(err) = check_dtype(grad.dtype(), &grad.device(), || format!("stream {stream}")) {
            panic!("{err}");
        }
        let config = &self.config;
        let ratio = config.ratio_at(step);
        let plan = plan_tensor(
            config.strategy,
            &grad.clone().into_dispatch(),
            ratio,
            stream,
            step,
            config.collect_stats,
        );
        let masked = mask_gradient(grad, plan.mask.clone());

        let (updated, inner_state) = match config.target {
            MaskTarget::Gradient => self.inner.step(lr, tensor, masked, inner_state),
            MaskTarget::Update => {
                let previous = tensor.clone();
                let (updated, inner_state) =
                    self.inner.step(lr, tensor, masked.clone(), inner_state);
                (
                    hold_masked(updated, previous, masked, plan.mask.clone()),
                    inner_state,
                )
            }
        };

        if let Some(stats) = plan.stats {
            let param = format!("stream {stream}");
            let mut latest = self.stats.lock().expect("mask statistics lock");
            if latest.step != step || latest.tensors.is_empty() {
                *latest = LatestStats {
                    step,
                    ratio,
                    ..LatestStats::default()
                };
            }
            latest.tensors.retain(|(p, _)| *p != param);
            latest.tensors.push((param, stats));
            latest.read = None;
        }
        (
            updated,
            Some(GradMaskedState {
                inner: inner_state,
                step: step + 1,
                stream,
            }),
        )
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.inner = state.inner.map(|inner| O::to_device(inner, device));
        state
    }
}

/// Adds a gradient mask to any Burn optimizer.
///
/// ```
/// use burn::optim::{AdamWConfig, ModuleOptimizer, SgdConfig};
/// use burn_gmt::{GradMaskConfig, MaskTarget, WithGradMask};
///
/// let optim = ModuleOptimizer::from(AdamWConfig::new().build().with_grad_mask(0.3));
/// let config = GradMaskConfig::new(0.2).with_target(MaskTarget::Update);
/// let optim = ModuleOptimizer::from(SgdConfig::new().build().with_grad_mask_config(config));
/// assert!(SgdConfig::new().build().try_with_grad_mask(1.5).is_err());
/// ```
pub trait WithGradMask: Optimizer + Sized {
    /// Masks a fraction `ratio` of each gradient tensor (GMT, per-tensor threshold).
    ///
    /// # Panics
    /// If `ratio` is not in `[0, 1)`, with the message of [`GradMaskError`].
    fn with_grad_mask(self, ratio: f64) -> GradMasked<Self> {
        self.with_grad_mask_config(GradMaskConfig::new(ratio))
    }

    /// Like [`with_grad_mask`](Self::with_grad_mask), returning the error instead.
    fn try_with_grad_mask(self, ratio: f64) -> Result<GradMasked<Self>, GradMaskError> {
        GradMasked::new(self, GradMaskConfig::new(ratio))
    }

    /// Masks gradients as `config` says.
    ///
    /// # Panics
    /// If `config` is invalid or needs the module ([`MaskScope::Global`], `unmasked`).
    fn with_grad_mask_config(self, config: GradMaskConfig) -> GradMasked<Self> {
        GradMasked::new(self, config).unwrap_or_else(|err| panic!("{err}"))
    }

    /// Like [`with_grad_mask_config`](Self::with_grad_mask_config), returning the error.
    fn try_with_grad_mask_config(
        self,
        config: GradMaskConfig,
    ) -> Result<GradMasked<Self>, GradMaskError> {
        GradMasked::new(self, config)
    }
}

impl<O: Optimizer> WithGradMask for O {}
