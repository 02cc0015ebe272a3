//! Shared test helpers: the devices under test and an independent host reference of the mask.
#![allow(dead_code)]

pub mod learner;

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::Linear;
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

    /// The bit pattern of `value` (already representable) in this type.
    pub fn bits(self, value: f64) -> u64 {
        match self {
            Float::F32 => (value as f32).to_bits() as u64,
            Float::F16 => f16::from_f64(value).to_bits() as u64,
            Float::BF16 => bf16::from_f64(value).to_bits() as u64,
        }
    }

    /// NaN bit patterns of this type: quiet and signalling, both signs, several payloads.
    pub fn nan_bits(self) -> Vec<u64> {
        let (width, mantissa) = match self {
            Float::F32 => (32, 23),
            Float::F16 => (16, 10),
            Float::BF16 => (16, 7),
        };
        let exponent = ((1u64 << (width - 1 - mantissa)) - 1) << mantissa;
        let quiet = 1u64 << (mantissa - 1);
        let all = (1u64 << mantissa) - 1;
        [quiet, 1, quiet | 1, all, quiet | 2, all ^ quiet]
            .into_iter()
            .flat_map(|payload| [0, 1u64 << (width - 1)].map(|sign| sign | exponent | payload))
            .collect()
    }

    /// A tensor holding these bit patterns.
    pub fn tensor_of_bits(self, bits: &[u64], device: &Device) -> Tensor<1> {
        let shape = vec![bits.len()];
        let data = match self {
            Float::F32 => TensorData::new(
                bits.iter().map(|&b| f32::from_bits(b as u32)).collect(),
                shape,
            ),
            Float::F16 => TensorData::new(
                bits.iter().map(|&b| f16::from_bits(b as u16)).collect(),
                shape,
            ),
            Float::BF16 => TensorData::new(
                bits.iter().map(|&b| bf16::from_bits(b as u16)).collect(),
                shape,
            ),
        };
        Tensor::from_data(data, (device, self.dtype()))
    }

    /// The bit patterns a tensor of this type holds.
    pub fn bits_of(self, tensor: Tensor<1>) -> Vec<u64> {
        let data = tensor.into_data();
        match self {
            Float::F32 => data.iter::<f32>().map(|x| x.to_bits() as u64).collect(),
            Float::F16 => data
                .try_to_vec::<f16>()
                .unwrap()
                .iter()
                .map(|x| x.to_bits() as u64)
                .collect(),
            Float::BF16 => data
                .try_to_vec::<bf16>()
                .unwrap()
                .iter()
                .map(|x| x.to_bits() as u64)
                .collect(),
        }
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

/// Uniform in `[-scale, scale)`, from a counter.
pub fn uniform(seed: u64, i: u64, scale: f32) -> f32 {
    ((burn_gmt::kernels::random::mix64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i) >> 40) as f32
        / (1 << 24) as f32
        * 2.0
        - 1.0)
        * scale
}

/// A linear layer with seeded weights (Burn's RNG is shared by the tests running in parallel).
pub fn seeded_linear(d_in: usize, d_out: usize, seed: u64, device: &Device) -> Linear {
    let scale = 1.0 / (d_in as f32).sqrt();
    let values = |seed, n: usize| (0..n as u64).map(|i| uniform(seed, i, scale)).collect();
    let weight: Vec<f32> = values(seed, d_in * d_out);
    let bias: Vec<f32> = values(seed + 1, d_out);
    Linear {
        weight: Param::from_data(TensorData::new(weight, [d_in, d_out]), device),
        bias: Some(Param::from_data(TensorData::new(bias, [d_out]), device)),
    }
}

/// Every float parameter of `module`, in module order, as f64 (exact).
pub fn param_values<M: Module>(module: &M) -> Vec<Vec<f64>> {
    struct Read(Vec<Vec<f64>>);
    impl ModuleVisitor for Read {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(values(param.val()));
        }
    }
    let mut read = Read(Vec::new());
    module.visit(&mut read);
    read.0
}

/// The three strategies: GMT, the random mask (rescaled) and HFT, seeded with `seed`.
pub fn strategies(seed: u64, stage_steps: u64) -> [burn_gmt::MaskStrategy; 3] {
    use burn_gmt::MaskStrategy;
    [
        MaskStrategy::Magnitude,
        MaskStrategy::Random {
            seed,
            rescale: true,
        },
        MaskStrategy::Hft { seed, stage_steps },
    ]
}
