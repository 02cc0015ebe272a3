//! [`GradMasked`]: any Burn [`Optimizer`] with a gradient mask in front of it.

use std::sync::Arc;

use burn::module::{Module, Param, ParamGroup};
use burn::optim::{LearningRate, Optimizer, RecordState, StateSink, StateSource};
use burn::tensor::{Device, Shape, Tensor};
use burn_pack::Scalar;

use crate::config::{GradMaskConfig, MaskScope, MaskStrategy, MaskTarget};
use crate::error::GradMaskError;
use crate::mask::{TensorMask, check_gradient, hold_masked, mask_measured};
use crate::plan::{PlanEntry, VisitWithPath, plan, plan_reused, visit_with_paths};
use crate::stats::MaskStatsHandle;

/// An optimizer whose gradients are masked, tensor by tensor, before the inner optimizer
/// steps. It is itself an [`Optimizer`], so [`ModuleOptimizer::from`](burn::optim::ModuleOptimizer)
/// and burn-train's `Learner` take it unchanged. Build one with [`WithGradMask`].
///
/// Each parameter's state carries the inner optimizer's state, the step count (for the ratio
/// warm-up and the random draws) and the parameter's draw stream, so checkpoints resume the
/// exact same masks.
///
/// An optimizer sees neither parameter ids nor paths, so a parameter's draw stream is its
/// rank in the order its training thread first steps it: the module's order, the same in
/// every replica. burn-train's DDP shares one optimizer between its workers (a
/// `ModuleOptimizer` clone shares its optimizers), one thread each, so streams and statistics
/// are kept per thread: every replica numbers its parameters alike and keeps its own
/// statistics.
#[derive(Clone)]
pub struct GradMasked<O> {
    inner: O,
    config: Arc<GradMaskConfig>,
    stats: MaskStatsHandle,
    /// The module's trainable parameters in stepping order, when given.
    paths: Option<Arc<Vec<ParamPath>>>,
}

/// A trainable parameter's module path and shape, in the module's order.
#[derive(Debug)]
struct ParamPath {
    path: String,
    shape: Shape,
}

/// State of a [`GradMasked`] optimizer for one parameter.
///
/// Its record is a superset of the inner optimizer's: the inner state is written where the
/// inner optimizer alone writes it, and the mask's entries (`mask_step`, `mask_stream`,
/// `mask_threshold`) beside it, all optional. So a checkpoint of the plain optimizer resumes
/// under [`WithGradMask::with_grad_mask`] with its moments (the mask starts at step 0, as when
/// it is first added), and a checkpoint of the wrapper resumes under the plain optimizer,
/// which ignores the mask's entries.
#[derive(Clone)]
#[non_exhaustive]
pub struct GradMaskedState<S> {
    /// The inner optimizer's state.
    pub inner: Option<S>,
    /// Optimizer steps the mask has taken for this parameter.
    pub step: u64,
    /// The parameter's stream of random draws; `None` until the wrapper first steps it (a
    /// state resumed from the plain optimizer's record).
    pub stream: Option<u64>,
    /// With `reselect_every > 1`: the threshold selected last, masked against until the next
    /// selection (a one-entry tensor of the gradient's dtype).
    pub threshold: Option<Tensor<1>>,
}

impl<S: RecordState> RecordState for GradMaskedState<S> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        if let Some(inner) = &self.inner {
            inner.state_flatten(prefix, out);
        }
        out.push_scalar(prefix, "mask_step", Scalar::from(self.step));
        if let Some(stream) = self.stream {
            out.push_scalar(prefix, "mask_stream", Scalar::from(stream));
        }
        if let Some(threshold) = &self.threshold {
            out.push_tensor(prefix, "mask_threshold", threshold.to_data());
        }
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        let scalar = |src: &mut StateSource, leaf| {
            src.take_scalar(prefix, leaf)
                .and_then(|s| u64::try_from(s).ok())
        };
        let step = scalar(src, "mask_step");
        let stream = scalar(src, "mask_stream");
        let threshold = src.take_tensor(prefix, "mask_threshold").map(|data| {
            let dtype = data.dtype();
            Tensor::from_data(data, (device, dtype))
        });
        let inner = S::state_unflatten(prefix, src, device);
        if inner.is_none() && step.is_none() {
            // Nothing was recorded for this parameter.
            return None;
        }
        Some(Self {
            inner,
            step: step.unwrap_or(0),
            stream,
            threshold,
        })
    }
}

impl<O: Optimizer> GradMasked<O> {
    /// Wraps `inner` with the mask `config`, after validating it.
    ///
    /// The per-tensor wrapper sees one tensor at a time, so it refuses
    /// [`MaskScope::Global`] and [`MaskStrategy::Hft`] (which needs the module's blocks; use
    /// [`GradMask`](crate::GradMask) for both) and `unmasked` groups (use
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
        if let MaskStrategy::Hft { .. } = config.strategy {
            return Err(GradMaskError::Unsupported {
                field: "strategy",
                value: "MaskStrategy::Hft".into(),
                reason: "HFT freezes half of each block's matrices by category, which needs the module's structure; apply it with GradMask::step (for example in TrainStep::optimize)",
            });
        }
        if !config.groups.is_empty() {
            return Err(GradMaskError::Unsupported {
                field: "groups",
                value: format!("{} groups", config.groups.len()),
                reason: "an optimizer does not see parameter paths; give each group its own wrapped optimizer with ModuleOptimizer::with_group",
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
            stats: MaskStatsHandle::new(config.collect_norms),
            config: Arc::new(config),
            paths: None,
        })
    }

    /// Names each parameter's statistics (and errors) by its module path in `module`, the
    /// model this optimizer steps, instead of `stream N`.
    ///
    /// An optimizer sees tensors, not paths. `ModuleOptimizer` steps a module's parameters in
    /// the module's order, so the wrapper's `N`-th new parameter is the module's `N`-th
    /// trainable one (`require_grad`) whenever every trainable parameter has a gradient at its
    /// first step, as in a plain training loop. A parameter whose shape does not match the
    /// path's keeps the `stream N` name: a name is never a guess. A wrapper that steps only
    /// some of the parameters (`ModuleOptimizer::with_group`) is named with
    /// [`with_group_paths`](Self::with_group_paths); one that steps fewer parameters at its
    /// first step than it was named for panics at its second, with
    /// [`GradMaskError::ParamPathsMismatch`], rather than name them after others.
    ///
    /// ```
    /// use burn::module::Module;
    /// use burn::nn::{Linear, LinearConfig};
    /// use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
    /// use burn::tensor::{Device, Distribution, Tensor};
    /// use burn_gmt::WithGradMask;
    ///
    /// #[derive(Module, Debug)]
    /// struct Model {
    ///     encoder: Linear,
    /// }
    ///
    /// let device = Device::default().autodiff();
    /// let model = Model { encoder: LinearConfig::new(8, 4).init(&device) };
    /// let masked = SgdConfig::new().build().with_grad_mask(0.3).with_param_paths(&model);
    /// let stats = masked.stats_handle();
    /// let mut optim = ModuleOptimizer::from(masked);
    ///
    /// let x = Tensor::<2>::random([2, 8], Distribution::Default, &device);
    /// let grads = GradientsParams::from_grads(model.encoder.forward(x).sum().backward(), &model);
    /// let _model = optim.step(0.1, model, grads);
    /// let names: Vec<String> = stats.latest().tensors.into_iter().map(|t| t.param).collect();
    /// assert_eq!(names, ["encoder.weight", "encoder.bias"]);
    /// ```
    pub fn with_param_paths<M: Module>(self, module: &M) -> Self {
        self.with_group_paths(module, &ParamGroup::all())
    }

    /// [`with_param_paths`](Self::with_param_paths) for a wrapper that steps the parameters
    /// of `group` alone: names them by the paths of the trainable parameters of `module` that
    /// `group` matches, in the module's order.
    ///
    /// Give the group the wrapper is added with (`ModuleOptimizer::with_group(group, ..)`);
    /// for a wrapper that is the `ModuleOptimizer`'s first optimizer (the fallback, from
    /// `ModuleOptimizer::from`), the parameters no later group takes:
    /// `ParamGroup::all().exclude(group)`.
    ///
    /// ```
    /// use burn::module::{Module, ParamGroup};
    /// use burn::nn::{Linear, LinearConfig};
    /// use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
    /// use burn::tensor::{Device, Distribution, Tensor};
    /// use burn_gmt::WithGradMask;
    ///
    /// #[derive(Module, Debug)]
    /// struct Attention {
    ///     q: Linear,
    ///     k: Linear,
    /// }
    ///
    /// let device = Device::default().autodiff();
    /// let model = Attention {
    ///     q: LinearConfig::new(4, 4).init(&device),
    ///     k: LinearConfig::new(4, 4).init(&device),
    /// };
    /// // `k` masked, `q` stepped by plain SGD.
    /// let plain = ParamGroup::from_predicate("q.");
    /// let masked = SgdConfig::new()
    ///     .build()
    ///     .with_grad_mask(0.3)
    ///     .with_group_paths(&model, &ParamGroup::all().exclude(plain.clone()));
    /// let stats = masked.stats_handle();
    /// let mut optim = ModuleOptimizer::from(masked).with_group(plain, SgdConfig::new().build(), None);
    ///
    /// let x = Tensor::<2>::random([2, 4], Distribution::Default, &device);
    /// let loss = (model.q.forward(x.clone()) + model.k.forward(x)).sum();
    /// let grads = GradientsParams::from_grads(loss.backward(), &model);
    /// let _model = optim.step(0.1, model, grads);
    /// let names: Vec<String> = stats.latest().tensors.into_iter().map(|t| t.param).collect();
    /// assert_eq!(names, ["k.weight", "k.bias"]);
    /// ```
    pub fn with_group_paths<M: Module>(mut self, module: &M, group: &ParamGroup) -> Self {
        struct Collect<'a> {
            group: &'a ParamGroup,
            params: Vec<ParamPath>,
        }
        impl VisitWithPath for Collect<'_> {
            fn visit_float<const D: usize>(&mut self, path: String, param: &Param<Tensor<D>>) {
                if param.val().is_require_grad() && self.group.matches(&param.id, Some(&path)) {
                    self.params.push(ParamPath {
                        path,
                        shape: param.lazy_shape(),
                    });
                }
            }
        }
        let mut collect = Collect {
            group,
            params: Vec::new(),
        };
        visit_with_paths(module, &mut collect);
        self.paths = Some(Arc::new(collect.params));
        self
    }

    /// The mask configuration.
    pub fn config(&self) -> &GradMaskConfig {
        &self.config
    }

    /// A handle on the statistics of the latest step, shared with every clone of this
    /// optimizer (keep one before moving the optimizer into a `ModuleOptimizer`).
    pub fn stats_handle(&self) -> MaskStatsHandle {
        self.stats.clone()
    }

    /// Panics when the wrapper was named for more or fewer parameters than a replica stepped
    /// at its first step: the names would belong to other parameters.
    fn check_named_count(&self) {
        let Some(paths) = &self.paths else {
            return;
        };
        // Each replica numbers the same parameters: the most streams any has handed out.
        let stepped = self.stats.lock().most_streams();
        if stepped != paths.len() as u64 {
            let err = GradMaskError::ParamPathsMismatch {
                named: paths.len(),
                stepped,
            };
            panic!("{err}");
        }
    }

    /// The name of the parameter of draw stream `stream` and shape `shape`.
    fn param_name(&self, stream: u64, shape: &Shape) -> String {
        let known = self
            .paths
            .as_ref()
            .and_then(|paths| paths.get(stream as usize));
        match known {
            Some(param) if param.shape == *shape => param.path.clone(),
            _ => format!("stream {stream}"),
        }
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
        let (inner_state, step, stream, kept) = match state {
            Some(state) => (state.inner, state.step, state.stream, state.threshold),
            None => (None, 0, None, None),
        };
        // A parameter stepped for the first time (or resumed from the plain optimizer's
        // record) takes the next stream of this thread's replica.
        let stream = stream.unwrap_or_else(|| self.stats.lock().hand_out_stream());
        if step == 1 && stream == 0 {
            // The first parameter of this replica's second step: its first step is complete.
            self.check_named_count();
        }
        let shape = grad.shape();
        if let Err(err) = check_gradient(grad.dtype(), &grad.device(), || {
            self.param_name(stream, &shape)
        }) {
            panic!("{err}");
        }
        let config = &self.config;
        let ratio = config.ratio_at(step);
        let dispatch = grad.clone().into_dispatch();
        let planned = match kept {
            Some(threshold) if !config.selects_at(step) => plan_reused(
                &dispatch,
                TensorMask::Below {
                    threshold: threshold.into_dispatch(),
                },
                None,
                config.collect_stats,
            ),
            _ => {
                // The one-entry case of the module-level plan (the wrapper's constructor
                // refused the strategies and scopes that need the module).
                let entry = PlanEntry {
                    grad: &dispatch,
                    path: "",
                    stream,
                    group: None,
                };
                plan(
                    config.strategy,
                    config.scope,
                    ratio,
                    &[&entry],
                    step,
                    config.collect_stats,
                )
                .unwrap_or_else(|err| panic!("{err}"))
                .remove(0)
            }
        };
        // The gradient's only handle again, so the mask zeroes it in place.
        drop(dispatch);
        let applied = mask_measured(
            grad,
            planned.mask,
            config.collect_norms,
            config.collect_stats,
        );
        let threshold = match &applied.mask {
            TensorMask::Below { threshold } if config.reselect_every > 1 => {
                Some(Tensor::from_dispatch(threshold.clone()))
            }
            _ => None,
        };
        let masked = applied.grad;

        let (updated, inner_state) = match config.target {
            MaskTarget::Gradient => self.inner.step(lr, tensor, masked, inner_state),
            MaskTarget::Update => {
                let previous = tensor.clone();
                let (updated, inner_state) =
                    self.inner.step(lr, tensor, masked.clone(), inner_state);
                (
                    hold_masked(updated, previous, masked, applied.mask),
                    inner_state,
                )
            }
        };

        if let Some(counts) = planned.stats.or(applied.stats) {
            let param = self.param_name(stream, &shape);
            let stats = match applied.norms_sq {
                Some(norms_sq) => counts.with_norms(norms_sq),
                None => counts,
            };
            let tensors = self.paths.as_ref().map(|paths| paths.len());
            self.stats
                .lock()
                .record_tensor(step, ratio, param, stats, tensors);
        }
        (
            updated,
            Some(GradMaskedState {
                inner: inner_state,
                step: step + 1,
                stream: Some(stream),
                threshold,
            }),
        )
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.inner = state.inner.map(|inner| O::to_device(inner, device));
        state.threshold = state.threshold.map(|t| t.to_device(device));
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
