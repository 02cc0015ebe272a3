//! What burn-gmt's integration tests share: the devices and float types under test, a sampler
//! of awkward values, and an independent host reference of the mask.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::optim::GradientsParams;
use burn::tensor::{DType, Device, Tensor, TensorData, bf16, f16};
use burn_gmt_kernels::element::MaskElement;
use burn_gmt_kernels::random::mix64;

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

/// A float dtype under test, chosen at run time; each method is [`TestFloat`]'s for the type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Float {
    F32,
    F16,
    BF16,
}

/// Runs `$body` with `$E` the element type of `$float`.
macro_rules! with_float {
    ($float:expr, $E:ident => $body:expr) => {
        match $float {
            Float::F32 => {
                type $E = f32;
                $body
            }
            Float::F16 => {
                type $E = f16;
                $body
            }
            Float::BF16 => {
                type $E = bf16;
                $body
            }
        }
    };
}

impl Float {
    pub fn dtype(self) -> DType {
        with_float!(self, E => E::DTYPE)
    }

    /// `value` rounded to this type, back in f64 (exact).
    pub fn round(self, value: f64) -> f64 {
        with_float!(self, E => E::from_f64(value).to_f64())
    }

    /// Host data of this type holding `values` (each already representable).
    pub fn data(self, values: &[f64], shape: Vec<usize>) -> TensorData {
        with_float!(self, E => {
            TensorData::new(values.iter().map(|&v| E::from_f64(v)).collect::<Vec<E>>(), shape)
        })
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
        with_float!(self, E => E::from_f64(value).bits() as u64)
    }

    /// NaN bit patterns of this type: quiet and signalling, both signs, several payloads.
    pub fn nan_bits(self) -> Vec<u64> {
        let (width, mantissa) = with_float!(self, E => (E::KEY_BITS, E::MANTISSA_BITS));
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
        let data = with_float!(self, E => {
            TensorData::new(bits.iter().map(|&b| <E as TestFloat>::from_bits(b)).collect::<Vec<E>>(), vec![bits.len()])
        });
        Tensor::from_data(data, (device, self.dtype()))
    }

    /// The bit patterns a tensor of this type holds.
    pub fn bits_of(self, tensor: Tensor<1>) -> Vec<u64> {
        let data = tensor.into_data();
        with_float!(self, E => {
            data.try_to_vec::<E>().unwrap().iter().map(|x| x.bits() as u64).collect()
        })
    }
}

/// A float type under test.
pub trait TestFloat: MaskElement + std::fmt::Debug {
    /// Bits of the stored mantissa.
    const MANTISSA_BITS: u32;
    /// `value` rounded to this type.
    fn from_f64(value: f64) -> Self;
    /// The bit pattern, widened.
    fn bits(self) -> u32;
    /// The value of a bit pattern of this type.
    fn from_bits(bits: u64) -> Self;
    /// A subnormal magnitude (`k` ulps above zero).
    fn subnormal(k: u64) -> f64;
    /// A NaN picked by `z`: quiet or signalling, either sign, one of several payloads (a
    /// device may change a payload; the key must not).
    fn nan(z: u64) -> Self;
}

impl TestFloat for f32 {
    const MANTISSA_BITS: u32 = 23;
    fn from_f64(value: f64) -> Self {
        value as f32
    }
    fn from_bits(bits: u64) -> Self {
        f32::from_bits(bits as u32)
    }
    fn bits(self) -> u32 {
        self.to_bits()
    }
    fn subnormal(k: u64) -> f64 {
        f32::from_bits(k as u32) as f64
    }
    fn nan(z: u64) -> Self {
        let payload = [1 << 22, 1, (1 << 23) - 1, 0b101][(z % 4) as usize];
        let sign = if z & 4 == 0 { 0 } else { 1 << 31 };
        f32::from_bits(sign | 0x7F80_0000 | payload)
    }
}

impl TestFloat for f16 {
    const MANTISSA_BITS: u32 = 10;
    fn from_f64(value: f64) -> Self {
        f16::from_f64(value)
    }
    fn from_bits(bits: u64) -> Self {
        f16::from_bits(bits as u16)
    }
    fn bits(self) -> u32 {
        self.to_bits() as u32
    }
    fn subnormal(k: u64) -> f64 {
        f16::from_bits(k as u16).to_f64()
    }
    fn nan(z: u64) -> Self {
        let payload = [1 << 9, 1, (1 << 10) - 1, 0b101][(z % 4) as usize];
        let sign = if z & 4 == 0 { 0 } else { 1 << 15 };
        f16::from_bits(sign | 0x7C00 | payload)
    }
}

impl TestFloat for bf16 {
    const MANTISSA_BITS: u32 = 7;
    fn from_f64(value: f64) -> Self {
        bf16::from_f64(value)
    }
    fn from_bits(bits: u64) -> Self {
        bf16::from_bits(bits as u16)
    }
    fn bits(self) -> u32 {
        self.to_bits() as u32
    }
    fn subnormal(k: u64) -> f64 {
        bf16::from_bits(k as u16).to_f64()
    }
    fn nan(z: u64) -> Self {
        let payload = [1 << 6, 1, (1 << 7) - 1, 0b101][(z % 4) as usize];
        let sign = if z & 4 == 0 { 0 } else { 1 << 15 };
        bf16::from_bits(sign | 0x7F80 | payload)
    }
}

/// `n` values with many zeros (both signs), ties, subnormals, NaN of several payloads and
/// ±inf, and magnitudes over many binades.
pub fn sample<E: TestFloat>(n: usize, seed: u64) -> Vec<E> {
    (0..n as u64)
        .map(|i| {
            let z = mix64(seed.wrapping_mul(0x9E37_79B9) ^ i);
            let sign = if z & (1 << 63) == 0 { 1.0 } else { -1.0 };
            let v = match z % 16 {
                0 => 0.0,
                1 => -0.0,
                2 => 0.25 * sign,
                3 => 1.5 * sign,
                4 => E::subnormal(1 + (z >> 20) % 1000) * sign,
                5 if i % 97 == 0 => return E::nan(z >> 8),
                6 if i % 89 == 0 => f64::INFINITY * sign,
                _ => {
                    let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
                    sign * unit * (2.0f64).powi(-(((z >> 4) % 24) as i32))
                }
            };
            E::from_f64(v)
        })
        .collect()
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
#[cfg(any(feature = "wgpu", feature = "cuda", feature = "rocm"))]
pub fn has_dtype(device: &Device, dtype: DType, test: &str) -> bool {
    let has = device.supports_dtype(dtype);
    if !has {
        println!("skipped: {test}, {dtype:?} cases (the device has no {dtype:?})");
    }
    has
}

/// Uniform in `[-scale, scale)`, from a counter.
pub fn uniform(seed: u64, i: u64, scale: f32) -> f32 {
    ((burn_gmt_kernels::random::mix64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i) >> 40) as f32
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
