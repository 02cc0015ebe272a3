//! `MaskOps` for the Flex CPU backend: the host passes run on Flex's storage directly
//! ([`crate::host_ops`]).

use burn::backend::Flex;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::tensor::Bytes;
use burn_flex::{FlexTensor, Layout};

use crate::element::MaskElement;
use crate::host_ops::{HostAccess, InPlace};
use crate::ops::host_mask_ops;

impl HostAccess<Flex> for InPlace {
    fn with_values<E: MaskElement, R>(tensor: &FlexTensor, f: impl FnOnce(&[E]) -> R) -> R {
        let values = |t: &FlexTensor| {
            let (start, end) = t
                .layout()
                .contiguous_offsets()
                .expect("gradient mask: contiguous tensor");
            f(&t.storage::<E>()[start..end])
        };
        if tensor.layout().contiguous_offsets().is_some() {
            values(tensor)
        } else {
            values(&tensor.to_contiguous())
        }
    }

    fn update_values<E: MaskElement>(tensor: FlexTensor, f: impl FnOnce(&mut [E])) -> FlexTensor {
        // Row-major over exactly its own buffer (a copy only for a strided or offset view);
        // `storage_mut` then writes in place when unique, copy-on-write otherwise.
        let mut out = tensor.to_contiguous();
        drop(tensor);
        f(out.storage_mut::<E>());
        out
    }

    fn map_values<E: MaskElement, R>(
        tensor: FlexTensor,
        f: impl FnOnce(&[E], &mut [E]) -> R,
    ) -> (FlexTensor, R) {
        let shape = tensor.layout().shape().clone();
        let bytes = shape.num_elements() * std::mem::size_of::<E>();
        let mut output = crate::spare::take::<Bytes>(bytes)
            .unwrap_or_else(|| Bytes::from_elems(vec![E::zero(); shape.num_elements()]));
        let out = <Self as HostAccess<Flex>>::with_values::<E, _>(&tensor, |input| {
            f(input, bytemuck::cast_slice_mut(&mut output))
        });
        // The input's buffer, when it was this tensor's alone and exactly its values, is
        // the next output of its size.
        let whole = tensor.layout().contiguous_offsets() == Some((0, shape.num_elements()))
            && tensor.bytes().len() == bytes;
        let input = tensor.data_arc();
        drop(tensor);
        if let (true, Ok(buffer)) = (whole, std::sync::Arc::try_unwrap(input)) {
            crate::spare::give(bytes, buffer);
        }
        let masked = FlexTensor::new(output, Layout::contiguous(shape), E::DTYPE);
        (masked, out)
    }
}

host_mask_ops!(Flex);
