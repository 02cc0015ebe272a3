//! Where the time of a per-tensor GMT mask goes (`GMT_BENCH_BREAKDOWN=1` of the mask
//! benchmark), on every backend it runs: each step of the exact selection timed on its own, then
//! the whole mask, against what any operation costs there (a synchronisation with nothing
//! queued, one plain Burn elementwise operation, a copy).
//!
//! ```sh
//! GMT_BENCH_BREAKDOWN=1 cargo bench --profile dev --bench mask
//! GMT_BENCH_BREAKDOWN=1 GMT_BENCH_BACKENDS=wgpu cargo bench --profile dev --features wgpu --bench mask
//! ```
//!
//! `GMT_BENCH_SIZES` defaults here to 4,096, 65,536, 1M and 16M entries. A part of the mask
//! benchmark's executable rather than one of its own, so the offline GPU bundle carries one
//! binary less.
//!
//! Every step runs once untimed, then is timed as the median of several runs, each between two
//! `Device::sync` calls (a no-op on the CPU backends; on CubeCL it flushes the fusion queue and
//! waits for the device), so a step's time includes one synchronisation: the `sync` column is
//! that cost alone. On a device, steps whose time stays near `sync` + `plain op` whatever the
//! size cost their launches and bookkeeping, not their bandwidth; the sum of the steps against
//! the whole mask shows what running them back to back saves. The selection steps are the ones
//! [`burn_gmt_kernels::mask`] takes on a device (start, a histogram pass and a digit step per
//! 16 bits, the threshold), here forced on every backend.

use std::io::Write;
use std::time::Duration;

use burn::backend::{Dispatch, DispatchTensor};
use burn::module::Param;
use burn::tensor::{Device, Tensor};
use burn_gmt::GradMaskConfig;
use burn_gmt_kernels::MaskOps;
use burn_gmt_kernels::buffer::{DIGITS, SMALL_SELECT_MAX_ENTRIES};
use burn_gmt_kernels::element::inf_key;
use burn_gmt_kernels::mask::select_abs;

use burn_gmt_lab::device::{catch_quietly, describe, failure_cause, open_backends};
use burn_gmt_lab::timing::{fresh, ms, time};

use super::{One, RATIO, dtype, gradient_values, upload};

const DEFAULT_SIZES: [usize; 4] = [4096, 1 << 16, 1 << 20, 1 << 24];

/// The steps, in the order of the table's columns.
const STEPS: [&str; 13] = [
    "sync",
    "plain op",
    "copy",
    "start",
    "histogram 1",
    "digit 1",
    "histogram 2",
    "digit 2",
    "threshold",
    "mask",
    "one-step select",
    "selection",
    "GradMask::apply",
];

fn breakdown_sizes() -> Vec<usize> {
    std::env::var("GMT_BENCH_SIZES").ok().map_or_else(
        || DEFAULT_SIZES.to_vec(),
        |v| {
            v.split(',')
                .map(|n| match n.trim().parse() {
                    Ok(n) if n > 0 => n,
                    _ => panic!("GMT_BENCH_SIZES: positive integers, got {n:?}"),
                })
                .collect()
        },
    )
}

/// Median times of [`STEPS`] for an f32 gradient of `n` entries on `device` (`None`: the step
/// does not apply at this size).
fn row(device: &Device, n: usize) -> Vec<Option<Duration>> {
    let g = upload(gradient_values(n), dtype(), device);
    let grad: DispatchTensor = g.clone().into_dispatch();
    let rank = (RATIO * n as f64).floor() as u64;
    let inf = inf_key(burn::tensor::DType::F32).expect("f32");
    let reps = if n > 4 << 20 { 5 } else { 11 };
    let timed = |run: &mut dyn FnMut()| Some(time(device, reps, || (), |()| run()));
    let ops = |grad, selection, shift| {
        <Dispatch as MaskOps>::radix_select_count(grad, selection, shift, 0)
    };

    // The buffer each step starts from, made untimed: the steps before it, run once.
    let start = || <Dispatch as MaskOps>::radix_select_start(&grad, vec![rank]);
    let after_hist1 = || ops(&grad, start(), 16);
    let after_digit1 =
        || <Dispatch as MaskOps>::radix_select_digit(after_hist1(), (inf >> 16) as u32);
    let after_hist2 = || ops(&grad, after_digit1(), 0);
    let after_digit2 = || <Dispatch as MaskOps>::radix_select_digit(after_hist2(), DIGITS as u32);
    let threshold = <Dispatch as MaskOps>::radix_select_threshold(&grad, after_digit2());
    let step = |setup: &dyn Fn() -> DispatchTensor,
                run: &dyn Fn(DispatchTensor) -> DispatchTensor| {
        Some(time(device, reps, setup, run))
    };

    let module = One {
        weight: Param::from_tensor(Tensor::zeros([n], device)),
    };
    let mut mask = GradMaskConfig::new(RATIO)
        .with_collect_stats(false)
        .init()
        .expect("valid ratio");
    vec![
        timed(&mut || ()),
        step(&|| g.clone().into_dispatch(), &|t| {
            (Tensor::<1>::from_dispatch(t) * 1.0).into_dispatch()
        }),
        step(&|| g.clone().into_dispatch(), &|t| {
            fresh(&Tensor::<1>::from_dispatch(t)).into_dispatch()
        }),
        step(&|| grad.clone(), &|_| start()),
        step(&start, &|s| ops(&grad, s, 16)),
        step(&after_hist1, &|s| {
            <Dispatch as MaskOps>::radix_select_digit(s, (inf >> 16) as u32)
        }),
        step(&after_digit1, &|s| ops(&grad, s, 0)),
        step(&after_hist2, &|s| {
            <Dispatch as MaskOps>::radix_select_digit(s, DIGITS as u32)
        }),
        step(&after_digit2, &|s| {
            <Dispatch as MaskOps>::radix_select_threshold(&grad, s)
        }),
        step(&|| fresh(&g).into_dispatch(), &|t| {
            <Dispatch as MaskOps>::abs_threshold_mask(t, threshold.clone())
        }),
        if n <= SMALL_SELECT_MAX_ENTRIES {
            step(&|| grad.clone(), &|t| {
                <Dispatch as MaskOps>::abs_key_select(&t, rank)
            })
        } else {
            None
        },
        step(&|| grad.clone(), &|t| {
            select_abs(&[t], rank, false).thresholds.remove(0)
        }),
        Some(time(
            device,
            reps,
            || module.grads(&g),
            |grads| mask.apply(&module, grads),
        )),
    ]
}

/// Prints the breakdown table.
pub fn run() {
    let backends = open_backends();
    let sizes = breakdown_sizes();
    println!(
        "\nPer-tensor GMT mask, f32, ratio {RATIO}: each step between two synchronisations, \
         median of 5-11 runs after one untimed (ms)"
    );
    for (name, device) in &backends {
        println!("- {name}: {}", describe(name, device));
    }
    println!(
        "- sync: `Device::sync` with nothing queued; plain op: `g * 1.0`; copy: a copy of the \
         gradient; start .. threshold: the device steps of one selection (`MaskOps`), each from \
         the buffer the steps before it left; mask: the masking pass; one-step select: \
         `MaskOps::abs_key_select` (tensors of at most {SMALL_SELECT_MAX_ENTRIES} entries); \
         selection: `mask::select_abs` as the mask takes it on this backend; GradMask::apply: \
         the whole per-tensor mask, statistics off\n"
    );
    println!("| backend | entries | {} |", STEPS.join(" | "));
    println!("|---|---:|{}", "---:|".repeat(STEPS.len()));
    std::io::stdout().flush().unwrap();
    for (name, device) in &backends {
        for &n in &sizes {
            match catch_quietly(|| row(device, n)) {
                Ok(times) => {
                    let cells: Vec<String> = times
                        .iter()
                        .map(|t| t.map_or("-".into(), |t| format!("{:.3}", ms(t))))
                        .collect();
                    println!("| {name} | {n} | {} |", cells.join(" | "));
                }
                Err(message) => println!("| {name} | {n} | failed: {} |", failure_cause(&message)),
            }
            std::io::stdout().flush().unwrap();
        }
    }
}
