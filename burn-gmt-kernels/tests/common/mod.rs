//! What the kernels' integration tests share: the float types under test, a sampler of awkward
//! values, and the GPU under test.

use burn::tensor::{DType, Device, Tensor, bf16, f16};
use burn_gmt_kernels::element::MaskElement;
use burn_gmt_kernels::random::mix64;

/// A float type under test.
pub trait TestFloat: MaskElement + std::fmt::Debug {
    /// `value` rounded to this type.
    fn from_f64(value: f64) -> Self;
    /// The bit pattern, widened.
    fn bits(self) -> u32;
    /// A subnormal magnitude (`k` ulps above zero).
    fn subnormal(k: u64) -> f64;
    /// A NaN picked by `z`: quiet or signalling, either sign, one of several payloads (a
    /// device may change a payload; the key must not).
    fn nan(z: u64) -> Self;
}

impl TestFloat for f32 {
    fn from_f64(value: f64) -> Self {
        value as f32
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
    fn from_f64(value: f64) -> Self {
        f16::from_f64(value)
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
    fn from_f64(value: f64) -> Self {
        bf16::from_f64(value)
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
