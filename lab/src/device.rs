//! Device selection: a backend by name (the examples' `--device`, the benchmarks'
//! `GMT_BENCH_BACKENDS`), the backends compiled into this build, and opening a device without
//! a panic when it is missing.

use std::fmt;

use burn::tensor::{Device, Tensor};

/// The backends compiled into this build, in table order (those the benchmarks time).
pub const COMPILED: &[&str] = &[
    #[cfg(feature = "flex")]
    "flex",
    #[cfg(feature = "ndarray")]
    "ndarray",
    #[cfg(feature = "wgpu")]
    "wgpu",
    #[cfg(feature = "cuda")]
    "cuda",
    #[cfg(feature = "rocm")]
    "rocm",
];

/// Every backend name [`device_by_name`] knows; each needs the cargo feature of its name.
pub const KNOWN: &[&str] = &["flex", "ndarray", "wgpu", "vulkan", "metal", "cuda", "rocm"];

/// Why a name gives no device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceNameError {
    /// A backend this build leaves out: it needs the cargo feature of the same name.
    NotCompiled(String),
    /// Not a backend name.
    Unknown(String),
}

impl DeviceNameError {
    /// The message for the command line of `example`, with the command that builds the
    /// missing backend in.
    pub fn for_example(&self, example: &str) -> String {
        match self {
            DeviceNameError::NotCompiled(name) => format!(
                "device `{name}` needs the `{name}` feature: cargo run --example {example} --features {name} -- ... --device {name}"
            ),
            DeviceNameError::Unknown(_) => self.to_string(),
        }
    }
}

impl fmt::Display for DeviceNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceNameError::NotCompiled(name) => {
                write!(f, "not compiled in: build with --features {name}")
            }
            DeviceNameError::Unknown(name) => {
                write!(f, "unknown device `{name}` ({})", KNOWN.join(", "))
            }
        }
    }
}

impl std::error::Error for DeviceNameError {}

/// The device of backend `name` (one of [`KNOWN`]), when its feature is compiled in. Opening
/// a GPU device may panic when there is none: see [`probe`].
pub fn device_by_name(name: &str) -> Result<Device, DeviceNameError> {
    match name {
        #[cfg(feature = "flex")]
        "flex" => Ok(Device::flex()),
        // burn-ndarray is deprecated upstream, but our users still run it.
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)]
        "ndarray" => Ok(Device::ndarray()),
        #[cfg(feature = "wgpu")]
        "wgpu" => Ok(Device::wgpu(Default::default())),
        #[cfg(feature = "vulkan")]
        "vulkan" => Ok(Device::vulkan(Default::default())),
        #[cfg(feature = "metal")]
        "metal" => Ok(Device::metal(Default::default())),
        #[cfg(feature = "cuda")]
        "cuda" => Ok(Device::cuda(0)),
        #[cfg(feature = "rocm")]
        "rocm" => Ok(Device::rocm(0)),
        name if KNOWN.contains(&name) => Err(DeviceNameError::NotCompiled(name.to_string())),
        other => Err(DeviceNameError::Unknown(other.to_string())),
    }
}

/// The backends asked for in `GMT_BENCH_BACKENDS` (comma-separated), else every one compiled in.
pub fn requested_backends() -> Vec<String> {
    std::env::var("GMT_BENCH_BACKENDS").map_or_else(
        |_| COMPILED.iter().map(|s| s.to_string()).collect(),
        |s| {
            s.split(',')
                .map(|b| b.trim().to_lowercase())
                .filter(|b| !b.is_empty())
                .collect()
        },
    )
}

/// The requested backends that open, in order; the others are reported `skipped: name (why)`.
pub fn open_backends() -> Vec<(String, Device)> {
    let mut backends = Vec::new();
    for name in requested_backends() {
        match probe(&name) {
            Ok(device) => backends.push((name, device)),
            Err(why) => println!("skipped: {name} ({why})"),
        }
    }
    backends
}

/// `f`'s result, or the message it panicked with (the panic itself kept quiet).
pub fn catch_quietly<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    result.map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into())
    })
}

/// The telling line of a panic message for a table cell: the innermost cause (e.g. a buffer
/// size limit), not the wrapping context or backtrace lines.
pub fn failure_cause(message: &str) -> &str {
    message
        .lines()
        .map(str::trim)
        .rfind(|l| {
            !l.is_empty()
                && !l.starts_with("Caused by")
                && !l.starts_with("Asked at")
                && !l.to_lowercase().contains("backtrace")
        })
        .unwrap_or("")
}

/// The device of `name` (one of [`COMPILED`]) after a small round trip on it, or why not.
/// Panics while opening a device (no adapter, no libcuda) are caught and kept quiet.
pub fn probe(name: &str) -> Result<Device, String> {
    if !COMPILED.contains(&name) {
        return Err(DeviceNameError::NotCompiled(name.to_string()).to_string());
    }
    catch_quietly(|| {
        let device = device_by_name(name).expect("compiled in");
        let t = Tensor::<1>::from_floats([1.0, 2.0], &device);
        let _ = t.sum().into_scalar::<f32>();
        device.sync().expect("device sync");
        device
    })
    .map_err(|message| {
        let first = message.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        match name {
            "wgpu" => "no adapter".to_string(),
            "cuda" => format!("no CUDA device: {}", first.trim()),
            "rocm" => format!("no ROCm device: {}", first.trim()),
            _ => format!("failed to open: {}", first.trim()),
        }
    })
}

/// What the device is, for the header: CPU, GPU, or a software GPU (lavapipe) on the CPU.
pub fn describe(name: &str, _device: &Device) -> String {
    match name {
        "flex" | "ndarray" => "CPU".to_string(),
        #[cfg(any(feature = "wgpu", feature = "cuda", feature = "rocm"))]
        _ => match _device.identity() {
            Some(id) if id.physical.is_none() || id.name.to_lowercase().contains("llvmpipe") => {
                format!(
                    "software GPU on the CPU ({}): absolute figures are CPU figures, the \
                     ratios are what count",
                    id.name
                )
            }
            Some(id) => format!("GPU ({})", id.name),
            None => "GPU".to_string(),
        },
        #[cfg(not(any(feature = "wgpu", feature = "cuda", feature = "rocm")))]
        _ => "GPU".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_missing_feature_or_the_known_backends() {
        assert_eq!(
            DeviceNameError::NotCompiled("cuda".into()).for_example("gmt_study"),
            "device `cuda` needs the `cuda` feature: cargo run --example gmt_study --features cuda -- ... --device cuda"
        );
        assert_eq!(
            DeviceNameError::NotCompiled("rocm".into()).to_string(),
            "not compiled in: build with --features rocm"
        );
        let unknown = device_by_name("tpu").unwrap_err();
        assert_eq!(unknown, DeviceNameError::Unknown("tpu".into()));
        assert_eq!(
            unknown.for_example("llm"),
            "unknown device `tpu` (flex, ndarray, wgpu, vulkan, metal, cuda, rocm)"
        );
    }

    #[cfg(feature = "flex")]
    #[test]
    fn flex_opens_by_name() {
        assert_eq!(probe("flex").map(|_| ()), Ok(()));
    }
}
