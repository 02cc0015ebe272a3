//! What the root package's integration tests share (burn-train, distributed and cross-backend
//! training): the devices under test, an independent host reference of the mask, seeded
//! layers, and a headless burn-train harness. burn-gmt's and the kernels' own integration tests
//! keep theirs in their `tests/common`, as they cannot depend on this crate's burn-gmt.

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};
use burn::train::LearnerSummary;
use burn::train::logger::{EvaluationProgressLogger, TrainingProgressLogger};
use burn::train::metric::MetricDefinition;
use burn::train::renderer::{
    EvaluationName, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining,
};

use crate::hash::stable_hash;

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

/// Uniform in `[-scale, scale)`, from a counter.
pub fn uniform(seed: u64, i: u64, scale: f32) -> f32 {
    ((stable_hash(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i) >> 40) as f32 / (1 << 24) as f32
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

/// Renders nothing: the tests run headless, with no terminal and no stdin.
pub struct Quiet;

impl MetricsRendererTraining for Quiet {
    fn update_train(&mut self, _state: MetricState) {}
    fn update_valid(&mut self, _state: MetricState) {}
    fn on_train_end(
        &mut self,
        _summary: Option<LearnerSummary>,
    ) -> Result<(), Box<dyn core::error::Error>> {
        Ok(())
    }
}
impl MetricsRendererEvaluation for Quiet {
    fn update_test(&mut self, _name: EvaluationName, _state: MetricState) {}
}
impl TrainingProgressLogger for Quiet {
    fn start(&mut self, _: usize, _: usize, _: Option<usize>, _: Option<&str>) {}
    fn update_epoch(&mut self, _epoch: usize) {}
    fn start_split(&mut self, _split: &str, _items: usize) {}
    fn update_split(&mut self, _items: usize) {}
    fn end_split(&mut self) {}
    fn end(&mut self) {}
    fn log_event_training(&mut self, _event: String) {}
}
impl EvaluationProgressLogger for Quiet {
    fn start_global_progress(&mut self, _tests: usize) {}
    fn start_test(&mut self, _name: &str, _items: usize) {}
    fn update_test_progress(&mut self, _items: usize) {}
    fn end_test(&mut self) {}
    fn end_global_progress(&mut self) {}
    fn log_event_evaluation(&mut self, _event: String) {}
}
impl MetricsRenderer for Quiet {
    fn manual_close(&mut self) {}
    fn register_metric(&mut self, _definition: MetricDefinition) {}
}

/// A fresh artifact directory, unique per process and call.
pub fn tempdir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "burn-gmt-train-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
