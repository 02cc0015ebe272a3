//! `MaskOps` for the Flex CPU backend: the host passes run on Flex's storage directly
//! ([`crate::host_ops`]).

use burn::backend::Flex;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn_flex::FlexTensor;

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
}

host_mask_ops!(Flex);
