//! Per-tensor GMT mask on the Flex CPU backend against a plain copy and Burn's sort-based
//! threshold. Prints a table; times are medians of several runs.
//!
//! `cargo bench --profile dev --bench mask` (the dev profile already optimises dependencies
//! and our kernels, so this reuses the test build). Set `GMT_BENCH_SIZES=1048576,16777216`
//! to choose sizes and `GMT_BENCH_SORT=0` to skip the sort baseline.

use std::time::{Duration, Instant};

use burn::module::{Module, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Tensor};
use burn_gmt::GradMaskConfig;

#[derive(Module, Debug)]
struct One {
    weight: Param<Tensor<1>>,
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Median time of `run` over `reps` repetitions, each on fresh input from `setup`.
fn time<I, O>(reps: usize, mut setup: impl FnMut() -> I, mut run: impl FnMut(I) -> O) -> Duration {
    let times = (0..reps)
        .map(|_| {
            let input = setup();
            let start = Instant::now();
            let out = run(input);
            let elapsed = start.elapsed();
            drop(out);
            elapsed
        })
        .collect();
    median(times)
}

/// A uniquely owned copy of `g` (what a backward pass hands the optimizer).
fn fresh(g: &Tensor<1>) -> Tensor<1> {
    g.clone().mul_scalar(1.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let sizes: Vec<usize> = std::env::var("GMT_BENCH_SIZES")
        .ok()
        .map(|s| {
            s.split(',')
                .map(|n| n.trim().parse().expect("GMT_BENCH_SIZES: integers"))
                .collect()
        })
        .unwrap_or_else(|| vec![1 << 20, 1 << 24]);
    let with_sort = std::env::var("GMT_BENCH_SORT").map_or(true, |v| v != "0");
    let ratio = 0.3;
    let device = Device::flex();

    println!("GMT per-tensor mask on flex, ratio {ratio} (median times)\n");
    println!(
        "| n | copy (ms) | GMT mask (ms) | sort threshold (ms) | mask / copy | sort / copy | mask GB/s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for n in sizes {
        let g = Tensor::<1>::random([n], Distribution::Normal(0.0, 1.0), &device);
        let module = One {
            weight: Param::from_tensor(Tensor::zeros([n], &device)),
        };
        let reps = if n > 4 << 20 { 5 } else { 11 };

        let copy = time(reps, || g.clone(), |g| fresh(&g));
        let mut mask = GradMaskConfig::new(ratio)
            .with_collect_stats(false)
            .init()
            .unwrap();
        let masked = time(
            reps,
            || {
                let mut grads = GradientsParams::new();
                grads.register(module.weight.id, fresh(&g));
                grads
            },
            |grads| mask.apply(&module, grads),
        );
        let k = (ratio * n as f64).floor() as usize;
        let sort = with_sort.then(|| {
            time(
                3,
                || g.clone(),
                |g| g.abs().sort(0).slice(k..k + 1).into_data(),
            )
        });
        let bytes = (n * 4) as f64;
        println!(
            "| {n} | {:.2} | {:.2} | {} | {:.2} | {} | {:.1} |",
            ms(copy),
            ms(masked),
            sort.map_or("-".into(), |s| format!("{:.1}", ms(s))),
            masked.as_secs_f64() / copy.as_secs_f64(),
            sort.map_or("-".into(), |s| format!(
                "{:.1}",
                s.as_secs_f64() / copy.as_secs_f64()
            )),
            // One read per histogram pass (2 for f32) plus the in-place masking pass.
            bytes * 4.0 / masked.as_secs_f64() / 1e9,
        );
    }
}
