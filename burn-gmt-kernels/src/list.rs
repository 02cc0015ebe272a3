//! [`GradList`]: any number of float tensors as one argument of a [`MaskOps`](crate::MaskOps)
//! operation, so that one launch can read and write every gradient of a step.
//!
//! Burn 0.22's `#[backend_extension]` takes tensors, tuples of them and
//! `#[derive(ExtensionType)]` structs of fixed fields; a `Vec` of tensors reaches only Burn's
//! own dispatch. `GradList` implements by hand what the derive writes for a struct: Burn's
//! [`ExtensionType`] (the Dispatch layer: wrap each tensor with the operation's backend tag and
//! autodiff context, unwrap it again) and, with the `cube` feature, the Fusion adapter
//! (`ExtensionMetadata` and `FusionValueAdapter`, public but hidden in Burn's docs: a list of
//! tensor specs, one IR input and one output id per tensor, in list order), reusing Burn's own
//! adapter of a single float tensor for each element.

use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Backend, BackendTensor, Dispatch, DispatchAutodiffContext, DispatchTensor, DispatchTensorKind,
    ExtensionType,
};

/// Float tensors of one backend, in order: the gradients a batched [`MaskOps`](crate::MaskOps)
/// operation reads or writes together (on one device, of one dtype).
pub struct GradList<B: Backend> {
    /// The tensors.
    pub tensors: Vec<FloatTensor<B>>,
}

impl<B: Backend> GradList<B> {
    /// A list of `tensors`.
    pub fn new(tensors: Vec<FloatTensor<B>>) -> Self {
        Self { tensors }
    }
}

impl<B: Backend> Clone for GradList<B> {
    fn clone(&self) -> Self {
        Self {
            tensors: self.tensors.clone(),
        }
    }
}

impl<B: Backend> core::fmt::Debug for GradList<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "GradList({} tensors)", self.tensors.len())
    }
}

impl<B: Backend> ExtensionType<B> for GradList<B> {
    type Target = GradList<Dispatch>;

    fn map_to_dispatch<F>(self, map_kind: F, autodiff: DispatchAutodiffContext) -> Self::Target
    where
        F: Fn(BackendTensor<B>) -> DispatchTensorKind,
    {
        GradList::new(
            self.tensors
                .into_iter()
                .map(|tensor| DispatchTensor {
                    kind: map_kind(BackendTensor::Float(tensor)),
                    autodiff,
                })
                .collect(),
        )
    }

    fn map_from_dispatch<F>(target: Self::Target, unwrap_kind: F) -> Self
    where
        F: Fn(DispatchTensor) -> BackendTensor<B>,
    {
        GradList::new(
            target
                .tensors
                .into_iter()
                .map(|tensor| unwrap_kind(tensor).float())
                .collect(),
        )
    }

    fn routing_tensor(target: &Self::Target) -> Option<&DispatchTensor> {
        target.tensors.first()
    }

    fn routing_float_tensor(target: &Self::Target) -> Option<&DispatchTensor> {
        target.tensors.first()
    }

    fn autodiff_context(target: &Self::Target) -> DispatchAutodiffContext {
        target
            .tensors
            .iter()
            .fold(DispatchAutodiffContext::Disabled, |context, tensor| {
                context.merge(tensor.autodiff)
            })
    }
}

#[cfg(feature = "cube")]
mod fusion {
    use burn::backend::fusion::custom::{
        ExtensionMetadata, Float, FusionValueAdapter, HandleContainer, OutputTensor, TensorId,
        TensorIr, TensorSpec,
    };
    use burn::backend::fusion::{
        ExecutionError, Fusion, FusionBackend, FusionRuntime, FusionTensor,
    };

    use super::GradList;
    use burn::backend::Backend;

    type Handles<B> =
        HandleContainer<<<B as FusionBackend>::FusionRuntime as FusionRuntime>::FusionHandle>;

    impl<B: Backend> ExtensionMetadata for GradList<B> {
        type Metadata = Vec<TensorSpec>;
        type Input = Vec<TensorIr>;
        type Output = Vec<OutputTensor>;
    }

    /// Every method is Burn's float-tensor adapter ([`Float`]) over the list, in order.
    impl<B: FusionBackend> FusionValueAdapter<B> for GradList<B> {
        type Metadata = Vec<TensorSpec>;
        type Input = Vec<TensorIr>;
        type Output = Vec<OutputTensor>;
        type Inner = Self;
        type Fused = GradList<Fusion<B>>;

        fn to_metadata(value: &Self::Fused) -> Self::Metadata {
            value
                .tensors
                .iter()
                .map(<Float as FusionValueAdapter<B>>::to_metadata)
                .collect()
        }

        fn visit_fused_tensors(
            value: &Self::Fused,
            visit: &mut impl FnMut(&FusionTensor<B::FusionRuntime>),
        ) {
            value.tensors.iter().for_each(visit);
        }

        fn tensor_count(meta: &Self::Metadata) -> usize {
            meta.len()
        }

        fn append_input_ir(value: Self::Fused, inputs: &mut Vec<TensorIr>) -> Self::Input {
            value
                .tensors
                .into_iter()
                .map(|tensor| <Float as FusionValueAdapter<B>>::append_input_ir(tensor, inputs))
                .collect()
        }

        fn resolve_inputs(input: &Self::Input, handles: &mut Handles<B>) -> Self::Inner {
            GradList::new(
                input
                    .iter()
                    .map(|ir| <Float as FusionValueAdapter<B>>::resolve_inputs(ir, handles))
                    .collect(),
            )
        }

        fn append_output_ir(
            meta: &Self::Metadata,
            out: &mut Vec<TensorIr>,
            create: &mut impl FnMut() -> TensorId,
        ) -> Self::Output {
            meta.iter()
                .map(|spec| <Float as FusionValueAdapter<B>>::append_output_ir(spec, out, create))
                .collect()
        }

        fn validate_outputs(
            value: &Self::Inner,
            output: &Self::Output,
            device: Option<&B::Device>,
        ) -> Result<(), ExecutionError> {
            if value.tensors.len() != output.len() {
                return Err(ExecutionError::generic(format!(
                    "gradient mask: {} tensors returned where {} were described",
                    value.tensors.len(),
                    output.len()
                )));
            }
            value
                .tensors
                .iter()
                .zip(output)
                .try_for_each(|(tensor, out)| {
                    <Float as FusionValueAdapter<B>>::validate_outputs(tensor, out, device)
                })
        }

        fn register_output_handles(
            value: Self::Inner,
            output: &Self::Output,
            handles: &mut Handles<B>,
        ) {
            for (tensor, out) in value.tensors.into_iter().zip(output) {
                <Float as FusionValueAdapter<B>>::register_output_handles(tensor, out, handles);
            }
        }

        fn build_fused_output(
            meta: &Self::Metadata,
            tensors: &mut std::vec::IntoIter<FusionTensor<B::FusionRuntime>>,
        ) -> Self::Fused {
            GradList::new(
                meta.iter()
                    .map(|spec| <Float as FusionValueAdapter<B>>::build_fused_output(spec, tensors))
                    .collect(),
            )
        }
    }
}
