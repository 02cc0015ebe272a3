//! [`GradMask`]: the mask as a transformation of a module's [`GradientsParams`].

use std::collections::HashMap;

use burn::backend::{DispatchTensor, TensorMetadata};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use burn::optim::{GradientsParams, ModuleOptimizer, MultiGradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_gmt_kernels::random::{draw, draw_key, mix64};

use crate::config::{GradMaskConfig, MaskScope, MaskStrategy, MaskTarget};
use crate::error::GradMaskError;
use crate::mask::{
    PendingTensorStats, Plan, TensorMask, check_dtype, hold_masked, mask_measured, plan_frozen,
    plan_magnitude, plan_reused, plan_tensor, resolve_named,
};
use crate::select::masked_count;
use crate::stats::{MaskStats, MaskStatsHandle};
use burn_gmt_kernels::select;

/// Gradient-Mask Tuning as a transformation of a module's gradients: it sees every
/// parameter, so it supports [`MaskScope::Global`], `unmasked` groups and HFT
/// ([`MaskStrategy::Hft`], which needs the module's blocks).
///
/// Use it in a custom loop, or in burn-train by overriding `TrainStep::optimize`:
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
///
/// In burn-train, override `TrainStep::optimize`: `Learner` calls it once per optimizer step
/// with the gradients it has already summed (not averaged) over the `grads_accumulation`
/// micro-batches, which is what GMT masks; a last, shorter group at the end of an epoch gets a
/// step too. Keep the mask in the model as a field: `GradMask` is a [`Module`] whose only
/// record is its step counter, so
/// - burn-train's checkpoints save it with the model, and a resumed run masks exactly as an
///   uninterrupted one would (warm-up, random draws and HFT stages included);
/// - every replica of the model (DDP gives each worker a clone) has a mask of its own, stepped
///   once per optimizer step, with nothing shared between replicas.
///
/// The mask is a pure function of its configuration, the step, the parameter's module path
/// and the gradient, so replicas that see the same (all-reduced) gradients mask alike.
///
/// ```
/// use burn::data::dataloader::DataLoaderBuilder;
/// use burn::data::dataset::InMemDataset;
/// use burn::module::Module;
/// use burn::nn::{Linear, LinearConfig};
/// use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
/// use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
/// use burn::tensor::{Device, Tensor};
/// use burn::train::{Learner, RegressionOutput, SupervisedTraining, TrainOutput, TrainStep};
/// use burn_gmt::{GradMask, GradMaskConfig, MaskScope};
/// # use burn::data::dataloader::batcher::Batcher;
/// # use burn::tensor::TensorData;
/// # use burn::train::InferenceStep;
/// # use burn::train::logger::InMemoryMetricLogger;
///
/// #[derive(Module, Debug)]
/// pub struct Regressor {
///     layer: Linear,
///     // Saved with the model; one per replica.
///     mask: GradMask,
/// }
///
/// impl Regressor {
///     fn forward(&self, (x, y): (Tensor<2>, Tensor<2>)) -> RegressionOutput {
///         let output = self.layer.forward(x);
///         let loss = (output.clone() - y.clone()).powi_scalar(2).mean();
///         RegressionOutput { loss, output, targets: y }
///     }
/// }
///
/// impl TrainStep for Regressor {
///     type Input = (Tensor<2>, Tensor<2>);
///     type Output = RegressionOutput;
///
///     fn step(&self, batch: Self::Input) -> TrainOutput<RegressionOutput> {
///         let item = self.forward(batch);
///         TrainOutput::new(self, item.loss.backward(), item)
///     }
///
///     // Once per optimizer step, on the accumulated gradients: one threshold over the model.
///     fn optimize(
///         self,
///         optim: &mut ModuleOptimizer,
///         lr: ModuleLearningRate,
///         grads: GradientsParams,
///     ) -> Self {
///         let mut mask = self.mask.clone();
///         let mut model = mask.step(optim, lr, self, grads);
///         model.mask = mask;
///         model
///     }
/// }
/// # impl InferenceStep for Regressor {
/// #     type Input = (Tensor<2>, Tensor<2>);
/// #     type Output = RegressionOutput;
/// #     fn step(&self, batch: Self::Input) -> RegressionOutput {
/// #         self.forward(batch)
/// #     }
/// # }
/// # /// Items of 8 inputs and 2 targets.
/// # #[derive(Clone)]
/// # struct Pairs;
/// # impl Batcher<[f32; 10], (Tensor<2>, Tensor<2>)> for Pairs {
/// #     fn batch(&self, items: Vec<[f32; 10]>, device: &Device) -> (Tensor<2>, Tensor<2>) {
/// #         let n = items.len();
/// #         let x: Vec<f32> = items.iter().flat_map(|i| i[..8].to_vec()).collect();
/// #         let y: Vec<f32> = items.iter().flat_map(|i| i[8..].to_vec()).collect();
/// #         (
/// #             Tensor::from_data(TensorData::new(x, [n, 8]), device),
/// #             Tensor::from_data(TensorData::new(y, [n, 2]), device),
/// #         )
/// #     }
/// # }
/// # let loader = |device: &Device| {
/// #     let items: Vec<[f32; 10]> = (0..32)
/// #         .map(|i| std::array::from_fn(|k| ((i * 10 + k) as f32 * 0.37).sin()))
/// #         .collect();
/// #     DataLoaderBuilder::new(Pairs)
/// #         .batch_size(4)
/// #         .set_device(device.clone())
/// #         .build(InMemDataset::new(items))
/// # };
///
/// let device = Device::default().autodiff();
/// let config = GradMaskConfig::new(0.3).with_scope(MaskScope::Global);
/// let model = Regressor { layer: LinearConfig::new(8, 2).init(&device), mask: config.init().unwrap() };
/// let learner = Learner::new(model, AdamWConfig::new().init(), 1e-3);
///
/// // 8 micro-batches of 4 items, accumulated 4 at a time: 2 optimizer steps, 2 masks.
/// let dir = std::env::temp_dir().join(format!("burn-gmt-doc-{}", std::process::id()));
/// let result = SupervisedTraining::new(&dir, loader(&device), loader(&device))
///     .grads_accumulation(4)
///     .num_epochs(1)
/// #   .with_metric_logger(InMemoryMetricLogger::new())
/// #   .with_application_logger(None)
///     .launch(learner);
/// assert!(result.error.is_none());
///
/// let mask = &result.model.mask;
/// assert_eq!(mask.steps(), 2);
/// assert_eq!(mask.last_stats().masked(), (0.3 * 18.0_f64).floor() as u64);
/// # let _ = std::fs::remove_dir_all(&dir);
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

/// A stable 64-bit key of a module path: the random draw stream of a parameter, or the HFT
/// draw of a layer. Paths are the same in every clone, replica and run of a model (a
/// `ParamId` is drawn afresh each time a model is built).
fn path_key(path: &str) -> u64 {
    mix64(path.bytes().fold(0u64, |h, b| mix64(h ^ b as u64)))
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

    /// A handle on the statistics of the latest step, shared with every clone of this mask:
    /// keep one before the model holding the mask moves into a `Learner` (for example for a
    /// `burn_gmt::metric::MaskMetric`, feature `train`).
    pub fn stats_handle(&self) -> MaskStatsHandle {
        self.stats.clone()
    }

    /// Masks `grads` (the gradients of `module`, already accumulated) for one optimizer
    /// step. Parameters without a gradient are skipped. Tensors that [`MaskStrategy::Hft`]
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
    /// [`MaskScope::Global`] the threshold is selected over every device's gradients on the
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

    /// With [`MaskTarget::Update`], the previous value and masked gradient of every parameter
    /// the mask holds still this step.
    fn collect_held<M: Module>(
        &self,
        module: &M,
        plans: &HashMap<ParamId, TensorMask>,
        grads: &GradientsParams,
    ) -> Option<HeldParams> {
        if self.config.target == MaskTarget::Gradient {
            return None;
        }
        let mut held = HeldParams::default();
        module.visit(&mut CollectHeld {
            plans,
            grads,
            held: &mut held,
        });
        Some(held)
    }

    /// Masks the gradients and returns the plan of every masked parameter.
    fn mask_grads<M: Module>(
        &mut self,
        module: &M,
        mut grads: GradientsParams,
    ) -> Result<(GradientsParams, HashMap<ParamId, TensorMask>), GradMaskError> {
        let mut entries = Vec::new();
        module.visit(&mut CollectEntries {
            grads: &grads,
            config: &self.config,
            path: Vec::new(),
            entries: &mut entries,
        });
        for entry in &entries {
            check_dtype(entry.grad.dtype(), &entry.grad.device().into(), || {
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
            false => self.plan_groups(&entries, step)?,
        };

        // The next step's counter lives where the gradients do (a replica's own device).
        let device = match entries.first() {
            Some(entry) => entry.grad.device().into(),
            None => self.step.lazy_device(),
        };
        let mut masks = HashMap::new();
        let mut pending = Vec::new();
        let ids: Vec<ParamId> = entries.iter().map(|e| e.id).collect();
        for (entry, plan) in entries.iter().zip(plans) {
            if let Some(counts) = plan.stats {
                pending.push((entry.id, entry.path.clone(), counts));
            }
            masks.insert(entry.id, plan.mask);
        }
        // The gradients are only borrowed now: drop the borrows so masking can be in place.
        drop(entries);
        let mut masking = MaskGrads {
            masks: &masks,
            grads: &mut grads,
            norms: self.config.collect_norms.then(HashMap::new),
        };
        module.visit(&mut masking);
        let mut norms = masking.norms.unwrap_or_default();

        let named = pending
            .into_iter()
            .map(|(id, path, counts)| {
                let norms_sq = norms.remove(&id);
                (path, PendingTensorStats { counts, norms_sq })
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

    /// The plans of every entry, each group of parameters (and the rest) with its own ratio
    /// and scope.
    fn plan_groups(&self, entries: &[Entry], step: u64) -> Result<Vec<Plan>, GradMaskError> {
        let mut plans: Vec<Option<Plan>> = entries.iter().map(|_| None).collect();
        let groups = std::iter::once(None).chain((0..self.config.groups.len()).map(Some));
        for group in groups {
            let (members, subset): (Vec<usize>, Vec<&Entry>) = entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.group == group)
                .unzip();
            if members.is_empty() {
                continue;
            }
            let (ratio, scope) = match group {
                None => (self.config.ratio_at(step), self.config.scope),
                Some(g) => (
                    self.config.group_ratio_at(g, step),
                    self.config.groups[g].scope.unwrap_or(self.config.scope),
                ),
            };
            for (i, plan) in members
                .into_iter()
                .zip(self.plan(&subset, ratio, scope, step)?)
            {
                plans[i] = Some(plan);
            }
        }
        Ok(plans
            .into_iter()
            .map(|p| p.expect("every entry is in one group"))
            .collect())
    }

    fn plan(
        &self,
        entries: &[&Entry],
        ratio: f64,
        scope: MaskScope,
        step: u64,
    ) -> Result<Vec<Plan>, GradMaskError> {
        let collect = self.config.collect_stats;
        match (self.config.strategy, scope) {
            (MaskStrategy::Magnitude, MaskScope::Global) => plan_global(entries, ratio, collect),
            (MaskStrategy::Magnitude, MaskScope::PerTensor) => {
                let grads: Vec<DispatchTensor> = entries.iter().map(|e| e.grad.clone()).collect();
                Ok(plan_magnitude(&grads, ratio, collect))
            }
            (MaskStrategy::Hft { seed, stage_steps }, _) => {
                Ok(plan_hft(entries, ratio, seed, step / stage_steps, collect))
            }
            (strategy, _) => Ok(entries
                .iter()
                .map(|e| plan_tensor(strategy, &e.grad, ratio, path_key(&e.path), step, collect))
                .collect()),
        }
    }
}

/// One threshold over every entry, selected over all of them together
/// ([`select_abs`](burn_gmt_kernels::select::select_abs)): no concatenation.
fn plan_global(entries: &[&Entry], ratio: f64, collect: bool) -> Result<Vec<Plan>, GradMaskError> {
    let Some(dtype) = entries.first().map(|e| e.grad.dtype()) else {
        return Ok(Vec::new());
    };
    if entries.iter().any(|e| e.grad.dtype() != dtype) {
        return Err(GradMaskError::Unsupported {
            field: "scope",
            value: "MaskScope::Global".into(),
            reason: "a global threshold needs every masked gradient in one dtype; mark the others `unmasked` or use MaskScope::PerTensor",
        });
    }
    let grads: Vec<DispatchTensor> = entries.iter().map(|e| e.grad.clone()).collect();
    let total = grads.iter().map(|g| g.shape().num_elements() as u64).sum();
    let rank = masked_count(ratio, total);
    if rank == 0 {
        let stats = collect.then(|| select::count_unselected(&grads, false));
        return Ok((0..entries.len())
            .map(|i| Plan {
                mask: TensorMask::Keep,
                stats: stats.as_ref().map(|s| s[i].clone()),
            })
            .collect());
    }
    let selection = select::select_abs(&grads, rank, collect);
    Ok((0..entries.len())
        .map(|i| Plan {
            mask: TensorMask::Below {
                threshold: selection.thresholds[i].clone(),
            },
            stats: selection.stats.as_ref().map(|s| s[i].clone()),
        })
        .collect())
}

/// The module path a parameter or module path sits in (`""` at the root).
fn parent_path(path: &str) -> &str {
    path.rsplit_once('.').map_or("", |(parent, _)| parent)
}

/// HFT ([`MaskStrategy::Hft`]): the units (modules holding parameters) sharing a parent
/// module form a category; in each category `ratio` of the units are frozen, a count rounded
/// stochastically so its expectation is exact, drawn per category and stage.
fn plan_hft(entries: &[&Entry], ratio: f64, seed: u64, stage: u64, collect: bool) -> Vec<Plan> {
    // Category path -> its units, in module order.
    let mut categories: Vec<(&str, Vec<&str>)> = Vec::new();
    for entry in entries {
        let unit = parent_path(&entry.path);
        let category = parent_path(unit);
        match categories.iter_mut().find(|(c, _)| *c == category) {
            Some((_, units)) if units.contains(&unit) => {}
            Some((_, units)) => units.push(unit),
            None => categories.push((category, vec![unit])),
        }
    }
    let mut frozen_units = std::collections::HashSet::new();
    for (category, units) in categories {
        let key = draw_key(seed, path_key(category), stage);
        let wanted = ratio * units.len() as f64;
        let fraction = (draw(key, u64::MAX) >> 11) as f64 / (1u64 << 53) as f64;
        let count = wanted.floor() as usize + usize::from(fraction < wanted.fract());
        // Ordered by a draw keyed by the unit's path: which units a category holds (say, one
        // listed `unmasked`) does not change the others' order.
        let mut order = units;
        order.sort_by_key(|unit| draw(key, path_key(unit)));
        frozen_units.extend(order.into_iter().take(count));
    }
    entries
        .iter()
        .map(|e| {
            plan_frozen(
                &e.grad,
                frozen_units.contains(parent_path(&e.path)),
                collect,
            )
        })
        .collect()
}

struct CollectEntries<'a> {
    grads: &'a GradientsParams,
    config: &'a GradMaskConfig,
    path: Vec<String>,
    entries: &'a mut Vec<Entry>,
}

impl ModuleVisitor for CollectEntries<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let path = self.path.join(".");
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

/// The gradients of a multi-device step, each parameter's summed on its home device.
struct Sharded {
    sums: GradientsParams,
    homes: Homes,
}

/// The devices of a multi-device step, and which of them is each parameter's home.
struct Homes {
    devices: Vec<Device>,
    home: HashMap<ParamId, usize>,
}

impl Sharded {
    /// Sums each parameter's gradients where burn-optim's [`MultiGradientsParams::remove`]
    /// does: on the device it picks for that parameter (its home).
    fn sum_on_home<M: Module>(module: &M, mut multi: MultiGradientsParams) -> Self {
        struct Sum<'a> {
            multi: &'a mut MultiGradientsParams,
            sums: GradientsParams,
            home: HashMap<ParamId, usize>,
        }
        impl ModuleVisitor for Sum<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                if let Some((grad, device)) = self.multi.remove::<D>(param.id) {
                    let home = self
                        .multi
                        .grads
                        .iter()
                        .position(|(_, d)| *d == device)
                        .expect("burn-optim sums a gradient on one of the step's devices");
                    self.home.insert(param.id, home);
                    self.sums.register::<D>(param.id, grad);
                }
            }
        }
        let mut sum = Sum {
            multi: &mut multi,
            sums: GradientsParams::new(),
            home: HashMap::new(),
        };
        module.visit(&mut sum);
        let Sum { sums, home, .. } = sum;
        let devices = multi.grads.into_iter().map(|(_, device)| device).collect();
        Self {
            sums,
            homes: Homes { devices, home },
        }
    }
}

impl Homes {
    /// Hands each (masked) gradient back on its home device alone, where `step_multi` finds
    /// it and steps the parameter as it would have.
    fn send_home<M: Module>(self, module: &M, mut grads: GradientsParams) -> MultiGradientsParams {
        struct Send<'a> {
            grads: &'a mut GradientsParams,
            home: &'a HashMap<ParamId, usize>,
            out: &'a mut MultiGradientsParams,
        }
        impl ModuleVisitor for Send<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                if let (Some(&home), Some(grad)) =
                    (self.home.get(&param.id), self.grads.remove::<D>(param.id))
                {
                    self.out.grads[home].0.register::<D>(param.id, grad);
                }
            }
        }
        let mut out = MultiGradientsParams {
            grads: self
                .devices
                .into_iter()
                .map(|device| (GradientsParams::new(), device))
                .collect(),
        };
        module.visit(&mut Send {
            grads: &mut grads,
            home: &self.home,
            out: &mut out,
        });
        out
    }
}

struct MaskGrads<'a> {
    masks: &'a HashMap<ParamId, TensorMask>,
    grads: &'a mut GradientsParams,
    /// With `collect_norms`: each masked gradient's `[‖g‖², ‖kept‖²]`.
    norms: Option<HashMap<ParamId, Tensor<1>>>,
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
        let frozen = matches!(mask, TensorMask::Frozen);
        if frozen && self.norms.is_none() {
            return;
        }
        let (masked, norms_sq) = mask_measured(grad, mask.clone(), self.norms.is_some());
        if !frozen {
            self.grads.register::<D>(param.id, masked);
        }
        if let (Some(norms), Some(norms_sq)) = (&mut self.norms, norms_sq) {
            norms.insert(param.id, norms_sq);
        }
    }
}

/// Previous value and masked gradient of each parameter [`MaskTarget::Update`] holds still.
#[derive(Default)]
struct HeldParams(HashMap<ParamId, (DispatchTensor, DispatchTensor, TensorMask)>);

struct CollectHeld<'a> {
    plans: &'a HashMap<ParamId, TensorMask>,
    grads: &'a GradientsParams,
    held: &'a mut HeldParams,
}

impl ModuleVisitor for CollectHeld<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(mask) = self.plans.get(&param.id)
            && !matches!(mask, TensorMask::Keep)
            && let Some(grad) = self.grads.get::<D>(param.id)
        {
            let previous = param.val().inner().into_dispatch();
            self.held
                .0
                .insert(param.id, (previous, grad.into_dispatch(), mask.clone()));
        }
    }
}

struct RestoreHeld {
    held: HeldParams,
}

/// `updated` with the parameters in `held` put back where the mask held them.
fn restore_held<M: Module>(updated: M, held: Option<HeldParams>) -> M {
    match held {
        Some(held) => updated.map(&mut RestoreHeld { held }),
        None => updated,
    }
}

impl ModuleMapper for RestoreHeld {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some((previous, masked_grad, mask)) = self.held.0.remove(&param.id) else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let checkpointing = tensor.gradient_checkpointing_strategy();
        let distributed = tensor.is_distributed();
        // A sharded step may have moved the parameter to its gradient's device.
        let updated = tensor.inner();
        let previous = Tensor::from_dispatch(previous).to_device(&updated.device());
        let held = hold_masked(updated, previous, Tensor::from_dispatch(masked_grad), mask);
        // Lift the result back with everything burn-optim's `ParameterContext::restore` puts
        // back: checkpointing, require_grad and the distributed flag (without which DDP stops
        // synchronising this parameter's gradient).
        let mut tensor = Tensor::from_inner(held);
        if let Some(strategy) = checkpointing {
            tensor = tensor.with_gradient_checkpointing_strategy(strategy);
        }
        if require_grad {
            tensor = tensor.require_grad();
        }
        if distributed {
            tensor = tensor.set_distributed(id);
        }
        Param::from_mapped_value(id, tensor, mapper)
    }
}
