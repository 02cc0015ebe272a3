//! `MaskOps` on the CubeCL backend (wgpu, Vulkan, Metal, WebGPU, CUDA, ROCm): fused threshold
//! kernels for masking and holding parameters; selection (histograms) and the random mask use
//! the host fallback for now.

mod threshold;

use burn::backend::TensorMetadata;
use burn::backend::tensor::FloatTensor;
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;

use crate::ops::MaskOps;

/// A contiguous tensor this call may write to: the input itself when nothing else holds it,
/// a copy otherwise.
fn writable(tensor: CubeTensor) -> CubeTensor {
    let tensor = into_contiguous(tensor);
    if tensor.can_mut() {
        tensor
    } else {
        tensor.copy()
    }
}

impl MaskOps for CubeBackend {
    fn abs_threshold_mask(
        grad: FloatTensor<Self>,
        threshold: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        assert_eq!(
            grad.dtype, threshold.dtype,
            "gradient mask: threshold dtype"
        );
        let len = grad.shape().num_elements();
        let values = writable(grad);
        if len > 0 {
            threshold::launch_abs_threshold_mask(&values, into_contiguous(threshold), len);
        }
        values
    }

    fn abs_threshold_select(
        grad: FloatTensor<Self>,
        threshold: FloatTensor<Self>,
        updated: FloatTensor<Self>,
        previous: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let len = updated.shape().num_elements();
        assert!(
            grad.shape().num_elements() == len && previous.shape().num_elements() == len,
            "gradient mask: gradient, updated and previous values must have one shape"
        );
        assert!(
            grad.dtype == updated.dtype && previous.dtype == updated.dtype,
            "gradient mask: dtypes"
        );
        let out = writable(updated);
        if len > 0 {
            threshold::launch_abs_threshold_select(
                into_contiguous(grad),
                into_contiguous(threshold),
                &out,
                into_contiguous(previous),
                len,
            );
        }
        out
    }
}
