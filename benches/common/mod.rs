//! What the benchmarks share: the backends compiled in, opening them quietly, and timing with
//! the device synchronised.
// Each benchmark is its own crate and uses only part of this module.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use burn::tensor::{Device, Tensor};

/// The backends compiled into this build, in table order.
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

/// The device of a backend compiled in (`None` for a name not compiled in). Opening a GPU
/// device may panic when there is none: see [`probe`].
fn device_of(name: &str) -> Option<Device> {
    match name {
        #[cfg(feature = "flex")]
        "flex" => Some(Device::flex()),
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)]
        // burn-ndarray is deprecated upstream, but our users still run it.
        "ndarray" => Some(Device::ndarray()),
        #[cfg(feature = "wgpu")]
        "wgpu" => Some(Device::wgpu(Default::default())),
        #[cfg(feature = "cuda")]
        "cuda" => Some(Device::cuda(0)),
        #[cfg(feature = "rocm")]
        "rocm" => Some(Device::rocm(0)),
        _ => None,
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

/// The device of `name` after a small round trip on it, or why not. Panics while opening a
/// device (no adapter, no libcuda) are caught and kept quiet.
pub fn probe(name: &str) -> Result<Device, String> {
    if !COMPILED.contains(&name) {
        return Err(format!("not compiled in: build with --features {name}"));
    }
    catch_quietly(|| {
        let device = device_of(name).expect("compiled in");
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

pub fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// The time one run took: wall clock, and CPU time of the whole process (all threads).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub wall: Duration,
    /// Unlike the wall clock, not inflated when other processes share the cores: on a busy
    /// shared machine this is the steadier measure of CPU backends' work.
    pub cpu: Duration,
}

/// CPU time used so far by this process, all threads together.
fn process_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux and the
    // BSDs define.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One run of `run` on input from `setup`; only `run` and the sync after it are timed.
pub fn time_once<I, O>(
    device: &Device,
    setup: &mut impl FnMut() -> I,
    run: &mut impl FnMut(I) -> O,
) -> Timing {
    let input = setup();
    device.sync().expect("device sync");
    let (start, start_cpu) = (Instant::now(), process_cpu_time());
    let out = run(input);
    device.sync().expect("device sync");
    let timing = Timing {
        wall: start.elapsed(),
        cpu: process_cpu_time() - start_cpu,
    };
    drop(out);
    timing
}

/// Median wall time of `run` over `reps` repetitions after one warm-up, each on fresh input
/// from `setup`.
pub fn time<I, O>(
    device: &Device,
    reps: usize,
    mut setup: impl FnMut() -> I,
    mut run: impl FnMut(I) -> O,
) -> Duration {
    time_once(device, &mut setup, &mut run);
    median(
        (0..reps)
            .map(|_| time_once(device, &mut setup, &mut run).wall)
            .collect(),
    )
}

/// A uniquely owned copy of `g` (what a backward pass hands the optimizer): one read and one
/// write of the gradient, so an in-place mask does not copy a shared buffer first.
pub fn fresh<const D: usize>(g: &Tensor<D>) -> Tensor<D> {
    g.clone().mul_scalar(1.0)
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn env_flag_off(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "0")
}
