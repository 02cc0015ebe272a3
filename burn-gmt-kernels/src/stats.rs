//! The statistics of a mask, from the moment a selection or a count leaves them on the device
//! ([`PendingStats`]) to their values on the host ([`TensorStats`]), read for a whole step at
//! once by [`resolve_stats`]: one read per device, however many gradients share a tensor of
//! counters.

use std::sync::Arc;

use burn::backend::{Dispatch, DispatchTensor, TensorMetadata};
use burn::tensor::kind::Transaction as Readable;
use burn::tensor::{DType, Device, Element, Int, Tensor, TensorData, Transaction};

use crate::MaskOps;
use crate::buffer::{SELECTION_STATE_LEN, SelectionState};
use crate::element::{inf_key, key_to_f64};

/// The statistics of one gradient against its threshold, read back.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TensorStats {
    /// Entries of the gradient.
    pub total: u64,
    /// Entries masked (finite, with `|g|` below the threshold, or drawn).
    pub masked: u64,
    /// NaN and infinite entries (never masked).
    pub non_finite: u64,
    /// The threshold's value, when there is one.
    pub threshold: Option<f64>,
    /// With [`PendingStats::with_norms`]: `(‖g‖², ‖kept‖²)` over the finite entries.
    pub norms_sq: Option<(f64, f64)>,
}

/// Where the counts of one gradient come from.
#[derive(Debug, Clone)]
enum Source {
    /// Known on the host.
    Known(TensorStats),
    /// `[masked, non_finite]` counted on the device; the threshold value known (or none).
    Counted(DeviceWords, Option<f64>),
    /// `[masked, non_finite]` counted on the device against a selection whose state words
    /// give the threshold key in the gradients' dtype (a selection over several gradients).
    CountedSelected(DeviceWords, DeviceWords, DType),
    /// The state words of a one-gradient selection: counts and threshold, no counting pass.
    Selected(DeviceWords, DType),
}

/// Words on the device that statistics are read from: `len` words from `start` of a tensor
/// that several gradients may share (the state words of a step's selections made together,
/// the state of a global selection), which [`resolve_stats`] reads once for all of them.
#[derive(Debug, Clone)]
pub(crate) struct DeviceWords {
    tensor: Arc<Tensor<1, Int>>,
    start: usize,
    len: usize,
}

impl DeviceWords {
    /// Every word of `tensor`.
    pub(crate) fn whole(tensor: Tensor<1, Int>) -> Self {
        let len = tensor.shape().num_elements();
        Self {
            tensor: Arc::new(tensor),
            start: 0,
            len,
        }
    }

    /// The state words of selection `segment` in a table of them (`[segments × 4]` words).
    pub(crate) fn state_of(table: &Arc<Tensor<1, Int>>, segment: usize) -> Self {
        Self {
            tensor: table.clone(),
            start: segment * SELECTION_STATE_LEN,
            len: SELECTION_STATE_LEN,
        }
    }
}

/// The statistics of one gradient against its threshold, possibly still on the device:
/// [`resolve_stats`] reads every pending one of a step in one go.
#[derive(Debug, Clone)]
pub struct PendingStats {
    total: u64,
    source: Source,
    /// `[‖g‖², ‖kept‖²]`, f32 on the gradient's device.
    norms_sq: Option<Tensor<1>>,
}

impl PendingStats {
    /// Statistics already known on the host.
    pub fn known(stats: TensorStats) -> Self {
        Self {
            total: stats.total,
            source: Source::Known(stats),
            norms_sq: None,
        }
    }

    /// The statistics of `grad` from `[masked, non_finite]` counted on the device (as
    /// [`MaskOps::abs_threshold_count`] and [`MaskOps::random_mask_count`] return them).
    pub(crate) fn counted(grad: &DispatchTensor, counts: Tensor<1, Int>) -> Self {
        Self::from_source(grad, Source::Counted(DeviceWords::whole(counts), None))
    }

    /// The statistics of `grad` masked against `threshold`, counted on its device.
    pub(crate) fn counted_below(grad: &DispatchTensor, threshold: &DispatchTensor) -> Self {
        Self::counted(grad, count_below(grad, threshold))
    }

    /// The statistics of `grad` against `threshold`, one of several gradients selected
    /// together whose selection state is `state` (threshold value in `dtype`).
    pub(crate) fn counted_selected(
        grad: &DispatchTensor,
        threshold: &DispatchTensor,
        state: DeviceWords,
        dtype: DType,
    ) -> Self {
        let counts = DeviceWords::whole(count_below(grad, threshold));
        Self::from_source(grad, Source::CountedSelected(counts, state, dtype))
    }

    /// The statistics of `grad`, the one gradient of a selection, from its state words.
    pub(crate) fn selected(grad: &DispatchTensor, state: DeviceWords) -> Self {
        Self::from_source(grad, Source::Selected(state, grad.dtype()))
    }

    fn from_source(grad: &DispatchTensor, source: Source) -> Self {
        Self {
            total: grad.shape().num_elements() as u64,
            source,
            norms_sq: None,
        }
    }

    /// These statistics with a threshold value known on the host (a selection's own value
    /// is kept).
    pub fn with_threshold(mut self, value: f64) -> Self {
        match &mut self.source {
            Source::Known(stats) => stats.threshold = Some(value),
            Source::Counted(_, threshold) => *threshold = Some(value),
            Source::CountedSelected(..) | Source::Selected(..) => {}
        }
        self
    }

    /// These statistics with `[‖g‖², ‖kept‖²]` of the gradient (two f32 values on its
    /// device), read with the rest of the step's into [`TensorStats::norms_sq`].
    pub fn with_norms(mut self, norms_sq: Tensor<1>) -> Self {
        self.norms_sq = Some(norms_sq);
        self
    }

    /// The counter words this gradient's counts are read from.
    fn device_words(&self) -> Vec<&DeviceWords> {
        match &self.source {
            Source::Known(..) => vec![],
            Source::Counted(counts, _) => vec![counts],
            Source::CountedSelected(counts, state, _) => vec![counts, state],
            Source::Selected(state, _) => vec![state],
        }
    }

    /// The statistics, from this gradient's words in the order of
    /// [`device_words`](Self::device_words) and its norms, when measured.
    fn decode(self, words: &[Vec<u64>], norms_sq: Option<(f64, f64)>) -> TensorStats {
        let total = self.total;
        let counted = |words: &[u64], threshold| TensorStats {
            total,
            masked: words[0],
            non_finite: words[1],
            threshold,
            norms_sq,
        };
        let threshold = |state: &SelectionState, dtype| {
            let inf = inf_key(dtype).expect("a supported float dtype");
            key_to_f64(dtype, state.key.min(inf)).expect("a supported float dtype")
        };
        match self.source {
            Source::Known(stats) => TensorStats {
                norms_sq: norms_sq.or(stats.norms_sq),
                ..stats
            },
            Source::Counted(_, value) => counted(&words[0], value),
            Source::CountedSelected(_, _, dtype) => {
                let state = SelectionState::from_words(&words[1]);
                counted(&words[0], Some(threshold(&state, dtype)))
            }
            Source::Selected(_, dtype) => {
                let state = SelectionState::from_words(&words[0]);
                let inf = inf_key(dtype).expect("a supported float dtype");
                TensorStats {
                    total,
                    masked: state.masked(total, inf),
                    non_finite: state.non_finite,
                    threshold: Some(threshold(&state, dtype)),
                    norms_sq,
                }
            }
        }
    }
}

/// `[masked, non_finite]` of `grad` against `threshold`, counted on its device.
fn count_below(grad: &DispatchTensor, threshold: &DispatchTensor) -> Tensor<1, Int> {
    Tensor::from_dispatch(<Dispatch as MaskOps>::abs_threshold_count(grad, threshold))
}

/// The statistics of each of `pending`: every device-side word and norm read back with one
/// read per device, each tensor of counters once however many gradients share it.
pub fn resolve_stats(pending: Vec<PendingStats>) -> Vec<TensorStats> {
    let mut reads = DeviceReads::default();
    let mut distinct: Vec<(Arc<Tensor<1, Int>>, usize)> = Vec::new();
    // Per gradient, where each of its words lie, and its norms' read.
    let places: Vec<(Vec<WordsPlace>, Option<usize>)> = pending
        .iter()
        .map(|p| {
            let words = p
                .device_words()
                .into_iter()
                .map(|w| {
                    let known = distinct.iter().find(|(t, _)| Arc::ptr_eq(t, &w.tensor));
                    let read = match known {
                        Some(&(_, read)) => read,
                        None => {
                            let read = reads.register(w.tensor.as_ref().clone());
                            distinct.push((w.tensor.clone(), read));
                            read
                        }
                    };
                    (read, w.start, w.len)
                })
                .collect();
            let norms = p.norms_sq.clone().map(|n| reads.register(n));
            (words, norms)
        })
        .collect();
    let data = reads.execute();
    let words = |read: usize| data[read].iter::<i64>().map(|w| w as u64);
    pending
        .into_iter()
        .zip(places)
        .map(|(p, (places, norms))| {
            let own: Vec<Vec<u64>> = places
                .into_iter()
                .map(|(read, start, len)| words(read).skip(start).take(len).collect())
                .collect();
            let norms_sq = norms.map(|read| {
                let mut pair = data[read].iter::<f64>();
                let mut next = || pair.next().expect("a norms tensor holds two values");
                (next(), next())
            });
            p.decode(&own, norms_sq)
        })
        .collect()
}

/// Where a gradient's words lie in what [`DeviceReads`] reads: `(read, start, len)`.
type WordsPlace = (usize, usize, usize);

/// Tensors to read back, one [`Transaction`] per device they live on: a device is read once
/// for all of them, whatever their kind.
#[derive(Default)]
struct DeviceReads {
    /// Per device, its transaction and the reads it holds, in registration order.
    devices: Vec<(Device, Transaction, Vec<usize>)>,
    reads: usize,
}

impl DeviceReads {
    /// Adds `tensor` to its device's read; returns the index of its data in
    /// [`execute`](Self::execute)'s answer.
    fn register<K: Readable>(&mut self, tensor: Tensor<1, K>) -> usize {
        let device = tensor.device();
        let at = match self.devices.iter().position(|(d, ..)| *d == device) {
            Some(at) => at,
            None => {
                self.devices
                    .push((device, Transaction::default(), Vec::new()));
                self.devices.len() - 1
            }
        };
        let (_, transaction, members) = &mut self.devices[at];
        *transaction = std::mem::take(transaction).register(tensor);
        members.push(self.reads);
        self.reads += 1;
        self.reads - 1
    }

    /// The data of every registered tensor, in registration order.
    fn execute(self) -> Vec<TensorData> {
        let mut data: Vec<Option<TensorData>> = (0..self.reads).map(|_| None).collect();
        for (_, transaction, members) in self.devices {
            for (read, values) in members.into_iter().zip(transaction.execute()) {
                data[read] = Some(values);
            }
        }
        data.into_iter()
            .map(|d| d.expect("a transaction answers every tensor it registered"))
            .collect()
    }
}

/// The values of each of `tensors` (gradients of one step may live on several devices), read
/// back with one read per device.
pub(crate) fn read_per_device<K: Readable, E: Element>(tensors: Vec<Tensor<1, K>>) -> Vec<Vec<E>> {
    let mut reads = DeviceReads::default();
    for tensor in tensors {
        reads.register(tensor);
    }
    reads
        .execute()
        .into_iter()
        .map(|data| data.iter::<E>().collect())
        .collect()
}
