// burn-ndarray is deprecated upstream but still a backend our users run; we keep serving it.
#![allow(deprecated)]

//! `MaskOps` for the NdArray CPU backend: the host passes run on its arrays directly
//! ([`crate::host_ops`]); burn-ndarray stores f32 and f64 floats.

use burn::backend::NdArray;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::tensor::DType;
use burn_ndarray::{NdArrayTensor, SharedArray};

use crate::element::MaskElement;
use crate::host_ops::{HostAccess, InPlace};
use crate::ops::host_mask_ops;

/// `values` seen as `E`, which has their dtype (checked by the caller's dispatch).
fn cast<F: bytemuck::Pod, E: MaskElement>(values: &[F]) -> &[E] {
    bytemuck::cast_slice(values)
}

impl HostAccess<NdArray> for InPlace {
    fn with_values<E: MaskElement, R>(tensor: &NdArrayTensor, f: impl FnOnce(&[E]) -> R) -> R {
        macro_rules! run {
            ($storage:expr) => {{
                let view = $storage.view();
                match view.as_slice() {
                    Some(values) => f(cast(values)),
                    None => f(cast(&view.iter().copied().collect::<Vec<_>>())),
                }
            }};
        }
        match (tensor, E::DTYPE) {
            (NdArrayTensor::F32(storage), DType::F32) => run!(storage),
            (NdArrayTensor::F64(storage), DType::F64) => run!(storage),
            _ => panic!("gradient mask: an NdArray tensor of dtype {:?}", E::DTYPE),
        }
    }

    fn update_values<E: MaskElement>(
        tensor: NdArrayTensor,
        f: impl FnOnce(&mut [E]),
    ) -> NdArrayTensor {
        macro_rules! run {
            ($storage:expr) => {{
                let mut array = $storage.into_owned();
                if !array.is_standard_layout() {
                    array = array.as_standard_layout().into_owned().into_shared();
                }
                // Copy-on-write: in place when this array is the only owner.
                let values = array.as_slice_mut().expect("row-major array");
                f(bytemuck::cast_slice_mut(values));
                NdArrayTensor::from(array)
            }};
        }
        match (tensor, E::DTYPE) {
            (NdArrayTensor::F32(storage), DType::F32) => run!(storage),
            (NdArrayTensor::F64(storage), DType::F64) => run!(storage),
            (_, dtype) => panic!("gradient mask: an NdArray tensor of dtype {dtype:?}"),
        }
    }

    fn map_values<E: MaskElement, R>(
        tensor: NdArrayTensor,
        f: impl FnOnce(&[E], &mut [E]) -> R,
    ) -> (NdArrayTensor, R) {
        macro_rules! run {
            ($variant:ident, $float:ty) => {{
                let NdArrayTensor::$variant(storage) = tensor else {
                    unreachable!("matched below")
                };
                let shape = storage.shape().to_vec();
                let n: usize = shape.iter().product();
                let bytes = n * std::mem::size_of::<$float>();
                let mut output: Vec<$float> =
                    crate::spare::take(bytes).unwrap_or_else(|| vec![0.0; n]);
                let out = {
                    let view = storage.view();
                    let output = bytemuck::cast_slice_mut(&mut output);
                    match view.as_slice() {
                        Some(values) => f(cast(values), output),
                        None => f(cast(&view.iter().copied().collect::<Vec<_>>()), output),
                    }
                };
                // The input's buffer, when this array was its only owner and holds exactly
                // its values, is the next output of its size.
                if storage.is_unique() {
                    let array = storage.into_owned().into_owned();
                    let (values, offset) = array.into_raw_vec_and_offset();
                    if values.len() == n && offset.unwrap_or(0) == 0 {
                        crate::spare::give(bytes, values);
                    }
                }
                let array = SharedArray::<$float>::from_shape_vec(shape, output)
                    .expect("gradient mask: the output has its input's shape");
                (NdArrayTensor::from(array), out)
            }};
        }
        match (&tensor, E::DTYPE) {
            (NdArrayTensor::F32(_), DType::F32) => run!(F32, f32),
            (NdArrayTensor::F64(_), DType::F64) => run!(F64, f64),
            (_, dtype) => panic!("gradient mask: an NdArray tensor of dtype {dtype:?}"),
        }
    }
}

host_mask_ops!(NdArray);
