//! Shared test helpers: the devices under test and an independent host reference of the mask.
#![allow(dead_code)]

use burn::module::{Module, Param};
use burn::optim::GradientsParams;
use burn::tensor::{DType, Device, Tensor, TensorData, bf16, f16};

/// Every CPU device compiled in.
pub fn devices() -> Vec<Device> {
    // burn-ndarray is deprecated upstream, but our users still run it.
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)]
    let ndarray = Some(Device::ndarray());
    #[cfg(not(feature = "ndarray"))]
    let ndarray = None;
    std::iter::once(Device::flex()).chain(ndarray).collect()
}

/// The CPU devices that store `float` (burn-ndarray has no f16 or bf16 storage).
pub fn devices_for(float: Float) -> Vec<Device> {
    devices()
        .into_iter()
        .filter(|d| float == Float::F32 || !format!("{d:?}").to_lowercase().contains("ndarray"))
        .collect()
}

/// A float dtype under test, with exact conversions from and to f64.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Float {
    F32,
    F16,
    BF16,
}

impl Float {
    pub fn dtype(self) -> DType {
        match self {
            Float::F32 => DType::F32,
            Float::F16 => DType::F16,
            Float::BF16 => DType::BF16,
        }
    }

    /// `value` rounded to this type, back in f64 (exact).
    pub fn round(self, value: f64) -> f64 {
        match self {
            Float::F32 => value as f32 as f64,
            Float::F16 => f16::from_f64(value).to_f64(),
            Float::BF16 => bf16::from_f64(value).to_f64(),
        }
    }

    /// Host data of this type holding `values` (each already representable).
    pub fn data(self, values: &[f64], shape: Vec<usize>) -> TensorData {
        match self {
            Float::F32 => TensorData::new(values.iter().map(|&v| v as f32).collect(), shape),
            Float::F16 => {
                TensorData::new(values.iter().map(|&v| f16::from_f64(v)).collect(), shape)
            }
            Float::BF16 => {
                TensorData::new(values.iter().map(|&v| bf16::from_f64(v)).collect(), shape)
            }
        }
    }

    pub fn tensor<const D: usize>(
        self,
        values: &[f64],
        shape: [usize; D],
        device: &Device,
    ) -> Tensor<D> {
        Tensor::from_data(self.data(values, shape.to_vec()), (device, self.dtype()))
    }
}

/// The values of a tensor in f64 (exact for every float dtype under test).
pub fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f64> {
    tensor.into_data().iter::<f64>().collect()
}

/// Reference mask of one scope, by a plain sort on the host in f64: with k = floor(r·n) and T
/// the (k+1)-th smallest |g| (NaN above +inf, T at most +inf), finite entries with |g| < T are
/// zeroed. Returns (masked values, number masked, T if k > 0).
pub fn reference_mask(values: &[f64], ratio: f64) -> (Vec<f64>, u64, Option<f64>) {
    let n = values.len();
    let k = (ratio * n as f64).floor() as usize;
    if k == 0 || n == 0 {
        return (values.to_vec(), 0, None);
    }
    let mut magnitudes: Vec<f64> = values
        .iter()
        .map(|v| if v.is_nan() { f64::NAN } else { v.abs() })
        .collect();
    magnitudes.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        (false, false) => a.partial_cmp(b).unwrap(),
    });
    let threshold = if magnitudes[k].is_nan() {
        f64::INFINITY
    } else {
        magnitudes[k]
    };
    let mut masked = 0;
    let out = values
        .iter()
        .map(|&v| {
            if v.is_finite() && v.abs() < threshold {
                masked += 1;
                0.0
            } else {
                v
            }
        })
        .collect();
    (out, masked, Some(threshold))
}

/// Bitwise equality of f64 vectors, NaN equal to NaN.
pub fn assert_same(actual: &[f64], expected: &[f64], context: &str) {
    assert_eq!(actual.len(), expected.len(), "{context}: length");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        let same = (a.is_nan() && e.is_nan()) || a.to_bits() == e.to_bits();
        assert!(same, "{context}: entry {i}: got {a:e}, expected {e:e}");
    }
}

/// A module with one parameter per rank, for exercising the module walk.
#[derive(Module, Debug)]
pub struct Params {
    pub vector: Param<Tensor<1>>,
    pub matrix: Param<Tensor<2>>,
    pub cube: Param<Tensor<3>>,
}

/// One-parameter module.
#[derive(Module, Debug)]
pub struct Single {
    pub weight: Param<Tensor<1>>,
}

impl Single {
    pub fn new(len: usize, float: Float, device: &Device) -> Self {
        Self {
            weight: Param::from_tensor(float.tensor(&vec![0.0; len], [len], device)),
        }
    }
}

/// Gradients holding `grad` for the single parameter.
pub fn grads_for(module: &Single, grad: Tensor<1>) -> GradientsParams {
    let mut grads = GradientsParams::new();
    grads.register(module.weight.id, grad);
    grads
}

/// The GPU under test: CUDA or ROCm when compiled in (the GPU check), else wgpu (Mesa's
/// lavapipe in CI). `None`, after saying `skipped: <test> (...)`, when the device is missing;
/// with `GMT_REQUIRE_GPU=1`, or `GMT_REQUIRE_WGPU=1` for wgpu (set by `.ci/run`), a missing
/// device fails the test instead.
#[cfg(any(feature = "wgpu", feature = "cuda", feature = "rocm"))]
pub fn gpu_device(test: &str) -> Option<Device> {
    #[cfg(feature = "cuda")]
    let (name, make): (&str, fn() -> Device) = ("cuda", || Device::cuda(0));
    #[cfg(all(feature = "rocm", not(feature = "cuda")))]
    let (name, make): (&str, fn() -> Device) = ("rocm", || Device::rocm(0));
    #[cfg(not(any(feature = "cuda", feature = "rocm")))]
    let (name, make): (&str, fn() -> Device) = ("wgpu", || Device::wgpu(Default::default()));
    let probe = std::panic::catch_unwind(|| {
        let device = make();
        let t = Tensor::<1>::from_floats([1.0, 2.0], &device);
        let _ = t.sum().into_scalar::<f32>();
        device
    });
    let required = |var: &str| std::env::var(var).as_deref() == Ok("1");
    match probe {
        Ok(device) => Some(device),
        Err(_)
            if required("GMT_REQUIRE_GPU") || (name == "wgpu" && required("GMT_REQUIRE_WGPU")) =>
        {
            panic!("{test}: no {name} device, and the GPU tests are required")
        }
        Err(_) => {
            println!("skipped: {test} (no {name} device)");
            None
        }
    }
}

/// Whether `device` computes in `dtype`; when it does not, says that `test` skips those cases.
pub fn has_dtype(device: &Device, dtype: DType, test: &str) -> bool {
    let has = device.supports_dtype(dtype);
    if !has {
        println!("skipped: {test}, {dtype:?} cases (the device has no {dtype:?})");
    }
    has
}
