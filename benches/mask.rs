//! Per-tensor GMT mask on every backend compiled in, against one in-place pass over the
//! gradient (the floor of any mask: each entry read and written where it lies), a plain device
//! copy and Burn's sort-based threshold; the mask as `GradMask::apply` runs it, beside the one
//! read-write pass (`mask::mask_smallest_in_one_pass`) and the selection then a masking pass
//! (two passes).
//! Prints a markdown table; times are medians of several runs.
//!
//! ```sh
//! cargo bench --profile dev --bench mask                          # flex
//! cargo bench --profile dev --features ndarray,wgpu --bench mask  # + ndarray, wgpu
//! cargo bench --profile dev --features cuda --bench mask          # + cuda
//! ```
//!
//! The dev profile already optimises dependencies and our kernels, so this reuses the test
//! build. Environment:
//!
//! - `GMT_BENCH_BACKENDS=flex,wgpu`: the backends to run (default: every one compiled in;
//!   `flex`, `ndarray`, `wgpu`, `cuda`, `rocm`). A GPU backend without a device is reported skipped.
//! - `GMT_BENCH_SIZES=1048576,16777216`: gradient sizes (default 1M, 16M, 45M entries).
//! - `GMT_BENCH_SORT=0`: skip the sort baseline. `GMT_BENCH_SORT_TIMEOUT=60`: seconds one sort
//!   may take before it is killed (the sort runs in a child process, this same executable
//!   re-run with `GMT_BENCH_SORT_CHILD=backend:n`).
//! - `GMT_BENCH_BREAKDOWN=1`: instead of this table, where the time of one mask goes, step by
//!   step (`benches/breakdown.rs`).
//! - `GMT_BENCH_CHECK=0`: skip the untimed check of the mask's output against a host selection
//!   (the `exact` column).
//! - `GMT_BENCH_DTYPE=f16`: the gradient's float type, `f32` (default), `f16` or `bf16` (the
//!   values are the f32 ones rounded to it; NdArray stores no 16-bit floats).
//!
//! Every timed region ends with `Device::sync` (a no-op on the CPU backends; on CubeCL it
//! flushes the fusion queue and waits for the device), and every (backend, n, operation) is
//! run once untimed first, so kernel compilation is not timed. The gradient is generated on the
//! host from a fixed hash, so the parent and the sort child see the same values.

mod breakdown;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use burn::module::{Module, Param};
use burn::optim::GradientsParams;
use burn::tensor::{DType, Device, Tensor, TensorData};
use burn_gmt::GradMaskConfig;
use burn_gmt_kernels::mask as kernels;
use burn_gmt_lab::device::{catch_quietly, describe, failure_cause, open_backends, probe};
use burn_gmt_lab::hash::stable_hash;
use burn_gmt_lab::timing::{fresh, median, ms, time, time_once};

/// Fraction of the gradient masked.
const RATIO: f64 = 0.3;
/// Seed of the host-generated gradient.
const SEED: u64 = 0x474d_545f_6265_6e63;
/// Default sizes: 1M, 16M and 45M entries (a 7B model's largest tensors are ~45M).
const DEFAULT_SIZES: [usize; 3] = [1 << 20, 1 << 24, 45_000_000];
/// Timed runs of the sort baseline after its warm-up (1 when the warm-up took over 5 s).
const SORT_REPS: usize = 3;
/// Environment variable that turns this executable into the sort child.
const SORT_CHILD: &str = "GMT_BENCH_SORT_CHILD";

#[derive(Module, Debug)]
struct One {
    weight: Param<Tensor<1>>,
}

impl One {
    /// A fresh copy of `g` as this module's gradients.
    fn grads(&self, g: &Tensor<1>) -> GradientsParams {
        let mut grads = GradientsParams::new();
        grads.register(self.weight.id, fresh(g));
        grads
    }
}

/// The benchmark gradient: `n` normal-ish f32 values (Box–Muller on a SplitMix64 hash of the
/// index), identical in every process.
fn gradient_values(n: usize) -> Vec<f32> {
    fn value(i: usize) -> f32 {
        let h = stable_hash(SEED ^ stable_hash(i as u64));
        let u1 = ((h >> 40) as f64 + 0.5) / (1u64 << 24) as f64; // (0, 1)
        let u2 = (h & 0xFF_FFFF) as f64 / (1u64 << 24) as f64; // [0, 1)
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
    let mut values = vec![0.0f32; n];
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let chunk = n.div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for (c, part) in values.chunks_mut(chunk).enumerate() {
            scope.spawn(move || {
                for (j, v) in part.iter_mut().enumerate() {
                    *v = value(c * chunk + j);
                }
            });
        }
    });
    values
}

/// The gradient's float type (`GMT_BENCH_DTYPE`).
fn dtype() -> DType {
    match std::env::var("GMT_BENCH_DTYPE").as_deref() {
        Err(_) | Ok("f32") => DType::F32,
        Ok("f16") => DType::F16,
        Ok("bf16") => DType::BF16,
        Ok(other) => panic!("GMT_BENCH_DTYPE: f32, f16 or bf16, got {other:?}"),
    }
}

/// `values` rounded to `dtype` (exactly representable in f32 again): what the device holds.
fn rounded(values: &[f32], dtype: DType) -> Vec<f32> {
    TensorData::new(values.to_vec(), [values.len()])
        .convert_dtype(dtype)
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 values")
}

/// The benchmark gradient on `device`, as `dtype`.
fn upload(values: Vec<f32>, dtype: DType, device: &Device) -> Tensor<1> {
    let n = values.len();
    let data = TensorData::new(values, [n]).convert_dtype(dtype);
    let g = Tensor::<1>::from_data(data, (device, dtype));
    device.sync().expect("device sync");
    g
}

/// Whether `masked` is exactly the GMT mask of `values` (the device's values, as f32; no NaN in
/// them): with k = floor(r·n)
/// and T the (k+1)-th smallest |g|, entries with |g| < T are zero and the others unchanged.
/// Returns the cell text: `yes`, or `NO` with the number of wrong entries.
fn check(values: &[f32], masked: Tensor<1>) -> String {
    let k = (RATIO * values.len() as f64).floor() as usize;
    let mut magnitudes: Vec<f32> = values.iter().map(|v| v.abs()).collect();
    let threshold = *magnitudes.select_nth_unstable_by(k, f32::total_cmp).1;
    let got: Vec<f32> = masked
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32");
    let wrong = values
        .iter()
        .zip(&got)
        .filter(|&(&v, &m)| m != if v.abs() < threshold { 0.0 } else { v })
        .count();
    if wrong == 0 {
        "yes".into()
    } else {
        format!("NO ({wrong} wrong)")
    }
}

/// Burn's way to a threshold: sort |g| and take the k-th entry.
fn sort_threshold(g: Tensor<1>, k: usize) -> TensorData {
    g.abs().sort(0).slice(k..k + 1).into_data()
}

/// The sort child: time the sort baseline on `backend:n` and report on stdout, one line per
/// run (`run_ms=`, so the parent can time out a single sort), then `sort_ms=` (the median).
fn sort_child(spec: &str) {
    let (name, n) = spec
        .split_once(':')
        .expect("GMT_BENCH_SORT_CHILD=backend:n");
    let n: usize = n.parse().expect("GMT_BENCH_SORT_CHILD: n");
    let device = probe(name).unwrap_or_else(|why| panic!("sort child: {name}: {why}"));
    let g = upload(gradient_values(n), dtype(), &device);
    let k = (RATIO * n as f64).floor() as usize;
    let mut stdout = std::io::stdout();
    let mut report = |line: String| {
        writeln!(stdout, "{line}").unwrap();
        stdout.flush().unwrap();
    };
    report("ready".into());
    let mut setup = || g.clone();
    let mut run = |g| sort_threshold(g, k);
    let warm = time_once(&device, &mut setup, &mut run).wall;
    report(format!("run_ms={}", ms(warm)));
    let reps = if warm > Duration::from_secs(5) {
        1
    } else {
        SORT_REPS
    };
    let times: Vec<Duration> = (0..reps)
        .map(|_| {
            let t = time_once(&device, &mut setup, &mut run).wall;
            report(format!("run_ms={}", ms(t)));
            t
        })
        .collect();
    report(format!("sort_ms={}", ms(median(times))));
}

/// The sort baseline of `backend` at `n`, in a child process that is killed when one sort
/// takes longer than `timeout`. `Ok(median)`, or `Err(cell text)`.
fn sort_in_child(backend: &str, n: usize, timeout: Duration) -> Result<Duration, String> {
    let exe = std::env::current_exe().map_err(|e| format!("no exe: {e}"))?;
    let mut child = Command::new(exe)
        .env(SORT_CHILD, format!("{backend}:{n}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn failed: {e}"))?;
    let (lines_tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stderr = child.stderr.take().expect("piped");
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    // Opening the device and generating the gradient is not the sort: allow it more time.
    let mut wait = timeout + Duration::from_secs(300);
    let outcome = loop {
        match lines.recv_timeout(wait) {
            Ok(line) if line == "ready" => wait = timeout,
            Ok(line) if line.starts_with("run_ms=") => wait = timeout,
            Ok(line) => match line.strip_prefix("sort_ms=") {
                Some(v) => match v.parse::<f64>() {
                    Ok(v) => break Ok(Duration::from_secs_f64(v / 1e3)),
                    Err(_) => break Err(format!("bad child output {line:?}")),
                },
                None => continue,
            },
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                break Err(format!("> {} s", timeout.as_secs_f64()));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break Err("failed".into()),
        }
    };
    let status = child.wait();
    let stderr = stderr.join().unwrap_or_default();
    if outcome.as_ref().is_err_and(|e| e == "failed") {
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
        eprintln!(
            "sort child {backend}:{n} failed ({status:?}): {}",
            last.unwrap_or("no message")
        );
    }
    outcome
}

fn sizes() -> Vec<usize> {
    std::env::var("GMT_BENCH_SIZES").ok().map_or_else(
        || DEFAULT_SIZES.to_vec(),
        |s| {
            s.split(',')
                .filter(|n| !n.trim().is_empty())
                .map(|n| match n.trim().parse() {
                    Ok(n) if n > 0 => n,
                    _ => panic!("GMT_BENCH_SIZES: positive integers, got {n:?}"),
                })
                .collect()
        },
    )
}

fn main() {
    if let Ok(spec) = std::env::var(SORT_CHILD) {
        sort_child(&spec);
        return;
    }
    if std::env::var("GMT_BENCH_BREAKDOWN").is_ok_and(|v| v == "1") {
        breakdown::run();
        return;
    }
    let sizes = sizes();
    let with_sort = !env_flag_off("GMT_BENCH_SORT");
    let with_check = !env_flag_off("GMT_BENCH_CHECK");
    let timeout = Duration::from_secs_f64(
        std::env::var("GMT_BENCH_SORT_TIMEOUT")
            .ok()
            .map_or(60.0, |v| {
                v.parse().expect("GMT_BENCH_SORT_TIMEOUT: seconds")
            }),
    );

    let backends = open_backends();
    let dtype = dtype();

    println!(
        "\nGMT per-tensor mask, {dtype:?}, ratio {RATIO}: median of 11 runs (5 for n > 4M), sort: \
         median of {SORT_REPS} (time-out {} s per sort)",
        timeout.as_secs_f64()
    );
    for (name, device) in &backends {
        println!("- {name}: {}", describe(name, device));
    }
    println!(
        "- pass: one in-place pass over a uniquely owned gradient (`mul_scalar(-1.0)`: each \
         entry read and written where it lies), the floor of any mask; copy: a copy into new \
         memory\n\
         - GMT mask: `GradMask::apply` (the backend's way); one pass: \
         `mask::mask_smallest_in_one_pass`, selected while it is written; two passes: \
         `mask::select_abs` then `mask::mask_below`, the selection then a masking pass\n\
         - exact: the outputs of the GMT mask and of the one pass compared with a host \
         selection (`GMT_BENCH_CHECK=0` skips)\n"
    );
    println!(
        "| backend | n | pass (ms) | copy (ms) | GMT mask (ms) | one pass (ms) | two passes (ms) \
         | sort threshold (ms) | mask / pass | one pass / pass | two passes / pass | mask / copy \
         | sort / copy | exact |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    std::io::stdout().flush().unwrap();

    for (name, device) in &backends {
        for &n in &sizes {
            // A size the device cannot hold (a wgpu buffer limit, memory) fails its row only.
            match catch_quietly(|| row(name, device, n, dtype, with_sort, with_check, timeout)) {
                Ok(row) => println!("{row}"),
                Err(message) => {
                    // The innermost cause is the telling line (e.g. a buffer size limit).
                    let cause = failure_cause(&message);
                    println!("| {name} | {n} | failed: {cause} | | | | | | | | | | | |");
                }
            }
            std::io::stdout().flush().unwrap();
        }
    }
}

/// One table row: `backend` at `n` entries.
fn row(
    name: &str,
    device: &Device,
    n: usize,
    dtype: DType,
    with_sort: bool,
    with_check: bool,
    timeout: Duration,
) -> String {
    let values = rounded(&gradient_values(n), dtype);
    let g = upload(values.clone(), dtype, device);
    let module = One {
        weight: Param::from_tensor(Tensor::zeros([n], device)),
    };
    let reps = if n > 4 << 20 { 5 } else { 11 };

    let copy = time(device, reps, || g.clone(), |g| fresh(&g));
    let pass = time(device, reps, || fresh(&g), |g| g.mul_scalar(-1.0));
    let mut mask = GradMaskConfig::new(RATIO)
        .with_collect_stats(false)
        .init()
        .unwrap();
    let masked = time(
        device,
        reps,
        || module.grads(&g),
        |grads| mask.apply(&module, grads),
    );
    let rank = (RATIO * n as f64).floor() as u64;
    let one_pass = time(
        device,
        reps,
        || fresh(&g).into_dispatch(),
        |g| kernels::mask_smallest_in_one_pass(g, rank, false).grad,
    );
    let two_passes = time(
        device,
        reps,
        || fresh(&g).into_dispatch(),
        |g| {
            let mut selection = kernels::select_abs(std::slice::from_ref(&g), rank, false);
            kernels::mask_below(g, selection.thresholds.remove(0))
        },
    );
    let exact = if with_check {
        let mut grads = mask.apply(&module, module.grads(&g));
        let applied = check(
            &values,
            grads.remove(module.weight.id).expect("masked gradient"),
        );
        let one_pass = kernels::mask_smallest_in_one_pass(fresh(&g).into_dispatch(), rank, false);
        match check(&values, Tensor::from_dispatch(one_pass.grad)) {
            one_pass if one_pass == "yes" => applied,
            one_pass => format!("{applied}; one pass: {one_pass}"),
        }
    } else {
        "-".into()
    };
    drop((g, module, values));
    let sort = if with_sort {
        sort_in_child(name, n, timeout)
    } else {
        Err("skipped".into())
    };
    let over = |t: Duration, by: Duration| t.as_secs_f64() / by.as_secs_f64();
    format!(
        "| {name} | {n} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {:.2} | {:.2} | {:.2} \
         | {:.2} | {} | {exact} |",
        ms(pass),
        ms(copy),
        ms(masked),
        ms(one_pass),
        ms(two_passes),
        sort.as_ref()
            .map_or_else(Clone::clone, |s| format!("{:.1}", ms(*s))),
        over(masked, pass),
        over(one_pass, pass),
        over(two_passes, pass),
        over(masked, copy),
        sort.as_ref()
            .map_or_else(|_| "-".into(), |s| format!("{:.1}", over(*s, copy))),
    )
}

/// Whether the environment variable `name` is set to `0` (a part of the run turned off).
fn env_flag_off(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "0")
}
