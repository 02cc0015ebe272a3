//! What the mask did at the last step, and the handle that reads it while training runs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::ThreadId;

use burn_gmt_kernels::mask::{PendingStats, resolve_stats};

/// Mask statistics of one parameter tensor.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct TensorMaskStats {
    /// The parameter's module path (`encoder.layers.3.attn.q.weight`). The optimizer wrapper
    /// knows paths only when given the module
    /// ([`GradMasked::with_param_paths`](crate::GradMasked::with_param_paths)); otherwise it
    /// names a parameter `stream N`, its rank in the order the optimizer first stepped it.
    pub param: String,
    /// Entries in the gradient.
    pub total: u64,
    /// Entries masked (zeroed, or held still with [`MaskTarget::Update`](crate::MaskTarget)).
    pub masked: u64,
    /// Entries kept: `total - masked`. Ties at the threshold are all kept, so this can exceed
    /// `(1 - ratio) · total`.
    pub kept: u64,
    /// NaN or infinite entries; they are never masked.
    pub non_finite: u64,
    /// The magnitude threshold `T` (entries with `|g| < T` are masked), when the magnitude
    /// strategy selected one this step.
    pub threshold: Option<f64>,
    /// With [`collect_norms`](crate::GradMaskConfig::collect_norms): the squared L2 norm of the
    /// gradient's finite entries, and of the finite entries the mask keeps (before the random
    /// mask's rescale), summed in f32 on the gradient's device.
    pub norms_sq: Option<(f64, f64)>,
}

/// Mask statistics of one optimizer step.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct MaskStats {
    /// The optimizer step (0-based) these statistics describe.
    pub step: u64,
    /// The ratio in force at that step (after warm-up).
    pub ratio: f64,
    /// One entry per masked parameter tensor.
    pub tensors: Vec<TensorMaskStats>,
}

impl MaskStats {
    /// Entries over all tensors.
    pub fn total(&self) -> u64 {
        self.tensors.iter().map(|t| t.total).sum()
    }
    /// Masked entries over all tensors.
    pub fn masked(&self) -> u64 {
        self.tensors.iter().map(|t| t.masked).sum()
    }
    /// Kept entries over all tensors.
    pub fn kept(&self) -> u64 {
        self.tensors.iter().map(|t| t.kept).sum()
    }
    /// Non-finite entries over all tensors.
    pub fn non_finite(&self) -> u64 {
        self.tensors.iter().map(|t| t.non_finite).sum()
    }
    /// Fraction of entries kept (1 when there is nothing to mask).
    pub fn kept_fraction(&self) -> f64 {
        let total = self.total();
        if total == 0 {
            1.0
        } else {
            self.kept() as f64 / total as f64
        }
    }

    /// The mean of the finite magnitude thresholds of the step (one per tensor, or the one
    /// global threshold), or `None` when no tensor selected one.
    pub fn mean_threshold(&self) -> Option<f64> {
        let finite: Vec<f64> = self
            .tensors
            .iter()
            .filter_map(|t| t.threshold)
            .filter(|t| t.is_finite())
            .collect();
        (!finite.is_empty()).then(|| finite.iter().sum::<f64>() / finite.len() as f64)
    }

    /// The share of the gradient's L2 norm the mask keeps, `‖kept‖ / ‖g‖` over the finite
    /// entries of every tensor (1 for a zero gradient), when
    /// [`collect_norms`](crate::GradMaskConfig::collect_norms) measured the norms.
    pub fn kept_norm_fraction(&self) -> Option<f64> {
        let (mut grad, mut kept) = (0.0, 0.0);
        for t in &self.tensors {
            let (g, k) = t.norms_sq?;
            grad += g;
            kept += k;
        }
        Some(if grad > 0.0 {
            (kept / grad).sqrt()
        } else {
            1.0
        })
    }

    /// These statistics restricted to the parameters whose module path starts with `prefix`
    /// (`"encoder.layers.3."`, or a whole path).
    pub fn filter_params(&self, prefix: &str) -> MaskStats {
        MaskStats {
            step: self.step,
            ratio: self.ratio,
            tensors: self
                .tensors
                .iter()
                .filter(|t| t.param.starts_with(prefix))
                .cloned()
                .collect(),
        }
    }
}

/// A shared, cheap-to-clone view of the statistics a mask collects: from the optimizer
/// wrapper ([`GradMasked::stats_handle`](crate::GradMasked::stats_handle)) or the module-level
/// mask ([`GradMask::stats_handle`](crate::GradMask::stats_handle)). It outlives moves of
/// the optimizer or model into a `Learner`, which is what a metric needs.
///
/// Statistics are kept per training thread: burn-train's DDP workers step one shared
/// optimizer (or their own replica of a model holding a `GradMask`), one thread each, and
/// each keeps its own.
#[derive(Clone)]
pub struct MaskStatsHandle {
    replicas: Arc<Mutex<Replicas>>,
    collects_norms: bool,
}

impl std::fmt::Debug for MaskStatsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskStatsHandle")
            .field("collects_norms", &self.collects_norms)
            .finish_non_exhaustive()
    }
}

impl MaskStatsHandle {
    pub(crate) fn new(collects_norms: bool) -> Self {
        Self {
            replicas: Arc::new(Mutex::new(Replicas::default())),
            collects_norms,
        }
    }

    /// Whether the statistics carry gradient norms
    /// ([`collect_norms`](crate::GradMaskConfig::collect_norms)).
    pub fn collects_norms(&self) -> bool {
        self.collects_norms
    }

    /// The statistics of the latest optimizer step (of the replica that stepped last, when
    /// several threads step). With the wrapper on a GPU the counts stay on the device during
    /// the step; this reads them, every tensor's at once.
    pub fn latest(&self) -> MaskStats {
        let mut replicas = self.lock();
        replicas
            .by_thread
            .values_mut()
            .max_by_key(|r| r.last_update)
            .map_or_else(MaskStats::default, |r| r.latest.read())
    }

    /// The statistics of each replica's latest step, in the order the replicas first
    /// stepped (one entry for single-device training; one per DDP worker). A replica whose
    /// thread has ended is taken over by the next new thread that steps.
    pub fn replicas(&self) -> Vec<MaskStats> {
        let mut replicas = self.lock();
        let mut all: Vec<&mut Replica> = replicas.by_thread.values_mut().collect();
        all.sort_by_key(|r| r.rank);
        all.into_iter().map(|r| r.latest.read()).collect()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Replicas> {
        self.replicas.lock().expect("mask statistics lock")
    }
}

/// What a mask keeps for each thread that steps it (each replica of the model).
///
/// Threads come and go (burn-train starts its DDP workers at each launch): a thread that has
/// ended leaves its replica, with its rank and latest statistics, to the next new thread that
/// steps, so the map holds no more replicas than threads ever stepped at once.
#[derive(Default)]
pub(crate) struct Replicas {
    by_thread: HashMap<ThreadId, Replica>,
    /// The rank the next new replica takes.
    next_rank: usize,
    /// The most draw streams any replica has handed out (its parameters stepped so far).
    most_streams: u64,
}

#[derive(Default)]
struct Replica {
    /// The optimizer wrapper's draw stream of the next parameter this thread steps for the
    /// first time.
    next_stream: u64,
    /// When this replica last stepped, in steps of any replica (orders the replicas).
    last_update: u64,
    /// First-seen rank of the replica.
    rank: usize,
    latest: LatestStats,
    /// Whether the thread stepping this replica is still running.
    thread_alive: Arc<AtomicBool>,
}

/// Set while the thread that owns it runs; cleared when the thread ends (its thread-locals
/// are dropped).
struct ThreadAlive(Arc<AtomicBool>);

impl Drop for ThreadAlive {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

thread_local! {
    static THREAD_ALIVE: ThreadAlive = ThreadAlive(Arc::new(AtomicBool::new(true)));
}

/// The calling thread's liveness flag (already cleared while the thread is ending).
fn thread_alive() -> Arc<AtomicBool> {
    THREAD_ALIVE
        .try_with(|alive| alive.0.clone())
        .unwrap_or_default()
}

impl Replicas {
    /// The calling thread's replica, created on its first call (taking over the replica of a
    /// thread that has ended, if any).
    fn this_thread(&mut self) -> &mut Replica {
        let id = std::thread::current().id();
        if !self.by_thread.contains_key(&id) {
            let replica = match self.take_ended() {
                // The statistics and rank carry over; the new thread's parameters take
                // their draw streams afresh, in its own stepping order.
                Some(ended) => Replica {
                    next_stream: 0,
                    thread_alive: thread_alive(),
                    ..ended
                },
                None => {
                    self.next_rank += 1;
                    Replica {
                        rank: self.next_rank - 1,
                        thread_alive: thread_alive(),
                        ..Replica::default()
                    }
                }
            };
            self.by_thread.insert(id, replica);
        }
        self.by_thread.get_mut(&id).expect("inserted above")
    }

    /// Removes and returns the first-ranked replica whose thread has ended.
    fn take_ended(&mut self) -> Option<Replica> {
        let ended = self
            .by_thread
            .iter()
            .filter(|(_, r)| !r.thread_alive.load(Ordering::Acquire))
            .min_by_key(|(_, r)| r.rank)
            .map(|(id, _)| *id)?;
        self.by_thread.remove(&ended)
    }

    /// The draw stream of a parameter the calling thread steps for the first time: the next
    /// of its replica's.
    pub(crate) fn hand_out_stream(&mut self) -> u64 {
        let replica = self.this_thread();
        let stream = replica.next_stream;
        replica.next_stream += 1;
        self.most_streams = self.most_streams.max(stream + 1);
        stream
    }

    /// The most draw streams any replica has handed out: the parameters one replica steps,
    /// once its first step is complete.
    pub(crate) fn most_streams(&self) -> u64 {
        self.most_streams
    }

    /// The calling thread's replica, marked as the one that stepped last.
    fn stepping(&mut self) -> &mut Replica {
        let clock = self
            .by_thread
            .values()
            .map(|r| r.last_update)
            .max()
            .unwrap_or(0)
            + 1;
        let replica = self.this_thread();
        replica.last_update = clock;
        replica
    }

    /// Records the statistics of one tensor at `step` (the optimizer wrapper, which sees a
    /// step tensor by tensor); `tensors`, when known, is how many tensors a step has.
    pub(crate) fn record_tensor(
        &mut self,
        step: u64,
        ratio: f64,
        param: String,
        stats: PendingStats,
        tensors: Option<usize>,
    ) {
        let latest = &mut self.stepping().latest;
        let recording = &mut latest.recording;
        if recording.step != step && !recording.tensors.is_empty() {
            // A new step: the one recorded so far is complete.
            latest.done = Some(std::mem::take(recording));
        }
        if recording.tensors.is_empty() {
            (recording.step, recording.ratio) = (step, ratio);
        }
        recording.tensors.retain(|(p, _)| *p != param);
        recording.tensors.push((param, stats));
        latest.tensors = tensors;
        latest.read = None;
    }

    /// Records the statistics of a whole step, already read (the module-level mask).
    pub(crate) fn record_step(&mut self, stats: MaskStats) {
        self.stepping().latest = LatestStats {
            read: Some(stats),
            ..LatestStats::default()
        };
    }
}

/// One step's statistics as the plans left them (on a GPU, counts still on the device).
#[derive(Default, Clone)]
struct StepRecord {
    step: u64,
    ratio: f64,
    tensors: Vec<(String, PendingStats)>,
}

/// The statistics of the latest step, read when asked for: stepping never waits on a
/// read-back.
///
/// The wrapper records a step tensor by tensor, and burn-train's metrics may read while a
/// step is under way (they run on a thread of their own): a read returns the step being
/// recorded once it is complete (as many tensors as the module has, when the wrapper knows
/// its paths, or as the previous step had), and the previous step until then.
#[derive(Default)]
struct LatestStats {
    recording: StepRecord,
    /// The last step known to be complete.
    done: Option<StepRecord>,
    /// Tensors per step, when known.
    tensors: Option<usize>,
    /// What the last read returned, until the next record changes it.
    read: Option<MaskStats>,
}

impl LatestStats {
    fn read(&mut self) -> MaskStats {
        if let Some(read) = &self.read {
            return read.clone();
        }
        let expected = self
            .tensors
            .or_else(|| self.done.as_ref().map(|d| d.tensors.len()));
        let complete = expected.is_none_or(|n| self.recording.tensors.len() >= n);
        let empty = StepRecord::default();
        let record = match (&self.done, complete) {
            (_, true) => &self.recording,
            (Some(done), false) => done,
            // The first step, under way: nothing complete to show yet.
            (None, false) => &empty,
        };
        let read = MaskStats {
            step: record.step,
            ratio: record.ratio,
            tensors: resolve_named(record.tensors.clone()),
        };
        self.read = Some(read.clone());
        read
    }
}

/// Pending statistics, each named by its parameter, with every device-side value of the
/// step read back at once ([`resolve_stats`]: one read per device).
pub(crate) fn resolve_named(named: Vec<(String, PendingStats)>) -> Vec<TensorMaskStats> {
    let (params, pending): (Vec<_>, Vec<_>) = named.into_iter().unzip();
    resolve_stats(pending)
        .into_iter()
        .zip(params)
        .map(|(stats, param)| TensorMaskStats {
            param,
            total: stats.total,
            masked: stats.masked,
            kept: stats.total - stats.masked,
            non_finite: stats.non_finite,
            threshold: stats.threshold,
            norms_sq: stats.norms_sq,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(
        param: &str,
        kept: u64,
        threshold: Option<f64>,
        norms: (f64, f64),
    ) -> TensorMaskStats {
        TensorMaskStats {
            param: param.into(),
            total: 10,
            masked: 10 - kept,
            kept,
            non_finite: 0,
            threshold,
            norms_sq: Some(norms),
        }
    }

    #[test]
    fn summaries_follow_their_definitions() {
        let stats = MaskStats {
            step: 3,
            ratio: 0.3,
            tensors: vec![
                tensor("a.weight", 7, Some(0.5), (9.0, 4.0)),
                tensor("a.bias", 10, None, (0.0, 0.0)),
                tensor("b.weight", 6, Some(f64::INFINITY), (7.0, 5.0)),
                tensor("b.bias", 8, Some(1.5), (0.0, 0.0)),
            ],
        };
        assert_eq!(stats.kept_fraction(), 31.0 / 40.0);
        // The infinite threshold (a frozen tensor) is left out of the mean.
        assert_eq!(stats.mean_threshold(), Some(1.0));
        assert_eq!(stats.kept_norm_fraction(), Some((9.0f64 / 16.0).sqrt()));
        let a = stats.filter_params("a.");
        assert_eq!((a.total(), a.kept(), a.step), (20, 17, 3));
        assert_eq!(a.kept_norm_fraction(), Some((4.0f64 / 9.0).sqrt()));
        assert_eq!(stats.filter_params("c.").kept_fraction(), 1.0);
        assert_eq!(stats.filter_params("a.bias").mean_threshold(), None);

        let mut unmeasured = stats.clone();
        unmeasured.tensors[1].norms_sq = None;
        assert_eq!(unmeasured.kept_norm_fraction(), None);
        assert_eq!(
            stats.filter_params("a.bias").kept_norm_fraction(),
            Some(1.0)
        );
    }

    /// A read while the wrapper records a step shows the last complete one.
    #[test]
    fn reads_show_complete_steps() {
        use burn_gmt_kernels::mask::TensorStats;
        let tensor = |masked| {
            PendingStats::known(TensorStats {
                total: 4,
                masked,
                ..TensorStats::default()
            })
        };
        let handle = MaskStatsHandle::new(false);
        let record = |step, param: &str, masked, tensors| {
            let stats = tensor(masked);
            let mut replicas = handle.lock();
            replicas.record_tensor(step, 0.5, param.into(), stats, tensors);
        };
        // Two tensors a step, known from the module's paths.
        record(0, "a", 1, Some(2));
        assert!(handle.latest().tensors.is_empty(), "step 0 is under way");
        record(0, "b", 2, Some(2));
        assert_eq!((handle.latest().step, handle.latest().masked()), (0, 3));
        record(1, "a", 0, Some(2));
        assert_eq!(handle.latest().step, 0, "step 1 is under way");
        record(1, "b", 0, Some(2));
        assert_eq!((handle.latest().step, handle.latest().masked()), (1, 0));
        // Without paths, a step is complete when it has as many tensors as the one before.
        let handle = MaskStatsHandle::new(false);
        let record = |step, param: &str| {
            let stats = tensor(1);
            handle
                .lock()
                .record_tensor(step, 0.5, param.into(), stats, None)
        };
        record(0, "a");
        record(0, "b");
        record(1, "a");
        assert_eq!(handle.latest().step, 0);
        record(1, "b");
        assert_eq!(handle.latest().step, 1);
    }

    #[test]
    fn replicas_keep_their_own_latest_step() {
        let handle = MaskStatsHandle::new(false);
        let step = |n| MaskStats {
            step: n,
            ..MaskStats::default()
        };
        handle.lock().record_step(step(1));
        std::thread::scope(|s| {
            s.spawn(|| handle.lock().record_step(step(7)));
        });
        assert_eq!(handle.latest().step, 7);
        let steps: Vec<u64> = handle.replicas().iter().map(|r| r.step).collect();
        assert_eq!(steps, [1, 7]);
        handle.lock().record_step(step(2));
        assert_eq!(handle.latest().step, 2);
    }

    /// Threads that come and go, one after another as burn-train's epochs or launches start
    /// theirs, keep one replica between them; threads stepping at once keep one each.
    #[test]
    fn ended_threads_leave_their_replica_to_the_next() {
        let handle = MaskStatsHandle::new(false);
        let step = |n| MaskStats {
            step: n,
            ..MaskStats::default()
        };
        for n in 0..50 {
            let worker = handle.clone();
            let streams = std::thread::spawn(move || {
                let mut replicas = worker.lock();
                replicas.record_step(step(n));
                // A new thread numbers its own new parameters from 0.
                [replicas.hand_out_stream(), replicas.hand_out_stream()]
            });
            assert_eq!(streams.join().unwrap(), [0, 1]);
            let steps: Vec<u64> = handle.replicas().iter().map(|r| r.step).collect();
            assert_eq!(steps, [n], "one replica after thread {n}");
        }
        assert_eq!(handle.lock().most_streams(), 2);

        // Two workers at once, twice over: two replicas, in rank order, the second pair
        // taking over the first's.
        for launch in 0..2 {
            let barrier = std::sync::Barrier::new(2);
            std::thread::scope(|s| {
                let workers: Vec<_> = (0..2)
                    .map(|worker| {
                        let (handle, barrier) = (&handle, &barrier);
                        s.spawn(move || {
                            handle.lock().record_step(step(100 * launch + worker));
                            // Both stay alive until both have stepped.
                            barrier.wait();
                        })
                    })
                    .collect();
                // A join waits for the thread's end, its thread-locals dropped.
                workers.into_iter().for_each(|w| w.join().unwrap());
            });
            assert_eq!(handle.replicas().len(), 2, "launch {launch}");
        }
        let mut steps: Vec<u64> = handle.replicas().iter().map(|r| r.step).collect();
        steps.sort();
        assert_eq!(steps, [100, 101]);
    }
}
