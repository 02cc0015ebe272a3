//! Timing with the device synchronised: one run, the median of several, wall clock and
//! process CPU time (the benchmarks' tables and the study's step times).

use std::time::{Duration, Instant};

use burn::tensor::{Device, Tensor};

/// The median of `times` (the upper one of an even count).
pub fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// The time one run took: wall clock, and CPU time of the whole process (all threads).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Wall clock.
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

/// `d` in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_takes_the_middle_of_the_sorted_times() {
        let times = [5, 1, 3, 9].map(Duration::from_millis).to_vec();
        assert_eq!(median(times), Duration::from_millis(5));
        assert_eq!(ms(Duration::from_micros(1500)), 1.5);
    }
}
