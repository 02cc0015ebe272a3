//! Deciding a step's mask: one [`Plan`] per parameter tensor, for every strategy and scope.
//! [`GradMask`](crate::GradMask) plans a whole module ([`plan_step`]: each parameter group with
//! its own ratio and scope); the optimizer wrapper plans its one tensor as the one-entry case
//! of the same [`plan`].

use burn::backend::{DispatchTensor, TensorMetadata};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn_gmt_kernels::random::{draw, draw_key, mix64, ratio_bound};

use crate::config::{GradMaskConfig, MaskScope, MaskStrategy};
use crate::error::GradMaskError;
use crate::mask::TensorMask;
use crate::select::masked_count;
use burn_gmt_kernels::mask::{self as kernels, PendingStats, SharedThreshold};

/// A decided mask with the statistics that came with deciding it.
pub(crate) struct Plan {
    pub mask: TensorMask,
    /// Collected statistics, possibly still on the device; for a
    /// [`TensorMask::Smallest`], none yet: they come when it is applied
    /// ([`Applied::stats`](crate::mask::Applied::stats)).
    pub stats: Option<PendingStats>,
    /// For a [`TensorMask::Below`] selected with other gradients on a device: its threshold
    /// as an entry of their threshold tensor, so the masks of the batch can be one call.
    pub shared: Option<SharedThreshold>,
}

/// One parameter tensor to plan.
pub(crate) struct PlanEntry<'a> {
    pub grad: &'a DispatchTensor,
    /// The parameter's module path (HFT's units and categories); empty where unknown.
    pub path: &'a str,
    /// The parameter's random draw stream.
    pub stream: u64,
    /// The first of the config's groups the parameter belongs to, if any.
    pub group: Option<usize>,
}

/// What [`visit_with_paths`] shows each float parameter to, with its module path
/// (`blocks.0.attn.q.weight`).
pub(crate) trait VisitWithPath {
    /// Sees `param`, whose module path is `path`.
    fn visit_float<const D: usize>(&mut self, path: String, param: &Param<Tensor<D>>);
}

/// Runs `visitor` over the float parameters of `module`, each with its module path: the one
/// place that turns Burn's module walk into paths, for the statistics' names and the masks'
/// groups alike.
pub(crate) fn visit_with_paths<M: Module, V: VisitWithPath>(module: &M, visitor: &mut V) {
    struct Paths<'a, V> {
        path: Vec<String>,
        visitor: &'a mut V,
    }
    impl<V: VisitWithPath> ModuleVisitor for Paths<'_, V> {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.visitor.visit_float(self.path.join("."), param);
        }
    }
    module.visit(&mut Paths {
        path: Vec::new(),
        visitor,
    });
}

/// A stable 64-bit key of a module path: the random draw stream of a parameter, or the HFT
/// draw of a layer. Paths are the same in every clone, replica and run of a model (a
/// `ParamId` is drawn afresh each time a model is built).
pub(crate) fn path_key(path: &str) -> u64 {
    mix64(path.bytes().fold(0u64, |h, b| mix64(h ^ b as u64)))
}

/// The plans of every entry at `step`, each group of parameters (and the rest) with its own
/// ratio and scope, in entry order.
pub(crate) fn plan_step(
    config: &GradMaskConfig,
    entries: &[PlanEntry],
    step: u64,
) -> Result<Vec<Plan>, GradMaskError> {
    let mut plans: Vec<Option<Plan>> = entries.iter().map(|_| None).collect();
    let groups = std::iter::once(None).chain((0..config.groups.len()).map(Some));
    for group in groups {
        let (members, subset): (Vec<usize>, Vec<&PlanEntry>) = entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.group == group)
            .unzip();
        if members.is_empty() {
            continue;
        }
        let (ratio, scope) = match group {
            None => (config.ratio_at(step), config.scope),
            Some(g) => (
                config.group_ratio_at(g, step),
                config.groups[g].scope.unwrap_or(config.scope),
            ),
        };
        let decided = plan(
            config.strategy,
            scope,
            ratio,
            &subset,
            step,
            config.collect_stats,
        )?;
        for (i, plan) in members.into_iter().zip(decided) {
            plans[i] = Some(plan);
        }
    }
    Ok(plans
        .into_iter()
        .map(|p| p.expect("every entry is in one group"))
        .collect())
}

/// The plans of `entries` under one strategy, scope and ratio at `step`, in entry order.
///
/// # Errors
/// A global threshold over gradients of several dtypes.
pub(crate) fn plan(
    strategy: MaskStrategy,
    scope: MaskScope,
    ratio: f64,
    entries: &[&PlanEntry],
    step: u64,
    collect: bool,
) -> Result<Vec<Plan>, GradMaskError> {
    let grads = || entries.iter().map(|e| e.grad.clone()).collect::<Vec<_>>();
    match (strategy, scope) {
        (MaskStrategy::Magnitude, MaskScope::Global) => plan_global(&grads(), ratio, collect),
        (MaskStrategy::Magnitude, MaskScope::PerTensor) => {
            Ok(plan_magnitude(&grads(), ratio, collect))
        }
        (MaskStrategy::Random { seed, rescale }, _) => Ok(entries
            .iter()
            .map(|e| plan_random(e.grad, seed, rescale, ratio, e.stream, step, collect))
            .collect()),
        (MaskStrategy::Hft { seed, stage_steps }, _) => {
            Ok(plan_hft(entries, ratio, seed, step / stage_steps, collect))
        }
    }
}

/// One threshold over every gradient, selected over all of them together
/// ([`kernels::select_abs`]): no concatenation.
fn plan_global(
    grads: &[DispatchTensor],
    ratio: f64,
    collect: bool,
) -> Result<Vec<Plan>, GradMaskError> {
    let Some(dtype) = grads.first().map(|g| g.dtype()) else {
        return Ok(Vec::new());
    };
    if grads.iter().any(|g| g.dtype() != dtype) {
        return Err(GradMaskError::Unsupported {
            field: "scope",
            value: "MaskScope::Global".into(),
            reason: "a global threshold needs every masked gradient in one dtype; mark the others `unmasked` or use MaskScope::PerTensor",
        });
    }
    let total = grads.iter().map(|g| g.shape().num_elements() as u64).sum();
    let rank = masked_count(ratio, total);
    if rank == 0 {
        let stats = collect.then(|| kernels::count_unselected(grads, false));
        return Ok((0..grads.len())
            .map(|i| Plan {
                mask: TensorMask::Keep,
                stats: stats.as_ref().map(|s| s[i].clone()),
                shared: None,
            })
            .collect());
    }
    let selection = kernels::select_abs(grads, rank, collect);
    Ok((0..grads.len())
        .map(|i| Plan {
            mask: TensorMask::Below {
                threshold: selection.thresholds[i].clone(),
            },
            stats: selection.stats.as_ref().map(|s| s[i].clone()),
            shared: selection.shared[i].clone(),
        })
        .collect())
}

/// The magnitude masks of `grads`, each with its own threshold (per-tensor scope). A gradient
/// its backend masks in one read-write pass ([`kernels::masks_in_one_pass`]) gets a
/// [`TensorMask::Smallest`], selected as it is masked (its statistics come then); the others'
/// selections are made together ([`kernels::select_abs_each`]: on a GPU the steps that read no
/// gradient are one launch for all of them). A tensor too small for `ratio` (rank 0) keeps
/// its gradient.
fn plan_magnitude(grads: &[DispatchTensor], ratio: f64, collect: bool) -> Vec<Plan> {
    let ranks: Vec<u64> = grads
        .iter()
        .map(|g| masked_count(ratio, g.shape().num_elements() as u64))
        .collect();
    let one_pass: Vec<bool> = grads.iter().map(kernels::masks_in_one_pass).collect();
    let (selected, selected_ranks): (Vec<DispatchTensor>, Vec<u64>) = grads
        .iter()
        .zip(&ranks)
        .zip(&one_pass)
        .filter(|((_, rank), one_pass)| **rank > 0 && !**one_pass)
        .map(|((g, &rank), _)| (g.clone(), rank))
        .unzip();
    let selection = kernels::select_abs_each(&selected, &selected_ranks, collect);
    let mut thresholds = selection.thresholds.into_iter();
    let mut stats = selection.stats.map(|s| s.into_iter());
    let mut shared = selection.shared.into_iter();
    grads
        .iter()
        .zip(ranks)
        .zip(one_pass)
        .map(|((grad, rank), one_pass)| match (rank, one_pass) {
            (0, _) => plan_frozen(grad, false, collect),
            (rank, true) => Plan {
                mask: TensorMask::Smallest { rank },
                stats: None,
                shared: None,
            },
            (_, false) => Plan {
                mask: TensorMask::Below {
                    threshold: thresholds
                        .next()
                        .expect("a threshold per selected gradient"),
                },
                stats: stats
                    .as_mut()
                    .map(|s| s.next().expect("statistics per selected gradient")),
                shared: shared
                    .next()
                    .expect("a shared threshold or none per gradient"),
            },
        })
        .collect()
}

/// The random mask of one tensor: finite entries drawn under the parameter's `stream` and
/// `step` are masked, the kept ones rescaled by `1 / (1 - ratio)` with `rescale`.
fn plan_random(
    grad: &DispatchTensor,
    seed: u64,
    rescale: bool,
    ratio: f64,
    stream: u64,
    step: u64,
    collect: bool,
) -> Plan {
    let key = draw_key(seed, stream, step);
    let bound = ratio_bound(ratio);
    let scale = if rescale && ratio > 0.0 {
        1.0 / (1.0 - ratio)
    } else {
        1.0
    };
    let mask = if ratio > 0.0 {
        TensorMask::Random { key, bound, scale }
    } else {
        TensorMask::Keep
    };
    // Counted on the device, read with the rest of the step's statistics.
    let stats = collect.then(|| kernels::count_random(grad, key, bound));
    Plan {
        mask,
        stats,
        shared: None,
    }
}

/// The module path a parameter or module path sits in (`""` at the root).
fn parent_path(path: &str) -> &str {
    path.rsplit_once('.').map_or("", |(parent, _)| parent)
}

/// HFT ([`MaskStrategy::Hft`]): the units (modules holding parameters) sharing a parent
/// module form a category; in each category `ratio` of the units are frozen, a count rounded
/// stochastically so its expectation is exact, drawn per category and stage.
fn plan_hft(entries: &[&PlanEntry], ratio: f64, seed: u64, stage: u64, collect: bool) -> Vec<Plan> {
    // Category path -> its units, in module order.
    let mut categories: Vec<(&str, Vec<&str>)> = Vec::new();
    for entry in entries {
        let unit = parent_path(entry.path);
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
        .map(|e| plan_frozen(e.grad, frozen_units.contains(parent_path(e.path)), collect))
        .collect()
}

/// The plan of a tensor masked again as an earlier step decided (`reselect_every`): the same
/// threshold (of value `value`, when known), its statistics counted anew.
pub(crate) fn plan_reused(
    grad: &DispatchTensor,
    mask: TensorMask,
    value: Option<f64>,
    collect: bool,
) -> Plan {
    let stats = collect.then(|| match &mask {
        TensorMask::Below { threshold } => kernels::count_below(grad, threshold, value),
        _ => kernels::count_unselected(std::slice::from_ref(grad), false).remove(0),
    });
    Plan {
        mask,
        stats,
        shared: None,
    }
}

/// The plan of a tensor frozen (every finite entry counted as masked) or left whole.
fn plan_frozen(grad: &DispatchTensor, frozen: bool, collect: bool) -> Plan {
    let stats =
        collect.then(|| kernels::count_unselected(std::slice::from_ref(grad), frozen).remove(0));
    match frozen {
        true => Plan {
            mask: TensorMask::Frozen,
            stats: stats.map(|s| s.with_threshold(f64::INFINITY)),
            shared: None,
        },
        false => Plan {
            mask: TensorMask::Keep,
            stats,
            shared: None,
        },
    }
}
