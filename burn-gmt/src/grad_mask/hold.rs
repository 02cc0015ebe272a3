//! [`MaskTarget::Update`](crate::MaskTarget::Update) for a whole module: before the optimizer
//! steps, each held parameter's previous value and masked gradient are collected; after it,
//! the masked entries are put back.

use std::collections::HashMap;

use burn::backend::DispatchTensor;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

use crate::mask::{TensorMask, hold_masked};

/// The previous value and masked gradient of every parameter that `plans` masks (all but the
/// ones kept whole), to hold them still after the optimizer's step.
pub(super) fn collect_held<M: Module>(
    module: &M,
    plans: &HashMap<ParamId, TensorMask>,
    grads: &GradientsParams,
) -> HeldParams {
    let mut held = HeldParams::default();
    module.visit(&mut CollectHeld {
        plans,
        grads,
        held: &mut held,
    });
    held
}

/// Previous value and masked gradient of each parameter [`MaskTarget::Update`] holds still.
#[derive(Default)]
pub(super) struct HeldParams(HashMap<ParamId, (DispatchTensor, DispatchTensor, TensorMask)>);

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
pub(super) fn restore_held<M: Module>(updated: M, held: Option<HeldParams>) -> M {
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
