//! [`GradMask`]: the mask as a transformation of a module's [`GradientsParams`]. Its state and
//! API live here; deciding a step's masks is [`crate::plan`]'s, the multi-device sharding
//! [`shard`]'s and holding masked parameters still [`hold`]'s.

mod hold;
mod shard;

use std::collections::HashMap;

use burn::backend::{DispatchTensor, TensorMetadata};
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use burn::optim::{GradientsParams, ModuleOptimizer, MultiGradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::config::{GradMaskConfig, MaskTarget};
use crate::error::GradMaskError;
use crate::mask::{TensorMask, check_gradient, mask_below_batched, mask_measured};
use crate::plan::{PlanEntry, VisitWithPath, path_key, plan_reused, plan_step, visit_with_paths};
use crate::stats::{MaskStats, MaskStatsHandle, resolve_named};
use burn_gmt_kernels::mask::{PendingStats, SharedThreshold};
use hold::{collect_held, restore_held};
use shard::Sharded;

/// Gradient-Mask Tuning as a transformation of a module's gradients: it sees every
/// parameter, so it supports [`MaskScope::Global`](crate::MaskScope::Global), `unmasked`
/// groups and HFT ([`MaskStrategy::Hft`](crate::MaskStrategy::Hft), which needs the module's
/// blocks).
///
/// Keep it as a field of the model ([`Module`]: its record is its step counter, so
/// checkpoints save it and every replica has its own) and call [`step`](Self::step) once per
/// optimizer step, on the accumulated gradients; the [user guide](crate#gradmask-in-burn-train)
/// shows it in burn-train, through [`MaskedModel`](crate#gradmask-in-burn-train) (feature
/// `train`) or a model's own mask field ([`step_field`](Self::step_field)).
///
/// ```
/// use burn::module::Module;
/// use burn::nn::{Linear, LinearConfig};
/// use burn::optim::{AdamWConfig, GradientsParams};
/// use burn::tensor::{Device, Distribution, Tensor};
/// use burn_gmt::{GradMaskConfig, MaskScope};
///
/// #[derive(Module, Debug)]
/// struct Model {
///     layer: Linear,
/// }
///
/// let device = Device::default().autodiff();
/// let model = Model { layer: LinearConfig::new(8, 4).init(&device) };
/// let mut optim = AdamWConfig::new().init();
/// let mut mask = GradMaskConfig::new(0.3).with_scope(MaskScope::Global).init().unwrap();
///
/// let x = Tensor::<2>::random([16, 8], Distribution::Default, &device);
/// let loss = model.layer.forward(x).powi_scalar(2).mean();
/// let grads = GradientsParams::from_grads(loss.backward(), &model);
/// let grads = mask.apply(&model, grads);
/// let model = optim.step(1e-3, model, grads);
///
/// let stats = mask.last_stats();
/// assert_eq!(stats.total(), 8 * 4 + 4);
/// assert_eq!(stats.masked(), (0.3 * 36.0_f64).floor() as u64);
/// # let _ = model;
/// ```
#[derive(Module, Debug)]
pub struct GradMask {
    /// Optimizer steps masked so far, as a one-entry integer parameter: a module record (and
    /// so burn-train's checkpoints of a model holding the mask) saves it. Written lazily, so
    /// counting steps costs no device work; it is materialised only when saved.
    step: Param<Tensor<1, Int>>,
    #[module(skip)]
    config: GradMaskConfig,
    /// The value of `step` while it keeps the id it was written with; loading a record gives
    /// it the saved id, and the value is then read back once.
    #[module(skip)]
    known_step: (ParamId, u64),
    #[module(skip)]
    last_stats: MaskStats,
    /// Shared by every clone (the copies burn-train makes of a model): what a metric reads.
    #[module(skip)]
    stats: MaskStatsHandle,
    /// With `reselect_every > 1`: each parameter's mask at the last selection, and its
    /// threshold value when statistics read it.
    #[module(skip)]
    kept: HashMap<ParamId, (TensorMask, Option<f64>)>,
}

/// One masked parameter, as the first walk over the module finds it.
struct Entry {
    id: ParamId,
    path: String,
    /// The first of the config's groups the parameter belongs to, if any.
    group: Option<usize>,
    grad: DispatchTensor,
}

/// A step-counter parameter holding `step`, created on `device` only if it is ever read or
/// saved.
fn step_param(step: u64, device: Device) -> Param<Tensor<1, Int>> {
    Param::uninitialized(
        ParamId::new(),
        move |device, _| Tensor::from_data(TensorData::from([step as i64]), device),
        device,
        false,
        [1].into(),
    )
}

impl GradMask {
    pub(crate) fn new(config: GradMaskConfig) -> Result<Self, GradMaskError> {
        config.validate()?;
        let step = step_param(0, Device::default());
        Ok(Self {
            known_step: (step.id, 0),
            step,
            stats: MaskStatsHandle::new(config.collect_norms),
            config,
            last_stats: MaskStats::default(),
            kept: HashMap::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &GradMaskConfig {
        &self.config
    }

    /// Optimizer steps masked so far (drives the warm-up, random draws and HFT stages). Saved
    /// and loaded with the record of a module holding the mask.
    pub fn steps(&self) -> u64 {
        match self.known_step {
            (id, step) if id == self.step.id => step,
            // Loaded from a record: the saved counter.
            _ => self.step.val().into_scalar::<i64>() as u64,
        }
    }

    /// Sets the step counter, for example to resume a run whose mask was not saved.
    pub fn set_steps(&mut self, step: u64) {
        self.write_steps(step, self.step.lazy_device());
    }

    fn write_steps(&mut self, step: u64, device: Device) {
        self.step = step_param(step, device);
        self.known_step = (self.step.id, step);
    }

    /// Statistics of the latest [`apply`](Self::apply) or [`step`](Self::step).
    pub fn last_stats(&self) -> &MaskStats {
        &self.last_stats
    }

    /// Parameters whose mask is kept between selections (with `reselect_every > 1`; none
    /// otherwise): at most the module's parameters, replaced at each selection. For tests of
    /// long runs.
    #[doc(hidden)]
    pub fn kept_masks(&self) -> usize {
        self.kept.len()
    }

    /// A handle on the statistics of the latest step, shared with every clone of this mask:
    /// keep one before the model holding the mask moves into a `Learner` (for example for a
    /// `burn_gmt::metric::MaskMetric`, feature `train`).
    pub fn stats_handle(&self) -> MaskStatsHandle {
        self.stats.clone()
    }

    /// Masks `grads` (the gradients of `module`, already accumulated) for one optimizer
    /// step. Parameters without a gradient are skipped. Tensors that [`MaskStrategy::Hft`](crate::MaskStrategy::Hft)
    /// freezes lose their gradient, so the optimizer leaves them and their state alone.
    ///
    /// # Panics
    /// If a gradient has a dtype the mask does not support; see [`try_apply`](Self::try_apply).
    /// With [`MaskTarget::Update`], prefer [`step`](Self::step), which also holds the masked
    /// parameters still.
    pub fn apply<M: Module>(&mut self, module: &M, grads: GradientsParams) -> GradientsParams {
        self.try_apply(module, grads)
            .unwrap_or_else(|err| panic!("{err}"))
    }

    /// Like [`apply`](Self::apply), returning an error for an unsupported gradient.
    pub fn try_apply<M: Module>(
        &mut self,
        module: &M,
        grads: GradientsParams,
    ) -> Result<GradientsParams, GradMaskError> {
        self.mask_grads(module, grads).map(|(grads, _)| grads)
    }

    /// Masks the gradients of a multi-device step (burn-train's
    /// `MultiDevice(.., OptimSharded)` strategy, which calls `TrainStep::optimize_multi`).
    /// Each parameter's gradients are summed on the device burn-optim's
    /// [`MultiGradientsParams::remove`] picks for it, masked there, and handed back on that
    /// device alone, so `ModuleOptimizer::step_multi` steps them where it would have. The mask
    /// is the one [`apply`](Self::apply) computes on the summed gradients; with
    /// [`MaskScope::Global`](crate::MaskScope::Global) the threshold is selected over every device's gradients on the
    /// host, from what each device reads back (counts and a few keys on the CPU backends,
    /// histograms on GPUs): no gradient leaves its device.
    ///
    /// ```
    /// use burn::module::Module;
    /// use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
    /// use burn::optim::{ModuleOptimizer, MultiGradientsParams};
    /// use burn_gmt::GradMask;
    ///
    /// /// The body of `TrainStep::optimize_multi` for a model holding a `mask: GradMask` field.
    /// fn optimize_multi<M: Module>(
    ///     model: M,
    ///     mask: &mut GradMask,
    ///     optim: &mut ModuleOptimizer,
    ///     lr: ModuleLearningRate,
    ///     grads: MultiGradientsParams,
    /// ) -> M {
    ///     let grads = mask.apply_multi(&model, grads);
    ///     optim.step_multi(lr, model, grads)
    /// }
    /// ```
    ///
    /// With [`MaskTarget::Update`], use [`step_multi`](Self::step_multi), which also holds
    /// the masked parameters still.
    ///
    /// # Panics
    /// As [`apply`](Self::apply); see [`try_apply_multi`](Self::try_apply_multi).
    pub fn apply_multi<M: Module>(
        &mut self,
        module: &M,
        grads: MultiGradientsParams,
    ) -> MultiGradientsParams {
        self.try_apply_multi(module, grads)
            .unwrap_or_else(|err| panic!("{err}"))
    }

    /// Like [`apply_multi`](Self::apply_multi), returning an error for an unsupported
    /// gradient.
    pub fn try_apply_multi<M: Module>(
        &mut self,
        module: &M,
        grads: MultiGradientsParams,
    ) -> Result<MultiGradientsParams, GradMaskError> {
        let sharded = Sharded::sum_on_home(module, grads);
        let (masked, _) = self.mask_grads(module, sharded.sums)?;
        Ok(sharded.homes.send_home(module, masked))
    }

    /// One optimizer step of `module` with masked gradients: [`apply`](Self::apply), then
    /// `optim.step`; with [`MaskTarget::Update`] the masked parameters are then put back to
    /// their previous values. (That keeps the previous values of the masked parameters
    /// alive during the step; the [`GradMasked`](crate::GradMasked) wrapper does it tensor
    /// by tensor instead.)
    pub fn step<M: Module>(
        &mut self,
        optim: &mut ModuleOptimizer,
        lr: impl Into<ModuleLearningRate>,
        module: M,
        grads: GradientsParams,
    ) -> M {
        let (grads, plans) = self
            .mask_grads(&module, grads)
            .unwrap_or_else(|err| panic!("{err}"));
        let held = self.collect_held(&module, &plans, &grads);
        let updated = optim.step(lr, module, grads);
        restore_held(updated, held)
    }

    /// [`step`](Self::step) for a model that holds its mask as a field: the body of a
    /// hand-written `TrainStep::optimize`. The mask is taken out of the model for the step
    /// (a placeholder that shares only its configuration and statistics handle stands in) and
    /// put back after it, so it is never cloned and cannot be left behind.
    /// [`MaskedModel`](crate::MaskedModel) (feature `train`) does this for any model.
    ///
    /// ```
    /// use burn::module::Module;
    /// use burn::nn::{Linear, LinearConfig};
    /// use burn::optim::{AdamWConfig, GradientsParams};
    /// use burn::tensor::{Device, Distribution, Tensor};
    /// use burn_gmt::{GradMask, GradMaskConfig};
    ///
    /// #[derive(Module, Debug)]
    /// struct Model {
    ///     layer: Linear,
    ///     mask: GradMask,
    /// }
    ///
    /// let device = Device::default().autodiff();
    /// let mask = GradMaskConfig::new(0.3).init().unwrap();
    /// let model = Model { layer: LinearConfig::new(8, 4).init(&device), mask };
    /// let mut optim = AdamWConfig::new().init();
    ///
    /// let x = Tensor::<2>::random([16, 8], Distribution::Default, &device);
    /// let loss = model.layer.forward(x).powi_scalar(2).mean();
    /// let grads = GradientsParams::from_grads(loss.backward(), &model);
    /// // In `TrainStep::optimize(self, optim, lr, grads)`:
    /// let model = GradMask::step_field(model, |m| &mut m.mask, &mut optim, 1e-3, grads);
    /// assert_eq!(model.mask.steps(), 1);
    /// assert_eq!(model.mask.last_stats().masked(), 9 + 1);
    /// ```
    pub fn step_field<M: Module>(
        mut model: M,
        field: impl Fn(&mut M) -> &mut GradMask,
        optim: &mut ModuleOptimizer,
        lr: impl Into<ModuleLearningRate>,
        grads: GradientsParams,
    ) -> M {
        let stand_in = field(&mut model).stand_in();
        let mut mask = std::mem::replace(field(&mut model), stand_in);
        let mut model = mask.step(optim, lr, model, grads);
        *field(&mut model) = mask;
        model
    }

    /// A mask of the same configuration and statistics handle, at step 0 with nothing kept:
    /// what stands in a model's field while the real mask steps it.
    fn stand_in(&self) -> Self {
        let step = step_param(0, self.step.lazy_device());
        Self {
            known_step: (step.id, 0),
            step,
            config: self.config.clone(),
            last_stats: MaskStats::default(),
            stats: self.stats.clone(),
            kept: HashMap::new(),
        }
    }

    /// [`step`](Self::step) for a multi-device step (`TrainStep::optimize_multi`):
    /// [`apply_multi`](Self::apply_multi), then `optim.step_multi`, holding the masked
    /// parameters still with [`MaskTarget::Update`].
    ///
    /// # Panics
    /// As [`apply`](Self::apply).
    pub fn step_multi<M: Module>(
        &mut self,
        optim: &mut ModuleOptimizer,
        lr: impl Into<ModuleLearningRate>,
        module: M,
        grads: MultiGradientsParams,
    ) -> M {
        let sharded = Sharded::sum_on_home(&module, grads);
        let (masked, plans) = self
            .mask_grads(&module, sharded.sums)
            .unwrap_or_else(|err| panic!("{err}"));
        let held = self.collect_held(&module, &plans, &masked);
        let grads = sharded.homes.send_home(&module, masked);
        let updated = optim.step_multi(lr, module, grads);
        restore_held(updated, held)
    }

    /// With [`MaskTarget::Update`], what [`hold`] needs to hold this step's masked
    /// parameters still.
    fn collect_held<M: Module>(
        &self,
        module: &M,
        plans: &HashMap<ParamId, TensorMask>,
        grads: &GradientsParams,
    ) -> Option<hold::HeldParams> {
        (self.config.target == MaskTarget::Update).then(|| collect_held(module, plans, grads))
    }

    /// Masks the gradients and returns the plan of every masked parameter.
    fn mask_grads<M: Module>(
        &mut self,
        module: &M,
        mut grads: GradientsParams,
    ) -> Result<(GradientsParams, HashMap<ParamId, TensorMask>), GradMaskError> {
        let mut entries = Vec::new();
        visit_with_paths(
            module,
            &mut CollectEntries {
                grads: &grads,
                config: &self.config,
                entries: &mut entries,
            },
        );
        for entry in &entries {
            check_gradient(entry.grad.dtype(), &entry.grad.device().into(), || {
                entry.path.clone()
            })?;
        }
        let step = self.steps();
        let ratio = self.config.ratio_at(step);
        let collect = self.config.collect_stats;
        let reuse =
            !self.config.selects_at(step) && entries.iter().all(|e| self.kept.contains_key(&e.id));
        let plans = match reuse {
            true => entries
                .iter()
                .map(|e| {
                    let (mask, value) = self.kept[&e.id].clone();
                    plan_reused(&e.grad, mask, value, collect)
                })
                .collect(),
            false => {
                let planned: Vec<PlanEntry> = entries
                    .iter()
                    .map(|e| PlanEntry {
                        grad: &e.grad,
                        path: &e.path,
                        stream: path_key(&e.path),
                        group: e.group,
                    })
                    .collect();
                plan_step(&self.config, &planned, step)?
            }
        };

        // The next step's counter lives where the gradients do (a replica's own device).
        let device = match entries.first() {
            Some(entry) => entry.grad.device().into(),
            None => self.step.lazy_device(),
        };
        let mut masks = HashMap::new();
        // Every entry's statistics, in entry order: from its plan, or (a one-pass mask's)
        // from its masking.
        let mut pending = Vec::new();
        let ids: Vec<ParamId> = entries.iter().map(|e| e.id).collect();
        // The masks of gradients selected together on a device go as one call per batch
        // (their launches do not grow with the tensors); with norms, each is measured alone.
        let mut batched = HashMap::new();
        for (entry, plan) in entries.iter().zip(plans) {
            pending.push((entry.id, entry.path.clone(), plan.stats));
            if let Some(shared) = plan.shared
                && !self.config.collect_norms
            {
                batched.insert(entry.id, shared);
            }
            masks.insert(entry.id, plan.mask);
        }
        // The gradients are only borrowed now: drop the borrows so masking can be in place.
        drop(entries);
        let mut masking = MaskGrads {
            masks: &mut masks,
            grads: &mut grads,
            collect,
            norms: self.config.collect_norms.then(HashMap::new),
            stats: HashMap::new(),
            batched: &batched,
            taken: Vec::new(),
        };
        module.visit(&mut masking);
        let mut norms = masking.norms.unwrap_or_default();
        let mut applied_stats = masking.stats;
        let masked = mask_below_batched(masking.taken);
        if !masked.is_empty() {
            module.visit(&mut RegisterGrads {
                grads: &mut grads,
                masked,
            });
        }

        let named = pending
            .into_iter()
            .filter_map(|(id, path, counts)| {
                let counts = counts.or_else(|| applied_stats.remove(&id))?;
                let counts = match norms.remove(&id) {
                    Some(norms_sq) => counts.with_norms(norms_sq),
                    None => counts,
                };
                Some((path, counts))
            })
            .collect();
        let stats = MaskStats {
            step,
            ratio,
            tensors: resolve_named(named),
        };
        if self.config.reselect_every > 1 && !reuse {
            // Statistics, when collected, come one per entry: they carry the threshold values.
            let values = stats.tensors.iter().map(|t| t.threshold);
            let values = values.chain(std::iter::repeat(None));
            self.kept = ids
                .into_iter()
                .zip(values)
                .map(|(id, value)| (id, (masks[&id].clone(), value)))
                .collect();
        }
        self.stats.lock().record_step(stats.clone());
        self.last_stats = stats;
        self.write_steps(step + 1, device);
        Ok((grads, masks))
    }
}

struct CollectEntries<'a> {
    grads: &'a GradientsParams,
    config: &'a GradMaskConfig,
    entries: &'a mut Vec<Entry>,
}

impl VisitWithPath for CollectEntries<'_> {
    fn visit_float<const D: usize>(&mut self, path: String, param: &Param<Tensor<D>>) {
        if let Some(group) = &self.config.unmasked
            && group.matches(&param.id, Some(&path))
        {
            return;
        }
        if let Some(grad) = self.grads.get::<D>(param.id) {
            let group = self
                .config
                .groups
                .iter()
                .position(|g| g.params.matches(&param.id, Some(&path)));
            self.entries.push(Entry {
                id: param.id,
                path,
                group,
                grad: grad.into_dispatch(),
            });
        }
    }
}

struct MaskGrads<'a> {
    /// Each parameter's mask, replaced by the mask as applied ([`Applied::mask`](crate::mask::Applied::mask)).
    masks: &'a mut HashMap<ParamId, TensorMask>,
    grads: &'a mut GradientsParams,
    /// Whether statistics are collected.
    collect: bool,
    /// With `collect_norms`: each masked gradient's `[‖g‖², ‖kept‖²]`.
    norms: Option<HashMap<ParamId, Tensor<1>>>,
    /// The statistics one-pass masks counted as they were applied.
    stats: HashMap<ParamId, PendingStats>,
    /// The parameters masked in batches, with their shared thresholds.
    batched: &'a HashMap<ParamId, SharedThreshold>,
    /// Their gradients, taken out for [`mask_below_batched`].
    taken: Vec<(ParamId, DispatchTensor, SharedThreshold)>,
}

impl ModuleVisitor for MaskGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let Some(mask) = self.masks.get(&param.id) else {
            return;
        };
        let Some(grad) = self.grads.remove::<D>(param.id) else {
            return;
        };
        // A frozen tensor's gradient is withheld: the optimizer leaves the parameter and its
        // state alone (its norms still count: the mask keeps none of it).
        if let Some(shared) = self.batched.get(&param.id) {
            self.taken
                .push((param.id, grad.into_dispatch(), shared.clone()));
            return;
        }
        let frozen = matches!(mask, TensorMask::Frozen);
        if frozen && self.norms.is_none() {
            return;
        }
        let applied = mask_measured(grad, mask.clone(), self.norms.is_some(), self.collect);
        if !frozen {
            self.grads.register::<D>(param.id, applied.grad);
        }
        if let (Some(norms), Some(norms_sq)) = (&mut self.norms, applied.norms_sq) {
            norms.insert(param.id, norms_sq);
        }
        if let Some(stats) = applied.stats {
            self.stats.insert(param.id, stats);
        }
        self.masks.insert(param.id, applied.mask);
    }
}

/// Puts the gradients masked in batches back, each with its parameter's rank.
struct RegisterGrads<'a> {
    grads: &'a mut GradientsParams,
    masked: HashMap<ParamId, DispatchTensor>,
}

impl ModuleVisitor for RegisterGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.masked.remove(&param.id) {
            self.grads
                .register::<D>(param.id, Tensor::from_dispatch(grad));
        }
    }
}
